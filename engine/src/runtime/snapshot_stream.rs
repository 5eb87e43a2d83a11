//! InstallSnapshot streaming: moving a stored snapshot from a leader's
//! snapshot store to a follower's, in bounded, checksummed chunks over the
//! peer connections the shard already holds.
//!
//! Sits beside the core: the core says *that* a follower needs a snapshot
//! (`MessageBody::InstallSnapshot`); this module moves the bytes. The
//! stream is the snapshot's metadata file (configuration, session table,
//! data length and checksum) followed by its data file. The leader side
//! ([`SnapshotSender`]) reads both with positioned reads and keeps at most
//! [`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`] chunks unacknowledged, paced by a
//! [`RateLimiter`] the shard shares between all its streams. The follower
//! side ([`SnapshotInbox`]) takes chunks only in order, checks each chunk's
//! CRC, decodes and verifies the metadata prefix, writes the data into a temp
//! directory of its [`SnapshotStore`] and publishes it atomically only if
//! the data's length and CRC match the metadata. A dropped connection costs
//! only the chunks in flight: the sender goes back to the last acknowledged
//! offset. A newer term abandons a stream (its temp directory is removed).
//! See `docs/architecture.md`, "InstallSnapshot streaming".

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coraft_net::bytes::Bytes;
use coraft_net::schema::{SnapshotChunk, SnapshotChunkAck};

use crate::raft::{GroupId, LogIndex, NodeId, Term};

use super::snapshot_store::{
    SnapshotHeader, SnapshotId, SnapshotStore, SnapshotStoreError, SnapshotWriter, StoredSnapshot,
};

/// Largest chunk of a snapshot stream, in bytes: below a connection's
/// receive buffer (`READ_BUFFER_BYTES`, 256 KiB), so a chunk takes the
/// ordinary receive path, shares frames with other groups' messages and
/// never holds a connection long.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 128 * 1024;
/// Chunks a sender keeps unacknowledged per stream at the smallest window
/// ([`SNAPSHOT_WINDOW_BYTES_MIN`]), the window of [`SnapshotSender::open`].
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// The smallest in-flight window of a stream, in bytes.
pub const SNAPSHOT_WINDOW_BYTES_MIN: u64 = (SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES_MAX) as u64;
/// The largest in-flight window of a stream, in bytes: what one stream may
/// have sent and not yet had acknowledged (queued, on the wire, or waiting
/// for the follower's disk).
pub const SNAPSHOT_WINDOW_BYTES_MAX: u64 = 16 << 20;
/// The round trip a stream's window covers at the configured pace: a chunk
/// is acknowledged once the follower wrote it, so the round trip includes
/// the follower's write, which a shared disk can stretch to tens of ms.
pub const SNAPSHOT_WINDOW_ROUND_TRIP: Duration = Duration::from_millis(50);

/// The in-flight window of a stream paced at `bytes_per_second`: enough
/// to keep the pace over [`SNAPSHOT_WINDOW_ROUND_TRIP`], within
/// [`SNAPSHOT_WINDOW_BYTES_MIN`]..=[`SNAPSHOT_WINDOW_BYTES_MAX`]. A fixed
/// 512 KiB window held a stream to 512 KiB per round trip (37 MB/s at a
/// 14 ms round trip while the follower's disk was busy).
pub fn snapshot_window_bytes(bytes_per_second: u64) -> u64 {
    let covered = bytes_per_second as u128 * SNAPSHOT_WINDOW_ROUND_TRIP.as_nanos() / NANOS_PER_SECOND;
    (covered.min(SNAPSHOT_WINDOW_BYTES_MAX as u128) as u64).max(SNAPSHOT_WINDOW_BYTES_MIN)
}
/// A receiver hands its data file out after this many bytes since the last
/// time, for its writeback to be started (not waited for), so the disk
/// writes the data as it comes and the fsync that publishes the snapshot
/// has little left to write (`SnapshotInbox::sync_due`).
pub const SNAPSHOT_RECEIVE_SYNC_BYTES: u64 = 2 << 20;
/// Bound on the data chunks a received stream hands to its state machine's
/// loader ahead of it (`SnapshotInbox::on_chunk_feeding`): past it the
/// receive worker waits for the loader, and so the chunks' answers do.
pub const SNAPSHOT_FEED_CHUNKS_MAX: usize = 64;
/// The tuning config's default (`[snapshot] install_bytes_per_second`).
pub const SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT: u64 = coraft_tuning::SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT;

