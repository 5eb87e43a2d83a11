//! criterion benches of the WAL's hot pieces: record encoding, decoding
//! (CRC check included), and the in-memory index an append updates. The durable
//! path against the disk floor is `coraft-bench wal`.

use coraft_wal::format::{decode_record, encode_record, Record};
use coraft_wal::index::Groups;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

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
                    groups.apply(&record, entry + 1, 1, entry * 52).unwrap();
                }
                groups
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, encode_and_decode, index_apply);
criterion_main!(benches);
