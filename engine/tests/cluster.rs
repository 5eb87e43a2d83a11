//! A real 3-node cluster in one process: each node's shards are glommio
//! executors (unpinned), talking over loopback TCP, persisting to real WALs
//! with fdatasync in temp dirs.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{GroupHandle, Node, NodeOptions, PeerSpec, Protocol, StateMachineFactory, REQUEST_TIMEOUT};

/// Appends every command to a list; a query returns the list's length.
#[derive(Default)]
struct Journal {
    commands: Vec<Vec<u8>>,
}

impl StateMachine for Journal {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|c| {
                self.commands.push(c.data.to_vec());
                (self.commands.len() as u64).to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        (self.commands.len() as u64).to_le_bytes().to_vec()
    }
}

fn free_addresses(count: usize) -> Vec<SocketAddr> {
    coraft::ports::free_loopback_addresses(count).unwrap()
}

struct TestCluster {
    dir: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    groups: Vec<GroupId>,
    shards: usize,
    nodes: Vec<Option<Node>>,
    /// Node 1 serves Prometheus metrics here, when set.
    metrics: Option<SocketAddr>,
    read_mode: ReadMode,
    protocol: Protocol,
    request_timeout: Duration,
}

impl TestCluster {
    fn start(nodes: u64, shards: usize, groups: u64) -> TestCluster {
        let mut cluster = TestCluster::configured(nodes, shards, groups);
        cluster.start_all(nodes);
        cluster
    }

    /// A cluster not started yet, so a test can change its settings.
    fn configured(nodes: u64, shards: usize, groups: u64) -> TestCluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let addresses = free_addresses(nodes as usize * shards);
        let peers = (0..nodes)
            .map(|n| PeerSpec {
                id: NodeId(n + 1),
                shard_addresses: addresses[n as usize * shards..(n as usize + 1) * shards].to_vec(),
            })
            .collect();
        TestCluster {
            dir: tempfile::tempdir().unwrap(),
            peers,
            groups: (1..=groups).map(GroupId).collect(),
            shards,
            nodes: Vec::new(),
            metrics: None,
            read_mode: ReadMode::Safe,
            protocol: Protocol::default(),
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    fn start_with_metrics(nodes: u64, shards: usize, groups: u64, metrics: SocketAddr) -> TestCluster {
        let mut cluster = TestCluster::start(0, shards, groups);
        let addresses = free_addresses(nodes as usize * shards);
        cluster.peers = (0..nodes)
            .map(|n| PeerSpec {
                id: NodeId(n + 1),
                shard_addresses: addresses[n as usize * shards..(n as usize + 1) * shards].to_vec(),
            })
            .collect();
        cluster.metrics = Some(metrics);
        cluster.start_all(nodes);
        cluster
    }

    fn start_all(&mut self, nodes: u64) {
        for n in 1..=nodes {
            let node = self.start_node(NodeId(n));
            self.nodes.push(Some(node));
        }
    }

    fn options(&self, id: NodeId) -> NodeOptions {
        NodeOptions {
            shard_cores: vec![None; self.shards],
            // Small segments: each node zeroes its segment through once
            // (zero_ahead_bytes), and the suite starts many nodes.
            wal_segment_bytes: 8 << 20,
            groups: self.groups.clone(),
            read_mode: self.read_mode,
            protocol: self.protocol,
            metrics_listen: if id == NodeId(1) { self.metrics } else { None },
            request_timeout: self.request_timeout,
            ..NodeOptions::new(7, id, self.peers.clone(), self.dir.path().join(format!("node-{id}")))
        }
    }

    fn start_node(&self, id: NodeId) -> Node {
        let factory: StateMachineFactory = Arc::new(|_| Box::new(Journal::default()));
        Node::start(self.options(id), factory).expect("node starts")
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0 as usize - 1].as_ref().expect("node is running")
    }

    /// Waits for a leader of `group` that every running node agrees on.
    fn leader(&self, group: GroupId) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().flatten() {
                let status = block(node.group(group).status()).unwrap();
                if status.role == Role::Leader {
                    leaders.push(status.node);
                }
            }
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single leader for group {group} after 20 s: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn handle(&self, node: NodeId, group: GroupId) -> GroupHandle {
        self.node(node).group(group)
    }
}

