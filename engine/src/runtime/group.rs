//! One Raft group on its shard: the core, the state machine, proposals and
//! reads waiting for their outcome, and the client sessions that make a
//! retried write apply at most once (`sessions.rs`).

use std::collections::{BTreeMap, VecDeque};

use crate::api::{Error, LeaderStopReason, StateMachine};
use crate::raft::{CommittedRange, Entry, LogIndex, NodeId, RaftCore, ReadState, Role, Term};

use super::apply::{result_of, ApplyScratch};
use super::apply_lane::{ApplyLane, LaneBatch};
use super::crc_hints::CrcHints;
use super::metrics::ShardMetrics;
use super::reply::Reply;
use super::sessions::SessionTable;
use super::snapshot_store::SnapshotStore;
use super::storage::HardStateWriter;

mod applier;
use applier::answer;

/// Bound on proposals waiting for their outcome in one group.
pub const PENDING_PROPOSALS_MAX: usize = 1 << 16;
/// Bound on reads waiting in one group.
pub const PENDING_READS_MAX: usize = 1 << 16;
/// Bytes of room a group keeps between reads for their answers; a larger
/// answer's room is given back before the next batch of reads.
pub const QUERY_ANSWER_RETAINED_BYTES_MAX: usize = 64 << 10;
/// Bound on the proposals whose room a group's [`QueuedProposals`] keeps
/// from one turn to the next; a larger batch's room is given back.
pub const QUEUED_PROPOSALS_KEPT_MAX: usize = 64;

/// The proposals of one group queued in the current turn: the commands as
/// the core takes them and, beside them, who waits for each, since when,
/// and the data's CRC if computed where the command was laid out
/// (`crc_hints.rs`). Empty between turns, its room kept (up to
/// [`QUEUED_PROPOSALS_KEPT_MAX`]): with many groups a turn queues one or
/// two writes for each, and two vectors made per group per turn were a
/// tenth of the allocations at 1,024 clients × 64 groups.
#[derive(Default)]
pub(crate) struct QueuedProposals {
    pub commands: Vec<bytes::Bytes>,
    pub waiting: Vec<(Reply, std::time::Instant, Option<u32>)>,
}

impl QueuedProposals {
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    pub fn push(&mut self, command: bytes::Bytes, reply: Reply, received: std::time::Instant, data_crc: Option<u32>) {
        self.commands.push(command);
        self.waiting.push((reply, received, data_crc));
    }

    /// Gives back room beyond [`QUEUED_PROPOSALS_KEPT_MAX`] (both vectors
    /// are empty: their contents went to the core and the waiters).
    pub fn keep_room_within_bound(&mut self) {
        debug_assert!(self.commands.is_empty() && self.waiting.is_empty());
        if self.commands.capacity() > QUEUED_PROPOSALS_KEPT_MAX {
            self.commands = Vec::new();
        }
        if self.waiting.capacity() > QUEUED_PROPOSALS_KEPT_MAX {
            self.waiting = Vec::new();
        }
    }
}

/// A proposal accepted by the core, waiting to be applied.
pub(crate) struct PendingProposal {
    pub term: Term,
    pub reply: Reply,
    /// When the request reached the shard.
    pub received: std::time::Instant,
    /// When it was handed to the core.
    pub proposed: std::time::Instant,
}

/// A read waiting for its read index and then for the state machine.
pub(crate) struct PendingRead {
    pub context: u64,
    pub index: Option<LogIndex>,
    pub query: bytes::Bytes,
    /// Answer with the read index itself (8 bytes, little endian) as soon as
    /// it is confirmed, without waiting to apply or querying.
    pub index_only: bool,
    pub reply: Reply,
    /// When the request reached the shard.
    pub received: std::time::Instant,
}

/// What one group did on one node (`GroupStatus::counters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Proposals its core accepted here (as leader).
    pub proposals: u64,
    /// Committed entries applied to its state machine here.
    pub entries_applied: u64,
    /// Linearizable reads answered here.
    pub reads_served: u64,
    /// Requests answered with a timeout here.
    pub requests_timed_out: u64,
    /// Snapshots of it written here (on demand and by policy).
    pub snapshots_taken: u64,
    /// Data bytes of the latest snapshot written here (0: none yet).
    pub snapshot_bytes_last: u64,
    /// How long writing the latest one took, from `on_snapshot_save` to
    /// durable, µs.
    pub snapshot_duration_us_last: u64,
    /// Snapshots installed here from a leader (InstallSnapshot).
    pub snapshots_installed: u64,
    /// Snapshot stream bytes received here from leaders (chunks accepted).
    pub install_bytes_received: u64,
    /// Snapshot stream bytes sent from here to followers (resent ones too).
    pub install_bytes_sent: u64,
}

