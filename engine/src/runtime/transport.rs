//! The shard's network: one outbound connection per peer node (to the
//! peer's shard with the same index), and a listener whose connections feed
//! the shard's inbox — Raft frames from peers, requests from clients —
//! or, for admin requests of clients, the admin service (`admin.rs`).
//!
//! Heartbeats of idle groups coalesce: the quiescing heartbeats (and their
//! answers) a turn produces for one peer travel as the lines of one
//! `CoalescedHeartbeat` (or its response). Each tick the shard also sends
//! every peer one coalesced heartbeat, empty or not: the node-level beat
//! by which the peer knows this node is alive while its groups are quiet.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use coraft_net::admin::{AdminError, AdminRequestFrame, AdminResponseFrame, ArchivedAdminRequestFrame};
use coraft_net::schema::{
    ArchivedClientRequest, ArchivedClientRequestBatch, ArchivedReadConsistency, ClientRequest, CoalescedHeartbeat,
    CoalescedHeartbeatResponse, Envelope, GroupHeartbeat, GroupHeartbeatAck, RaftBody,
};
use coraft_net::{ConnectionState, Listener, NetConfig, NetError, OutboundConnection, PeerAddress, Role as NetRole};
use glommio::channels::local_channel;

use crate::raft::{GroupId, Message, MessageBody, NodeId, ProtocolViolation, Term, ViolationKind};

use super::admin::{AdminService, ADMIN_REQUESTS_QUEUED_MAX};
use super::codec::{append_from_archived, expand_coalesced, from_wire, into_wire, CommandArena, LoggedCommand};
use super::crc_hints::session_data_crc;
use super::events::{ClientProposal, ClientRead, Event, EventQueue};
use super::forward::{ClientRoute, Forwarder};
use super::reply::{ClientOutbox, ResponseQueue};

/// Quiescing heartbeats and their answers waiting to go to one peer.
#[derive(Default)]
struct Coalesced {
    beats: Vec<GroupHeartbeat>,
    acks: Vec<GroupHeartbeatAck>,
}

/// Outbound connections of one shard.
pub(crate) struct Peers {
    node: NodeId,
    config: NetConfig,
    shard: u32,
    connections: BTreeMap<NodeId, OutboundConnection>,
    coalesced: BTreeMap<NodeId, Coalesced>,
    /// Messages queued to peers.
    pub sent: u64,
    /// Messages dropped because a peer's queue was full or the peer was
    /// down (Raft re-sends).
    pub dropped: u64,
}

impl Peers {
    pub fn connect(config: NetConfig, shard: u32, peers: &[(NodeId, SocketAddr)]) -> Result<Peers, String> {
        let mut connections = BTreeMap::new();
        log::debug!(
            "node {} shard {shard}: connecting to peers {peers:?}",
            config.identity.node_id
        );
        for &(node, address) in peers {
            let peer = PeerAddress {
                node_id: node.0,
                shard_id: shard,
                address,
            };
            let connection = OutboundConnection::spawn(config, peer).map_err(|e| format!("peer {node}: {e}"))?;
            connections.insert(node, connection);
        }
        Ok(Peers {
            node: NodeId(config.identity.node_id),
            config,
            shard,
            coalesced: connections.keys().map(|&n| (n, Coalesced::default())).collect(),
            connections,
            sent: 0,
            dropped: 0,
        })
    }

    /// Queues a message; a full queue drops it (back-pressure: Raft resends).
    /// Quiescing heartbeats and their answers wait for [`flush`](Self::flush).
    /// Taken, so that its entries move into the envelope.
    pub fn send(&mut self, message: Message) {
        let Some(coalesced) = self.coalesced.get_mut(&message.to) else {
            self.dropped += 1;
            return;
        };
        match message.body {
            MessageBody::Heartbeat {
                commit_index,
                quiesce: true,
                ..
            } => coalesced.beats.push(GroupHeartbeat {
                group: message.group.0,
                term: message.term.0,
                commit_index: commit_index.0,
            }),
            // Round 0 answers a line of a coalesced heartbeat (rounds of
            // ordinary heartbeats start at 1).
            MessageBody::HeartbeatResponse { round: 0 } => coalesced.acks.push(GroupHeartbeatAck {
                group: message.group.0,
                term: message.term.0,
            }),
            _ => self.enqueue(message.to, into_wire(message)),
        }
    }

