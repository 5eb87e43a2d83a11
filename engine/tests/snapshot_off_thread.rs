//! A snapshot's fsyncs and the removal of the snapshots it replaces never
//! run on the shard's thread, also for a state machine without a snapshot
//! view (written by `on_snapshot_save` on the shard's thread): each fsync
//! waits for the device, and every group of the shard would wait with it
//! (1-5 ms per snapshot, several snapshots a second at 4 KiB writes;
//! docs/journal/benchmarks.md, "issue 17: the 4 KiB tail").
//!
//! The state machine's first apply, on the shard's thread, makes that
//! thread unable to `fsync`, `unlink` or `unlinkat` (a seccomp filter is per
//! thread; the executor's blocking threads exist before it, so they keep
//! both). Snapshots taken after must succeed all the same. The WAL syncs
//! through io_uring, which the filter does not see.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::{Command, StateMachine};
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{
    Node, NodeOptions, PeerSpec, Protocol, SnapshotPolicy, SnapshotStore, StateMachineFactory, REQUEST_TIMEOUT,
};

/// Counts its commands; its snapshot is the count (no view: it is written
/// on the shard's thread). Its first apply puts the filter on the thread
/// and checks that it holds.
struct Counting {
    count: u64,
    filtered: Arc<AtomicBool>,
    scratch: std::path::PathBuf,
}

impl StateMachine for Counting {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        if !self.filtered.load(Ordering::SeqCst) {
            coraft_wal::faults::refuse_syscalls_on_this_thread(&[
                libc::SYS_fsync,
                libc::SYS_unlink,
                libc::SYS_unlinkat,
            ]);
            let file = std::fs::File::create(&self.scratch).unwrap();
            let refused = file.sync_all().unwrap_err();
            assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "the filter holds: {refused}");
            self.filtered.store(true, Ordering::SeqCst);
        }
        commands
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
        writer.write_all(&self.count.to_le_bytes())
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 8];
        reader.read_exact(&mut bytes)?;
        self.count = u64::from_le_bytes(bytes);
        Ok(())
    }
}

const GROUP: GroupId = GroupId(1);

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

#[test]
fn snapshots_are_made_durable_and_old_ones_removed_off_the_shards_thread() {
    let temp = tempfile::tempdir().unwrap();
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let wal_dir = temp.path().join("node-1");
    let options = NodeOptions {
        groups: vec![GROUP],
        // Only the snapshots asked for below.
        snapshot: SnapshotPolicy {
            after_log_bytes: 0,
            ..SnapshotPolicy::default()
        },
        read_mode: ReadMode::Safe,
        protocol: Protocol::default(),
        request_timeout: REQUEST_TIMEOUT,
        ..NodeOptions::new(
            7,
            NodeId(1),
            vec![PeerSpec {
                id: NodeId(1),
                shard_addresses: vec![address],
            }],
            wal_dir.clone(),
        )
    };
    let filtered = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU64::new(0));
    let (flag, scratch) = (filtered.clone(), temp.path().join("scratch"));
    let factory: StateMachineFactory = Arc::new(move |_| {
        Box::new(Counting {
            count: 0,
            filtered: flag.clone(),
            scratch: scratch.clone(),
        })
    });
    let node = Node::start(options, factory).expect("node starts");
    let group = node.group(GROUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !block(group.status()).is_ok_and(|status| status.role == Role::Leader) {
        assert!(Instant::now() < deadline, "no leader after 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut taken = Vec::new();
    // SNAPSHOTS_KEPT is 2: the third and fourth remove the older ones.
    for round in 0..4u64 {
        for value in 0..5u64 {
            block(group.apply((round * 5 + value).to_le_bytes().to_vec())).expect("a write");
            applied.fetch_add(1, Ordering::SeqCst);
        }
        assert!(filtered.load(Ordering::SeqCst), "the shard's thread is filtered");
        let index = block(group.snapshot()).expect("a snapshot, its fsyncs off the shard's thread");
        taken.push(index);
    }
    node.shutdown();
    let store = SnapshotStore::open(&wal_dir.join("shard-0").join("snapshots").join("group-1"), GROUP).unwrap();
    let kept: Vec<_> = store.list().unwrap().into_iter().map(|id| id.index).collect();
    assert_eq!(
        kept,
        taken[2..].to_vec(),
        "the two newest kept, the older removed; taken {taken:?}"
    );
    assert_eq!(applied.load(Ordering::SeqCst), 20);
}