/// What is wrong with a chunk, an ack, or the snapshot a stream carries.
/// Chunks and acks come from peers: every check is an error, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStreamError {
    /// A chunk longer than [`SNAPSHOT_CHUNK_BYTES_MAX`].
    #[error(
        "group {group}: snapshot chunk from node {from} at offset {offset} has {bytes} bytes, above the bound {bound}"
    )]
    ChunkTooLarge {
        /// The group.
        group: GroupId,
        /// The sender.
        from: NodeId,
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        bytes: usize,
        /// [`SNAPSHOT_CHUNK_BYTES_MAX`].
        bound: usize,
    },
    /// A chunk whose bytes do not match its CRC.
    #[error("group {group}: snapshot chunk from node {from} at offset {offset}: checksum {computed:#010x}, the chunk says {stated:#010x}")]
    ChunkChecksum {
        /// The group.
        group: GroupId,
        /// The sender.
        from: NodeId,
        /// The chunk's offset.
        offset: u64,
        /// The CRC the chunk carries.
        stated: u32,
        /// The CRC of its bytes.
        computed: u32,
    },
    /// A chunk not at the offset the receiver wants (lost or reordered).
    #[error("group {group}: snapshot chunk from node {from} at offset {offset}, expected offset {expected}")]
    OutOfOrder {
        /// The group.
        group: GroupId,
        /// The sender.
        from: NodeId,
        /// The chunk's offset.
        offset: u64,
        /// The offset wanted.
        expected: u64,
    },
    /// A chunk whose sizes contradict the stream's or themselves.
    #[error("group {group}: snapshot chunk from node {from} at offset {offset}: {what}")]
    Inconsistent {
        /// The group.
        group: GroupId,
        /// The sender.
        from: NodeId,
        /// The chunk's offset.
        offset: u64,
        /// What does not add up.
        what: String,
    },
    /// A chunk from a leader of an older term than the stream or group.
    #[error("group {group}: snapshot chunk from node {from} in term {term}, but the group is in term {current}")]
    StaleTerm {
        /// The group.
        group: GroupId,
        /// The sender.
        from: NodeId,
        /// The chunk's term.
        term: Term,
        /// The newer term.
        current: Term,
    },
    /// An ack that does not fit the stream (another snapshot, an offset
    /// never sent).
    #[error("group {group}: snapshot ack from node {from}: {what}")]
    BadAck {
        /// The group.
        group: GroupId,
        /// The follower.
        from: NodeId,
        /// What is wrong.
        what: String,
    },
    /// The metadata or the data failed verification, or a file operation
    /// failed.
    #[error("group {group}: snapshot stream with node {peer}: {source}")]
    Store {
        /// The group.
        group: GroupId,
        /// The other node.
        peer: NodeId,
        /// What the store said.
        source: SnapshotStoreError,
    },
}

/// A token bucket pacing the snapshot bytes one shard sends, so that
/// streams leave the connections and the disk to replication of the other
/// groups. Time is passed in, so it can be tested without a clock.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u128,
    /// Bytes times nanoseconds per second, so that refills lose no rounding.
    capacity_scaled: u128,
    tokens_scaled: u128,
    refilled: Instant,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

impl RateLimiter {
    /// A bucket of `bytes_per_second` (at least one byte), full at `now`.
    /// It holds a tenth of a second of bytes, and at least one chunk.
    pub fn new(bytes_per_second: u64, now: Instant) -> RateLimiter {
        let bytes_per_second = bytes_per_second.max(1);
        let capacity = (bytes_per_second / 10).max(SNAPSHOT_CHUNK_BYTES_MAX as u64);
        RateLimiter {
            bytes_per_second: bytes_per_second as u128,
            capacity_scaled: capacity as u128 * NANOS_PER_SECOND,
            tokens_scaled: capacity as u128 * NANOS_PER_SECOND,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        self.tokens_scaled = (self.tokens_scaled + elapsed * self.bytes_per_second).min(self.capacity_scaled);
        self.refilled = self.refilled.max(now);
    }

    /// Takes `bytes` if the bucket holds them at `now`.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        let wanted = bytes as u128 * NANOS_PER_SECOND;
        if self.tokens_scaled >= wanted {
            self.tokens_scaled -= wanted;
            true
        } else {
            false
        }
    }

    /// How long after `now` the bucket will hold `bytes` (zero if it does).
    pub fn wait_for(&mut self, bytes: u64, now: Instant) -> Duration {
        self.refill(now);
        let wanted = (bytes as u128 * NANOS_PER_SECOND).min(self.capacity_scaled);
        let missing = wanted.saturating_sub(self.tokens_scaled);
        Duration::from_nanos(missing.div_ceil(self.bytes_per_second) as u64)
    }
}

