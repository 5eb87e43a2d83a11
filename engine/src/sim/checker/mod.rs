//! Invariant checkers, one file per invariant. The cluster loop reports
//! events (a Ready's log changes, a commit, an apply, an acknowledgement, a
//! read, a restart); each checker records what it needs and reports a
//! [`Violation`] naming itself as soon as its invariant breaks, so a test can
//! tell which rule a run broke (and a harness error or a core panic is never
//! mistaken for a caught bug).

mod acknowledged_writes;
mod election_safety;
mod leader_completeness;
mod lease_safety;
mod linearizable_reads;
mod log_matching;
mod monotonic_state;
mod state_machine_safety;
mod vote_durability;

use std::fmt;

pub use acknowledged_writes::AcknowledgedWrites;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use lease_safety::LeaseSafety;
pub use linearizable_reads::{LinearizableReads, ReadFloor};
pub use log_matching::LogMatching;
pub use monotonic_state::MonotonicState;
pub use state_machine_safety::StateMachineSafety;
pub use vote_durability::VoteDurability;

/// Which check a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckerKind {
    /// At most one leader per term, at most one vote per voter per term (Raft §5.2).
    ElectionSafety,
    /// Same index and term ⇒ same prefix; no commit past the own log (Raft §5.3).
    LogMatching,
    /// A new leader holds every committed entry (Raft §5.4).
    LeaderCompleteness,
    /// No two different entries committed or applied at one index (Raft §5.4.3).
    StateMachineSafety,
    /// No acknowledged write is lost.
    AcknowledgedWrites,
    /// Reads are linearizable in real-time order (thesis §6.4).
    LinearizableReads,
    /// A lease read never misses a write a newer leader acknowledged (thesis §6.4.1).
    LeaseSafety,
    /// A vote that left a node survives its crash (Raft Figure 2).
    VoteDurability,
    /// Term and commit index never go back within a node's run.
    MonotonicState,
    /// A correct node's message was refused by the core's check of peer
    /// input (`RaftCore::step_checked`): a false alarm of that check, which
    /// in the runtime would drop a good message.
    PeerInputCheck,
    /// The simulated runtime itself broke (a disk write that does not fit, a
    /// core that never stops producing Ready): not a caught protocol bug.
    Harness,
    /// The core panicked (a broken assertion).
    CorePanic,
}

impl CheckerKind {
    /// Every kind, in a fixed order (for reports).
    pub const ALL: [CheckerKind; 12] = [
        CheckerKind::ElectionSafety,
        CheckerKind::LogMatching,
        CheckerKind::LeaderCompleteness,
        CheckerKind::StateMachineSafety,
        CheckerKind::AcknowledgedWrites,
        CheckerKind::LinearizableReads,
        CheckerKind::LeaseSafety,
        CheckerKind::VoteDurability,
        CheckerKind::MonotonicState,
        CheckerKind::PeerInputCheck,
        CheckerKind::Harness,
        CheckerKind::CorePanic,
    ];

    /// The name used in reports (`election_safety`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::ElectionSafety => "election_safety",
            CheckerKind::LogMatching => "log_matching",
            CheckerKind::LeaderCompleteness => "leader_completeness",
            CheckerKind::StateMachineSafety => "state_machine_safety",
            CheckerKind::AcknowledgedWrites => "acknowledged_writes",
            CheckerKind::LinearizableReads => "linearizable_reads",
            CheckerKind::LeaseSafety => "lease_safety",
            CheckerKind::VoteDurability => "vote_durability",
            CheckerKind::MonotonicState => "monotonic_state",
            CheckerKind::PeerInputCheck => "peer_input_check",
            CheckerKind::Harness => "harness",
            CheckerKind::CorePanic => "core_panic",
        }
    }
}

impl fmt::Display for CheckerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant: which checker found it and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker that found it.
    pub checker: CheckerKind,
    /// What it saw (nodes, terms, indexes).
    pub detail: String,
}

impl Violation {
    /// A violation found by `checker`.
    pub fn new(checker: CheckerKind, detail: impl Into<String>) -> Violation {
        Violation {
            checker,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.detail)
    }
}

/// What every checker returns.
pub type Check = Result<(), Violation>;

/// Every checker of a run.
#[derive(Default)]
pub struct Checkers {
    /// At most one leader per term and one vote per voter per term (Raft §5.2).
    pub election_safety: ElectionSafety,
    /// Same index and term ⇒ same prefix (Raft §5.3); also keeps the
    /// committed prefix the other checkers compare against.
    pub log_matching: LogMatching,
    /// A new leader holds every committed entry (Raft §5.4).
    pub leader_completeness: LeaderCompleteness,
    /// Every node applies the same sequence (Raft §5.4.3).
    pub state_machine_safety: StateMachineSafety,
    /// No acknowledged write is lost.
    pub acknowledged_writes: AcknowledgedWrites,
    /// Reads are linearizable in real-time order (thesis §6.4).
    pub linearizable_reads: LinearizableReads,
    /// Lease reads see every write a newer leader acknowledged (thesis §6.4.1).
    pub lease_safety: LeaseSafety,
    /// Term and commit never go back.
    pub monotonic_state: MonotonicState,
    /// Votes are durable before they are sent.
    pub vote_durability: VoteDurability,
    /// Violations found, in order.
    pub violations: Vec<Violation>,
}

impl Checkers {
    /// Records a violation unless the same one was recorded already.
    pub fn report(&mut self, result: Check) {
        if let Err(violation) = result {
            if !self.violations.contains(&violation) {
                self.violations.push(violation);
            }
        }
    }

    /// Records an error of the simulated runtime (not of the protocol).
    pub fn report_harness(&mut self, result: Result<(), String>) {
        self.report(result.map_err(|detail| Violation::new(CheckerKind::Harness, detail)));
    }
}
