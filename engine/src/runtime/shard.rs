//! The shard loop: one glommio executor owning a slice of the groups, their
//! WAL and their connections. Each turn it drains its inbox, steps the cores,
//! proposes what clients sent, and handles every group's Ready: one WAL group
//! commit for all groups' records while AppendEntries go out at once; after
//! the fsync, the persistence-dependent messages; then applies and replies.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coraft_net::schema::{ClientError, ClientRequest, ClientResponse, ReadConsistency};
use coraft_net::Listener;
use coraft_wal::Wal;

use crate::api::{Error, SnapshotView};
use crate::raft::{GroupId, LogIndex, Message, NodeId, RaftError, ReadMode, Role, Term};

use super::clock::TickClock;
use super::codec::{encode_command, stamp_leader_time, LoggedCommand};
use super::events::{ClientProposal, ClientRead, Event, EventQueue};
use super::forward::ClientRoute;
use super::group::{Group, PendingProposal, PendingRead, PENDING_PROPOSALS_MAX, PENDING_READS_MAX};
use super::group_set::{DirtyGroups, GroupSet};
use super::metrics::{AppendTimes, ShardMetrics, TURN_BUDGET};
use super::node::{ApiRequest, GroupStatus, PeerStatus};
use super::reply::Reply;
use super::sessions::wall_clock_ms;
use super::snapshot_store::{SnapshotWriter, StoredSnapshot};
use super::storage::{write_hard_state, write_ready};
use super::transport::Peers;

/// Bound on Ready rounds one group may produce in one turn, and on the
/// rounds of handling readies and durability one turn repeats.
pub const READY_ROUNDS_PER_TURN_MAX: usize = 8;

/// Largest command a proposal may carry: the WAL's default record bound
/// (4 MiB) less the record and command headers, with room to spare (a unit
/// test checks that it fits).
pub const COMMAND_BYTES_MAX: usize = (4 << 20) - 4096;
/// Bound on entry bytes written to the WAL and not yet durable; beyond it new
/// proposals are refused as busy and followers drop appends (the leader
/// resends). Half the WAL's own `pending_bytes_max`, so it is never reached.
pub const WAL_BACKLOG_BYTES_MAX: u64 = 32 << 20;
/// The default of `NodeOptions::request_timeout`: a request waiting longer
/// than this for its outcome is answered with [`Error::Timeout`] (a write's
/// outcome is then unknown: it may still apply).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Every this many ticks, quiet groups too are checked for requests past
/// their timeout (awake groups are checked every tick).
pub const EXPIRE_SCAN_TICKS: u64 = 100;
/// How long shutdown waits for the shard's work on glommio's blocking
/// thread (snapshot loads and writes, received chunks, segment deletion)
/// before the executor exits anyway.
pub const SHUTDOWN_BLOCKING_WAIT: Duration = Duration::from_secs(30);

/// Bound on snapshot requests waiting in one shard for their group's applied
/// entries to be durable; beyond it a request is refused as busy.
pub const PENDING_SNAPSHOTS_MAX: usize = 1024;
/// Bytes a WAL record costs beyond its payload, for the backlog estimate.
const WAL_RECORD_OVERHEAD_BYTES: u64 = 64;

/// Bound on the emptied acknowledgement vectors a shard keeps for the
/// next Readies' (`held_message_vectors`).
const HELD_MESSAGE_VECTORS_MAX: usize = 256;

/// Messages and a persist report waiting for the WAL to be durable up to `lsn`.
struct PersistWaiter {
    lsn: u64,
    group: GroupId,
    last_entry: Option<(LogIndex, Term)>,
    messages: Vec<Message>,
}

/// Bound on the room `queued_groups` keeps from one turn to the next (its
/// length is at most the proposals of one turn, which the shard's event
/// queue bounds).
const QUEUED_GROUPS_KEPT_MAX: usize = 4096;

pub(crate) struct Shard {
    pub node: NodeId,
    pub groups: BTreeMap<GroupId, Group>,
    pub wal: Rc<Wal>,
    pub peers: Peers,
    pub events: Rc<EventQueue>,
    pub listener: Rc<Listener>,
    waiters: VecDeque<PersistWaiter>,
    /// The turn's events, swapped out of `events`; empty between turns,
    /// its room kept for the next turn (`EventQueue::swap_into`).
    inbox: VecDeque<Event>,
    synced_requested_lsn: u64,
    pub(super) failed: Option<Error>,
    pub(super) dirty: DirtyGroups,
    /// The dirty groups being worked through by `handle_readies` (swapped
    /// with `dirty`'s, so that neither allocates turn after turn).
    dirty_taken: Vec<GroupId>,
    /// The groups with proposals queued this turn (`Group::queued`), in the
    /// order they were first queued; a group may appear more than once
    /// (queued again after a full batch went to its core). Empty between
    /// turns, its room kept (up to `QUEUED_GROUPS_KEPT_MAX`).
    queued_groups: Vec<GroupId>,
    /// Emptied vectors of acknowledgements sent after a sync, for the next
    /// Readies' (at most `HELD_MESSAGE_VECTORS_MAX`, each of at most
    /// `READY_VECTOR_KEPT_MAX` messages).
    held_message_vectors: Vec<Vec<Message>>,
    shutting_down: bool,
    pub(super) metrics: ShardMetrics,
    /// Entry bytes written per LSN and not yet durable, oldest first.
    wal_backlog: VecDeque<(u64, u64)>,
    wal_backlog_bytes: u64,
    /// Bytes admitted this turn (proposals and follower appends), not yet written.
    admitted_bytes: u64,
    /// Ticks since each peer node was last heard (any frame, or its
    /// per-tick coalesced heartbeat).
    pub(super) peer_silent_ticks: BTreeMap<NodeId, u64>,
    /// A peer silent this long is unreachable: quiet followers of its groups wake.
    election_timeout_ticks: u64,
    /// Most proposals of one group handed to its core in one call.
    batch_entries_max: usize,
    /// A request waiting longer is answered with a timeout.
    pub(super) request_timeout: Duration,
    /// What a session registered here lives without a write (leader time).
    session_timeout_ms: u64,
    /// Ticks handled.
    ticks: u64,
    /// How many ticks have passed, from the monotonic clock (`clock.rs`).
    clock: TickClock,
    /// Send times of recent appends, for the replication round trip.
    append_times: AppendTimes,
    /// This shard's end of the node's channel mesh (several shards only),
    /// until `run` starts serving it.
    forwarding: Option<(Rc<super::forward::Forwarder>, super::forward::MeshReceivers)>,
    /// Groups that are not quiet: the only ones a tick visits. Every input
    /// that may wake a core marks its group dirty, and handling a dirty group
    /// updates this set.
    pub(super) awake: GroupSet,
    /// The WAL's fault seam, when the node was started with it (tests).
    pub wal_faults: Option<coraft_wal::Faults>,
    /// Snapshot requests waiting until their group's applied entries are
    /// durable here (at most [`PENDING_SNAPSHOTS_MAX`]).
    pub(super) pending_snapshots: Vec<(GroupId, flume::Sender<Result<LogIndex, Error>>)>,
    /// When snapshots are taken and how much log they let go.
    pub(super) snapshot_policy: super::SnapshotPolicy,
    /// Groups whose snapshot policy fired, waiting like `pending_snapshots`
    /// (at most one entry per group).
    pub(super) policy_snapshots: BTreeSet<GroupId>,
    /// Log bytes the groups applied since their snapshots, as counted at
    /// each apply since the last exact count (`shard_snapshot_bound_due`).
    pub(super) log_bytes_since_snapshots: u64,
    /// Snapshots written off the loop, to finish (at most one per group).
    snapshots_written: Rc<RefCell<Vec<SnapshotWritten>>>,
    /// Deleting the WAL segments purges freed, off the loop.
    pub(super) segment_deletion: super::compaction::SegmentDeletion,
    /// Drops what large compactions forget, off this thread.
    releaser: super::release::Releaser,
    /// Snapshot streams to followers and from leaders (`install.rs`).
    pub(super) installs: super::install::Installs,
    /// Answers admin requests (handed to the connection server).
    pub(super) admin: std::sync::Arc<super::admin::AdminService>,
    /// The membership change each group has in flight (at most
    /// `MEMBERSHIP_CHANGES_IN_FLIGHT_MAX` per group).
    pub(super) membership_changes: BTreeMap<GroupId, super::membership::PendingChange>,
    /// Every node's shard addresses this shard knows: the node's options,
    /// then the address books applied from the log (`membership.rs`).
    pub(super) addresses: BTreeMap<NodeId, Vec<std::net::SocketAddr>>,
    /// Groups whose configuration no longer counts this node.
    pub(super) removed_from: BTreeSet<GroupId>,
    /// What creating a group at run time needs (`group_creation.rs`).
    pub(super) creation: Option<super::group_creation::GroupCreation>,
    /// When the last node-level beat went to the peers.
    last_beat: Option<Instant>,
}

