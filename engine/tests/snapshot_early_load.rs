//! A follower's snapshot loader decodes a leader's snapshot while its
//! chunks arrive (real nodes, real TCP, real WALs and snapshot files): the
//! loader's first read comes before the received snapshot is published in
//! the follower's store, which it never did when the load started only
//! once the stream was complete, and the state it prepared is the one
//! installed (checked byte for byte, and no write lost or applied twice).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, PreparedSnapshot, SnapshotLoader, StateMachine};
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{GroupHandle, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory};

const GROUP: GroupId = GroupId(1);
/// Bytes of state besides the tally: the snapshot is about this large.
const STATE_BYTES: usize = 8 << 20;
/// The leaders' stream pace: the stream takes about four seconds.
const PACE_BYTES_PER_SECOND: u64 = 2 << 20;
/// Padding of each write the stopped follower misses.
const MISSED_PADDING_BYTES: usize = 64 << 10;
/// How long the test waits for anything (the machine is shared).
const PATIENCE: Duration = Duration::from_secs(120);

/// The byte at `offset` of every node's state.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// Counts and sums the numbers it applies (8-byte commands) and holds
/// `STATE_BYTES` more bytes of state; its snapshot is the tally, then those.
struct Bulk {
    count: u64,
    sum: u64,
    state: Arc<Vec<u8>>,
    /// This node's snapshot directory of the group.
    dir: PathBuf,
    /// Per `prepare`: whether a snapshot was already published in `dir`
    /// when it read its first byte.
    seen: Arc<Mutex<Vec<bool>>>,
}

impl StateMachine for Bulk {
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
        writer.write_all(&self.state)
    }

    fn on_snapshot_load(&mut self, _reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        Err(std::io::Error::other("this state machine loads with its loader only"))
    }

    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        Some(Box::new(BulkLoader {
            dir: self.dir.clone(),
            seen: self.seen.clone(),
        }))
    }

    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let (count, sum, state) = *prepared
            .downcast::<(u64, u64, Vec<u8>)>()
            .map_err(|_| std::io::Error::other("not a bulk state"))?;
        (self.count, self.sum, self.state) = (count, sum, Arc::new(state));
        Ok(())
    }
}

struct BulkLoader {
    dir: PathBuf,
    seen: Arc<Mutex<Vec<bool>>>,
}

fn published(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
    })
}

impl SnapshotLoader for BulkLoader {
    fn prepare(self: Box<Self>, reader: &mut dyn std::io::Read) -> std::io::Result<PreparedSnapshot> {
        let mut tally = [0u8; 16];
        reader.read_exact(&mut tally[..1])?;
        self.seen.lock().unwrap().push(published(&self.dir));
        reader.read_exact(&mut tally[1..])?;
        let mut state = vec![0u8; STATE_BYTES];
        reader.read_exact(&mut state)?;
        if let Some(at) = (0..STATE_BYTES).find(|&i| state[i] != pattern(i)) {
            return Err(std::io::Error::other(format!("state byte {at} differs")));
        }
        Ok(Box::new((
            u64::from_le_bytes(tally[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(tally[8..].try_into().expect("8 bytes")),
            state,
        )))
    }
}

struct Cluster {
    temp: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    nodes: Vec<Option<Node>>,
    /// Per node, what its loaders saw.
    seen: Vec<Arc<Mutex<Vec<bool>>>>,
    state: Arc<Vec<u8>>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let peers = common::loopback_peers(3);
        let mut cluster = Cluster {
            temp: tempfile::tempdir().unwrap(),
            peers,
            nodes: Vec::new(),
            seen: (0..3).map(|_| Arc::default()).collect(),
            state: Arc::new((0..STATE_BYTES).map(pattern).collect()),
        };
        for n in 1..=3 {
            let node = cluster.start_node(NodeId(n));
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn wal_dir(&self, id: NodeId) -> PathBuf {
        self.temp.path().join(format!("node-{id}"))
    }

    fn start_node(&self, id: NodeId) -> Node {
        let options = NodeOptions {
            wal_segment_bytes: 8 << 20,
            groups: vec![GROUP],
            election_timeout_ticks: 20,
            // Snapshots on demand only, no log kept below them.
            snapshot: SnapshotPolicy {
                after_entries: 0,
                after_log_bytes: 0,
                shard_after_log_bytes: 0,
                interval: Duration::ZERO,
                log_tail_entries: 0,
                install_bytes_per_second: PACE_BYTES_PER_SECOND,
            },
            ..NodeOptions::new(11, id, self.peers.clone(), self.wal_dir(id))
        };
        let dir = self.wal_dir(id).join("shard-0").join("snapshots").join("group-1");
        let (seen, state) = (self.seen[id.0 as usize - 1].clone(), self.state.clone());
        let factory: StateMachineFactory = Arc::new(move |_| {
            Box::new(Bulk {
                count: 0,
                sum: 0,
                state: state.clone(),
                dir: dir.clone(),
                seen: seen.clone(),
            })
        });
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

    /// Applies each of `values` through the leader (retrying while
    /// leadership moves: a `NotLeader` write was not applied).
    fn write(&self, values: std::ops::RangeInclusive<u64>) {
        self.write_padded(values, 0);
    }

    /// `write`, each command padded with `padding` bytes after its number.
    fn write_padded(&self, values: std::ops::RangeInclusive<u64>, padding: usize) {
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

    /// Waits until node `id` holds `count` writes summing to `sum`.
    fn wait_tally(&self, id: NodeId, expected: (u64, u64)) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = block(self.handle(id).read_stale(Vec::new())).expect("a stale read");
            let seen = (
                u64::from_le_bytes(answer[..8].try_into().unwrap()),
                u64::from_le_bytes(answer[8..16].try_into().unwrap()),
            );
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

    fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes[id.0 as usize - 1].take() {
            node.shutdown();
        }
    }

    fn restart(&mut self, id: NodeId) {
        self.nodes[id.0 as usize - 1] = Some(self.start_node(id));
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

#[test]
fn a_followers_loader_decodes_the_leaders_snapshot_while_it_arrives_and_that_state_is_installed() {
    let mut cluster = Cluster::start();
    cluster.write(1..=10);
    let follower = NodeId(cluster.leader().0 % 3 + 1);
    cluster.wait_tally(follower, tally_of(1..=10));
    cluster.stop(follower);
    // The missed writes (9.4 MiB) do not fit in the leader's outbound queue
    // to the stopped follower (4 MiB), whose AppendEntries would otherwise
    // wait there and catch it up by the log.
    cluster.write_padded(11..=160, MISSED_PADDING_BYTES);
    for id in cluster.running() {
        cluster.wait_tally(id, tally_of(1..=160));
        block(cluster.handle(id).snapshot()).expect("a snapshot");
        let first_index = block(cluster.handle(id).status()).unwrap().first_index;
        assert!(
            first_index.0 > 20,
            "node {id} kept its log from {first_index}: no snapshot needed"
        );
    }
    cluster.restart(follower);

    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = block(cluster.handle(follower).status()).unwrap();
        if status.counters.snapshots_installed >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} installed no snapshot: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.write(161..=170);
    cluster.wait_tally(follower, tally_of(1..=170));
    let seen = cluster.seen[follower.0 as usize - 1].lock().unwrap().clone();
    // Every prepare on the follower began before the snapshot was complete
    // (a load from the published file would add one that did not).
    assert!(
        !seen.is_empty() && seen.iter().all(|&published| !published),
        "per prepare on the follower, whether the snapshot was already published at its first read: {seen:?}"
    );
}