/// A group hosted by a shard.
pub(crate) struct Group {
    pub core: RaftCore,
    pub state_machine: Box<dyn StateMachine>,
    /// Proposals waiting for their entry to apply, in index order (a
    /// leader appends at rising indexes; `wait_for` keeps the order).
    pub proposals: VecDeque<(LogIndex, PendingProposal)>,
    /// Proposals queued this turn, not yet handed to the core (the shard
    /// hands them over at the end of the turn, or once a batch is full).
    pub queued: QueuedProposals,
    pub reads: Vec<PendingRead>,
    pub next_read_context: u64,
    /// The clients' sessions: replicated state, decided by the log alone.
    pub sessions: SessionTable,
    was_leader: bool,
    /// What of the core's hard state is written, and what is held back.
    pub hard_states: HardStateWriter,
    /// This group's counters on this node.
    pub counters: GroupCounters,
    /// Closed by `GroupHandle::shutdown`: new requests are refused, those
    /// in flight finish; the waiters learn when none is left.
    pub closed: bool,
    close_waiters: Vec<flume::Sender<()>>,
    /// This group's snapshots on disk (`None` in unit tests without files).
    pub snapshots: Option<SnapshotStore>,
    /// The group's purge point in the shard's WAL (0: never purged).
    pub wal_purged: LogIndex,
    /// What it applied since its last snapshot, for the snapshot policy.
    pub since_snapshot: super::compaction::SinceSnapshot,
    /// A snapshot of it is being written off the shard's loop.
    pub snapshot_writing: bool,
    /// Requests answered when that snapshot is durable (or fails).
    pub snapshot_waiters: Vec<flume::Sender<Result<LogIndex, Error>>>,
    /// The newest snapshot durable in `snapshots` that this node took,
    /// restarted from or installed: what a leader streams (`install.rs`).
    pub stored_snapshot: Option<super::snapshot_store::StoredSnapshot>,
    /// A snapshot received from the leader and handed to the core, until
    /// the core's Ready installs it.
    pub received_snapshot: Option<super::snapshot_store::StoredSnapshot>,
    /// Address books applied since the shard last looked (`membership.rs`).
    pub learned_addresses: Vec<BTreeMap<NodeId, Vec<std::net::SocketAddr>>>,
    /// The group's address book as of its applied index: the books of the
    /// address-book entries applied (a node's newest addresses win) over
    /// the one of the snapshot it started from. Written into each snapshot,
    /// so it outlives the entries compaction drops.
    pub address_book: BTreeMap<NodeId, Vec<std::net::SocketAddr>>,
    /// A configuration entry was applied since the shard last looked.
    pub configuration_applied: bool,
    /// Room for `Applying::apply_batch`, reused batch after batch.
    apply_scratch: ApplyScratch,
    /// A snapshot loading off the shard's thread (`install.rs`): until it
    /// is swapped in, nothing is applied to or queried from the state
    /// machine.
    pub loading: Option<super::install::Loading>,
    /// The index of the last entry the state machine took on the shard's
    /// thread (applied, or covered by a snapshot it loaded): what the
    /// status reports as applied while a snapshot loads off the thread,
    /// when the core already counts the snapshot as applied.
    pub applied_on_shard: LogIndex,
    /// The group's own apply thread, for a state machine that blocks
    /// (`OffShard`); `None`: it applies on the shard.
    pub lane: Option<ApplyLane>,
    /// Room for one read's answer (`on_query_into`), reused read after
    /// read; past [`QUERY_ANSWER_RETAINED_BYTES_MAX`] given back.
    query_answer: Vec<u8>,
}