/// What an ack meant to a [`SnapshotSender`].
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The stream goes on.
    Progress,
    /// The follower holds the whole snapshot durably: the core may be told.
    Complete,
}

/// The leader's side of one stream: one stored snapshot to one follower in
/// one term.
#[derive(Debug)]
pub struct SnapshotSender {
    group: GroupId,
    to: NodeId,
    term: Term,
    snapshot: SnapshotId,
    metadata: Vec<u8>,
    data: File,
    data_path: PathBuf,
    total_bytes: u64,
    /// Everything before it is written on the follower.
    acknowledged: u64,
    /// The next offset to send.
    next_offset: u64,
    /// The highest offset ever sent (a follower may be ahead of
    /// `acknowledged` after a rewind: its acks were lost).
    sent_high: u64,
    /// (start, end) offsets of the chunks sent and not yet acknowledged,
    /// and when each was sent.
    in_flight: VecDeque<(u64, u64, Instant)>,
    complete: bool,
    /// Bytes sent and not yet acknowledged at most.
    window_bytes: u64,
    /// Chunk bytes handed out, resent ones included.
    pub bytes_sent: u64,
    /// Where the stream's time went on this side.
    pub timings: SenderTimings,
}

/// Where a sender's time went: what bounds a stream's throughput.
#[derive(Debug, Default, Clone)]
pub struct SenderTimings {
    /// When the stream was opened.
    pub opened: Option<Instant>,
    /// Reading chunks from the data file and checksumming them.
    pub read: Duration,
    /// Chunks read.
    pub chunks: u64,
    /// Chunk send to the ack that covers it, summed over acknowledged chunks.
    pub ack_round_trip: Duration,
    /// The longest of those.
    pub ack_round_trip_max: Duration,
    /// Chunks whose ack round trip was measured.
    pub acked_chunks: u64,
    /// Times the window was full when more could be sent.
    pub window_full: u64,
    /// Times the rate limiter held a chunk back.
    pub rate_limited: u64,
    /// Times the peer connection's queue had no room for a chunk.
    pub queue_full: u64,
}

impl SnapshotSender {
    /// Opens `stored`'s data to stream it to `to` for the leader's `term`.
    pub fn open(stored: &StoredSnapshot, to: NodeId, term: Term) -> Result<SnapshotSender, SnapshotStreamError> {
        let data_path = stored.data_path();
        let data = File::open(&data_path).map_err(|source| SnapshotStreamError::Store {
            group: stored.group,
            peer: to,
            source: SnapshotStoreError::Io {
                path: data_path.clone(),
                action: "open",
                source,
            },
        })?;
        let metadata = stored.encoded_metadata();
        Ok(SnapshotSender {
            group: stored.group,
            to,
            term,
            snapshot: stored.id(),
            total_bytes: metadata.len() as u64 + stored.data_bytes,
            metadata,
            data,
            data_path,
            acknowledged: 0,
            next_offset: 0,
            sent_high: 0,
            in_flight: VecDeque::new(),
            complete: false,
            window_bytes: SNAPSHOT_WINDOW_BYTES_MIN,
            bytes_sent: 0,
            timings: SenderTimings {
                opened: Some(Instant::now()),
                ..SenderTimings::default()
            },
        })
    }

    /// The same stream with an in-flight window of `bytes` (at least one
    /// chunk, at most [`SNAPSHOT_WINDOW_BYTES_MAX`]); see
    /// [`snapshot_window_bytes`].
    pub fn with_window_bytes(mut self, bytes: u64) -> SnapshotSender {
        self.window_bytes = bytes.clamp(SNAPSHOT_CHUNK_BYTES_MAX as u64, SNAPSHOT_WINDOW_BYTES_MAX);
        self
    }

    /// Bytes sent and not yet acknowledged at most.
    pub fn window_bytes(&self) -> u64 {
        self.window_bytes
    }

    /// The snapshot streamed.
    pub fn snapshot(&self) -> SnapshotId {
        self.snapshot
    }

    /// The leader term the stream belongs to.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The follower.
    pub fn to(&self) -> NodeId {
        self.to
    }

    /// The stream's length in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The furthest stream offset sent (resent chunks count once).
    pub fn sent_offset(&self) -> u64 {
        self.sent_high
    }

    /// Bytes the follower has acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Chunks sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True once the follower acknowledged the whole snapshot as durable.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// True if a whole window is sent and unacknowledged.
    fn window_full(&self) -> bool {
        self.next_offset.saturating_sub(self.acknowledged) + SNAPSHOT_CHUNK_BYTES_MAX as u64 > self.window_bytes
    }

