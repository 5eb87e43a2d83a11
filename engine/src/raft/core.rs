//! `RaftCore`: one group's consensus state machine. It routes inputs to the
//! role-specific handlers (`election.rs`, `replication.rs`, `reads.rs`,
//! `membership.rs`, `snapshot.rs`) and collects their outputs into a
//! [`Ready`]. It never touches a clock, a socket or a file.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::config::RaftConfig;
use super::error::{ConfigError, RaftError};
use super::log::RaftLog;
use super::membership::Membership;
use super::message::{AppendOutcome, Message, MessageBody};
use super::progress::Progress;
use super::reads::ReadTracker;
use super::ready::{CommittedRange, Ready};
use super::rng::SeededRng;
use super::types::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, NodeId, Role, SnapshotMeta, SoftState, Term,
    ENTRY_OVERHEAD_BYTES,
};

/// Bound on the committed-entry bytes handed out by one [`Ready`].
pub const APPLY_BATCH_BYTES_MAX: u64 = 4 << 20;

/// Bound, in elements, on each vector of a [`Ready`] that
/// [`RaftCore::recycle`] keeps for the next one (a bigger one, e.g. a long
/// committed backlog's, is dropped rather than held by an idle group).
pub const READY_VECTOR_KEPT_MAX: usize = 64;

/// Bound on the emptied append entry vectors a core keeps for its next
/// appends (one per peer covers a round of appends to every peer).
pub const SPARE_APPEND_VECTORS_MAX: usize = 8;

/// What a node recovered from its storage, or the bootstrap state of a new group.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// The group's configuration before any configuration entry (used when
    /// there is no snapshot).
    pub configuration: Configuration,
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The latest persisted snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Persisted entries following the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// A snapshot the runtime loaded into the state machine while `entries`
    /// still hold the entries it covers (nothing was compacted): they count
    /// as committed and applied, and are never handed out to apply again.
    /// Ignored unless `entries` hold its index with its term.
    pub loaded_snapshot: Option<SnapshotMeta>,
}

/// A leadership transfer under way (Raft thesis §3.10).
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub target: NodeId,
    pub elapsed_ticks: u64,
}

/// The consensus core of one group on one node.
#[derive(Debug)]
pub struct RaftCore {
    pub(super) config: RaftConfig,
    pub(super) rng: SeededRng,
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) membership: Membership,
    /// The newest snapshot this node holds (what it sends to lagging peers).
    pub(super) snapshot: Option<SnapshotMeta>,
    pub(super) now_ticks: u64,
    pub(super) election_elapsed_ticks: u64,
    pub(super) randomized_election_timeout_ticks: u64,
    pub(super) heartbeat_elapsed_ticks: u64,
    /// Ticks since a live leader was heard from (0 at start: a restarted node
    /// may have acknowledged a leader's lease just before it crashed).
    pub(super) ticks_since_leader_heard: u64,
    pub(super) votes: BTreeMap<NodeId, bool>,
    pub(super) progress: BTreeMap<NodeId, Progress>,
    pub(super) transfer: Option<Transfer>,
    /// Index of the latest configuration entry a leader appended.
    pub(super) pending_configuration_index: LogIndex,
    pub(super) uncommitted_bytes: u64,
    pub(super) reads: ReadTracker,
    pub(super) out: Ready,
    /// Emptied entry vectors of appends this core sent, handed back with
    /// their Ready (`recycle`) for the next appends to fill (at most
    /// [`SPARE_APPEND_VECTORS_MAX`], each of at most
    /// [`READY_VECTOR_KEPT_MAX`] elements).
    pub(super) spare_append_entries: Vec<Vec<Entry>>,
    /// The emptied entry vector of the last append this core stepped, for
    /// the runtime to take ([`RaftCore::take_received_entries_vector`]) and
    /// fill with the next received append (one vector, of at most
    /// [`READY_VECTOR_KEPT_MAX`] elements).
    pub(super) received_entries: Option<Vec<Entry>>,
    /// Quiet: an idle group that does not tick (`quiesce.rs`).
    pub(super) quiesced: bool,
    last_hard_state: HardState,
    last_soft_state: SoftState,
}