impl Group {
    pub fn new(core: RaftCore, mut state_machine: Box<dyn StateMachine>) -> Group {
        let mut lane = None;
        let core_applied = core.applied_index();
        if let Some(off_shard) = state_machine.apply_off_shard() {
            let config = core.config();
            state_machine = match ApplyLane::start(config.id, config.group, off_shard, core.applied_index()) {
                Ok((started, proxy)) => {
                    lane = Some(started);
                    Box::new(proxy)
                }
                Err(back) => back,
            };
        }
        Group {
            core,
            state_machine,
            proposals: VecDeque::new(),
            queued: QueuedProposals::default(),
            reads: Vec::new(),
            next_read_context: 1,
            sessions: SessionTable::default(),
            was_leader: false,
            hard_states: HardStateWriter::default(),
            counters: GroupCounters::default(),
            closed: false,
            close_waiters: Vec::new(),
            snapshots: None,
            wal_purged: LogIndex(0),
            since_snapshot: super::compaction::SinceSnapshot::new(std::time::Instant::now()),
            snapshot_writing: false,
            snapshot_waiters: Vec::new(),
            stored_snapshot: None,
            received_snapshot: None,
            learned_addresses: Vec::new(),
            address_book: BTreeMap::new(),
            configuration_applied: false,
            apply_scratch: ApplyScratch::default(),
            loading: None,
            applied_on_shard: core_applied,
            lane,
            query_answer: Vec::new(),
        }
    }

    /// The index the state machine has applied: the core's, or, with an
    /// apply lane, what the lane reported (the core's is then what was
    /// handed to the lane). While a snapshot loads off the shard's thread
    /// the core already counts it applied, but the state machine still
    /// holds what it had before: that.
    pub fn applied_index(&self) -> LogIndex {
        match &self.lane {
            Some(lane) => lane.applied,
            None if self.loading.is_some() => self.applied_on_shard,
            None => self.core.applied_index(),
        }
    }

    /// The address book to write into a snapshot whose configuration is
    /// `configuration`: the entries of its members (`membership.rs`'s
    /// encoding; empty if it names none).
    pub fn snapshot_address_book(&self, configuration: &crate::raft::Configuration) -> Vec<u8> {
        let members = configuration.members();
        let book: BTreeMap<NodeId, Vec<std::net::SocketAddr>> = self
            .address_book
            .iter()
            .filter(|(node, _)| members.contains(node))
            .map(|(node, addresses)| (*node, addresses.clone()))
            .collect();
        if book.is_empty() {
            return Vec::new();
        }
        super::membership::encode_addresses(&book).to_vec()
    }

    /// Restores the address book of a snapshot this group starts from (or
    /// installs); the shard connects to its nodes when it next looks at
    /// `learned_addresses`. Empty bytes: the snapshot has none.
    pub fn restore_address_book(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let book = super::membership::decode_addresses(bytes).unwrap_or_else(|| Err("not an address book".into()))?;
        self.address_book.extend(book.iter().map(|(n, a)| (*n, a.clone())));
        self.learned_addresses.push(book);
        Ok(())
    }

    pub fn leader_hint(&self) -> Option<NodeId> {
        self.core.leader()
    }

    /// Tells the state machine about leadership changes.
    pub fn observe_role(&mut self) {
        let leading = self.core.role() == Role::Leader;
        if leading && !self.was_leader {
            self.state_machine.on_leader_start(self.core.term());
        } else if !leading && self.was_leader {
            self.state_machine
                .on_leader_stop(LeaderStopReason::NewTerm(self.core.term()));
            // Reads confirmed by this leader are still good; unconfirmed ones
            // come back through `dropped_reads`.
        }
        self.was_leader = leading;
    }

    /// The node is shutting down: a group it leads tells its state machine
    /// it stops leading (`LeaderStopReason::Shutdown`). The core is not
    /// stepped down (the shard stops with it; the followers elect a leader
    /// once its heartbeats stop), so this is the last word on the role.
    pub fn stop_leading_for_shutdown(&mut self) {
        if self.was_leader {
            self.was_leader = false;
            self.state_machine.on_leader_stop(LeaderStopReason::Shutdown);
        }
    }

    /// Applies committed entries in order, answers their proposers and
    /// serves the reads they unblock; with an apply lane, hands them over
    /// (`collect_lane` answers once they are applied). Session commands'
    /// CRCs are taken from `crc_hints` where noted (not on a lane: it
    /// computes them).
    pub fn apply(&mut self, entries: &[Entry], metrics: &mut ShardMetrics, crc_hints: Option<&CrcHints>) {
        let (_, mut applier) = self.split_for_apply();
        applier.apply([entries, &[]], metrics, crc_hints);
        self.serve_reads_after_apply(metrics);
    }

