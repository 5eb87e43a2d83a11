//! The apply lane: a group whose state machine declared that it blocks
//! ([`crate::api::OffShard`]) applies on a thread of its own, so a slow
//! `on_apply` never holds up the shard's heartbeats, replication and other
//! groups. The shard hands each batch of committed entries over as a job
//! and goes on; the lane applies jobs in order and sends the results back,
//! with the index it has applied; the shard answers the proposers and
//! releases the reads that index allows when it polls the lane, each turn.
//!
//! Everything the engine asks of such a state machine is a job on the same
//! queue (apply, query, leader and configuration callbacks, snapshot), so
//! it happens in log order. The rare calls that must finish before the
//! shard goes on (loading a snapshot installed from the leader) wait for
//! the lane to drain first (`LaneProxy`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{ApplyResults, Command, Error, LeaderStopReason, SnapshotView, StateMachine};
use crate::raft::{Configuration, Entry, GroupId, LogIndex, NodeId, SnapshotMeta, Term};

use super::apply::{ApplyScratch, Applying, Outcome, APPLY_SCRATCH_ENTRIES_MAX};
use super::group::PendingRead;
use super::sessions::SessionTable;
use super::snapshot_store::{SnapshotStore, StoredSnapshot};

/// Bound on the entry bytes handed to one group's apply lane and not yet
/// applied. Past it the group's leader refuses new proposals as busy
/// (`Error::Busy { bound: "APPLY_LANE_BACKLOG_BYTES_MAX" }`); a follower's
/// lane holds at most what its leader admitted beyond its own lane. The
/// lane's job queue is bounded by it too: each apply job carries at least
/// one entry, and the other jobs are one per read, callback or snapshot,
/// each bounded where it is made (`PENDING_READS_MAX`, ...).
pub const APPLY_LANE_BACKLOG_BYTES_MAX: u64 = 64 << 20;

/// Bound on the entries the lane hands `on_apply` in one batch: the apply
/// jobs queued back to back while it was busy are merged up to it, so a
/// slow state machine pays its per-batch cost once per backlog, not once
/// per shard turn.
pub const APPLY_LANE_BATCH_ENTRIES_MAX: usize = 1 << 14;

/// Bound on the applied batches' buffers ([`LaneBatch`]) a lane keeps for
/// reuse: the shard hands each back once it answered from it, and the lane
/// takes a returned one for its next batch (a new one only when none is
/// back yet). Past the bound a returned buffer is dropped.
pub const APPLY_LANE_RESULT_BUFFERS_MAX: usize = 8;

/// One applied batch's outcome, in buffers that go round between the lane
/// and the shard: the lane fills it, the shard answers straight from it and
/// hands it back.
#[derive(Default)]
pub(crate) struct LaneBatch {
    /// `(index, term)` of each entry applied, in order.
    pub entries: Vec<(LogIndex, Term)>,
    /// Each entry's outcome, in order.
    pub results: Vec<Outcome>,
    /// The state machine's results the outcomes point into.
    pub outputs: ApplyResults,
    /// How long each `on_apply_into` call of the batch took.
    pub apply_durations: Vec<Duration>,
    /// Entry bytes the batch carried (off the backlog now).
    bytes: u64,
}

impl LaneBatch {
    /// Empties it for reuse, keeping room up to the scratch's bounds.
    fn clear(&mut self) {
        self.entries.clear();
        self.results.clear();
        self.outputs.clear();
        self.apply_durations.clear();
        self.bytes = 0;
        if self.entries.capacity() > APPLY_SCRATCH_ENTRIES_MAX {
            self.entries = Vec::new();
        }
        if self.results.capacity() > APPLY_SCRATCH_ENTRIES_MAX {
            self.results = Vec::new();
        }
    }
}

/// What the shard asks of a lane, in order.
enum Job {
    /// Apply these committed entries.
    Apply(Vec<Entry>),
    /// Answer a query on the state applied so far.
    Query(bytes::Bytes),
    LeaderStart(Term),
    LeaderStop(LeaderStopReason),
    Error(Error),
    /// The client sessions as of the state machine's current state (the
    /// group's start, or a snapshot just installed).
    Sessions(SessionTable),
    /// Write a snapshot at the applied index, which is `meta.index`.
    Snapshot {
        store: SnapshotStore,
        meta: SnapshotMeta,
        addresses: Vec<u8>,
    },
    /// Say when everything queued before is done.
    Barrier(flume::Sender<()>),
    /// Finish what is queued before and end the thread.
    Stop,
}