impl RaftCore {
    /// A core from its configuration and what storage recovered.
    pub fn new(config: RaftConfig, initial: InitialState) -> Result<RaftCore, ConfigError> {
        config.validate()?;
        let (snapshot_index, snapshot_term) = initial
            .snapshot
            .as_ref()
            .map_or((LogIndex(0), Term(0)), |s| (s.index, s.term));
        let mut log = RaftLog::recovered(snapshot_index, snapshot_term, initial.entries);
        log.commit_to(initial.hard_state.commit_index.max(snapshot_index));
        let mut snapshot = initial.snapshot.clone();
        if let Some(loaded) = initial.loaded_snapshot {
            let newer = snapshot.as_ref().is_none_or(|s| s.index < loaded.index);
            if newer && log.matches(loaded.index, loaded.term) {
                // A snapshot covers only committed entries.
                log.commit_to(loaded.index);
                log.applied_to(loaded.index);
                snapshot = Some(loaded);
            }
        }
        let base = initial
            .snapshot
            .as_ref()
            .map_or(initial.configuration.clone(), |s| s.configuration.clone());
        let mut membership = Membership::new(snapshot_index, base);
        for entry in log.iter() {
            if let EntryPayload::Configuration(conf) = &entry.payload {
                membership.appended(entry.index, (**conf).clone());
            }
        }
        let soft = SoftState {
            role: Role::Follower,
            term: initial.hard_state.term,
            leader: None,
        };
        let mut core = RaftCore {
            rng: SeededRng::new(config.seed),
            term: initial.hard_state.term,
            vote: initial.hard_state.vote,
            log,
            role: Role::Follower,
            leader: None,
            membership,
            snapshot,
            now_ticks: 0,
            election_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            ticks_since_leader_heard: 0,
            quiesced: false,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transfer: None,
            pending_configuration_index: LogIndex(0),
            uncommitted_bytes: 0,
            reads: ReadTracker::default(),
            out: Ready::default(),
            spare_append_entries: Vec::new(),
            received_entries: None,
            last_hard_state: initial.hard_state,
            last_soft_state: soft,
            config,
        };
        core.reset_election_timeout();
        Ok(core)
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        if self.quiesced {
            return;
        }
        if self.role == Role::Leader {
            self.ticks_since_leader_heard = 0;
            self.tick_leader();
        } else {
            self.ticks_since_leader_heard = self.ticks_since_leader_heard.saturating_add(1);
            self.tick_election();
        }
    }

    /// Handles a message from another core of the group.
    pub fn step(&mut self, message: Message) {
        if message.group != self.config.group || message.to != self.config.id || message.from == self.config.id {
            return;
        }
        if self.quiesced && !self.keeps_quiet(&message) {
            self.wake();
        }
        if !self.step_term(&message) {
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::Candidate | Role::PreCandidate => self.step_candidate(message),
            Role::Follower => self.step_follower(message),
        }
    }

    /// Proposes application commands; on success returns the index of the
    /// first and the term they were appended in (they take consecutive indexes).
    pub fn propose(&mut self, mut payloads: Vec<Bytes>) -> Result<(LogIndex, Term), RaftError> {
        self.propose_from(&mut payloads)
    }

    /// As [`propose`](Self::propose), taking the commands out of
    /// `payloads`: it is left empty whatever the answer, its room the
    /// caller's to fill again (the runtime keeps one per group). Straight
    /// from the commands into the log: no vector of payloads per proposal,
    /// no payload clone to size an entry.
    pub fn propose_from(&mut self, payloads: &mut Vec<Bytes>) -> Result<(LogIndex, Term), RaftError> {
        let bytes = payloads.iter().map(|p| p.len() as u64 + ENTRY_OVERHEAD_BYTES).sum();
        if let Err(error) = self.admit_proposal(bytes) {
            payloads.clear();
            return Err(error);
        }
        Ok(self.append_admitted(payloads.drain(..).map(EntryPayload::Normal)))
    }

    /// Records that entries up to (`index`, `term`) are durable (a no-op for
    /// stale reports, e.g. of entries replaced since).
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if self.log.persisted_to(index, term) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Gives up leadership (or a candidacy) in the current term and stays a
    /// follower that knows no leader: the runtime's fail-stop when this
    /// node's storage failed and it can no longer promise anything. Reads
    /// in flight are dropped (they appear in the next [`Ready`]). The term
    /// and vote do not change, so nothing new needs persisting.
    pub fn step_down(&mut self) {
        if self.role == Role::Follower && self.leader.is_none() {
            return;
        }
        let term = self.term;
        self.become_follower(term, None);
    }

    /// Takes everything the runtime must do now, the committed entries
    /// cloned into `committed_entries`.
    pub fn take_ready(&mut self) -> Ready {
        let mut ready = self.take_ready_lending();
        if let Some(range) = ready.committed {
            let (front, back) = self.log.committed_entries(range);
            ready.committed_entries.reserve_exact(front.len() + back.len());
            ready.committed_entries.extend(front.iter().chain(back).cloned());
        }
        ready
    }

