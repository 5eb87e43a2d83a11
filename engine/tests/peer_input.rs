//! A peer's bytes never crash a node: a live 3-node cluster (glommio shards,
//! loopback TCP, real WALs) is sent messages that break the protocol over a
//! real peer connection — the handshake done as a peer with coraft-net's
//! public API — and each time the node that received one drops it, counts
//! it in `protocol_violations`, and keeps serving: the cluster takes writes
//! and the node applies them and answers linearizable reads.
//!
//! Before the check, each of these messages stopped the node that got it: a
//! gap in an append tripped an assertion, an entry at or below the append's
//! `prev_log_index` overwrote a committed entry (an assertion, or in release
//! an underflow), an acknowledgement beyond the leader's log panicked in
//! `send_snapshot`, a heartbeat in the leader's own term hit a deliberate
//! panic, and any snapshot poisoned the whole shard.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, LogIndex, NodeId, Role, Term};
use coraft::runtime::{GroupStatus, Node, NodeOptions, PeerSpec, StateMachineFactory};
use coraft_net::bytes::Bytes;
use coraft_net::schema::{
    entry_kind, AppendEntries, AppendEntriesResponse, Configuration, Entry, Envelope, Heartbeat, InstallSnapshot,
    RaftBatch, RaftBody,
};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

const CLUSTER_ID: u64 = 7;
const GROUP: GroupId = GroupId(1);
const WAIT: Duration = Duration::from_secs(30);

