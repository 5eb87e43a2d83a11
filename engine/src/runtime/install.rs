//! InstallSnapshot on the shard: the leader's shard streams a stored
//! snapshot to a follower whose core needs compacted entries, and the
//! follower's shard writes it into its snapshot store and installs it.
//!
//! Sits between the core and `snapshot_stream.rs`. On the leader, a core's
//! `InstallSnapshot { meta }` never goes on the wire: the shard opens a
//! [`SnapshotSender`] for the stored snapshot `meta` names and pumps its
//! chunks each turn through the shard's [`RateLimiter`]
//! (`SnapshotPolicy::install_bytes_per_second`). It goes back to the last
//! acknowledged chunk when the peer connection reconnects or no ack came for
//! [`SNAPSHOT_ACK_TIMEOUT`], and drops the stream when the group's term or
//! role changes or the follower leaves the configuration. Compaction keeps
//! the log after a streamed snapshot during the stream and after it, until
//! the follower is caught up from the log (`Shard::log_held_after`). On the
//! follower, chunks go to the shard's [`SnapshotInbox`]; once a snapshot is
//! durable in the store the shard steps the core's `InstallSnapshot` with
//! its metadata (the core decides whether to install it), and when the
//! core's Ready carries the snapshot the state machine is loaded, the
//! session table restored, and `write_ready` purges the WAL to it. A state
//! machine with a [`SnapshotLoader`](crate::api::SnapshotLoader) is loaded
//! off the shard's thread: the loader reads and decodes the file on the
//! blocking pool while the group's entries are logged but not applied and
//! its reads wait ([`Loading`]); the prepared state is swapped in on the shard's thread.
//! See `docs/architecture.md`, "InstallSnapshot streaming".

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use coraft_net::schema::{RaftBody, SnapshotChunk, SnapshotChunkAck};

use crate::api::Error;
use crate::raft::{GroupId, Message, MessageBody, NodeId, Role, SnapshotMeta, Term};

use super::events::EventQueue;
use super::install_progress::{InstallDirection, InstallProgress, ReceiveProgress};
use super::shard::Shard;
use super::snapshot_store::{SnapshotId, SnapshotStore, StoredSnapshot};
use super::snapshot_stream::{
    snapshot_window_bytes, AckOutcome, Feed, FeedReader, RateLimiter, ReceiverTimings, SnapshotInbox, SnapshotSender,
    SnapshotStreamError, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_FEED_CHUNKS_MAX,
};

/// A stream with chunks in flight and no ack for this long goes back to its
/// last acknowledged offset (an ack or a chunk was lost, e.g. with the
/// follower's connection back to this node).
pub const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on how long after a snapshot stream completed the leader still
/// keeps its log after that snapshot for the follower (`Shard::
/// log_held_after`): time to load the snapshot and catch up from the log.
/// A follower that stops or stays behind longer does not pin the log (the
/// byte bound `SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX` applies meanwhile too).
pub const SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX: Duration = Duration::from_secs(60);

/// Bound on received chunk bytes waiting for the receive worker, over all
/// the streams a shard receives. A leader sends no more than its window
/// unacknowledged, and a chunk is acknowledged once written, so this is
/// reached only with many streams at once; a chunk past it is dropped
/// (the leader sends it again after `SNAPSHOT_ACK_TIMEOUT`).
pub const SNAPSHOT_RECEIVE_QUEUE_BYTES_MAX: u64 = 32 << 20;

/// Bound on the chunk bytes the receive worker takes in one batch (at
/// least one chunk): a chunk is answered when its batch is back on the
/// shard, so a batch of a whole window (up to `SNAPSHOT_WINDOW_BYTES_MAX`)
/// held every answer until the last chunk was written, the leader's window
/// stayed full meanwhile and the worker then waited for the next window.
/// Smaller batches keep answers, and so chunks, flowing while it writes.
pub const SNAPSHOT_RECEIVE_BATCH_BYTES_MAX: u64 = 1 << 20;

/// Room a stream leaves in the peer connection's queue (4 MiB by default)
/// for the other messages to that follower (heartbeats, votes, other
/// groups' AppendEntries): with a window larger than the queue, chunks
/// alone would fill it and those would be dropped.
pub const SNAPSHOT_QUEUE_HEADROOM_BYTES: usize = 1 << 20;

/// Bound on the bytes of committed entries a group holds back while its
/// snapshot loads off the shard's thread (applied after the swap). Past
/// it the shard takes no more of the group's Readies until the load ends,
/// so the group stops acknowledging entries here rather than hold more.
pub const LOADING_DEFERRED_BYTES_MAX: u64 = 64 << 20;

/// A group whose state machine is loading a snapshot off the shard's
/// thread (`StateMachine::snapshot_loader`). The core already installed the
/// snapshot and its WAL purge is written; until the prepared state is
/// swapped in nothing reaches the state machine: committed entries wait
/// here, linearizable and stale reads wait in the group's reads, and no
/// snapshot of the group is taken.
pub(crate) struct Loading {
    /// Tells this load's result from a superseded one's.
    generation: u64,
    /// The loader decoded the stream as it arrived (`EarlyLoad`): if that
    /// failed, the snapshot is loaded again from its file.
    early: bool,
    /// What is loaded.
    stored: StoredSnapshot,
    /// When the loader was handed the file.
    started: Instant,
    /// Committed entries the core handed meanwhile, applied after the swap.
    deferred: Vec<crate::raft::Entry>,
    deferred_bytes: u64,
}

impl Loading {
    /// Holds back committed entries until the swap.
    pub fn defer(&mut self, entries: Vec<crate::raft::Entry>) {
        self.deferred_bytes += entries.iter().map(crate::raft::Entry::size_bytes).sum::<u64>();
        if self.deferred.is_empty() {
            self.deferred = entries;
        } else {
            self.deferred.extend(entries);
        }
    }

    /// Holds back as much as `LOADING_DEFERRED_BYTES_MAX` allows: the shard
    /// takes no more of the group's Readies.
    pub fn is_full(&self) -> bool {
        self.deferred_bytes >= LOADING_DEFERRED_BYTES_MAX
    }
}

/// A loader decoding a stream while it arrives, on its own thread (the
/// blocking thread writes the chunks and feeds it): by the time the
/// snapshot is complete and durable, its state is mostly or wholly
/// prepared, and the core's install only waits for the rest.
struct EarlyLoad {
    /// The snapshot the stream carries.
    snapshot: SnapshotId,
    /// Its result's `Prepared::generation`.
    generation: u64,
}

