//! Requests that reach the wrong shard. A client connection lives on the
//! shard whose address it dialled; a request for a group owned by another
//! shard of the node crosses to that shard over glommio's channel mesh (one
//! lock-free SPSC channel per ordered pair of shards, bounded by
//! [`FORWARD_QUEUE_MAX`]), and its response crosses back to the connection.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Instant;

use coraft_net::schema::{ClientError, ClientRequest, ClientResponse};
use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};

use super::events::{Event, EventQueue};
use super::reply::ClientOutbox;

/// Bound on messages queued from one shard to another.
pub const FORWARD_QUEUE_MAX: usize = 4096;

/// What crosses between the shards of one node.
pub(crate) enum Forwarded {
    /// A client request for a group of the receiving shard.
    Request {
        request: ClientRequest,
        /// The shard holding the client's connection.
        origin: usize,
        connection: u64,
        received: Instant,
    },
    /// The response to a forwarded request, for the connection's shard.
    Response { connection: u64, response: ClientResponse },
}

/// This shard's receiving end of the mesh.
pub(crate) type MeshReceivers = Receivers<Forwarded>;

/// The mesh every shard of a node joins at start.
pub(crate) type Mesh = MeshBuilder<Forwarded, glommio::channels::channel_mesh::Full>;

/// A new mesh for `shards` shards.
pub(crate) fn mesh(shards: usize) -> Mesh {
    MeshBuilder::full(shards, FORWARD_QUEUE_MAX)
}

/// One shard's end of the mesh.
pub(crate) struct Forwarder {
    shard: usize,
    shards: usize,
    senders: Senders<Forwarded>,
    connections: RefCell<BTreeMap<u64, Weak<ClientOutbox>>>,
    next_connection: Cell<u64>,
}

/// Where the response to a client request goes.
#[derive(Clone)]
pub(crate) enum ClientRoute {
    /// A connection on this shard.
    Local(Rc<ClientOutbox>),
    /// A connection on another shard of this node.
    Remote {
        forwarder: Rc<Forwarder>,
        origin: usize,
        connection: u64,
    },
}

impl ClientRoute {
    /// Queues a response whose result is borrowed: a local connection copies
    /// it into its queue's buffer; one on another shard gets a vector.
    pub fn push_ref(
        &self,
        client_id: u64,
        request_id: u64,
        group: u64,
        leader_hint: Option<u64>,
        result: Result<&[u8], ClientError>,
    ) {
        match self {
            ClientRoute::Local(outbox) => outbox.push_ref(client_id, request_id, group, leader_hint, result),
            ClientRoute::Remote { .. } => self.push(ClientResponse {
                client_id,
                request_id,
                group,
                leader_hint,
                result: result.map(<[u8]>::to_vec),
            }),
        }
    }

    pub fn push(&self, response: ClientResponse) {
        match self {
            ClientRoute::Local(outbox) => outbox.push(response),
            ClientRoute::Remote {
                forwarder,
                origin,
                connection,
            } => {
                let item = Forwarded::Response {
                    connection: *connection,
                    response,
                };
                // A full channel loses the response; the client times out and
                // retries (a write with its original sequence: applied once).
                if forwarder.senders.try_send_to(*origin, item).is_err() {
                    log::debug!("shard {}: dropped a response for shard {origin}", forwarder.shard);
                }
            }
        }
    }
}

impl Forwarder {
    /// Joins the node's mesh as shard `shard`; `None` for a single shard.
    pub async fn join(
        mesh: Option<Mesh>,
        shard: usize,
    ) -> Result<Option<(Rc<Forwarder>, Receivers<Forwarded>)>, String> {
        let Some(mesh) = mesh else { return Ok(None) };
        let shards = mesh.nr_peers();
        let (senders, receivers) = mesh
            .join()
            .await
            .map_err(|e| format!("joining the shards' channel mesh: {e}"))?;
        // The mesh numbers its peers by executor id; shards start in order,
        // so the numbers agree. Check rather than trust.
        if senders.peer_id() != shard {
            return Err(format!(
                "shard {shard} got place {} in the channel mesh",
                senders.peer_id()
            ));
        }
        let forwarder = Forwarder {
            shard,
            shards,
            senders,
            connections: RefCell::new(BTreeMap::new()),
            next_connection: Cell::new(1),
        };
        Ok(Some((Rc::new(forwarder), receivers)))
    }

    /// The shard that owns `group`.
    pub fn owner(&self, group: u64) -> usize {
        (group % self.shards as u64) as usize
    }

    /// This shard.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Registers a client connection's outbox; returns its id.
    pub fn register(&self, outbox: &Rc<ClientOutbox>) -> u64 {
        let id = self.next_connection.get();
        self.next_connection.set(id + 1);
        self.connections.borrow_mut().insert(id, Rc::downgrade(outbox));
        id
    }

    pub fn unregister(&self, connection: u64) {
        self.connections.borrow_mut().remove(&connection);
    }

    /// Sends `request` to the shard owning `group`; `false` if that shard's
    /// channel is full or closed (the caller answers busy). `received` is
    /// when its frame arrived (the transport's one clock reading per frame,
    /// not one more per forwarded request).
    pub fn forward(&self, request: ClientRequest, group: u64, connection: u64, received: Instant) -> bool {
        let item = Forwarded::Request {
            request,
            origin: self.shard,
            connection,
            received,
        };
        self.senders.try_send_to(self.owner(group), item).is_ok()
    }

    fn deliver(&self, connection: u64, response: ClientResponse) {
        let outbox = self.connections.borrow().get(&connection).and_then(Weak::upgrade);
        if let Some(outbox) = outbox {
            outbox.push(response);
        }
    }
}

/// Serves what other shards send this one until cancelled.
pub(crate) async fn serve(forwarder: Rc<Forwarder>, mut receivers: Receivers<Forwarded>, events: Rc<EventQueue>) {
    let tasks: Vec<_> = receivers
        .streams()
        .into_iter()
        .map(|(_, receiver)| {
            let forwarder = forwarder.clone();
            let events = events.clone();
            glommio::spawn_local(async move {
                while let Some(item) = receiver.recv().await {
                    match item {
                        Forwarded::Request {
                            request,
                            origin,
                            connection,
                            received,
                        } => {
                            let route = ClientRoute::Remote {
                                forwarder: forwarder.clone(),
                                origin,
                                connection,
                            };
                            if let Err(refused) = events.push(Event::Client {
                                request,
                                route,
                                received,
                            }) {
                                if let Event::Client { request, route, .. } = *refused {
                                    super::shard::refuse_busy(&request, &route);
                                }
                            }
                        }
                        Forwarded::Response { connection, response } => forwarder.deliver(connection, response),
                    }
                }
            })
            .detach()
        })
        .collect();
    // Dropping the handles would not stop the tasks; wait on them so that
    // cancelling this task cancels them too.
    struct CancelOnDrop(Vec<glommio::task::JoinHandle<()>>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            for task in &self.0 {
                task.cancel();
            }
        }
    }
    let tasks = CancelOnDrop(tasks);
    futures_lite::future::pending::<()>().await;
    drop(tasks);
}