    /// [`apply`](Self::apply) of a Ready's committed entries, lent by the
    /// core's log (`RaftCore::take_ready_lending`) rather than cloned:
    /// only an apply lane, which takes them to its thread, clones them.
    /// Called in the round that took the Ready, before the core is
    /// stepped or compacted again, so the log still holds them.
    pub fn apply_committed(&mut self, range: CommittedRange, metrics: &mut ShardMetrics, crc_hints: Option<&CrcHints>) {
        let (core, mut applier) = self.split_for_apply();
        let (front, back) = core.committed_entries(range);
        applier.apply([front, back], metrics, crc_hints);
        self.serve_reads_after_apply(metrics);
    }

    /// Serves the reads an apply unblocked (with an apply lane: the reads
    /// confirmed now whose index the lane already reached).
    fn serve_reads_after_apply(&mut self, metrics: &mut ShardMetrics) {
        let served = self.serve_reads();
        metrics.reads_served += served;
        self.counters.reads_served += served;
    }

    /// Takes what the apply lane finished: answers the proposers of the
    /// entries it applied, the queries it answered, and serves the reads
    /// its applied index now allows. Returns the snapshots it wrote, and
    /// `Err` if its thread is gone (the state machine panicked).
    #[allow(clippy::type_complexity)]
    pub fn collect_lane(
        &mut self,
        metrics: &mut ShardMetrics,
    ) -> Result<
        Vec<(
            Result<super::snapshot_store::StoredSnapshot, Error>,
            std::time::Duration,
        )>,
        Error,
    > {
        let Some(lane) = self.lane.as_mut() else {
            return Ok(Vec::new());
        };
        let collected = lane.collect();
        let hint = self.core.leader();
        let mut served = 0;
        for answer in collected.answers {
            if let Some(read) = lane.queries.pop_front() {
                read.reply.send(Ok(answer), hint);
                served += 1;
            }
        }
        // The batches are answered straight from the lane's buffers, which
        // then go back to it.
        let mut batches = std::mem::take(&mut lane.batches);
        let now = std::time::Instant::now();
        for mut batch in batches.drain(..) {
            for elapsed in &batch.apply_durations {
                ShardMetrics::record(&mut metrics.apply_us, *elapsed);
            }
            let applied = batch.entries.len() as u64;
            metrics.entries_applied += applied;
            self.counters.entries_applied += applied;
            let LaneBatch {
                entries,
                results,
                outputs,
                ..
            } = &mut batch;
            for (&(index, term), outcome) in entries.iter().zip(results.iter_mut()) {
                answer(
                    &mut self.proposals,
                    hint,
                    index,
                    term,
                    result_of(outcome, outputs),
                    metrics,
                    now,
                );
            }
            if let Some(lane) = self.lane.as_ref() {
                lane.recycle(batch);
            }
        }
        if let Some(lane) = self.lane.as_mut() {
            lane.batches = batches;
        }
        served += self.serve_reads();
        metrics.reads_served += served;
        self.counters.reads_served += served;
        self.notify_if_drained();
        if collected.failed {
            return Err(Error::Storage(format!(
                "group {}: its state machine's apply thread is gone (it panicked)",
                self.core.config().group
            )));
        }
        Ok(collected.snapshots)
    }

    /// A stale read: answered from what is applied now, or, with an apply
    /// lane, by the lane after what it was handed so far.
    pub fn query_stale(&mut self, query: bytes::Bytes, reply: Reply) {
        let hint = self.leader_hint();
        match self.lane.as_mut() {
            Some(lane) => lane.query(PendingRead {
                context: 0,
                index: None,
                query,
                index_only: false,
                reply,
                received: std::time::Instant::now(),
            }),
            None => reply.send(Ok(self.state_machine.on_query(&query)), hint),
        }
    }

    /// A snapshot from the leader was loaded into the state machine (and
    /// `sessions` replaced): the lane, drained by the load, takes the
    /// sessions before its next job and stands at the snapshot's index.
    pub fn lane_installed(&mut self, index: LogIndex) {
        if let Some(lane) = self.lane.as_mut() {
            lane.sessions_current = false;
            lane.applied = lane.applied.max(index);
        }
    }

    /// Entry bytes handed to the apply lane and not yet applied.
    pub fn lane_backlog_bytes(&self) -> u64 {
        self.lane.as_ref().map_or(0, |lane| lane.backlog_bytes)
    }

    /// Waits (blocking the shard) until the apply lane has done everything
    /// handed to it, then takes its results (`collect_lane`).
    pub fn drain_lane(&mut self, metrics: &mut ShardMetrics) {
        if let Some(lane) = self.lane.as_ref() {
            lane.drain();
            let _ = self.collect_lane(metrics);
        }
    }

