//! How far the snapshot streams (InstallSnapshot) in flight on a shard have
//! got, for `GroupStatus::installs` and the admin protocol's `Installs`.
//!
//! The leader's side is read off its `SnapshotSender`s (`install.rs`). The
//! follower's receiver (`SnapshotInbox`) lives on the receive worker's
//! thread part of the time, so the shard keeps its own account here, from
//! the acknowledgements the worker hands back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coraft_net::schema::SnapshotChunkAck;

use crate::raft::{GroupId, LogIndex, NodeId, Term};

/// A received stream that got no chunk for this long is no longer shown
/// (its leader gave it up: leadership moved, or the follower was caught up
/// otherwise); a chunk of it brings it back.
pub const INSTALL_RECEIVE_IDLE_MAX: Duration = Duration::from_secs(10);

/// Which way a snapshot stream goes, seen from the node reporting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstallDirection {
    /// This node leads the group and sends the snapshot to a follower.
    Sending,
    /// This node receives the snapshot from the group's leader.
    Receiving,
}

/// One snapshot stream in flight, in [`GroupStatus::installs`](super::GroupStatus::installs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallProgress {
    /// Sending or receiving.
    pub direction: InstallDirection,
    /// The follower it goes to, or the leader it comes from.
    pub peer: NodeId,
    /// The last index the snapshot covers.
    pub snapshot_index: LogIndex,
    /// That entry's term.
    pub snapshot_term: Term,
    /// The stream's length in bytes (the snapshot's metadata, then its data).
    pub total_bytes: u64,
    /// Sending: the furthest stream offset sent. Receiving: the bytes
    /// received and written here.
    pub sent_bytes: u64,
    /// Bytes the follower wrote and acknowledged (receiving: the same as
    /// `sent_bytes`: a chunk is acknowledged once written).
    pub acknowledged_bytes: u64,
    /// Since the stream started (receiving: since its first chunk).
    pub elapsed: Duration,
}

/// A stream this shard receives, as its acknowledgements tell it.
#[derive(Debug, Clone)]
struct Receiving {
    from: NodeId,
    snapshot_index: LogIndex,
    snapshot_term: Term,
    total_bytes: u64,
    written_bytes: u64,
    started: Instant,
    last_chunk: Instant,
}

/// The streams a shard receives, at most one per group.
#[derive(Debug, Default)]
pub(crate) struct ReceiveProgress {
    streams: BTreeMap<GroupId, Receiving>,
}

impl ReceiveProgress {
    /// The receive worker wrote (or refused) a chunk of `total_bytes`'
    /// stream from `from` and answers `ack`. A completed stream is
    /// forgotten; a refused chunk changes nothing.
    pub fn on_ack(&mut self, group: GroupId, from: NodeId, total_bytes: u64, ack: &SnapshotChunkAck, now: Instant) {
        if ack.complete {
            self.streams.remove(&group);
            return;
        }
        if ack.refused {
            return;
        }
        let (index, term) = (LogIndex(ack.snapshot_index), Term(ack.snapshot_term));
        let same = self
            .streams
            .get(&group)
            .is_some_and(|s| s.from == from && s.snapshot_index == index && s.snapshot_term == term);
        if !same {
            self.streams.insert(
                group,
                Receiving {
                    from,
                    snapshot_index: index,
                    snapshot_term: term,
                    total_bytes,
                    written_bytes: 0,
                    started: now,
                    last_chunk: now,
                },
            );
        }
        let stream = self.streams.get_mut(&group).expect("inserted above");
        stream.written_bytes = ack.next_offset.min(stream.total_bytes);
        stream.last_chunk = now;
    }

    /// Drops the streams idle for [`INSTALL_RECEIVE_IDLE_MAX`].
    pub fn drop_idle(&mut self, now: Instant) {
        if !self.streams.is_empty() {
            self.streams
                .retain(|_, s| now.saturating_duration_since(s.last_chunk) < INSTALL_RECEIVE_IDLE_MAX);
        }
    }

    /// `group`'s stream, if one is in flight.
    pub fn progress(&self, group: GroupId, now: Instant) -> Option<InstallProgress> {
        let stream = self.streams.get(&group)?;
        if now.saturating_duration_since(stream.last_chunk) >= INSTALL_RECEIVE_IDLE_MAX {
            return None;
        }
        Some(InstallProgress {
            direction: InstallDirection::Receiving,
            peer: stream.from,
            snapshot_index: stream.snapshot_index,
            snapshot_term: stream.snapshot_term,
            total_bytes: stream.total_bytes,
            sent_bytes: stream.written_bytes,
            acknowledged_bytes: stream.written_bytes,
            elapsed: now.saturating_duration_since(stream.started),
        })
    }

    /// The groups with a stream in flight.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.streams.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(next_offset: u64, refused: bool, complete: bool) -> SnapshotChunkAck {
        SnapshotChunkAck {
            snapshot_index: 10,
            snapshot_term: 2,
            chunk_offset: 0,
            next_offset,
            refused,
            complete,
        }
    }

    #[test]
    fn a_received_stream_grows_with_its_acks_and_goes_when_complete_or_idle() {
        let start = Instant::now();
        let mut progress = ReceiveProgress::default();
        let group = GroupId(1);
        progress.on_ack(group, NodeId(2), 100, &ack(40, false, false), start);
        let later = start + Duration::from_secs(1);
        progress.on_ack(group, NodeId(2), 100, &ack(70, false, false), later);
        // A refused chunk (out of order) moves nothing.
        progress.on_ack(group, NodeId(2), 100, &ack(0, true, false), later);
        let seen = progress.progress(group, later).unwrap();
        assert_eq!(
            (seen.sent_bytes, seen.acknowledged_bytes, seen.total_bytes, seen.peer),
            (70, 70, 100, NodeId(2))
        );
        assert_eq!(seen.elapsed, Duration::from_secs(1));
        assert_eq!(seen.direction, InstallDirection::Receiving);
        assert!(progress.progress(group, later + INSTALL_RECEIVE_IDLE_MAX).is_none());
        progress.on_ack(group, NodeId(2), 100, &ack(100, false, true), later);
        assert!(progress.progress(group, later).is_none(), "complete");
        assert_eq!(progress.groups().count(), 0);
    }

    #[test]
    fn a_stream_from_another_leader_starts_over() {
        let start = Instant::now();
        let mut progress = ReceiveProgress::default();
        let group = GroupId(1);
        progress.on_ack(group, NodeId(2), 100, &ack(90, false, false), start);
        let later = start + Duration::from_secs(3);
        progress.on_ack(group, NodeId(3), 100, &ack(10, false, false), later);
        let seen = progress.progress(group, later).unwrap();
        assert_eq!(
            (seen.peer, seen.sent_bytes, seen.elapsed),
            (NodeId(3), 10, Duration::ZERO)
        );
        progress.drop_idle(later + INSTALL_RECEIVE_IDLE_MAX);
        assert!(progress.progress(group, later).is_none());
    }
}
