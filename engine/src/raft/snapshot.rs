//! Snapshots (Raft §7): compacting the log below a snapshot the runtime took,
//! sending a snapshot to a follower that needs compacted entries, and
//! installing one received from the leader.

use std::collections::VecDeque;

use super::core::RaftCore;
use super::message::MessageBody;
use super::progress::ProgressState;
use super::types::{Entry, LogIndex, NodeId, SnapshotMeta};

impl RaftCore {
    /// The runtime saved a snapshot of the state machine at `index` (which it
    /// has applied). Returns the snapshot's metadata to store beside the data.
    /// The log is not compacted until [`compact`](Self::compact) is called, so
    /// the runtime may keep a tail for slow followers.
    ///
    /// # Correctness
    ///
    /// The snapshot may cover entries applied before they were durable
    /// locally, so it must become durable *after* every write handed out
    /// before this call (in the same order as the log's writes): otherwise a
    /// crash could keep the snapshot yet lose an earlier truncation, leaving
    /// stale entries after it.
    pub fn snapshot_created(&mut self, index: LogIndex) -> Option<SnapshotMeta> {
        let meta = self.snapshot_meta(index)?;
        self.snapshot = Some(meta.clone());
        Some(meta)
    }

    /// The metadata a snapshot at `index` would have (its term and the
    /// configuration in force there), without recording it: the runtime
    /// writes the snapshot with it, then reports it with
    /// [`snapshot_created`](Self::snapshot_created) once it is durable.
    /// `None` if `index` is not applied, not newer than the latest snapshot,
    /// or no longer in the log.
    pub fn snapshot_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        if index > self.log.applied() || self.snapshot.as_ref().is_some_and(|s| s.index >= index) {
            return None;
        }
        let term = self.log.term_at(index)?;
        Some(SnapshotMeta {
            index,
            term,
            configuration: self.membership.at(index).clone(),
        })
    }

    /// Drops log entries up to `index`, which must not pass the latest
    /// snapshot, and returns them: the caller chooses where their memory is
    /// released (a large compaction's drops take long enough to hold up a
    /// shard's loop; see [`RaftLog::compact_to`](super::log::RaftLog::compact_to)).
    pub fn compact(&mut self, index: LogIndex) -> VecDeque<Entry> {
        let Some(snapshot_index) = self.snapshot.as_ref().map(|s| s.index) else {
            return VecDeque::new();
        };
        let index = index.min(snapshot_index);
        if index <= self.log.snapshot_index() {
            return VecDeque::new();
        }
        self.membership.compacted_to(index);
        self.log.compact_to(index)
    }

    /// The runtime's report on a snapshot sent to `peer`: on failure the
    /// leader goes back to probing it.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        self.wake();
        if let Some(progress) = self.progress.get_mut(&peer) {
            if matches!(progress.state, ProgressState::Snapshot { .. }) && !delivered {
                progress.become_probe();
            }
        }
    }

    pub(super) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(meta) = self.snapshot.clone() else {
            // Compaction always follows a snapshot, so this cannot happen.
            panic!("node {} needs a snapshot for {to} but holds none", self.config.id);
        };
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { meta });
        true
    }

    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, last_index: LogIndex) {
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if let ProgressState::Snapshot { pending_index } = progress.state {
            if last_index >= pending_index {
                progress.acknowledge(last_index);
                progress.become_probe();
            }
        }
        self.maybe_commit();
        self.send_append(from, false);
    }

    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        let committed = self.log.committed();
        if meta.index <= committed {
            self.send_after_persist(from, MessageBody::InstallSnapshotResponse { last_index: committed });
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // The log already holds it: just learn the commit.
            self.log.commit_to(meta.index);
            self.send_after_persist(from, MessageBody::InstallSnapshotResponse { last_index: meta.index });
            return;
        }
        self.log.restore(&meta);
        self.membership.restored(meta.index, meta.configuration.clone());
        self.snapshot = Some(meta.clone());
        let last_index = meta.index;
        self.out.snapshot = Some(meta);
        self.send_after_persist(from, MessageBody::InstallSnapshotResponse { last_index });
    }
}
