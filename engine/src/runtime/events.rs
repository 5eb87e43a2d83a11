//! The shard's inbox: tasks on the shard (connection readers, the ticker,
//! the WAL sync waiter, the API bridge) push events; the shard loop drains
//! them all at once each turn, so work that arrives together is batched.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use coraft_net::schema::{ClientRequest, SnapshotChunk, SnapshotChunkAck};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::raft::{GroupId, Message, NodeId, Term};

use super::codec::ReceivedEntryVectors;
use super::crc_hints::CrcHints;
use super::forward::ClientRoute;
use super::node::ApiRequest;
use super::violations::PeerViolations;

/// Bound on events waiting for the shard loop; beyond it Raft messages are
/// dropped (Raft tolerates loss) and client requests are refused as busy.
pub const EVENTS_QUEUED_MAX: usize = 1 << 18;
/// Bound on the events whose room the loop keeps between turns
/// ([`EventQueue::swap_into`]).
pub const EVENTS_RETAINED_MAX: usize = 1 << 12;

/// Something for the shard loop to handle.
pub(crate) enum Event {
    Raft(Message),
    Client {
        request: ClientRequest,
        route: ClientRoute,
        /// When its frame was read off the connection.
        received: std::time::Instant,
    },
    /// A client's write under its session, laid out for the log where its
    /// frame was read (the hot path: no owned copy of the request).
    ClientProposal {
        proposal: ClientProposal,
        route: ClientRoute,
        /// When its frame was read off the connection.
        received: std::time::Instant,
    },
    /// A client's read, its query copied out of the frame it was read
    /// from into the shard's arena (no owned copy of the request first).
    ClientRead {
        read: ClientRead,
        route: ClientRoute,
        /// When its frame was read off the connection.
        received: std::time::Instant,
    },
    Api(ApiRequest),
    Tick,
    /// A frame arrived from this peer node (it is alive).
    PeerHeard(NodeId),
    Synced(Result<u64, String>, std::time::Duration),
    /// A piece of a snapshot a leader streams to this node (`install.rs`).
    SnapshotChunk {
        group: GroupId,
        from: NodeId,
        /// The leader's term.
        term: Term,
        chunk: SnapshotChunk,
    },
    /// A follower's answer to a chunk this node streamed.
    SnapshotChunkAck {
        group: GroupId,
        from: NodeId,
        ack: SnapshotChunkAck,
    },
}

/// A client's `Propose` as the shard takes it: its ids and its command
/// encoded for the log (a piece of the shard's `codec::CommandArena`) with
/// the leader time left for the shard to stamp (`codec::stamp_leader_time`).
pub(crate) struct ClientProposal {
    pub client_id: u64,
    pub sequence: u64,
    pub group: u64,
    pub command: bytes::BytesMut,
    /// The CRC of the command's data, computed as it was laid out
    /// (`crc_hints.rs`).
    pub data_crc: Option<u32>,
}

/// A client's `Read` as the shard takes it: its ids, its query (a piece of
/// the shard's `codec::CommandArena`) and whether it may be stale.
pub(crate) struct ClientRead {
    pub client_id: u64,
    pub request_id: u64,
    pub group: u64,
    pub query: bytes::Bytes,
    /// `ReadConsistency::Stale`: answered from what is applied, no read index.
    pub stale: bool,
}

/// A bounded queue of events plus a doorbell that wakes the loop.
pub(crate) struct EventQueue {
    queue: RefCell<VecDeque<Event>>,
    doorbell: LocalSender<()>,
    /// Peers' messages dropped for breaking the protocol, counted by the
    /// connection readers and the shard alike (`violations.rs`).
    pub violations: PeerViolations,
    /// Entry vectors of received appends, filled by the connection readers
    /// and handed back by the shard once a core took their entries.
    pub received_entries: ReceivedEntryVectors,
    /// Session commands' CRCs noted where their bytes were hot (the
    /// connection readers, the shard's proposals), for apply.
    pub crc_hints: CrcHints,
}

impl EventQueue {
    pub fn new() -> (Rc<EventQueue>, LocalReceiver<()>) {
        let (doorbell, bell) = local_channel::new_bounded(1);
        (
            Rc::new(EventQueue {
                queue: RefCell::new(VecDeque::new()),
                doorbell,
                violations: PeerViolations::default(),
                received_entries: ReceivedEntryVectors::default(),
                crc_hints: CrcHints::default(),
            }),
            bell,
        )
    }

    /// Queues an event; returns it back if the queue is full.
    pub fn push(&self, event: Event) -> Result<(), Box<Event>> {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= EVENTS_QUEUED_MAX {
            return Err(Box::new(event));
        }
        queue.push_back(event);
        drop(queue);
        let _ = self.doorbell.try_send(());
        Ok(())
    }

    /// Wakes the loop for another turn even if nothing new is queued.
    pub fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    /// Swaps every queued event into `spare` (which must be empty), whose
    /// room the queue keeps for the next turn's events: a loop that swaps
    /// two buffers turn after turn grows neither again. A buffer that held
    /// more than [`EVENTS_RETAINED_MAX`] is given back instead.
    pub fn swap_into(&self, spare: &mut VecDeque<Event>) {
        debug_assert!(spare.is_empty(), "the spare buffer is drained before a swap");
        if spare.capacity() > EVENTS_RETAINED_MAX {
            *spare = VecDeque::new();
        }
        std::mem::swap(&mut *self.queue.borrow_mut(), spare);
    }
}
