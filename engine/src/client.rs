//! A blocking Rust client for a coraft cluster: it finds each group's leader,
//! follows leader hints, retries reads freely, and retries a write only with
//! the same (session, sequence) — which the cluster applies at most once —
//! so a write whose outcome is unknown is never applied twice.
//!
//! Sessions (Raft thesis §6.3): a client makes a 128-bit random session id
//! and registers it with each group it writes to, through the group's log,
//! before its first write there. A write the group's session table cannot
//! vouch for comes back as [`ClientFailure::SessionExpired`] or
//! [`ClientFailure::StaleSequence`]: not applied, and not retried here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coraft_net::schema::{ClientError, ClientRequest, ClientRequestBatch, ClientResponseBatch, ReadConsistency};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

use crate::raft::{GroupId, NodeId};

/// Bound on attempts of one request (each follows a hint or backs off).
pub const ATTEMPTS_MAX: usize = 16;

/// Where the cluster is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The cluster's id (a node of another cluster refuses the handshake).
    pub cluster_id: u64,
    /// Each node and its shards' addresses.
    pub nodes: Vec<(NodeId, Vec<SocketAddr>)>,
    /// How long one attempt waits for its answer.
    pub attempt_timeout: Duration,
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientFailure {
    /// The cluster answered with an error it will not recover from by retrying.
    #[error("the cluster refused: {0:?}")]
    Refused(ClientError),
    /// The group does not know this client's session (it expired, was
    /// evicted, or was never registered): the write was not applied. A new
    /// [`Client`] gets a new session; whether earlier unanswered writes
    /// applied is unknown.
    #[error("the session expired: the write was not applied")]
    SessionExpired,
    /// The session cannot vouch for this sequence (older than the group
    /// remembers, or used before for another command): not applied.
    #[error("the session cannot vouch for this sequence: the write was not applied")]
    StaleSequence,
    /// No answer after [`ATTEMPTS_MAX`] attempts; a write's outcome is unknown
    /// (retrying with [`Client::retry_write`] cannot apply it twice).
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: usize,
        /// What went wrong last.
        last: String,
    },
    /// A node refused the handshake (another cluster, an incompatible
    /// version): retrying cannot help.
    #[error("handshake refused: {0}")]
    HandshakeRefused(String),
    /// The configuration lists no node.
    #[error("no node to talk to")]
    NoNodes,
    /// The write was applied, but the state machine's result was refused
    /// by a bound (`APPLY_RESULT_BYTES_MAX` per result,
    /// `APPLY_RESULTS_BYTES_MAX` per apply call): there is no result to
    /// return, and a retry of the write gets an empty one. A node from
    /// before client protocol 1 answers `Storage` instead (seen here as
    /// [`ClientFailure::GaveUp`] after trying the other nodes).
    #[error("the write was applied, but its result was too large to answer with")]
    ResultTooLarge,
}

/// What went wrong talking to one node.
enum AttemptError {
    Refused(String),
    Transport(String),
}

/// Request ids of reads and registrations start here, apart from the write
/// sequences that share the response's `request_id` field.
const REQUEST_ID_FIRST: u64 = 1 << 63;

/// A blocking client.
pub struct Client {
    config: ClientConfig,
    connections: HashMap<(NodeId, usize), BlockingConnection>,
    leaders: HashMap<GroupId, NodeId>,
    session: u128,
    /// Groups this session is registered with (all of them for a resumed one).
    registered: HashSet<GroupId>,
    resumed: bool,
    next_sequence: u64,
    next_request: u64,
    last_write: Option<(GroupId, u64, Vec<u8>)>,
}

impl Client {
    /// A client with a new random session; it connects lazily and registers
    /// the session with a group before its first write there.
    pub fn new(config: ClientConfig) -> Client {
        let mut bytes = [0u8; 16];
        // Without an OS random source a session could collide with another
        // client's: a client that cannot get one must not run.
        getrandom::getrandom(&mut bytes).expect("the OS random source (getrandom) for a session id");
        Client::with_session(config, u128::from_le_bytes(bytes), 1, false)
    }

