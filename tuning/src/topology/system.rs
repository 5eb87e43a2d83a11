//! What only the kernel can tell about this process: its CPU affinity, whether
//! io_uring works, the kernel release and the locked-memory limit.
//!
//! These are the crate's only `unsafe` calls, each a single libc call on
//! buffers owned here. Off Linux they answer "unknown".

use super::{IoUring, MemlockLimit};

/// The CPUs this process may run on (`sched_getaffinity`).
#[cfg(target_os = "linux")]
pub(super) fn affinity() -> Result<Vec<usize>, String> {
    // SAFETY: cpu_set_t is plain bits; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes the kernel writes into.
    let result = unsafe { libc::sched_getaffinity(0, size, &mut set) };
    if result != 0 {
        return Err(format!(
            "sched_getaffinity failed ({}); affinity unknown",
            std::io::Error::last_os_error()
        ));
    }
    let bits = size * 8;
    // SAFETY: every index is below the set's size in bits.
    Ok((0..bits).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn affinity() -> Result<Vec<usize>, String> {
    Err("CPU affinity is only read on Linux".to_owned())
}

/// `struct io_uring_params`: 120 bytes, the size every kernel since 5.1
/// expects; zeroed, it asks for nothing but a ring.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
struct IoUringParams([u32; 30]);

/// Index of `features` in [`IoUringParams`] (byte offset 20).
#[cfg(target_os = "linux")]
const IO_URING_PARAMS_FEATURES: usize = 5;

/// Sets up a one-entry io_uring and closes it at once: the cheapest proof
/// that glommio can run here. The ring is never mapped or used.
#[cfg(target_os = "linux")]
pub fn probe_io_uring() -> IoUring {
    let mut params = IoUringParams([0; 30]);
    let entries: libc::c_uint = 1;
    // SAFETY: io_uring_setup reads and writes exactly
    // sizeof(struct io_uring_params) = 120 bytes at the pointer, which is a
    // live, zeroed buffer of that size; on success it returns a descriptor
    // that only this function owns and closes below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut params as *mut IoUringParams) };
    if fd >= 0 {
        // SAFETY: `fd` is the descriptor just returned, owned by nobody else.
        unsafe { libc::close(fd as libc::c_int) };
        return IoUring::Available {
            features: params.0[IO_URING_PARAMS_FEATURES],
        };
    }
    let error = std::io::Error::last_os_error();
    let errno = error.raw_os_error().unwrap_or(0);
    let reason = match errno {
        libc::ENOSYS => "the kernel has no io_uring (ENOSYS)".to_owned(),
        libc::EPERM => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|value| format!("kernel.io_uring_disabled = {}", value.trim()))
                .unwrap_or_else(|_| "kernel.io_uring_disabled unreadable".to_owned());
            format!("not permitted (EPERM): the io_uring_disabled sysctl or a seccomp filter such as a container's default profile ({sysctl})")
        }
        libc::ENOMEM => "out of locked memory (ENOMEM): raise RLIMIT_MEMLOCK (`ulimit -l`)".to_owned(),
        _ => format!("io_uring_setup failed: {error}"),
    };
    IoUring::Unavailable { errno, reason }
}

/// io_uring is Linux-only.
#[cfg(not(target_os = "linux"))]
pub fn probe_io_uring() -> IoUring {
    IoUring::Unknown {
        reason: "io_uring exists only on Linux".to_owned(),
    }
}

/// `uname -r`.
#[cfg(target_os = "linux")]
pub(super) fn kernel_release() -> Option<String> {
    // SAFETY: utsname is arrays of c_char; all-zero is valid.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a live utsname the kernel fills.
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = name.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn kernel_release() -> Option<String> {
    None
}

/// The soft RLIMIT_MEMLOCK.
#[cfg(target_os = "linux")]
pub(super) fn memlock() -> MemlockLimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit the kernel fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return MemlockLimit::Unknown;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        MemlockLimit::Unlimited
    } else {
        MemlockLimit::Bytes(limit.rlim_cur)
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn memlock() -> MemlockLimit {
    MemlockLimit::Unknown
}
