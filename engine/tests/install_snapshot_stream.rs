//! InstallSnapshot of a multi-megabyte snapshot between real nodes in one
//! process, over loopback TCP with real WALs and files: the leader's
//! connection to the follower runs through a proxy the test can cut, and
//! the stream, paced at 1 MiB/s, resumes from the last acknowledged chunk.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{
    GroupHandle, GroupStatus, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory,
    SNAPSHOT_CHUNKS_IN_FLIGHT_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
};

const GROUP: GroupId = GroupId(1);
/// Bytes of padding after a snapshot's 16 bytes of state: 4 MiB, 32 chunks.
const PADDING_BYTES: usize = 4 << 20;
/// The slowest pace allowed: the stream takes about 4 s.
const RATE_BYTES_PER_SECOND: u64 = 1 << 20;

/// Counts and sums the commands it applies; its snapshot is that state and
/// [`PADDING_BYTES`] of padding.
#[derive(Default)]
struct PaddedTally {
    count: u64,
    sum: u64,
}

impl StateMachine for PaddedTally {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|c| {
                self.count += 1;
                self.sum += u64::from_le_bytes(c.data[..8].try_into().expect("8-byte commands"));
                self.count.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        [self.count.to_le_bytes(), self.sum.to_le_bytes()].concat()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&self.count.to_le_bytes())?;
        writer.write_all(&self.sum.to_le_bytes())?;
        writer.write_all(&vec![0x5Au8; PADDING_BYTES])
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        if bytes.len() != 16 + PADDING_BYTES || bytes[16..].iter().any(|&b| b != 0x5A) {
            return Err(std::io::Error::other(format!("a {}-byte snapshot", bytes.len())));
        }
        self.count = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        self.sum = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        Ok(())
    }
}

