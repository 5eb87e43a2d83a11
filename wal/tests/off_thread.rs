//! The WAL never unlinks a file on the shard's thread: freeing a segment's
//! blocks can wait for the device (ext4 mounted with `discard` discards
//! them before `unlink` returns, 10-25 ms per 64 MiB segment on the 2-core
//! VM), and every task of the shard would wait with it. The test makes the
//! executor's thread unable to unlink (a seccomp filter is per thread, and
//! glommio's blocking threads exist before it is installed), then deletes
//! obsolete segments: they must go all the same. Likewise for the range
//! file's updates and their fdatasync.
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

/// Neither is the range file written on the shard's thread: each new
/// segment overwrites one of its slots and fdatasyncs it, which waits for
/// the device. The test makes the executor's thread unable to fdatasync,
/// fsync or pwrite (the WAL's own segment I/O goes through io_uring),
/// then rotates through several segments and deletes old ones: every
/// range update must succeed all the same and name the segments on disk.
#[test]
fn range_file_updates_run_off_the_shards_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        run(|| async {
            let (wal, _) = Wal::open(&path, small_config()).await.unwrap();
            wal.append_entry(1, 1, 1, 0, &payload(1, 1, 1)).unwrap();
            wal.sync().await.unwrap();
            let before = coraft_wal::recovery::read_stored_range(&path).unwrap().unwrap();

            coraft_wal::faults::refuse_syscalls_on_this_thread(&[
                libc::SYS_fdatasync,
                libc::SYS_fsync,
                libc::SYS_pwrite64,
            ]);
            let canary = std::fs::File::create(path.join("canary")).unwrap();
            let refused = canary.sync_data().unwrap_err();
            assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "the filter holds: {refused}");

            for index in 2..=2000 {
                wal.append_entry(1, index, 1, 0, &payload(1, index, 1)).unwrap();
                if index % 50 == 0 {
                    wal.sync().await.unwrap();
                }
            }
            wal.sync().await.unwrap();
            wal.purge(1, 1990, 1).unwrap();
            wal.rewrite_group_metadata(1).unwrap();
            assert!(!wal.delete_obsolete_segments().await.unwrap().is_empty());
            let after = coraft_wal::recovery::read_stored_range(&path).unwrap().unwrap();
            let on_disk = segments_on_disk(&path);
            assert!(after.sequence > before.sequence + 3, "{before:?} {after:?}");
            assert_eq!(
                (after.range.oldest, after.range.newest),
                (on_disk[0], *on_disk.last().unwrap())
            );
            wal.close().await.unwrap();
        })
    })
    .join()
    .expect("the executor's thread");
}
