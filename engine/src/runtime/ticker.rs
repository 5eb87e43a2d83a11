//! The shard's tick source: a periodic kernel timer (`timerfd`) read
//! through io_uring, instead of a glommio timer per tick.
//!
//! Why not `glommio::timer::sleep` in a loop: glommio keeps its timers in a
//! map that every reactor pass splits (`BTreeMap::split_off`, one node
//! allocated and one freed per pass while any timer is pending — and the
//! ticker's always is), and every time the executor goes to sleep with a
//! timer pending it submits an io_uring TIMEOUT for it (a `Source`
//! allocated) that it cancels again (ASYNC_CANCEL) when I/O wakes it first,
//! which under load is nearly always. A timerfd is I/O like a socket: one
//! READ in flight that completes once per tick, and glommio's timer map
//! stays empty on the shard's executor.
//!
//! If the kernel refuses the timerfd, the shard falls back to glommio's
//! sleep (the tick is what matters, not how it is made).

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

use glommio::io::BufferedFile;

/// A periodic timer: [`TickTimer::wait`] returns once per period (or at
/// once if periods passed since the last call; missed ones are not queued,
/// the shard's tick clock makes them up from the time it reads).
pub(super) struct TickTimer {
    file: BufferedFile,
}

impl TickTimer {
    /// A timer that fires every `period` from now. Must be called on a
    /// glommio executor.
    pub(super) fn new(period: Duration) -> io::Result<TickTimer> {
        if period.is_zero() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a tick of zero"));
        }
        // Blocking (no TFD_NONBLOCK): io_uring then waits for it by polling
        // instead of failing the read with EAGAIN.
        // SAFETY: plain system call; the result is checked.
        let fd: RawFd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let spec = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let value = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: `fd` is the timerfd just created; `value` outlives the call.
        let set = unsafe { libc::timerfd_settime(fd, 0, &value, std::ptr::null_mut()) };
        if set < 0 {
            let error = io::Error::last_os_error();
            // SAFETY: `fd` is ours and not yet owned by anything else.
            unsafe { libc::close(fd) };
            return Err(error);
        }
        // SAFETY: `fd` is a valid descriptor that nothing else owns; the
        // file closes it when dropped.
        let file = unsafe { BufferedFile::from_raw_fd(fd) };
        Ok(TickTimer { file })
    }

    /// Waits for the next expiry (at once if one passed since the last
    /// call); returns how many periods expired since then.
    pub(super) async fn wait(&self) -> io::Result<u64> {
        // A timerfd read is 8 bytes, the expiry count; the position is ignored.
        let read = self.file.read_at(0, 8).await.map_err(io::Error::from)?;
        let bytes: [u8; 8] = read
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "a timerfd read of fewer than 8 bytes"))?;
        Ok(u64::from_ne_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_tick_timer_fires_once_per_period_without_glommio_timers() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        executor.run(async {
            let period = Duration::from_millis(20);
            let timer = TickTimer::new(period).expect("timerfd");
            let started = Instant::now();
            let mut expiries = 0;
            for _ in 0..5 {
                expiries += timer.wait().await.expect("wait");
            }
            let elapsed = started.elapsed();
            // Five waits cover at least five periods; a loaded machine may
            // add expiries (counted) but never make one early.
            assert!(expiries >= 5, "{expiries} expiries");
            assert!(
                elapsed >= period * 5 - Duration::from_millis(1),
                "{elapsed:?} for 5 periods"
            );
            assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
            // Periods that passed unread are returned at once, in one count.
            std::thread::sleep(period * 3);
            let before = Instant::now();
            let missed = timer.wait().await.expect("wait");
            assert!(missed >= 3, "{missed} expiries after three periods asleep");
            assert!(before.elapsed() < Duration::from_secs(30));
        });
    }

    #[test]
    fn a_tick_of_zero_is_refused() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        executor.run(async {
            let error = TickTimer::new(Duration::ZERO).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        });
    }
}
