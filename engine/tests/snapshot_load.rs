//! A snapshot loaded off the shard's thread (`StateMachine::snapshot_loader`),
//! on real nodes over real TCP with real WALs and snapshot files: while a
//! follower's state machine prepares a large snapshot installed from the
//! leader, another group on the same shard keeps committing and applying
//! writes there, reads of the loading group wait for the swap, and the
//! loaded state is right (no entry applied twice or lost), also after a
//! restart that loads the installed snapshot with the same loader.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, PreparedSnapshot, SnapshotLoader, StateMachine};
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{GroupHandle, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory};

/// The group whose snapshot is installed (its loader is held by the gate).
const LOADING: GroupId = GroupId(1);
/// A group on the same shard that must keep going meanwhile.
const OTHER: GroupId = GroupId(2);
/// Padding of each write the stopped follower misses.
const MISSED_PADDING_BYTES: usize = 64 << 10;
/// How long the test waits for anything (the machine is shared).
const PATIENCE: Duration = Duration::from_secs(60);

/// Holds the first armed `prepare` until the test opens it.
#[derive(Default)]
struct Gate {
    /// (armed, a prepare is waiting, open)
    state: Mutex<(bool, bool, bool)>,
    changed: Condvar,
}

impl Gate {
    /// The state, even after a failed assertion poisoned the lock (the
    /// cluster's drop still opens the gate).
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool, bool)> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn arm(&self) {
        self.lock().0 = true;
    }

    /// In `prepare`: waits while armed and not open.
    fn pass(&self) {
        let mut state = self.lock();
        if !state.0 {
            return;
        }
        state.1 = true;
        self.changed.notify_all();
        let deadline = Instant::now() + PATIENCE;
        while !state.2 && Instant::now() < deadline {
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn wait_preparing(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.lock();
        while !state.1 {
            assert!(
                Instant::now() < deadline,
                "no snapshot loader started preparing within {PATIENCE:?}"
            );
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn open(&self) {
        let mut state = self.lock();
        state.0 = false;
        state.2 = true;
        self.changed.notify_all();
    }
}

/// Counts and sums the numbers it applies (8-byte commands); a query
/// answers `count, sum`; its snapshot is those 16 bytes, read by a loader
/// that waits at the gate.
struct Tally {
    count: u64,
    sum: u64,
    gate: Arc<Gate>,
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
        writer.write_all(&self.sum.to_le_bytes())
    }

    /// Without the loader an engine would load here, on the shard's thread,
    /// and never reach the gate.
    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        (self.count, self.sum) = read_tally(reader)?;
        Ok(())
    }

    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        Some(Box::new(TallyLoader(self.gate.clone())))
    }

    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let state = prepared
            .downcast::<(u64, u64)>()
            .map_err(|_| std::io::Error::other("not a tally"))?;
        (self.count, self.sum) = *state;
        Ok(())
    }
}

fn read_tally(reader: &mut dyn std::io::Read) -> std::io::Result<(u64, u64)> {
    let mut bytes = [0u8; 16];
    reader.read_exact(&mut bytes)?;
    Ok((
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
    ))
}

struct TallyLoader(Arc<Gate>);

impl SnapshotLoader for TallyLoader {
    fn prepare(self: Box<Self>, reader: &mut dyn std::io::Read) -> std::io::Result<PreparedSnapshot> {
        let state = read_tally(reader)?;
        self.0.pass();
        Ok(Box::new(state))
    }
}

