//! Invariant checkers, one file per invariant. The cluster loop reports
//! events (a Ready's log changes, a commit, an apply, an acknowledgement, a
//! read, a restart); each checker records what it needs and reports a
//! violation as soon as its invariant breaks.

mod acknowledged_writes;
mod election_safety;
mod leader_completeness;
mod linearizable_reads;
mod log_matching;
mod monotonic_state;
mod state_machine_safety;

pub use acknowledged_writes::AcknowledgedWrites;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use linearizable_reads::LinearizableReads;
pub use log_matching::LogMatching;
pub use monotonic_state::MonotonicState;
pub use state_machine_safety::StateMachineSafety;

/// Every checker of a run.
#[derive(Default)]
pub struct Checkers {
    /// At most one leader per term (Raft §5.2).
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
    /// Reads see every write acknowledged before they began (thesis §6.4).
    pub linearizable_reads: LinearizableReads,
    /// Term and commit never go back; votes are durable before they are sent.
    pub monotonic_state: MonotonicState,
    /// Violations found, in order.
    pub violations: Vec<String>,
}

impl Checkers {
    /// Records a violation unless the same text was recorded already.
    pub fn report(&mut self, result: Result<(), String>) {
        if let Err(violation) = result {
            if !self.violations.contains(&violation) {
                self.violations.push(violation);
            }
        }
    }
}
