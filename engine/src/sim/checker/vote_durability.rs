//! Vote durability: a vote that left a node is on its disk (Raft Figure 2:
//! "persistent state ... updated on stable storage before responding"). A
//! node that sends a vote, crashes before persisting it and comes back would
//! otherwise be free to vote again, for someone else, in the same term.
//! Checked at every restart: the persisted term is at least the newest vote's
//! term, and holds that same vote if equal.

use std::collections::BTreeMap;

use super::{Check, CheckerKind, Violation};
use crate::raft::{HardState, NodeId, Term};

/// Per node: the newest vote it sent.
#[derive(Default)]
pub struct VoteDurability {
    votes_sent: BTreeMap<NodeId, (Term, NodeId)>,
}

impl VoteDurability {
    /// `node` sent a granted vote for `candidate` in `term`.
    pub fn on_vote_sent(&mut self, node: NodeId, term: Term, candidate: NodeId) {
        let newest = self.votes_sent.entry(node).or_insert((term, candidate));
        if term >= newest.0 {
            *newest = (term, candidate);
        }
    }

    /// `node` restarts from `persisted`.
    pub fn on_restart(&self, node: NodeId, persisted: HardState) -> Check {
        let Some(&(term, candidate)) = self.votes_sent.get(&node) else {
            return Ok(());
        };
        if persisted.term < term || (persisted.term == term && persisted.vote != Some(candidate)) {
            return Err(Violation::new(
                CheckerKind::VoteDurability,
                format!(
                    "node {node} sent a vote for {candidate} in term {term} but restarted with term {} vote {:?}",
                    persisted.term, persisted.vote
                ),
            ));
        }
        Ok(())
    }
}