    /// The length of the next chunk to send, if the window allows one.
    pub fn next_chunk_bytes(&self) -> Option<u64> {
        if self.complete || self.next_offset >= self.total_bytes || self.window_full() {
            return None;
        }
        Some((self.total_bytes - self.next_offset).min(SNAPSHOT_CHUNK_BYTES_MAX as u64))
    }

    /// The next chunk, if the in-flight window and `limiter` allow one.
    pub fn next_chunk(
        &mut self,
        limiter: &mut RateLimiter,
        now: Instant,
    ) -> Result<Option<SnapshotChunk>, SnapshotStreamError> {
        let Some(length) = self.next_chunk_bytes() else {
            if self.window_full() {
                self.timings.window_full += 1;
            }
            return Ok(None);
        };
        if !limiter.try_take(length, now) {
            self.timings.rate_limited += 1;
            return Ok(None);
        }
        let reading = Instant::now();
        let offset = self.next_offset;
        let mut bytes = vec![0u8; length as usize];
        let metadata_bytes = self.metadata.len() as u64;
        let mut filled = 0usize;
        if offset < metadata_bytes {
            let end = (offset + length).min(metadata_bytes);
            let part = &self.metadata[offset as usize..end as usize];
            bytes[..part.len()].copy_from_slice(part);
            filled = part.len();
        }
        if filled < bytes.len() {
            let data_offset = offset + filled as u64 - metadata_bytes;
            self.data
                .read_exact_at(&mut bytes[filled..], data_offset)
                .map_err(|source| SnapshotStreamError::Store {
                    group: self.group,
                    peer: self.to,
                    source: SnapshotStoreError::Io {
                        path: self.data_path.clone(),
                        action: "read",
                        source,
                    },
                })?;
        }
        self.next_offset = offset + length;
        self.sent_high = self.sent_high.max(self.next_offset);
        self.bytes_sent += length;
        let chunk = SnapshotChunk {
            snapshot_index: self.snapshot.index.0,
            snapshot_term: self.snapshot.term.0,
            metadata_bytes,
            total_bytes: self.total_bytes,
            offset,
            crc: crc32fast::hash(&bytes),
            data: Bytes::from(bytes),
            last: self.next_offset == self.total_bytes,
        };
        let sent = Instant::now();
        self.timings.read += sent.saturating_duration_since(reading);
        self.timings.chunks += 1;
        self.in_flight.push_back((offset, self.next_offset, sent));
        Ok(Some(chunk))
    }

    /// Takes the follower's answer to a chunk.
    pub fn on_ack(&mut self, ack: &SnapshotChunkAck) -> Result<AckOutcome, SnapshotStreamError> {
        let bad = |what: String| SnapshotStreamError::BadAck {
            group: self.group,
            from: self.to,
            what,
        };
        if ack.snapshot_index != self.snapshot.index.0 || ack.snapshot_term != self.snapshot.term.0 {
            return Err(bad(format!(
                "for snapshot ({}, {}), the stream sends ({}, {})",
                ack.snapshot_index, ack.snapshot_term, self.snapshot.index, self.snapshot.term
            )));
        }
        if ack.complete {
            if ack.next_offset != self.total_bytes {
                return Err(bad(format!(
                    "complete at offset {} of a {}-byte stream",
                    ack.next_offset, self.total_bytes
                )));
            }
            self.acknowledged = self.total_bytes;
            self.in_flight.clear();
            self.complete = true;
            return Ok(AckOutcome::Complete);
        }
        if ack.next_offset > self.sent_high {
            return Err(bad(format!(
                "wants offset {}, beyond the {} bytes sent",
                ack.next_offset, self.sent_high
            )));
        }
        self.acknowledged = self.acknowledged.max(ack.next_offset);
        if self.next_offset < self.acknowledged {
            // The follower had more than this side knew (acks lost with a
            // connection): skip what it holds.
            self.next_offset = self.acknowledged;
        }
        let now = Instant::now();
        while let Some(&(_, _, sent)) = self.in_flight.front().filter(|&&(_, end, _)| end <= self.acknowledged) {
            let round_trip = now.saturating_duration_since(sent);
            self.timings.ack_round_trip += round_trip;
            self.timings.ack_round_trip_max = self.timings.ack_round_trip_max.max(round_trip);
            self.timings.acked_chunks += 1;
            self.in_flight.pop_front();
        }
        let answers_in_flight = self.in_flight.iter().any(|&(start, _, _)| start == ack.chunk_offset);
        if ack.refused && answers_in_flight {
            // The follower refused a chunk sent since the last go-back: send
            // from the offset it wants. A refusal of a chunk sent before
            // (the go-back emptied the window) is stale: the offset it names
            // is already being sent, and going back for each of those would
            // send the window over and over.
            self.next_offset = ack.next_offset;
            self.acknowledged = ack.next_offset;
            self.in_flight.clear();
        }
        Ok(AckOutcome::Progress)
    }

