//! Snapshots on a live cluster: `GroupHandle::snapshot` writes the state
//! machine into the group's snapshot store, and a restarted node loads the
//! newest valid one and applies only the entries after it. Real nodes in one
//! process, over loopback TCP, with real WALs and snapshot files in temp dirs.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, LogIndex, NodeId, ReadMode, Role};
use coraft::runtime::{
    GroupHandle, Node, NodeOptions, PeerSpec, Protocol, SnapshotStore, StateMachineFactory, REQUEST_TIMEOUT,
};

/// What a node's state machine did, seen from the test.
#[derive(Default)]
struct Probe {
    /// Commands handed to `on_apply`.
    applies: AtomicU64,
    /// Calls of `on_snapshot_load`.
    loads: AtomicU64,
}

/// Sums the 8-byte numbers it applies and counts them; a query answers
/// `count, sum` (16 bytes). Its snapshot is the same 16 bytes.
struct Tally {
    count: u64,
    sum: u64,
    probe: Arc<Probe>,
}

impl StateMachine for Tally {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|c| {
                self.probe.applies.fetch_add(1, Ordering::SeqCst);
                self.count += 1;
                self.sum += u64::from_le_bytes(c.data.try_into().expect("8-byte commands"));
                self.count.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        [self.count.to_le_bytes(), self.sum.to_le_bytes()].concat()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.count.to_le_bytes())?;
        writer.write_all(&self.sum.to_le_bytes())
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|_| std::io::Error::other("a tally snapshot is 16 bytes"))?;
        self.count = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        self.sum = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        self.probe.loads.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const GROUP: GroupId = GroupId(1);

struct TestCluster {
    dir: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    nodes: Vec<Option<(Node, Arc<Probe>)>>,
}

impl TestCluster {
    fn start(nodes: u64) -> TestCluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let listeners: Vec<TcpListener> = (0..nodes).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        drop(listeners);
        let peers = (0..nodes)
            .map(|n| PeerSpec {
                id: NodeId(n + 1),
                shard_addresses: vec![addresses[n as usize]],
            })
            .collect();
        let mut cluster = TestCluster {
            dir: tempfile::tempdir().unwrap(),
            peers,
            nodes: Vec::new(),
        };
        for n in 1..=nodes {
            let node = cluster.start_node(NodeId(n));
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn wal_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Where the group's snapshots of node `id` live (one shard).
    fn snapshot_dir(&self, id: NodeId) -> PathBuf {
        self.wal_dir(id).join("shard-0").join("snapshots").join("group-1")
    }

    fn start_node(&self, id: NodeId) -> (Node, Arc<Probe>) {
        let options = NodeOptions {
            cluster_id: 7,
            node_id: id,
            peers: self.peers.clone(),
            shard_cores: vec![None],
            wal_dir: self.wal_dir(id),
            shard_wal_dirs: Vec::new(),
            wal_segment_bytes: 8 << 20,
            wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
            wal_polled_io: false,
            groups: vec![GROUP],
            tick: Duration::from_millis(10),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            read_mode: ReadMode::Safe,
            protocol: Protocol::default(),
            limits: Default::default(),
            spin_before_park: None,
            metrics_listen: None,
            quiesce_idle_groups: true,
            request_timeout: REQUEST_TIMEOUT,
            session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
        };
        let probe = Arc::new(Probe::default());
        let shared = probe.clone();
        let factory: StateMachineFactory = Arc::new(move |_| {
            Box::new(Tally {
                count: 0,
                sum: 0,
                probe: shared.clone(),
            })
        });
        (Node::start(options, factory).expect("node starts"), probe)
    }

    fn handle(&self, id: NodeId) -> GroupHandle {
        self.nodes[id.0 as usize - 1].as_ref().expect("running").0.group(GROUP)
    }

    fn probe(&self, id: NodeId) -> Arc<Probe> {
        self.nodes[id.0 as usize - 1].as_ref().expect("running").1.clone()
    }

    fn ids(&self) -> Vec<NodeId> {
        (1..=self.nodes.len() as u64).map(NodeId).collect()
    }

    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leaders: Vec<NodeId> = self
                .ids()
                .into_iter()
                .filter(|&id| block(self.handle(id).status()).unwrap().role == Role::Leader)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader after 20 s: {leaders:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Applies `value` through whichever node leads.
    fn write(&self, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.leader();
            match block(self.handle(leader).apply(value.to_le_bytes().to_vec())) {
                Ok(_) => return,
                Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(error) => panic!("write of {value} failed: {error}"),
            }
        }
    }

    /// Waits until node `id` has applied at least `index`.
    fn wait_applied(&self, id: NodeId, index: LogIndex) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = block(self.handle(id).status()).unwrap();
            if status.applied_index >= index {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} applied only {} of {index} after 20 s",
                status.applied_index
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `(count, sum)` as node `id`'s state machine holds them.
    fn state(&self, id: NodeId) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match block(self.handle(id).read(Vec::new())) {
                Ok(answer) => {
                    let count = u64::from_le_bytes(answer[..8].try_into().unwrap());
                    let sum = u64::from_le_bytes(answer[8..].try_into().unwrap());
                    return (count, sum);
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(error) => panic!("read on node {id} failed: {error}"),
            }
        }
    }