/// A load prepared on the blocking pool, back on the shard.
struct Prepared {
    group: GroupId,
    generation: u64,
    /// The prepared state, or what failed (`prepare` or reading the file
    /// to its end, where its checksum is checked) and why.
    result: Result<crate::api::PreparedSnapshot, (&'static str, std::io::Error)>,
    prepare_time: Duration,
}

/// Loads a snapshot's data into `state_machine` where it is called: with
/// its loader if it has one (then the swap), else `on_snapshot_load`. The
/// data is read to its end, so its checksum is checked. On success, which
/// way it went; on failure, which step failed and why.
pub(super) fn load_into(
    state_machine: &mut dyn crate::api::StateMachine,
    reader: &mut dyn std::io::Read,
) -> Result<&'static str, (&'static str, std::io::Error)> {
    match state_machine.snapshot_loader() {
        Some(loader) => {
            let prepared = prepare(loader, reader)?;
            state_machine
                .on_snapshot_prepared(prepared)
                .map_err(|e| ("on_snapshot_prepared", e))?;
            Ok("a snapshot loader")
        }
        None => {
            state_machine
                .on_snapshot_load(reader)
                .map_err(|e| ("on_snapshot_load", e))?;
            read_to_end(reader).map_err(|e| ("reading the data", e))?;
            Ok("on_snapshot_load")
        }
    }
}

/// Runs `loader` on `reader`, then reads what it left (its checksum is
/// checked at the end).
fn prepare(
    loader: Box<dyn crate::api::SnapshotLoader>,
    reader: &mut dyn std::io::Read,
) -> Result<crate::api::PreparedSnapshot, (&'static str, std::io::Error)> {
    let prepared = loader.prepare(reader).map_err(|e| ("SnapshotLoader::prepare", e))?;
    read_to_end(reader).map_err(|e| ("reading the data", e))?;
    Ok(prepared)
}

/// Reads what is left (nothing, for a state machine that read it all): a
/// snapshot reader checks length and checksum at the end.
fn read_to_end(reader: &mut dyn std::io::Read) -> std::io::Result<()> {
    std::io::copy(reader, &mut std::io::sink()).map(|_| ())
}

/// A received chunk waiting for the receive worker.
struct Received {
    group: GroupId,
    from: NodeId,
    /// The leader's term the chunk came in.
    term: Term,
    /// The group's term when it arrived.
    current_term: Term,
    store: SnapshotStore,
    chunk: SnapshotChunk,
    /// When it reached the shard.
    arrived: Instant,
    /// For a chunk that may start a stream: an early load's generation and
    /// feed, for the stream to take.
    feed: Option<flume::Sender<Feed>>,
}

/// What the receive worker made of a chunk.
struct ChunkWritten {
    group: GroupId,
    from: NodeId,
    term: Term,
    bytes: u64,
    /// The stream's length.
    total_bytes: u64,
    ack: SnapshotChunkAck,
    /// The stored snapshot once the stream is complete and durable.
    result: Result<Option<StoredSnapshot>, SnapshotStreamError>,
    timings: Option<ReceiverTimings>,
    /// When the worker was done with it (the answer waits for the shard).
    written: Instant,
}

/// What the receive worker hands back to the shard.
#[derive(Default)]
struct WorkerReturn {
    /// The inbox, back from the worker.
    inbox: Option<SnapshotInbox>,
    written: Vec<ChunkWritten>,
}

/// The streams this shard receives. The chunks are written, synced and
/// published by a worker on the executor's blocking thread, never on the
/// shard's loop: the [`SnapshotInbox`] moves to the worker with a batch of
/// chunks and comes back with what became of them; a chunk is answered
/// once it is written.
struct Receiving {
    /// The inbox, while no batch is being written.
    inbox: Option<SnapshotInbox>,
    /// Chunks waiting for the worker, shared with its task so that it takes
    /// the next batch as soon as one is written, not at the shard's next
    /// turn (which a loaded machine delayed by 100 ms on average).
    queue: Rc<RefCell<ReceiveQueue>>,
    returned: Rc<RefCell<WorkerReturn>>,
}

/// Received chunks waiting for the receive worker.
#[derive(Default)]
struct ReceiveQueue {
    chunks: VecDeque<Received>,
    /// Their bytes (`SNAPSHOT_RECEIVE_QUEUE_BYTES_MAX`).
    bytes: u64,
    /// Batches handed to the worker since the last installed snapshot.
    batches: u64,
}

impl ReceiveQueue {
    /// The next batch: the oldest chunks, at most
    /// `SNAPSHOT_RECEIVE_BATCH_BYTES_MAX` (at least one chunk).
    fn take_batch(&mut self) -> Vec<Received> {
        let mut batch: Vec<Received> = Vec::new();
        let mut batch_bytes = 0u64;
        while let Some(received) = self.chunks.front() {
            let bytes = received.chunk.data.len() as u64;
            if !batch.is_empty() && batch_bytes + bytes > SNAPSHOT_RECEIVE_BATCH_BYTES_MAX {
                break;
            }
            batch_bytes += bytes;
            batch.push(self.chunks.pop_front().expect("looked at"));
        }
        self.bytes -= batch_bytes;
        if !batch.is_empty() {
            self.batches += 1;
        }
        batch
    }
}

/// On the receive worker: writes one chunk into its stream (publishing the
/// snapshot after the last one), and syncs the data written so far when
/// `SNAPSHOT_RECEIVE_SYNC_BYTES` were written since the last sync.
fn write_received(node: NodeId, inbox: &mut SnapshotInbox, received: Received) -> ChunkWritten {
    let Received {
        group,
        from,
        term,
        current_term,
        store,
        chunk,
        arrived,
        feed,
    } = received;
    let queued = arrived.elapsed();
    let (ack, mut result) = match feed {
        // A feed the stream does not take is dropped: its loader stops.
        Some(feed) => {
            let (ack, result, _) = inbox.on_chunk_feeding(&store, group, from, term, current_term, &chunk, feed);
            (ack, result)
        }
        None => inbox.on_chunk(&store, group, from, term, current_term, &chunk),
    };
    let syncing = Instant::now();
    if let Some(file) = inbox.sync_due(group) {
        // The disk writes the data back as it comes, so the fsync that
        // publishes the snapshot has little left to write; the worker does
        // not wait for it (an fdatasync here took 4.2 of a 256 MiB
        // stream's 9.7 s on a shared disk, the worker's largest share).
        if let Err(error) = start_writeback(&file) {
            log::warn!("node {node} group {group}: starting the writeback of a received snapshot: {error}");
        }
    }
    if let Some(timings) = inbox.timings_mut(group) {
        timings.sync += syncing.elapsed();
        timings.queued += queued;
    }
    if ack.complete && matches!(result, Ok(None)) {
        // Already in the store (the stream's last answer was lost): the
        // core hears of it again, so it answers the leader.
        let id = SnapshotId {
            index: crate::raft::LogIndex(chunk.snapshot_index),
            term: Term(chunk.snapshot_term),
        };
        result = store.load(id).map(Some).map_err(|source| SnapshotStreamError::Store {
            group,
            peer: from,
            source,
        });
    }
    let timings = match result {
        Ok(Some(_)) => inbox.take_finished_timings(group),
        _ => None,
    };
    ChunkWritten {
        group,
        from,
        term,
        bytes: chunk.data.len() as u64,
        total_bytes: chunk.total_bytes,
        ack,
        result,
        timings,
        written: Instant::now(),
    }
}