    /// The connection dropped: chunks in flight are lost, so go back to the
    /// last acknowledged offset.
    pub fn rewind(&mut self) {
        self.next_offset = self.acknowledged;
        self.in_flight.clear();
    }
}

/// What a received stream hands a loader while it arrives.
#[derive(Debug)]
pub enum Feed {
    /// The next data bytes (a slice of the chunk, not a copy).
    Data(Bytes),
    /// The data is complete, its length and CRC match the metadata and the
    /// snapshot is durable in the store.
    End,
}

/// The loader's side of a stream's feed: a `Read` over the data as it
/// arrives. It reads to the end only if the stream ended verified
/// ([`Feed::End`]); a stream abandoned, refused or failed drops its sender,
/// which this reports as an error, so a loader never prepares a state from
/// part of a snapshot or from a damaged one.
#[derive(Debug)]
pub struct FeedReader {
    feed: flume::Receiver<Feed>,
    current: Bytes,
    ended: bool,
}

impl FeedReader {
    /// A reader of what `feed` will carry.
    pub fn new(feed: flume::Receiver<Feed>) -> FeedReader {
        FeedReader {
            feed,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl std::io::Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() && !self.ended && !buf.is_empty() {
            match self.feed.recv() {
                Ok(Feed::Data(bytes)) => self.current = bytes,
                Ok(Feed::End) => self.ended = true,
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the snapshot stream was abandoned or refused before its end",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The follower's side of one stream.
#[derive(Debug)]
struct SnapshotReceiver {
    leader: NodeId,
    term: Term,
    snapshot: SnapshotId,
    metadata_bytes: u64,
    total_bytes: u64,
    next_offset: u64,
    /// The metadata prefix while it arrives.
    metadata: Vec<u8>,
    header: Option<SnapshotHeader>,
    /// Open once the metadata is verified; dropping it removes the temp
    /// directory.
    writer: Option<SnapshotWriter>,
    /// Data bytes written since the data file was last handed out to sync.
    unsynced_bytes: u64,
    timings: ReceiverTimings,
    /// Where the data goes as it is written, for a loader to decode it
    /// meanwhile (`SnapshotInbox::on_chunk_feeding`).
    feed: Option<flume::Sender<Feed>>,
}

/// Where a receiver's time went on the shard.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverTimings {
    /// The first chunk's arrival.
    pub started: Instant,
    /// Writing chunks into the temp directory (checksums included, the
    /// waits for the loader's feed not).
    pub write: Duration,
    /// Waiting for room in the loader's feed (`SNAPSHOT_FEED_CHUNKS_MAX`):
    /// the time the loader, not the disk, held the worker.
    pub feed_wait: Duration,
    /// Chunks taken.
    pub chunks: u64,
    /// The last sync, metadata, renames and directory syncs.
    pub finish: Duration,
    /// The syncs of the data written so far (`SnapshotInbox::sync_due`).
    pub sync: Duration,
    /// From each chunk's arrival on the shard to the receive worker taking
    /// it, summed over the chunks.
    pub queued: Duration,
}

/// The follower's snapshot streams of one shard, one per group.
#[derive(Debug, Default)]
pub struct SnapshotInbox {
    receivers: BTreeMap<GroupId, SnapshotReceiver>,
    /// The timings of the streams completed and not yet taken.
    finished: BTreeMap<GroupId, ReceiverTimings>,
    /// The feed `on_chunk_feeding` offers the stream a chunk may start.
    offered_feed: Option<flume::Sender<Feed>>,
}

impl SnapshotInbox {
    /// An inbox with no stream.
    pub fn new() -> SnapshotInbox {
        SnapshotInbox::default()
    }

    /// The stream offset a group's stream has reached, if one is open.
    pub fn progress(&self, group: GroupId) -> Option<(u64, u64)> {
        self.receivers.get(&group).map(|r| (r.next_offset, r.total_bytes))
    }

    /// The data file of `group`'s stream, if [`SNAPSHOT_RECEIVE_SYNC_BYTES`]
    /// were written since it was last handed out: the caller starts its
    /// writeback. An error to flush or open it is left for the stream's
    /// own writes and final fsync to report.
    pub fn sync_due(&mut self, group: GroupId) -> Option<File> {
        let receiver = self.receivers.get_mut(&group)?;
        if receiver.unsynced_bytes < SNAPSHOT_RECEIVE_SYNC_BYTES {
            return None;
        }
        receiver.unsynced_bytes = 0;
        let writer = receiver.writer.as_mut()?;
        if writer.is_direct() {
            // Written to the disk already: no dirty pages.
            return None;
        }
        writer.flushed_data_file().ok()
    }

    /// Where the time of `group`'s stream went so far: the open one's, else
    /// the last completed one's (not yet taken).
    pub fn timings_mut(&mut self, group: GroupId) -> Option<&mut ReceiverTimings> {
        match self.receivers.get_mut(&group) {
            Some(receiver) => Some(&mut receiver.timings),
            None => self.finished.get_mut(&group),
        }
    }

    /// Where the time of `group`'s last completed stream went.
    pub fn take_finished_timings(&mut self, group: GroupId) -> Option<ReceiverTimings> {
        self.finished.remove(&group)
    }

    /// Drops a group's stream (its temp directory goes with it).
    pub fn abandon(&mut self, group: GroupId) {
        self.receivers.remove(&group);
    }

    /// Takes a chunk for `group` (whose snapshots live in `store`) from
    /// `from`, leader in `term`; `current_term` is the group's term.
    /// The receipt's ack is to be sent back in every case; an error says
    /// what was refused (to log and count).
    pub fn on_chunk(
        &mut self,
        store: &SnapshotStore,
        group: GroupId,
        from: NodeId,
        term: Term,
        current_term: Term,
        chunk: &SnapshotChunk,
    ) -> (SnapshotChunkAck, Result<Option<StoredSnapshot>, SnapshotStreamError>) {
        self.take_chunk(store, group, from, term, current_term, chunk)
    }

    /// [`on_chunk`](Self::on_chunk), and if the chunk starts a new stream
    /// (offset 0), that stream hands its data to `feed` as it is written
    /// (waiting while [`SNAPSHOT_FEED_CHUNKS_MAX`] are unread there), then
    /// [`Feed::End`] once the snapshot is published. The last value says
    /// whether the stream took `feed`; if not, it is dropped. A stream that
    /// took it and ends otherwise drops it too: its reader sees an error.
    #[allow(clippy::too_many_arguments)]
    pub fn on_chunk_feeding(
        &mut self,
        store: &SnapshotStore,
        group: GroupId,
        from: NodeId,
        term: Term,
        current_term: Term,
        chunk: &SnapshotChunk,
        feed: flume::Sender<Feed>,
    ) -> (
        SnapshotChunkAck,
        Result<Option<StoredSnapshot>, SnapshotStreamError>,
        bool,
    ) {
        self.offered_feed = Some(feed);
        let (ack, result) = self.take_chunk(store, group, from, term, current_term, chunk);
        let fed = self.offered_feed.take().is_none();
        (ack, result, fed)
    }

    fn take_chunk(
        &mut self,
        store: &SnapshotStore,
        group: GroupId,
        from: NodeId,
        term: Term,
        current_term: Term,
        chunk: &SnapshotChunk,
    ) -> (SnapshotChunkAck, Result<Option<StoredSnapshot>, SnapshotStreamError>) {
        let snapshot = SnapshotId {
            index: LogIndex(chunk.snapshot_index),
            term: Term(chunk.snapshot_term),
        };
        let refuse = |next_offset: u64| SnapshotChunkAck {
            snapshot_index: chunk.snapshot_index,
            snapshot_term: chunk.snapshot_term,
            chunk_offset: chunk.offset,
            next_offset,
            refused: true,
            complete: false,
        };
        let stream_term = self
            .receivers
            .get(&group)
            .map_or(current_term, |r| r.term.max(current_term));
        if term < stream_term {
            let error = SnapshotStreamError::StaleTerm {
                group,
                from,
                term,
                current: stream_term,
            };
            return (refuse(0), Err(error));
        }
        let same_stream = self
            .receivers
            .get(&group)
            .is_some_and(|r| r.term == term && r.leader == from && r.snapshot == snapshot);
        if !same_stream {
            // A newer term, another leader or another snapshot: whatever
            // was under way is abandoned.
            self.receivers.remove(&group);
            if let Err(error) = check_shape(group, from, chunk) {
                return (refuse(0), Err(error));
            }
            if store.snapshot_path(snapshot).exists() {
                // Already installed (the ack that said so was lost with a
                // connection): nothing more to send.
                let ack = SnapshotChunkAck {
                    snapshot_index: chunk.snapshot_index,
                    snapshot_term: chunk.snapshot_term,
                    chunk_offset: chunk.offset,
                    next_offset: chunk.total_bytes,
                    refused: false,
                    complete: true,
                };
                return (ack, Ok(None));
            }
            if chunk.offset != 0 {
                let error = SnapshotStreamError::OutOfOrder {
                    group,
                    from,
                    offset: chunk.offset,
                    expected: 0,
                };
                return (refuse(0), Err(error));
            }
            self.receivers.insert(
                group,
                SnapshotReceiver {
                    leader: from,
                    term,
                    snapshot,
                    metadata_bytes: chunk.metadata_bytes,
                    total_bytes: chunk.total_bytes,
                    next_offset: 0,
                    metadata: Vec::new(),
                    header: None,
                    writer: None,
                    unsynced_bytes: 0,
                    feed: self.offered_feed.take(),
                    timings: ReceiverTimings {
                        started: Instant::now(),
                        write: Duration::ZERO,
                        chunks: 0,
                        finish: Duration::ZERO,
                        sync: Duration::ZERO,
                        queued: Duration::ZERO,
                        feed_wait: Duration::ZERO,
                    },
                },
            );
        }
        let receiver = self.receivers.get_mut(&group).expect("inserted above");
        match receiver.accept(store, group, from, chunk) {
            Ok(Some(stored)) => {
                let ack = SnapshotChunkAck {
                    snapshot_index: chunk.snapshot_index,
                    snapshot_term: chunk.snapshot_term,
                    chunk_offset: chunk.offset,
                    next_offset: receiver.total_bytes,
                    refused: false,
                    complete: true,
                };
                if let Some(done) = self.receivers.remove(&group) {
                    self.finished.insert(group, done.timings);
                }
                (ack, Ok(Some(stored)))
            }
            Ok(None) => {
                let ack = SnapshotChunkAck {
                    snapshot_index: chunk.snapshot_index,
                    snapshot_term: chunk.snapshot_term,
                    chunk_offset: chunk.offset,
                    next_offset: receiver.next_offset,
                    refused: false,
                    complete: false,
                };
                (ack, Ok(None))
            }
            Err(error) => {
                let ack = refuse(receiver.next_offset);
                if matches!(error, SnapshotStreamError::Store { .. }) {
                    // The snapshot itself is bad or the disk failed: start over.
                    self.receivers.remove(&group);
                    return (refuse(0), Err(error));
                }
                (ack, Err(error))
            }
        }
    }
}

/// Checks what a chunk says about itself (before it may start a stream).
fn check_shape(group: GroupId, from: NodeId, chunk: &SnapshotChunk) -> Result<(), SnapshotStreamError> {
    let inconsistent = |what: String| SnapshotStreamError::Inconsistent {
        group,
        from,
        offset: chunk.offset,
        what,
    };
    if chunk.data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(SnapshotStreamError::ChunkTooLarge {
            group,
            from,
            offset: chunk.offset,
            bytes: chunk.data.len(),
            bound: SNAPSHOT_CHUNK_BYTES_MAX,
        });
    }
    if chunk.metadata_bytes == 0 || chunk.metadata_bytes > super::snapshot_store::SNAPSHOT_METADATA_BYTES_MAX as u64 {
        return Err(inconsistent(format!(
            "metadata length {} is not within 1..={}",
            chunk.metadata_bytes,
            super::snapshot_store::SNAPSHOT_METADATA_BYTES_MAX
        )));
    }
    if chunk.total_bytes < chunk.metadata_bytes {
        return Err(inconsistent(format!(
            "stream length {} is shorter than its metadata ({})",
            chunk.total_bytes, chunk.metadata_bytes
        )));
    }
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    if end.is_none_or(|end| end > chunk.total_bytes) {
        return Err(inconsistent(format!(
            "{} bytes run past the stream's {} bytes",
            chunk.data.len(),
            chunk.total_bytes
        )));
    }
    if chunk.last != (end == Some(chunk.total_bytes)) {
        return Err(inconsistent(format!(
            "marked last = {} but ends at {} of {} bytes",
            chunk.last,
            end.unwrap_or(u64::MAX),
            chunk.total_bytes
        )));
    }
    if chunk.data.is_empty() && !chunk.last {
        return Err(inconsistent("empty chunk".to_string()));
    }
    let computed = crc32fast::hash(&chunk.data);
    if computed != chunk.crc {
        return Err(SnapshotStreamError::ChunkChecksum {
            group,
            from,
            offset: chunk.offset,
            stated: chunk.crc,
            computed,
        });
    }
    Ok(())
}

impl SnapshotReceiver {
    /// Writes an in-order chunk; the published snapshot after the last one.
    fn accept(
        &mut self,
        store: &SnapshotStore,
        group: GroupId,
        from: NodeId,
        chunk: &SnapshotChunk,
    ) -> Result<Option<StoredSnapshot>, SnapshotStreamError> {
        check_shape(group, from, chunk)?;
        if chunk.metadata_bytes != self.metadata_bytes || chunk.total_bytes != self.total_bytes {
            return Err(SnapshotStreamError::Inconsistent {
                group,
                from,
                offset: chunk.offset,
                what: format!(
                    "sizes ({} metadata, {} total) differ from the stream's ({}, {})",
                    chunk.metadata_bytes, chunk.total_bytes, self.metadata_bytes, self.total_bytes
                ),
            });
        }
        if chunk.offset != self.next_offset {
            return Err(SnapshotStreamError::OutOfOrder {
                group,
                from,
                offset: chunk.offset,
                expected: self.next_offset,
            });
        }
        let store_error = |source: SnapshotStoreError| SnapshotStreamError::Store {
            group,
            peer: from,
            source,
        };
        let mut bytes: &[u8] = &chunk.data;
        if self.next_offset < self.metadata_bytes {
            let take = ((self.metadata_bytes - self.next_offset) as usize).min(bytes.len());
            self.metadata.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.metadata.len() as u64 == self.metadata_bytes {
                let source = PathBuf::from(format!("<snapshot stream from node {from}>"));
                let header = store.decode_metadata(&source, &self.metadata).map_err(store_error)?;
                if header.meta.index != self.snapshot.index || header.meta.term != self.snapshot.term {
                    return Err(store_error(SnapshotStoreError::NameMismatch {
                        path: source,
                        index: header.meta.index,
                        term: header.meta.term,
                    }));
                }
                let stream_data = self.total_bytes - self.metadata_bytes;
                if header.data_bytes != stream_data {
                    return Err(store_error(SnapshotStoreError::DataLength {
                        path: source,
                        expected: header.data_bytes,
                        actual: stream_data,
                    }));
                }
                if store.snapshot_path(self.snapshot).exists() {
                    // Already here (an earlier stream finished but its
                    // complete ack was lost): no need for the rest.
                    let stored = store.load(self.snapshot).map_err(store_error)?;
                    self.next_offset = self.total_bytes;
                    return Ok(Some(stored));
                }
                let mut writer = store
                    .begin_with_addresses(header.meta.clone(), header.sessions.clone(), header.addresses.clone())
                    .map_err(store_error)?;
                // Around the page cache: nothing reads the file before it
                // is published, and filling new page cache bounded the
                // receive worker (`direct_write.rs`).
                if let Err(error) = writer.write_direct() {
                    log::warn!("group {group}: writing a received snapshot buffered, not direct: {error}");
                }
                self.writer = Some(writer);
                self.metadata = Vec::new();
                self.header = Some(header);
            }
        }
        let writing = Instant::now();
        self.timings.chunks += 1;
        if !bytes.is_empty() {
            let Some(writer) = self.writer.as_mut() else {
                unreachable!("data follows the metadata, which opened the writer");
            };
            self.unsynced_bytes += bytes.len() as u64;
            std::io::Write::write_all(writer, bytes).map_err(|source| {
                store_error(SnapshotStoreError::Io {
                    path: writer.temp_dir().to_path_buf(),
                    action: "write",
                    source,
                })
            })?;
        }
        let feeding = Instant::now();
        if let Some(feed) = self.feed.as_ref().filter(|_| !bytes.is_empty()) {
            let data = chunk.data.slice(chunk.data.len() - bytes.len()..);
            if feed.send(Feed::Data(data)).is_err() {
                // The loader is gone: it stopped (its error is its own).
                self.feed = None;
            }
        }
        let fed = Instant::now();
        self.timings.feed_wait += fed.saturating_duration_since(feeding);
        self.next_offset += chunk.data.len() as u64;
        let finishing = Instant::now();
        self.timings.write += feeding.saturating_duration_since(writing) + finishing.saturating_duration_since(fed);
        if !chunk.last {
            return Ok(None);
        }
        let (Some(writer), Some(header)) = (self.writer.take(), self.header.as_ref()) else {
            unreachable!("the last chunk ends past the metadata");
        };
        let stored = writer
            .finish_expecting(header.data_bytes, header.data_crc)
            .map_err(store_error)?;
        if let Some(feed) = self.feed.take() {
            let _ = feed.send(Feed::End);
        }
        self.timings.finish = finishing.elapsed();
        Ok(Some(stored))
    }
}
