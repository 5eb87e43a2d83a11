//! The WAL never discards what it reported durable: for many seeded runs of
//! appends and syncs ending in a power cut (a torn flush, or one whose whole
//! in-flight block is garbled), every entry whose `sync()` returned is read
//! back intact after reopening; and a flipped bit in any synced byte of the
//! active segment before its close marker fails the open with
//! `Corruption`, in every recovery mode, instead of being dropped as a torn
//! tail.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use common::{run, small_config};
use coraft_wal::format::{FLUSH_MARKER_BYTES, SEGMENT_HEADER_BYTES};
use coraft_wal::recovery::{list_segments, recover};
use coraft_wal::{Config, DmaFs, Error, FaultyFs, RecoveryMode, Wal};

const SEEDS: u64 = 60;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn payload_of(index: u64, length: usize) -> Vec<u8> {
    let mut bytes = index.to_le_bytes().to_vec();
    bytes.resize(length.max(8), (index % 251) as u8);
    bytes
}

/// Appends and syncs at random (small flushes mostly, so flushes share
/// blocks unless the format forbids it), then fails one last flush's
/// fdatasync; returns each durable entry's payload length.
fn write_then_fail_a_flush(dir: &std::path::Path, rng: &mut Rng, garble: bool) -> BTreeMap<u64, usize> {
    let seed = rng.next();
    let keep_blocks = rng.below(3) as usize;
    let rounds = 1 + rng.below(40);
    let mut plan = Vec::new();
    for _ in 0..rounds {
        let count = 1 + rng.below(4);
        let lengths: Vec<usize> = (0..count).map(|_| rng.below(700) as usize).collect();
        plan.push(lengths);
    }
    run(|| async move {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir, small_config(), Rc::new(fs)).await.unwrap();
        let mut next_index = wal.group_state(1).map_or(1, |state| state.last_index + 1);
        let mut durable = BTreeMap::new();
        let mut appended = BTreeMap::new();
        for lengths in plan {
            for length in lengths {
                wal.append_entry(1, next_index, 1, 0, &payload_of(next_index, length))
                    .unwrap();
                appended.insert(next_index, length.max(8));
                next_index += 1;
            }
            wal.sync().await.unwrap();
            durable.extend(std::mem::take(&mut appended));
        }
        faults.update(|plan| plan.failing_syncs = 1);
        for _ in 0..3 {
            wal.append_entry(1, next_index, 1, 0, &payload_of(next_index, 300))
                .unwrap();
            next_index += 1;
        }
        assert!(wal.sync().await.is_err());
        drop(wal);
        if garble {
            faults.power_cut_garbling(keep_blocks, seed).unwrap();
        } else {
            faults.power_cut(keep_blocks, (seed % 4096) as usize).unwrap();
        }
        durable
    })
}

fn assert_durable_entries_survive(dir: &std::path::Path, durable: &BTreeMap<u64, usize>, context: &str) {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config())
            .await
            .unwrap_or_else(|error| panic!("{context}: open failed: {error}"));
        let last = *durable.keys().last().unwrap();
        let state = wal.group_state(1).expect("group 1");
        assert!(
            state.last_index >= last,
            "{context}: durable entry {last} lost, {state:?}"
        );
        for entry in wal.entries(1, 1..last + 1, usize::MAX).unwrap() {
            assert_eq!(
                &*entry.payload,
                &payload_of(entry.index, durable[&entry.index])[..],
                "{context}: entry {}",
                entry.index
            );
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn every_synced_entry_survives_a_torn_or_garbled_last_flush() {
    for seed in 1..=SEEDS {
        for garble in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let durable = write_then_fail_a_flush(dir.path(), &mut rng, garble);
            assert_durable_entries_survive(dir.path(), &durable, &format!("seed {seed} garble {garble}"));
        }
    }
}

#[test]
fn a_flipped_bit_in_any_synced_byte_of_the_active_segment_before_its_close_marker_is_corruption() {
    for seed in 1..=SEEDS {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let garble = rng.0.is_multiple_of(2);
        let durable = write_then_fail_a_flush(dir.path(), &mut rng, garble);
        // Reopen once (what a restarted node does), which also settles the
        // torn tail; everything recovered is then synced.
        assert_durable_entries_survive(dir.path(), &durable, &format!("seed {seed}"));
        let (segment, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let recovered = recover(dir.path(), RecoveryMode::Strict, false).unwrap();
        // The log ends with the close marker, a flush of its own: damage to
        // it loses nothing (it may be torn like any last flush). Every byte
        // before it was synced before it was written.
        let last = recovered.segments.last().unwrap();
        assert!(last.closed, "seed {seed}: no close marker");
        let end = last.end_offset - FLUSH_MARKER_BYTES as u64;
        if end <= SEGMENT_HEADER_BYTES as u64 {
            continue;
        }
        let offset = SEGMENT_HEADER_BYTES as u64 + rng.below(end - SEGMENT_HEADER_BYTES as u64);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset).unwrap();
        file.write_all_at(&[byte[0] ^ (1 << rng.below(8))], offset).unwrap();
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let config = Config {
                recovery_mode: mode,
                ..small_config()
            };
            let outcome = run(|| async { Wal::open(dir.path(), config).await.map(|(wal, _)| drop(wal)) });
            match outcome {
                Err(Error::Corruption {
                    segment: found,
                    offset: at,
                }) => {
                    assert_eq!(found, segment, "seed {seed}");
                    assert!(
                        at <= offset,
                        "seed {seed}: corruption reported at {at}, after the flip at {offset}"
                    );
                }
                other => {
                    panic!("seed {seed} {mode:?}: flip at {offset} of segment {segment} gave {other:?}")
                }
            }
        }
    }
}
