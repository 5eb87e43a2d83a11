//! Removing a group created at run time (`Node::remove_group`) from a real
//! node (a glommio executor, loopback TCP, a real WAL and snapshot store in
//! a temp dir): the group is gone, also after a restart; its WAL segments
//! are deleted once nothing else needs them; requests to it fail with
//! `GroupRemoved`; its id is not created again; and a group on an apply
//! lane has its lane drained before its state machine is dropped.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, CommandCounter, Error, OffShard, StateMachine};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};

const CONFIGURED: GroupId = GroupId(1);
const CREATED: GroupId = GroupId(7);
const ME: NodeId = NodeId(1);

fn options(dir: &Path, address: std::net::SocketAddr) -> NodeOptions {
    NodeOptions {
        // Small segments (a WAL record of up to 4 MiB must fit in one): a
        // few hundred writes fill several.
        wal_segment_bytes: 6 << 20,
        groups: vec![CONFIGURED],
        // Generous: the machine running the tests may be loaded.
        election_timeout_ticks: 20,
        heartbeat_interval_ticks: 4,
        // No policy snapshots: only the ones the tests ask for.
        snapshot: coraft::runtime::SnapshotPolicy {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            log_tail_entries: 2,
            ..Default::default()
        },
        ..NodeOptions::new(
            7,
            ME,
            vec![PeerSpec {
                id: ME,
                shard_addresses: vec![address],
            }],
            dir.join("node-1"),
        )
    }
}

fn shard_dir(dir: &Path) -> PathBuf {
    dir.join("node-1").join("shard-0")
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(shard_dir(dir))
        .unwrap()
        .filter(|item| item.as_ref().unwrap().file_name().to_string_lossy().ends_with(".wal"))
        .count()
}

/// Applies `data` to `group`, waiting up to 30 s for it to elect itself.
fn apply(node: &Node, group: GroupId, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let handle = node.group(group);
        if block(handle.status()).is_ok_and(|s| s.role == Role::Leader) {
            match block(handle.apply(data.to_vec())) {
                Ok(answer) => return answer,
                Err(Error::NotLeader { .. } | Error::Busy { .. }) => {}
                Err(error) => panic!("group {group}: apply failed: {error}"),
            }
        }
        assert!(Instant::now() < deadline, "group {group}: no write in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 50 ms for up to 30 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counters() -> StateMachineFactory {
    Arc::new(|_| Box::new(CommandCounter::default()))
}

#[test]
fn a_removed_group_stays_gone_after_a_restart_and_its_wal_segments_are_deleted() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let node = Node::start(options(dir.path(), address), counters()).unwrap();
    node.create_group(CREATED, vec![ME]).unwrap();
    // The created group's records spread over several segments; the
    // configured group writes after them.
    for _ in 0..200 {
        apply(&node, CREATED, &[7; 128 << 10]);
    }
    for _ in 0..5 {
        apply(&node, CONFIGURED, b"one");
    }
    let snapshots = shard_dir(dir.path()).join("snapshots").join("group-7");
    assert!(snapshots.is_dir(), "{} is missing", snapshots.display());
    // The configured group lets go of its log; the created one holds the
    // oldest segments.
    block(node.group(CONFIGURED).snapshot()).unwrap();
    let held = segments(dir.path());
    assert!(held >= 4, "only {held} segments");
    eprintln!("before the removal: {held} segments");

    node.remove_group(CREATED).unwrap();
    // Twice: done already.
    node.remove_group(CREATED).unwrap();
    assert_eq!(
        block(node.group(CREATED).apply(b"late".to_vec())),
        Err(Error::GroupRemoved(CREATED))
    );
    assert_eq!(
        block(node.group(CREATED).read(Vec::new())),
        Err(Error::GroupRemoved(CREATED))
    );
    match node.remove_group(CONFIGURED) {
        Err(Error::Config(reason)) => assert!(reason.contains("NodeOptions::groups"), "{reason}"),
        other => panic!("removing a configured group: {other:?}"),
    }
    match node.create_group(CREATED, vec![ME]) {
        Err(Error::Config(reason)) => assert!(reason.contains("was removed"), "{reason}"),
        other => panic!("creating a removed group again: {other:?}"),
    }
    eventually("the removed group's snapshot directory is deleted", || {
        !snapshots.exists()
    });
    // The next snapshot of the configured group asks for a deletion pass
    // too; the removal asked for one already.
    apply(&node, CONFIGURED, b"two");
    block(node.group(CONFIGURED).snapshot()).unwrap();
    eventually("the removed group's WAL segments are deleted", || {
        segments(dir.path()) <= 2
    });
    node.shutdown();

    let list = std::fs::read_to_string(shard_dir(dir.path()).join("created-groups")).unwrap();
    assert_eq!(list, "7 removed\n");
    let node = Node::start(options(dir.path(), address), counters()).unwrap();
    assert_eq!(
        block(node.group(CREATED).apply(b"after".to_vec())),
        Err(Error::GroupRemoved(CREATED))
    );
    assert!(block(node.group(CREATED).status()).is_err());
    assert!(!snapshots.exists());
    // The configured group is intact and the log stays short.
    assert_eq!(apply(&node, CONFIGURED, b"three"), 7u64.to_le_bytes());
    assert!(segments(dir.path()) <= 2, "{} segments", segments(dir.path()));
    node.shutdown();
}

