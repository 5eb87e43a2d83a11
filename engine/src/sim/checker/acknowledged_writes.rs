//! No acknowledged write is lost: every write a leader acknowledged stays in
//! the log of every later leader (or under its snapshot).

use super::{Check, CheckerKind, Violation};
use crate::raft::{LogIndex, Term};

/// The acknowledged writes of a run.
#[derive(Default)]
pub struct AcknowledgedWrites {
    acked: Vec<(LogIndex, Term, u64)>,
    highest_index: LogIndex,
}

impl AcknowledgedWrites {
    /// A client got the result of `value`, written at (`index`, `term`).
    pub fn on_ack(&mut self, index: LogIndex, term: Term, value: u64) {
        self.acked.push((index, term, value));
        self.highest_index = self.highest_index.max(index);
    }

    /// The highest index of any acknowledged write.
    pub fn highest_index(&self) -> LogIndex {
        self.highest_index
    }

    /// Number of acknowledged writes.
    pub fn count(&self) -> usize {
        self.acked.len()
    }

    /// Checks a leader's log: `holds(index, term)` says whether it has the
    /// entry or a snapshot covering it.
    pub fn check_leader(&self, leader: u64, holds: impl Fn(LogIndex, Term) -> bool) -> Check {
        for &(index, term, value) in &self.acked {
            if !holds(index, term) {
                return Err(Violation::new(
                    CheckerKind::AcknowledgedWrites,
                    format!("value {value} acknowledged at ({index}, term {term}) is not in leader {leader}'s log"),
                ));
            }
        }
        Ok(())
    }
}
