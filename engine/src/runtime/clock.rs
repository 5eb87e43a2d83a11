//! The shard's clock: Raft ticks counted from the monotonic clock, not from
//! the wake-ups of a sleep loop. A turn that ran long, a full event queue, a
//! paused process or a slow `on_apply` delays the wake-ups but not the
//! clock, so the ticks they would have lost are made up at the next reading
//! (bounded by [`CATCH_UP_ELECTION_TIMEOUTS_MAX`]). A stalled leader thus
//! sees how long it was away before it answers a read from its lease, and
//! its check-quorum and its followers' election timeouts measure real time.
//!
//! The cores stay pure: they still only count ticks; this clock decides how
//! many ticks have passed.

use std::time::{Duration, Instant};

/// Bound on the ticks one reading makes up, in election timeouts. Every
/// timeout a core keeps ends within it: a randomized election timeout is
/// below 2 T, the election-priority lag at most 4.5 T, a lease below T, and
/// check-quorum steps a leader down after at most 2 T. A longer stall makes
/// this many ticks and drops the rest: the outcome is the same, and a node
/// back from an hour's pause does not spend a turn on an hour of ticks.
pub const CATCH_UP_ELECTION_TIMEOUTS_MAX: u64 = 8;

/// Least drift margin a lease-read node accepts, in ticks. Ticks quantize
/// time on both sides: the leader counts its lease from the tick its
/// heartbeat round was sent (up to one tick early, which only shortens the
/// lease) and checks it against the tick now (up to one tick late), while a
/// follower may count a tick that began just before it heard the leader.
/// Two ticks cover both; the margin above them is for clock rate drift.
/// `coraft-tune check` refuses a smaller margin too, with its mirror
/// `coraft_tuning::limits::LEASE_DRIFT_MARGIN_TICKS_MIN` (a test below keeps
/// them equal).
pub const LEASE_DRIFT_MARGIN_TICKS_MIN: u64 = 2;

/// Ticks owed to the cores, from the monotonic clock.
#[derive(Debug)]
pub(crate) struct TickClock {
    tick: Duration,
    started: Instant,
    /// Ticks handed out (made or dropped) since `started`.
    ticks_counted: u64,
    /// Most ticks one reading hands out.
    catch_up_ticks_max: u64,
}

/// What one reading of the clock owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TicksDue {
    /// Ticks to make now.
    pub make: u64,
    /// Ticks past the catch-up bound, not made.
    pub dropped: u64,
}

impl TickClock {
    pub fn new(tick: Duration, election_timeout_ticks: u64, now: Instant) -> TickClock {
        TickClock {
            tick: tick.max(Duration::from_micros(1)),
            started: now,
            ticks_counted: 0,
            catch_up_ticks_max: CATCH_UP_ELECTION_TIMEOUTS_MAX
                .saturating_mul(election_timeout_ticks)
                .max(1),
        }
    }

    /// The ticks due at `now` since the last reading.
    pub fn due(&mut self, now: Instant) -> TicksDue {
        let elapsed = now.saturating_duration_since(self.started);
        let total = (elapsed.as_nanos() / self.tick.as_nanos()) as u64;
        let owed = total.saturating_sub(self.ticks_counted);
        self.ticks_counted = self.ticks_counted.max(total);
        let make = owed.min(self.catch_up_ticks_max);
        TicksDue {
            make,
            dropped: owed - make,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_owes_the_ticks_elapsed_since_the_last_one() {
        let start = Instant::now();
        let mut clock = TickClock::new(Duration::from_millis(10), 10, start);
        assert_eq!(clock.due(start + Duration::from_millis(9)).make, 0);
        assert_eq!(clock.due(start + Duration::from_millis(10)).make, 1);
        assert_eq!(clock.due(start + Duration::from_millis(15)).make, 0);
        assert_eq!(clock.due(start + Duration::from_millis(45)).make, 3);
        // The clock never runs backwards.
        assert_eq!(clock.due(start + Duration::from_millis(20)).make, 0);
        assert_eq!(clock.due(start + Duration::from_millis(50)).make, 1);
    }

    #[test]
    fn a_long_stall_makes_up_at_most_the_bound_and_drops_the_rest() {
        let start = Instant::now();
        let mut clock = TickClock::new(Duration::from_millis(10), 10, start);
        let due = clock.due(start + Duration::from_secs(60));
        assert_eq!(due.make, CATCH_UP_ELECTION_TIMEOUTS_MAX * 10);
        assert_eq!(due.make + due.dropped, 6000);
        assert_eq!(clock.due(start + Duration::from_millis(60_010)).make, 1);
    }

    #[test]
    fn the_tuning_crate_refuses_the_same_least_lease_margin() {
        assert_eq!(
            LEASE_DRIFT_MARGIN_TICKS_MIN,
            coraft_tuning::limits::LEASE_DRIFT_MARGIN_TICKS_MIN
        );
    }
}
