//! The log a leader keeps for a snapshot stream is bounded, on real nodes
//! over real TCP with real WALs and snapshot files: while a slow paced
//! InstallSnapshot stream goes to a restarted follower and writes go on,
//! each snapshot the leader takes compacts its log down to the entries
//! after the streamed snapshot that fit in the bound (lowered here through
//! the test-only knob from `SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX`'s 64 MiB),
//! never more; the follower, which can no longer be caught up from the log
//! after the streamed snapshot, is sent a newer snapshot and ends holding
//! every write once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{
    GroupHandle, InstallDirection, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory,
};

const GROUP: GroupId = GroupId(1);
/// The bound on the leader's log kept for a stream, for this test.
const KEPT_BYTES_MAX: u64 = 256 << 10;
/// Padding of each write made during the stream (an entry is a little
/// more: its number and header).
const ENTRY_PADDING_BYTES: usize = 16 << 10;
/// Padding of each write the stopped follower misses (more than a leader's
/// outbound queue to it holds, so that it needs a snapshot).
const MISSED_PADDING_BYTES: usize = 64 << 10;
/// Zeros after the state in every snapshot, so that a stream at the
/// slowest pace the engine allows (1 MiB/s) lasts seconds.
const SNAPSHOT_PADDING_BYTES: usize = 8 << 20;
/// Entries kept below a snapshot by the policy.
const LOG_TAIL_ENTRIES: u64 = 4;
/// How long the test waits for anything (the machine is shared).
const PATIENCE: Duration = Duration::from_secs(90);

/// Counts and sums the numbers it applies (the first 8 bytes of each
/// command); a query answers `count, sum`.
#[derive(Default)]
struct Tally {
    count: u64,
    sum: u64,
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
        Ok(())
    }
}

struct Cluster {
    _temp: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let peers = common::loopback_peers(3);
        let mut cluster = Cluster {
            _temp: tempfile::tempdir().unwrap(),
            peers,
            nodes: Vec::new(),
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
            // Snapshots on demand only; the slowest stream allowed.
            snapshot: SnapshotPolicy {
                after_entries: 0,
                after_log_bytes: 0,
                shard_after_log_bytes: 0,
                interval: Duration::ZERO,
                log_tail_entries: LOG_TAIL_ENTRIES,
                install_bytes_per_second: coraft_tuning::limits::SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN,
            },
            ..NodeOptions::new(11, id, self.peers.clone(), self._temp.path().join(format!("node-{id}")))
        };
        let factory: StateMachineFactory = Arc::new(|_| Box::new(Tally::default()));
        Node::start(options, factory).expect("node starts")
    }

    fn handle(&self, id: NodeId) -> GroupHandle {
        self.nodes[id.0 as usize - 1].as_ref().expect("running").group(GROUP)
    }

    fn running(&self) -> Vec<NodeId> {
        (1..=3u64)
            .map(NodeId)
            .filter(|id| self.nodes[id.0 as usize - 1].is_some())
            .collect()
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
fn a_leader_keeps_at_most_the_bound_of_log_for_a_slow_stream_and_the_follower_gets_a_newer_snapshot() {
    coraft::runtime::set_snapshot_stream_log_kept_bytes_max_for_tests(KEPT_BYTES_MAX);
    let mut cluster = Cluster::start();
    cluster.write(1..=20, ENTRY_PADDING_BYTES);
    let leader = cluster.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    cluster.wait_tally(follower, tally_of(1..=20));
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();
    // The running nodes compact past what the follower holds.
    cluster.write(21..=100, MISSED_PADDING_BYTES);
    for id in cluster.running() {
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

    // While the stream goes on: writes of twice the bound, then a snapshot,
    // whose compaction may keep only the bound after the streamed snapshot.
    let entries_in_bound = KEPT_BYTES_MAX / ENTRY_PADDING_BYTES as u64;
    let (mut next, mut rounds_during_stream) = (101u64, 0);
    while streamed(&cluster, leader, follower) == Some(streamed_index) {
        let last = next + 2 * entries_in_bound - 1;
        cluster.write(next..=last, ENTRY_PADDING_BYTES);
        next = last + 1;
        let snapshot_index = block(cluster.handle(leader).snapshot()).expect("a snapshot").0;
        let status = block(cluster.handle(leader).status()).expect("a status");
        if streamed(&cluster, leader, follower) != Some(streamed_index) {
            break;
        }
        rounds_during_stream += 1;
        // The entries from the first one kept up to the policy's own
        // compaction point: what was kept for the stream.
        let policy_point = snapshot_index - LOG_TAIL_ENTRIES;
        let kept_for_stream = (policy_point + 1).saturating_sub(status.first_index.0);
        assert!(
            status.first_index.0 > streamed_index + 1,
            "round {rounds_during_stream}: the leader keeps its log from {} (the streamed snapshot is at \
             {streamed_index}) after {} bytes written during the stream, more than the bound {KEPT_BYTES_MAX}",
            status.first_index,
            (next - 101) * ENTRY_PADDING_BYTES as u64
        );
        assert!(
            kept_for_stream * ENTRY_PADDING_BYTES as u64 <= KEPT_BYTES_MAX,
            "round {rounds_during_stream}: {kept_for_stream} entries of over {ENTRY_PADDING_BYTES} bytes kept \
             below the policy's point {policy_point} for the stream, over the bound {KEPT_BYTES_MAX}"
        );
        assert!(kept_for_stream > 0, "nothing was kept for the stream: {status:?}");
    }
    assert!(
        rounds_during_stream >= 1,
        "the stream of snapshot {streamed_index} ended before a snapshot was taken under it"
    );

    // The log after the streamed snapshot is gone: the follower is sent a
    // newer snapshot and ends with every write once.
    let all = tally_of(1..=next - 1);
    cluster.wait_tally(leader, all);
    cluster.wait_tally(follower, all);
    let status = block(cluster.handle(follower).status()).expect("a status");
    assert!(
        status.counters.snapshots_installed >= 2,
        "the follower installed {} snapshot(s); a newer one after the streamed {streamed_index} was expected",
        status.counters.snapshots_installed
    );
    assert!(status.snapshot_index.0 > streamed_index, "{status:?}");
    cluster.write(next..=next + 4, 0);
    cluster.wait_tally(follower, tally_of(1..=next + 4));
}
