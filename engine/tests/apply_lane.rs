//! The apply lane (`OffShard`) on real 3-node clusters in one process
//! (glommio executors, loopback TCP, real WALs and snapshots in temp dirs):
//! a slow state machine applies on its own thread, so the other groups of
//! its shard keep committing; its replies, reads and client sessions stay
//! exactly-once across snapshots and restarts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::{Command, CommandCounter, Error, OffShard, StateMachine};
use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory, REQUEST_TIMEOUT};

const SLOW: GroupId = GroupId(1);
/// The tests run one at a time: the last one counts this process's apply
/// threads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const FAST: GroupId = GroupId(2);

/// The library's counter (`CommandCounter`: a command's answer and a
/// query's are the count; snapshots of the count), sleeping `sleep` in
/// every batch.
struct SlowCounter {
    counter: CommandCounter,
    sleep: Duration,
}

impl StateMachine for SlowCounter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        std::thread::sleep(self.sleep);
        self.counter.on_apply(commands)
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.counter.on_query(query)
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.counter.on_snapshot_save(writer)
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.counter.on_snapshot_load(reader)
    }
}

/// Group 1 on the apply lane, sleeping `sleep` per batch; group 2 on the
/// shard, not sleeping.
fn factory(sleep: Duration) -> StateMachineFactory {
    Arc::new(move |group| {
        if group == SLOW {
            Box::new(OffShard::new(SlowCounter {
                counter: CommandCounter::default(),
                sleep,
            }))
        } else {
            Box::new(CommandCounter::default())
        }
    })
}

struct Cluster {
    dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    nodes: Vec<Option<Node>>,
    sleep: Duration,
}

