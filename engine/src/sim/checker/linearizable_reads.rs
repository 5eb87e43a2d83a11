//! Linearizable reads (Raft thesis §6.4), in real-time order: a read returns
//! the state at some applied index, and that index must be at least
//!
//! - the index of every write acknowledged before the read began, and
//! - the index every read that completed before it began returned
//!   (a later read never sees less than an earlier one saw).
//!
//! The floor is taken when the read begins and checked when it is served.

use super::{Check, CheckerKind, Violation};
use crate::raft::LogIndex;

/// What a read must at least see, fixed when it begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadFloor {
    /// Highest index of a write acknowledged before the read began.
    pub acknowledged_write: LogIndex,
    /// Highest index a read that completed before this one began returned.
    pub completed_read: LogIndex,
}

/// The reads of a run.
#[derive(Default)]
pub struct LinearizableReads {
    confirmed: u64,
    served: u64,
    highest_returned: LogIndex,
}

impl LinearizableReads {
    /// The floor of a read beginning now, given the highest acknowledged write.
    pub fn floor(&self, acknowledged_write: LogIndex) -> ReadFloor {
        ReadFloor {
            acknowledged_write,
            completed_read: self.highest_returned,
        }
    }

    /// A read got its read index from the leader.
    pub fn on_confirmed(&mut self) {
        self.confirmed += 1;
    }

    /// Read `context`, begun with `floor`, was served on `node` from the
    /// state at `returned`.
    pub fn on_served(&mut self, node: u64, context: u64, floor: ReadFloor, returned: LogIndex) -> Check {
        self.served += 1;
        self.highest_returned = self.highest_returned.max(returned);
        if returned < floor.acknowledged_write {
            return Err(Violation::new(
                CheckerKind::LinearizableReads,
                format!(
                    "read {context} on node {node} returned the state at {returned}, but a write at {} \
                     was acknowledged before it began",
                    floor.acknowledged_write
                ),
            ));
        }
        if returned < floor.completed_read {
            return Err(Violation::new(
                CheckerKind::LinearizableReads,
                format!(
                    "read {context} on node {node} returned the state at {returned}, but a read that \
                     completed before it began returned the state at {}",
                    floor.completed_read
                ),
            ));
        }
        Ok(())
    }

    /// Reads confirmed so far.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Reads served so far.
    pub fn served(&self) -> u64 {
        self.served
    }
}