/// Starts writing `file`'s dirty pages to the disk without waiting for
/// them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`): not durability,
/// which the fsync that publishes the snapshot gives, but less left for it.
fn start_writeback(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the call (borrowed from `file`);
    // offset 0 and length 0 name the whole file; no memory is passed.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A snapshot stream this shard sends.
struct Outgoing {
    sender: SnapshotSender,
    /// The peer connection's epoch when the stream last (re)started.
    epoch: Option<u64>,
    /// When the follower last answered (or the stream last went back).
    heard: Instant,
}

/// The log a leader keeps after a snapshot whose stream to a follower
/// completed, until the follower is caught up from it (`Shard::
/// log_held_after`).
struct StreamHold {
    /// The streamed snapshot's index.
    snapshot: crate::raft::LogIndex,
    /// The leader's term the stream was sent in.
    term: Term,
    /// When the stream completed (`SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX`).
    completed: Instant,
}

/// The snapshot streams of one shard, both ways.
pub(crate) struct Installs {
    /// Paces every stream this shard sends.
    limiter: RateLimiter,
    /// Each stream's in-flight window (`snapshot_window_bytes`).
    window_bytes: u64,
    /// At most one stream per (group, follower).
    outgoing: BTreeMap<(GroupId, NodeId), Outgoing>,
    /// Completed streams whose follower is not yet caught up from the log,
    /// at most one per (group, follower).
    held: BTreeMap<(GroupId, NodeId), StreamHold>,
    /// Streams this shard receives, at most one per group.
    receiving: Receiving,
    /// Where the time of each group's last received stream went, until
    /// the snapshot is loaded.
    received_timings: BTreeMap<GroupId, ReceiverTimings>,
    /// How far the received streams got (`GroupStatus::installs`).
    received: ReceiveProgress,
    /// Loads prepared off the shard's thread, waiting for their swap.
    prepared: Rc<RefCell<Vec<Prepared>>>,
    /// The generation of the next load (`Loading::generation`).
    next_load: u64,
    /// Loads on the blocking pool: shutdown waits for them.
    pub(super) loads_in_flight: Rc<std::cell::Cell<usize>>,
    /// Chunks' answers since the last installed snapshot was logged: from
    /// the receive worker's write to the answer sent on the shard's turn
    /// (summed, longest, how many).
    answer_delay: (Duration, Duration, u64),
    /// Per group, the loader decoding the stream it receives, at most one.
    early: BTreeMap<GroupId, EarlyLoad>,
    /// Per group, what that loader prepared before the core installed the
    /// snapshot (dropped when the group's next stream starts or another
    /// snapshot is installed).
    early_done: BTreeMap<GroupId, Prepared>,
    /// Where loader threads run (`NodeOptions::helper_cores`).
    helper_cores: Vec<usize>,
}

impl Installs {
    /// No stream yet; sends at most `bytes_per_second`.
    pub fn new(bytes_per_second: u64) -> Installs {
        Installs {
            limiter: RateLimiter::new(bytes_per_second, Instant::now()),
            window_bytes: snapshot_window_bytes(bytes_per_second),
            outgoing: BTreeMap::new(),
            held: BTreeMap::new(),
            receiving: Receiving {
                inbox: Some(SnapshotInbox::new()),
                queue: Rc::default(),
                returned: Rc::new(RefCell::new(WorkerReturn::default())),
            },
            received_timings: BTreeMap::new(),
            received: ReceiveProgress::default(),
            prepared: Rc::new(RefCell::new(Vec::new())),
            next_load: 0,
            loads_in_flight: Rc::new(std::cell::Cell::new(0)),
            answer_delay: (Duration::ZERO, Duration::ZERO, 0),
            early: BTreeMap::new(),
            early_done: BTreeMap::new(),
            helper_cores: Vec::new(),
        }
    }

    /// The same, its loader threads placed on `cores` (none: where the
    /// shard's thread may run).
    pub fn with_helper_cores(mut self, cores: Option<Vec<usize>>) -> Installs {
        self.helper_cores = cores.unwrap_or_default();
        self
    }

    /// True if a chunk at offset 0 of `snapshot` for `group` should get a
    /// loader to feed: no loader of that snapshot is running or has
    /// prepared it (one that failed does not count).
    fn wants_early_load(&self, group: GroupId, snapshot: SnapshotId) -> bool {
        let same = self.early.get(&group).is_some_and(|e| e.snapshot == snapshot);
        let failed = self.early_done.get(&group).is_some_and(|d| d.result.is_err());
        !same || failed
    }

    /// Starts `loader` on its own thread, reading what the stream of
    /// `snapshot` to `group` will feed it (the group's loader from now on);
    /// its result comes back as a `Prepared`. The feed for the stream, or
    /// `None` if no thread could be started.
    fn start_early_load(
        &mut self,
        node: NodeId,
        group: GroupId,
        snapshot: SnapshotId,
        loader: Box<dyn crate::api::SnapshotLoader>,
        events: &Rc<EventQueue>,
    ) -> Option<flume::Sender<Feed>> {
        let generation = self.next_load;
        self.next_load += 1;
        self.early.insert(group, EarlyLoad { snapshot, generation });
        self.early_done.remove(&group);
        let (feed, fed) = flume::bounded(SNAPSHOT_FEED_CHUNKS_MAX);
        let (done, result) = flume::bounded(1);
        let cores = self.helper_cores.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("coraft-{node}-load"))
            .spawn(move || {
                if !cores.is_empty() {
                    // As the blocking threads: off the shards' cores.
                    let _ = super::affinity::pin_current_thread(&cores);
                }
                let started = Instant::now();
                let result = prepare(loader, &mut FeedReader::new(fed));
                let _ = done.send(Prepared {
                    group,
                    generation,
                    result,
                    prepare_time: started.elapsed(),
                });
            });
        if let Err(error) = spawned {
            log::warn!("node {node} group {group}: no thread to load a snapshot while it arrives: {error}");
            return None;
        }
        let prepared = self.prepared.clone();
        let events = events.clone();
        glommio::spawn_local(async move {
            if let Ok(done) = result.recv_async().await {
                prepared.borrow_mut().push(done);
                events.ring();
            }
        })
        .detach();
        Some(feed)
    }

    /// Starts the receive worker if chunks wait and it is idle. It writes
    /// batch after batch while chunks keep coming (each batch's results go
    /// back to the shard, which answers them, as soon as it is written),
    /// then hands the inbox back.
    fn start_receive_worker(&mut self, node: NodeId, events: &Rc<EventQueue>) {
        let receiving = &mut self.receiving;
        if receiving.queue.borrow().chunks.is_empty() {
            return;
        }
        let Some(mut inbox) = receiving.inbox.take() else {
            // Busy: it takes these after its batch.
            return;
        };
        let queue = receiving.queue.clone();
        let returned = receiving.returned.clone();
        let events = events.clone();
        glommio::spawn_local(async move {
            loop {
                let batch = queue.borrow_mut().take_batch();
                if batch.is_empty() {
                    break;
                }
                let (back, written) = glommio::executor()
                    .spawn_blocking(move || {
                        let written: Vec<ChunkWritten> = batch
                            .into_iter()
                            .map(|received| write_received(node, &mut inbox, received))
                            .collect();
                        (inbox, written)
                    })
                    .await;
                inbox = back;
                returned.borrow_mut().written.extend(written);
                events.ring();
            }
            returned.borrow_mut().inbox = Some(inbox);
            events.ring();
        })
        .detach();
    }

    /// Runs `loader` on `reader` on the blocking pool; its result comes
    /// back as a `Prepared` of `generation`.
    fn spawn_prepare(
        &mut self,
        group: GroupId,
        generation: u64,
        loader: Box<dyn crate::api::SnapshotLoader>,
        mut reader: super::snapshot_store::SnapshotReader,
        events: &Rc<EventQueue>,
    ) {
        let prepared = self.prepared.clone();
        let in_flight = self.loads_in_flight.clone();
        in_flight.set(in_flight.get() + 1);
        let events = events.clone();
        glommio::spawn_local(async move {
            let (result, prepare_time) = glommio::executor()
                .spawn_blocking(move || {
                    let started = Instant::now();
                    (prepare(loader, &mut reader), started.elapsed())
                })
                .await;
            prepared.borrow_mut().push(Prepared {
                group,
                generation,
                result,
                prepare_time,
            });
            in_flight.set(in_flight.get() - 1);
            events.ring();
        })
        .detach();
    }

    /// The streams of `group` in flight here, both ways.
    pub fn progress(&self, group: GroupId, now: Instant) -> Vec<InstallProgress> {
        let sending = self
            .outgoing
            .range((group, NodeId(0))..=(group, NodeId(u64::MAX)))
            .map(|(_, o)| sending_progress(&o.sender, now));
        sending.chain(self.received.progress(group, now)).collect()
    }

    /// Every stream in flight here, both ways, by group.
    pub fn all_progress(&self, now: Instant) -> Vec<(GroupId, InstallProgress)> {
        let mut groups: Vec<GroupId> = self
            .outgoing
            .keys()
            .map(|&(g, _)| g)
            .chain(self.received.groups())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
            .into_iter()
            .flat_map(|g| self.progress(g, now).into_iter().map(move |p| (g, p)))
            .collect()
    }

    /// The receive worker holds the inbox (chunks are being written on the
    /// blocking thread).
    pub fn receive_worker_busy(&self) -> bool {
        self.receiving.inbox.is_none() && self.receiving.returned.borrow().inbox.is_none()
    }

    /// The index of the oldest snapshot streamed to a follower of `group`.
    fn oldest_streamed(&self, group: GroupId) -> Option<crate::raft::LogIndex> {
        self.outgoing
            .range((group, NodeId(0))..=(group, NodeId(u64::MAX)))
            .map(|(_, o)| o.sender.snapshot().index)
            .min()
    }
}

