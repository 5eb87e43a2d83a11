//! Term and commit index never go backwards within a node's run, and a vote
//! that left a node is on its disk: after a restart the node's persisted term
//! is at least the vote's term, with the same vote (Raft §5.2 with Figure 2's
//! "persistent state ... updated on stable storage before responding").

use std::collections::BTreeMap;

use crate::raft::{HardState, LogIndex, NodeId, Term};

/// Per node: the latest term and commit seen in this run, and the newest vote sent.
#[derive(Default)]
pub struct MonotonicState {
    seen: BTreeMap<NodeId, (Term, LogIndex)>,
    votes_sent: BTreeMap<NodeId, (Term, NodeId)>,
}

impl MonotonicState {
    /// `node` now has `term` and `commit`.
    pub fn on_state(&mut self, node: NodeId, term: Term, commit: LogIndex) -> Result<(), String> {
        let (last_term, last_commit) = self.seen.get(&node).copied().unwrap_or_default();
        self.seen.insert(node, (term.max(last_term), commit.max(last_commit)));
        if term < last_term {
            return Err(format!(
                "monotonic state: node {node}'s term went back from {last_term} to {term}"
            ));
        }
        if commit < last_commit {
            return Err(format!(
                "monotonic state: node {node}'s commit index went back from {last_commit} to {commit}"
            ));
        }
        Ok(())
    }

    /// `node` sent a granted vote for `candidate` in `term`.
    pub fn on_vote_sent(&mut self, node: NodeId, term: Term, candidate: NodeId) {
        self.votes_sent.insert(node, (term, candidate));
    }

    /// `node` restarts from `persisted`. A new run may start from a lower
    /// commit index (commit is re-learned), never from a lower voted term.
    pub fn on_restart(&mut self, node: NodeId, persisted: HardState) -> Result<(), String> {
        self.seen.insert(node, (persisted.term, persisted.commit_index));
        if let Some(&(term, candidate)) = self.votes_sent.get(&node) {
            if persisted.term < term || (persisted.term == term && persisted.vote != Some(candidate)) {
                return Err(format!(
                    "vote durability: node {node} sent a vote for {candidate} in term {term} but restarted with term {} vote {:?}",
                    persisted.term, persisted.vote
                ));
            }
        }
        Ok(())
    }
}
