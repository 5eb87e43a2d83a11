//! A node restarted with a long log and no snapshot applies its whole
//! committed backlog at once, not a few batches per outside event.
//!
//! Restart puts the log back in the core; the single voter commits it with
//! its first entry of the new term, and the shard hands it to the state
//! machine in Readies of at most `APPLY_BATCH_BYTES_MAX`, a bounded number
//! per turn. The rest must be taken in the next turns straight away: an idle
//! single-voter group is quiesced, so no tick comes to fetch it, and reads
//! (which wait for the state machine to reach their index) would time out
//! for minutes on a log of a few GiB.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, Role, APPLY_BATCH_BYTES_MAX};
use coraft::runtime::{Node, NodeOptions, SnapshotPolicy, StateMachineFactory, READY_ROUNDS_PER_TURN_MAX};

use common::{block, loopback_peers};

const GROUP: GroupId = GroupId(1);
/// Bytes of each write: large, so that the log is long in bytes with few
/// entries to write.
const WRITE_BYTES: usize = 64 << 10;
/// Writer threads filling the log.
const WRITERS: usize = 4;

fn options(dir: &std::path::Path, peers: Vec<coraft::runtime::PeerSpec>) -> NodeOptions {
    NodeOptions {
        groups: vec![GROUP],
        // Never a snapshot: the restart replays and applies the whole log.
        snapshot: SnapshotPolicy {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            ..SnapshotPolicy::default()
        },
        // A read that waits longer than this fails: long enough for the
        // backlog to apply on a loaded machine, far shorter than batches
        // taken one outside event at a time.
        request_timeout: Duration::from_secs(20),
        ..NodeOptions::new(5, NodeId(1), peers, dir)
    }
}

fn start(options: &NodeOptions) -> Node {
    let factory: StateMachineFactory = Arc::new(|_| Box::new(CommandCounter::default()));
    Node::start(options.clone(), factory).expect("node starts")
}

fn wait_leader(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !block(node.group(GROUP).status()).is_ok_and(|s| s.role == Role::Leader) {
        assert!(Instant::now() < deadline, "no leader within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_restarted_node_applies_a_backlog_of_many_turns_without_waiting_for_outside_events() {
    let temp = tempfile::tempdir().expect("temp dir");
    let options = options(temp.path(), loopback_peers(1));
    // The most one turn may apply: its rounds of handling Readies, each
    // with its rounds of one group's Readies, each of at most one batch.
    let per_turn = APPLY_BATCH_BYTES_MAX as usize * READY_ROUNDS_PER_TURN_MAX * READY_ROUNDS_PER_TURN_MAX;
    // Two turns' worth and a little: one event's turn cannot apply it all.
    let writes = (2 * per_turn + per_turn / 4).div_ceil(WRITE_BYTES) as u64;

    let node = Arc::new(start(&options));
    wait_leader(&node);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (node, next) = (node.clone(), next.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= writes {
                    return;
                }
                let mut command = vec![0u8; WRITE_BYTES];
                command[..8].copy_from_slice(&n.to_le_bytes());
                block(node.group(GROUP).apply(command)).expect("write");
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    Arc::into_inner(node).expect("the writers are done").shutdown();

    let node = start(&options);
    wait_leader(&node);
    let asked = Instant::now();
    let answer = block(node.group(GROUP).read(Vec::new()));
    let waited = asked.elapsed();
    let applied = u64::from_le_bytes(
        answer
            .unwrap_or_else(|e| panic!("the first read after the restart failed after {waited:?}: {e}"))
            .try_into()
            .expect("8 bytes"),
    );
    // The count restarts from zero (no snapshot): every write was applied
    // again, none twice.
    assert_eq!(applied, writes, "writes applied again after the restart");
    node.shutdown();
}