    fn stop_all(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some((node, _)) = node.take() {
                node.shutdown();
            }
        }
    }

    fn restart_all(&mut self) {
        self.nodes = self.ids().into_iter().map(|id| Some(self.start_node(id))).collect();
    }
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

fn sum(values: std::ops::RangeInclusive<u64>) -> u64 {
    values.sum()
}

#[test]
fn a_restarted_node_loads_its_snapshot_and_applies_only_the_entries_after_it() {
    const N: u64 = 30;
    const M: u64 = 20;
    let mut cluster = TestCluster::start(3);
    for value in 1..=N {
        cluster.write(value);
    }
    let leader = cluster.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    let other = NodeId(follower.0 % 3 + 1);
    assert_ne!(other, leader);
    let applied = block(cluster.handle(leader).status()).unwrap().applied_index;
    cluster.wait_applied(follower, applied);

    let taken_on_leader = block(cluster.handle(leader).snapshot()).expect("snapshot on the leader");
    let taken_on_follower = block(cluster.handle(follower).snapshot()).expect("snapshot on a follower");
    assert_eq!(
        taken_on_leader, applied,
        "the leader's snapshot is at its applied index"
    );
    assert_eq!(
        taken_on_follower, applied,
        "the follower's snapshot is at its applied index"
    );
    for id in [leader, follower] {
        assert_eq!(block(cluster.handle(id).status()).unwrap().snapshot_index, applied);
        let node = cluster.nodes[id.0 as usize - 1].as_ref().unwrap();
        let taken: u64 = node.0.metrics().iter().map(|m| m.snapshots_taken).sum();
        assert_eq!(taken, 1, "node {id} counts its snapshot");
        assert!(node.0.metrics_text().contains("coraft_snapshots_taken_total"));
    }
    assert_eq!(
        block(cluster.handle(other).status()).unwrap().snapshot_index,
        LogIndex(0)
    );
    // Nothing applied since: the same snapshot, not a second one.
    assert_eq!(block(cluster.handle(leader).snapshot()), Ok(applied));

    for value in N + 1..=N + M {
        cluster.write(value);
    }
    let last = block(cluster.handle(cluster.leader()).status()).unwrap().applied_index;
    for id in cluster.ids() {
        cluster.wait_applied(id, last);
    }
    cluster.stop_all();
    cluster.restart_all();

    for id in cluster.ids() {
        cluster.wait_applied(id, last);
        assert_eq!(
            cluster.state(id),
            (N + M, sum(1..=N + M)),
            "node {id}'s state after restart"
        );
    }
    for id in [leader, follower] {
        let probe = cluster.probe(id);
        assert_eq!(probe.loads.load(Ordering::SeqCst), 1, "node {id} loaded its snapshot");
        assert_eq!(
            probe.applies.load(Ordering::SeqCst),
            M,
            "node {id} re-applied only the {M} commands after its snapshot"
        );
        assert_eq!(block(cluster.handle(id).status()).unwrap().snapshot_index, applied);
    }
    // The node without a snapshot replays its whole log: the control.
    let probe = cluster.probe(other);
    assert_eq!(probe.loads.load(Ordering::SeqCst), 0);
    assert_eq!(probe.applies.load(Ordering::SeqCst), N + M);
    cluster.stop_all();
}