impl StreamHold {
    /// The point after which this hold keeps the log, or why it ends.
    /// `match_index` is the follower's, `None` if the group is no longer
    /// led here in the stream's term or the follower left; `policy_point`
    /// is where compaction would cut without the hold. It ends once the
    /// follower's match index reaches `policy_point` (nothing it needs is
    /// cut any more) or `SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX` passed since
    /// the stream completed.
    fn held_after(
        &self,
        match_index: Option<crate::raft::LogIndex>,
        policy_point: crate::raft::LogIndex,
        now: Instant,
    ) -> Result<crate::raft::LogIndex, &'static str> {
        let match_index = match_index.ok_or("leadership changed or the node left")?;
        if now.saturating_duration_since(self.completed) > SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX {
            return Err("SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX passed");
        }
        if match_index >= policy_point {
            return Err("caught up from the log");
        }
        Ok(self.snapshot.max(match_index))
    }

    /// The match index of `follower` if `group` is still led here in this
    /// hold's term and the follower is in it.
    fn match_index(&self, group: Option<&super::group::Group>, follower: NodeId) -> Option<crate::raft::LogIndex> {
        group
            .filter(|g| g.core.role() == Role::Leader && g.core.term() == self.term)
            .and_then(|g| g.core.progress().get(&follower))
            .map(|progress| progress.match_index)
    }
}

fn sending_progress(sender: &SnapshotSender, now: Instant) -> InstallProgress {
    let snapshot = sender.snapshot();
    InstallProgress {
        direction: InstallDirection::Sending,
        peer: sender.to(),
        snapshot_index: snapshot.index,
        snapshot_term: snapshot.term,
        total_bytes: sender.total_bytes(),
        sent_bytes: sender.sent_offset(),
        acknowledged_bytes: sender.acknowledged(),
        elapsed: sender
            .timings
            .opened
            .map_or(Duration::ZERO, |opened| now.saturating_duration_since(opened)),
    }
}

