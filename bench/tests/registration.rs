//! The benchmark drivers' session registration (`bench/src/workload.rs`)
//! against three real nodes over loopback TCP: a registration sent to a node
//! that does not lead the group follows the leader it names, and one that
//! can reach no leader gives up after a bounded number of rounds.

#[allow(dead_code)]
#[path = "../src/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};
use coraft_net::schema::{ClientRequest, ClientRequestBatch, ClientResponseBatch, ReadConsistency};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

use workload::{register_sessions, Driver};

const CLUSTER_ID: u64 = 4242;
const GROUP: GroupId = GroupId(1);

struct Cluster {
    nodes: Vec<Node>,
    addresses: BTreeMap<NodeId, std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addresses = coraft::ports::free_loopback_addresses(3).unwrap();
        let peers: Vec<PeerSpec> = (0..3)
            .map(|n| PeerSpec {
                id: NodeId(n as u64 + 1),
                shard_addresses: vec![addresses[n]],
            })
            .collect();
        let factory: StateMachineFactory = Arc::new(|_| Box::new(CommandCounter::default()));
        let nodes = peers
            .iter()
            .map(|peer| {
                let options = NodeOptions {
                    cluster_id: CLUSTER_ID,
                    node_id: peer.id,
                    peers: peers.clone(),
                    shard_cores: vec![None],
                    helper_cores: None,
                    wal_dir: dir.path().join(format!("node-{}", peer.id)),
                    shard_wal_dirs: Vec::new(),
                    wal_segment_bytes: coraft_wal::config::SEGMENT_BYTES_DEFAULT,
                    wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
                    wal_polled_io: false,
                    groups: vec![GROUP],
                    tick: Duration::from_millis(10),
                    election_timeout_ticks: 30,
                    heartbeat_interval_ticks: 3,
                    read_mode: ReadMode::Safe,
                    protocol: Default::default(),
                    limits: Default::default(),
                    spin_before_park: None,
                    metrics_listen: None,
                    quiesce_idle_groups: true,
                    request_timeout: coraft::runtime::REQUEST_TIMEOUT,
                    session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
                    snapshot: coraft::runtime::SnapshotPolicy::default(),
                };
                Node::start(options, factory.clone()).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            addresses: peers.iter().map(|p| (p.id, p.shard_addresses[0])).collect(),
            _dir: dir,
        }
    }

    /// The group's leader, once there is one (generous: a loaded machine).
    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for node in &self.nodes {
                let status = futures_lite::future::block_on(node.group(GROUP).status()).unwrap();
                if status.role == Role::Leader {
                    return status.node;
                }
            }
            assert!(Instant::now() < deadline, "no leader within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self, node: NodeId, client: u64) -> BlockingConnection {
        let hello = Hello {
            cluster_id: CLUSTER_ID,
            node_id: client,
            shard_id: 0,
            target_shard_id: 0,
            target_node_id: node.0,
            role: NetRole::Client,
        };
        let connection = BlockingConnection::connect(self.addresses[&node], &hello, Duration::from_secs(5)).unwrap();
        connection.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        connection
    }

    /// A driver of `clients` (ids 1..) connected to `target`, which knows
    /// the addresses of `known` for following a leader hint.
    fn driver(&self, target: NodeId, clients: u64, known: &[NodeId]) -> Driver {
        Driver {
            address: self.addresses[&target],
            cluster_id: CLUSTER_ID,
            target_node: target,
            shard: 0,
            clients: (1..=clients).map(|id| (id, GROUP)).collect(),
            rate: None,
            seed: 1,
            read_consistency: ReadConsistency::Linearizable,
            shard_addresses: known.iter().map(|n| (*n, self.addresses[n])).collect(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            node.shutdown();
        }
    }
}

fn session(client: u64) -> u128 {
    (0x5e55 << 64) | u128::from(client)
}

/// One write of `client` under its session, sent to `node`: its result.
fn write(connection: &mut BlockingConnection, client: u64) -> Result<Vec<u8>, coraft_net::schema::ClientError> {
    connection
        .send(&ClientRequestBatch {
            requests: vec![ClientRequest::Propose {
                client_id: client,
                session: session(client),
                sequence: 1,
                lowest_unanswered: 1,
                group: GROUP.0,
                payload: b"w".to_vec(),
            }],
        })
        .unwrap();
    loop {
        let frame = connection.recv().unwrap().expect("the node answers");
        let Some(archived) = frame.client_responses() else {
            continue;
        };
        let batch = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived).unwrap();
        if let Some(response) = batch.responses.into_iter().find(|r| r.client_id == client) {
            return response.result;
        }
    }
}

#[test]
fn registrations_sent_to_a_follower_follow_its_leader_hint() {
    let cluster = Cluster::start();
    let leader = cluster.leader();
    let follower = *cluster.addresses.keys().find(|&&n| n != leader).unwrap();
    let all: Vec<NodeId> = cluster.addresses.keys().copied().collect();
    let driver = cluster.driver(follower, 3, &all);
    let mut connection = cluster.connect(follower, 1);
    // (Before the retry, the follower's NotLeader ended the run here.)
    register_sessions(&mut connection, &driver, |slot| session(slot as u64 + 1))
        .expect("the registrations follow the hint to the leader");
    // The sessions are in the group's log: a write under one is applied,
    // where an unregistered session is refused as expired.
    let mut to_leader = cluster.connect(leader, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match write(&mut to_leader, 3) {
            Ok(count) => {
                assert_eq!(count, 1u64.to_le_bytes());
                break;
            }
            Err(coraft_net::schema::ClientError::NotLeader { .. }) if Instant::now() < deadline => {
                // Leadership moved under the machine's load: ask the new one.
                to_leader = cluster.connect(cluster.leader(), 1);
            }
            Err(error) => panic!("a write under a registered session failed: {error:?}"),
        }
    }
    let mut unregistered = cluster.connect(cluster.leader(), 9);
    assert!(matches!(
        write(&mut unregistered, 9),
        Err(coraft_net::schema::ClientError::SessionExpired)
    ));
}

#[test]
fn registrations_that_reach_no_leader_give_up_after_their_rounds() {
    let mut cluster = Cluster::start();
    cluster.leader();
    // One node left of three: it can elect no leader, and the driver knows
    // no other node's address, so each round goes to it again.
    let lone = cluster.nodes[0].id();
    for node in cluster.nodes.drain(1..) {
        node.shutdown();
    }
    let driver = cluster.driver(lone, 2, &[lone]);
    let mut connection = cluster.connect(lone, 1);
    let started = Instant::now();
    let error = register_sessions(&mut connection, &driver, |slot| session(slot as u64 + 1))
        .expect_err("a node without a quorum registers no session");
    let message = format!("{error:#}");
    assert!(
        message.contains("NotLeader") && message.contains("round 12 of 12"),
        "{message}"
    );
    // 11 waits between rounds: 50 ms doubling up to 1 s, about 8 s.
    assert!(started.elapsed() >= Duration::from_secs(7), "{:?}", started.elapsed());
}