/// Answers a client request the shard cannot take now.
pub(crate) fn refuse_busy(request: &ClientRequest, route: &ClientRoute) {
    route.push(busy_response_for(request));
}

/// The busy answer to a client request.
pub(crate) fn busy_response_for(request: &ClientRequest) -> ClientResponse {
    let (client_id, request_id, group) = request_ids(request);
    busy_response(client_id, request_id, group)
}

/// The busy answer to the client request of these ids.
pub(crate) fn busy_response(client_id: u64, request_id: u64, group: u64) -> ClientResponse {
    ClientResponse {
        client_id,
        request_id,
        group,
        leader_hint: None,
        result: Err(ClientError::Busy),
    }
}

/// A client request's (client id, request id or sequence, group).
pub(crate) fn request_ids(request: &ClientRequest) -> (u64, u64, u64) {
    match request {
        ClientRequest::Propose {
            client_id,
            sequence,
            group,
            ..
        } => (*client_id, *sequence, *group),
        ClientRequest::Read {
            client_id,
            request_id,
            group,
            ..
        }
        | ClientRequest::RegisterSession {
            client_id,
            request_id,
            group,
            ..
        } => (*client_id, *request_id, *group),
    }
}

/// How a shard reaches the world: its peers, its listener and, with several
/// shards, its end of the node's channel mesh.
pub(crate) struct Endpoints {
    pub peers: Peers,
    pub listener: Rc<Listener>,
    pub forwarding: Option<(Rc<super::forward::Forwarder>, super::forward::MeshReceivers)>,
    /// Answers the admin requests of this shard's client connections.
    pub admin: std::sync::Arc<super::admin::AdminService>,
}

impl Shard {
    pub fn new(
        shard: usize,
        options: &super::node::NodeOptions,
        groups: BTreeMap<GroupId, Group>,
        wal: Rc<Wal>,
        events: Rc<EventQueue>,
        endpoints: Endpoints,
    ) -> Shard {
        let Endpoints {
            peers,
            listener,
            forwarding,
            admin,
        } = endpoints;
        let node = options.node_id;
        let election_timeout_ticks = options.election_timeout_ticks;
        let dirty: DirtyGroups = groups.keys().copied().collect();
        let awake: GroupSet = groups.keys().copied().collect();
        let peer_silent_ticks = peers.nodes().map(|n| (n, 0)).collect();
        Shard {
            node,
            groups,
            wal,
            peers,
            events,
            listener,
            waiters: VecDeque::new(),
            inbox: VecDeque::new(),
            synced_requested_lsn: 0,
            failed: None,
            dirty,
            shutting_down: false,
            metrics: ShardMetrics::new(shard),
            wal_backlog: VecDeque::new(),
            wal_backlog_bytes: 0,
            dirty_taken: Vec::new(),
            queued_groups: Vec::new(),
            held_message_vectors: Vec::new(),
            admitted_bytes: 0,
            peer_silent_ticks,
            election_timeout_ticks,
            awake,
            batch_entries_max: options.limits.batch_entries_max.max(1),
            request_timeout: options.request_timeout,
            session_timeout_ms: options.session_timeout.as_millis() as u64,
            ticks: 0,
            clock: TickClock::new(options.tick, election_timeout_ticks, Instant::now()),
            append_times: AppendTimes::default(),
            forwarding,
            wal_faults: None,
            pending_snapshots: Vec::new(),
            snapshot_policy: options.snapshot.clone(),
            policy_snapshots: BTreeSet::new(),
            log_bytes_since_snapshots: 0,
            snapshots_written: Rc::new(RefCell::new(Vec::new())),
            segment_deletion: super::compaction::SegmentDeletion::default(),
            releaser: super::release::Releaser::start(
                format!("coraft-{}-{shard}-free", options.node_id),
                options.helper_cores.clone().unwrap_or_default(),
            ),
            installs: super::install::Installs::new(options.snapshot.install_bytes_per_second)
                .with_helper_cores(options.helper_cores.clone()),
            admin,
            membership_changes: BTreeMap::new(),
            addresses: options
                .peers
                .iter()
                .map(|p| (p.id, p.shard_addresses.clone()))
                .collect(),
            removed_from: BTreeSet::new(),
            creation: None,
            last_beat: None,
        }
    }

    /// This shard's index in its node.
    pub(super) fn shard_index(&self) -> usize {
        self.metrics.shard
    }