    /// Waits for the entry the core just appended at `index` to apply. A
    /// proposal still waiting at `index` or above was made in an earlier
    /// term and its entry has been replaced (a leader appends after the
    /// last entry of its log): it is answered `NotLeader` now.
    pub fn wait_for(&mut self, index: LogIndex, pending: PendingProposal) {
        while self.proposals.back().is_some_and(|(last, _)| *last >= index) {
            let (_, replaced) = self.proposals.pop_back().expect("non-empty");
            let hint = self.core.leader();
            replaced.reply.send(Err(Error::NotLeader { leader_hint: hint }), hint);
        }
        self.proposals.push_back((index, pending));
    }

    /// Gives each read its confirmed read index. The core confirms reads in
    /// the order they were asked, which is the order of `reads`: the search
    /// resumes where the last one was found, so a turn's confirmations cost
    /// one pass over the waiting reads, not one pass each.
    pub fn confirm_reads(&mut self, states: &[ReadState]) {
        let mut cursor = 0;
        for state in states {
            let found = self.reads[cursor..]
                .iter()
                .position(|r| r.context == state.context)
                .map(|at| at + cursor)
                .or_else(|| self.reads[..cursor].iter().position(|r| r.context == state.context));
            if let Some(at) = found {
                self.reads[at].index = Some(state.index);
                cursor = at + 1;
            }
        }
    }

    /// Serves every read whose index the state machine has reached; returns
    /// how many it served. Those still waiting stay where they are, in
    /// order, without a new buffer.
    pub fn serve_reads(&mut self) -> u64 {
        let applied = self.applied_index();
        let hint = self.core.leader();
        let laned = self.lane.is_some();
        let mut served = 0;
        if self.query_answer.capacity() > QUERY_ANSWER_RETAINED_BYTES_MAX {
            self.query_answer = Vec::new();
        }
        let ready = |read: &mut PendingRead| match read.index {
            Some(_) if read.index_only => true,
            Some(index) => index <= applied,
            None => false,
        };
        for read in self.reads.extract_if(.., ready) {
            let index = read.index.expect("only reads with an index are served");
            if read.index_only {
                read.reply.send(Ok(index.0.to_le_bytes().to_vec()), hint);
                served += 1;
            } else if laned {
                // The lane answers it after everything up to `applied`
                // (and maybe more): counted when answered.
                self.lane.as_mut().expect("checked").query(read);
            } else {
                // Answered from a buffer the group keeps: the client's
                // queue copies it into its frame.
                self.query_answer.clear();
                self.state_machine.on_query_into(&read.query, &mut self.query_answer);
                read.reply.send_bytes(Ok(&self.query_answer), hint);
                served += 1;
            }
        }
        served
    }

    /// Stops taking requests; `waiter` hears once those in flight are done.
    pub fn close(&mut self, waiter: flume::Sender<()>) {
        self.closed = true;
        self.close_waiters.push(waiter);
        self.notify_if_drained();
    }

