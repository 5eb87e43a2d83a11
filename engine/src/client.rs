//! A blocking Rust client for a coraft cluster: it finds each group's leader,
//! follows leader hints, retries reads freely, and retries a write only with
//! the same (client id, sequence) — which the cluster applies at most once —
//! so a write whose outcome is unknown is never applied twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coraft_net::schema::{ClientError, ClientRequest, ClientRequestBatch, ClientResponseBatch};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

use crate::raft::{GroupId, NodeId};

/// Bound on attempts of one request (each follows a hint or backs off).
pub const ATTEMPTS_MAX: usize = 16;

/// Where the cluster is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The cluster's id (a node of another cluster refuses the handshake).
    pub cluster_id: u64,
    /// This client's id: with the sequence, it makes writes idempotent. Must
    /// be unique among the cluster's clients and not 0.
    pub client_id: u64,
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
}

/// What went wrong talking to one node.
enum AttemptError {
    Refused(String),
    Transport(String),
}

/// A blocking client.
pub struct Client {
    config: ClientConfig,
    connections: HashMap<(NodeId, usize), BlockingConnection>,
    leaders: HashMap<GroupId, NodeId>,
    next_sequence: u64,
    next_request: u64,
    last_write: Option<(GroupId, u64, Vec<u8>)>,
}

impl Client {
    /// A client; it connects lazily.
    pub fn new(config: ClientConfig) -> Client {
        Client {
            config,
            connections: HashMap::new(),
            leaders: HashMap::new(),
            next_sequence: 1,
            next_request: 1,
            last_write: None,
        }
    }

    /// Replicates `payload` in `group` and returns the state machine's result.
    pub fn write(&mut self, group: GroupId, payload: &[u8]) -> Result<Vec<u8>, ClientFailure> {
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
        let request_id = self.next_request;
        self.next_request += 1;
        let request = ClientRequest::Read {
            client_id: self.config.client_id,
            request_id,
            group: group.0,
            payload: query.to_vec(),
        };
        self.call(group, request, request_id)
    }

    fn send_write(&mut self, group: GroupId, sequence: u64, payload: &[u8]) -> Result<Vec<u8>, ClientFailure> {
        let request = ClientRequest::Propose {
            client_id: self.config.client_id,
            sequence,
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
        for attempt in 0..ATTEMPTS_MAX {
            let node = match self.leaders.get(&group) {
                Some(&node) => node,
                None => {
                    next_guess = (next_guess + 1) % self.config.nodes.len();
                    self.config.nodes[next_guess].0
                }
            };
            match self.attempt(node, group, &request, request_id) {
                Ok(Ok(result)) => {
                    self.leaders.insert(group, node);
                    return Ok(result);
                }
                Ok(Err((ClientError::NotLeader { leader_hint }, _))) => {
                    // Not applied: safe to send elsewhere.
                    match leader_hint {
                        Some(hint) if hint != node.0 => self.leaders.insert(group, NodeId(hint)),
                        _ => self.leaders.remove(&group),
                    };
                    last = format!("node {node} is not the leader");
                    if leader_hint.is_none() {
                        std::thread::sleep(backoff(attempt));
                    }
                }
                Ok(Err((ClientError::Busy | ClientError::Timeout, _))) => {
                    last = format!("node {node} is busy");
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
                node_id: self.config.client_id,
                shard_id: 0,
                target_shard_id: shard as u32,
                target_node_id: node.0,
                role: NetRole::Client,
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
