//! The frame codec's hot paths: encoding a batch of AppendEntries into a
//! frame (one buffer, or scattered with payloads left in place, as outbound
//! connections do), and decoding (header, CRC32, bytecheck) plus reading
//! every payload.

use coraft_net::frame::ScatterEncoder;
use coraft_net::schema::{entry_kind, AppendEntries, ArchivedRaftBody, Entry, Envelope, RaftBatch, RaftBody};
use coraft_net::{FrameDecoder, FrameEncoder};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn batch(messages: usize, payload_bytes: usize) -> RaftBatch {
    RaftBatch {
        messages: (0..messages as u64)
            .map(|index| Envelope {
                group: index % 64,
                from: 1,
                to: 2,
                term: 3,
                body: RaftBody::AppendEntries(AppendEntries {
                    prev_log_index: index,
                    prev_log_term: 3,
                    leader_commit: index,
                    entries: vec![Entry {
                        term: 3,
                        index: index + 1,
                        kind: entry_kind::NORMAL,
                        data: vec![0xab; payload_bytes].into(),
                    }],
                }),
            })
            .collect(),
    }
}

fn codec(c: &mut Criterion) {
    for (messages, payload_bytes) in [(1, 64), (1024, 64), (64, 4096), (31, 4096)] {
        let batch = batch(messages, payload_bytes);
        let mut group = c.benchmark_group(format!("frame/{messages}x{payload_bytes}B"));
        group.throughput(Throughput::Elements(messages as u64));
        let mut encoder = FrameEncoder::new();
        group.bench_function("encode", |b| {
            b.iter(|| {
                encoder.clear();
                encoder.encode(&batch).unwrap();
                encoder.len()
            })
        });
        let mut scatter = ScatterEncoder::new();
        group.bench_function("scatter_encode", |b| b.iter(|| scatter.encode(&batch).unwrap().len()));
        encoder.clear();
        encoder.encode(&batch).unwrap();
        let bytes = encoder.as_bytes().to_vec();
        // One decoder for all iterations, as a connection keeps one: this
        // measures the copy in, header, CRC32, bytecheck and the reads.
        let mut decoder = FrameDecoder::new();
        group.bench_function("decode_validate_read", |b| {
            b.iter(|| {
                decoder.feed(&bytes).unwrap();
                let frame = decoder.next_frame().unwrap().unwrap();
                let mut payload = 0usize;
                for message in frame.raft().unwrap().messages.iter() {
                    if let ArchivedRaftBody::AppendEntries(append) = &message.body {
                        payload += append.entries.iter().map(|entry| entry.data.len()).sum::<usize>();
                    }
                }
                payload
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
