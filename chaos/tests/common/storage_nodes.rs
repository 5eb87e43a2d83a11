//! What the storage-fault tests (`storage.rs`, `full_disk.rs`) share: three
//! `coraft-node` processes hosting the KV store on the smallest WAL
//! segments, and clients that write keys until each is acknowledged.
//! Included by those two tests only (`#[path]`), so that the other tests
//! sharing `common` do not compile it unused.

use std::path::Path;
use std::time::{Duration, Instant};

use coraft::api::{KvOp, KvResult};
use coraft::client::{Client, ClientConfig};
use coraft_chaos::cluster::Cluster;
use coraft_chaos::workload::GROUP;
use coraft_tuning::SnapshotSettings;

/// The smallest segment a node takes (a 4 MiB record must fit after the
/// header and a flush marker): every flush takes a 4 KiB block at least,
/// so about a thousand flushes fill one.
pub const SEGMENT_BYTES: u64 = 4_202_496;
/// How long one write may take to be acknowledged, retries included.
pub const WRITE_WAIT: Duration = Duration::from_secs(60);

/// Three nodes configured in `dir` (their data in `dir/data/node-N`) on
/// segments of [`SEGMENT_BYTES`], with `snapshot` as their `[snapshot]`
/// policy if given; nothing runs until they are started.
pub fn three_nodes(dir: &Path, snapshot: Option<SnapshotSettings>) -> Cluster {
    Cluster::create_configured(&super::common::node_bin(), dir, 3, None, SEGMENT_BYTES, snapshot).unwrap()
}

/// Writes `key = value` for every pair, each retried (same session and
/// sequence, so applied once) until acknowledged.
pub fn write_all(client: &mut Client, pairs: &[(u64, u64)]) {
    for &(key, value) in pairs {
        let deadline = Instant::now() + WRITE_WAIT;
        let mut result = client.write(GROUP, &KvOp::Write { key, value }.encode());
        while let Err(failure) = &result {
            assert!(
                Instant::now() < deadline,
                "write {key}={value} not acknowledged: {failure:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            result = client.retry_write();
        }
        assert_eq!(KvResult::decode(&result.unwrap()), Some(KvResult::Done));
    }
}

/// `count` keys from `*next_key` on, each `key = key * 1000 + 7`; moves
/// `next_key` past them.
pub fn next_pairs(next_key: &mut u64, count: u64) -> Vec<(u64, u64)> {
    let pairs = (*next_key..*next_key + count).map(|k| (k, k * 1_000 + 7)).collect();
    *next_key += count;
    pairs
}

/// `writers` clients in parallel, each writing `per_writer` new keys until
/// acknowledged; returns every pair written and moves `next_key` past
/// them (each writer takes keys of its own).
pub fn write_in_parallel(config: &ClientConfig, next_key: &mut u64, writers: u64, per_writer: u64) -> Vec<(u64, u64)> {
    let batches: Vec<Vec<(u64, u64)>> = (0..writers).map(|_| next_pairs(next_key, per_writer)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|pairs| {
                let config = config.clone();
                scope.spawn(move || {
                    write_all(&mut Client::new(config), &pairs);
                    pairs
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}