    /// Tells the close waiters, once nothing is in flight.
    pub fn notify_if_drained(&mut self) {
        if !self.closed {
            return;
        }
        let lane_idle = self.lane.as_ref().is_none_or(|lane| lane.queries.is_empty());
        if self.proposals.is_empty() && self.queued.is_empty() && self.reads.is_empty() && lane_idle {
            for waiter in self.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Fails requests that waited longer than `timeout` (their outcome is
    /// unknown to the caller: a write may still commit). Proposals wait in
    /// index order, which is arrival order, so only the oldest are looked at.
    pub fn expire(&mut self, timeout: std::time::Duration) -> u64 {
        let mut expired = 0;
        let hint = self.core.leader();
        while self
            .proposals
            .front()
            .is_some_and(|(_, p)| p.received.elapsed() > timeout)
        {
            let (_, pending) = self.proposals.pop_front().expect("non-empty");
            pending.reply.send(Err(Error::Timeout), hint);
            expired += 1;
        }
        if self.reads.first().is_some_and(|r| r.received.elapsed() > timeout) {
            let (old, kept): (Vec<_>, Vec<_>) = self.reads.drain(..).partition(|r| r.received.elapsed() > timeout);
            self.reads = kept;
            for read in old {
                read.reply.send(Err(Error::Timeout), hint);
                expired += 1;
            }
        }
        if expired > 0 {
            self.counters.requests_timed_out += expired;
            self.notify_if_drained();
        }
        expired
    }

    /// Fails every waiting request (shutdown or a storage failure).
    pub fn fail_all(&mut self, error: Error) {
        let hint = self.core.leader();
        for (_, pending) in std::mem::take(&mut self.proposals) {
            pending.reply.send(Err(error.clone()), hint);
        }
        self.queued.commands.clear();
        for (reply, ..) in self.queued.waiting.drain(..) {
            reply.send(Err(error.clone()), hint);
        }
        for read in self.reads.drain(..) {
            read.reply.send(Err(error.clone()), hint);
        }
        if let Some(lane) = self.lane.as_mut() {
            for read in lane.queries.drain(..) {
                read.reply.send(Err(error.clone()), hint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CommandCounter;
    use crate::raft::{Configuration, EntryPayload, GroupId, InitialState, RaftConfig};
    use crate::runtime::codec::{encode_command, LoggedCommand};

    fn group() -> Group {
        group_of(Box::new(CommandCounter::default()))
    }

    fn group_of(state_machine: Box<dyn StateMachine>) -> Group {
        let initial = InitialState {
            configuration: Configuration::with_voters([NodeId(1)]),
            ..Default::default()
        };
        let core = RaftCore::new(RaftConfig::new(NodeId(1), GroupId(1)), initial).expect("valid config");
        Group::new(core, state_machine)
    }

    const fn write(sequence: u64, lowest_unanswered: u64, data: &'static [u8]) -> LoggedCommand<'static> {
        LoggedCommand::Session {
            leader_time_ms: 1_000,
            session: 7,
            sequence,
            lowest_unanswered,
            data,
        }
    }

    /// Applies `commands` as entries 1.. of one batch, each awaited by a
    /// proposal; returns each one's answer.
    fn apply_batch(group: &mut Group, commands: &[LoggedCommand<'_>]) -> Vec<Result<Vec<u8>, Error>> {
        apply_batch_in_two(group, commands, None)
    }

    /// [`apply_batch`], the batch in two parts split at `split` (as the
    /// core's log lends them when its ring wraps).
    fn apply_batch_in_two(
        group: &mut Group,
        commands: &[LoggedCommand<'_>],
        split: Option<usize>,
    ) -> Vec<Result<Vec<u8>, Error>> {
        let mut answers = Vec::new();
        let entries: Vec<Entry> = commands
            .iter()
            .enumerate()
            .map(|(i, command)| {
                let (sender, receiver) = flume::bounded(1);
                let now = std::time::Instant::now();
                let index = LogIndex(i as u64 + 1);
                let pending = PendingProposal {
                    term: Term(1),
                    reply: Reply::Api(sender),
                    received: now,
                    proposed: now,
                };
                group.wait_for(index, pending);
                answers.push(receiver);
                Entry {
                    index,
                    term: Term(1),
                    payload: EntryPayload::Normal(encode_command(command)),
                }
            })
            .collect();
        let mut metrics = ShardMetrics::new(0);
        match split {
            None => group.apply(&entries, &mut metrics, None),
            Some(split) => {
                let (_, mut applier) = group.split_for_apply();
                applier.apply([&entries[..split], &entries[split..]], &mut metrics, None);
                group.serve_reads_after_apply(&mut metrics);
            }
        }
        // An apply lane answers once it has applied them.
        group.drain_lane(&mut metrics);
        answers.iter().map(|r| r.recv().expect("answered")).collect()
    }

    fn count(value: u64) -> Result<Vec<u8>, Error> {
        Ok(value.to_le_bytes().to_vec())
    }

    #[test]
    fn a_proposal_whose_index_is_proposed_again_is_answered_not_leader() {
        // A leader of an earlier term proposed at 2 and 3; this term's
        // leader appends at 2 again: the old entries were replaced.
        let mut group = group();
        let waiting = |group: &mut Group, index: u64, term: u64| {
            let (sender, receiver) = flume::bounded(1);
            let now = std::time::Instant::now();
            let pending = PendingProposal {
                term: Term(term),
                reply: Reply::Api(sender),
                received: now,
                proposed: now,
            };
            group.wait_for(LogIndex(index), pending);
            receiver
        };
        let first = waiting(&mut group, 1, 1);
        let replaced = [waiting(&mut group, 2, 1), waiting(&mut group, 3, 1)];
        let _new = waiting(&mut group, 2, 2);
        for receiver in &replaced {
            assert!(matches!(receiver.try_recv(), Ok(Err(Error::NotLeader { .. }))));
        }
        assert!(first.try_recv().is_err(), "index 1 still waits");
        let waiting: Vec<_> = group.proposals.iter().map(|(index, p)| (index.0, p.term.0)).collect();
        assert_eq!(waiting, vec![(1, 1), (2, 2)]);
    }

    /// Queues one write in this turn; its answer comes on the receiver.
    fn queue_one_write(group: &mut Group) -> flume::Receiver<Result<Vec<u8>, Error>> {
        let (sender, receiver) = flume::bounded(1);
        group.queued.push(
            bytes::Bytes::from_static(b"w"),
            Reply::Api(sender),
            std::time::Instant::now(),
            None,
        );
        receiver
    }

    #[test]
    fn proposals_still_queued_when_the_group_fails_are_answered_with_the_error() {
        let mut group = group();
        let receiver = queue_one_write(&mut group);
        group.fail_all(Error::GroupRemoved(GroupId(1)));
        assert!(matches!(receiver.try_recv(), Ok(Err(Error::GroupRemoved(GroupId(1))))));
        assert!(group.queued.is_empty());
    }

    #[test]
    fn a_close_waits_for_proposals_still_queued_in_the_turn() {
        // A write queued this turn, then the group closed in the same turn:
        // the write is still to be proposed and answered, so the close
        // waiter must not hear yet.
        let mut group = group();
        let answer = queue_one_write(&mut group);
        let (waiter, closed) = flume::bounded(1);
        group.close(waiter);
        assert!(closed.try_recv().is_err(), "closed with a write still queued");
        group.fail_all(Error::GroupRemoved(GroupId(1)));
        group.notify_if_drained();
        assert!(answer.try_recv().is_ok());
        assert!(
            closed.try_recv().is_ok(),
            "the close waiter hears once the queue is answered"
        );
    }

    #[test]
    fn queued_proposals_keep_their_room_up_to_the_bound_only() {
        let mut queued = QueuedProposals::default();
        for count in [QUEUED_PROPOSALS_KEPT_MAX, QUEUED_PROPOSALS_KEPT_MAX + 1] {
            for _ in 0..count {
                let (sender, _receiver) = flume::bounded(1);
                queued.push(bytes::Bytes::new(), Reply::Api(sender), std::time::Instant::now(), None);
            }
            let room = (queued.commands.as_ptr(), queued.commands.capacity());
            queued.commands.clear();
            queued.waiting.clear();
            queued.keep_room_within_bound();
            if count <= QUEUED_PROPOSALS_KEPT_MAX {
                // The next turn's proposals go where this turn's went.
                assert_eq!((queued.commands.as_ptr(), queued.commands.capacity()), room);
                assert!(queued.waiting.capacity() >= count);
            } else {
                assert_eq!(queued.commands.capacity(), 0);
                assert_eq!(queued.waiting.capacity(), 0);
            }
        }
    }

    #[test]
    fn one_batch_applies_each_sequence_once_and_refuses_what_the_session_cannot_vouch_for() {
        one_batch_applies_each_sequence_once(group());
    }

    #[test]
    fn on_an_apply_lane_one_batch_applies_each_sequence_once_and_answers_after_it_applied() {
        let group = group_of(Box::new(crate::api::OffShard::new(CommandCounter::default())));
        assert!(
            group.lane.is_some(),
            "an OffShard state machine gets its own apply thread"
        );
        one_batch_applies_each_sequence_once(group);
    }

    #[test]
    fn a_batch_applied_in_two_parts_split_anywhere_is_answered_as_the_whole() {
        for split in 0..=SESSION_BATCH.len() {
            let answers = apply_batch_in_two(&mut group(), &SESSION_BATCH, Some(split));
            assert_eq!(answers, session_batch_answers(), "split at {split}");
            let laned = group_of(Box::new(crate::api::OffShard::new(CommandCounter::default())));
            let answers = apply_batch_in_two(&mut { laned }, &SESSION_BATCH, Some(split));
            assert_eq!(answers, session_batch_answers(), "on a lane, split at {split}");
        }
    }

    /// A batch of one session's writes, retried and out of order.
    const SESSION_BATCH: [LoggedCommand<'static>; 8] = [
        write(1, 1, b"before registration"),
        LoggedCommand::Register {
            leader_time_ms: 1_000,
            session: 7,
            timeout_ms: 60_000,
        },
        write(1, 1, b"a"),
        write(1, 1, b"a"),
        write(1, 1, b"another command"),
        write(2, 2, b"b"),
        write(1, 2, b"a"),
        LoggedCommand::Plain {
            leader_time_ms: 1_000,
            data: b"embedded",
        },
    ];

    /// What [`SESSION_BATCH`] is answered with.
    fn session_batch_answers() -> Vec<Result<Vec<u8>, Error>> {
        vec![
            Err(Error::SessionExpired),
            Ok(Vec::new()),
            count(1),
            count(1),
            Err(Error::StaleSequence),
            count(2),
            Err(Error::StaleSequence),
            count(3),
        ]
    }

    #[test]
    fn committed_entries_lent_by_the_core_are_applied_and_answered_on_the_shard_and_on_a_lane() {
        for laned in [false, true] {
            let mut group = match laned {
                false => group(),
                true => group_of(Box::new(crate::api::OffShard::new(CommandCounter::default()))),
            };
            while group.core.role() != Role::Leader {
                group.core.tick();
            }
            let mut answers = Vec::new();
            for command in &SESSION_BATCH {
                let (index, term) = group.core.propose(vec![encode_command(command)]).expect("leader");
                let (sender, receiver) = flume::bounded(1);
                let now = std::time::Instant::now();
                let pending = PendingProposal {
                    term,
                    reply: Reply::Api(sender),
                    received: now,
                    proposed: now,
                };
                group.wait_for(index, pending);
                answers.push(receiver);
            }
            let mut metrics = ShardMetrics::new(0);
            let mut applied = 0;
            while group.core.has_ready() {
                let ready = group.core.take_ready_lending();
                assert!(ready.committed_entries.is_empty(), "lent, not cloned");
                if let Some(last) = ready.entries.last() {
                    group.core.on_persisted(last.index, last.term);
                }
                if let Some(range) = ready.committed {
                    applied += range.count();
                    group.apply_committed(range, &mut metrics, None);
                }
                group.core.recycle(ready);
            }
            group.drain_lane(&mut metrics);
            assert_eq!(
                applied,
                1 + SESSION_BATCH.len() as u64,
                "the leader's no-op and the batch"
            );
            let answers: Vec<_> = answers.iter().map(|r| r.try_recv().expect("answered")).collect();
            assert_eq!(answers, session_batch_answers(), "laned: {laned}");
            assert_eq!(group.applied_index(), LogIndex(applied));
        }
    }

    fn one_batch_applies_each_sequence_once(mut group: Group) {
        let answers = apply_batch(&mut group, &SESSION_BATCH);
        assert_eq!(answers, session_batch_answers());
    }

    #[test]
    fn reads_confirmed_out_of_order_get_their_indexes_and_only_those_applied_are_answered_in_order() {
        let mut group = group();
        // Nothing applied yet: a read of index 0 may be served, one of 1 waits.
        assert_eq!(group.applied_index(), LogIndex(0));
        let applied = group.state_machine.on_query(&[]);
        let mut answers = Vec::new();
        for context in 1..=4 {
            let (sender, receiver) = flume::bounded(1);
            group.reads.push(PendingRead {
                context,
                index: None,
                query: bytes::Bytes::new(),
                index_only: false,
                reply: Reply::Api(sender),
                received: std::time::Instant::now(),
            });
            answers.push(receiver);
        }
        // Out of order, one beyond what is applied, one of no read here.
        let state = |context, index| ReadState {
            context,
            index: LogIndex(index),
        };
        group.confirm_reads(&[state(3, 0), state(1, 0), state(4, 1), state(9, 0)]);
        let indexes: Vec<_> = group.reads.iter().map(|r| (r.context, r.index.map(|i| i.0))).collect();
        assert_eq!(indexes, vec![(1, Some(0)), (2, None), (3, Some(0)), (4, Some(1))]);
        assert_eq!(group.serve_reads(), 2);
        let waiting: Vec<_> = group.reads.iter().map(|r| r.context).collect();
        assert_eq!(waiting, vec![2, 4], "the reads not served wait, in order");
        assert_eq!(answers[0].try_recv(), Ok(Ok(applied.clone())));
        assert_eq!(answers[2].try_recv(), Ok(Ok(applied)));
        assert!(answers[1].try_recv().is_err() && answers[3].try_recv().is_err());
    }
}