    /// Runs until shutdown.
    pub async fn run(mut self, bell: glommio::channels::local_channel::LocalReceiver<()>, tick: Duration) {
        let ticker_events = self.events.clone();
        let (node, shard) = (self.node, self.metrics.shard);
        // A timerfd, not a glommio timer per tick (`ticker.rs`: a pending
        // glommio timer costs the executor an allocation per reactor pass
        // and a TIMEOUT and its cancel per sleep).
        let ticker = glommio::spawn_local(super::ticker::tick_forever(
            super::ticker::TickTimer::new(tick),
            tick,
            format!("node {node} shard {shard}"),
            move || {
                let _ = ticker_events.push(Event::Tick);
            },
        ));
        let (forwarder, mesh_server) = match self.forwarding.take() {
            Some((forwarder, receivers)) => {
                let serving = super::forward::serve(forwarder.clone(), receivers, self.events.clone());
                (Some(forwarder), Some(glommio::spawn_local(serving)))
            }
            None => (None, None),
        };
        let server = glommio::spawn_local(super::transport::serve(
            self.listener.clone(),
            self.events.clone(),
            forwarder,
            self.admin.clone(),
        ));
        self.turn();
        while !self.shutting_down {
            if bell.recv().await.is_none() {
                break;
            }
            self.turn();
        }
        ticker.cancel().await;
        server.cancel().await;
        if let Some(mesh_server) = mesh_server {
            mesh_server.cancel().await;
        }
        for (_, reply) in self.pending_snapshots.drain(..) {
            let _ = reply.send(Err(Error::Shutdown));
        }
        for group in self.groups.values_mut() {
            for reply in group.snapshot_waiters.drain(..) {
                let _ = reply.send(Err(Error::Shutdown));
            }
        }
        self.fail_membership_changes(&Error::Shutdown);
        for group in self.groups.values_mut() {
            // What the apply lanes were handed is applied and answered;
            // the lanes' threads end when their groups are dropped.
            group.drain_lane(&mut self.metrics);
        }
        self.finish_removals(true);
        for (&id, group) in self.groups.iter_mut() {
            group.stop_leading_for_shutdown();
            group.fail_all(Error::Shutdown);
            if let Some(hard) = group.hard_states.take_held_back() {
                if self.failed.is_none() {
                    let _ = write_hard_state(&self.wal, id, hard);
                }
            }
        }
        // Work on glommio's blocking thread answers this executor when it
        // ends; an executor gone by then panics that thread ("failed to
        // send response"). Wait for it, within a bound.
        let waiting = Instant::now();
        while let Some(what) = self.blocking_work_in_flight() {
            if waiting.elapsed() > SHUTDOWN_BLOCKING_WAIT {
                log::warn!(
                    "node {} shard {}: shutting down with {what} still on the blocking thread after {:?} \
                     (SHUTDOWN_BLOCKING_WAIT)",
                    self.node,
                    self.metrics.shard,
                    SHUTDOWN_BLOCKING_WAIT
                );
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        self.peers.close().await;
        drop(self.listener);
        match Rc::try_unwrap(self.wal) {
            Ok(wal) => {
                if let Err(error) = wal.close().await {
                    log::warn!("node {}: closing the WAL: {error}", self.node);
                }
            }
            Err(_) => log::warn!(
                "node {}: the WAL is still shared at shutdown; not closed cleanly",
                self.node
            ),
        }
    }

    /// What this shard still runs on glommio's blocking thread, if
    /// anything: a snapshot load, received chunks being written, a
    /// snapshot view being written, a WAL segment deletion pass.
    fn blocking_work_in_flight(&self) -> Option<&'static str> {
        if self.installs.loads_in_flight.get() > 0 {
            return Some("a snapshot load");
        }
        if self.installs.receive_worker_busy() {
            return Some("received snapshot chunks");
        }
        let writing = self.groups.values().filter(|g| g.snapshot_writing).count();
        if writing > self.snapshots_written.borrow().len() {
            return Some("a snapshot being written");
        }
        if self.segment_deletion.is_running() {
            return Some("a WAL segment deletion");
        }
        None
    }

    /// One loop turn: everything queued is handled together.
    fn turn(&mut self) {
        let started = Instant::now();
        let mut inbox = std::mem::take(&mut self.inbox);
        self.events.swap_into(&mut inbox);
        for event in inbox.drain(..) {
            match event {
                // A failed shard is no replica: it hears nothing (fail-stop).
                Event::Raft(message) if self.failed.is_some() => drop(message),
                Event::Raft(message) => {
                    if matches!(message.body, crate::raft::MessageBody::ReadIndex { .. }) {
                        // A follower's read may be answered from the lease.
                        self.catch_up();
                    }
                    self.step(message)
                }
                Event::Client {
                    request,
                    route,
                    received,
                } => self.client_request(request, route, received),
                Event::ClientProposal {
                    proposal,
                    route,
                    received,
                } => self.client_proposal(proposal, route, received),
                Event::ClientRead { read, route, received } => self.client_read(read, route, received),
                Event::Api(request) => self.api_request(request),
                Event::Tick => self.catch_up(),
                Event::PeerHeard(node) => {
                    if let Some(silent) = self.peer_silent_ticks.get_mut(&node) {
                        *silent = 0;
                    }
                }
                Event::Synced(result, elapsed) => self.synced(result, elapsed),
                Event::SnapshotChunk {
                    group,
                    from,
                    term,
                    chunk,
                } => {
                    let _group = crate::logging::group_span(group).entered();
                    self.snapshot_chunk(group, from, term, chunk)
                }
                Event::SnapshotChunkAck { group, from, ack } => {
                    let _group = crate::logging::group_span(group).entered();
                    self.snapshot_chunk_ack(group, from, ack)
                }
            }
        }
        self.inbox = inbox;
        self.collect_lanes();
        self.finish_removals(false);
        // Whatever waited in the inbox was stepped first (a heartbeat that
        // arrived during a stall is evidence its leader lived then); now
        // the cores learn how long this shard was away, even if a full
        // queue refused the tick event. Reads read the clock themselves.
        self.catch_up();
        self.propose_queued_groups();
        // Snapshots prepared off the thread go in before the groups' Readies.
        self.finish_loads();
        // Durability reported to a core can advance its commit at once.
        for _ in 0..READY_ROUNDS_PER_TURN_MAX {
            self.handle_readies();
            self.release_durable();
            if self.dirty.is_empty() {
                break;
            }
        }
        self.finish_snapshot_writes();
        self.shard_snapshot_bound_due();
        self.take_pending_snapshots();
        if self.failed.is_none() {
            self.segment_deletion
                .maybe_start(&self.wal, self.node, self.metrics.shard);
        }
        self.advance_membership_changes();
        self.pump_installs();
        if !self.dirty.is_empty() {
            // Work is left after the bounded rounds: come back at once rather
            // than at the next tick.
            self.events.ring();
        }
        self.peers.flush(false);
        self.request_sync();
        // What was admitted has been written (and counted in the backlog).
        self.admitted_bytes = 0;
        let elapsed = started.elapsed();
        self.metrics.turns += 1;
        ShardMetrics::record(&mut self.metrics.turn_us, elapsed);
        if elapsed > TURN_BUDGET {
            self.metrics.stalls += 1;
            log::warn!(
                "node {} shard {}: a loop turn took {elapsed:?} (budget {TURN_BUDGET:?})",
                self.node,
                self.metrics.shard
            );
        }
    }

    /// Admits `bytes` more into this turn's WAL writes, if the backlog allows.
    fn admit(&mut self, bytes: u64) -> bool {
        if self.wal_backlog_bytes + self.admitted_bytes + bytes > WAL_BACKLOG_BYTES_MAX {
            return false;
        }
        self.admitted_bytes += bytes;
        true
    }

    fn step(&mut self, message: Message) {
        self.metrics.raft_messages_received += 1;
        if let crate::raft::MessageBody::AppendEntriesResponse(crate::raft::AppendOutcome::Accepted { match_index }) =
            message.body
        {
            let acknowledged = self
                .append_times
                .acknowledged(message.group.0, message.from.0, match_index.0);
            if let Some(round_trip) = acknowledged {
                ShardMetrics::record(&mut self.metrics.replication_us, round_trip);
            }
        }
        if let crate::raft::MessageBody::AppendEntries { entries, .. } = &message.body {
            let bytes: u64 = entries.iter().map(|e| e.size_bytes() + WAL_RECORD_OVERHEAD_BYTES).sum();
            if bytes > 0 && !self.admit(bytes) {
                // Back-pressure on the leader: it resends once we catch up.
                self.metrics.raft_messages_dropped += 1;
                return;
            }
        }
        let group_id = message.group;
        let from = message.from;
        if let Some(group) = self.groups.get_mut(&group_id) {
            // A peer's message never crashes the shard: one that breaks the
            // protocol is dropped, counted and logged (`violations.rs`). A
            // snapshot is installed only from a complete, verified stream
            // (`install.rs`), never from a bare InstallSnapshot message.
            let stepped = match message.body {
                crate::raft::MessageBody::InstallSnapshot { .. } => Err(crate::raft::ProtocolViolation {
                    sender: from,
                    group: group_id,
                    message_kind: message.body.kind(),
                    kind: crate::raft::ViolationKind::SnapshotNotSupported,
                }),
                _ => group.core.step_checked(message),
            };
            // The append's emptied vector, for the connections' next one.
            if let Some(entries) = group.core.take_received_entries_vector() {
                self.events.received_entries.give_back(entries);
            }
            match stepped {
                Ok(()) => {
                    self.dirty.insert(group_id);
                }
                Err(violation) => self.events.violations.record(from, &violation),
            }
        }
    }

    /// Makes the ticks the monotonic clock says are due (usually none or
    /// one; after a stall, the ones it missed, up to
    /// `CATCH_UP_ELECTION_TIMEOUTS_MAX` election timeouts), then sends every
    /// peer the node-level beat and wakes the quiet followers of a peer that
    /// stayed silent for an election timeout.
    fn catch_up(&mut self) {
        let due = self.clock.due(Instant::now());
        if due.make == 0 {
            return;
        }
        if due.make > 1 || due.dropped > 0 {
            self.metrics.ticks_made_up += due.make - 1;
            log::debug!(
                "node {} shard {}: making up {} missed ticks ({} past the bound dropped)",
                self.node,
                self.metrics.shard,
                due.make - 1,
                due.dropped
            );
        }
        if self.failed.is_some() {
            // Fail-stop: this shard no longer counts as a replica, so it
            // neither ticks its cores nor beats to its peers.
            return;
        }
        for _ in 0..due.make {
            self.tick();
        }
        self.beat_and_watch_peers(due.make);
        self.snapshot_intervals_due(Instant::now());
    }

    /// One tick of the groups that are awake (a quiet group's tick would do
    /// nothing), and of the timeouts of their requests.
    fn tick(&mut self) {
        self.ticks += 1;
        for &id in &self.awake {
            if let Some(group) = self.groups.get_mut(&id) {
                group.core.tick();
                self.dirty.insert(id);
                self.metrics.requests_timed_out += group.expire(self.request_timeout);
            }
        }
        if self.ticks.is_multiple_of(EXPIRE_SCAN_TICKS) {
            // A quiet group may still hold a request of this node's (a
            // follower's read whose ReadIndex was lost before the group went
            // quiet): look at every group now and then.
            for group in self.groups.values_mut() {
                if group.core.is_quiesced() {
                    self.metrics.requests_timed_out += group.expire(self.request_timeout);
                }
            }
        }
    }

    /// Sends every peer the node-level beat, counts `ticks` more of each
    /// peer's silence, and wakes the quiet followers of a peer whose silence
    /// just reached an election timeout.
    fn beat_and_watch_peers(&mut self, ticks: u64) {
        self.peers.flush(true);
        // Ticks made up after this shard stalled say nothing of a peer: its
        // beats may be waiting unread in the socket. Judged on them, every
        // stall of this shard longer than an election timeout woke every
        // quiet follower here as if its leader were gone, and elections
        // followed with the leaders alive (seen as leaders moving away from
        // where `coraft-admin transfer`/`rebalance` put them, under load).
        // Count one tick of silence per reading of the clock.
        let ticks = ticks.min(1);
        let now = Instant::now();
        if let Some(last) = self.last_beat.replace(now) {
            ShardMetrics::record(&mut self.metrics.beat_interval_us, now.saturating_duration_since(last));
        }
        let mut unreachable = Vec::new();
        for (&node, silent) in self.peer_silent_ticks.iter_mut() {
            let before = *silent;
            *silent += ticks;
            if before < self.election_timeout_ticks && *silent >= self.election_timeout_ticks {
                unreachable.push(node);
            }
        }
        for node in unreachable {
            log::info!(
                "node {} shard {}: peer {node} silent for {} ticks; waking the groups it leads",
                self.node,
                self.metrics.shard,
                self.election_timeout_ticks
            );
            for (&id, group) in self.groups.iter_mut() {
                if group.core.is_quiesced() {
                    group.core.leader_unreachable(node);
                    if !group.core.is_quiesced() {
                        self.dirty.insert(id);
                    }
                }
            }
        }
    }

    fn reject(&mut self, reply: Reply, group: Option<GroupId>, error: Error) {
        self.metrics.proposals_refused += 1;
        let group = group.and_then(|g| self.groups.get(&g));
        reply.send(Err(error), group.and_then(|g| g.leader_hint()));
    }

    fn client_request(&mut self, request: ClientRequest, route: ClientRoute, received: Instant) {
        let (client_id, request_id, group) = request_ids(&request);
        let reply = Reply::Client {
            route,
            client_id,
            request_id,
            group,
        };
        match request {
            ClientRequest::Propose {
                session,
                sequence,
                lowest_unanswered,
                payload,
                ..
            } => {
                // The leader's clock goes into the log: sessions expire by it.
                let command = encode_command(&LoggedCommand::Session {
                    leader_time_ms: wall_clock_ms(),
                    session,
                    sequence,
                    lowest_unanswered,
                    data: &payload,
                });
                // The payload was just read: its CRC is cheap now (`crc_hints.rs`).
                let data_crc = super::crc_hints::data_crc(&payload);
                self.queue_proposal(GroupId(group), command, reply, received, data_crc);
            }
            ClientRequest::RegisterSession { session, .. } => {
                let command = encode_command(&LoggedCommand::Register {
                    leader_time_ms: wall_clock_ms(),
                    session,
                    timeout_ms: self.session_timeout_ms,
                });
                self.queue_proposal(GroupId(group), command, reply, received, None);
            }
            ClientRequest::Read {
                payload,
                consistency: ReadConsistency::Stale,
                ..
            } => self.read_stale(GroupId(group), payload.into(), reply),
            ClientRequest::Read {
                payload,
                consistency: ReadConsistency::Linearizable,
                ..
            } => self.read(GroupId(group), payload.into(), false, reply, received),
        }
    }

    /// A client's read taken off this shard's connection (`ClientRead`).
    fn client_read(&mut self, read: ClientRead, route: ClientRoute, received: Instant) {
        let ClientRead {
            client_id,
            request_id,
            group,
            query,
            stale,
        } = read;
        let reply = Reply::Client {
            route,
            client_id,
            request_id,
            group,
        };
        if stale {
            self.read_stale(GroupId(group), query, reply)
        } else {
            self.read(GroupId(group), query, false, reply, received)
        }
    }

    /// A client's write read off this shard's connection: stamped with the
    /// leader's clock (sessions expire by it) and queued as it came.
    fn client_proposal(&mut self, proposal: ClientProposal, route: ClientRoute, received: Instant) {
        let ClientProposal {
            client_id,
            sequence,
            group,
            mut command,
            data_crc,
        } = proposal;
        let reply = Reply::Client {
            route,
            client_id,
            request_id: sequence,
            group,
        };
        stamp_leader_time(&mut command, wall_clock_ms());
        self.queue_proposal(GroupId(group), command.freeze(), reply, received, data_crc);
    }

    /// Queues a write in its group (`Group::queued`), handed to the core
    /// at the end of the turn with the group's others, or at once when the
    /// batch is full. `data_crc`: its session data's CRC if computed where
    /// the bytes were hot (`crc_hints.rs`).
    fn queue_proposal(
        &mut self,
        group_id: GroupId,
        command: Bytes,
        reply: Reply,
        received: Instant,
        data_crc: Option<u32>,
    ) {
        if let Some(error) = &self.failed {
            return self.reject(reply, None, error.clone());
        }
        // `command` carries the session header; the bound is on the caller's bytes.
        let data_bytes = super::codec::decode_command(&command).map_or(command.len(), |c| c.data().len());
        if data_bytes > COMMAND_BYTES_MAX {
            let error = Error::TooLarge {
                bytes: data_bytes,
                bound: "COMMAND_BYTES_MAX",
                bound_bytes: COMMAND_BYTES_MAX,
            };
            return self.reject(reply, Some(group_id), error);
        }
        if !self.admit(command.len() as u64 + WAL_RECORD_OVERHEAD_BYTES) {
            return self.reject(
                reply,
                Some(group_id),
                Error::Busy {
                    bound: "WAL_BACKLOG_BYTES_MAX",
                },
            );
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            let error = self.missing_group(group_id);
            return self.reject(reply, None, error);
        };
        if group.closed {
            return self.reject(reply, Some(group_id), Error::Shutdown);
        }
        if group.core.role() != Role::Leader {
            let hint = group.leader_hint();
            return self.reject(reply, Some(group_id), Error::NotLeader { leader_hint: hint });
        }
        if group.lane_backlog_bytes() > super::apply_lane::APPLY_LANE_BACKLOG_BYTES_MAX {
            return self.reject(
                reply,
                Some(group_id),
                Error::Busy {
                    bound: "APPLY_LANE_BACKLOG_BYTES_MAX",
                },
            );
        }
        if group.proposals.len() + group.queued.len() >= PENDING_PROPOSALS_MAX {
            return self.reject(
                reply,
                Some(group_id),
                Error::Busy {
                    bound: "PENDING_PROPOSALS_MAX",
                },
            );
        }
        if group.queued.is_empty() {
            self.queued_groups.push(group_id);
        }
        group.queued.push(command, reply, received, data_crc);
        if group.queued.len() >= self.batch_entries_max {
            self.propose(group_id);
        }
    }

    /// Hands every group's queued proposals to its core, in ascending
    /// order of the groups.
    fn propose_queued_groups(&mut self) {
        let mut queued = std::mem::take(&mut self.queued_groups);
        queued.sort_unstable();
        queued.dedup();
        for &group_id in &queued {
            self.propose(group_id);
        }
        queued.clear();
        if queued.capacity() > QUEUED_GROUPS_KEPT_MAX {
            queued = Vec::new();
        }
        self.queued_groups = queued;
    }

    /// Hands the proposals queued in `group_id` to its core (none: nothing
    /// happens; a group removed since: they were answered then).
    fn propose(&mut self, group_id: GroupId) {
        let Some(group) = self.groups.get_mut(&group_id) else {
            return;
        };
        if group.queued.is_empty() {
            return;
        }
        let count = group.queued.len() as u64;
        // Proposing may wake a quiet core, whatever the answer.
        self.dirty.insert(group_id);
        let mut commands = std::mem::take(&mut group.queued.commands);
        let mut waiting = std::mem::take(&mut group.queued.waiting);
        let proposed = group.core.propose_from(&mut commands);
        let refused = proposed.is_err();
        match proposed {
            Ok((first, term)) => {
                let proposed = Instant::now();
                for (offset, (reply, received, data_crc)) in waiting.drain(..).enumerate() {
                    ShardMetrics::record(&mut self.metrics.queue_us, proposed - received);
                    if let Some(crc) = data_crc {
                        // The core logged the command at this index in `term`.
                        self.events
                            .crc_hints
                            .note(group_id, first.plus(offset as u64), term, crc);
                    }
                    let pending = PendingProposal {
                        term,
                        reply,
                        received,
                        proposed,
                    };
                    group.wait_for(first.plus(offset as u64), pending);
                }
                self.metrics.proposals += count;
                group.counters.proposals += count;
                self.dirty.insert(group_id);
            }
            Err(error) => {
                let error = match error {
                    RaftError::NotLeader { leader_hint } => Error::NotLeader { leader_hint },
                    RaftError::Busy { .. } => Error::Busy {
                        bound: "uncommitted_bytes_max",
                    },
                    RaftError::TransferInProgress { target } => Error::NotLeader {
                        leader_hint: Some(target),
                    },
                    _ => Error::Busy {
                        bound: "configuration change pending",
                    },
                };
                let hint = group.leader_hint();
                self.metrics.proposals_refused += count;
                for (reply, ..) in waiting.drain(..) {
                    reply.send(Err(error.clone()), hint);
                }
            }
        }
        // The emptied vectors go back for the group's next turn.
        group.queued.commands = commands;
        group.queued.waiting = waiting;
        group.queued.keep_room_within_bound();
        if refused {
            // A close in this turn waited for the queue, answered now.
            group.notify_if_drained();
        }
    }

    /// A linearizable read, `received` when it reached the shard.
    fn read(&mut self, group_id: GroupId, query: Bytes, index_only: bool, reply: Reply, received: Instant) {
        if let Some(error) = &self.failed {
            return reply.send(Err(error.clone()), None);
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return reply.send(Err(self.missing_group(group_id)), None);
        };
        if group.closed {
            return reply.send(Err(Error::Shutdown), group.leader_hint());
        }
        if group.reads.len() >= PENDING_READS_MAX {
            return reply.send(
                Err(Error::Busy {
                    bound: "PENDING_READS_MAX",
                }),
                group.leader_hint(),
            );
        }
        let context = group.next_read_context;
        group.next_read_context += 1;
        if group.core.config().read_mode == ReadMode::Lease {
            // A lease is judged on a fresh reading of the clock: a leader
            // that was away past its lease learns it here, not a tick
            // later. A ReadIndex read waits for a heartbeat round whatever
            // the clock says, so it reads none.
            self.catch_up();
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return reply.send(Err(self.missing_group(group_id)), None);
        };
        // Asking may wake a quiet core, whatever the answer.
        self.dirty.insert(group_id);
        match group.core.read_index(context) {
            Ok(()) => {
                group.reads.push(PendingRead {
                    context,
                    index: None,
                    query,
                    index_only,
                    reply,
                    received,
                });
            }
            Err(_) => reply.send(
                Err(Error::NotLeader {
                    leader_hint: group.leader_hint(),
                }),
                group.leader_hint(),
            ),
        }
    }

    /// A stale read: answered now from what this node's state machine has
    /// applied, with no read index and no message to the leader, so it
    /// works on a follower cut off from the rest (`GroupHandle::read_stale`).
    fn read_stale(&mut self, group_id: GroupId, query: Bytes, reply: Reply) {
        if let Some(error) = &self.failed {
            return reply.send(Err(error.clone()), None);
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return reply.send(Err(self.missing_group(group_id)), None);
        };
        if group.closed {
            return reply.send(Err(Error::Shutdown), group.leader_hint());
        }
        if group.loading.is_some() {
            // The state machine is loading a snapshot: the read waits for
            // it (index 0, answered at the swap; context 0 is never a
            // read index's).
            if group.reads.len() >= PENDING_READS_MAX {
                return reply.send(
                    Err(Error::Busy {
                        bound: "PENDING_READS_MAX",
                    }),
                    group.leader_hint(),
                );
            }
            group.reads.push(PendingRead {
                context: 0,
                index: Some(LogIndex(0)),
                query,
                index_only: false,
                reply,
                received: Instant::now(),
            });
            return;
        }
        group.query_stale(query, reply);
    }

    fn api_request(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::Propose {
                group,
                data,
                expected_term,
                reply,
            } => {
                let refused = expected_term.and_then(|expected| {
                    let current = self.groups.get(&group)?.core.term();
                    (current != expected).then_some(Error::TermMismatch { expected, current })
                });
                match refused {
                    Some(error) => self.reject(Reply::Api(reply), Some(group), error),
                    None => {
                        let command = encode_command(&LoggedCommand::Plain {
                            leader_time_ms: wall_clock_ms(),
                            data: &data,
                        });
                        self.queue_proposal(group, command, Reply::Api(reply), Instant::now(), None)
                    }
                }
            }
            ApiRequest::Read {
                group,
                query,
                stale: true,
                reply,
                ..
            } => self.read_stale(group, query.into(), Reply::Api(reply)),
            ApiRequest::Read {
                group,
                query,
                index_only,
                stale: false,
                reply,
            } => self.read(group, query.into(), index_only, Reply::Api(reply), Instant::now()),
            ApiRequest::Close { group, reply } => match self.groups.get_mut(&group) {
                Some(g) => g.close(reply),
                None => drop(reply),
            },
            ApiRequest::Status { group, reply } => {
                let status = self.groups.get(&group).map(|g| {
                    let mut status = status_of(self.node, g);
                    status.installs = self.installs.progress(group, Instant::now());
                    status
                });
                let _ = reply.send(status);
            }
            ApiRequest::TransferLeader { group, target, reply } => {
                let result = match self.groups.get_mut(&group) {
                    _ if self.failed.is_some() => Err(self.failed.clone().expect("checked")),
                    None => Err(Error::UnknownGroup(group)),
                    Some(g) => {
                        self.dirty.insert(group);
                        g.core.transfer_leader(target).map_err(|e| match e {
                            RaftError::NotLeader { leader_hint } => Error::NotLeader { leader_hint },
                            other => Error::Config(other.to_string()),
                        })
                    }
                };
                let _ = reply.send(result);
            }
            ApiRequest::Metrics { reply } => {
                let mut snapshot = self.metrics.clone();
                snapshot.groups = self.groups.len() as u64;
                snapshot.groups_led = self.groups.values().filter(|g| g.core.role() == Role::Leader).count() as u64;
                snapshot.groups_quiesced = self.groups.values().filter(|g| g.core.is_quiesced()).count() as u64;
                snapshot.raft_messages_sent = self.peers.sent;
                snapshot.raft_messages_dropped = self.peers.dropped;
                snapshot.peer_connections = self.peers.nodes().count() as u64;
                snapshot.protocol_violations = self.events.violations.count();
                snapshot.wal_segments_deleted = self.segment_deletion.deleted.get();
                let _ = reply.send(snapshot);
            }
            ApiRequest::Snapshot { group, reply } => {
                if let Some(error) = &self.failed {
                    let _ = reply.send(Err(error.clone()));
                } else if !self.groups.contains_key(&group) {
                    let _ = reply.send(Err(Error::UnknownGroup(group)));
                } else if self.pending_snapshots.len() >= PENDING_SNAPSHOTS_MAX {
                    let _ = reply.send(Err(Error::Busy {
                        bound: "PENDING_SNAPSHOTS_MAX",
                    }));
                } else {
                    // Taken at the end of this turn, or once the group's
                    // applied entries are durable.
                    self.pending_snapshots.push((group, reply));
                }
            }
            ApiRequest::WalFault { fault, reply } => {
                let result = match &self.wal_faults {
                    None => Err(Error::Config(
                        "the node was not started with Node::start_with_wal_faults".into(),
                    )),
                    Some(faults) => {
                        faults.update(|plan| match fault {
                            super::node::WalFault::FailSyncs(count) => plan.failing_syncs = count,
                            super::node::WalFault::NoSpace(on) => plan.no_space_on_write = on,
                        });
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            ApiRequest::Membership { group, request, reply } => {
                let _group = crate::logging::group_span(group).entered();
                self.membership_request(group, request, reply)
            }
            ApiRequest::Installs { reply } => {
                let _ = reply.send(self.installs.all_progress(Instant::now()));
            }
            ApiRequest::Health { reply } => {
                let _ = reply.send(super::admin::ShardHealth {
                    groups: self.groups.len() as u64,
                    failed: self.failed.as_ref().map(|error| match error {
                        Error::Storage(reason) => reason.clone(),
                        other => other.to_string(),
                    }),
                });
            }
            ApiRequest::Addresses { reply } => {
                let _ = reply.send(self.addresses.clone());
            }
            ApiRequest::CreateGroup { group, voters, reply } => {
                let result = self.create_group(group, voters);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(error) = result {
                            log::error!("node {}: creating group {group} failed: {error}", self.node);
                        }
                    }
                }
            }
            ApiRequest::RemoveGroup { group, reply } => {
                let _ = reply.send(self.remove_group(group));
            }
            ApiRequest::Shutdown => self.shutting_down = true,
        }
    }

    fn handle_readies(&mut self) {
        if self.failed.is_some() {
            self.dirty.clear();
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty_taken);
        self.dirty.take_into(&mut dirty);
        for &group_id in dirty.iter() {
            self.handle_group_readies(group_id);
            match self.groups.get(&group_id) {
                Some(group) if group.core.is_quiesced() => self.awake.remove(&group_id),
                Some(_) => self.awake.insert(group_id),
                None => false,
            };
            // Work its bounded rounds left (a long committed backlog, e.g.
            // a restart's whole log) is taken in the next rounds and turns
            // at once: a quiet group gets no tick to come back for it.
            if self
                .groups
                .get(&group_id)
                .is_some_and(|group| group.core.has_ready() && !group.loading.as_ref().is_some_and(|l| l.is_full()))
            {
                self.dirty.insert(group_id);
            }
            if self.failed.is_some() {
                break;
            }
        }
        self.dirty_taken = dirty;
    }

    fn handle_group_readies(&mut self, group_id: GroupId) {
        for _ in 0..READY_ROUNDS_PER_TURN_MAX {
            let Some(group) = self.groups.get_mut(&group_id) else {
                break;
            };
            if !group.core.has_ready() || group.loading.as_ref().is_some_and(|l| l.is_full()) {
                // (A loading snapshot holding back all it may: the rest
                // waits in the core until it is swapped in.)
                break;
            }
            // The committed entries stay in the core's log, lent to the
            // apply below (step 4) in this same round: nothing in between
            // steps or compacts the core.
            let mut ready = group.core.take_ready_lending();
            if ready.soft_state.is_some() {
                group.observe_role();
            }
            if let Some(meta) = &ready.snapshot {
                // A snapshot from the leader: the state machine takes it
                // before the WAL drops the log it replaces. No entry of
                // the log it replaces will be applied: their hints go.
                self.events.crc_hints.forget_group(group_id);
                if let Err(error) = self.load_installed(group_id, meta) {
                    self.fail(error);
                    return;
                }
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.lane_installed(meta.index);
                }
            }
            // 1. Persist (buffered into this turn's group commit).
            let group = self.groups.get_mut(&group_id).expect("present");
            let last_entry = match write_ready(&self.wal, group_id, &ready, &mut group.hard_states) {
                Ok(last) => last,
                Err(error) => {
                    self.fail(error);
                    return;
                }
            };
            // 2. Send at once, in parallel with the fsync. A snapshot goes
            // as a stream of the stored one (`install.rs`).
            // Drained: the vector goes back to the core with its room.
            for message in ready.messages.drain(..) {
                if matches!(message.body, crate::raft::MessageBody::InstallSnapshot { .. }) {
                    let _group = crate::logging::group_span(group_id).entered();
                    self.start_install(&message);
                    continue;
                }
                if let crate::raft::MessageBody::AppendEntries { entries, .. } = &message.body {
                    if let Some(last) = entries.last() {
                        self.append_times.sent(group_id.0, message.to.0, last.index.0);
                    }
                }
                self.peers.send(message);
            }
            // 3. After the fsync: acknowledgements and votes.
            let lsn = self.wal.last_lsn();
            let written: u64 = ready
                .entries
                .iter()
                .map(|e| e.size_bytes() + WAL_RECORD_OVERHEAD_BYTES)
                .sum();
            if written > 0 {
                self.wal_backlog.push_back((lsn, written));
                self.wal_backlog_bytes += written;
            }
            if ready.must_persist() || !ready.persisted_messages.is_empty() {
                self.waiters.push_back(PersistWaiter {
                    lsn,
                    group: group_id,
                    last_entry,
                    // Moved into a kept vector: the Ready's own goes back
                    // to the core with its room for the next acknowledgements.
                    messages: {
                        let mut held = self.held_message_vectors.pop().unwrap_or_default();
                        held.append(&mut ready.persisted_messages);
                        held
                    },
                });
            }
            // 4. Apply and answer; match reads to their indexes.
            let group = self.groups.get_mut(&group_id).expect("present");
            group.confirm_reads(&ready.read_states);
            if !ready.dropped_reads.is_empty() {
                let hint = group.leader_hint();
                let (dropped, kept): (Vec<_>, Vec<_>) = group
                    .reads
                    .drain(..)
                    .partition(|r| ready.dropped_reads.contains(&r.context));
                group.reads = kept;
                for read in dropped {
                    read.reply.send(Err(Error::NotLeader { leader_hint: hint }), hint);
                }
            }
            let committed_any = ready.committed.is_some();
            let since_before = group.since_snapshot.log_bytes;
            match (group.loading.as_mut(), ready.committed) {
                // The state machine is loading a snapshot: applied after it,
                // from clones (the core may compact them away meanwhile).
                (Some(loading), Some(range)) => {
                    let (front, back) = group.core.committed_entries(range);
                    loading.defer(front.iter().chain(back).cloned().collect());
                }
                (None, Some(range)) => group.apply_committed(range, &mut self.metrics, Some(&self.events.crc_hints)),
                // Nothing applied: only reads confirmed now may be served.
                (None, None) if !ready.read_states.is_empty() => {
                    let served = group.serve_reads();
                    self.metrics.reads_served += served;
                    group.counters.reads_served += served;
                }
                _ => {}
            }
            group.notify_if_drained();
            self.log_bytes_since_snapshots += group.since_snapshot.log_bytes.saturating_sub(since_before);
            if committed_any && self.snapshot_policy.due(&group.since_snapshot, Instant::now) {
                self.policy_snapshots.insert(group_id);
            }
            let learned = std::mem::take(&mut group.learned_addresses);
            let configuration_applied = std::mem::take(&mut group.configuration_applied);
            for book in learned {
                self.learn_addresses(book);
            }
            if configuration_applied {
                self.prune_peers();
            }
            if ready
                .entries
                .iter()
                .any(|e| matches!(e.payload, crate::raft::EntryPayload::Configuration(_)))
            {
                let _group = crate::logging::group_span(group_id).entered();
                self.notice_removal(group_id);
            }
            // The Ready's vectors go back to the core for its next one.
            if let Some(group) = self.groups.get_mut(&group_id) {
                group.core.recycle(ready);
            }
        }
    }