/// Applies through whichever node leads, following leader changes.
fn apply(cluster: &TestCluster, group: GroupId, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.leader(group);
        match block(cluster.handle(leader, group).apply(data.to_vec())) {
            Ok(result) => return result,
            Err(Error::NotLeader { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("apply failed: {error}"),
        }
    }
}

fn count(result: &[u8]) -> u64 {
    u64::from_le_bytes(result.try_into().expect("8 bytes"))
}

#[test]
fn three_nodes_elect_a_leader_and_replicate_writes() {
    let cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    for i in 1..=20u64 {
        assert_eq!(count(&apply(&cluster, group, format!("w{i}").as_bytes())), i);
    }
    let leader = cluster.leader(group);
    // A follower refuses writes and names the leader.
    let follower = NodeId(leader.0 % 3 + 1);
    match block(cluster.handle(follower, group).apply(b"x".to_vec())) {
        Err(Error::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(leader)),
        other => panic!("a follower took a write: {other:?}"),
    }
    // Per-stage and per-group metrics saw the work.
    let leader_shard = &cluster.node(leader).metrics()[0];
    assert!(
        !leader_shard.replication_us.is_empty(),
        "appends acknowledged by followers are timed"
    );
    assert!(leader_shard.commit_us.len() >= 20);
    let leader_counters = block(cluster.handle(leader, group).status()).unwrap().counters;
    assert_eq!(leader_counters.proposals, 20);
    let follower_counters = block(cluster.handle(follower, group).status()).unwrap().counters;
    assert_eq!(follower_counters.proposals, 0);
    // Linearizable reads see every acknowledged write, from leader and follower.
    assert_eq!(
        count(&block(cluster.handle(leader, group).read(Vec::new())).unwrap()),
        20
    );
    assert_eq!(
        count(&block(cluster.handle(follower, group).read(Vec::new())).unwrap()),
        20
    );
}

#[test]
fn a_new_leader_is_elected_when_the_leader_stops_and_a_restarted_node_recovers() {
    let mut cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    for i in 1..=10u64 {
        apply(&cluster, group, format!("a{i}").as_bytes());
    }
    let old = cluster.leader(group);
    cluster.nodes[old.0 as usize - 1].take().expect("running").shutdown();
    let new = cluster.leader(group);
    assert_ne!(new, old);
    assert_eq!(count(&apply(&cluster, group, b"after")), 11);
    // The old leader restarts from its WAL and catches up.
    let restarted = cluster.start_node(old);
    cluster.nodes[old.0 as usize - 1] = Some(restarted);
    apply(&cluster, group, b"later");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = block(cluster.handle(old, group).status()).unwrap();
        if status.applied_index >= block(cluster.handle(new, group).status()).unwrap().commit_index {
            break;
        }
        assert!(Instant::now() < deadline, "restarted node did not catch up: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_groups_go_quiet_and_wake_to_elect_when_their_leaders_node_stops() {
    let mut cluster = TestCluster::start(3, 1, 12);
    for g in 1..=12 {
        assert_eq!(count(&apply(&cluster, GroupId(g), b"x")), 1);
    }
    // Idle now: every group goes quiet on every node.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loud: Vec<(NodeId, GroupId)> = cluster
            .groups
            .iter()
            .flat_map(|&g| cluster.nodes.iter().flatten().map(move |n| (n, g)))
            .filter(|(n, g)| !block(n.group(*g).status()).unwrap().quiesced)
            .map(|(n, g)| (n.id(), g))
            .collect();
        if loud.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "groups still awake after 20 s: {loud:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Quiet groups keep their leaders (nobody times out)...
    let leaders: Vec<NodeId> = cluster.groups.iter().map(|&g| cluster.leader(g)).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        leaders,
        cluster.groups.iter().map(|&g| cluster.leader(g)).collect::<Vec<_>>()
    );
    // ...until the node leading most of them stops: its silence wakes their
    // followers, which elect new leaders and take writes.
    let stopped = *leaders
        .iter()
        .max_by_key(|&&n| leaders.iter().filter(|&&m| m == n).count())
        .unwrap();
    cluster.nodes[stopped.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();
    for (&group, &leader) in cluster.groups.iter().zip(&leaders) {
        if leader == stopped {
            assert_ne!(cluster.leader(group), stopped);
            assert_eq!(count(&apply(&cluster, group, b"y")), 2);
        }
    }
}

#[test]
fn read_index_covers_acknowledged_writes_and_a_write_bound_to_a_term_is_refused_in_another() {
    let cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    for i in 1..=5u64 {
        apply(&cluster, group, format!("w{i}").as_bytes());
    }
    let leader = cluster.leader(group);
    let acknowledged = block(cluster.handle(leader, group).status()).unwrap().commit_index;
    for node in [NodeId(1), NodeId(2), NodeId(3)] {
        let index = block(cluster.handle(node, group).read_index()).unwrap();
        assert!(
            index >= acknowledged,
            "node {node}: read index {index} below {acknowledged}"
        );
    }
    let term = block(cluster.handle(leader, group).status()).unwrap().term;
    assert_eq!(
        count(&block(cluster.handle(leader, group).apply_in_term(b"t".to_vec(), term)).unwrap()),
        6
    );
    let stale = coraft::raft::Term(term.0 - 1);
    match block(cluster.handle(leader, group).apply_in_term(b"u".to_vec(), stale)) {
        Err(Error::TermMismatch { expected, current }) => assert_eq!((expected, current), (stale, term)),
        other => panic!("a write bound to term {stale} went through in term {term}: {other:?}"),
    }
    assert_eq!(
        count(&block(cluster.handle(leader, group).read(Vec::new())).unwrap()),
        6,
        "not applied"
    );
}

#[test]
fn a_closed_group_finishes_the_write_in_flight_and_refuses_new_requests() {
    let cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    apply(&cluster, group, b"first");
    let handle = cluster.handle(cluster.leader(group), group);
    let mut in_flight = Box::pin(handle.apply(b"second".to_vec()));
    // One poll submits the write; the close request queues behind it.
    assert!(block(futures_lite::future::poll_once(&mut in_flight)).is_none());
    block(handle.shutdown()).unwrap();
    assert_eq!(count(&block(in_flight).unwrap()), 2, "the write in flight finished");
    assert_eq!(block(handle.apply(b"third".to_vec())), Err(Error::Shutdown));
    assert_eq!(block(handle.read(Vec::new())), Err(Error::Shutdown));
}

#[test]
fn a_write_that_cannot_commit_is_answered_with_a_timeout() {
    let mut cluster = TestCluster::configured(3, 1, 1);
    // Without check-quorum the cut-off leader stays leader, so only the
    // timeout can answer.
    cluster.protocol.check_quorum = false;
    cluster.request_timeout = Duration::from_millis(100);
    cluster.start_all(3);
    let group = GroupId(1);
    apply(&cluster, group, b"before");
    let leader = cluster.leader(group);
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        if id != leader {
            cluster.nodes[id.0 as usize - 1].take().expect("running").shutdown();
        }
    }
    let started = Instant::now();
    assert_eq!(
        block(cluster.handle(leader, group).apply(b"stuck".to_vec())),
        Err(Error::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    let status = block(cluster.handle(leader, group).status()).unwrap();
    assert_eq!(status.counters.requests_timed_out, 1);
    assert_eq!(cluster.node(leader).metrics()[0].requests_timed_out, 1);
}

#[test]
fn a_hundred_groups_on_two_shards_replicate_with_leaders_spread_across_nodes() {
    let cluster = TestCluster::start(3, 2, 100);
    let mut leaders_per_node = std::collections::BTreeMap::new();
    for g in 1..=100 {
        assert_eq!(count(&apply(&cluster, GroupId(g), b"x")), 1);
        *leaders_per_node.entry(cluster.leader(GroupId(g))).or_insert(0) += 1;
    }
    // Randomized election timeouts spread leadership over the nodes.
    assert!(
        leaders_per_node.len() >= 2,
        "all 100 groups led by one node: {leaders_per_node:?}"
    );
    for g in [1, 2, 50, 99, 100] {
        let status = block(cluster.handle(cluster.leader(GroupId(g)), GroupId(g)).status()).unwrap();
        assert!(status.commit_index.0 >= 2, "group {g}: {status:?}");
        assert_eq!(status.peers.len(), 2);
    }
}

fn client(cluster: &TestCluster) -> coraft::client::Client {
    client_of_shards(cluster, |p| p.shard_addresses.clone())
}

/// A client that knows, of each node, the shard addresses `addresses` picks.
fn client_of_shards(cluster: &TestCluster, addresses: impl Fn(&PeerSpec) -> Vec<SocketAddr>) -> coraft::client::Client {
    coraft::client::Client::new(coraft::client::ClientConfig {
        cluster_id: 7,
        nodes: cluster.peers.iter().map(|p| (p.id, addresses(p))).collect(),
        attempt_timeout: Duration::from_secs(5),
    })
}

#[test]
fn requests_sent_to_the_wrong_shard_cross_the_channel_mesh() {
    let cluster = TestCluster::start(3, 2, 4);
    // A client that knows only each node's shard 0 sends every request
    // there; groups 1 and 3 live on shard 1.
    let mut client = client_of_shards(&cluster, |p| vec![p.shard_addresses[0]]);
    for round in 1..=3u64 {
        for g in 1..=4 {
            let result = client.write(GroupId(g), b"x").expect("write through shard 0");
            assert_eq!(count(&result), round, "group {g}");
        }
    }
    for g in 1..=4 {
        assert_eq!(count(&client.read(GroupId(g), b"").unwrap()), 3, "group {g}");
    }
}

#[test]
fn client_finds_the_leader_and_a_retried_write_applies_once() {
    let cluster = TestCluster::start(3, 2, 4);
    let mut client = client(&cluster);
    for g in 1..=4 {
        cluster.leader(GroupId(g));
    }
    assert_eq!(count(&client.write(GroupId(3), b"first").unwrap()), 1);
    // The same (session, sequence) again: not applied a second time, and
    // the original result comes back.
    assert_eq!(count(&client.retry_write().unwrap()), 1);
    assert_eq!(count(&client.write(GroupId(3), b"second").unwrap()), 2);
    assert_eq!(count(&client.read(GroupId(3), b"").unwrap()), 2);
    // Another client's writes are independent.
    let mut other = self::client(&cluster);
    assert_eq!(count(&other.write(GroupId(3), b"third").unwrap()), 3);
}

#[test]
fn a_node_of_another_cluster_refuses_the_client() {
    let cluster = TestCluster::start(3, 1, 1);
    let mut foreign = coraft::client::Client::new(coraft::client::ClientConfig {
        cluster_id: 8,
        nodes: cluster
            .peers
            .iter()
            .map(|p| (p.id, p.shard_addresses.clone()))
            .collect(),
        attempt_timeout: Duration::from_millis(500),
    });
    let error = foreign.write(GroupId(1), b"x").unwrap_err();
    assert!(
        matches!(error, coraft::client::ClientFailure::HandshakeRefused(_)),
        "{error}"
    );
}

#[test]
fn metrics_count_the_work_and_are_served_over_http() {
    use std::io::{Read, Write};
    let metrics_address = free_addresses(1)[0];
    let cluster = TestCluster::start_with_metrics(1, 1, 1, metrics_address);
    for i in 1..=25u64 {
        assert_eq!(count(&apply(&cluster, GroupId(1), b"m")), i);
    }
    let shards = cluster.node(NodeId(1)).metrics();
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].proposals, 25);
    assert!(shards[0].entries_applied >= 25, "{shards:?}");
    assert_eq!(shards[0].proposal_us.len(), 25);
    assert_eq!(shards[0].queue_us.len(), 25);
    assert_eq!(shards[0].commit_us.len(), 25);
    assert!(!shards[0].apply_us.is_empty());
    assert!(shards[0].wal_syncs > 0 && !shards[0].wal_sync_us.is_empty());
    let mut stream = std::net::TcpStream::connect(metrics_address).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("coraft_proposals_total{node=\"1\",shard=\"0\"} 25"),
        "{response}"
    );
    assert!(
        response.contains("coraft_wal_sync_seconds{node=\"1\",shard=\"0\",quantile=\"0.99\"}"),
        "{response}"
    );
    assert!(
        response.contains("coraft_commit_seconds_count{node=\"1\",shard=\"0\"} 25"),
        "{response}"
    );
}