struct Cluster {
    _temp: tempfile::TempDir,
    peers: Vec<PeerSpec>,
    nodes: Vec<Option<Node>>,
    /// The gate of group `LOADING`'s loaders on every node.
    gate: Arc<Gate>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let peers = common::loopback_peers(3);
        let mut cluster = Cluster {
            _temp: tempfile::tempdir().unwrap(),
            peers,
            nodes: Vec::new(),
            gate: Arc::new(Gate::default()),
        };
        for n in 1..=3 {
            let node = cluster.start_node(NodeId(n));
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn start_node(&self, id: NodeId) -> Node {
        let options = NodeOptions {
            // One shard: both groups share its thread.
            shard_cores: vec![None],
            wal_segment_bytes: 8 << 20,
            groups: vec![LOADING, OTHER],
            election_timeout_ticks: 20,
            // Snapshots on demand only, keeping 8 entries below them.
            snapshot: SnapshotPolicy {
                after_entries: 0,
                after_log_bytes: 0,
                shard_after_log_bytes: 0,
                interval: Duration::ZERO,
                log_tail_entries: 8,
                ..SnapshotPolicy::default()
            },
            ..NodeOptions::new(9, id, self.peers.clone(), self._temp.path().join(format!("node-{id}")))
        };
        let gate = self.gate.clone();
        let factory: StateMachineFactory = Arc::new(move |group| {
            Box::new(Tally {
                count: 0,
                sum: 0,
                // Only the loading group's loader waits at the gate.
                gate: if group == LOADING {
                    gate.clone()
                } else {
                    Arc::new(Gate::default())
                },
            })
        });
        Node::start(options, factory).expect("node starts")
    }

    fn handle(&self, id: NodeId, group: GroupId) -> GroupHandle {
        self.nodes[id.0 as usize - 1].as_ref().expect("running").group(group)
    }

    fn running(&self) -> Vec<NodeId> {
        (1..=3u64)
            .map(NodeId)
            .filter(|id| self.nodes[id.0 as usize - 1].is_some())
            .collect()
    }

    fn leader(&self, group: GroupId) -> NodeId {
        common::single_leader(&self.nodes, group, PATIENCE)
    }

    /// Applies each of `values` through the group's leader (retrying while
    /// leadership moves: a `NotLeader` write was not applied).
    fn write(&self, group: GroupId, values: std::ops::RangeInclusive<u64>) {
        self.write_padded(group, values, 0);
    }

    /// `write`, each command padded with `padding` bytes after its number.
    fn write_padded(&self, group: GroupId, values: std::ops::RangeInclusive<u64>, padding: usize) {
        for value in values {
            let deadline = Instant::now() + PATIENCE;
            let mut command = value.to_le_bytes().to_vec();
            command.resize(8 + padding, 0xA5);
            loop {
                let leader = self.leader(group);
                match block(self.handle(leader, group).apply(command.clone())) {
                    Ok(_) => break,
                    Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(error) => panic!("writing {value} to group {group}: {error}"),
                }
            }
        }
    }

    /// `count, sum` of node `id`'s state machine of `group`, read at once.
    fn tally(&self, id: NodeId, group: GroupId) -> (u64, u64) {
        decode(&block(self.handle(id, group).read_stale(Vec::new())).expect("a stale read"))
    }

    /// Waits until node `id`'s `group` holds `count` writes summing to `sum`.
    fn wait_tally(&self, id: NodeId, group: GroupId, expected: (u64, u64)) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.tally(id, group);
            if seen == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} group {group} holds (count, sum) {seen:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.gate.open();
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shutdown();
        }
    }
}

fn decode(answer: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(answer[..8].try_into().expect("16-byte answer")),
        u64::from_le_bytes(answer[8..16].try_into().expect("16-byte answer")),
    )
}

fn tally_of(values: std::ops::RangeInclusive<u64>) -> (u64, u64) {
    (values.clone().count() as u64, values.sum())
}