    /// Starts a group commit if anything was appended since the last one.
    fn request_sync(&mut self) {
        let last = self.wal.last_lsn();
        if last <= self.synced_requested_lsn || self.failed.is_some() {
            return;
        }
        self.synced_requested_lsn = last;
        let sync = self.wal.sync();
        let events = self.events.clone();
        let started = Instant::now();
        glommio::spawn_local(async move {
            let result = sync.await.map_err(|e| e.to_string());
            let _ = events.push(Event::Synced(result, started.elapsed()));
        })
        .detach();
    }

    fn synced(&mut self, result: Result<u64, String>, elapsed: Duration) {
        self.metrics.wal_syncs += 1;
        ShardMetrics::record(&mut self.metrics.wal_sync_us, elapsed);
        if let Err(error) = result {
            // An fsync failure is fatal for the WAL (never retried).
            self.fail(Error::Storage(error));
        }
    }

    /// Sends what waited for durability and reports it to the cores.
    fn release_durable(&mut self) {
        let durable = self.wal.durable_lsn();
        while self.wal_backlog.front().is_some_and(|&(lsn, _)| lsn <= durable) {
            let (_, bytes) = self.wal_backlog.pop_front().expect("checked");
            self.wal_backlog_bytes -= bytes;
        }
        while self.waiters.front().is_some_and(|w| w.lsn <= durable) {
            let mut waiter = self.waiters.pop_front().expect("checked");
            for message in waiter.messages.drain(..) {
                self.peers.send(message);
            }
            if let Some(group) = self.groups.get_mut(&waiter.group) {
                if let Some((index, term)) = waiter.last_entry {
                    group.core.on_persisted(index, term);
                    self.dirty.insert(waiter.group);
                }
            }
            // The acknowledgements' vector is kept for the next Ready's.
            let mut held = waiter.messages;
            if self.held_message_vectors.len() < HELD_MESSAGE_VECTORS_MAX
                && held.capacity() <= crate::raft::READY_VECTOR_KEPT_MAX
            {
                held.clear();
                self.held_message_vectors.push(held);
            }
        }
    }