    /// [`take_ready`](Self::take_ready) with the committed entries left in
    /// the log: `committed` says which they are, and
    /// [`committed_entries`](Self::committed_entries) lends them, so that
    /// a runtime that applies them in place clones none (a clone and a
    /// drop of every payload's reference count on every node).
    pub fn take_ready_lending(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.start_read_round_if_needed();
        }
        let mut ready = std::mem::take(&mut self.out);
        let hard_state = self.hard_state();
        if hard_state != self.last_hard_state {
            self.last_hard_state = hard_state;
            ready.hard_state = Some(hard_state);
        }
        let soft_state = self.soft_state();
        if soft_state != self.last_soft_state {
            self.last_soft_state = soft_state;
            ready.soft_state = Some(soft_state);
        }
        // `entries` and `committed_entries` are empty here: the vectors of
        // an earlier Ready handed back by `recycle`, or new ones.
        ready.truncate_from = self.log.take_unpersisted_into(&mut ready.entries);
        ready.committed = self.log.take_committed_range(APPLY_BATCH_BYTES_MAX);
        ready
    }

    /// The entries of a Ready's `committed` range, in order, as two slices
    /// (the log is a ring; the second is empty unless the range wraps).
    ///
    /// The runtime applies them before it next steps or compacts this
    /// core: the log keeps them until then (the core compacts only up to
    /// a snapshot of what the state machine has applied, and committed
    /// entries are never truncated; an installed snapshot comes from a
    /// step). Panics if the log no longer holds them all.
    pub fn committed_entries(&self, range: CommittedRange) -> (&[Entry], &[Entry]) {
        self.log.committed_entries(range)
    }

    /// Hands back a [`Ready`] the runtime has done with (or any part of one,
    /// e.g. its `persisted_messages` once sent): its vectors are emptied and
    /// kept for the next Ready, so that a group's every Ready does not
    /// allocate its outbox, entries and committed entries anew. A vector is
    /// kept only if the next Ready's is still empty and its capacity is at
    /// most [`READY_VECTOR_KEPT_MAX`] elements; the rest is dropped. The
    /// entry vectors of the appends in `messages` are kept too, for the
    /// next appends (up to [`SPARE_APPEND_VECTORS_MAX`]).
    /// Changes nothing the core does.
    pub fn recycle(&mut self, ready: Ready) {
        fn keep<T>(slot: &mut Vec<T>, mut spare: Vec<T>) {
            if slot.is_empty() && slot.capacity() < spare.capacity() && spare.capacity() <= READY_VECTOR_KEPT_MAX {
                spare.clear();
                *slot = spare;
            }
        }
        let Ready {
            entries,
            mut messages,
            persisted_messages,
            committed_entries,
            read_states,
            dropped_reads,
            ..
        } = ready;
        // The appends' entry vectors, emptied, for the next appends.
        for message in &mut messages {
            if self.spare_append_entries.len() >= SPARE_APPEND_VECTORS_MAX {
                break;
            }
            if let MessageBody::AppendEntries { entries, .. } = &mut message.body {
                if entries.capacity() > 0 && entries.capacity() <= READY_VECTOR_KEPT_MAX {
                    let mut spare = std::mem::take(entries);
                    spare.clear();
                    self.spare_append_entries.push(spare);
                }
            }
        }
        let out = &mut self.out;
        keep(&mut out.entries, entries);
        keep(&mut out.messages, messages);
        keep(&mut out.persisted_messages, persisted_messages);
        keep(&mut out.committed_entries, committed_entries);
        keep(&mut out.read_states, read_states);
        keep(&mut out.dropped_reads, dropped_reads);
    }

    /// The entry vector of the last `AppendEntries` this core stepped,
    /// emptied (its entries moved into the log), if its capacity is at most
    /// [`READY_VECTOR_KEPT_MAX`]: the runtime fills it with the next append
    /// it receives instead of allocating one per message. The core keeps
    /// only the last one. Changes nothing the core does.
    pub fn take_received_entries_vector(&mut self) -> Option<Vec<Entry>> {
        self.received_entries.take()
    }

    /// True if [`take_ready`](Self::take_ready) would return work.
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty()
            || self.hard_state() != self.last_hard_state
            || self.soft_state() != self.last_soft_state
            || self.log.has_unhanded_entries()
            || self.log.committed() > self.log.applied()
            || (self.role == Role::Leader && self.reads.needs_round())
    }

    // ----- observers -----

    /// This node.
    pub fn id(&self) -> NodeId {
        self.config.id
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The leader this node follows (itself when leading), if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Highest committed index known.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed()
    }
    /// Highest index handed out for applying.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied()
    }
    /// Index of the last entry.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// Index of the first entry held in memory: one past the point the log
    /// was compacted to (1 if never compacted).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }
    /// Index of the last entry known durable here.
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted()
    }
    /// Term of the entry at `index`, if held.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }
    /// Size in bytes of the entry at `index` (`Entry::size_bytes`), if held.
    pub fn entry_bytes(&self, index: LogIndex) -> Option<u64> {
        self.log.entry(index).map(|entry| entry.size_bytes())
    }
    /// The configuration in force (the latest appended, Raft thesis §4.1).
    pub fn configuration(&self) -> &Configuration {
        self.membership.current()
    }
    /// The leader's view of each peer (empty unless leading).
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }
    /// The term, vote and commit index as they stand (not necessarily persisted).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit_index: self.log.committed(),
        }
    }
    /// Role, term and leader.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }
    /// The newest snapshot held, if any.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }
    /// The configuration this core runs with.
    pub fn config(&self) -> &RaftConfig {
        &self.config
    }

    // ----- routing -----

    /// The term rules common to every role (Raft §5.1, thesis §9.6, §6.2).
    /// Returns false when the message is fully handled.
    fn step_term(&mut self, m: &Message) -> bool {
        if m.term > self.term {
            if let MessageBody::RequestVote {
                leadership_transfer, ..
            } = m.body
            {
                // The leader itself asking for votes has lost its leadership
                // (it restarted): no live leader to protect.
                if !leadership_transfer && self.in_leader_lease() && self.leader != Some(m.from) {
                    // A live leader was heard from: this candidate is likely
                    // partitioned from it (thesis §4.2.3). Do not disrupt.
                    return false;
                }
            }
            match &m.body {
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
            return true;
        }
        if m.term < self.term {
            match &m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    // Tell a stale leader about the newer term so it steps down.
                    self.send(
                        m.from,
                        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
                            match_index: LogIndex(0),
                        }),
                    );
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.send(
                        m.from,
                        MessageBody::RequestVoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return false;
        }
        true
    }

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum && self.ticks_since_leader_heard < self.config.election_timeout_ticks
    }

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntriesResponse(outcome) => self.handle_append_response(from, outcome),
            MessageBody::HeartbeatResponse { round } => self.handle_heartbeat_response(from, round),
            MessageBody::InstallSnapshotResponse { last_index } => self.handle_snapshot_response(from, last_index),
            MessageBody::RequestVote { .. } => self.handle_vote_request(&m),
            MessageBody::ReadIndex { context } => self.peer_read(context, from),
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                // Two leaders in one term would break Raft §5.2; never happens.
                panic!(
                    "leader {} of term {} got {} from {from} in the same term",
                    self.config.id,
                    self.term,
                    m.body.kind()
                );
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match &m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::RequestVoteResponse { pre_vote, granted }
                if *pre_vote == (self.role == Role::PreCandidate) =>
            {
                self.handle_vote_response(m.from, *granted);
            }
            MessageBody::RequestVote { .. } => self.handle_vote_request(&m),
            MessageBody::ReadIndex { context } => {
                let context = *context;
                self.send(m.from, MessageBody::ReadIndexResponse { context, index: None });
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(from);
                self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            MessageBody::Heartbeat {
                commit_index,
                round,
                quiesce,
            } => {
                self.heard_from_leader(from);
                self.log.commit_to(commit_index);
                self.send(from, MessageBody::HeartbeatResponse { round });
                if quiesce {
                    self.follower_may_quiesce();
                }
            }
            MessageBody::InstallSnapshot { meta } => {
                self.heard_from_leader(from);
                self.handle_install_snapshot(from, meta);
            }
            MessageBody::RequestVote { .. } => self.handle_vote_request(&m),
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::ReadIndexResponse { context, index } => match index {
                Some(index) => self.out.read_states.push(super::types::ReadState { context, index }),
                None => self.out.dropped_reads.push(context),
            },
            MessageBody::ReadIndex { context } => {
                self.send(from, MessageBody::ReadIndexResponse { context, index: None });
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed_ticks = 0;
        self.ticks_since_leader_heard = 0;
        self.leader = Some(from);
    }

    // ----- role changes -----

    pub(super) fn reset_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        let mut timeout = self.rng.range(base, 2 * base);
        if self.config.election_priority > 0 {
            let lag = u64::from(super::config::ELECTION_PRIORITY_MAX - self.config.election_priority);
            timeout += lag * base / 2;
        }
        self.randomized_election_timeout_ticks = timeout;
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.quiesced = false;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_election_timeout();
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.uncommitted_bytes = 0;
        let dropped = self.reads.abandon();
        for (context, requester) in dropped {
            match requester {
                None => self.out.dropped_reads.push(context),
                Some(peer) => self.send(peer, MessageBody::ReadIndexResponse { context, index: None }),
            }
        }
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if leader.is_some() {
            self.ticks_since_leader_heard = 0;
        }
    }

    pub(super) fn become_pre_candidate(&mut self) {
        // Pre-vote changes neither term nor vote (thesis §9.6).
        self.votes.clear();
        self.progress.clear();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.election_elapsed_ticks = 0;
        self.reset_election_timeout();
    }

    pub(super) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.reset(self.term.next());
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
        assert_ne!(self.role, Role::Follower, "only a candidate becomes leader");
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        let next = self.log.last_index().next();
        for peer in self.membership.current().members() {
            if peer != self.config.id {
                let mut progress = Progress::new(next);
                progress.recent_active = true;
                self.progress.insert(peer, progress);
            }
        }
        // No configuration change until this term's no-op (the next index)
        // is committed (thesis §4.1, the single-server change bug fix): only
        // then is any change an earlier leader left uncommitted settled.
        self.pending_configuration_index = self.log.last_index().next();
        self.reads.start_term();
        let mut payloads = vec![EntryPayload::Noop];
        if let Some(forced) = self.membership.take_forced() {
            // Make a reset-peers configuration durable and known to followers.
            payloads.push(EntryPayload::Configuration(Box::new(forced)));
        }
        self.append_as_leader(payloads);
        self.broadcast_append();
    }

    // ----- helpers shared by the handlers -----

    /// Queues a message to send at once.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, self.term, body);
        self.out.messages.push(message);
    }

    /// Queues a message to send once everything handed out is durable.
    pub(super) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, self.term, body);
        self.out.persisted_messages.push(message);
    }

    pub(super) fn message(&self, to: NodeId, term: Term, body: MessageBody) -> Message {
        Message {
            group: self.config.group,
            from: self.config.id,
            to,
            term,
            body,
        }
    }

    /// Appends entries at the leader and counts them against the bounds.
    pub(super) fn append_as_leader(&mut self, payloads: impl IntoIterator<Item = EntryPayload>) -> LogIndex {
        let first = self.log.last_index().next();
        let mut index = first;
        for payload in payloads {
            let entry = Entry {
                index,
                term: self.term,
                payload,
            };
            self.uncommitted_bytes += entry.size_bytes();
            if let EntryPayload::Configuration(conf) = &entry.payload {
                self.pending_configuration_index = index;
                self.configuration_appended(index, (**conf).clone());
            }
            self.log.append([entry]);
            index = index.next();
        }
        // A single-voter group commits as soon as its own write is durable.
        self.maybe_commit();
        first
    }

    pub(super) fn propose_payloads(&mut self, payloads: Vec<EntryPayload>) -> Result<(LogIndex, Term), RaftError> {
        let bytes = payloads.iter().map(|p| p.size_bytes() + ENTRY_OVERHEAD_BYTES).sum();
        self.admit_proposal(bytes)?;
        Ok(self.append_admitted(payloads))
    }

    /// Whether a proposal of entries of `bytes` (as `Entry::size_bytes`
    /// counts them) may be appended now.
    fn admit_proposal(&mut self, bytes: u64) -> Result<(), RaftError> {
        self.wake();
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(transfer) = self.transfer {
            return Err(RaftError::TransferInProgress {
                target: transfer.target,
            });
        }
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > self.config.uncommitted_bytes_max {
            return Err(RaftError::Busy {
                uncommitted_bytes: self.uncommitted_bytes,
                bound_bytes: self.config.uncommitted_bytes_max,
            });
        }
        Ok(())
    }

    /// Appends an admitted proposal and sends it to every peer (in the
    /// progress map's order); returns its first index and the term.
    fn append_admitted(&mut self, payloads: impl IntoIterator<Item = EntryPayload>) -> (LogIndex, Term) {
        let first = self.append_as_leader(payloads);
        self.send_append_to_each_peer(false);
        (first, self.term)
    }
}
