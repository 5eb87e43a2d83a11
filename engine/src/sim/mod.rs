//! The deterministic cluster simulator.
//!
//! Whole clusters of [`RaftCore`](crate::raft::RaftCore)s run over a simulated
//! network (drop, delay, duplicate, reorder, partitions, one-way partitions)
//! and simulated disks (writes complete later; a crash loses unfinished writes
//! and may tear the oldest), with clients proposing unique values and reading
//! through ReadIndex and leases. One `u64` seed decides everything. After
//! every event the checkers in [`checker`] test Raft's invariants.
//!
//! A run has two phases: a safety phase with faults, then a liveness phase
//! with every fault healed and every node up, in which a leader must be
//! elected and a new write acknowledged within a bounded number of ticks.

pub mod checker;
pub mod clock;
mod cluster;
pub mod network;
pub mod node;

pub use checker::{CheckerKind, Violation};
pub use clock::ClockFaults;
pub use cluster::Cluster;

use crate::raft::PlantedBug;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed that decides the run.
    pub seed: u64,
    /// Voters at start (3 or 5); one extra node joins and leaves through
    /// membership changes.
    pub nodes: u64,
    /// Ticks of the safety phase.
    pub safety_ticks: u64,
    /// Bound on the ticks the liveness phase may take.
    pub liveness_ticks_max: u64,
    /// Whether clients change membership.
    pub membership_changes: bool,
    /// A rule broken on purpose (tests only).
    pub planted_bug: PlantedBug,
    /// Pre-vote before campaigning (thesis §9.6).
    pub pre_vote: Toggle,
    /// Check-quorum and the followers' leader lease (thesis §6.2); with it
    /// off, reads use ReadIndex only (lease reads need it).
    pub check_quorum: Toggle,
    /// Clock skew and late tick bursts.
    pub clock_faults: ClockFaults,
}

/// A feature on, off, or drawn per seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// Always on.
    On,
    /// Always off.
    Off,
    /// On in about half the seeds.
    PerSeed,
}

impl Toggle {
    /// Whether the feature is on in the run `seed`; `salt` separates the
    /// per-seed draws of different features (outside the run's random
    /// stream, so the other draws stay put).
    pub fn decide(self, seed: u64, salt: u64) -> bool {
        match self {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::PerSeed => node::mix(seed, salt).is_multiple_of(2),
        }
    }

    /// Parses `on`, `off` or `per-seed`.
    pub fn parse(text: &str) -> Option<Toggle> {
        match text {
            "on" => Some(Toggle::On),
            "off" => Some(Toggle::Off),
            "per-seed" => Some(Toggle::PerSeed),
            _ => None,
        }
    }
}

impl SimOptions {
    /// The defaults for `seed` on a cluster of `nodes` voters.
    pub fn new(seed: u64, nodes: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes,
            safety_ticks: 400,
            liveness_ticks_max: 300,
            membership_changes: true,
            planted_bug: PlantedBug::None,
            pre_vote: Toggle::On,
            check_quorum: Toggle::On,
            clock_faults: ClockFaults::WithinMargin,
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct SimOutcome {
    /// The seed.
    pub seed: u64,
    /// Invariant violations, in the order found (empty when safe).
    pub violations: Vec<Violation>,
    /// Why the liveness phase failed, if it did.
    pub liveness_failure: Option<String>,
    /// Events processed.
    pub steps: u64,
    /// Writes acknowledged to clients.
    pub writes_acknowledged: u64,
    /// Reads confirmed.
    pub reads_confirmed: u64,
    /// Reads served (their state checked against the real-time floor).
    pub reads_served: u64,
    /// Reads a leader answered from its lease.
    pub lease_reads: u64,
    /// Terms that had a leader.
    pub terms_with_leader: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Membership changes committed into logs.
    pub configuration_changes: u64,
    /// Snapshots installed on followers.
    pub snapshots_installed: u64,
    /// Ticks a core spent quiet (`raft/quiesce.rs`), summed over cores.
    pub quiesced_core_ticks: u64,
}

impl SimOutcome {
    /// The checker that found the first violation, if any.
    pub fn first_checker(&self) -> Option<CheckerKind> {
        self.violations.first().map(|v| v.checker)
    }

    /// True if no invariant broke and the liveness phase succeeded.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.liveness_failure.is_none()
    }
}

/// Runs one seeded simulation. A panic inside the run (a broken assertion
/// of the core) is reported as a violation of that seed.
pub fn run(options: SimOptions) -> SimOutcome {
    let seed = options.seed;
    match std::panic::catch_unwind(move || Cluster::new(options).run()) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SimOutcome {
                seed,
                violations: vec![Violation::new(CheckerKind::CorePanic, message)],
                ..SimOutcome::default()
            }
        }
    }
}
