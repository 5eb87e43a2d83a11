#![allow(dead_code)] // each test uses part of it
//! An in-process cluster for the tests of the benchmark's drivers: three
//! real nodes over loopback TCP, real WALs in a temp dir, one shard each.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{GroupStatus, Node, NodeOptions, PeerSpec, StateMachineFactory};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

pub const CLUSTER_ID: u64 = 4242;

/// How long a test waits for a leader (a loaded machine: generous).
pub const LEADER_WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes hosting `groups`, each a `CommandCounter`.
    pub fn start(groups: &[GroupId]) -> Cluster {
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
                    wal_dsync_small_flush_bytes: coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
                    groups: groups.to_vec(),
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

    /// `node`'s status of `group`.
    pub fn status(&self, node: NodeId, group: GroupId) -> GroupStatus {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id() == node)
            .expect("a node of the cluster");
        futures_lite::future::block_on(node.group(group).status()).unwrap()
    }

    /// `group`'s leader, once there is one.
    pub fn leader(&self, group: GroupId) -> NodeId {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for node in &self.nodes {
                let status = futures_lite::future::block_on(node.group(group).status()).unwrap();
                if status.role == Role::Leader {
                    return status.node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader of group {group} within {LEADER_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self, node: NodeId, client: u64) -> BlockingConnection {
        let hello = Hello {
            cluster_id: CLUSTER_ID,
            node_id: client,
            shard_id: 0,
            target_shard_id: 0,
            target_node_id: node.0,
            role: NetRole::Client,
            client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
        };
        let connection = BlockingConnection::connect(self.addresses[&node], &hello, Duration::from_secs(5)).unwrap();
        connection.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        connection
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            node.shutdown();
        }
    }
}