impl Shard {
    /// The point after which compaction of `group_id` keeps the log for its
    /// followers (`compaction::compact_group`'s `streaming`), given the
    /// point the policy alone compacts to: the oldest snapshot being
    /// streamed, and for a follower whose stream completed, the streamed
    /// snapshot or, once the follower is caught up past it, its match
    /// index. Otherwise the next snapshot could compact the entries after
    /// the streamed one before the follower (loading the snapshot, or
    /// catching up under a write load) had them, and it would be sent a
    /// newer snapshot in full. A completed stream's hold ends once the
    /// follower's match index reaches `policy_point` (nothing it needs is
    /// compacted any more), the group is no longer led here in the stream's
    /// term, the follower left, or `SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX`
    /// passed.
    pub(super) fn log_held_after(
        &mut self,
        group_id: GroupId,
        policy_point: crate::raft::LogIndex,
    ) -> Option<crate::raft::LogIndex> {
        let now = Instant::now();
        let mut held_after = self.installs.oldest_streamed(group_id);
        let keys: Vec<(GroupId, NodeId)> = self
            .installs
            .held
            .range((group_id, NodeId(0))..=(group_id, NodeId(u64::MAX)))
            .map(|(&key, _)| key)
            .collect();
        for key in keys {
            let hold = &self.installs.held[&key];
            let follower = key.1;
            let match_index = hold.match_index(self.groups.get(&group_id), follower);
            match hold.held_after(match_index, policy_point, now) {
                Ok(point) => held_after = Some(held_after.map_or(point, |held| held.min(point))),
                Err(reason) => {
                    log::info!(
                        "node {} group {group_id}: no longer keeping the log after snapshot {} for node {follower}: \
                     {reason}",
                        self.node,
                        hold.snapshot
                    );
                    self.installs.held.remove(&key);
                }
            }
        }
        held_after
    }

    /// Drops the holds of completed streams that end by leadership, the
    /// follower's leaving or time (`StreamHold::held_after`) without
    /// waiting for the group's next compaction.
    fn release_stale_holds(&mut self, now: Instant) {
        let groups = &self.groups;
        self.installs.held.retain(|&(group_id, follower), hold| {
            let match_index = hold.match_index(groups.get(&group_id), follower);
            hold.held_after(match_index, crate::raft::LogIndex(u64::MAX), now)
                .is_ok()
        });
    }

    /// The core asked to send `message.to` a snapshot: streams the stored
    /// snapshot its `InstallSnapshot` names, unless a stream in this term is
    /// already under way. The core asks again after its snapshot timeout,
    /// maybe naming a newer snapshot taken meanwhile; the stream goes on
    /// (starting over would never finish under a steady write load), and
    /// compaction keeps the log after the streamed snapshot, during the
    /// stream and after it until the follower is caught up
    /// (`log_held_after`), so the follower is caught up from there.
    pub(super) fn start_install(&mut self, message: &Message) {
        let MessageBody::InstallSnapshot { meta } = &message.body else {
            return;
        };
        let key = (message.group, message.to);
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        if self
            .installs
            .outgoing
            .get(&key)
            .is_some_and(|o| o.sender.term() == message.term)
        {
            return;
        }
        self.installs.outgoing.remove(&key);
        // A newer stream holds the log after its own snapshot.
        self.installs.held.remove(&key);
        let Some(group) = self.groups.get_mut(&message.group) else {
            return;
        };
        let stored = match group.stored_snapshot.as_ref().filter(|s| s.id() == id) {
            Some(stored) => Ok(stored.clone()),
            // Not the one this shard remembers (it should be: the core only
            // names snapshots reported durable); read and verify it.
            None => match group.snapshots.as_ref() {
                Some(store) => store.load(id).map_err(|e| e.to_string()),
                None => Err("the group has no snapshot store".to_string()),
            },
        };
        let window_bytes = self.installs.window_bytes;
        let opened = stored.and_then(|s| {
            SnapshotSender::open(&s, message.to, message.term)
                .map(|sender| sender.with_window_bytes(window_bytes))
                .map_err(|e| e.to_string())
        });
        match opened {
            Ok(sender) => {
                log::info!(
                    "node {} group {}: streaming snapshot ({}, {}) of {} bytes to node {}",
                    self.node,
                    message.group,
                    meta.index,
                    meta.term,
                    sender.total_bytes(),
                    message.to
                );
                let outgoing = Outgoing {
                    sender,
                    epoch: self.peers.connection_epoch(message.to),
                    heard: Instant::now(),
                };
                self.installs.outgoing.insert(key, outgoing);
            }
            Err(reason) => {
                log::warn!(
                    "node {} group {}: cannot stream snapshot ({}, {}) to node {}: {reason}",
                    self.node,
                    message.group,
                    meta.index,
                    meta.term,
                    message.to
                );
                self.metrics.snapshot_installs_failed += 1;
                group.core.report_snapshot(message.to, false);
                self.dirty.insert(message.group);
            }
        }
    }

