//! Leader completeness: a leader's log holds every entry committed in earlier
//! terms (Raft §5.4, Figure 3).

use super::{Check, CheckerKind, Violation};
use crate::raft::{NodeId, Term};

use super::log_matching::LogMatching;

/// Checks each new leader against the committed prefix.
#[derive(Default)]
pub struct LeaderCompleteness {
    checked: u64,
}

impl LeaderCompleteness {
    /// `node` became leader of `term`, with its log mirrored in `logs`.
    pub fn on_leader(&mut self, logs: &LogMatching, node: NodeId, term: Term) -> Check {
        self.checked += 1;
        let committed = logs.committed_index();
        let mirror = logs.mirror(node);
        if committed < mirror.base_index() {
            return Ok(()); // its snapshot covers everything committed
        }
        match (mirror.link_at(committed), logs.committed_link(committed)) {
            (Some(have), Some(want)) if have == want => Ok(()),
            _ => Err(Violation::new(
                CheckerKind::LeaderCompleteness,
                format!(
                    "node {node} leads term {term} without committed entry {committed} (its log ends at {})",
                    mirror.last_index()
                ),
            )),
        }
    }

    /// Leaders checked so far.
    pub fn leaders_checked(&self) -> u64 {
        self.checked
    }
}
