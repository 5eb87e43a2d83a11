//! The WAL never unlinks a file on the shard's thread: freeing a segment's
//! blocks can wait for the device (ext4 mounted with `discard` discards
//! them before `unlink` returns, 10-25 ms per 64 MiB segment on the 2-core
//! VM), and every task of the shard would wait with it. The test makes the
//! executor's thread unable to unlink (a seccomp filter is per thread, and
//! glommio's blocking threads exist before it is installed), then deletes
//! obsolete segments: they must go all the same.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::path::Path;

use common::{payload, run, small_config};
use coraft_wal::recovery::list_segments;
use coraft_wal::Wal;

fn segments_on_disk(dir: &Path) -> Vec<u64> {
    list_segments(dir).unwrap().into_iter().map(|(lsn, _)| lsn).collect()
}

#[test]
fn obsolete_segments_are_unlinked_off_the_shards_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // Its own thread: the filter dies with it, and the temporary directory
    // is removed from this one.
    std::thread::spawn(move || {
        run(|| async {
            let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
            for index in 1..=2000 {
                wal.append_entry(1, index, 1, 0, &payload(1, index, 1)).unwrap();
            }
            wal.sync().await.unwrap();
            let all = segments_on_disk(&path);
            assert!(all.len() > 4, "segments {all:?}");
            wal.purge(1, 1990, 1).unwrap();
            wal.rewrite_group_metadata(1).unwrap();

            coraft_wal::faults::refuse_syscalls_on_this_thread(&[libc::SYS_unlink, libc::SYS_unlinkat]);
            let canary = path.join("canary");
            std::fs::write(&canary, b"x").unwrap();
            let refused = std::fs::remove_file(&canary).unwrap_err();
            assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "the filter holds: {refused}");

            let deleted = wal.delete_obsolete_segments().await.unwrap();
            assert!(!deleted.is_empty(), "nothing deleted of {all:?}");
            let kept = segments_on_disk(&path);
            for segment in &deleted {
                assert!(
                    !kept.contains(segment),
                    "segment {segment} deleted but still on disk: {kept:?}"
                );
            }
            wal.close().await.unwrap();
        })
    })
    .join()
    .expect("the executor's thread");
}