/// A linearizable read through `node`, asked again while it is refused
/// because leadership is moving (`NotLeader`, `Timeout`, `Busy`).
fn read_retrying_refusals(node: &Node, group: GroupId) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match block(node.group(group).read(Vec::new())) {
            Ok(result) => return result,
            Err(error @ (Error::NotLeader { .. } | Error::Timeout | Error::Busy { .. })) => {
                assert!(
                    Instant::now() < deadline,
                    "node {} refused reads for 20 s: {error}",
                    node.id()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("node {}: read failed: {error}", node.id()),
        }
    }
}

fn reads_stay_linearizable_across_a_leader_change(read_mode: ReadMode) {
    let mut cluster = TestCluster::start(0, 1, 1);
    cluster.read_mode = read_mode;
    let addresses = free_addresses(3);
    cluster.peers = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n + 1),
            shard_addresses: vec![addresses[n as usize]],
        })
        .collect();
    cluster.start_all(3);
    let group = GroupId(1);
    let mut acknowledged = 0;
    for round in 0..3 {
        for _ in 0..10 {
            acknowledged = count(&apply(&cluster, group, b"w"));
        }
        // Every node's read sees at least every acknowledged write. A read
        // may be refused while leadership moves (a loaded machine delays
        // heartbeats past the election timeout): ask again; but every value
        // a read returns must cover the acknowledged writes.
        for node in cluster.nodes.iter().flatten() {
            let seen = count(&read_retrying_refusals(node, group));
            assert!(
                seen >= acknowledged,
                "{read_mode:?} round {round}: node {} read {seen} < {acknowledged}",
                node.id()
            );
        }
        if round < 2 {
            // Move leadership, by transfer then by stopping the leader.
            let leader = cluster.leader(group);
            if round == 0 {
                let target = NodeId(leader.0 % 3 + 1);
                block(cluster.handle(leader, group).transfer_leader(target)).unwrap();
            } else {
                cluster.nodes[leader.0 as usize - 1].take().expect("running").shutdown();
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while cluster.leader(group) == leader {
                assert!(Instant::now() < deadline, "leadership did not move");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn read_index_reads_stay_linearizable_across_leader_changes() {
    reads_stay_linearizable_across_a_leader_change(ReadMode::Safe);
}

#[test]
fn lease_reads_stay_linearizable_across_leader_changes() {
    reads_stay_linearizable_across_a_leader_change(ReadMode::Lease);
}

#[test]
fn an_oversized_command_is_refused_and_the_shard_keeps_serving() {
    let cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    assert_eq!(count(&apply(&cluster, group, b"small")), 1);
    let leader = cluster.leader(group);
    let huge = vec![0u8; coraft::runtime::COMMAND_BYTES_MAX + 1];
    match block(cluster.handle(leader, group).apply(huge)) {
        Err(Error::TooLarge { bound, .. }) => assert_eq!(bound, "COMMAND_BYTES_MAX"),
        other => panic!("an oversized command was not refused: {other:?}"),
    }
    // The WAL and the group are unharmed.
    assert_eq!(count(&apply(&cluster, group, b"after")), 2);
    // A command just under the bound goes through and replicates.
    let big = vec![1u8; coraft::runtime::COMMAND_BYTES_MAX];
    assert_eq!(count(&apply(&cluster, group, &big)), 3);
    assert_eq!(
        count(&block(cluster.handle(leader, group).read(Vec::new())).unwrap()),
        3
    );
}

/// Copies every file of `from` into a new directory `to` (the WAL's
/// segments; subdirectories, such as the groups' `snapshots/`, are not WAL).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_file() {
            std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}

#[test]
fn a_node_whose_synced_wal_is_corrupt_refuses_to_start_naming_file_and_offset_and_rejoins_once_rebuilt() {
    let mut cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    for i in 1..=30u64 {
        apply(&cluster, group, format!("c{i}").as_bytes());
    }
    let leader = cluster.leader(group);
    let follower = NodeId(leader.0 % 3 + 1);
    // Wait until the follower holds the writes, then stop it cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let committed = block(cluster.handle(leader, group).status()).unwrap().commit_index;
    while block(cluster.handle(follower, group).status()).unwrap().applied_index < committed {
        assert!(Instant::now() < deadline, "follower did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();

    // One bit flipped in an entry record its WAL had synced.
    let wal_dir = |node: NodeId| cluster.dir.path().join(format!("node-{node}")).join("shard-0");
    let recovered = coraft_wal::recovery::recover(&wal_dir(follower), coraft_wal::RecoveryMode::Strict, false).unwrap();
    let location = *recovered
        .groups
        .get(group.0)
        .unwrap()
        .entry(10)
        .expect("entry 10 in the WAL");
    let segment = recovered
        .segments
        .iter()
        .rev()
        .find(|segment| segment.first_lsn <= location.lsn)
        .unwrap();
    let file_name = coraft_wal::format::segment_file_name(segment.first_lsn);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment.path)
            .unwrap();
        let at = location.offset + 30;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
    }
    drop(recovered);

    // It refuses to start, and says which file and where.
    let factory: StateMachineFactory = Arc::new(|_| Box::new(Journal::default()));
    let error = match Node::start(cluster.options(follower), factory) {
        Ok(node) => {
            node.shutdown();
            panic!("a node with a corrupt WAL started");
        }
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&file_name), "{error}");
    assert!(error.contains(&format!("offset {}", location.offset)), "{error}");

    // Rebuild it as docs/operations.md says: stop the leader of its groups
    // cleanly, replace the broken WAL with a copy of the leader's, restart both.
    let leader = cluster.leader(group);
    cluster.nodes[leader.0 as usize - 1].take().expect("running").shutdown();
    let broken = cluster.dir.path().join(format!("node-{follower}-broken-wal"));
    std::fs::rename(wal_dir(follower), &broken).unwrap();
    copy_dir(&wal_dir(leader), &wal_dir(follower));
    cluster.nodes[leader.0 as usize - 1] = Some(cluster.start_node(leader));
    cluster.nodes[follower.0 as usize - 1] = Some(cluster.start_node(follower));
    assert_eq!(count(&apply(&cluster, group, b"after the rebuild")), 31);
    let deadline = Instant::now() + Duration::from_secs(20);
    while block(cluster.handle(follower, group).status()).unwrap().applied_index
        < block(cluster.handle(cluster.leader(group), group).status())
            .unwrap()
            .commit_index
    {
        assert!(Instant::now() < deadline, "the rebuilt node did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count(&block(cluster.handle(follower, group).read(Vec::new())).unwrap()),
        31
    );
}

#[test]
fn a_stale_read_answers_from_what_the_node_applied_even_cut_off_from_the_leader() {
    let mut cluster = TestCluster::start(3, 1, 1);
    let group = GroupId(1);
    for i in 1..=5u64 {
        assert_eq!(count(&apply(&cluster, group, format!("s{i}").as_bytes())), i);
    }
    let leader = cluster.leader(group);
    let follower = NodeId(leader.0 % 3 + 1);
    // The follower may lag: its stale reads climb to 5, never past what
    // was written, never back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen < 5 {
        let now = count(&block(cluster.handle(follower, group).read_stale(Vec::new())).unwrap());
        assert!(now >= seen && now <= 5, "stale reads went from {seen} to {now}");
        seen = now;
        assert!(Instant::now() < deadline, "the follower applied only {seen} of 5");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Cut it off: the other two stop.
    for id in [1, 2, 3].map(NodeId).into_iter().filter(|&id| id != follower) {
        cluster.nodes[id.0 as usize - 1].take().expect("running").shutdown();
    }
    // Alone, it still answers stale reads from what it applied...
    for _ in 0..3 {
        assert_eq!(
            count(&block(cluster.handle(follower, group).read_stale(Vec::new())).unwrap()),
            5
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ...while a linearizable read cannot be confirmed without a quorum.
    let linearizable = block(cluster.handle(follower, group).read(Vec::new()));
    assert!(
        linearizable.is_err(),
        "a cut-off follower served a linearizable read: {linearizable:?}"
    );
    assert_eq!(
        count(&block(cluster.handle(follower, group).read_stale(Vec::new())).unwrap()),
        5
    );
}