    /// Fail-stop: the WAL failed (an fdatasync error poisons it for good,
    /// and a write refused for want of space leaves records unwritten), so
    /// this shard can no longer promise anything a replica promises. Its
    /// leaders step down, it stops talking to its peers (the rest of each
    /// group elects a leader without it), every request waiting here and
    /// every later one is answered with `Storage`, and what it held for the
    /// WAL or the network is released. Only a restart, which recovers from
    /// what the WAL really holds, brings it back (`docs/architecture.md`).
    pub(super) fn fail(&mut self, error: Error) {
        if self.failed.is_some() {
            return;
        }
        let cause = match &error {
            Error::Storage(message) => message.clone(),
            other => other.to_string(),
        };
        let error = Error::Storage(format!(
            "{cause}; shard {} of node {} has stopped serving (fail-stop) until it is restarted",
            self.metrics.shard, self.node
        ));
        log::error!(
            "node {} shard {}: THE WAL FAILED, THIS SHARD STOPS SERVING ITS {} GROUPS AS A REPLICA \
             (leaders step down, peers are cut off, requests are refused) until the node is restarted: {cause}",
            self.node,
            self.metrics.shard,
            self.groups.len()
        );
        self.failed = Some(error.clone());
        self.metrics.wal_failed = 1;
        for group in self.groups.values_mut() {
            group.core.step_down();
            // What the core still had to say (messages, reads dropped by the
            // step-down) is discarded: nothing of it may leave this node.
            let _ = group.core.take_ready();
            group.observe_role();
            group.state_machine.on_error(&error);
            group.fail_all(error.clone());
        }
        for (_, reply) in self.pending_snapshots.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for group in self.groups.values_mut() {
            for reply in group.snapshot_waiters.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.policy_snapshots.clear();
        self.fail_membership_changes(&error);
        self.dirty.clear();
        self.awake.clear();
        self.waiters.clear();
        self.wal_backlog.clear();
        self.wal_backlog_bytes = 0;
        let connections = self.peers.stop();
        glommio::spawn_local(async move {
            for connection in connections {
                connection.close().await;
            }
        })
        .detach();
    }
}

impl Shard {
    /// Takes what the groups' apply lanes finished (`apply_lane.rs`):
    /// answers, served reads, written snapshots. A lane's doorbell starts
    /// a task here the first time, so that its next result rings the loop.
    fn collect_lanes(&mut self) {
        let mut failure = None;
        for (&id, group) in self.groups.iter_mut() {
            let Some(lane) = group.lane.as_mut() else {
                continue;
            };
            if let Some(wake) = lane.take_wake() {
                let events = self.events.clone();
                glommio::spawn_local(async move {
                    while wake.recv_async().await.is_ok() {
                        events.ring();
                    }
                })
                .detach();
            }
            match group.collect_lane(&mut self.metrics) {
                Ok(snapshots) => {
                    let mut written = self.snapshots_written.borrow_mut();
                    for (result, elapsed) in snapshots {
                        written.push(SnapshotWritten {
                            group: id,
                            result,
                            elapsed,
                        });
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            self.fail(error);
        }
    }

    /// Takes the snapshots asked for, and those the policy wants, whose
    /// group has every applied entry durable in the WAL here; the others
    /// wait for a later turn (the WAL sync this turn requests makes them
    /// durable).
    fn take_pending_snapshots(&mut self) {
        if self.pending_snapshots.is_empty() && self.policy_snapshots.is_empty() {
            return;
        }
        for (group_id, reply) in std::mem::take(&mut self.pending_snapshots) {
            match self.snapshot_now(group_id) {
                SnapshotOutcome::NotYet => self.pending_snapshots.push((group_id, reply)),
                SnapshotOutcome::Writing => {
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        group.snapshot_waiters.push(reply);
                    }
                }
                SnapshotOutcome::Done(result) => {
                    let _ = reply.send(result);
                }
            }
        }
        for group_id in std::mem::take(&mut self.policy_snapshots) {
            match self.snapshot_now(group_id) {
                SnapshotOutcome::NotYet => {
                    self.policy_snapshots.insert(group_id);
                }
                SnapshotOutcome::Writing | SnapshotOutcome::Done(Ok(_)) => {}
                // Tried again once the policy fires again.
                SnapshotOutcome::Done(Err(error)) => {
                    let _group = crate::logging::group_span(group_id).entered();
                    log::warn!(
                        "node {} shard {}: the snapshot policy's snapshot of group {group_id} failed: {error}",
                        self.node,
                        self.metrics.shard
                    )
                }
            }
        }
    }

    /// Starts a snapshot of `group_id`; once it is durable,
    /// `finish_snapshot_writes` compacts its log after it (and fail-stops
    /// on a storage error there). Waits (`NotYet`) while its applied
    /// entries are not all durable here or another snapshot of it is being
    /// written.
    fn snapshot_now(&mut self, group_id: GroupId) -> SnapshotOutcome {
        let done = self.snapshots_written.clone();
        let events = self.events.clone();
        let Some(group) = self.groups.get_mut(&group_id) else {
            return SnapshotOutcome::Done(Err(Error::UnknownGroup(group_id)));
        };
        if group.core.persisted_index() < group.core.applied_index()
            || group.snapshot_writing
            || group.loading.is_some()
        {
            // A follower may apply entries before they are durable here;
            // a snapshot must never cover an entry a crash could lose
            // from the WAL (restart finds the snapshot's entry in it).
            return SnapshotOutcome::NotYet;
        }
        let taken = take_snapshot(group_id, group, |writer, view| {
            write_off_loop(group_id, writer, view, done, events)
        });
        let now = Instant::now();
        // The policy counts from here, whatever the outcome: a failing
        // snapshot is tried again only when a trigger fires again.
        group.since_snapshot = super::compaction::SinceSnapshot::new(now);
        match taken {
            Err(error) => SnapshotOutcome::Done(Err(error)),
            Ok(Taken::Writing) => {
                group.snapshot_writing = true;
                SnapshotOutcome::Writing
            }
            Ok(Taken::Done(index)) => SnapshotOutcome::Done(Ok(index)),
        }
    }

    /// A snapshot of `group_id` at `index` is durable (and the core told):
    /// counts it and compacts the group's log after it.
    fn snapshot_durable(
        &mut self,
        group_id: GroupId,
        index: LogIndex,
        data_bytes: u64,
        elapsed: Duration,
        failure: &mut Option<Error>,
    ) -> Result<LogIndex, Error> {
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Err(Error::UnknownGroup(group_id));
        };
        self.metrics.snapshots_taken += 1;
        self.metrics.snapshot_bytes += data_bytes;
        ShardMetrics::record(&mut self.metrics.snapshot_us, elapsed);
        group.counters.snapshots_taken += 1;
        group.counters.snapshot_bytes_last = data_bytes;
        group.counters.snapshot_duration_us_last = elapsed.as_micros() as u64;
        // Only now, with the snapshot durable, may the log below it go.
        let tail = self.snapshot_policy.log_tail_entries;
        let streaming = self.log_held_after(group_id, LogIndex(index.0.saturating_sub(tail)));
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Err(Error::UnknownGroup(group_id));
        };
        match super::compaction::compact_group(&self.wal, group_id, group, index, tail, streaming) {
            Ok(compacted) => {
                if compacted.purged {
                    self.segment_deletion.want();
                }
                let count = compacted.forgotten.len() as u64;
                match self.releaser.release(compacted.forgotten) {
                    super::release::Released::OffLoop => self.metrics.compacted_entries_released_off_loop += count,
                    super::release::Released::InPlace => self.metrics.compacted_entries_dropped_on_loop += count,
                    super::release::Released::Nothing => {}
                }
                Ok(index)
            }
            Err(error) => {
                if matches!(error, Error::Storage(_)) {
                    // The WAL refused a record: fail-stop.
                    *failure = Some(error.clone());
                }
                Err(error)
            }
        }
    }

