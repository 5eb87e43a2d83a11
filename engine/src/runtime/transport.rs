//! The shard's network: one outbound connection per peer node (to the
//! peer's shard with the same index), and a listener whose connections feed
//! the shard's inbox — Raft frames from peers, requests from clients.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use coraft_net::schema::{ClientRequestBatch, ClientResponseBatch, RaftBatch};
use coraft_net::{Listener, NetConfig, OutboundConnection, PeerAddress, Role as NetRole};
use glommio::channels::local_channel;

use crate::raft::{Message, NodeId};

use super::codec::{from_wire, to_wire};
use super::events::{Event, EventQueue};
use super::reply::ClientOutbox;

/// Outbound connections of one shard.
pub(crate) struct Peers {
    connections: BTreeMap<NodeId, OutboundConnection>,
    /// Messages queued to peers.
    pub sent: u64,
    /// Messages dropped because a peer's queue was full (Raft re-sends).
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
            connections,
            sent: 0,
            dropped: 0,
        })
    }

    /// Queues a message; a full queue drops it (back-pressure: Raft resends).
    pub fn send(&mut self, message: &Message) {
        let Some(connection) = self.connections.get(&message.to) else {
            self.dropped += 1;
            return;
        };
        if connection.try_send(to_wire(message)).is_err() {
            self.dropped += 1;
        } else {
            self.sent += 1;
        }
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
pub(crate) async fn serve(listener: Rc<Listener>, events: Rc<EventQueue>) {
    log::debug!("listening on {}", listener.local_addr());
    let tasks = Rc::new(ConnectionTasks::default());
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
        let id = tasks.next_id.get();
        tasks.next_id.set(id + 1);
        let registry = Rc::downgrade(&tasks);
        let handle = glommio::spawn_local(async move {
            if let Ok(connection) = handshaking.handshake().await {
                match connection.peer().role {
                    NetRole::Peer => serve_peer(connection, events).await,
                    NetRole::Client => serve_client(connection, events).await,
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
    loop {
        let frame = match connection.recv().await {
            Ok(Some(frame)) => frame,
            other => {
                log::debug!("peer {:?} connection ends: {:?}", connection.peer(), other.map(|_| ()));
                return;
            }
        };
        let Some(archived) = frame.raft() else { continue };
        let Ok(batch) = rkyv::deserialize::<RaftBatch, rkyv::rancor::Error>(archived) else {
            log::warn!(
                "dropping a Raft frame that does not deserialize from {:?}",
                connection.peer()
            );
            return;
        };
        for envelope in &batch.messages {
            match from_wire(envelope) {
                Ok(Some(message)) => {
                    let _ = events.push(Event::Raft(message));
                }
                Ok(None) => {}
                Err(error) => {
                    log::warn!("closing peer {:?}: bad message: {error}", connection.peer());
                    return;
                }
            }
        }
    }
}

async fn serve_client(mut connection: coraft_net::InboundConnection, events: Rc<EventQueue>) {
    let Some(mut writer) = connection.take_response_writer() else {
        return;
    };
    let (doorbell, bell) = local_channel::new_bounded(1);
    let outbox = Rc::new(ClientOutbox {
        responses: RefCell::new(Vec::new()),
        doorbell,
    });
    let writer_outbox = outbox.clone();
    let writer_task = glommio::spawn_local(async move {
        while bell.recv().await.is_some() {
            let responses = std::mem::take(&mut *writer_outbox.responses.borrow_mut());
            if responses.is_empty() {
                continue;
            }
            if writer.send(&ClientResponseBatch { responses }).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(frame)) = connection.recv().await {
        let Some(archived) = frame.client_requests() else {
            continue;
        };
        let Ok(batch) = rkyv::deserialize::<ClientRequestBatch, rkyv::rancor::Error>(archived) else {
            return;
        };
        for request in batch.requests {
            if let Err(refused) = events.push(Event::Client {
                request,
                outbox: outbox.clone(),
            }) {
                if let Event::Client { request, outbox } = *refused {
                    super::shard::refuse_busy(&request, &outbox);
                }
            }
        }
    }
    drop(outbox);
    writer_task.cancel().await;
}
