//! InstallSnapshot on real `coraft-node` processes over real TCP, with real
//! WALs and snapshot files: a follower that was down while the leader
//! snapshotted and compacted its log past it is caught up by the leader's
//! snapshot, streamed in chunks, while clients keep writing; afterwards
//! every node holds exactly the acknowledged writes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coraft::api::{KvOp, KvResult};
use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};

const CLUSTER: u64 = 12;
const GROUP: GroupId = GroupId(1);
/// Client threads, each appending 1, 2, 3, ... to its own list.
const WRITERS: u64 = 2;

/// Kills the process when dropped (SIGKILL), however the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addresses(count: usize) -> Vec<SocketAddr> {
    coraft::ports::free_loopback_addresses(count).unwrap()
}

/// A three-node cluster of `coraft-node` processes running the KV store.
struct Cluster {
    dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    processes: Vec<Option<Process>>,
}

impl Cluster {
    /// Writes the configs (a snapshot every 64 entries, 16 entries kept
    /// below it) and starts every node.
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        // A fourth address for a node that joins later.
        let addresses = free_addresses(4);
        let metrics = free_addresses(4);
        let mut cluster = Cluster {
            dir,
            addresses,
            metrics,
            processes: Vec::new(),
        };
        for id in 1..=3 {
            cluster.write_config(id);
            cluster.processes.push(Some(cluster.spawn(id)));
        }
        cluster
    }

    fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.toml"))
    }

    /// Node `id`'s config: nodes 1 to 3 know each other; node 4 (which
    /// joins) knows all four.
    fn write_config(&self, id: u64) {
        let members = if id == 4 { 4 } else { 3 };
        let peers: Vec<Peer> = self.addresses[..members]
            .iter()
            .enumerate()
            .map(|(i, &address)| Peer {
                id: i as u64 + 1,
                address,
            })
            .collect();
        let mut config = NodeConfig {
            cluster_id: CLUSTER,
            node_id: id,
            listen: self.addresses[id as usize - 1],
            peers,
            metrics_listen: Some(self.metrics[id as usize - 1]),
            ..NodeConfig::default()
        };
        config.shards.count = 1;
        config.shards.placement = PlacementPolicy::Unbound;
        config.shards.spin_before_park_us = 0;
        config.wal.dir = Some(self.dir.path().join(format!("node-{id}")));
        config.snapshot.after_entries = 64;
        config.snapshot.log_tail_entries = 16;
        std::fs::write(self.config_path(id), config.to_toml_string().unwrap()).unwrap();
    }

    fn spawn(&self, id: u64) -> Process {
        self.spawn_with(id, &[])
    }

    fn spawn_with(&self, id: u64, flags: &[&str]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
            .args(["--config", self.config_path(id).to_str().unwrap()])
            .args(["--groups", "1", "--state-machine", "kv"])
            .args(flags)
            .spawn()
            .expect("coraft-node starts");
        Process(child)
    }

    fn kill(&mut self, id: u64) {
        self.processes[id as usize - 1] = None;
    }

    fn restart(&mut self, id: u64) {
        self.processes[id as usize - 1] = Some(self.spawn(id));
    }

    fn client_of(&self, ids: &[u64]) -> Client {
        Client::new(ClientConfig {
            cluster_id: CLUSTER,
            nodes: ids
                .iter()
                .map(|&id| (NodeId(id), vec![self.addresses[id as usize - 1]]))
                .collect(),
            attempt_timeout: Duration::from_secs(2),
        })
    }

    /// One counter of node `id`'s Prometheus endpoint (0 if absent).
    fn metric(&self, id: u64, name: &str) -> u64 {
        let Ok(mut stream) = TcpStream::connect(self.metrics[id as usize - 1]) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_err() {
            return 0;
        }
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Snapshot directories node `id` holds for the group.
    fn snapshots(&self, id: u64) -> Vec<String> {
        let dir = self
            .dir
            .path()
            .join(format!("node-{id}"))
            .join("shard-0")
            .join("snapshots")
            .join(format!("group-{}", GROUP.0));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Writers appending to their lists until stopped; each records the values
/// acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Vec<Arc<Mutex<Vec<u64>>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut acknowledged = Vec::new();
        let mut threads = Vec::new();
        for writer in 0..WRITERS {
            let done = Arc::new(Mutex::new(Vec::new()));
            acknowledged.push(done.clone());
            let stop = stop.clone();
            let mut client = cluster.client_of(&[1, 2, 3]);
            threads.push(std::thread::spawn(move || {
                let mut value = 1;
                while !stop.load(Ordering::Relaxed) {
                    let op = KvOp::Append { key: writer, value }.encode();
                    let mut result = client.write(GROUP, &op);
                    // The same sequence again: applied at most once.
                    while result.is_err() && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                        result = client.retry_write();
                    }
                    if result.is_ok() {
                        done.lock().unwrap().push(value);
                        value += 1;
                    }
                }
            }));
        }
        Load {
            stop,
            acknowledged,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.iter().map(|a| a.lock().unwrap().len()).sum()
    }

    /// Waits until `more` writes beyond now are acknowledged.
    fn wait_for(&self, more: usize, within: Duration) {
        let target = self.count() + more;
        let deadline = Instant::now() + within;
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {target} writes acknowledged within {within:?}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) -> Vec<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        self.acknowledged.iter().map(|a| a.lock().unwrap().clone()).collect()
    }
}

