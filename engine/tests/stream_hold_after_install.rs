//! A follower that installed a streamed snapshot is caught up from the
//! log, on real nodes over real TCP with real WALs and snapshot files:
//! a stopped follower restarts behind the leader's compacted log and is
//! streamed a snapshot at the slowest pace while writes go on and the
//! leader snapshots every second; its state machine then takes seconds to
//! load it, and the leader takes more snapshots meanwhile. The leader
//! keeps the log after the streamed snapshot past the stream's end (until
//! the follower's match index passes what compaction cuts), so the
//! follower is sent that one snapshot only and holds every write once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{
    GroupHandle, InstallDirection, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory,
};

const GROUP: GroupId = GroupId(1);
/// Padding of each write made while the follower is away (more than a
/// leader's outbound queue to it holds, so that it needs a snapshot).
const MISSED_PADDING_BYTES: usize = 64 << 10;
/// Padding of each write of the steady load.
const LOAD_PADDING_BYTES: usize = 1 << 10;
/// Zeros after the state in every snapshot, so that a stream at the
/// slowest pace the engine allows (1 MiB/s) lasts seconds.
const SNAPSHOT_PADDING_BYTES: usize = 3 << 20;
/// How long the restarted follower's state machine takes to load a
/// snapshot: the leader takes snapshots between the stream's end and the
/// follower's answer.
const SLOW_LOAD: Duration = Duration::from_secs(3);
/// Entries kept below a snapshot by the policy.
const LOG_TAIL_ENTRIES: u64 = 4;
/// How long the test waits for anything (the machine is shared).
const PATIENCE: Duration = Duration::from_secs(120);

/// Counts and sums the numbers it applies (the first 8 bytes of each
/// command); a query answers `count, sum`. With `slow_load` set, loading
/// a snapshot takes [`SLOW_LOAD`].
struct Tally {
    count: u64,
    sum: u64,
    slow_load: Arc<AtomicBool>,
}

impl StateMachine for Tally {
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

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.count.to_le_bytes())?;
        writer.write_all(&self.sum.to_le_bytes())?;
        writer.write_all(&vec![0u8; SNAPSHOT_PADDING_BYTES])
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 16];
        reader.read_exact(&mut bytes)?;
        self.count = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        self.sum = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        std::io::copy(reader, &mut std::io::sink())?;
        if self.slow_load.load(Ordering::Relaxed) {
            std::thread::sleep(SLOW_LOAD);
        }
        Ok(())
    }
}

struct Cluster {
    _temp: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    nodes: Vec<Option<Node>>,
    /// Makes every node's snapshot loads slow, once set.
    slow_load: Arc<AtomicBool>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let peers = common::loopback_peers(3);
        let mut cluster = Cluster {
            _temp: tempfile::tempdir().unwrap(),
            peers,
            nodes: Vec::new(),
            slow_load: Arc::new(AtomicBool::new(false)),
        };
        for n in 1..=3 {
            let node = cluster.start_node(NodeId(n));
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn start_node(&self, id: NodeId) -> Node {
        let options = NodeOptions {
            wal_segment_bytes: 8 << 20,
            groups: vec![GROUP],
            // Generous: a loaded machine must not move the leader mid-test.
            election_timeout_ticks: 50,
            heartbeat_interval_ticks: 5,
            // A snapshot every second under the load; the slowest stream
            // allowed.
            snapshot: SnapshotPolicy {
                after_entries: 0,
                after_log_bytes: 0,
                shard_after_log_bytes: 0,
                interval: Duration::from_secs(1),
                log_tail_entries: LOG_TAIL_ENTRIES,
                install_bytes_per_second: coraft_tuning::limits::SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN,
            },
            ..NodeOptions::new(11, id, self.peers.clone(), self._temp.path().join(format!("node-{id}")))
        };
        let slow_load = self.slow_load.clone();
        let factory: StateMachineFactory = Arc::new(move |_| {
            Box::new(Tally {
                count: 0,
                sum: 0,
                slow_load: slow_load.clone(),
            })
        });
        Node::start(options, factory).expect("node starts")
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0 as usize - 1].as_ref().expect("running")
    }

    fn handle(&self, id: NodeId) -> GroupHandle {
        self.node(id).group(GROUP)
    }

    fn leader(&self) -> NodeId {
        common::single_leader(&self.nodes, GROUP, PATIENCE)
    }

