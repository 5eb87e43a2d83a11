//! Election safety: at most one leader can be elected in a given term
//! (Raft §5.2, Figure 3).

use std::collections::BTreeMap;

use crate::raft::{NodeId, Term};

/// Remembers who led each term.
#[derive(Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// `node` became leader of `term`.
    pub fn on_leader(&mut self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(previous) if previous != node => Err(format!(
                "election safety: nodes {previous} and {node} both led term {term}"
            )),
            _ => Ok(()),
        }
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}