#[test]
fn a_corrupt_newest_snapshot_is_skipped_for_the_one_before_it() {
    let mut cluster = TestCluster::start(1);
    let node = NodeId(1);
    for value in 1..=10 {
        cluster.write(value);
    }
    let older = block(cluster.handle(node).snapshot()).expect("first snapshot");
    for value in 11..=20 {
        cluster.write(value);
    }
    let newer = block(cluster.handle(node).snapshot()).expect("second snapshot");
    assert!(newer > older);
    for value in 21..=25 {
        cluster.write(value);
    }
    cluster.stop_all();

    // Flip one byte of the newest snapshot's data file.
    let store = SnapshotStore::open(&cluster.snapshot_dir(node), GROUP).unwrap();
    let ids = store.list().unwrap();
    assert_eq!(ids.len(), 2, "both snapshots are kept: {ids:?}");
    assert_eq!(ids[1].index, newer);
    let data = store.snapshot_path(ids[1]).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[3] ^= 0x40;
    std::fs::write(&data, bytes).unwrap();

    cluster.restart_all();
    let status = block(cluster.handle(node).status()).unwrap();
    assert_eq!(status.snapshot_index, older, "restarted from the older snapshot");
    assert_eq!(cluster.state(node), (25, sum(1..=25)));
    let probe = cluster.probe(node);
    assert_eq!(probe.loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.applies.load(Ordering::SeqCst),
        15,
        "only the commands after the older snapshot were applied again"
    );
    cluster.stop_all();
}

#[test]
fn a_snapshot_of_nothing_applied_is_refused_with_a_typed_error() {
    let mut cluster = TestCluster::start(1);
    let handle = cluster.handle(NodeId(1));
    match block(handle.snapshot()) {
        // Before the leader's first entry applies there is nothing to save.
        Err(Error::Snapshot { group, reason }) => {
            assert_eq!(group, GROUP);
            assert!(reason.contains("nothing is applied"), "{reason}");
        }
        // The single node may already have applied its leader's no-op.
        Ok(index) => assert!(index > LogIndex(0)),
        Err(other) => panic!("unexpected error: {other}"),
    }
    match block(cluster.nodes[0].as_ref().unwrap().0.group(GroupId(9)).snapshot()) {
        Err(Error::UnknownGroup(GroupId(9))) => {}
        other => panic!("a snapshot of an unknown group: {other:?}"),
    }
    cluster.stop_all();
}

#[test]
fn a_client_session_survives_snapshot_and_restart_so_a_retried_write_applies_once() {
    let mut cluster = TestCluster::start(1);
    let node = NodeId(1);
    cluster.leader();
    let config = || coraft::client::ClientConfig {
        cluster_id: 7,
        nodes: cluster
            .peers
            .iter()
            .map(|p| (p.id, p.shard_addresses.clone()))
            .collect(),
        attempt_timeout: Duration::from_secs(5),
    };
    let mut client = coraft::client::Client::new(config());
    let first = client.write(GROUP, &7u64.to_le_bytes()).expect("first write");
    assert_eq!(first, 1u64.to_le_bytes());
    let index = block(cluster.handle(node).snapshot()).expect("snapshot");
    assert_eq!(block(cluster.handle(node).status()).unwrap().applied_index, index);
    cluster.stop_all();
    cluster.restart_all();

    // The same (session, sequence) again, after a restart that applied
    // nothing but loaded the snapshot: the original result, not a new apply.
    let retried = client.retry_write().expect("retried write");
    assert_eq!(retried, first, "the retry answers with the first write's result");
    assert_eq!(cluster.state(node), (1, 7), "applied once");
    assert_eq!(cluster.probe(node).applies.load(Ordering::SeqCst), 0);
    assert_eq!(cluster.probe(node).loads.load(Ordering::SeqCst), 1);
    cluster.stop_all();
}