impl Cluster {
    fn start(sleep: Duration) -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        assert!(SERIAL.try_lock().is_err(), "a test holds SERIAL while its cluster runs");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            addresses: coraft::ports::free_loopback_addresses(3).unwrap(),
            nodes: Vec::new(),
            sleep,
        };
        for n in 1..=3 {
            let node = cluster.start_node(NodeId(n));
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn options(&self, id: NodeId) -> NodeOptions {
        NodeOptions {
            wal_segment_bytes: 8 << 20,
            groups: vec![SLOW, FAST],
            // Generous: the machine running the tests may be loaded.
            election_timeout_ticks: 50,
            heartbeat_interval_ticks: 5,
            snapshot: coraft::runtime::SnapshotPolicy {
                after_entries: 0,
                after_log_bytes: 0,
                shard_after_log_bytes: 0,
                interval: Duration::ZERO,
                log_tail_entries: 2,
                ..Default::default()
            },
            request_timeout: REQUEST_TIMEOUT,
            ..NodeOptions::new(
                7,
                id,
                self.addresses
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| PeerSpec {
                        id: NodeId(i as u64 + 1),
                        shard_addresses: vec![a],
                    })
                    .collect(),
                self.dir.path().join(format!("node-{id}")),
            )
        }
    }

    fn start_node(&self, id: NodeId) -> Node {
        Node::start(self.options(id), factory(self.sleep)).expect("node starts")
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Waits for the one node leading `group`.
    fn leader(&self, group: GroupId) -> &Node {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders: Vec<&Node> = self
                .running()
                .filter(|n| block(n.group(group).status()).is_ok_and(|s| s.role == Role::Leader))
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader of group {group} in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            cluster_id: 7,
            nodes: self
                .addresses
                .iter()
                .enumerate()
                .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
                .collect(),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    /// Stops every node and starts them again from their WALs and snapshots.
    fn restart_all(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(node) = node.take() {
                node.shutdown();
            }
        }
        for n in 1..=3 {
            let node = self.start_node(NodeId(n));
            self.nodes[n as usize - 1] = Some(node);
        }
    }
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Applies through the leader of `group`, following leader changes.
fn apply(cluster: &Cluster, group: GroupId, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match block(cluster.leader(group).group(group).apply(data.to_vec())) {
            Ok(result) => return result,
            Err(Error::NotLeader { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("a write to group {group} failed: {error}"),
        }
    }
}

/// Writes through a session, retried while the cluster elects.
fn write(client: &mut Client, group: GroupId, data: &[u8]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.write(group, data) {
            Ok(result) => return count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "no write succeeded in 30 s: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn retry(client: &mut Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.retry_write() {
            Ok(result) => return count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "the retry never succeeded in 30 s: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn read(client: &mut Client, group: GroupId) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.read(group, b"") {
            Ok(result) => return count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "no read succeeded in 30 s: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_slow_state_machine_on_its_apply_lane_does_not_hold_up_writes_to_another_group_of_its_shard() {
    // Every batch of group 1 sleeps 1.5 s. Applied on the shard, each of
    // its batches stops the whole shard (on all three nodes) that long, so
    // among group 2's writes over 4 s some wait for most of one (seen:
    // the slowest took 0.7 s with 0.4 s batches); on the lane none does.
    const BATCH_SLEEP: Duration = Duration::from_millis(1500);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(BATCH_SLEEP);
    apply(&cluster, SLOW, b"first");
    apply(&cluster, FAST, b"first");
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let handle = cluster.leader(SLOW).group(SLOW);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut applied = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if block(handle.apply(b"slow".to_vec())).is_ok() {
                        applied += 1;
                    }
                }
                applied
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::new();
    let writing = Instant::now();
    while writing.elapsed() < Duration::from_secs(4) {
        let started = Instant::now();
        let expected = latencies.len() as u64 + 2;
        assert_eq!(count(&apply(&cluster, FAST, b"fast")), expected);
        latencies.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let slow_writes: u64 = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    latencies.sort();
    let slowest = *latencies.last().expect("group 2 wrote");
    assert!(slow_writes > 0, "group 1 applied none of its writes meanwhile");
    // Generous (the machine may be loaded), but below one slow batch.
    assert!(
        slowest < BATCH_SLEEP * 2 / 3,
        "group 2's slowest write took {slowest:?} while group 1 applied slowly (all: {latencies:?})"
    );
}

#[test]
fn replies_reads_and_retries_on_an_apply_lane_are_exactly_once_across_snapshots_and_a_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(Duration::from_millis(5));
    let mut client = Client::new(cluster.client_config());
    for expected in 1..=10 {
        assert_eq!(write(&mut client, SLOW, b"w"), expected);
        // A linearizable read is served only once its write is applied.
        assert_eq!(read(&mut client, SLOW), expected);
    }
    // Snapshots written on each node's lane, with its session table.
    for node in cluster.running() {
        let index = block(node.group(SLOW).snapshot()).expect("a snapshot on the apply lane");
        assert!(index.0 >= 10, "the snapshot covers the writes (index {index})");
    }
    for expected in 11..=15 {
        assert_eq!(write(&mut client, SLOW, b"w"), expected);
    }
    // The last write's answer might have been lost: a retry gets the same
    // result and applies nothing.
    assert_eq!(retry(&mut client), 15);
    assert_eq!(read(&mut client, SLOW), 15);
    // Restarted from snapshot + log tail, replayed through the lane: the
    // sessions still vouch for the last write.
    cluster.restart_all();
    assert_eq!(retry(&mut client), 15, "the retry after the restart applied again");
    assert_eq!(read(&mut client, SLOW), 15);
    assert_eq!(write(&mut client, SLOW, b"w"), 16);
    // Every node's lane applied exactly the 16 writes, no more.
    for node in cluster.running() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stale = count(&block(node.group(SLOW).read_stale(Vec::new())).unwrap());
            if stale == 16 {
                break;
            }
            assert!(stale < 16, "node {} applied {stale} writes of 16", node.id());
            assert!(Instant::now() < deadline, "node {} stuck at {stale} of 16", node.id());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Threads of this process whose name says they are an apply lane.
fn apply_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("coraft-") && name.contains("apply"))
        .count()
}

#[test]
fn a_stopped_follower_catches_up_into_its_lane_and_no_lane_thread_outlives_its_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(Duration::from_millis(2));
    let mut client = Client::new(cluster.client_config());
    assert_eq!(write(&mut client, SLOW, b"w"), 1);
    assert!(apply_threads() >= 3, "each node runs group 1 on an apply lane");
    // A follower stops; the leader writes past its log tail and compacts.
    let leader_id = cluster.leader(SLOW).id();
    let follower = [NodeId(1), NodeId(2), NodeId(3)]
        .into_iter()
        .find(|&n| n != leader_id)
        .unwrap();
    cluster.nodes[follower.0 as usize - 1].take().unwrap().shutdown();
    for expected in 2..=30 {
        assert_eq!(write(&mut client, SLOW, b"w"), expected);
    }
    let leader = cluster.leader(SLOW);
    block(leader.group(SLOW).snapshot()).expect("a snapshot on the leader's lane");
    // Back, it catches up into its lane: through the leader's snapshot
    // (loaded with the session table) or the log the leader still holds
    // (its WAL keeps entries past the snapshot; which one is not fixed).
    let restarted = cluster.start_node(follower);
    cluster.nodes[follower.0 as usize - 1] = Some(restarted);
    let node = cluster.nodes[follower.0 as usize - 1].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stale = count(&block(node.group(SLOW).read_stale(Vec::new())).unwrap());
        if stale == 30 {
            break;
        }
        assert!(stale < 30, "the follower applied {stale} writes of 30");
        assert!(Instant::now() < deadline, "the follower stuck at {stale} of 30");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its lane holds the sessions: the last write retried through it (as
    // leader, once the others are gone) is not applied again.
    let others: Vec<usize> = (0..3).filter(|&i| i != follower.0 as usize - 1).collect();
    cluster.nodes[others[0]].take().unwrap().shutdown();
    assert_eq!(retry(&mut client), 30);
    assert_eq!(read(&mut client, SLOW), 30);
    for node in cluster.nodes.iter_mut() {
        if let Some(node) = node.take() {
            node.shutdown();
        }
    }
    assert_eq!(apply_threads(), 0, "an apply thread outlived its node");
}

/// What the recording state machine saw, in the order it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    LeaderStart(u64),
    LeaderStop,
    /// The indexes of one `on_apply` batch.
    Applied(Vec<u64>),
    /// A snapshot saved after applying up to this index.
    Saved(u64),
}

