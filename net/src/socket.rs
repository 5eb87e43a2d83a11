//! Socket options and reconnect timing shared by every connection.
//!
//! Dead-peer detection is the kernel's: TCP keepalive probes an idle
//! connection, and `TCP_USER_TIMEOUT` bounds how long written data may stay
//! unacknowledged, so a vanished peer surfaces as a read or write error on
//! both the inbound and the outbound side without a timer task per
//! connection. Reconnects wait with jittered exponential backoff so that a
//! restarted node is not hit by every peer shard at the same instant.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Sets `TCP_NODELAY` and the dead-peer options on a connected socket.
pub fn tune_stream(fd: RawFd, dead_peer_timeout: Duration) -> io::Result<()> {
    let idle_secs = (dead_peer_timeout.as_secs() / 3).clamp(1, i32::MAX as u64) as libc::c_int;
    let user_timeout_ms = dead_peer_timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    set_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs)?;
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, idle_secs)?;
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 2)?;
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_timeout_ms)
}

fn set_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is a socket owned by the caller for the duration of the
    // call; the option value is a live c_int of the size passed.
    let result = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Jittered exponential backoff: attempt `n` waits a uniformly random time
/// in `[d/2, d]` where `d = min(max, min * 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff between `min` and `max`; `seed` decorrelates connections.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
            rng: splitmix64(seed) | 1,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: enough to spread reconnects, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ceiling_nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        let half = ceiling_nanos / 2;
        Duration::from_nanos(half + self.rng % (ceiling_nanos - half + 1))
    }

    /// Called after a successful connection: the next failure starts over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Spreads nearby seeds (node and shard ids) over the whole state space.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new(min, max, 42);
        for attempt in 0..12u32 {
            let ceiling = (min * 2u32.pow(attempt)).min(max);
            let delay = backoff.next_delay();
            assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn backoffs_with_different_seeds_spread_out() {
        let min = Duration::from_millis(100);
        let delays: std::collections::BTreeSet<_> = (0..16)
            .map(|seed| Backoff::new(min, min * 8, seed).next_delay())
            .collect();
        assert!(delays.len() > 8);
    }
}
