//! Storage faults on a stopped node's WAL, on three real `coraft-node`
//! processes hosting the KV store: between batches of acknowledged writes,
//! node 3 is SIGKILLed, one of its segment files is damaged, and it is
//! started again. Damage to bytes a sync covered (a flipped bit in a synced
//! record, a zeroed sector, a truncated segment, a missing segment, first,
//! middle or last) must
//! make it refuse to start with a message naming the file (and the offset
//! where there is one); its pristine files are then put back and it rejoins.
//! A torn tail (the last flush garbled) is repaired: the node starts, says
//! where it cut, and catches up from its peers. At the end every
//! acknowledged write is read back from the cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coraft::api::{KvOp, KvResult};
use coraft::client::Client;
use coraft_chaos::cluster::Cluster;
use coraft_chaos::workload::GROUP;
use coraft_wal::format::{segment_file_name, BLOCK_BYTES, FLUSH_MARKER_BYTES, SEGMENT_HEADER_BYTES};
use coraft_wal::recovery::recover;
use coraft_wal::RecoveryMode;

mod common;
#[path = "common/storage_nodes.rs"]
mod storage_nodes;
use storage_nodes::{next_pairs, three_nodes, write_all, write_in_parallel, WRITE_WAIT};

/// Segments the victim must have before the faults start.
const SEGMENTS_WANTED: usize = 3;
/// Client threads that fill the first segments.
const FILL_WRITERS: u64 = 4;
/// The damaged node (0-based).
const VICTIM: usize = 2;
/// How long a node gets to refuse to start, or to come up.
const START_WAIT: Duration = Duration::from_secs(20);

