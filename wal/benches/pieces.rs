//! criterion benches of the WAL's hot pieces: record encoding, decoding
//! (CRC check included), and the in-memory index an append updates. The durable
//! path against the disk floor is `coraft-bench wal`.

use coraft_wal::format::{decode_record, encode_record, Record};
use coraft_wal::index::Groups;
use coraft_wal::{Config, NewEntry, Wal};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::{Duration, Instant};

fn encode_and_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for payload_bytes in [16usize, 1024] {
        let payload = vec![7u8; payload_bytes];
        let record = Record::Entry {
            group: 3,
            term: 9,
            index: 12345,
            entry_type: 0,
            payload: &payload,
        };
        group.throughput(Throughput::Bytes(record.encoded_len() as u64));
        let mut out = Vec::with_capacity(4096);
        group.bench_function(format!("encode_{payload_bytes}B"), |b| {
            b.iter(|| {
                out.clear();
                encode_record(&record, &mut out);
            })
        });
        let mut bytes = Vec::new();
        encode_record(&record, &mut bytes);
        group.bench_function(format!("decode_{payload_bytes}B"), |b| b.iter(|| decode_record(&bytes)));
    }
    group.finish();
}

fn index_apply(c: &mut Criterion) {
    const ENTRIES: u64 = 10_000;
    let payload = [0u8; 16];
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(ENTRIES));
    group.bench_function("apply_10k_entries_64_groups", |b| {
        b.iter_batched(
            Groups::default,
            |mut groups| {
                for entry in 0..ENTRIES {
                    let record = Record::Entry {
                        group: entry % 64,
                        term: 1,
                        index: entry / 64 + 1,
                        entry_type: 0,
                        payload: &payload,
                    };
                    groups.apply(&record, entry + 1, entry * 52).unwrap();
                }
                groups
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The whole synchronous append path (checks, encoding, CRC, index, batch
/// buffer) for 16-byte entries spread over 64 groups: one `append_entry`
/// call per entry, round robin (`append_20k_16B_entries_64_groups`), or one
/// `append_entries` run per group (`append_20k_16B_entries_64_runs`), as
/// `coraft-bench wal` and the engine append them. Batches of 20,000 (a 1 MiB
/// flush) are synced outside the timed part; the index keeps growing as it
/// does in a real run.
fn append_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(ENTRIES_PER_BATCH));
    group.sample_size(20);
    for (name, runs) in [
        ("append_20k_16B_entries_64_groups", false),
        ("append_20k_16B_entries_64_runs", true),
    ] {
        group.bench_function(name, |b| {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().to_path_buf();
            b.iter_custom(|iterations| time_appends(path.clone(), iterations, runs))
        });
    }
    group.finish();
}

const ENTRIES_PER_BATCH: u64 = 20_000;
const GROUPS: u64 = 64;

/// Appends `iterations` batches on a fresh WAL in `path`; returns the time
/// spent appending (not syncing).
fn time_appends(path: std::path::PathBuf, iterations: u64, runs: bool) -> Duration {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor")
        .run(async move {
            let _ = std::fs::remove_dir_all(&path);
            let (wal, _) = Wal::open(&path, Config::default()).await.expect("open");
            let payload = [0x5au8; 16];
            let run = vec![
                NewEntry {
                    term: 1,
                    entry_type: 0,
                    payload: &payload[..],
                };
                ENTRIES_PER_BATCH.div_ceil(GROUPS) as usize
            ];
            let mut next_index = [1u64; GROUPS as usize];
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                if runs {
                    for group in 0..GROUPS {
                        let count = (ENTRIES_PER_BATCH - group).div_ceil(GROUPS) as usize;
                        let index = &mut next_index[group as usize];
                        wal.append_entries(group, *index, &run[..count]).expect("append");
                        *index += count as u64;
                    }
                } else {
                    for entry in 0..ENTRIES_PER_BATCH {
                        let group = entry % GROUPS;
                        let index = &mut next_index[group as usize];
                        wal.append_entry(group, *index, 1, 0, &payload).expect("append");
                        *index += 1;
                    }
                }
                elapsed += start.elapsed();
                wal.sync().await.expect("sync");
            }
            wal.close().await.expect("close");
            elapsed
        })
}

criterion_group!(benches, encode_and_decode, index_apply, append_path);
criterion_main!(benches);
