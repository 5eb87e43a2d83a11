//! Term and commit index never go backwards within a node's run (a restart
//! may re-learn commit, never lose a term: that is [`super::VoteDurability`]'s).

use std::collections::BTreeMap;

use super::{Check, CheckerKind, Violation};
use crate::raft::{LogIndex, NodeId, Term};

/// Per node: the latest term and commit seen in this run.
#[derive(Default)]
pub struct MonotonicState {
    seen: BTreeMap<NodeId, (Term, LogIndex)>,
}

impl MonotonicState {
    /// `node` now has `term` and `commit`.
    pub fn on_state(&mut self, node: NodeId, term: Term, commit: LogIndex) -> Check {
        let (last_term, last_commit) = self.seen.get(&node).copied().unwrap_or_default();
        self.seen.insert(node, (term.max(last_term), commit.max(last_commit)));
        if term < last_term {
            return Err(Violation::new(
                CheckerKind::MonotonicState,
                format!("node {node}'s term went back from {last_term} to {term}"),
            ));
        }
        if commit < last_commit {
            return Err(Violation::new(
                CheckerKind::MonotonicState,
                format!("node {node}'s commit index went back from {last_commit} to {commit}"),
            ));
        }
        Ok(())
    }

    /// `node` restarts with `term` and `commit` from its disk.
    pub fn on_restart(&mut self, node: NodeId, term: Term, commit: LogIndex) {
        self.seen.insert(node, (term, commit));
    }
}