    /// A client that goes on with a session it kept across a restart
    /// ([`Client::session`], [`Client::next_sequence`]): it does not register
    /// again, so a session the cluster no longer knows gives
    /// [`ClientFailure::SessionExpired`] rather than a fresh start.
    pub fn resume(config: ClientConfig, session: u128, next_sequence: u64) -> Client {
        Client::with_session(config, session, next_sequence, true)
    }

    fn with_session(config: ClientConfig, session: u128, next_sequence: u64, resumed: bool) -> Client {
        Client {
            config,
            connections: HashMap::new(),
            leaders: HashMap::new(),
            session,
            registered: HashSet::new(),
            resumed,
            next_sequence,
            next_request: REQUEST_ID_FIRST,
            last_write: None,
        }
    }

    /// This client's session id.
    pub fn session(&self) -> u128 {
        self.session
    }

    /// The node this client last found leading `group`, if any.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.get(&group).copied()
    }

    /// The sequence the next write takes.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Replicates `payload` in `group` and returns the state machine's result.
    pub fn write(&mut self, group: GroupId, payload: &[u8]) -> Result<Vec<u8>, ClientFailure> {
        self.register(group)?;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.last_write = Some((group, sequence, payload.to_vec()));
        self.send_write(group, sequence, payload)
    }

    /// Retries the last write with its original sequence: applied at most once.
    pub fn retry_write(&mut self) -> Result<Vec<u8>, ClientFailure> {
        let (group, sequence, payload) = self.last_write.clone().ok_or(ClientFailure::NoNodes)?;
        self.send_write(group, sequence, &payload)
    }

    /// A linearizable read of `group`.
    pub fn read(&mut self, group: GroupId, query: &[u8]) -> Result<Vec<u8>, ClientFailure> {
        let request_id = self.request_id();
        let request = ClientRequest::Read {
            client_id: self.tag(),
            request_id,
            group: group.0,
            payload: query.to_vec(),
            consistency: ReadConsistency::Linearizable,
        };
        self.call(group, request, request_id)
    }

    /// A possibly stale read of `group`: answered by the first node of the
    /// configuration that answers at all (the next one after a transport
    /// error), from what that node has applied, without contacting the
    /// leader. It may miss acknowledged writes (the node may lag or be cut
    /// off from the leader); it never sees what the node has not applied.
    /// List the node to read from first.
    pub fn read_stale(&mut self, group: GroupId, query: &[u8]) -> Result<Vec<u8>, ClientFailure> {
        if self.config.nodes.is_empty() {
            return Err(ClientFailure::NoNodes);
        }
        let request_id = self.request_id();
        let request = ClientRequest::Read {
            client_id: self.tag(),
            request_id,
            group: group.0,
            payload: query.to_vec(),
            consistency: ReadConsistency::Stale,
        };
        let mut last = String::new();
        for attempt in 0..ATTEMPTS_MAX {
            let node = self.config.nodes[attempt % self.config.nodes.len()].0;
            match self.attempt(node, group, &request, request_id) {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err((ClientError::Busy | ClientError::Timeout, _))) => {
                    last = format!("node {node} is busy");
                    std::thread::sleep(backoff(attempt));
                }
                // That node cannot answer: the next one may.
                Ok(Err((error @ (ClientError::Storage | ClientError::Shutdown), _))) => {
                    last = format!("node {node} answered {error:?}");
                    std::thread::sleep(backoff(attempt));
                }
                Ok(Err((error, _))) => return Err(ClientFailure::Refused(error)),
                Err(AttemptError::Refused(reason)) => return Err(ClientFailure::HandshakeRefused(reason)),
                Err(AttemptError::Transport(error)) => {
                    last = error;
                    self.connections.retain(|(n, _), _| *n != node);
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
        Err(ClientFailure::GaveUp {
            attempts: ATTEMPTS_MAX,
            last,
        })
    }

    /// Registers the session with `group` through its log, once.
    fn register(&mut self, group: GroupId) -> Result<(), ClientFailure> {
        if self.resumed || self.registered.contains(&group) {
            return Ok(());
        }
        let request_id = self.request_id();
        let request = ClientRequest::RegisterSession {
            client_id: self.tag(),
            request_id,
            group: group.0,
            session: self.session,
        };
        // Registering again only refreshes the session: retries are harmless.
        self.call(group, request, request_id)?;
        self.registered.insert(group);
        Ok(())
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(REQUEST_ID_FIRST);
        id
    }

    /// The id responses echo (the session's low bits; only for matching).
    fn tag(&self) -> u64 {
        self.session as u64
    }

    fn send_write(&mut self, group: GroupId, sequence: u64, payload: &[u8]) -> Result<Vec<u8>, ClientFailure> {
        // One write at a time: every earlier one is answered or abandoned,
        // so the group may forget all results below this one.
        let request = ClientRequest::Propose {
            client_id: self.tag(),
            session: self.session,
            sequence,
            lowest_unanswered: sequence,
            group: group.0,
            payload: payload.to_vec(),
        };
        self.call(group, request, sequence)
    }

    fn call(&mut self, group: GroupId, request: ClientRequest, request_id: u64) -> Result<Vec<u8>, ClientFailure> {
        if self.config.nodes.is_empty() {
            return Err(ClientFailure::NoNodes);
        }
        let mut last = String::new();
        let mut next_guess = 0;
        // A node whose storage failed: not asked again while others remain.
        let mut avoid: Option<NodeId> = None;
        // The nodes asked so far in this call (at most one per attempt).
        let mut asked: Vec<NodeId> = Vec::with_capacity(ATTEMPTS_MAX);
        for attempt in 0..ATTEMPTS_MAX {
            let node = match self.leaders.get(&group) {
                Some(&node) => node,
                None => {
                    next_guess = (next_guess + 1) % self.config.nodes.len();
                    if Some(self.config.nodes[next_guess].0) == avoid && self.config.nodes.len() > 1 {
                        next_guess = (next_guess + 1) % self.config.nodes.len();
                    }
                    self.config.nodes[next_guess].0
                }
            };
            if !asked.contains(&node) {
                asked.push(node);
            }
            match self.attempt(node, group, &request, request_id) {
                Ok(Ok(result)) => {
                    self.leaders.insert(group, node);
                    return Ok(result);
                }
                Ok(Err((ClientError::NotLeader { leader_hint }, _))) => {
                    // Not applied: safe to send elsewhere.
                    let followed = match leader_hint {
                        Some(hint) if hint != node.0 && Some(NodeId(hint)) != avoid => {
                            self.leaders.insert(group, NodeId(hint));
                            // A hint back to a node that already refused
                            // (a transfer's old leader names its target,
                            // which names the old leader until it is
                            // elected) is no news: wait before asking again.
                            !asked.contains(&NodeId(hint))
                        }
                        _ => {
                            self.leaders.remove(&group);
                            false
                        }
                    };
                    last = format!("node {node} is not the leader");
                    // Without a new leader to try (no hint, a hint naming
                    // the node whose storage failed, which its followers
                    // still believe until their election timeout, or a hint
                    // back to a node asked before), back off: otherwise the
                    // attempts run out before an election.
                    if !followed {
                        std::thread::sleep(backoff(attempt));
                    }
                }
                Ok(Err((ClientError::Busy | ClientError::Timeout, _))) => {
                    last = format!("node {node} is busy");
                    std::thread::sleep(backoff(attempt));
                }
                Ok(Err((ClientError::SessionExpired, _))) => return Err(ClientFailure::SessionExpired),
                Ok(Err((ClientError::StaleSequence, _))) => return Err(ClientFailure::StaleSequence),
                // Applied: asking again only gets an empty result.
                Ok(Err((ClientError::ResultTooLarge, _))) => return Err(ClientFailure::ResultTooLarge),
                Ok(Err((ClientError::Storage, _))) => {
                    // Its WAL failed: the write may or may not be in the log.
                    // Another node gets the same (session, sequence), which
                    // the group applies at most once.
                    last = format!("node {node} reported a storage failure");
                    avoid = Some(node);
                    self.leaders.remove(&group);
                    std::thread::sleep(backoff(attempt));
                }
                Ok(Err((error, _))) => return Err(ClientFailure::Refused(error)),
                Err(AttemptError::Refused(reason)) => return Err(ClientFailure::HandshakeRefused(reason)),
                Err(AttemptError::Transport(error)) => {
                    // Outcome unknown: retry with the same id (at most once).
                    last = error;
                    self.connections.retain(|(n, _), _| *n != node);
                    self.leaders.remove(&group);
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
        Err(ClientFailure::GaveUp {
            attempts: ATTEMPTS_MAX,
            last,
        })
    }

    #[allow(clippy::type_complexity)]
    fn attempt(
        &mut self,
        node: NodeId,
        group: GroupId,
        request: &ClientRequest,
        request_id: u64,
    ) -> Result<Result<Vec<u8>, (ClientError, Option<u64>)>, AttemptError> {
        let shard_count = self
            .config
            .nodes
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(1, |(_, a)| a.len().max(1));
        let shard = (group.0 % shard_count as u64) as usize;
        let timeout = self.config.attempt_timeout;
        let connection = self.connection(node, shard)?;
        connection
            .send(&ClientRequestBatch {
                requests: vec![request.clone()],
            })
            .map_err(|e| AttemptError::Transport(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(AttemptError::Transport(format!(
                    "no answer from node {node} within {timeout:?}"
                )));
            }
            let frame = connection
                .recv()
                .map_err(|e| AttemptError::Transport(e.to_string()))?
                .ok_or_else(|| AttemptError::Transport("connection closed".into()))?;
            let Some(archived) = frame.client_responses() else {
                continue;
            };
            let batch = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived)
                .map_err(|e| AttemptError::Transport(format!("bad response frame: {e}")))?;
            if let Some(response) = batch.responses.into_iter().find(|r| r.request_id == request_id) {
                return Ok(response.result.map_err(|e| (e, response.leader_hint)));
            }
        }
    }

    fn connection(&mut self, node: NodeId, shard: usize) -> Result<&mut BlockingConnection, AttemptError> {
        if !self.connections.contains_key(&(node, shard)) {
            let address = self
                .config
                .nodes
                .iter()
                .find(|(n, _)| *n == node)
                .and_then(|(_, addresses)| addresses.get(shard).copied())
                .ok_or_else(|| AttemptError::Transport(format!("no address for node {node} shard {shard}")))?;
            let hello = Hello {
                cluster_id: self.config.cluster_id,
                node_id: self.tag(),
                shard_id: 0,
                target_shard_id: shard as u32,
                target_node_id: node.0,
                role: NetRole::Client,
                client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
            };
            let connection =
                BlockingConnection::connect(address, &hello, self.config.attempt_timeout).map_err(|e| match e {
                    coraft_net::NetError::Refused { refusal } => {
                        AttemptError::Refused(format!("node {node}: {refusal}"))
                    }
                    other => AttemptError::Transport(format!("connecting to node {node}: {other}")),
                })?;
            connection
                .set_read_timeout(Some(self.config.attempt_timeout))
                .map_err(|e| AttemptError::Transport(e.to_string()))?;
            self.connections.insert((node, shard), connection);
        }
        Ok(self.connections.get_mut(&(node, shard)).expect("inserted"))
    }
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(10u64 << attempt.min(6))
}