/// Counts the commands applied; a query returns the count.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|_| {
                self.0 += 1;
                self.0.to_le_bytes().to_vec()
            })
            .collect()
    }
    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    nodes: Vec<Option<Node>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown();
        }
    }
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3).unwrap();
        let peers: Vec<PeerSpec> = (0..3)
            .map(|i| PeerSpec {
                id: NodeId(i as u64 + 1),
                shard_addresses: vec![addresses[i]],
            })
            .collect();
        let nodes = (1..=3)
            .map(|id| {
                let options = NodeOptions {
                    wal_segment_bytes: 8 << 20,
                    groups: vec![GROUP],
                    // Awake groups: every follower keeps a current term and log.
                    quiesce_idle_groups: false,
                    ..NodeOptions::new(
                        CLUSTER_ID,
                        NodeId(id),
                        peers.clone(),
                        dir.path().join(format!("node-{id}")),
                    )
                };
                let factory: StateMachineFactory = Arc::new(|_| Box::new(Counter::default()));
                Some(Node::start(options, factory).expect("node starts"))
            })
            .collect();
        Cluster {
            _dir: dir,
            addresses,
            nodes,
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0 as usize - 1].as_ref().expect("running")
    }

    fn status(&self, id: NodeId) -> Result<GroupStatus, Error> {
        block(self.node(id).group(GROUP).status())
    }

    /// The leader every node agrees on.
    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<NodeId> = (1..=3)
                .filter_map(|n| self.status(NodeId(n)).ok())
                .filter(|s| s.role == Role::Leader)
                .map(|s| s.node)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Applies one write through the leader; returns the count it made.
    fn write(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader();
            match block(self.node(leader).group(GROUP).apply(b"w".to_vec())) {
                Ok(count) => return u64::from_le_bytes(count.try_into().expect("8 bytes")),
                Err(error) => {
                    assert!(Instant::now() < deadline, "no write for {WAIT:?}: {error}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Waits until `node` has applied everything the leader has and every
    /// node agrees on the leader; returns `node`'s status then.
    fn caught_up(&self, node: NodeId) -> GroupStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.status(self.leader()).expect("leader status");
            if let Ok(status) = self.status(node) {
                let same_term = status.term == leader.term && status.leader == Some(leader.node);
                if same_term && status.applied_index == leader.last_index && status.last_index == leader.last_index {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {node} does not catch up with the leader"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn violations(&self, node: NodeId) -> u64 {
        self.node(node).metrics().iter().map(|m| m.protocol_violations).sum()
    }

    /// Connects to `target` as peer `as_node` (the handshake a peer does).
    fn connect_as(&self, as_node: NodeId, target: NodeId) -> BlockingConnection {
        let hello = Hello {
            cluster_id: CLUSTER_ID,
            node_id: as_node.0,
            shard_id: 0,
            target_shard_id: 0,
            target_node_id: target.0,
            role: NetRole::Peer,
            client_protocol: 0,
        };
        BlockingConnection::connect(self.addresses[target.0 as usize - 1], &hello, Duration::from_secs(5))
            .expect("handshake as a peer")
    }

    /// Sends `body` to `target` over a peer connection authenticated as
    /// `as_node`, naming `from` as sender, in `term`; then checks that the
    /// target counted it as a violation and still serves: the cluster takes
    /// a write, the target applies it, and a linearizable read through the
    /// target sees it.
    fn send_bad_message(&self, as_node: NodeId, from: NodeId, target: NodeId, term: Term, body: RaftBody) {
        let before = self.violations(target);
        let envelope = Envelope {
            group: GROUP.0,
            from: from.0,
            to: target.0,
            term: term.0,
            body,
        };
        let mut connection = self.connect_as(as_node, target);
        connection
            .send(&RaftBatch {
                messages: vec![envelope],
            })
            .expect("sent");
        let deadline = Instant::now() + WAIT;
        while self.violations(target) == before {
            assert!(Instant::now() < deadline, "node {target} never counted the violation");
            std::thread::sleep(Duration::from_millis(10));
        }
        let count = self.write();
        let status = self.caught_up(target);
        assert!(status.applied_index.0 > 0);
        let read = block(self.node(target).group(GROUP).read(Vec::new())).expect("node still serves reads");
        assert!(u64::from_le_bytes(read.try_into().expect("8 bytes")) >= count);
        drop(connection);
    }
}

/// A cluster with a leader, a follower fully caught up (its last entry is of
/// the current term), and that follower's status.
fn cluster_with_follower() -> (Cluster, NodeId, NodeId, GroupStatus) {
    let cluster = Cluster::start();
    cluster.write();
    let leader = cluster.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    let status = cluster.caught_up(follower);
    (cluster, leader, follower, status)
}

fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        term: term.0,
        index: index.0,
        kind: entry_kind::NORMAL,
        data: Bytes::from_static(b"forged"),
    }
}

fn append(prev: &GroupStatus, entries: Vec<Entry>) -> RaftBody {
    RaftBody::AppendEntries(AppendEntries {
        prev_log_index: prev.last_index.0,
        prev_log_term: prev.term.0,
        leader_commit: prev.commit_index.0,
        entries,
    })
}

#[test]
fn follower_survives_an_append_with_a_gap_in_its_entries() {
    let (cluster, leader, follower, status) = cluster_with_follower();
    let last = status.last_index;
    let body = append(
        &status,
        vec![entry(last.plus(1), status.term), entry(last.plus(3), status.term)],
    );
    cluster.send_bad_message(leader, leader, follower, status.term, body);
}

#[test]
fn follower_survives_an_append_entry_at_or_below_prev() {
    let (cluster, leader, follower, status) = cluster_with_follower();
    // A different term at the follower's last (committed) index.
    let body = append(&status, vec![entry(status.last_index, Term(status.term.0 - 1))]);
    cluster.send_bad_message(leader, leader, follower, status.term, body);
}

#[test]
fn leader_survives_an_acknowledgement_beyond_its_log() {
    let (cluster, leader, follower, _) = cluster_with_follower();
    let status = cluster.status(leader).unwrap();
    let body = RaftBody::AppendEntriesResponse(AppendEntriesResponse {
        reject: false,
        index: status.last_index.0 + 1000,
        reject_hint_index: 0,
        reject_hint_term: 0,
    });
    cluster.send_bad_message(follower, follower, leader, status.term, body);
}

#[test]
fn leader_survives_a_heartbeat_in_its_own_term() {
    let (cluster, leader, follower, _) = cluster_with_follower();
    let status = cluster.status(leader).unwrap();
    let body = RaftBody::Heartbeat(Heartbeat {
        commit_index: 0,
        read_context: 1,
    });
    cluster.send_bad_message(follower, follower, leader, status.term, body);
}

#[test]
fn follower_survives_an_install_snapshot() {
    let (cluster, leader, follower, status) = cluster_with_follower();
    let body = RaftBody::InstallSnapshot(InstallSnapshot {
        snapshot_index: status.last_index.0 + 10,
        snapshot_term: status.term.0,
        configuration: Configuration {
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            outgoing_voters: Vec::new(),
        },
        offset: 0,
        data: Bytes::new(),
        done: true,
    });
    cluster.send_bad_message(leader, leader, follower, status.term, body);
}

#[test]
fn message_naming_another_sender_than_the_handshake_is_dropped() {
    let (cluster, leader, follower, status) = cluster_with_follower();
    let third = NodeId(6 - leader.0 - follower.0);
    // Authenticated as the third node, the message claims the leader sent it.
    let body = append(&status, Vec::new());
    cluster.send_bad_message(third, leader, follower, status.term, body);
}