/// Reads every key back and checks it holds the value last acknowledged.
fn read_all(client: &mut Client, pairs: &[(u64, u64)]) {
    for &(key, value) in pairs {
        let deadline = Instant::now() + WRITE_WAIT;
        let read = loop {
            match client.read(GROUP, &KvOp::Read { key }.encode()) {
                Ok(bytes) => break KvResult::decode(&bytes),
                Err(failure) => {
                    assert!(Instant::now() < deadline, "read of {key} failed: {failure:?}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(
            read,
            Some(KvResult::Value(Some(value))),
            "key {key}: an acknowledged write was lost"
        );
    }
}

/// The victim's WAL directory (one shard).
fn shard_dir(cluster: &Cluster) -> PathBuf {
    cluster.wal_dir(VICTIM).join("shard-0")
}

/// A segment found by recovery: its path, first LSN and where its valid
/// records end.
struct Segment {
    path: PathBuf,
    first_lsn: u64,
    end_offset: u64,
    flushes: u64,
}

fn segments(dir: &Path) -> Vec<Segment> {
    let recovered = recover(dir, RecoveryMode::Strict, false).expect("the undamaged WAL recovers strictly");
    recovered
        .segments
        .iter()
        .map(|s| Segment {
            path: s.path.clone(),
            first_lsn: s.first_lsn,
            end_offset: s.end_offset,
            flushes: s.flushes,
        })
        .collect()
}

/// Segment files in `dir` (preallocated, so there from their creation).
fn wal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |items| {
        items
            .filter_map(Result::ok)
            .filter(|item| item.file_name().to_string_lossy().ends_with(".wal"))
            .count()
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

fn xor_byte(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= mask;
    file.write_all_at(&byte, offset).unwrap();
}

fn fill(path: &Path, offset: u64, len: usize, byte: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![byte; len], offset).unwrap();
}

/// Starts the victim and waits for it to exit on its own; returns its log.
fn start_expecting_refusal(cluster: &mut Cluster, fault: &str) -> String {
    cluster.start(VICTIM).unwrap();
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Some(status) = cluster.exited(VICTIM) {
            assert!(!status.success(), "{fault}: the node exited with success");
            return cluster.log_since_start(VICTIM);
        }
        if Instant::now() > deadline {
            let log = cluster.log_since_start(VICTIM);
            cluster.kill(VICTIM);
            panic!("{fault}: the node started on a damaged log; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the victim and checks it is still running a while later.
fn start_expecting_service(cluster: &mut Cluster, fault: &str) {
    cluster.start(VICTIM).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    if let Some(status) = cluster.exited(VICTIM) {
        panic!(
            "{fault}: the node exited ({status}); its log:\n{}",
            cluster.log_since_start(VICTIM)
        );
    }
}

#[test]
fn damaged_synced_wal_bytes_make_a_node_refuse_to_start_and_a_torn_tail_is_repaired_from_peers() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-storage")
        .tempdir()
        .unwrap();
    let mut cluster = three_nodes(dir.path(), None);
    cluster.start_all().unwrap();
    let mut client = Client::new(cluster.client_config(Duration::from_secs(2)));
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    let mut next_key = 1u64;
    let batch = |next_key: &mut u64, client: &mut Client, acknowledged: &mut Vec<(u64, u64)>, count: u64| {
        let pairs = next_pairs(next_key, count);
        write_all(client, &pairs);
        acknowledged.extend(pairs);
    };
    // (name, damage; returns what the refusal must name) — each applied
    // to the victim's files after a batch of writes and a kill.
    type Damage = fn(&[Segment]) -> Vec<String>;
    let refusals: [(&str, Damage); 7] = [
        ("bit flip in a synced record of an older segment", |segments| {
            let segment = &segments[segments.len() - 2];
            let offset = (SEGMENT_HEADER_BYTES + FLUSH_MARKER_BYTES + 20) as u64;
            xor_byte(&segment.path, offset, 0x10);
            vec![
                segment_file_name(segment.first_lsn),
                format!("offset {}", SEGMENT_HEADER_BYTES + FLUSH_MARKER_BYTES),
            ]
        }),
        ("bit flip in a flush that a later flush vouches for", |segments| {
            let segment = segments
                .iter()
                .rev()
                .find(|s| s.flushes >= 3)
                .expect("a segment of 3 flushes");
            let offset = (SEGMENT_HEADER_BYTES + FLUSH_MARKER_BYTES + 20) as u64;
            xor_byte(&segment.path, offset, 0x01);
            vec![
                segment_file_name(segment.first_lsn),
                format!("offset {}", SEGMENT_HEADER_BYTES + FLUSH_MARKER_BYTES),
            ]
        }),
        ("zeroed sector in an older segment", |segments| {
            let segment = &segments[segments.len() - 2];
            let offset = (SEGMENT_HEADER_BYTES + BLOCK_BYTES) as u64;
            fill(&segment.path, offset, 512, 0);
            // Where recovery stops depends on whether a flush starts there.
            vec![segment_file_name(segment.first_lsn), "at offset".into()]
        }),
        ("truncated last segment", |segments| {
            let segment = segments.last().unwrap();
            let length = segment.end_offset / 2;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&segment.path)
                .unwrap()
                .set_len(length)
                .unwrap();
            vec![segment_file_name(segment.first_lsn), format!("{length} bytes")]
        }),
        ("missing segment", |segments| {
            let segment = &segments[segments.len() - 2];
            std::fs::remove_file(&segment.path).unwrap();
            vec![
                segment_file_name(segments[segments.len() - 1].first_lsn),
                "missing".into(),
            ]
        }),
        ("missing last segment", |segments| {
            let segment = segments.last().unwrap();
            std::fs::remove_file(&segment.path).unwrap();
            vec![segment_file_name(segment.first_lsn), "is missing".into()]
        }),
        ("missing first segment", |segments| {
            let segment = &segments[0];
            std::fs::remove_file(&segment.path).unwrap();
            vec![segment_file_name(segment.first_lsn), "is missing".into()]
        }),
    ];
    // Fill the victim's first segments, writers in parallel.
    let fill_deadline = Instant::now() + Duration::from_secs(300);
    let config = cluster.client_config(Duration::from_secs(2));
    while wal_files(&shard_dir(&cluster)) < SEGMENTS_WANTED {
        assert!(
            Instant::now() < fill_deadline,
            "the victim's WAL never reached {SEGMENTS_WANTED} segments"
        );
        acknowledged.extend(write_in_parallel(&config, &mut next_key, FILL_WRITERS, 200));
    }
    let pristine = dir.path().join("pristine");
    for (fault, damage) in refusals {
        batch(&mut next_key, &mut client, &mut acknowledged, 60);
        // Let the victim catch up, so it holds the batch too.
        std::thread::sleep(Duration::from_millis(500));
        assert!(cluster.kill(VICTIM), "{fault}: the victim was not running");
        let shard = shard_dir(&cluster);
        let before = segments(&shard);
        assert!(before.len() >= 3, "{fault}: only {} segments", before.len());
        let _ = std::fs::remove_dir_all(&pristine);
        copy_dir(&shard, &pristine);
        let named = damage(&before);
        let log = start_expecting_refusal(&mut cluster, fault);
        for name in &named {
            assert!(
                log.contains(name.as_str()),
                "{fault}: the refusal does not name `{name}`:\n{log}"
            );
        }
        println!(
            "{fault}: refused: {}",
            log.lines().find(|l| l.starts_with("Error")).unwrap_or("")
        );
        // Writes go on with two nodes while the victim is down.
        batch(&mut next_key, &mut client, &mut acknowledged, 10);
        std::fs::remove_dir_all(&shard).unwrap();
        copy_dir(&pristine, &shard);
        start_expecting_service(&mut cluster, fault);
    }
    // A torn tail: the last flush's records garbled as a power cut can
    // leave them. The node cuts them off, says where, and catches up.
    batch(&mut next_key, &mut client, &mut acknowledged, 60);
    std::thread::sleep(Duration::from_millis(500));
    assert!(cluster.kill(VICTIM));
    let shard = shard_dir(&cluster);
    let last = segments(&shard).pop().unwrap();
    let from = last.end_offset - 16;
    fill(&last.path, from, 16, 0xA5);
    start_expecting_service(&mut cluster, "torn tail");
    let log = cluster.log_since_start(VICTIM);
    assert!(
        log.contains("torn") && log.contains(&segment_file_name(last.first_lsn)),
        "the torn tail cut is not reported with its file:\n{log}"
    );
    batch(&mut next_key, &mut client, &mut acknowledged, 20);
    // Every acknowledged write is there, and the victim's log is whole.
    read_all(&mut client, &acknowledged);
    std::thread::sleep(Duration::from_secs(1));
    cluster.stop_all();
    recover(&shard, RecoveryMode::Strict, false).expect("the victim's WAL recovers strictly after the run");
}