    /// Sends what coalesced this turn, one message per kind and peer; with
    /// `beat`, a coalesced heartbeat to every peer even if it has no line.
    pub fn flush(&mut self, beat: bool) {
        // Taken out and put back (no allocation either way), rather than a
        // list of the peers collected at every turn and tick.
        let mut all = std::mem::take(&mut self.coalesced);
        for (&peer, coalesced) in all.iter_mut() {
            let beats = std::mem::take(&mut coalesced.beats);
            let acks = std::mem::take(&mut coalesced.acks);
            if beat || !beats.is_empty() {
                let body = RaftBody::CoalescedHeartbeat(CoalescedHeartbeat { groups: beats });
                self.enqueue(peer, self.envelope(peer, body));
            }
            if !acks.is_empty() {
                let body = RaftBody::CoalescedHeartbeatResponse(CoalescedHeartbeatResponse { groups: acks });
                self.enqueue(peer, self.envelope(peer, body));
            }
        }
        self.coalesced = all;
    }

    fn envelope(&self, to: NodeId, body: RaftBody) -> Envelope {
        Envelope {
            group: 0,
            from: self.node.0,
            to: to.0,
            term: 0,
            body,
        }
    }

    fn enqueue(&mut self, to: NodeId, envelope: Envelope) {
        let Some(connection) = self.connections.get(&to) else {
            self.dropped += 1;
            return;
        };
        if peer_down(connection) || connection.try_send(envelope).is_err() {
            self.dropped += 1;
        } else {
            self.sent += 1;
        }
    }

    /// Queues a snapshot-stream message (`install.rs`) for `to`; false if
    /// it was dropped (no connection, or its queue is full).
    pub fn send_stream(&mut self, to: NodeId, group: GroupId, term: Term, body: RaftBody) -> bool {
        let envelope = Envelope {
            group: group.0,
            from: self.node.0,
            to: to.0,
            term: term.0,
            body,
        };
        let before = self.dropped;
        self.enqueue(to, envelope);
        self.dropped == before
    }

    /// Whether `node`'s queue has room for `bytes` more now.
    pub fn has_room(&self, node: NodeId, bytes: usize) -> bool {
        self.connections
            .get(&node)
            .is_some_and(|c| c.held_bytes() + bytes <= self.config.outbound_queue_bytes_max)
    }

    /// How many times the connection to `node` connected or failed: when it
    /// changes, what was in flight on it may be lost.
    pub fn connection_epoch(&self, node: NodeId) -> Option<u64> {
        self.connections.get(&node).map(|c| {
            let stats = c.stats();
            stats.connects + stats.failures
        })
    }

    /// Opens (or replaces) the connection to `node` at `address`: a node
    /// the membership brought in (`membership.rs`).
    pub fn connect_to(&mut self, node: NodeId, address: SocketAddr) -> Result<(), String> {
        let peer = PeerAddress {
            node_id: node.0,
            shard_id: self.shard,
            address,
        };
        let connection = OutboundConnection::spawn(self.config, peer).map_err(|e| format!("peer {node}: {e}"))?;
        if let Some(old) = self.connections.insert(node, connection) {
            glommio::spawn_local(old.close()).detach();
        }
        self.coalesced.entry(node).or_default();
        Ok(())
    }

    /// Forgets `node` (removed from every group here): hands back its
    /// connection for the caller to close.
    pub fn disconnect(&mut self, node: NodeId) -> Option<OutboundConnection> {
        self.coalesced.remove(&node);
        self.connections.remove(&node)
    }

