//! Where the threads that are not shard executors run: each shard's
//! blocking thread, the metrics endpoint's thread and an embedding
//! program's own threads if it asks (`coraft-node` pins its main thread).
//! Shards pin through glommio's placement; these helpers pin through the
//! kernel's affinity call on the calling thread.

use std::io;

/// The CPUs the calling thread may run on (its affinity mask), sorted.
pub fn current_thread_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// Lets the calling thread run only on `cpus` (the OS picks among them).
/// Threads it starts afterwards inherit the set.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no CPU to pin to"));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within
    // it (checked below); the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {cpu} is beyond CPU_SETSIZE ({})", libc::CPU_SETSIZE),
                ));
            }
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Names the calling thread (what `/proc/.../comm`, `top -H` and `ps -L`
/// show), cut to the kernel's 15 bytes.
pub(crate) fn name_current_thread(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    bytes.push(0);
    // SAFETY: `bytes` is NUL-terminated and outlives the call, which copies it.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// The helper threads' CPUs when none are configured: the CPUs `allowed`
/// (the caller's) that no shard is pinned to, or all of them when the
/// shards are unbound or take every one.
pub(crate) fn default_helper_cpus(allowed: &[usize], shard_cores: &[Option<usize>]) -> Vec<usize> {
    let free: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|cpu| !shard_cores.contains(&Some(*cpu)))
        .collect();
    if free.is_empty() {
        allowed.to_vec()
    } else {
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_default_to_the_cpus_no_shard_is_pinned_to_or_all_when_none_is_left() {
        assert_eq!(default_helper_cpus(&[0, 1, 2, 3], &[Some(1), Some(2)]), [0, 3]);
        assert_eq!(default_helper_cpus(&[0, 1], &[Some(1), Some(0)]), [0, 1]);
        assert_eq!(default_helper_cpus(&[0, 1], &[None, None]), [0, 1]);
    }
}