/// Records every callback, sleeping in every batch so jobs queue up.
struct Recorder {
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    last_applied: u64,
}

impl StateMachine for Recorder {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(20));
        let indexes: Vec<u64> = commands.map(|command| command.index.0).collect();
        self.last_applied = indexes.last().copied().unwrap_or(self.last_applied);
        let answers = indexes.iter().map(|index| index.to_le_bytes().to_vec()).collect();
        self.seen.lock().unwrap().push(Seen::Applied(indexes));
        answers
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.last_applied.to_le_bytes().to_vec()
    }

    fn on_leader_start(&mut self, term: coraft::raft::Term) {
        self.seen.lock().unwrap().push(Seen::LeaderStart(term.0));
    }

    fn on_leader_stop(&mut self, _reason: coraft::api::LeaderStopReason) {
        self.seen.lock().unwrap().push(Seen::LeaderStop);
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.seen.lock().unwrap().push(Seen::Saved(self.last_applied));
        writer.write_all(&self.last_applied.to_le_bytes())
    }
}

#[test]
fn the_lane_makes_the_callbacks_in_the_order_the_log_and_the_requests_made_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = env_logger::builder().is_test(true).try_init();
    let single = Cluster {
        dir: tempfile::tempdir().unwrap(),
        addresses: coraft::ports::free_loopback_addresses(1).unwrap(),
        nodes: Vec::new(),
        sleep: Duration::ZERO,
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory: StateMachineFactory = {
        let seen = seen.clone();
        Arc::new(move |group| {
            if group == SLOW {
                Box::new(OffShard::new(Recorder {
                    seen: seen.clone(),
                    last_applied: 0,
                }))
            } else {
                Box::new(CommandCounter::default())
            }
        })
    };
    let node = Node::start(single.options(NodeId(1)), factory).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while block(node.group(SLOW).apply(b"first".to_vec())).is_err() {
        assert!(Instant::now() < deadline, "no leader in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Writes queue up behind 20 ms batches; the snapshot asked for
    // meanwhile must run after every apply handed over before it.
    let writers: Vec<_> = (0..10)
        .map(|_| {
            let handle = node.group(SLOW);
            std::thread::spawn(move || block(handle.apply(b"w".to_vec())).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    let snapshot_index = block(node.group(SLOW).snapshot()).unwrap().0;
    for writer in writers {
        writer.join().unwrap();
    }
    node.shutdown();
    let seen = seen.lock().unwrap().clone();
    eprintln!("seen: {seen:?}");
    // The leader started once, before any apply, and stopped last.
    assert!(matches!(seen.first(), Some(Seen::LeaderStart(_))), "{seen:?}");
    assert_eq!(seen.last(), Some(&Seen::LeaderStop), "{seen:?}");
    // Applies come in log order, with no index twice.
    let applied: Vec<u64> = seen
        .iter()
        .filter_map(|event| match event {
            Seen::Applied(indexes) => Some(indexes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(applied.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    assert_eq!(applied.len(), 11, "{seen:?}");
    // The snapshot saved exactly the state at its index: every apply up to
    // it before, none after.
    let saved = seen
        .iter()
        .position(|event| matches!(event, Seen::Saved(_)))
        .expect("a snapshot was saved");
    assert_eq!(seen[saved], Seen::Saved(snapshot_index), "{seen:?}");
    let after_save: Vec<u64> = seen[saved..]
        .iter()
        .filter_map(|event| match event {
            Seen::Applied(indexes) => indexes.first().copied(),
            _ => None,
        })
        .collect();
    assert!(after_save.iter().all(|&first| first > snapshot_index), "{seen:?}");
}

/// What a lane's state machine on one node saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// One `on_apply` batch: its first and last index.
    Applied(u64, u64),
    /// A snapshot loaded that covers the log through this index.
    Loaded(u64),
}

/// Counts writes and records, per node, every batch and every load; its
/// snapshot is the count and the last index applied.
struct Tracked {
    steps: Arc<std::sync::Mutex<Vec<Step>>>,
    count: u64,
    last: u64,
}

impl StateMachine for Tracked {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(2));
        let indexes: Vec<u64> = commands.map(|command| command.index.0).collect();
        if let (Some(&first), Some(&last)) = (indexes.first(), indexes.last()) {
            self.steps.lock().unwrap().push(Step::Applied(first, last));
            self.last = last;
        }
        indexes
            .iter()
            .map(|_| {
                self.count += 1;
                self.count.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.count.to_le_bytes().to_vec()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.count.to_le_bytes())?;
        writer.write_all(&self.last.to_le_bytes())
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 16];
        reader.read_exact(&mut bytes)?;
        self.count = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        self.last = u64::from_le_bytes(bytes[8..].try_into().unwrap());
        self.steps.lock().unwrap().push(Step::Loaded(self.last));
        Ok(())
    }
}

#[test]
fn a_snapshot_installed_into_a_lane_group_loads_after_the_lane_drains_and_nothing_older_applies_after_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(Duration::ZERO);
    // Replace the counters of this test's nodes with recording ones.
    for node in cluster.nodes.iter_mut() {
        node.take().unwrap().shutdown();
    }
    let steps: Vec<Arc<std::sync::Mutex<Vec<Step>>>> =
        (0..3).map(|_| Arc::new(std::sync::Mutex::new(Vec::new()))).collect();
    let start = |cluster: &Cluster, id: NodeId| {
        let node_steps = steps[id.0 as usize - 1].clone();
        let factory: StateMachineFactory = Arc::new(move |group| {
            if group == SLOW {
                Box::new(OffShard::new(Tracked {
                    steps: node_steps.clone(),
                    count: 0,
                    last: 0,
                }))
            } else {
                Box::new(CommandCounter::default())
            }
        });
        Node::start(cluster.options(id), factory).expect("node starts")
    };
    cluster.dir = tempfile::tempdir().unwrap();
    for n in 1..=3 {
        let node = start(&cluster, NodeId(n));
        cluster.nodes[n as usize - 1] = Some(node);
    }
    let mut client = Client::new(cluster.client_config());
    assert_eq!(write(&mut client, SLOW, b"w"), 1);
    let leader_id = cluster.leader(SLOW).id();
    let follower = [NodeId(1), NodeId(2), NodeId(3)]
        .into_iter()
        .find(|&n| n != leader_id)
        .unwrap();
    let slot = follower.0 as usize - 1;
    cluster.nodes[slot].take().unwrap().shutdown();
    for expected in 2..=60 {
        assert_eq!(write(&mut client, SLOW, b"w"), expected);
    }
    let leader = cluster.leader(SLOW);
    let snapshot = block(leader.group(SLOW).snapshot())
        .expect("a snapshot on the leader's lane")
        .0;
    // Compaction follows the durable snapshot: wait until the leader's log
    // starts past what the follower holds, so only a snapshot catches it up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while block(leader.group(SLOW).status()).unwrap().first_index.0 <= 3 {
        assert!(Instant::now() < deadline, "the leader never compacted its log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = steps[slot].lock().unwrap().len();
    cluster.nodes[slot] = Some(start(&cluster, follower));
    // Writes go on while the follower installs and catches up.
    for expected in 61..=80 {
        assert_eq!(write(&mut client, SLOW, b"w"), expected);
    }
    let node = cluster.nodes[slot].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stale = count(&block(node.group(SLOW).read_stale(Vec::new())).unwrap());
        if stale == 80 {
            break;
        }
        assert!(stale < 80, "the follower applied {stale} writes of 80");
        assert!(Instant::now() < deadline, "the follower stuck at {stale} of 80");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = block(node.group(SLOW).status()).unwrap();
    assert!(
        status.counters.snapshots_installed >= 1,
        "the follower was caught up by the log, not a snapshot: {status:?}"
    );
    for node in cluster.nodes.iter_mut() {
        if let Some(node) = node.take() {
            node.shutdown();
        }
    }
    // On the restarted follower's lane: its replay of its own log, then the
    // installed snapshot, then only entries after it, in log order.
    let seen: Vec<Step> = steps[slot].lock().unwrap()[before..].to_vec();
    eprintln!("follower {follower}: {seen:?}");
    let loaded = seen
        .iter()
        .rposition(|step| matches!(step, Step::Loaded(_)))
        .expect("the installed snapshot was loaded on the lane");
    let Step::Loaded(installed) = seen[loaded] else {
        unreachable!()
    };
    assert!(
        installed >= snapshot,
        "loaded {installed}, the leader's snapshot is {snapshot}: {seen:?}"
    );
    let mut next = installed + 1;
    for step in &seen[loaded + 1..] {
        match *step {
            Step::Applied(first, last) => {
                assert_eq!(
                    first, next,
                    "after the load at {installed}, a batch out of order: {seen:?}"
                );
                next = last + 1;
            }
            Step::Loaded(_) => unreachable!("rposition"),
        }
    }
    // Before the load, the lane applied only what the follower held.
    for step in &seen[..loaded] {
        if let Step::Applied(_, last) = *step {
            assert!(last < installed, "{seen:?}");
        }
    }
}