    /// Applies each of `values`, padded, through the leader (retrying
    /// while leadership moves: a `NotLeader` write was not applied).
    fn write(&self, values: std::ops::RangeInclusive<u64>, padding: usize) {
        for value in values {
            let deadline = Instant::now() + PATIENCE;
            let mut command = value.to_le_bytes().to_vec();
            command.resize(8 + padding, 0xA5);
            loop {
                let leader = self.leader();
                match block(self.handle(leader).apply(command.clone())) {
                    Ok(_) => break,
                    Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(error) => panic!("writing {value}: {error}"),
                }
            }
        }
    }

    fn tally(&self, id: NodeId) -> (u64, u64) {
        let answer = block(self.handle(id).read_stale(Vec::new())).expect("a stale read");
        (
            u64::from_le_bytes(answer[..8].try_into().expect("16-byte answer")),
            u64::from_le_bytes(answer[8..16].try_into().expect("16-byte answer")),
        )
    }

    fn wait_tally(&self, id: NodeId, expected: (u64, u64)) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.tally(id);
            if seen == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} holds (count, sum) {seen:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Snapshot streams `id` completed, over its shards.
    fn installs_sent(&self, id: NodeId) -> u64 {
        self.node(id).metrics().iter().map(|m| m.snapshot_installs_sent).sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown();
        }
    }
}

fn tally_of(values: std::ops::RangeInclusive<u64>) -> (u64, u64) {
    (values.clone().count() as u64, values.sum())
}

/// The index of the snapshot the leader streams to `follower`, if it is.
fn streamed(cluster: &Cluster, leader: NodeId, follower: NodeId) -> Option<u64> {
    let status = block(cluster.handle(leader).status()).expect("a status");
    status
        .installs
        .iter()
        .find(|i| i.direction == InstallDirection::Sending && i.peer == follower)
        .map(|i| i.snapshot_index.0)
}

#[test]
fn a_follower_that_installed_a_streamed_snapshot_is_caught_up_from_the_log_not_sent_a_newer_one() {
    let mut cluster = Cluster::start();
    cluster.write(1..=20, LOAD_PADDING_BYTES);
    let leader = cluster.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    cluster.wait_tally(follower, tally_of(1..=20));
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();
    // The running nodes compact past what the follower holds.
    cluster.write(21..=100, MISSED_PADDING_BYTES);
    for id in [leader, NodeId(follower.0 % 3 + 1)] {
        cluster.wait_tally(id, tally_of(1..=100));
        block(cluster.handle(id).snapshot()).expect("a snapshot");
    }
    let node = cluster.start_node(follower);
    cluster.nodes[follower.0 as usize - 1] = Some(node);
    let deadline = Instant::now() + PATIENCE;
    let streamed_index = loop {
        if let Some(index) = streamed(&cluster, leader, follower) {
            break index;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never streamed a snapshot to node {follower}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Only the follower loads a snapshot from now on.
    cluster.slow_load.store(true, Ordering::Relaxed);

    // The steady load while the stream goes on (the leader snapshots every
    // second), then on until the follower loaded the snapshot and
    // caught up, with a snapshot on demand just after the stream's end.
    let mut next = 101u64;
    let mut other_streams = Vec::new();
    let mut stream_ended = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        cluster.write(next..=next + 9, LOAD_PADDING_BYTES);
        next += 10;
        match streamed(&cluster, leader, follower) {
            Some(index) if index == streamed_index => {}
            Some(index) => other_streams.push(index),
            None if stream_ended.is_none() => {
                stream_ended = Some(Instant::now());
                block(cluster.handle(leader).snapshot()).expect("a snapshot");
            }
            None => {}
        }
        if stream_ended.is_some_and(|ended| ended.elapsed() > SLOW_LOAD * 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the stream of {streamed_index} never ended");
    }
    let all = tally_of(1..=next - 1);
    cluster.wait_tally(leader, all);
    cluster.wait_tally(follower, all);
    let status = block(cluster.handle(follower).status()).expect("a status");
    assert!(
        other_streams.is_empty(),
        "after snapshot {streamed_index} the leader streamed snapshots {other_streams:?} to node {follower}"
    );
    assert_eq!(
        (status.counters.snapshots_installed, cluster.installs_sent(leader)),
        (1, 1),
        "node {follower} installed, and the leader sent, more than the one streamed snapshot {streamed_index}"
    );
    assert!(status.snapshot_index.0 >= streamed_index, "{status:?}");
    cluster.write(next..=next + 4, 0);
    cluster.wait_tally(follower, tally_of(1..=next + 4));
}
