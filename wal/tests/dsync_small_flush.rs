//! `Config::dsync_small_flush_bytes`: flushes up to that size are one
//! O_DSYNC write instead of a write and an fdatasync. What must hold either
//! way: every synced entry reads back after reopen, across flushes below
//! and above the bound and across segment rotation; and the WAL refuses a
//! bound past the size from which every flush is an O_DSYNC write.

mod common;

use common::{payload, run, small_config};
use coraft_wal::fs::DSYNC_WRITE_BYTES_MIN;
use coraft_wal::{Config, Error, Wal};

#[test]
fn small_flushes_as_o_dsync_writes_survive_reopen_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        dsync_small_flush_bytes: 4096,
        ..small_config()
    };
    let mut last_index = 0;
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), config.clone()).await.unwrap();
        // Lone entries (one block per flush, O_DSYNC), then runs of 40
        // (~5 KiB, above the bound: write + fdatasync), alternating, enough
        // to rotate the 64 KiB segments several times.
        for round in 0..30 {
            let run_length = if round % 2 == 0 { 1 } else { 40 };
            for _ in 0..run_length {
                last_index += 1;
                wal.append_entry(1, last_index, 1, 0, &payload(1, last_index, 1))
                    .unwrap();
            }
            wal.sync().await.unwrap();
        }
        assert!(wal.stats().flushes >= 30, "one flush per sync at least");
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(dir.path(), config.clone()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        let state = wal.group_state(1).unwrap();
        assert_eq!((state.first_index, state.last_index), (1, last_index));
        let entries = wal.entries(1, 1..last_index + 1, usize::MAX).unwrap();
        assert_eq!(entries.len() as u64, last_index);
        for entry in &entries {
            assert_eq!(&*entry.payload, payload(1, entry.index, 1).as_slice());
        }
        wal.close().await.unwrap();
    });
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 2, "the log rotated: {segments} files");
}

#[test]
fn a_bound_past_the_large_flush_size_is_refused() {
    let config = Config {
        dsync_small_flush_bytes: DSYNC_WRITE_BYTES_MIN,
        ..Config::default()
    };
    config.validate().expect("up to the large-flush size is accepted");
    let config = Config {
        dsync_small_flush_bytes: DSYNC_WRITE_BYTES_MIN + 1,
        ..Config::default()
    };
    match config.validate() {
        Err(Error::InvalidConfig { field, value, reason }) => {
            assert_eq!(field, "dsync_small_flush_bytes");
            assert_eq!(value, DSYNC_WRITE_BYTES_MIN as u64 + 1);
            assert!(reason.contains("512 KiB"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(DSYNC_WRITE_BYTES_MIN, 524_288, "the refusal's text names this size");
}