    /// Finishes the snapshots written off the loop since the last turn:
    /// tells the core, compacts, and answers who waited for them.
    fn finish_snapshot_writes(&mut self) {
        let written = std::mem::take(&mut *self.snapshots_written.borrow_mut());
        let mut failure = None;
        for SnapshotWritten { group, result, elapsed } in written {
            let Some(hosted) = self.groups.get_mut(&group) else {
                continue;
            };
            hosted.snapshot_writing = false;
            let waiters = std::mem::take(&mut hosted.snapshot_waiters);
            let outcome = match result {
                Ok(stored) => {
                    let (index, data_bytes) = (stored.meta.index, stored.data_bytes);
                    if hosted.core.snapshot_created(index).is_some() {
                        // Not overtaken by a snapshot installed meanwhile.
                        hosted.stored_snapshot = Some(stored);
                    }
                    self.snapshot_durable(group, index, data_bytes, elapsed, &mut failure)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = &outcome {
                let _group = crate::logging::group_span(group).entered();
                // Nobody waits for it: the policy took it (tried again when
                // a trigger fires again).
                let which = if waiters.is_empty() {
                    "the snapshot policy's snapshot"
                } else {
                    "a snapshot"
                };
                log::warn!(
                    "node {} shard {}: {which} of group {group} failed: {error}",
                    self.node,
                    self.metrics.shard
                );
            }
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
        if let Some(error) = failure {
            self.fail(error);
        }
    }
}

/// What `snapshot_now` did.
enum SnapshotOutcome {
    /// Nothing yet: try again in a later turn.
    NotYet,
    /// Being written off the loop; `finish_snapshot_writes` ends it.
    Writing,
    /// Done: the snapshot's index, or why not.
    Done(Result<LogIndex, Error>),
}

/// How taking a snapshot went.
enum Taken {
    /// Nothing was applied since the newest snapshot, at this index: no
    /// new one.
    Done(LogIndex),
    /// Handed to `write_off_loop` (or to the apply lane).
    Writing,
}

/// Starts a snapshot of `group` at its applied index. With a view from the
/// state machine (`StateMachine::snapshot_view`) the writing is handed to
/// `write_off_loop`; without one, `on_snapshot_save` writes it here, on the
/// shard's thread, and `write_off_loop` makes it durable (its fsyncs never
/// run on the shard's thread). The core is told of a snapshot only once it
/// is durable (`finish_snapshot_writes`).
fn take_snapshot(
    group_id: GroupId,
    group: &mut Group,
    write_off_loop: impl FnOnce(SnapshotWriter, Option<Box<dyn SnapshotView>>),
) -> Result<Taken, Error> {
    let error = |reason: String| Error::Snapshot {
        group: group_id,
        reason,
    };
    let applied = group.core.applied_index();
    if applied == LogIndex(0) {
        return Err(error("nothing is applied yet".into()));
    }
    if let Some(newest) = group.core.snapshot().filter(|s| s.index >= applied) {
        return Ok(Taken::Done(newest.index));
    }
    let meta = group
        .core
        .snapshot_meta(applied)
        .ok_or_else(|| error(format!("index {applied} is not in the log")))?;
    let store = group
        .snapshots
        .as_ref()
        .ok_or_else(|| error("the group has no snapshot store".into()))?;
    // The session table, the address book and the view are taken
    // together, at `applied`.
    let addresses = group.snapshot_address_book(&meta.configuration);
    if let Some(lane) = group.lane.as_mut() {
        // The lane writes it after everything handed to it, at `applied`,
        // with the sessions it holds then (`apply_lane.rs`).
        lane.send_sessions(&mut group.sessions);
        lane.snapshot(store.clone(), meta, addresses);
        return Ok(Taken::Writing);
    }
    let mut writer = store
        .begin_with_addresses(meta, group.sessions.encode(), addresses)
        .map_err(|e| error(e.to_string()))?;
    if let Some(view) = group.state_machine.snapshot_view() {
        write_off_loop(writer, Some(view));
        return Ok(Taken::Writing);
    }
    group
        .state_machine
        .on_snapshot_save(&mut writer)
        .map_err(|e| error(format!("on_snapshot_save: {e}")))?;
    // Written; its fsyncs, rename and the old snapshot's removal go off the
    // loop too: on the shard's thread they stalled every group of the shard
    // for 1-5 ms per snapshot, several times a second at 4 KiB writes
    // (docs/journal/benchmarks.md, "issue 17: the 4 KiB tail").
    write_off_loop(writer, None);
    Ok(Taken::Writing)
}

/// A snapshot written off the loop, for the shard to finish.
pub(crate) struct SnapshotWritten {
    group: GroupId,
    result: Result<StoredSnapshot, Error>,
    elapsed: Duration,
}

/// Writes `view` (if any: without one the state machine has written
/// `writer` already) into `writer` on a blocking thread and makes it
/// durable; the outcome goes to `done` and the loop is woken. Nothing here
/// touches the group: the shard finishes it (`finish_snapshot_writes`).
fn write_off_loop(
    group: GroupId,
    writer: SnapshotWriter,
    view: Option<Box<dyn SnapshotView>>,
    done: Rc<RefCell<Vec<SnapshotWritten>>>,
    events: Rc<EventQueue>,
) {
    let started = Instant::now();
    glommio::spawn_local(async move {
        let result = glommio::executor()
            .spawn_blocking(move || {
                let mut writer = writer;
                if let Some(mut view) = view {
                    view.write_to(&mut writer)
                        .map_err(|e| format!("the snapshot view: {e}"))?;
                }
                writer.finish().map_err(|e| e.to_string())
            })
            .await
            .map_err(|reason| Error::Snapshot { group, reason });
        done.borrow_mut().push(SnapshotWritten {
            group,
            result,
            elapsed: started.elapsed(),
        });
        events.ring();
    })
    .detach();
}

pub(crate) fn status_of(node: NodeId, group: &Group) -> GroupStatus {
    let core = &group.core;
    GroupStatus {
        node,
        role: core.role(),
        term: core.term(),
        leader: core.leader(),
        commit_index: core.commit_index(),
        applied_index: group.applied_index(),
        last_index: core.last_index(),
        snapshot_index: core.snapshot().map_or(LogIndex(0), |s| s.index),
        first_index: core.first_index(),
        quiesced: core.is_quiesced(),
        counters: group.counters,
        installs: Vec::new(),
        configuration: core.configuration().clone(),
        peers: core
            .progress()
            .iter()
            .map(|(&peer, p)| PeerStatus {
                node: peer,
                match_index: p.match_index,
                next_index: p.next_index,
                lag: core.last_index().0.saturating_sub(p.match_index.0),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_command_fits_in_one_wal_record() {
        // A command the shard accepts must never be refused by the WAL: that
        // refusal is a storage failure and stops the shard.
        let entry_bytes_max =
            COMMAND_BYTES_MAX + super::super::codec::COMMAND_HEADER_BYTES_MAX + WAL_RECORD_OVERHEAD_BYTES as usize;
        assert!(entry_bytes_max <= coraft_wal::Config::default().record_bytes_max);
    }
}
