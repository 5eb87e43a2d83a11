//! State machine safety: if a node has applied an entry at an index, no other
//! node ever applies a different entry there (Raft §5.4.3). The simulator's
//! state machine folds every applied entry into a digest, so equal digests at
//! an index mean equal applied sequences up to it.

use super::{Check, CheckerKind, Violation};
use crate::raft::{LogIndex, NodeId};

/// The one history every node must follow.
#[derive(Default)]
pub struct StateMachineSafety {
    digests: Vec<u64>,
}

impl StateMachineSafety {
    /// `node` applied up to `index`, reaching `digest`.
    pub fn on_apply(&mut self, node: NodeId, index: LogIndex, digest: u64) -> Check {
        let position = index.0 as usize;
        if position == 0 {
            return Ok(());
        }
        match self.digests.get(position - 1) {
            Some(&known) if known != digest => Err(Violation::new(
                CheckerKind::StateMachineSafety,
                format!("node {node} applied a different sequence up to index {index}"),
            )),
            Some(_) => Ok(()),
            None if position == self.digests.len() + 1 => {
                self.digests.push(digest);
                Ok(())
            }
            None => Err(Violation::new(
                CheckerKind::StateMachineSafety,
                format!(
                    "node {node} applied index {index} but the history ends at {}",
                    self.digests.len()
                ),
            )),
        }
    }

    /// Length of the applied history.
    pub fn history_len(&self) -> u64 {
        self.digests.len() as u64
    }
}