#[test]
fn a_group_on_the_same_shard_keeps_committing_while_a_snapshot_loads_off_the_thread_and_reads_wait_for_it() {
    let mut cluster = Cluster::start();
    cluster.write(LOADING, 1..=50);
    cluster.write(OTHER, 1..=50);
    let leader = cluster.leader(LOADING);
    let follower = NodeId(leader.0 % 3 + 1);
    for group in [LOADING, OTHER] {
        cluster.wait_tally(follower, group, tally_of(1..=50));
    }
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();

    // Both running nodes compact past what the follower holds, so whichever
    // leads when it comes back must send it a snapshot. The missed writes
    // (9.4 MiB) do not fit in a leader's outbound queue to the stopped
    // follower (4 MiB), whose AppendEntries would otherwise wait there and
    // catch it up without a snapshot.
    cluster.write_padded(LOADING, 51..=200, MISSED_PADDING_BYTES);
    for id in cluster.running() {
        cluster.wait_tally(id, LOADING, tally_of(1..=200));
        block(cluster.handle(id, LOADING).snapshot()).expect("a snapshot");
        let first_index = block(cluster.handle(id, LOADING).status()).unwrap().first_index;
        assert!(
            first_index.0 > 60,
            "node {id} kept its log from {first_index}: no snapshot needed"
        );
    }

    cluster.gate.arm();
    let node = cluster.start_node(follower);
    cluster.nodes[follower.0 as usize - 1] = Some(node);
    cluster.gate.wait_preparing();
    // The loader decodes the stream as it arrives, so it may reach the gate
    // before the core installs the snapshot; the group loads (and its reads
    // wait) from the install on.
    let deadline = Instant::now() + PATIENCE;
    while block(cluster.handle(follower, LOADING).status())
        .unwrap()
        .snapshot_index
        .0
        == 0
    {
        assert!(Instant::now() < deadline, "the follower's core installed no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The snapshot of LOADING is being prepared on the follower: its shard
    // goes on serving OTHER (statuses, stale reads, applying writes).
    let (reads_in, reads_out) = std::sync::mpsc::channel();
    let waiting_read = {
        let handle = cluster.handle(follower, LOADING);
        std::thread::spawn(move || {
            let answer = block(handle.read_stale(Vec::new()));
            let _ = reads_in.send(answer);
        })
    };
    cluster.write(OTHER, 51..=80);
    cluster.wait_tally(follower, OTHER, tally_of(1..=80));
    // LOADING takes writes meanwhile too; the follower logs them.
    cluster.write(LOADING, 201..=210);
    let status = block(cluster.handle(follower, LOADING).status()).unwrap();
    assert_eq!(
        status.counters.snapshots_installed, 0,
        "the snapshot counts as installed only once swapped in"
    );
    // Still preparing (the gate is shut): the read has not been answered
    // from the state the snapshot replaces.
    assert!(
        reads_out.try_recv().is_err(),
        "a read of the loading group was answered before the snapshot was swapped in"
    );

    cluster.gate.open();
    let answer = reads_out
        .recv_timeout(PATIENCE)
        .expect("the waiting read is answered after the swap")
        .expect("a stale read");
    let (count, sum) = decode(&answer);
    assert!(
        count >= 200 && (count, sum) == tally_of(1..=count),
        "the read waited for the swap and saw a whole prefix of the writes: count {count}, sum {sum}"
    );
    waiting_read.join().unwrap();
    // Every write once: the snapshot's, then those held back and after.
    cluster.wait_tally(follower, LOADING, tally_of(1..=210));
    let status = block(cluster.handle(follower, LOADING).status()).unwrap();
    assert_eq!(status.counters.snapshots_installed, 1);
    assert!(
        status.snapshot_index.0 >= 200,
        "snapshot index {}",
        status.snapshot_index
    );
    cluster.wait_tally(follower, OTHER, tally_of(1..=80));

    // A restart loads the installed snapshot with the same loader (the
    // gate is open) and applies only the entries after it.
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();
    let node = cluster.start_node(follower);
    cluster.nodes[follower.0 as usize - 1] = Some(node);
    cluster.wait_tally(follower, LOADING, tally_of(1..=210));
    cluster.write(LOADING, 211..=215);
    cluster.wait_tally(follower, LOADING, tally_of(1..=215));
}

/// The group's report over the admin protocol from node `id`.
fn admin_report(cluster: &Cluster, id: NodeId, group: GroupId) -> coraft_net::admin::GroupReport {
    let address = cluster.peers[id.0 as usize - 1].shard_addresses[0];
    let mut admin = coraft::admin::AdminClient::connect(address, 9, Duration::from_secs(10)).expect("admin connects");
    let report = admin.status(&[group]).expect("a status");
    report
        .groups
        .into_iter()
        .find(|g| g.group == group.0)
        .expect("the group's report")
}

#[test]
fn while_a_snapshot_loads_the_admin_status_shows_the_applied_index_the_state_machine_holds() {
    let mut cluster = Cluster::start();
    cluster.write(LOADING, 1..=50);
    let leader = cluster.leader(LOADING);
    let follower = NodeId(leader.0 % 3 + 1);
    cluster.wait_tally(follower, LOADING, tally_of(1..=50));
    let applied_before = admin_report(&cluster, follower, LOADING).applied_index;
    cluster.nodes[follower.0 as usize - 1]
        .take()
        .expect("running")
        .shutdown();
    // As in the test above: the running nodes compact past the follower.
    cluster.write_padded(LOADING, 51..=200, MISSED_PADDING_BYTES);
    for id in cluster.running() {
        cluster.wait_tally(id, LOADING, tally_of(1..=200));
        block(cluster.handle(id, LOADING).snapshot()).expect("a snapshot");
    }

    // The follower's loader is held: a load as slow as the test likes.
    cluster.gate.arm();
    let node = cluster.start_node(follower);
    cluster.nodes[follower.0 as usize - 1] = Some(node);
    cluster.gate.wait_preparing();
    // The loader decodes the stream as it arrives, so it may reach the gate
    // before the core installs the snapshot: wait for the install.
    let deadline = Instant::now() + PATIENCE;
    let loading = loop {
        let report = admin_report(&cluster, follower, LOADING);
        if report.snapshot_index > 0 {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the follower's core installed no snapshot: {report:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(loading.snapshot_index > 200, "the core took the snapshot: {loading:?}");
    assert!(
        loading.applied_index <= applied_before,
        "while the snapshot ({}) loads, the state machine holds at most what it applied before the stop ({}), \
         but the status says applied {}",
        loading.snapshot_index,
        applied_before,
        loading.applied_index
    );
    // Still so a moment later, with writes going on.
    cluster.write(LOADING, 201..=205);
    let still = admin_report(&cluster, follower, LOADING);
    assert!(still.applied_index <= applied_before, "{still:?}");

    cluster.gate.open();
    cluster.wait_tally(follower, LOADING, tally_of(1..=205));
    let loaded = admin_report(&cluster, follower, LOADING);
    assert!(
        loaded.applied_index >= loading.snapshot_index + 5,
        "once swapped in, applied covers the snapshot and the writes held back: {loaded:?}"
    );
}
