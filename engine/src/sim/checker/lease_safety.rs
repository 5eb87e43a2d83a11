//! Lease safety (Raft thesis §6.4.1): a leader answering a read from its
//! lease must still be the only leader, so no write that a leader of a newer
//! term acknowledged before the read began may be missing from what the read
//! returns. This is a sharper diagnosis of a stale read than
//! [`super::LinearizableReads`]: it says the lease outlived the leadership
//! (clocks drifted beyond the margin, or a stall stretched the lease).

use std::collections::BTreeMap;

use super::{Check, CheckerKind, Violation};
use crate::raft::{LogIndex, Term};

/// Acknowledged writes per term, and the lease reads checked.
#[derive(Default)]
pub struct LeaseSafety {
    highest_acknowledged: BTreeMap<Term, LogIndex>,
    lease_reads: u64,
}

impl LeaseSafety {
    /// A write at `index` of `term` was acknowledged.
    pub fn on_ack(&mut self, index: LogIndex, term: Term) {
        let highest = self.highest_acknowledged.entry(term).or_default();
        *highest = (*highest).max(index);
    }

    /// The highest index acknowledged by a leader of a term after `term`:
    /// the floor of a lease read beginning now on the leader of `term`.
    pub fn floor_after(&self, term: Term) -> LogIndex {
        self.highest_acknowledged
            .range(term.next()..)
            .map(|(_, &index)| index)
            .max()
            .unwrap_or_default()
    }

    /// A lease read by the leader of `term` on `node`, whose floor was
    /// `floor`, returned the state at `returned`.
    pub fn on_served(&mut self, node: u64, term: Term, floor: LogIndex, returned: LogIndex) -> Check {
        self.lease_reads += 1;
        if returned < floor {
            return Err(Violation::new(
                CheckerKind::LeaseSafety,
                format!(
                    "node {node} answered a lease read as leader of term {term} with the state at \
                     {returned}, but a newer term's leader had acknowledged a write at {floor}"
                ),
            ));
        }
        Ok(())
    }

    /// Lease reads served so far.
    pub fn lease_reads(&self) -> u64 {
        self.lease_reads
    }
}