    /// Sends what the streams' windows and the rate limiter allow; drops
    /// the streams whose group is no longer led here in their term or whose
    /// follower left; rewinds those whose connection reconnected or whose
    /// follower went silent.
    pub(super) fn pump_installs(&mut self) {
        self.finish_received();
        let now = Instant::now();
        if !self.installs.held.is_empty() {
            self.release_stale_holds(now);
        }
        if self.installs.outgoing.is_empty() {
            return;
        }
        let keys: Vec<(GroupId, NodeId)> = self.installs.outgoing.keys().copied().collect();
        for key in keys {
            let (group_id, to) = key;
            let _group = crate::logging::group_span(group_id).entered();
            let Some(outgoing) = self.installs.outgoing.get_mut(&key) else {
                continue;
            };
            let group = self.groups.get_mut(&group_id);
            let still_leading = group.as_ref().is_some_and(|g| {
                g.core.role() == Role::Leader
                    && g.core.term() == outgoing.sender.term()
                    && g.core.progress().contains_key(&to)
            });
            if !still_leading || self.failed.is_some() {
                log::info!(
                    "node {} group {group_id}: abandoning the snapshot stream to node {to} \
                     (leadership changed or the node left) after {} of {} bytes",
                    self.node,
                    outgoing.sender.acknowledged(),
                    outgoing.sender.total_bytes()
                );
                self.installs.outgoing.remove(&key);
                self.metrics.snapshot_installs_abandoned += 1;
                continue;
            }
            let group = group.expect("checked above");
            let epoch = self.peers.connection_epoch(to);
            let silent =
                outgoing.sender.in_flight() > 0 && now.saturating_duration_since(outgoing.heard) > SNAPSHOT_ACK_TIMEOUT;
            if epoch != outgoing.epoch || silent {
                log::debug!(
                    "node {} group {group_id}: snapshot stream to node {to} goes back to offset {} ({})",
                    self.node,
                    outgoing.sender.acknowledged(),
                    if silent { "no ack" } else { "the connection changed" }
                );
                outgoing.sender.rewind();
                outgoing.epoch = epoch;
                outgoing.heard = now;
                self.metrics.snapshot_install_rewinds += 1;
            }
            let term = outgoing.sender.term();
            let mut failure = None;
            loop {
                if !self
                    .peers
                    .has_room(to, SNAPSHOT_CHUNK_BYTES_MAX + SNAPSHOT_QUEUE_HEADROOM_BYTES)
                {
                    if outgoing.sender.next_chunk_bytes().is_some() {
                        outgoing.sender.timings.queue_full += 1;
                    }
                    break;
                }
                match outgoing.sender.next_chunk(&mut self.installs.limiter, now) {
                    Ok(Some(chunk)) => {
                        let bytes = chunk.data.len() as u64;
                        if !self
                            .peers
                            .send_stream(to, group_id, term, RaftBody::SnapshotChunk(chunk))
                        {
                            // No connection: send again from what was acknowledged.
                            outgoing.sender.rewind();
                            break;
                        }
                        self.metrics.snapshot_install_bytes_sent += bytes;
                        group.counters.install_bytes_sent += bytes;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                log::warn!(
                    "node {} group {group_id}: snapshot stream to node {to} failed: {error}",
                    self.node
                );
                self.installs.outgoing.remove(&key);
                self.metrics.snapshot_installs_failed += 1;
                group.core.report_snapshot(to, false);
                self.dirty.insert(group_id);
            }
        }
    }

    /// A follower answered a chunk of a stream this shard sends.
    pub(super) fn snapshot_chunk_ack(&mut self, group_id: GroupId, from: NodeId, ack: SnapshotChunkAck) {
        let key = (group_id, from);
        let Some(outgoing) = self.installs.outgoing.get_mut(&key) else {
            // The stream finished or was dropped: a late answer.
            return;
        };
        let snapshot = outgoing.sender.snapshot();
        if ack.snapshot_index != snapshot.index.0 || ack.snapshot_term != snapshot.term.0 {
            // An answer to an earlier stream of this group.
            return;
        }
        match outgoing.sender.on_ack(&ack) {
            Ok(AckOutcome::Progress) => outgoing.heard = Instant::now(),
            Ok(AckOutcome::Complete) => {
                let t = &outgoing.sender.timings;
                let acked = t.acked_chunks.max(1) as u32;
                log::info!(
                    "node {} group {group_id}: node {from} holds snapshot ({}, {}) ({} bytes sent in {:?}: \
                     {} chunks read in {:?}, ack round trip mean {:?} max {:?}, window full {} times, \
                     rate-limited {} times, queue full {} times)",
                    self.node,
                    snapshot.index,
                    snapshot.term,
                    outgoing.sender.bytes_sent,
                    t.opened.map(|o| o.elapsed()).unwrap_or_default(),
                    t.chunks,
                    t.read,
                    t.ack_round_trip / acked,
                    t.ack_round_trip_max,
                    t.window_full,
                    t.rate_limited,
                    t.queue_full,
                );
                // The log after the snapshot stays until the follower is
                // caught up from it (`log_held_after`).
                let hold = StreamHold {
                    snapshot: snapshot.index,
                    term: outgoing.sender.term(),
                    completed: Instant::now(),
                };
                self.installs.outgoing.remove(&key);
                self.installs.held.insert(key, hold);
                self.metrics.snapshot_installs_sent += 1;
            }
            // Input from a peer: logged and ignored; a stream that stops
            // progressing goes back after `SNAPSHOT_ACK_TIMEOUT`.
            Err(error) => log::warn!("node {} group {group_id}: ignoring a snapshot ack: {error}", self.node),
        }
    }

    /// A leader streamed a chunk of a snapshot to this node: queued for the
    /// receive worker, which writes it into the group's store
    /// (`finish_received` answers it and hands a complete snapshot to the
    /// core).
    pub(super) fn snapshot_chunk(&mut self, group_id: GroupId, from: NodeId, term: Term, chunk: SnapshotChunk) {
        if self.failed.is_some() {
            return;
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return;
        };
        let Some(store) = group.snapshots.clone() else {
            return;
        };
        if group.core.role() == Role::Leader && term <= group.core.term() {
            // A leader of this term or an older one is not followed here.
            return;
        }
        let bytes = chunk.data.len() as u64;
        let snapshot = SnapshotId {
            index: crate::raft::LogIndex(chunk.snapshot_index),
            term: Term(chunk.snapshot_term),
        };
        let feed = if chunk.offset == 0
            && self.installs.receiving.queue.borrow().bytes + bytes <= SNAPSHOT_RECEIVE_QUEUE_BYTES_MAX
            && self.installs.wants_early_load(group_id, snapshot)
        {
            // It may start a stream: its state machine's loader, if it has
            // one, decodes the data as it arrives.
            match group.state_machine.snapshot_loader() {
                Some(loader) => self
                    .installs
                    .start_early_load(self.node, group_id, snapshot, loader, &self.events),
                None => None,
            }
        } else {
            None
        };
        let Some(group) = self.groups.get(&group_id) else {
            return;
        };
        let mut queue = self.installs.receiving.queue.borrow_mut();
        if queue.bytes + bytes > SNAPSHOT_RECEIVE_QUEUE_BYTES_MAX {
            // The leader sends it again when no answer comes.
            self.metrics.snapshot_install_chunks_refused += 1;
            log::debug!(
                "node {} group {group_id}: dropped a snapshot chunk from node {from}: {} bytes wait to be written \
                 (SNAPSHOT_RECEIVE_QUEUE_BYTES_MAX)",
                self.node,
                queue.bytes
            );
            return;
        }
        queue.bytes += bytes;
        queue.chunks.push_back(Received {
            group: group_id,
            from,
            term,
            current_term: group.core.term(),
            store,
            chunk,
            arrived: Instant::now(),
            feed,
        });
        drop(queue);
        self.installs.start_receive_worker(self.node, &self.events);
    }

    /// Answers the chunks the receive worker wrote since the last turn, and
    /// hands each snapshot it completed to the core.
    fn finish_received(&mut self) {
        let written = {
            let mut returned = self.installs.receiving.returned.borrow_mut();
            if let Some(inbox) = returned.inbox.take() {
                self.installs.receiving.inbox = Some(inbox);
            }
            std::mem::take(&mut returned.written)
        };
        for written in written {
            self.chunk_written(written);
        }
        self.installs.start_receive_worker(self.node, &self.events);
    }

    fn chunk_written(&mut self, written: ChunkWritten) {
        let ChunkWritten {
            group: group_id,
            from,
            term,
            bytes,
            total_bytes,
            ack,
            result,
            timings,
            written,
        } = written;
        let delay = written.elapsed();
        let answers = &mut self.installs.answer_delay;
        answers.0 += delay;
        answers.1 = answers.1.max(delay);
        answers.2 += 1;
        if self.failed.is_some() {
            return;
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return;
        };
        if !ack.refused {
            self.metrics.snapshot_install_bytes_received += bytes;
            group.counters.install_bytes_received += bytes;
        }
        let now = Instant::now();
        self.installs.received.drop_idle(now);
        self.installs.received.on_ack(group_id, from, total_bytes, &ack, now);
        let reply_term = group.core.term();
        self.peers
            .send_stream(from, group_id, reply_term, RaftBody::SnapshotChunkAck(ack));
        let stored = match result {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(error) => {
                self.metrics.snapshot_install_chunks_refused += 1;
                match error {
                    // Routine after a go-back or a cut connection.
                    SnapshotStreamError::OutOfOrder { .. } | SnapshotStreamError::StaleTerm { .. } => {
                        log::debug!("node {} group {group_id}: {error}", self.node)
                    }
                    _ => log::warn!("node {} group {group_id}: refused a snapshot chunk: {error}", self.node),
                }
                return;
            }
        };
        if let Some(timings) = timings {
            self.installs.received_timings.insert(group_id, timings);
        }
        let meta = stored.meta.clone();
        group.received_snapshot = Some(stored);
        let message = Message {
            group: group_id,
            from,
            to: self.node,
            term,
            body: MessageBody::InstallSnapshot { meta },
        };
        match group.core.step_checked(message) {
            Ok(()) => {
                self.dirty.insert(group_id);
            }
            Err(violation) => self.events.violations.record(from, &violation),
        }
    }

    /// The core installs the snapshot `meta` (a Ready carries it): loads it
    /// into the state machine and restores the session table. The caller
    /// then persists the Ready (the WAL purge to the snapshot). A state
    /// machine with a loader is loaded off the shard's thread: the group is
    /// left [`Loading`] and `finish_loads` swaps the state in.
    pub(super) fn load_installed(&mut self, group_id: GroupId, meta: &SnapshotMeta) -> Result<(), Error> {
        let node = self.node;
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Ok(());
        };
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        let failed = |reason: String| {
            Error::Storage(format!(
                "group {group_id}: installing snapshot ({}, {}) from the leader: {reason}",
                meta.index, meta.term
            ))
        };
        let stored = match group.received_snapshot.take().filter(|s| s.id() == id) {
            Some(stored) => stored,
            None => group
                .snapshots
                .as_ref()
                .ok_or_else(|| failed("the group has no snapshot store".into()))?
                .load(id)
                .map_err(|e| failed(e.to_string()))?,
        };
        let sessions = super::sessions::SessionTable::decode(&stored.sessions)
            .map_err(|e| failed(format!("its session table: {e}")))?;
        let loading = Instant::now();
        let mut reader = stored.open_reader().map_err(|e| failed(e.to_string()))?;
        if let Some(superseded) = group.loading.take() {
            // The core installs a snapshot only past its commit index, so
            // this one covers every entry held back for the older one.
            log::info!(
                "node {node} group {group_id}: snapshot ({}, {}) supersedes the one still loading ({}, {})",
                meta.index,
                meta.term,
                superseded.stored.meta.index,
                superseded.stored.meta.term
            );
        }
        // The loader that decoded this snapshot's stream as it arrived.
        let early = self.installs.early.remove(&group_id).filter(|e| e.snapshot == id);
        let early_done = self.installs.early_done.remove(&group_id);
        let loaded_inline = match early {
            Some(early) => {
                group.loading = Some(Loading {
                    generation: early.generation,
                    early: true,
                    stored: stored.clone(),
                    started: loading,
                    deferred: Vec::new(),
                    deferred_bytes: 0,
                });
                if let Some(done) = early_done.filter(|d| d.generation == early.generation) {
                    // Already prepared: swapped in on the next turn.
                    self.installs.prepared.borrow_mut().push(done);
                    self.events.ring();
                }
                false
            }
            None => match group.state_machine.snapshot_loader() {
                Some(loader) => {
                    let generation = self.installs.next_load;
                    self.installs.next_load += 1;
                    group.loading = Some(Loading {
                        generation,
                        early: false,
                        stored: stored.clone(),
                        started: loading,
                        deferred: Vec::new(),
                        deferred_bytes: 0,
                    });
                    self.installs
                        .spawn_prepare(group_id, generation, loader, reader, &self.events);
                    false
                }
                None => {
                    load_into(group.state_machine.as_mut(), &mut reader)
                        .map_err(|(how, e)| failed(format!("{how} of {}: {e}", stored.data_path().display())))?;
                    group.applied_on_shard = meta.index;
                    true
                }
            },
        };
        group.sessions = sessions;
        if let Err(reason) = group.restore_address_book(&stored.addresses) {
            // Addresses are only where to connect: the static peers and
            // later address-book entries still serve.
            log::warn!("node {node} group {group_id}: ignoring the installed snapshot's address book: {reason}");
        }
        group.wal_purged = meta.index;
        group.since_snapshot = super::compaction::SinceSnapshot::new(Instant::now());
        group.stored_snapshot = Some(stored);
        // Members whose address-book entries the snapshot compacted away:
        // connect to them as a restart from the snapshot would.
        self.learn_restored_addresses();
        // The WAL purge in this Ready frees segments.
        self.segment_deletion.want();
        if loaded_inline {
            self.snapshot_loaded(
                group_id,
                id,
                format!("loaded on the shard's thread in {:?}", loading.elapsed()),
            );
        }
        Ok(())
    }

    /// Counts and logs a snapshot installed from the leader, once its
    /// state machine holds it.
    fn snapshot_loaded(&mut self, group_id: GroupId, id: SnapshotId, how: String) {
        let node = self.node;
        let timings = self.installs.received_timings.remove(&group_id);
        let (answer_delay, answer_delay_max, answers) =
            std::mem::replace(&mut self.installs.answer_delay, (Duration::ZERO, Duration::ZERO, 0));
        let batches = std::mem::take(&mut self.installs.receiving.queue.borrow_mut().batches);
        if let Some(group) = self.groups.get_mut(&group_id) {
            group.counters.snapshots_installed += 1;
        }
        self.metrics.snapshots_installed += 1;
        log::info!(
            "node {node} group {group_id}: installed snapshot ({}, {}) from the leader{}",
            id.index,
            id.term,
            timings
                .map(|t| format!(
                    " ({:?} since its first chunk: {} chunks written in {:?} in {batches} batches, \
                     waited for the loader's feed {:?}, waited for the worker {:?} in all, synced in {:?}, \
                     answered {:?} after written on average (max {:?}), finished in {:?}, {how})",
                    t.started.elapsed(),
                    t.chunks,
                    t.write,
                    t.feed_wait,
                    t.queued,
                    t.sync,
                    answer_delay / answers.max(1) as u32,
                    answer_delay_max,
                    t.finish
                ))
                .unwrap_or_else(|| format!(" ({how})"))
        );
    }

    /// Swaps in the states prepared off the shard's thread since the last
    /// turn, then applies the entries each group held back meanwhile and
    /// serves its waiting reads. A failed load fails the shard, as a failed
    /// `on_snapshot_load` does.
    pub(super) fn finish_loads(&mut self) {
        let prepared = std::mem::take(&mut *self.installs.prepared.borrow_mut());
        for Prepared {
            group: group_id,
            generation,
            result,
            prepare_time,
        } in prepared
        {
            if self.failed.is_some() {
                return;
            }
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            if group.loading.as_ref().map(|l| l.generation) != Some(generation) {
                if self
                    .installs
                    .early
                    .get(&group_id)
                    .is_some_and(|e| e.generation == generation)
                {
                    // Decoded while the stream arrived, before the core
                    // installed it: kept for the install.
                    self.installs.early_done.insert(
                        group_id,
                        Prepared {
                            group: group_id,
                            generation,
                            result,
                            prepare_time,
                        },
                    );
                }
                // Else superseded by a newer snapshot: its load is under way.
                continue;
            }
            if let (Err((how, error)), Some(loading)) = (&result, group.loading.as_mut().filter(|l| l.early)) {
                // The stream's loader failed (the stream it read was cut,
                // or it decoded wrong): load from the verified file.
                log::info!(
                    "node {} group {group_id}: loading snapshot ({}, {}) again from its file: while it arrived, \
                     {how}: {error}",
                    self.node,
                    loading.stored.meta.index,
                    loading.stored.meta.term
                );
                let reader = loading.stored.open_reader();
                let loader = group.state_machine.snapshot_loader();
                let (Ok(reader), Some(loader)) = (reader, loader) else {
                    let meta = &loading.stored.meta;
                    let error = Error::Storage(format!(
                        "group {group_id}: installing snapshot ({}, {}) from the leader: no loader, or its file \
                         {} does not open",
                        meta.index,
                        meta.term,
                        loading.stored.data_path().display()
                    ));
                    self.fail(error);
                    return;
                };
                let generation = self.installs.next_load;
                self.installs.next_load += 1;
                loading.generation = generation;
                loading.early = false;
                self.installs
                    .spawn_prepare(group_id, generation, loader, reader, &self.events);
                continue;
            }
            let loading = group.loading.take().expect("checked");
            let swapping = Instant::now();
            let swapped = result.and_then(|state| {
                group
                    .state_machine
                    .on_snapshot_prepared(state)
                    .map_err(|e| ("on_snapshot_prepared", e))
            });
            if let Err((how, error)) = swapped {
                let meta = &loading.stored.meta;
                self.fail(Error::Storage(format!(
                    "group {group_id}: installing snapshot ({}, {}) from the leader: {how} of {}: {error}",
                    meta.index,
                    meta.term,
                    loading.stored.data_path().display()
                )));
                return;
            }
            let swap_time = swapping.elapsed();
            // Applied as of the snapshot only now (the status said the
            // state before it until here).
            group.applied_on_shard = loading.stored.meta.index;
            // What was committed meanwhile, then the reads that waited.
            let since_before = group.since_snapshot.log_bytes;
            group.apply(&loading.deferred, &mut self.metrics, Some(&self.events.crc_hints));
            self.log_bytes_since_snapshots += group.since_snapshot.log_bytes.saturating_sub(since_before);
            group.notify_if_drained();
            let learned = std::mem::take(&mut group.learned_addresses);
            let configuration_applied = std::mem::take(&mut group.configuration_applied);
            for book in learned {
                self.learn_addresses(book);
            }
            if configuration_applied {
                self.prune_peers();
            }
            self.dirty.insert(group_id);
            self.snapshot_loaded(
                group_id,
                loading.stored.id(),
                format!(
                    "prepared off the shard's thread in {prepare_time:?}, swapped in {swap_time:?}, \
                     {} held-back entries applied, {:?} after the core installed it",
                    loading.deferred.len(),
                    loading.started.elapsed()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::LogIndex;

    #[test]
    fn a_completed_streams_hold_follows_the_follower_until_caught_up_and_ends_on_leadership_or_time() {
        let completed = Instant::now();
        let hold = StreamHold {
            snapshot: LogIndex(100),
            term: Term(3),
            completed,
        };
        let soon = completed + Duration::from_secs(1);
        // Still loading the snapshot: the log after it stays.
        assert_eq!(
            hold.held_after(Some(LogIndex(20)), LogIndex(500), soon),
            Ok(LogIndex(100))
        );
        // Catching up from the log: the log after what it holds stays.
        assert_eq!(
            hold.held_after(Some(LogIndex(300)), LogIndex(500), soon),
            Ok(LogIndex(300))
        );
        // Past what compaction cuts: nothing more to keep.
        assert_eq!(
            hold.held_after(Some(LogIndex(500)), LogIndex(500), soon),
            Err("caught up from the log")
        );
        // Another term, another leader, or the follower left.
        assert!(hold.held_after(None, LogIndex(500), soon).is_err());
        // A follower that never comes back does not pin the log.
        let late = completed + SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX + Duration::from_millis(1);
        assert!(hold.held_after(Some(LogIndex(20)), LogIndex(500), late).is_err());
        assert!(hold
            .held_after(
                Some(LogIndex(20)),
                LogIndex(500),
                completed + SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX
            )
            .is_ok());
    }
}