/// What a lane sends back, in the order of its jobs.
enum Done {
    Applied(LaneBatch),
    Query(Vec<u8>),
    Snapshot(Result<StoredSnapshot, Error>, Duration),
}

/// What the lane's thread owns: the state machine and the sessions, always
/// at the same applied index.
struct LaneState {
    state_machine: Box<dyn StateMachine + Send>,
    sessions: SessionTable,
    scratch: ApplyScratch,
}

/// What polling a lane found for the shard (besides the applied batches,
/// left in `ApplyLane::batches`).
#[derive(Default)]
pub(crate) struct Collected {
    /// Answers to the queries of `ApplyLane::queries`, in order.
    pub answers: Vec<Vec<u8>>,
    /// Snapshots written, with how long each took.
    pub snapshots: Vec<(Result<StoredSnapshot, Error>, Duration)>,
    /// The lane's thread is gone (its state machine panicked).
    pub failed: bool,
}

/// The shard's end of a group's apply lane.
pub(crate) struct ApplyLane {
    group: GroupId,
    jobs: flume::Sender<Job>,
    done: flume::Receiver<Done>,
    /// Where the shard hands applied batches' buffers back to the thread.
    returned: flume::Sender<LaneBatch>,
    /// The batches applied since the last poll, to answer from (then
    /// handed back with `recycle`).
    pub batches: Vec<LaneBatch>,
    /// Rung by the thread after each job; the shard's waker task, once
    /// started, turns it into a loop turn.
    wake: Option<flume::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The index the state machine has applied (and answered from).
    pub applied: LogIndex,
    /// Reads handed to the lane, answered in this order.
    pub queries: VecDeque<PendingRead>,
    /// Entry bytes handed over and not yet applied.
    pub backlog_bytes: u64,
    /// The sessions the lane holds are the group's (false: send them
    /// before the next job).
    pub sessions_current: bool,
}

impl ApplyLane {
    /// Starts `group`'s apply thread with `state_machine`, which has
    /// applied up to `applied`. Returns the proxy the group calls for what
    /// is not routed through the lane by hand, or the state machine back if
    /// no thread could be started.
    pub fn start(
        node: NodeId,
        group: GroupId,
        state_machine: Box<dyn StateMachine + Send>,
        applied: LogIndex,
    ) -> Result<(ApplyLane, LaneProxy), Box<dyn StateMachine + Send>> {
        let state = Arc::new(Mutex::new(LaneState {
            state_machine,
            sessions: SessionTable::default(),
            scratch: ApplyScratch::default(),
        }));
        let (jobs, job_receiver) = flume::unbounded();
        let (done_sender, done) = flume::unbounded();
        let (wake_sender, wake) = flume::bounded(1);
        let (returned, pool) = flume::bounded(APPLY_LANE_RESULT_BUFFERS_MAX);
        let thread_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("coraft-{node}-apply-{group}"))
            .spawn(move || {
                run(
                    group,
                    thread_state,
                    Channels {
                        jobs: job_receiver,
                        done: done_sender,
                        wake: wake_sender,
                        pool,
                    },
                )
            });
        match spawned {
            Ok(thread) => Ok((
                ApplyLane {
                    group,
                    jobs: jobs.clone(),
                    done,
                    returned,
                    batches: Vec::new(),
                    wake: Some(wake),
                    thread: Some(thread),
                    applied,
                    queries: VecDeque::new(),
                    backlog_bytes: 0,
                    sessions_current: false,
                },
                LaneProxy { jobs, state },
            )),
            Err(error) => {
                log::warn!("group {group}: starting its apply thread failed ({error}); it applies on its shard");
                let state = Arc::try_unwrap(state).ok().expect("the thread never started");
                Err(state.into_inner().unwrap_or_else(|e| e.into_inner()).state_machine)
            }
        }
    }

    /// The doorbell the thread rings after each job, for the shard's waker
    /// task (taken once).
    pub fn take_wake(&mut self) -> Option<flume::Receiver<()>> {
        self.wake.take()
    }

    fn send(&self, job: Job) {
        // A lane whose thread is gone is noticed by `collect`.
        let _ = self.jobs.send(job);
    }

    /// Hands `sessions` over if the lane's are not the group's.
    pub fn send_sessions(&mut self, sessions: &mut SessionTable) {
        if !self.sessions_current {
            self.sessions_current = true;
            self.send(Job::Sessions(std::mem::take(sessions)));
        }
    }

    /// Queues committed entries to apply.
    pub fn apply(&mut self, entries: Vec<Entry>) {
        self.backlog_bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
        self.send(Job::Apply(entries));
    }

    /// Hands an applied batch's buffers back to the thread, for reuse.
    pub fn recycle(&self, mut batch: LaneBatch) {
        batch.clear();
        // Past APPLY_LANE_RESULT_BUFFERS_MAX (or with the thread gone): dropped.
        let _ = self.returned.try_send(batch);
    }

    /// Queues a read's query; its answer comes back in order.
    pub fn query(&mut self, mut read: PendingRead) {
        self.send(Job::Query(std::mem::take(&mut read.query)));
        self.queries.push_back(read);
    }

    /// Queues a snapshot at the index everything queued before reaches.
    pub fn snapshot(&mut self, store: SnapshotStore, meta: SnapshotMeta, addresses: Vec<u8>) {
        self.send(Job::Snapshot { store, meta, addresses });
    }

    /// Waits (blocking the caller) until every job queued before is done.
    pub fn drain(&self) {
        barrier(&self.jobs);
    }

    /// What the lane finished since the last poll (the applied batches go
    /// to `batches`).
    pub fn collect(&mut self) -> Collected {
        let mut collected = Collected::default();
        loop {
            match self.done.try_recv() {
                Ok(Done::Applied(batch)) => {
                    self.backlog_bytes = self.backlog_bytes.saturating_sub(batch.bytes);
                    if let Some(&(last, _)) = batch.entries.last() {
                        self.applied = self.applied.max(last);
                    }
                    self.batches.push(batch);
                }
                Ok(Done::Query(answer)) => collected.answers.push(answer),
                Ok(Done::Snapshot(result, elapsed)) => collected.snapshots.push((result, elapsed)),
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => {
                    collected.failed = true;
                    break;
                }
            }
        }
        collected
    }
}