    /// True if this shard has a connection to `node`.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.connections.contains_key(&node)
    }

    /// The peer nodes.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.connections.keys().copied()
    }

    /// Stops talking to peers for good (the shard's fail-stop): drops what
    /// waits to coalesce, makes every later send a drop, and hands back the
    /// connections for the caller to close.
    pub fn stop(&mut self) -> Vec<OutboundConnection> {
        self.coalesced.clear();
        std::mem::take(&mut self.connections).into_values().collect()
    }

    pub async fn close(self) {
        for (_, connection) in self.connections {
            connection.close().await;
        }
    }
}

/// The tasks serving accepted connections; dropping the set cancels them,
/// so a stopped shard closes its sockets and peers notice at once.
#[derive(Default)]
struct ConnectionTasks {
    tasks: RefCell<BTreeMap<u64, glommio::task::JoinHandle<()>>>,
    next_id: std::cell::Cell<u64>,
}

impl Drop for ConnectionTasks {
    fn drop(&mut self) {
        for task in self.tasks.borrow().values() {
            task.cancel();
        }
    }
}

/// Accepts connections until cancelled, serving each on its own task.
pub(crate) async fn serve(
    listener: Rc<Listener>,
    events: Rc<EventQueue>,
    forwarder: Option<Rc<Forwarder>>,
    admin: Arc<AdminService>,
) {
    log::debug!("listening on {}", listener.local_addr());
    let tasks = Rc::new(ConnectionTasks::default());
    // One per shard: its connections' client commands share its buffers.
    let arena = Rc::new(RefCell::new(CommandArena::default()));
    loop {
        let handshaking = match listener.accept().await {
            Ok(h) => h,
            Err(error) => {
                log::warn!("accept failed: {error}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let events = events.clone();
        let forwarder = forwarder.clone();
        let admin = admin.clone();
        let arena = arena.clone();
        let id = tasks.next_id.get();
        tasks.next_id.set(id + 1);
        let registry = Rc::downgrade(&tasks);
        let handle = glommio::spawn_local(async move {
            if let Ok(connection) = handshaking.handshake().await {
                match connection.peer().role {
                    NetRole::Peer => serve_peer(connection, events).await,
                    NetRole::Client => serve_client(connection, events, forwarder, admin, arena).await,
                }
            }
            if let Some(registry) = registry.upgrade() {
                registry.tasks.borrow_mut().remove(&id);
            }
        })
        .detach();
        tasks.tasks.borrow_mut().insert(id, handle);
    }
}

async fn serve_peer(mut connection: coraft_net::InboundConnection, events: Rc<EventQueue>) {
    log::debug!("serving peer {:?}", connection.peer());
    // Received entries' payloads are copied into this, shared by the
    // appends of this connection (`codec::RECEIVED_ENTRIES_ARENA_BYTES`).
    let mut arena = bytes::BytesMut::new();
    loop {
        let frame = match connection.recv().await {
            Ok(Some(frame)) => frame,
            other => {
                log::debug!("peer {:?} connection ends: {:?}", connection.peer(), other.map(|_| ()));
                return;
            }
        };
        let Some(archived) = frame.raft() else { continue };
        let peer = NodeId(connection.peer().node_id);
        let _ = events.push(Event::PeerHeard(peer));
        for archived in archived.messages.iter() {
            // Entries are read in place, into the connection's arena.
            // A message naming another sender is dropped (`push_authenticated`):
            // its entries' CRCs are not noted either.
            let hints = (archived.from.to_native() == peer.0).then_some(&events.crc_hints);
            if let Some(append) = append_from_archived(archived, &mut arena, &events.received_entries, hints) {
                match append {
                    Ok(message) => push_authenticated(&events, peer, message),
                    Err(error) => {
                        log::warn!("closing peer {:?}: bad message: {error}", connection.peer());
                        return;
                    }
                }
                continue;
            }
            let Ok(envelope) = rkyv::deserialize::<Envelope, rkyv::rancor::Error>(archived) else {
                log::warn!(
                    "dropping a Raft frame that does not deserialize from {:?}",
                    connection.peer()
                );
                return;
            };
            if matches!(
                envelope.body,
                RaftBody::CoalescedHeartbeat(_) | RaftBody::CoalescedHeartbeatResponse(_)
            ) {
                for message in expand_coalesced(&envelope) {
                    push_authenticated(&events, peer, message);
                }
                continue;
            }
            if matches!(
                envelope.body,
                RaftBody::SnapshotChunk(_) | RaftBody::SnapshotChunkAck(_)
            ) {
                push_snapshot_stream(&events, peer, &envelope);
                continue;
            }
            match from_wire(envelope) {
                Ok(Some(message)) => push_authenticated(&events, peer, message),
                Ok(None) => {}
                Err(error) => {
                    log::warn!("closing peer {:?}: bad message: {error}", connection.peer());
                    return;
                }
            }
        }
    }
}

/// Queues a peer's message for the shard if it names as its sender the node
/// the connection's handshake authenticated; drops and counts it otherwise.
fn push_authenticated(events: &EventQueue, peer: NodeId, message: Message) {
    if message.from != peer {
        let violation = ProtocolViolation {
            sender: message.from,
            group: message.group,
            message_kind: message.body.kind(),
            kind: ViolationKind::SenderNotAuthenticated {
                named: message.from,
                authenticated: peer,
            },
        };
        events.violations.record(peer, &violation);
        return;
    }
    let _ = events.push(Event::Raft(message));
}

/// Queues a snapshot chunk or chunk ack for the shard (`install.rs`), if it
/// names as its sender the node the handshake authenticated.
fn push_snapshot_stream(events: &EventQueue, peer: NodeId, envelope: &Envelope) {
    let (kind, event) = match &envelope.body {
        RaftBody::SnapshotChunk(chunk) => (
            "SnapshotChunk",
            Event::SnapshotChunk {
                group: GroupId(envelope.group),
                from: NodeId(envelope.from),
                term: Term(envelope.term),
                chunk: chunk.clone(),
            },
        ),
        RaftBody::SnapshotChunkAck(ack) => (
            "SnapshotChunkAck",
            Event::SnapshotChunkAck {
                group: GroupId(envelope.group),
                from: NodeId(envelope.from),
                ack: ack.clone(),
            },
        ),
        _ => return,
    };
    if envelope.from != peer.0 {
        let violation = ProtocolViolation {
            sender: NodeId(envelope.from),
            group: GroupId(envelope.group),
            message_kind: kind,
            kind: ViolationKind::SenderNotAuthenticated {
                named: NodeId(envelope.from),
                authenticated: peer,
            },
        };
        events.violations.record(peer, &violation);
        return;
    }
    let _ = events.push(event);
}

async fn serve_client(
    mut connection: coraft_net::InboundConnection,
    events: Rc<EventQueue>,
    forwarder: Option<Rc<Forwarder>>,
    admin: Arc<AdminService>,
    arena: Rc<RefCell<CommandArena>>,
) {
    let Some(mut writer) = connection.take_response_writer() else {
        return;
    };
    let (doorbell, bell) = local_channel::new_bounded(1);
    let outbox = Rc::new(ClientOutbox::new(doorbell, connection.peer().client_protocol));
    let writer_outbox = outbox.clone();
    let writer_task = glommio::spawn_local(async move {
        // The queue being sent; swapped with the outbox's, so both keep
        // their room and queueing a response allocates nothing.
        let mut sending = ResponseQueue::default();
        while bell.recv().await.is_some() {
            std::mem::swap(&mut sending, &mut *writer_outbox.responses.borrow_mut());
            for frame in sending.frames() {
                if writer.send(&frame).await.is_err() {
                    return;
                }
            }
            sending.clear();
            let answers = std::mem::take(&mut *writer_outbox.admin.borrow_mut());
            for answer in answers {
                let refused = match writer.send(&answer).await {
                    Ok(()) => continue,
                    // Refused before a byte was written: answer that instead.
                    Err(error @ (NetError::Oversized { .. } | NetError::Encode { .. })) => error,
                    Err(error) => {
                        log::debug!("an admin answer could not be sent: {error}");
                        return;
                    }
                };
                let fallback = AdminResponseFrame {
                    result: Err(AdminError::Failed {
                        reason: format!("the answer does not fit in a frame ({refused}): ask about fewer groups"),
                    }),
                    ..answer
                };
                if writer.send(&fallback).await.is_err() {
                    return;
                }
            }
        }
    });
    let route = ClientRoute::Local(outbox.clone());
    let connection_id = forwarder.as_ref().map(|f| f.register(&outbox));
    let mut admin_queue: Option<AdminQueue> = None;
    while let Ok(Some(frame)) = connection.recv().await {
        if let Some(request) = frame.admin_request() {
            let queue = admin_queue.get_or_insert_with(|| AdminQueue::spawn(admin.clone(), outbox.clone()));
            queue.push(request, &admin, &outbox);
            continue;
        }
        let Some(archived) = frame.client_requests() else {
            continue;
        };
        // One clock read per frame: its requests arrived together.
        let received = std::time::Instant::now();
        if !client_requests(
            archived,
            received,
            &route,
            &events,
            forwarder.as_deref(),
            connection_id,
            &arena,
        ) {
            break;
        }
    }
    if let (Some(forwarder), Some(id)) = (&forwarder, connection_id) {
        forwarder.unregister(id);
    }
    if let Some(queue) = admin_queue {
        queue.task.cancel();
    }
    drop(route);
    drop(outbox);
    writer_task.cancel().await;
}

/// Queues (or forwards to the shard that owns its group) each request of a
/// client frame, read in place: a write under a session becomes its command
/// for the log straight from the frame's bytes, without an owned copy of the
/// request first. False if a request could not be read (the connection is
/// then closed, as for any invalid frame).
fn client_requests(
    archived: &ArchivedClientRequestBatch,
    received: std::time::Instant,
    route: &ClientRoute,
    events: &EventQueue,
    forwarder: Option<&Forwarder>,
    connection_id: Option<u64>,
    arena: &RefCell<CommandArena>,
) -> bool {
    for archived in archived.requests.iter() {
        let group = match archived {
            ArchivedClientRequest::Propose { group, .. }
            | ArchivedClientRequest::Read { group, .. }
            | ArchivedClientRequest::RegisterSession { group, .. } => group.to_native(),
        };
        let forward_to = forwarder
            .zip(connection_id)
            .filter(|(f, _)| f.owner(group) != f.shard());
        if let (
            None,
            ArchivedClientRequest::Propose {
                client_id,
                session,
                sequence,
                lowest_unanswered,
                payload,
                ..
            },
        ) = (forward_to, archived)
        {
            let command = arena.borrow_mut().encode(&LoggedCommand::Session {
                // Stamped by the shard when it takes the proposal.
                leader_time_ms: 0,
                session: session.to_native(),
                sequence: sequence.to_native(),
                lowest_unanswered: lowest_unanswered.to_native(),
                data: payload.as_slice(),
            });
            // The data was just copied: its CRC now saves apply's on cold bytes.
            let data_crc = session_data_crc(&command);
            let proposal = ClientProposal {
                client_id: client_id.to_native(),
                sequence: sequence.to_native(),
                group,
                command,
                data_crc,
            };
            if let Err(refused) = events.push(Event::ClientProposal {
                proposal,
                route: route.clone(),
                received,
            }) {
                if let Event::ClientProposal { proposal, route, .. } = *refused {
                    route.push(super::shard::busy_response(
                        proposal.client_id,
                        proposal.sequence,
                        group,
                    ));
                }
            }
            continue;
        }
        if let (
            None,
            ArchivedClientRequest::Read {
                client_id,
                request_id,
                payload,
                consistency,
                ..
            },
        ) = (forward_to, archived)
        {
            let stale = match consistency {
                ArchivedReadConsistency::Stale => true,
                ArchivedReadConsistency::Linearizable => false,
            };
            let read = ClientRead {
                client_id: client_id.to_native(),
                request_id: request_id.to_native(),
                group,
                query: arena.borrow_mut().copy(payload.as_slice()),
                stale,
            };
            if let Err(refused) = events.push(Event::ClientRead {
                read,
                route: route.clone(),
                received,
            }) {
                if let Event::ClientRead { read, route, .. } = *refused {
                    route.push(super::shard::busy_response(read.client_id, read.request_id, group));
                }
            }
            continue;
        }
        let Ok(request) = rkyv::deserialize::<ClientRequest, rkyv::rancor::Error>(archived) else {
            return false;
        };
        if let Some((forwarder, id)) = forward_to {
            // Another shard owns the group: hand the request over.
            let ids = super::shard::busy_response_for(&request);
            if !forwarder.forward(request, group, id, received) {
                route.push(ids);
            }
            continue;
        }
        if let Err(refused) = events.push(Event::Client {
            received,
            request,
            route: route.clone(),
        }) {
            if let Event::Client { request, route, .. } = *refused {
                super::shard::refuse_busy(&request, &route);
            }
        }
    }
    true
}

/// The admin requests of one client connection, served one at a time by a
/// task of their own (so a slow one never holds up the connection's client
/// requests), at most [`ADMIN_REQUESTS_QUEUED_MAX`] waiting.
struct AdminQueue {
    sender: local_channel::LocalSender<AdminRequestFrame>,
    task: glommio::task::JoinHandle<()>,
}

impl AdminQueue {
    fn spawn(admin: Arc<AdminService>, outbox: Rc<ClientOutbox>) -> AdminQueue {
        let (sender, receiver) = local_channel::new_bounded::<AdminRequestFrame>(ADMIN_REQUESTS_QUEUED_MAX);
        let task = glommio::spawn_local(async move {
            while let Some(request) = receiver.recv().await {
                let answer = admin.serve(request).await;
                outbox.push_admin(answer);
            }
        })
        .detach();
        AdminQueue { sender, task }
    }

    /// Queues a request read off the connection, or answers at once one
    /// that does not read (a bad request) or does not fit (busy).
    fn push(&self, request: Result<&ArchivedAdminRequestFrame, NetError>, admin: &AdminService, outbox: &ClientOutbox) {
        let request = request.map_err(|e| e.to_string()).and_then(|archived| {
            rkyv::deserialize::<AdminRequestFrame, rkyv::rancor::Error>(archived).map_err(|e| e.to_string())
        });
        match request {
            Err(reason) => {
                log::warn!("answering an unreadable admin request: {reason}");
                outbox.push_admin(admin.unreadable(reason));
            }
            Ok(request) => {
                let request_id = request.request_id;
                if self.sender.try_send(request).is_err() {
                    outbox.push_admin(admin.busy(request_id));
                }
            }
        }
    }
}

/// Whether the peer behind `connection` is down: not connected, and not on
/// its first attempt (its connection failed or was refused since it was
/// opened). Nothing is queued for a down peer. What was built while it was
/// away would reach it stale when it comes back (appends from before the
/// leader compacted, answers to rounds long over) and hold up to
/// `outbound_queue_bytes_max` per down peer meanwhile; Raft sends what is
/// still needed once it answers again. What was queued before the stop was
/// noticed is still delivered: late, not wrong (`docs/architecture.md`,
/// "What a peer's queue held when it stopped").
fn peer_down(connection: &OutboundConnection) -> bool {
    let stats = connection.stats();
    connection.state() != ConnectionState::Connected && stats.failures + stats.refusals > 0
}
