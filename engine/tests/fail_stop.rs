//! Fail-stop on storage failure: a live 3-node cluster in one process (real
//! glommio shards, loopback TCP, WALs on real files) whose WALs write
//! through the WAL's fault seam. The leader's node loses its fdatasync (or
//! its disk fills up); it must stop serving as a replica so that the other
//! two elect a leader and go on acknowledging writes, while it answers
//! every request with a `Storage` error and says so in its metrics.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory, WalFault};

const GROUP: GroupId = GroupId(1);
/// Every group the nodes host: the failed node may lead several.
const GROUPS: [GroupId; 3] = [GroupId(1), GroupId(2), GroupId(3)];

/// Counts commands; a query returns the count.
#[derive(Default)]
struct Counter {
    count: u64,
}

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|_| {
                self.count += 1;
                self.count.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.count.to_le_bytes().to_vec()
    }
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

struct Cluster {
    dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let addresses = coraft::ports::free_loopback_addresses(3).unwrap();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            addresses,
            nodes: Vec::new(),
        };
        for index in 0..3 {
            let node = Node::start_with_wal_faults(cluster.options(index), factory()).expect("node starts");
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn options(&self, index: usize) -> NodeOptions {
        NodeOptions {
            wal_segment_bytes: 8 << 20,
            // No zeroing ahead: every fdatasync belongs to a write.
            wal_zero_ahead_bytes: 0,
            groups: GROUPS.to_vec(),
            request_timeout: Duration::from_secs(2),
            ..NodeOptions::new(
                12,
                NodeId(index as u64 + 1),
                (0..3)
                    .map(|i| PeerSpec {
                        id: NodeId(i as u64 + 1),
                        shard_addresses: vec![self.addresses[i]],
                    })
                    .collect(),
                self.dir.path().join(format!("node-{}", index + 1)),
            )
        }
    }

    /// A [`Client`] of the cluster (it talks TCP to the nodes' ports).
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            cluster_id: 12,
            nodes: self
                .addresses
                .iter()
                .enumerate()
                .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
                .collect(),
            attempt_timeout: Duration::from_secs(2),
        }
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("running")
    }

    /// Waits for a leader of the group among `candidates` (node indexes).
    fn leader_among(&self, candidates: &[usize]) -> usize {
        self.leader_of_among(GROUP, candidates)
    }

    fn leader_of_among(&self, group: GroupId, candidates: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &i in candidates {
                let status = block(self.node(i).group(group).status()).unwrap();
                if status.role == Role::Leader {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader among {candidates:?} within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes through whichever of `candidates` leads, retrying refusals;
    /// returns the count and the node that acknowledged it.
    fn write(&self, candidates: &[usize]) -> (u64, usize) {
        self.write_to(GROUP, candidates)
    }

    fn write_to(&self, group: GroupId, candidates: &[usize]) -> (u64, usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.leader_of_among(group, candidates);
            match block(self.node(leader).group(group).apply(b"w".to_vec())) {
                Ok(result) => return (count(&result), leader),
                Err(error) => {
                    assert!(Instant::now() < deadline, "no write acknowledged within 20 s: {error}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

fn factory() -> StateMachineFactory {
    Arc::new(|_| Box::new(Counter::default()))
}

/// Writes through the node whose storage was just made to fail until it
/// answers `Storage`, and returns that message; `acknowledged` becomes the
/// highest count any write was acknowledged with meanwhile.
///
/// The first write's answer is a race the test cannot order, and either
/// outcome is correct. The leader sends an entry to its followers in
/// parallel with its own write and fdatasync, and commits once a quorum
/// holds it durably, counting itself only once its own sync succeeded (Raft
/// thesis §10.2.1). When the fault is met first, the write is refused with
/// `Storage` (its outcome unknown: the followers may still commit it). When
/// both followers acknowledge first (the leader's turn ran late on a loaded
/// machine, or its write queued behind a group commit still in flight), the
/// entry is durable on two of three nodes and committed before this node
/// learns of its failure, so `Ok` is a promise the survivors keep; the
/// caller checks that they do. Under load the node may also have lost the
/// lead before the write arrived (`NotLeader`); then the fault is met by the
/// next entry it stores as a follower, so a write goes through the leader.
/// What must hold either way: the node fails-stop (it answers `Storage`)
/// soon, and never answers `Ok` after that.
fn meet_the_fault(cluster: &Cluster, failed: usize, acknowledged: &mut u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "node {} never answered Storage within 20 s of its fault",
            failed + 1
        );
        match block(cluster.node(failed).group(GROUP).apply(b"x".to_vec())) {
            Err(Error::Storage(message)) => return message,
            Ok(result) => {
                let value = count(&result);
                assert!(value > *acknowledged, "count {value} after {acknowledged}");
                eprintln!("node {}: a write committed before the node saw its fault", failed + 1);
                *acknowledged = value;
            }
            Err(Error::NotLeader { .. }) => *acknowledged = cluster.write(&[0, 1, 2]).0,
            Err(other) => panic!("the write on the failed node was answered {other:?}"),
        }
    }
}

/// Injects `fault` on the leader's node, writes through it, and checks the
/// fail-stop: the group moves on without it, it answers `Storage`. Returns
/// the failed node, the last acknowledged count and the `Storage` message.
fn fail_the_leaders_storage(cluster: &Cluster, fault: WalFault) -> (usize, u64, String) {
    let all = [0, 1, 2];
    let mut acknowledged = 0;
    for _ in 0..5 {
        acknowledged = cluster.write(&all).0;
    }
    let failed = cluster.leader_among(&all);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != failed).collect();
    cluster.node(failed).inject_wal_fault(0, fault).unwrap();
    let faulted = Instant::now();
    let message = meet_the_fault(cluster, failed, &mut acknowledged);
    let (after, new_leader) = cluster.write(&others);
    let failover = faulted.elapsed();
    eprintln!(
        "{fault:?}: node {} failed; node {} acknowledged a write {failover:?} after the fault",
        failed + 1,
        new_leader + 1
    );
    assert!(
        after > acknowledged,
        "count {after} after the failover, {acknowledged} before"
    );
    for _ in 0..5 {
        let (next, _) = cluster.write(&others);
        assert!(next > acknowledged);
        acknowledged = next;
    }
    // Every group it hosts goes on without it.
    for group in GROUPS {
        cluster.write_to(group, &others);
        let status = block(cluster.node(failed).group(group).status()).unwrap();
        assert_ne!(status.role, Role::Leader, "the failed node still leads group {group}");
    }
    // The failed node answers every request with Storage, and its metrics
    // say so.
    assert!(matches!(
        block(cluster.node(failed).group(GROUP).apply(b"y".to_vec())),
        Err(Error::Storage(_))
    ));
    assert!(matches!(
        block(cluster.node(failed).group(GROUP).read(Vec::new())),
        Err(Error::Storage(_))
    ));
    assert_eq!(cluster.node(failed).metrics()[0].wal_failed, 1);
    assert!(cluster.node(failed).metrics_text().contains("coraft_wal_failed{node="));
    (failed, acknowledged, message)
}

#[test]
fn an_fsync_failure_on_the_leaders_node_stops_it_and_the_group_elects_another_leader_and_writes_on() {
    let cluster = Cluster::start();
    let (_, _, message) = fail_the_leaders_storage(&cluster, WalFault::FailSyncs(1));
    assert!(message.contains("poisoned"), "{message}");
}

#[test]
fn no_space_on_the_leaders_node_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start();
    let (failed, acknowledged, message) = fail_the_leaders_storage(&cluster, WalFault::NoSpace(true));
    assert!(message.contains("no space left on device"), "{message}");
    // Space comes back with a restart: the node recovers from its WAL and
    // every acknowledged write is still there (read through it).
    cluster.nodes[failed].take().unwrap().shutdown();
    cluster.nodes[failed] = Some(Node::start(cluster.options(failed), factory()).expect("restarts"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match block(cluster.node(failed).group(GROUP).read(Vec::new())) {
            Ok(bytes) if count(&bytes) >= acknowledged => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no read of {acknowledged} within 20 s: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let (next, _) = cluster.write(&[0, 1, 2]);
    assert!(next > acknowledged);
}

/// A client whose write meets the leader's fsync failure gets `Storage`
/// from that node, sends the same (session, sequence) to another node, and
/// the write applies exactly once: the counter moves by one, not two, even
/// though the followers may already hold (and later commit) the first
/// attempt.
#[test]
fn a_client_write_answered_storage_is_retried_elsewhere_and_applies_exactly_once() {
    let cluster = Cluster::start();
    let all = [0, 1, 2];
    let mut client = Client::new(cluster.client_config());
    // Warm up until the client's idea of the leader is the leader's own.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (before, failed) = loop {
        let before = match client.write(GROUP, b"warm") {
            Ok(result) => count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "no client write within 20 s: {error}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let leader = cluster.leader_among(&all);
        if client.leader_of(GROUP) == Some(NodeId(leader as u64 + 1)) {
            break (before, leader);
        }
        assert!(
            Instant::now() < deadline,
            "the client never found the leader within 20 s"
        );
    };
    cluster
        .node(failed)
        .inject_wal_fault(0, WalFault::FailSyncs(1))
        .unwrap();
    // The first write may be committed by the two followers and answered
    // by the failed node before it sees its fault (see `meet_the_fault`);
    // the next one then meets the failed node and is retried. Each write
    // moves the counter by exactly one.
    let failed_id = NodeId(failed as u64 + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut expected = before;
    loop {
        let sequence = client.next_sequence();
        let result = client
            .write(GROUP, b"once")
            .expect("the write is retried on another node");
        expected += 1;
        assert_eq!(
            count(&result),
            expected,
            "the client's write was applied more than once (or not at all)"
        );
        assert_eq!(client.next_sequence(), sequence + 1, "the client renumbered its write");
        if client.leader_of(GROUP) != Some(failed_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {failed_id} still answers writes 20 s after its fault"
        );
    }
    // Someone else acknowledged, and the node it first asked did fail (if
    // it had lost the lead before the write came, it meets the fault when
    // it stores the entry as a follower).
    while cluster.node(failed).metrics()[0].wal_failed != 1 {
        assert!(
            Instant::now() < deadline,
            "node {failed_id} did not fail-stop within 20 s of its fault"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The group's state agrees: exactly one more command per write.
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != failed).collect();
    let leader = cluster.leader_among(&others);
    let value = count(&block(cluster.node(leader).group(GROUP).read(Vec::new())).unwrap());
    assert_eq!(value, expected, "the counter after the retried write");
}
