//! Crashes and damage: a torn write at every byte of the last two blocks of
//! the last flush, stale blocks after a torn tail, and bit flips anywhere
//! in any segment. A crash here is a drop of the WAL after its last sync
//! (no close marker): only then may the last flush be torn.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{payload, run, small_config};
use coraft_wal::format::{align_up, BLOCK_BYTES, FLUSH_MARKER_BYTES};
use coraft_wal::recovery::{list_segments, recover};
use coraft_wal::{Error, RecoveryMode, Wal};

/// Appends entries 1..=count of group 1 with 100-byte payloads, syncing
/// after each `sync_every`; returns the segment paths.
fn write_log(dir: &Path, count: u64, sync_every: u64) -> Vec<PathBuf> {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
        for index in 1..=count {
            wal.append_entry(1, index, 1, 0, &[index as u8; 100]).unwrap();
            if index % sync_every == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    list_segments(dir).unwrap().into_iter().map(|(_, path)| path).collect()
}

const ENTRY_RECORD_BYTES: u64 = 12 + 24 + 100;

#[test]
fn a_torn_write_at_every_byte_of_the_last_two_blocks_recovers_the_whole_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // 40 durable entries, then a last flush of 60 entries spanning two
    // blocks, on the fresh block after the first flush, and a crash.
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=100 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 100]).unwrap();
            if index == 40 {
                wal.sync().await.unwrap();
            }
        }
        wal.sync().await.unwrap();
        drop(wal);
    });
    let path = list_segments(dir.path()).unwrap()[0].1.clone();
    let first_flush_end = (BLOCK_BYTES + FLUSH_MARKER_BYTES) as u64 + 40 * ENTRY_RECORD_BYTES;
    let old_end = align_up(first_flush_end) + FLUSH_MARKER_BYTES as u64;
    let data_start = old_end - 40 * ENTRY_RECORD_BYTES;
    let new_end = data_start + 100 * ENTRY_RECORD_BYTES;
    let image = std::fs::read(&path).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let first_cut = (new_end / BLOCK_BYTES as u64 - 1) * BLOCK_BYTES as u64;
    for cut in first_cut..=new_end {
        // What reached the disk: the new bytes before the cut, the old ones after.
        let lost_from = cut.max(old_end);
        file.write_all_at(&vec![0; (new_end - lost_from) as usize], lost_from)
            .unwrap();
        let recovered = recover(dir.path(), RecoveryMode::TolerateTornTail, false).unwrap();
        let whole = (lost_from - data_start) / ENTRY_RECORD_BYTES;
        assert_eq!(recovered.next_lsn - 1, whole, "cut at {cut}");
        assert_eq!(recovered.groups.get(1).unwrap().state().last_index, whole);
        let torn = !(lost_from - data_start).is_multiple_of(ENTRY_RECORD_BYTES);
        assert_eq!(recovered.torn_tail.is_some(), torn, "cut at {cut}");
        if torn {
            assert!(matches!(
                recover(dir.path(), RecoveryMode::Strict, false),
                Err(Error::TornTail { .. })
            ));
        }
        let lost = &image[lost_from as usize..new_end as usize];
        file.write_all_at(lost, lost_from).unwrap();
    }
}

#[test]
fn records_after_a_hole_left_by_a_torn_flush_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    // Flushes of entries 1..=40 and 41..=80, then a crash after a last flush
    // of 81..=200 that spans four blocks; lose its second block.
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=200 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 100]).unwrap();
            if index == 40 || index == 80 || index == 200 {
                wal.sync().await.unwrap();
            }
        }
        drop(wal);
    });
    let paths: Vec<PathBuf> = list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    let flush_end = |start: u64, count: u64| start + FLUSH_MARKER_BYTES as u64 + count * ENTRY_RECORD_BYTES;
    let last_flush = align_up(flush_end(align_up(flush_end(BLOCK_BYTES as u64, 40)), 40));
    let hole = last_flush + BLOCK_BYTES as u64;
    let file = OpenOptions::new().write(true).open(&paths[0]).unwrap();
    file.write_all_at(&[0; BLOCK_BYTES], hole).unwrap();
    let records_start = last_flush + FLUSH_MARKER_BYTES as u64;
    let whole = 80 + (hole - records_start) / ENTRY_RECORD_BYTES;
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        let torn = report.torn_tail.expect("torn tail reported");
        assert_eq!(torn.offset, records_start + (whole - 80) * ENTRY_RECORD_BYTES);
        assert_eq!(wal.group_state(1).unwrap().last_index, whole);
        // One new small entry, then a crash before anything else.
        wal.append_entry(1, whole + 1, 2, 0, b"after the crash").unwrap();
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        assert_eq!(wal.group_state(1).unwrap().last_index, whole + 1);
        assert_eq!(wal.term(1, whole + 1), Some(2));
        wal.close().await.unwrap();
    });
}

#[test]
fn a_bad_record_in_an_earlier_segment_is_corruption_with_its_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 1500, 100);
    assert!(paths.len() >= 3);
    let first_record = (BLOCK_BYTES + FLUSH_MARKER_BYTES) as u64;
    let offset = first_record + 5 * ENTRY_RECORD_BYTES + 40;
    let file = OpenOptions::new().write(true).open(&paths[1]).unwrap();
    file.write_all_at(&[0xff], offset).unwrap();
    let segment = list_segments(dir.path()).unwrap()[1].0;
    let error = recover(dir.path(), RecoveryMode::TolerateTornTail, false).unwrap_err();
    assert_eq!(
        error,
        Error::Corruption {
            segment,
            offset: first_record + 5 * ENTRY_RECORD_BYTES
        }
    );
}

#[test]
fn a_bit_flip_anywhere_in_any_segment_fails_strict_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 1000, 70);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for path in &paths {
        let length = std::fs::metadata(path).unwrap().len();
        let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
        let header_bits = (0..44 * 8).map(|bit| bit as u64);
        let random_bits: Vec<u64> = (0..300).map(|_| next() % (length * 8)).collect();
        for bit in header_bits.chain(random_bits) {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, bit / 8).unwrap();
            file.write_all_at(&[byte[0] ^ (1 << (bit % 8))], bit / 8).unwrap();
            let outcome = recover(dir.path(), RecoveryMode::Strict, false);
            assert!(outcome.is_err(), "flip of bit {bit} in {path:?} went unnoticed");
            file.write_all_at(&byte, bit / 8).unwrap();
        }
    }
    recover(dir.path(), RecoveryMode::Strict, false).unwrap();
}

#[test]
fn a_segment_whose_creation_never_became_durable_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 10);
    let blank = dir.path().join(coraft_wal::format::segment_file_name(11));
    std::fs::write(&blank, vec![0; 64 << 10]).unwrap();
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.removed_blank_segment, Some(11));
        assert_eq!(wal.group_state(1).unwrap().last_index, 10);
        wal.append_entry(1, 11, 1, 0, &payload(1, 11, 1)).unwrap();
        wal.close().await.unwrap();
    });
    let recovered = recover(dir.path(), RecoveryMode::Strict, false).unwrap();
    assert_eq!(recovered.next_lsn - 1, 11);
}

#[test]
fn a_segment_of_the_previous_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10, 10);
    let file = OpenOptions::new().write(true).open(&paths[0]).unwrap();
    file.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    let error = run(|| async { Wal::open(dir.path(), small_config()).await.map(|_| ()).unwrap_err() });
    assert_eq!(error, Error::UnsupportedFormat { segment: 1, version: 1 });
    assert!(error.to_string().contains("00000000000000000001.wal"), "{error}");
}