/// Writer `writer`'s list as node `id`'s state machine holds it (a
/// linearizable read served by that node: a follower asks the leader for
/// the read index and answers from its own state machine).
fn list_on(cluster: &Cluster, id: u64, writer: u64) -> Vec<u64> {
    let mut client = cluster.client_of(&[id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.read(GROUP, &KvOp::ReadList { key: writer }.encode()) {
            Ok(bytes) => match KvResult::decode(&bytes) {
                Some(KvResult::List(values)) => return values,
                other => panic!("node {id}: list {writer} read as {other:?}"),
            },
            Err(error) => {
                assert!(Instant::now() < deadline, "node {id} answers no read: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn leader(cluster: &Cluster) -> u64 {
    let mut client = cluster.client_of(&[1, 2, 3]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.write(GROUP, &KvOp::Write { key: 99, value: 1 }.encode()).is_ok() {
            if let Some(leader) = client.leader_of(GROUP) {
                return leader.0;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_every_node_holds_exactly(cluster: &Cluster, nodes: &[u64], acknowledged: &[Vec<u64>]) {
    for &id in nodes {
        for (writer, expected) in acknowledged.iter().enumerate() {
            let list = list_on(cluster, id, writer as u64);
            // A write whose answer was lost at the very end may be applied
            // but not recorded: one value beyond the acknowledged ones.
            let held = &list[..list.len().min(expected.len())];
            assert_eq!(held, &expected[..], "node {id}, list {writer}");
            assert!(
                list.len() <= expected.len() + 1,
                "node {id}, list {writer}: {} values, {} acknowledged",
                list.len(),
                expected.len()
            );
        }
    }
}

#[test]
fn a_follower_stopped_while_the_leader_compacts_is_caught_up_by_install_snapshot_under_load() {
    let mut cluster = Cluster::start();
    let leader = leader(&cluster);
    let follower = if leader == 1 { 2 } else { 1 };
    let load = Load::start(&cluster);
    load.wait_for(100, Duration::from_secs(60));

    cluster.kill(follower);
    // Far more than a snapshot interval plus the tail: the leader's log
    // no longer holds what the follower lacks.
    load.wait_for(600, Duration::from_secs(120));
    assert!(
        [1, 2, 3]
            .iter()
            .filter(|&&id| id != follower)
            .all(|&id| cluster.metric(id, "coraft_snapshots_taken_total") >= 2),
        "the running nodes snapshotted"
    );
    cluster.restart(follower);

    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.metric(follower, "coraft_snapshots_installed_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "node {follower} installed no snapshot within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Writes go on after the install, replicated entry by entry.
    load.wait_for(100, Duration::from_secs(60));
    let acknowledged = load.stop();

    assert!(cluster.metric(follower, "coraft_snapshot_install_bytes_received_total") > 0);
    // Leadership may have moved under the load: whichever node led sent it.
    let sent = |name: &str| -> u64 { [1, 2, 3].iter().map(|&id| cluster.metric(id, name)).sum() };
    assert!(sent("coraft_snapshot_installs_sent_total") >= 1);
    assert!(sent("coraft_snapshot_install_bytes_sent_total") > 0);
    assert!(
        !cluster.snapshots(follower).iter().any(|n| n.starts_with("tmp-")),
        "no temp directory left: {:?}",
        cluster.snapshots(follower)
    );
    assert_every_node_holds_exactly(&cluster, &[1, 2, 3], &acknowledged);
}

/// Waits until node `id` reports an installed snapshot.
fn wait_installed(cluster: &Cluster, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.metric(id, "coraft_snapshots_installed_total") == 0 {
        assert!(Instant::now() < deadline, "node {id} installed no snapshot within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_new_empty_node_added_as_a_learner_after_compaction_is_caught_up_by_install_snapshot() {
    let cluster = Cluster::start();
    leader(&cluster);
    let load = Load::start(&cluster);
    load.wait_for(400, Duration::from_secs(120));
    assert!(
        (1..=3).all(|id| cluster.metric(id, "coraft_snapshots_taken_total") >= 2),
        "every node snapshotted and compacted"
    );

    // Node 4 starts empty and waits until a leader adds it.
    cluster.write_config(4);
    let _fourth = cluster.spawn_with(4, &["--join"]);
    let added = Command::new(env!("CARGO_BIN_EXE_coraft-admin"))
        .args(["--config", cluster.config_path(1).to_str().unwrap()])
        .args(["add-learner", "--group", "1", "--id", "4", "--address"])
        .arg(cluster.addresses[3].to_string())
        .output()
        .expect("coraft-admin runs");
    assert!(
        added.status.success(),
        "add-learner: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    wait_installed(&cluster, 4);
    load.wait_for(100, Duration::from_secs(60));
    let acknowledged = load.stop();
    assert_every_node_holds_exactly(&cluster, &[1, 2, 3, 4], &acknowledged);
}