/// Forwards every connection accepted on its address to `target`, until
/// [`Proxy::cut`] shuts the ones open down (later ones are forwarded again).
struct Proxy {
    address: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, stopping) = (open.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((inbound, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                inbound.set_nonblocking(false).unwrap();
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = accepted.lock().unwrap();
                list.push(inbound.try_clone().unwrap());
                list.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, open, stop }
    }

    /// Kills every connection open through the proxy.
    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Node `id`'s options: WAL under `root`; nodes 1 and 2 reach node 3 through
/// the proxy at `proxy`.
fn node_options(root: &std::path::Path, addresses: &[SocketAddr], proxy: SocketAddr, id: u64) -> NodeOptions {
    let peers = (1..=3u64)
        .map(|n| {
            // Node 3 is reached through the proxy, except by itself.
            let address = if n == 3 && id != 3 {
                proxy
            } else {
                addresses[n as usize - 1]
            };
            PeerSpec {
                id: NodeId(n),
                shard_addresses: vec![address],
            }
        })
        .collect();
    NodeOptions {
        wal_segment_bytes: 8 << 20,
        groups: vec![GROUP],
        // 1 s at the 10 ms tick, not the default 100 ms: on a loaded machine
        // a leader's loop turns of 100-150 ms cost it the leadership, and a
        // new term starts a stream over (by design), which is not what these
        // tests look at.
        election_timeout_ticks: 100,
        snapshot: SnapshotPolicy {
            after_entries: 64,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            log_tail_entries: 16,
            install_bytes_per_second: RATE_BYTES_PER_SECOND,
        },
        ..NodeOptions::new(8, NodeId(id), peers, root.join(format!("node-{id}")))
    }
}

struct Cluster {
    _temp: tempfile::TempDir,
    root: PathBuf,
    addresses: Vec<SocketAddr>,
    /// Nodes 1 and 2 reach node 3 through it.
    proxy: Proxy,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn new() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let temp = tempfile::tempdir().unwrap();
        // Below the ephemeral range: a port bound to 0 and dropped can be
        // taken by any outbound connection before the node binds it.
        let addresses = coraft::ports::free_loopback_addresses(3).unwrap();
        Cluster {
            root: temp.path().to_path_buf(),
            _temp: temp,
            proxy: Proxy::start(addresses[2]),
            addresses,
            nodes: vec![None, None, None],
        }
    }

    fn start(&mut self, id: u64) {
        let options = node_options(&self.root, &self.addresses, self.proxy.address, id);
        let factory: StateMachineFactory = Arc::new(|_| Box::new(PaddedTally::default()));
        self.nodes[id as usize - 1] = Some(Node::start(options, factory).expect("node starts"));
    }

    fn handle(&self, id: u64) -> GroupHandle {
        self.nodes[id as usize - 1].as_ref().expect("running").group(GROUP)
    }

    fn status(&self, id: u64) -> GroupStatus {
        block(self.handle(id).status()).expect("status")
    }

    fn running(&self) -> Vec<u64> {
        (1..=3).filter(|&id| self.nodes[id as usize - 1].is_some()).collect()
    }

    /// Applies `value` through whichever node leads.
    fn write(&self, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self
                .running()
                .into_iter()
                .find(|&id| self.status(id).role == Role::Leader);
            let result = match leader {
                Some(id) => block(self.handle(id).apply(value.to_le_bytes().to_vec())),
                None => Err(Error::NotLeader { leader_hint: None }),
            };
            match result {
                Ok(_) => return,
                Err(error) => {
                    assert!(Instant::now() < deadline, "write {value}: {error}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = self
                .running()
                .into_iter()
                .find(|&id| self.status(id).role == Role::Leader)
            {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(count, sum)` as node `id`'s state machine holds them.
    fn state(&self, id: u64) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match block(self.handle(id).read(Vec::new())) {
                Ok(answer) => {
                    return (
                        u64::from_le_bytes(answer[..8].try_into().unwrap()),
                        u64::from_le_bytes(answer[8..].try_into().unwrap()),
                    )
                }
                Err(error) => {
                    assert!(Instant::now() < deadline, "read on node {id}: {error}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn wait_until(&self, what: &str, within: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(node) = node.take() {
                node.shutdown();
            }
        }
    }
}

#[test]
fn a_stream_cut_halfway_resumes_from_the_last_acknowledged_chunk() {
    let mut cluster = Cluster::new();
    cluster.start(1);
    cluster.start(2);
    for value in 1..=300 {
        cluster.write(value);
    }
    let leader = cluster.leader();
    assert!(cluster.status(leader).first_index.0 > 1, "the leader compacted");

    // Node 3 starts empty: only a snapshot can catch it up.
    cluster.start(3);
    cluster.wait_until("half the snapshot received", Duration::from_secs(30), || {
        cluster.status(3).counters.install_bytes_received >= PADDING_BYTES as u64 / 2
    });
    let before = cluster.status(leader);
    assert_eq!(before.role, Role::Leader, "node {leader} leads the stream it cut");
    let stream = before
        .installs
        .iter()
        .find(|s| s.peer == NodeId(3))
        .cloned()
        .expect("the leader streams to node 3");
    cluster.proxy.cut();
    // No writes until node 3 installed: a write load makes the leader take
    // newer snapshots, and once this stream is done the follower may be
    // sent one of them in full (its log is kept only while the stream
    // runs); this test looks at one stream.
    cluster.wait_until("node 3 installed the snapshot", Duration::from_secs(60), || {
        cluster.status(3).counters.snapshots_installed >= 1
    });
    let after = cluster.status(leader);
    assert_eq!(
        (after.role, after.term),
        (Role::Leader, before.term),
        "node {leader} led the whole stream in one term (a new term starts a stream over by design)"
    );
    let installed = cluster.status(3);
    assert_eq!(
        (installed.snapshot_index, installed.counters.snapshots_installed),
        (stream.snapshot_index, 1),
        "node 3 installed the snapshot that was cut, once"
    );
    // Resuming means: every byte of the stream sent once, and after the
    // cut at most the window in flight then (4 chunks of 128 KiB at this
    // pace) sent again. Starting over would send the half already
    // received again (2 MiB).
    let window = (SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES_MAX) as u64;
    let sent = after.counters.install_bytes_sent;
    let received = installed.counters.install_bytes_received;
    assert!(
        sent >= stream.total_bytes && sent <= stream.total_bytes + window,
        "{sent} bytes sent for a {}-byte stream cut after {} were acknowledged (window {window})",
        stream.total_bytes,
        stream.acknowledged_bytes
    );
    assert!(
        received >= stream.total_bytes && received <= sent,
        "{received} received, {sent} sent"
    );
    let metrics = cluster.nodes[leader as usize - 1].as_ref().unwrap().metrics();
    let rewinds: u64 = metrics.iter().map(|m| m.snapshot_install_rewinds).sum();
    let abandoned: u64 = metrics.iter().map(|m| m.snapshot_installs_abandoned).sum();
    assert!(rewinds >= 1, "the stream went back after the cut");
    assert_eq!(abandoned, 0, "the stream was never dropped");

    let value = 300;
    for more in 1..=50 {
        cluster.write(value + more);
    }
    let expected = cluster.state(cluster.leader());
    assert_eq!(expected.0, value + 50);
    cluster.wait_until("node 3 caught up", Duration::from_secs(30), || {
        cluster.state(3) == expected
    });
}

#[test]
fn a_leadership_change_mid_install_abandons_the_stream_and_the_new_leader_finishes() {
    let mut cluster = Cluster::new();
    cluster.start(1);
    cluster.start(2);
    for value in 1..=300 {
        cluster.write(value);
    }
    let first = cluster.leader();
    let second = 3 - first;

    cluster.start(3);
    cluster.wait_until("a quarter of the snapshot received", Duration::from_secs(30), || {
        cluster.status(3).counters.install_bytes_received >= PADDING_BYTES as u64 / 4
    });
    assert_eq!(cluster.status(3).counters.snapshots_installed, 0);
    block(cluster.handle(first).transfer_leader(NodeId(second))).expect("transfer");
    cluster.wait_until("the other node leads", Duration::from_secs(20), || {
        cluster.status(second).role == Role::Leader
    });
    let mut value = 300;
    cluster.wait_until("node 3 installed a snapshot", Duration::from_secs(60), || {
        value += 1;
        cluster.write(value);
        cluster.status(3).counters.snapshots_installed >= 1
    });
    let abandoned: u64 = cluster.nodes[first as usize - 1]
        .as_ref()
        .unwrap()
        .metrics()
        .iter()
        .map(|m| m.snapshot_installs_abandoned)
        .sum();
    assert!(abandoned >= 1, "the deposed leader dropped its stream");
    assert!(
        cluster.status(second).counters.install_bytes_sent > 0,
        "the new leader streamed its own snapshot"
    );
    let expected = cluster.state(cluster.leader());
    cluster.wait_until("node 3 caught up", Duration::from_secs(30), || {
        cluster.state(3) == expected
    });
}

/// Where the child finds its node's directory and the cluster's addresses.
const CHILD_ROOT_ENV: &str = "CORAFT_INSTALL_CHILD_ROOT";
const CHILD_ADDRESSES_ENV: &str = "CORAFT_INSTALL_CHILD_ADDRESSES";

/// The child half of
/// `a_follower_killed_during_install_restarts_cleanly_and_never_uses_the_half_written_snapshot`:
/// runs node 3 until the parent kills it.
#[test]
#[ignore = "the child half of a_follower_killed_during_install_restarts_cleanly_and_never_uses_the_half_written_snapshot"]
fn child_runs_a_follower_until_killed() {
    let Ok(root) = std::env::var(CHILD_ROOT_ENV) else {
        return;
    };
    let addresses: Vec<SocketAddr> = std::env::var(CHILD_ADDRESSES_ENV)
        .unwrap()
        .split(',')
        .map(|a| a.parse().unwrap())
        .collect();
    let options = node_options(std::path::Path::new(&root), &addresses, addresses[2], 3);
    let factory: StateMachineFactory = Arc::new(|_| Box::new(PaddedTally::default()));
    let _node = Node::start(options, factory).expect("node 3 starts");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `tmp-` and complete snapshot directories of node 3's group, with
/// the size of each one's data file.
fn node_3_snapshots(root: &std::path::Path) -> Vec<(String, u64)> {
    let dir = root.join("node-3").join("shard-0").join("snapshots").join("group-1");
    let mut found: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let size = std::fs::metadata(e.path().join("data")).map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn a_follower_killed_during_install_restarts_cleanly_and_never_uses_the_half_written_snapshot() {
    let mut cluster = Cluster::new();
    cluster.start(1);
    cluster.start(2);
    for value in 1..=300 {
        cluster.write(value);
    }
    let addresses = cluster
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let child = Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_runs_a_follower_until_killed",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ROOT_ENV, &cluster.root)
            .env(CHILD_ADDRESSES_ENV, addresses)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    cluster.wait_until("half the snapshot written on node 3", Duration::from_secs(60), || {
        node_3_snapshots(&cluster.root)
            .iter()
            .any(|(name, size)| name.starts_with("tmp-") && *size >= PADDING_BYTES as u64 / 2)
    });
    drop(child); // SIGKILL
    let left = node_3_snapshots(&cluster.root);
    assert!(
        left.iter().all(|(name, _)| name.starts_with("tmp-")),
        "only the half-written snapshot, never published: {left:?}"
    );

    cluster.start(3);
    let mut value = 300;
    cluster.wait_until("node 3 installed the snapshot", Duration::from_secs(60), || {
        value += 1;
        cluster.write(value);
        cluster.status(3).counters.snapshots_installed >= 1
    });
    // The restarted node threw the half-written copy away: it received the
    // whole snapshot again.
    let received = cluster.status(3).counters.install_bytes_received;
    assert!(
        received >= PADDING_BYTES as u64,
        "{received} bytes received after the restart"
    );
    let expected = cluster.state(cluster.leader());
    cluster.wait_until("node 3 caught up", Duration::from_secs(30), || {
        cluster.state(3) == expected
    });
    // The half-written copy is gone for good. A snapshot node 3 takes by
    // its own policy shows as a `tmp-` directory while it is made durable
    // (off the shard's thread), so wait for that one to end rather than
    // catch it.
    assert!(
        node_3_snapshots(&cluster.root)
            .iter()
            .all(|(name, _)| !left.iter().any(|(half, _)| half == name)),
        "the half-written snapshot is still there: {:?}",
        node_3_snapshots(&cluster.root)
    );
    cluster.wait_until("node 3 holds only published snapshots", Duration::from_secs(30), || {
        node_3_snapshots(&cluster.root)
            .iter()
            .all(|(name, _)| name.starts_with("snapshot-"))
    });
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A crash after an installed snapshot was published in the store but
/// before the WAL recorded the install leaves a snapshot whose entry the
/// WAL does not hold. Planted here: the leader's snapshot copied into the
/// store of a node whose WAL is empty. The node starts from it (before, it
/// refused to start: "covers index .. which the WAL does not hold") and is
/// caught up by the leader.
#[test]
fn a_node_restarts_from_an_installed_snapshot_the_wal_does_not_record_yet() {
    let mut cluster = Cluster::new();
    cluster.start(1);
    cluster.start(2);
    for value in 1..=300 {
        cluster.write(value);
    }
    let leader = cluster.leader();
    let store = |id: u64| {
        cluster
            .root
            .join(format!("node-{id}"))
            .join("shard-0")
            .join("snapshots")
            .join("group-1")
    };
    let newest = std::fs::read_dir(store(leader))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snapshot-"))
        .max_by_key(|name| name.split('-').nth(1).unwrap().parse::<u64>().unwrap())
        .expect("the leader snapshotted");
    let index: u64 = newest.split('-').nth(1).unwrap().parse().unwrap();
    copy_dir(&store(leader).join(&newest), &store(3).join(&newest));

    cluster.start(3);
    let status = cluster.status(3);
    assert_eq!(status.snapshot_index.0, index, "started from the planted snapshot");
    assert!(status.applied_index.0 >= index);
    for value in 301..=350 {
        cluster.write(value);
    }
    let expected = cluster.state(cluster.leader());
    cluster.wait_until("node 3 caught up", Duration::from_secs(30), || {
        cluster.state(3) == expected
    });
}
