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

/// Calls `on_tick` once per `tick`, forever: from `timer` while it works,
/// then (if it could not be made, or a read of it fails) from glommio's
/// sleep, with a warning naming `who`. Cancel the task to stop it.
pub(super) async fn tick_forever(
    timer: io::Result<TickTimer>,
    tick: Duration,
    who: impl std::fmt::Display,
    mut on_tick: impl FnMut(),
) {
    match timer {
        Ok(timer) => loop {
            match timer.wait().await {
                Ok(_) => on_tick(),
                Err(error) => {
                    log::warn!("{who}: reading the tick timer failed ({error}); ticking with glommio's sleep instead");
                    break;
                }
            }
        },
        Err(error) => log::warn!("{who}: no tick timer ({error}); ticking with glommio's sleep instead"),
    }
    loop {
        glommio::timer::sleep(tick).await;
        on_tick();
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

    /// Runs [`tick_forever`] with `timer` for `periods` ticks' time and
    /// returns how many ticks it gave.
    fn ticks_within(timer: impl FnOnce() -> io::Result<TickTimer> + 'static, tick: Duration, periods: u32) -> u32 {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        executor.run(async move {
            let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let counted = ticks.clone();
            let task = glommio::spawn_local(tick_forever(timer(), tick, "test", move || {
                counted.set(counted.get() + 1)
            }));
            glommio::timer::sleep(tick * periods).await;
            task.cancel().await;
            ticks.get()
        })
    }

    #[test]
    fn without_a_timerfd_the_ticks_come_from_glommios_sleep() {
        let ticks = ticks_within(
            || Err(io::Error::new(io::ErrorKind::Unsupported, "refused by the test")),
            Duration::from_millis(10),
            20,
        );
        // 20 periods: a loaded machine may delay sleeps, never shorten them.
        assert!((1..=20).contains(&ticks), "{ticks} ticks in 20 periods");
    }

    #[test]
    fn a_timer_whose_read_fails_falls_back_to_glommios_sleep() {
        // An empty file in place of a timerfd: its read returns no bytes,
        // which `wait` refuses, so the first wait fails.
        let file = tempfile::tempfile().expect("temporary file");
        let ticks = ticks_within(
            move || {
                use std::os::fd::IntoRawFd;
                // SAFETY: the descriptor is ours, handed over to the file.
                Ok(TickTimer {
                    file: unsafe { BufferedFile::from_raw_fd(file.into_raw_fd()) },
                })
            },
            Duration::from_millis(10),
            20,
        );
        assert!(
            (1..=20).contains(&ticks),
            "{ticks} ticks in 20 periods after the read failed"
        );
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