/// Counts commands like `CommandCounter`, sleeping `sleep` in every batch;
/// says how many it had applied when it was dropped.
struct SlowCounter {
    counter: CommandCounter,
    sleep: Duration,
    applied_at_drop: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
}

impl StateMachine for SlowCounter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        std::thread::sleep(self.sleep);
        self.counter.on_apply(commands)
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.counter.on_query(query)
    }
}

impl Drop for SlowCounter {
    fn drop(&mut self) {
        self.applied_at_drop.store(self.counter.applied(), Ordering::SeqCst);
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn apply_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("coraft-1-apply"))
        .count()
}

#[test]
fn a_removed_group_on_an_apply_lane_applies_what_it_was_handed_before_its_state_machine_is_dropped() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let applied_at_drop = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let factory: StateMachineFactory = {
        let (applied_at_drop, dropped) = (applied_at_drop.clone(), dropped.clone());
        Arc::new(move |group| {
            if group == CREATED {
                Box::new(OffShard::new(SlowCounter {
                    counter: CommandCounter::default(),
                    sleep: Duration::from_millis(100),
                    applied_at_drop: applied_at_drop.clone(),
                    dropped: dropped.clone(),
                }))
            } else {
                Box::new(CommandCounter::default())
            }
        })
    };
    let node = Node::start(options(dir.path(), address), factory).unwrap();
    node.create_group(CREATED, vec![ME]).unwrap();
    apply(&node, CREATED, b"first");
    // A burst the lane applies a batch at a time, 100 ms each: the removal
    // comes while some is still queued.
    let writers: Vec<_> = (0..20)
        .map(|_| {
            let handle = node.group(CREATED);
            std::thread::spawn(move || block(handle.apply(b"w".to_vec())))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    node.remove_group(CREATED).unwrap();
    let (mut acknowledged, mut refused) = (1, 0);
    for writer in writers {
        match writer.join().unwrap() {
            Ok(answer) => acknowledged = acknowledged.max(u64::from_le_bytes(answer.try_into().unwrap())),
            Err(Error::GroupRemoved(group)) => {
                assert_eq!(group, CREATED);
                refused += 1;
            }
            Err(error) => panic!("a write to the removed group: {error}"),
        }
    }
    eprintln!("the burst: up to {acknowledged} acknowledged, {refused} refused");
    eventually("the removed group's state machine is dropped", || {
        dropped.load(Ordering::SeqCst)
    });
    let applied = applied_at_drop.load(Ordering::SeqCst);
    assert!(
        applied >= acknowledged,
        "dropped at {applied} applied, {acknowledged} acknowledged"
    );
    eventually("the removed group's apply thread ends", || apply_threads() == 0);
    // The shard goes on.
    assert_eq!(apply(&node, CONFIGURED, b"x"), 1u64.to_le_bytes());
    node.shutdown();
    assert_eq!(apply_threads(), 0);
}

/// A crash right after the list marked the group removed (before the WAL
/// forgot it and its snapshots were deleted): the next start finishes the
/// removal.
#[test]
fn a_start_finishes_a_removal_that_a_crash_interrupted() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let node = Node::start(options(dir.path(), address), counters()).unwrap();
    node.create_group(CREATED, vec![ME]).unwrap();
    apply(&node, CREATED, b"kept until the removal");
    block(node.group(CREATED).snapshot()).unwrap();
    node.shutdown();
    let snapshots = shard_dir(dir.path()).join("snapshots").join("group-7");
    assert!(snapshots.is_dir());
    // What step 2 of a removal leaves: only the list says removed.
    std::fs::write(shard_dir(dir.path()).join("created-groups"), "7 removed\n").unwrap();

    let node = Node::start(options(dir.path(), address), counters()).unwrap();
    assert_eq!(
        block(node.group(CREATED).apply(b"late".to_vec())),
        Err(Error::GroupRemoved(CREATED))
    );
    assert!(!snapshots.exists(), "the start left {}", snapshots.display());
    node.shutdown();
    let forgotten = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(async {
            let (wal, _) = coraft_wal::Wal::open(shard_dir(dir.path()), Default::default())
                .await
                .unwrap();
            let state = (wal.group_state(CREATED.0), wal.forgotten_groups());
            wal.close().await.unwrap();
            state
        });
    assert_eq!(forgotten.0, None, "the WAL still holds the removed group");
    assert_eq!(
        forgotten.1.iter().map(|&(group, _)| group).collect::<Vec<_>>(),
        [CREATED.0]
    );
}
