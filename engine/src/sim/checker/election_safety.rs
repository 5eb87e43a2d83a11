//! Election safety: at most one leader can be elected in a given term
//! (Raft §5.2, Figure 3), which rests on each voter granting at most one
//! vote per term. Both are checked: the vote rule catches a double vote even
//! when it did not happen to elect two leaders.

use std::collections::BTreeMap;

use super::{Check, CheckerKind, Violation};
use crate::raft::{NodeId, Term};

/// Remembers who led each term and whom each voter voted for.
#[derive(Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
}

impl ElectionSafety {
    /// `node` became leader of `term`.
    pub fn on_leader(&mut self, term: Term, node: NodeId) -> Check {
        match self.leaders.insert(term, node) {
            Some(previous) if previous != node => Err(Violation::new(
                CheckerKind::ElectionSafety,
                format!("nodes {previous} and {node} both led term {term}"),
            )),
            _ => Ok(()),
        }
    }

    /// `voter` sent a granted (real, not pre-) vote for `candidate` in `term`.
    pub fn on_vote_granted(&mut self, voter: NodeId, term: Term, candidate: NodeId) -> Check {
        match self.votes.insert((voter, term), candidate) {
            Some(previous) if previous != candidate => Err(Violation::new(
                CheckerKind::ElectionSafety,
                format!("node {voter} voted for both {previous} and {candidate} in term {term}"),
            )),
            _ => Ok(()),
        }
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}
