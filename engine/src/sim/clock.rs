//! Simulated clocks: each node's ticks run at its own rate and may arrive
//! late, in a burst (the runtime's tick loop lost them to a long turn and
//! makes them up). The core only counts ticks, so a node's clock is exactly
//! the ticks it was given.
//!
//! Within the margin (the default), the drift the core's configuration
//! allows for (`clock_drift_margin_ticks` over an election timeout) covers
//! every skew and burst drawn, so lease reads must stay linearizable.
//! Beyond the margin (`--clock-faults beyond-margin`), rates and bursts are
//! far larger: a lease can outlive a leadership, and the lease-safety checker
//! shows it.
//!
//! Clock draws come from their own random stream (derived from the seed), so
//! a run stays reproducible from its seed.

use crate::raft::SeededRng;

use super::node::mix;

/// How far clocks may be off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockFaults {
    /// Every clock runs at the simulator's rate, ticks on time.
    None,
    /// Skew and late bursts within the configured drift margin.
    WithinMargin,
    /// Skew and late bursts beyond it (leases become unsafe).
    BeyondMargin,
}

/// The draws of one fault level.
struct Bounds {
    /// A node's rate is 1000 ± this, per mille of the simulator's.
    skew_per_mille_max: u64,
    /// One in N ticks a node's ticks start arriving late (0: never).
    late_one_in: u64,
    /// Bound on the ticks a late spell holds back.
    late_ticks_max: u64,
}

impl ClockFaults {
    fn bounds(self) -> Bounds {
        match self {
            ClockFaults::None => Bounds {
                skew_per_mille_max: 0,
                late_one_in: 0,
                late_ticks_max: 0,
            },
            // The default margin is 2 ticks of a 10-tick election timeout:
            // ±2% rates cost at most 0.4 tick over a lease, and a late
            // spell holds back at most one tick.
            ClockFaults::WithinMargin => Bounds {
                skew_per_mille_max: 20,
                late_one_in: 40,
                late_ticks_max: 1,
            },
            // Rates from 0.3 to 1.7 and spells of up to six election
            // timeouts: a slow or stalled leader's lease outlives it.
            ClockFaults::BeyondMargin => Bounds {
                skew_per_mille_max: 700,
                late_one_in: 20,
                late_ticks_max: 60,
            },
        }
    }
}

/// One node's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    rate_per_mille: u64,
    accumulated_per_mille: u64,
    held_back_ticks: u64,
    late_for_ticks: u64,
}

/// Every node's clock and the stream their faults are drawn from.
pub struct Clocks {
    faults: ClockFaults,
    rng: SeededRng,
    clocks: Vec<Clock>,
}

impl Clocks {
    /// Clocks for `nodes` nodes of the run `seed`.
    pub fn new(seed: u64, nodes: usize, faults: ClockFaults) -> Clocks {
        let mut rng = SeededRng::new(mix(seed, 0xC10C));
        let skew = faults.bounds().skew_per_mille_max;
        let clocks = (0..nodes)
            .map(|_| Clock {
                rate_per_mille: 1000 - skew + rng.range(0, 2 * skew + 1),
                accumulated_per_mille: 0,
                held_back_ticks: 0,
                late_for_ticks: 0,
            })
            .collect();
        Clocks { faults, rng, clocks }
    }

    /// One simulator tick passed: how many ticks node `index` gets now.
    pub fn advance(&mut self, index: usize) -> u64 {
        let bounds = self.faults.bounds();
        let clock = &mut self.clocks[index];
        clock.accumulated_per_mille += clock.rate_per_mille;
        let due = clock.accumulated_per_mille / 1000;
        clock.accumulated_per_mille %= 1000;
        if clock.late_for_ticks == 0 && bounds.late_one_in > 0 && self.rng.chance(1, bounds.late_one_in) {
            clock.late_for_ticks = self.rng.range(1, bounds.late_ticks_max + 1);
        }
        if clock.late_for_ticks > 0 {
            clock.late_for_ticks -= 1;
            clock.held_back_ticks += due;
            return 0;
        }
        due + std::mem::take(&mut clock.held_back_ticks)
    }

    /// A restarted node starts with its clock on time (its rate stays).
    pub fn restart(&mut self, index: usize) {
        let clock = &mut self.clocks[index];
        clock.held_back_ticks = 0;
        clock.late_for_ticks = 0;
    }
}