impl ApplyLane {
    /// Lets the thread finish what is queued and end, without waiting for
    /// it (a group removed at run time): returns the thread to join once it
    /// is finished, so no thread outlives the shard.
    pub fn retire(mut self) -> Option<std::thread::JoinHandle<()>> {
        self.send(Job::Stop);
        self.thread.take()
    }
}

impl Drop for ApplyLane {
    /// Lets the thread finish what is queued, then joins it: no thread
    /// outlives its group.
    fn drop(&mut self) {
        self.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("group {}: its state machine panicked on its apply thread", self.group);
            }
        }
    }
}

fn barrier(jobs: &flume::Sender<Job>) {
    let (sender, receiver) = flume::bounded(1);
    if jobs.send(Job::Barrier(sender)).is_ok() {
        let _ = receiver.recv();
    }
}

/// The apply thread's ends of its channels.
struct Channels {
    jobs: flume::Receiver<Job>,
    done: flume::Sender<Done>,
    wake: flume::Sender<()>,
    /// Applied batches' buffers the shard handed back.
    pool: flume::Receiver<LaneBatch>,
}

/// The apply thread: runs jobs in order until `Stop` (or until the shard's
/// end is gone).
fn run(group: GroupId, state: Arc<Mutex<LaneState>>, channels: Channels) {
    let Channels { jobs, done, wake, pool } = channels;
    // A job taken off the queue while merging apply jobs, run next.
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let job = match job {
            Job::Apply(mut entries) => {
                while entries.len() < APPLY_LANE_BATCH_ENTRIES_MAX {
                    match jobs.try_recv() {
                        Ok(Job::Apply(more)) => entries.extend(more),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                Job::Apply(entries)
            }
            other => other,
        };
        let mut guard = state
            .lock()
            .expect("the apply thread is the only one to panic holding it");
        let LaneState {
            state_machine,
            sessions,
            scratch,
        } = &mut *guard;
        let answer = match job {
            Job::Apply(entries) => {
                let mut applying = Applying {
                    group,
                    state_machine: state_machine.as_mut(),
                    sessions,
                    // The hints live on the shard's thread: computed here.
                    crc_hints: None,
                };
                applying.apply_batch(&entries, scratch);
                // The outcome moves into a returned buffer (a new one only
                // until the first come back); the scratch keeps its room.
                let mut batch = pool.try_recv().unwrap_or_default();
                std::mem::swap(&mut batch.results, &mut scratch.results);
                std::mem::swap(&mut batch.outputs, &mut scratch.outputs);
                std::mem::swap(&mut batch.apply_durations, &mut scratch.apply_durations);
                batch.entries.extend(entries.iter().map(|e| (e.index, e.term)));
                batch.bytes = entries.iter().map(Entry::size_bytes).sum();
                // Address books and configurations took effect on the
                // shard when it handed the entries over.
                scratch.clear();
                Some(Done::Applied(batch))
            }
            Job::Query(query) => Some(Done::Query(state_machine.on_query(&query))),
            Job::LeaderStart(term) => {
                state_machine.on_leader_start(term);
                None
            }
            Job::LeaderStop(reason) => {
                state_machine.on_leader_stop(reason);
                None
            }
            Job::Error(error) => {
                state_machine.on_error(&error);
                None
            }
            Job::Sessions(table) => {
                *sessions = table;
                None
            }
            Job::Snapshot { store, meta, addresses } => {
                let started = Instant::now();
                let result = write_snapshot(state_machine.as_mut(), sessions, &store, meta, addresses)
                    .map_err(|reason| Error::Snapshot { group, reason });
                Some(Done::Snapshot(result, started.elapsed()))
            }
            Job::Barrier(sender) => {
                let _ = sender.send(());
                None
            }
            Job::Stop => break,
        };
        drop(guard);
        if let Some(answer) = answer {
            if done.send(answer).is_err() {
                break;
            }
            let _ = wake.try_send(());
        }
    }
}

/// Writes a snapshot of the lane's state (at `meta.index`) into `store`.
fn write_snapshot(
    state_machine: &mut (dyn StateMachine + Send),
    sessions: &SessionTable,
    store: &SnapshotStore,
    meta: SnapshotMeta,
    addresses: Vec<u8>,
) -> Result<StoredSnapshot, String> {
    let mut writer = store
        .begin_with_addresses(meta, sessions.encode(), addresses)
        .map_err(|e| e.to_string())?;
    match state_machine.snapshot_view() {
        Some(mut view) => view
            .write_to(&mut writer)
            .map_err(|e| format!("the snapshot view: {e}"))?,
        None => state_machine
            .on_snapshot_save(&mut writer)
            .map_err(|e| format!("on_snapshot_save: {e}"))?,
    }
    writer.finish().map_err(|e| e.to_string())
}

/// What a group on a lane keeps as its state machine: the callbacks queue
/// as jobs, in order with the applies; a call that must answer at once
/// first waits for the lane to drain, then runs on the caller's thread
/// (the lane is idle meanwhile: only the caller queues jobs).
pub(crate) struct LaneProxy {
    jobs: flume::Sender<Job>,
    state: Arc<Mutex<LaneState>>,
}

impl LaneProxy {
    fn drained<T>(&self, call: impl FnOnce(&mut LaneState) -> T) -> Option<T> {
        barrier(&self.jobs);
        let mut guard = self.state.lock().ok()?;
        Some(call(&mut guard))
    }

    fn lane_gone() -> std::io::Error {
        std::io::Error::other("the group's apply thread is gone (its state machine panicked)")
    }
}

impl StateMachine for LaneProxy {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        self.drained(|s| s.state_machine.on_apply(commands)).unwrap_or_default()
    }

    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        self.drained(|s| s.state_machine.on_apply_into(commands, out));
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.drained(|s| s.state_machine.on_query(query)).unwrap_or_default()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.drained(|s| s.state_machine.on_snapshot_save(writer))
            .unwrap_or_else(|| Err(Self::lane_gone()))
    }

    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        self.drained(|s| s.state_machine.snapshot_view()).flatten()
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.drained(|s| s.state_machine.on_snapshot_load(reader))
            .unwrap_or_else(|| Err(Self::lane_gone()))
    }

    fn on_leader_start(&mut self, term: Term) {
        let _ = self.jobs.send(Job::LeaderStart(term));
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        let _ = self.jobs.send(Job::LeaderStop(reason));
    }

    fn on_configuration_committed(&mut self, index: LogIndex, configuration: &Configuration) {
        // Configurations reach the lane's state machine with the entries
        // that carry them; a direct call has no place in the log.
        let _ = (index, configuration);
    }

    fn on_error(&mut self, error: &Error) {
        let _ = self.jobs.send(Job::Error(error.clone()));
    }
}
