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

/// From here on, `unlink` and `unlinkat` fail with EPERM on this thread
/// (and on threads it starts later); other threads are untouched.
fn refuse_unlink_on_this_thread() {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let statement = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_if = |k: u32, jt: u8, jf: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut filter = [
        // seccomp_data.arch: anything but x86_64 is let through.
        statement(BPF_LD | BPF_W | BPF_ABS, 4),
        jump_if(AUDIT_ARCH_X86_64, 0, 3),
        // seccomp_data.nr
        statement(BPF_LD | BPF_W | BPF_ABS, 0),
        jump_if(libc::SYS_unlink as u32, 2, 0),
        jump_if(libc::SYS_unlinkat as u32, 1, 0),
        statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain system calls; the filter outlives the call that copies it.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "PR_SET_NO_NEW_PRIVS"
        );
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &program as *const sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

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

            refuse_unlink_on_this_thread();
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
