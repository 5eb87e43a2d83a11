//! Log matching: if two logs contain an entry with the same index and term,
//! the logs are identical in all entries up through that index (Raft §5.3).
//!
//! Each node's log is mirrored as a chain of hashes (hash of the previous
//! link, the term and the payload), so "identical up through" is one
//! comparison. The committed prefix is kept here too: committing two
//! different entries at one index is a violation at once, and so is a node
//! whose commit index runs past the end of its own log.

use std::collections::{BTreeMap, HashMap};

use super::{Check, CheckerKind, Violation};
use crate::raft::{Entry, LogIndex, NodeId, Term};
use crate::sim::node::{mix, payload_digest};

/// One node's handed-out log as hash links from a base (its snapshot point).
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    base_index: LogIndex,
    base_link: u64,
    links: Vec<(Term, u64)>,
}

impl Mirror {
    /// Index of the last entry mirrored.
    pub fn last_index(&self) -> LogIndex {
        self.base_index.plus(self.links.len() as u64)
    }
    /// The hash link at `index`, if mirrored.
    pub fn link_at(&self, index: LogIndex) -> Option<u64> {
        if index == self.base_index {
            return Some(self.base_link);
        }
        if index < self.base_index {
            return None;
        }
        self.links
            .get((index.0 - self.base_index.0 - 1) as usize)
            .map(|&(_, l)| l)
    }
    /// First mirrored index.
    pub fn base_index(&self) -> LogIndex {
        self.base_index
    }
}

/// Mirrors of every node's log and the committed prefix.
#[derive(Default)]
pub struct LogMatching {
    mirrors: BTreeMap<NodeId, Mirror>,
    links: HashMap<(LogIndex, Term), u64>,
    committed: Vec<u64>,
}

impl LogMatching {
    /// The mirror of `node`'s log.
    pub fn mirror(&self, node: NodeId) -> Mirror {
        self.mirrors.get(&node).cloned().unwrap_or_default()
    }

    /// Highest index known committed anywhere.
    pub fn committed_index(&self) -> LogIndex {
        LogIndex(self.committed.len() as u64)
    }

    /// The link of the committed entry at `index` (index 0 is the empty log).
    pub fn committed_link(&self, index: LogIndex) -> Option<u64> {
        if index.0 == 0 {
            return Some(0);
        }
        self.committed.get(index.0 as usize - 1).copied()
    }

    /// `node` truncated its log from `truncate_from` (if any) and appended `entries`.
    pub fn on_append(&mut self, node: NodeId, truncate_from: Option<LogIndex>, entries: &[Entry]) -> Check {
        let mirror = self.mirrors.entry(node).or_default();
        if let Some(from) = truncate_from {
            if from <= mirror.base_index {
                return Err(Violation::new(
                    CheckerKind::LogMatching,
                    format!(
                        "node {node} truncated from {from}, below its snapshot {}",
                        mirror.base_index
                    ),
                ));
            }
            mirror.links.truncate((from.0 - mirror.base_index.0 - 1) as usize);
        }
        for entry in entries {
            if entry.index != mirror.last_index().next() {
                return Err(Violation::new(
                    CheckerKind::LogMatching,
                    format!("node {node} appended {} after {}", entry.index, mirror.last_index()),
                ));
            }
            let previous = mirror.link_at(mirror.last_index()).expect("last link exists");
            let link = mix(mix(previous, entry.term.0), payload_digest(&entry.payload));
            mirror.links.push((entry.term, link));
            match self.links.get(&(entry.index, entry.term)) {
                Some(&known) if known != link => {
                    return Err(Violation::new(
                        CheckerKind::LogMatching,
                        format!(
                        "node {node} holds entry ({}, term {}) with a different prefix or payload than another node",
                        entry.index, entry.term
                    ),
                    ))
                }
                Some(_) => {}
                None => {
                    self.links.insert((entry.index, entry.term), link);
                }
            }
        }
        Ok(())
    }

    /// `node` replaced its log with a snapshot at (`index`) of committed state.
    pub fn on_snapshot(&mut self, node: NodeId, index: LogIndex) -> Check {
        let Some(link) = self.committed_link(index) else {
            return Err(Violation::new(
                CheckerKind::LogMatching,
                format!("node {node} installed a snapshot at {index}, beyond anything committed"),
            ));
        };
        self.mirrors.insert(
            node,
            Mirror {
                base_index: index,
                base_link: link,
                links: Vec::new(),
            },
        );
        Ok(())
    }

    /// `node` restarted from its disk.
    pub fn on_restart(&mut self, node: NodeId, snapshot_index: LogIndex, entries: &[Entry]) -> Check {
        self.on_snapshot(node, snapshot_index)?;
        self.on_append(node, None, entries)
    }

    /// `node`'s commit index moved from `from` (exclusive) to `to`.
    pub fn on_commit(&mut self, node: NodeId, from: LogIndex, to: LogIndex) -> Check {
        let mirror = self.mirrors.entry(node).or_default().clone();
        if to > mirror.last_index() {
            return Err(Violation::new(
                CheckerKind::LogMatching,
                format!(
                    "node {node} committed up to {to} but its log ends at {}",
                    mirror.last_index()
                ),
            ));
        }
        for index in from.next().0..=to.0 {
            let index = LogIndex(index);
            let Some(link) = mirror.link_at(index) else { continue };
            match self.committed_link(index) {
                Some(known) if known != link => {
                    return Err(Violation::new(
                        CheckerKind::StateMachineSafety,
                        format!("node {node} committed a different entry at index {index}"),
                    ));
                }
                Some(_) => {}
                None if index.0 as usize == self.committed.len() + 1 => self.committed.push(link),
                None => {
                    return Err(Violation::new(
                        CheckerKind::LogMatching,
                        format!(
                            "node {node} committed {index} beyond the known prefix {}",
                            self.committed.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
