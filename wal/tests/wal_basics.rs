//! The WAL's behaviour on a healthy disk: appends, group commit, reads,
//! rotation, truncation, purge, segment deletion, reopen.

mod common;

use common::{payload, run, small_config};
use coraft_wal::{Config, Error, HardState, Wal};

#[test]
fn synced_entries_survive_reopen_with_terms_and_payloads() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!(report.last_lsn, 0);
        for index in 1..=10 {
            wal.append_entry(1, index, 2, 3, &payload(1, index, 2)).unwrap();
        }
        let hard_state = HardState {
            term: 2,
            vote: 1,
            commit: 7,
        };
        wal.append_hard_state(1, hard_state).unwrap();
        assert_eq!(wal.sync().await.unwrap(), 11);
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!(report.last_lsn, 11);
        assert_eq!(report.torn_tail, None);
        let state = wal.group_state(1).unwrap();
        assert_eq!((state.first_index, state.last_index), (1, 10));
        assert_eq!(state.hard_state, Some(hard_state));
        let entries = wal.entries(1, 1..11, usize::MAX).unwrap();
        assert_eq!(entries.len(), 10);
        for entry in &entries {
            assert_eq!(entry.term, 2);
            assert_eq!(entry.entry_type, 3);
            assert_eq!(&*entry.payload, payload(1, entry.index, 2).as_slice());
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn appends_made_during_a_flush_go_into_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        wal.append_entry(1, 1, 1, 0, b"a").unwrap();
        let first = wal.sync();
        let second_lsn = wal.append_entry(2, 1, 1, 0, b"b").unwrap();
        let second = wal.sync();
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(second.await.unwrap(), second_lsn);
        assert_eq!(wal.stats().flushes, 2);
        // A sync with nothing new resolves at once, without a flush.
        assert_eq!(wal.sync().await.unwrap(), 2);
        assert_eq!(wal.stats().flushes, 2);
        wal.close().await.unwrap();
    });
}

#[test]
fn many_appends_between_syncs_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        for group in 0..100 {
            wal.append_entry(group, 1, 1, 0, &payload(group, 1, 1)).unwrap();
        }
        wal.sync().await.unwrap();
        assert_eq!(wal.stats().flushes, 1);
        wal.close().await.unwrap();
    });
}

#[test]
fn unsynced_entries_are_readable_before_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        wal.append_entry(4, 1, 1, 0, b"durable").unwrap();
        wal.sync().await.unwrap();
        wal.append_entry(4, 2, 1, 0, b"pending").unwrap();
        let entries = wal.entries(4, 1..3, usize::MAX).unwrap();
        assert_eq!(&*entries[0].payload, b"durable");
        assert_eq!(&*entries[1].payload, b"pending");
        wal.close().await.unwrap();
    });
}

#[test]
fn reads_stop_at_the_byte_limit_but_return_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        for index in 1..=5 {
            wal.append_entry(1, index, 1, 0, &[7; 100]).unwrap();
        }
        wal.sync().await.unwrap();
        assert_eq!(wal.entries(1, 1..6, 250).unwrap().len(), 2);
        assert_eq!(wal.entries(1, 1..6, 0).unwrap().len(), 1);
        assert!(matches!(
            wal.entries(1, 1..7, usize::MAX),
            Err(Error::Unavailable {
                group: 1,
                last_index: 5,
                ..
            })
        ));
        wal.close().await.unwrap();
    });
}

#[test]
fn segments_rotate_when_full_and_recovery_reads_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), config.clone()).await.unwrap();
        for index in 1..=2000 {
            wal.append_entry(index % 3, index / 3 + 1, 1, 0, &[index as u8; 100])
                .map(|_| ())
                .or_else(|error| match error {
                    Error::NonContiguousIndex { .. } => Ok(()),
                    other => Err(other),
                })
                .unwrap();
            if index % 50 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.sync().await.unwrap();
        assert!(wal.stats().segments_created > 3);
        let before = wal.groups();
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), config.clone()).await.unwrap();
        assert!(report.segments > 3);
        assert_eq!(wal.groups(), before);
        wal.close().await.unwrap();
    });
}

#[test]
fn truncated_suffix_and_purged_prefix_stay_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        for index in 1..=10 {
            wal.append_entry(1, index, 1, 0, b"old").unwrap();
        }
        wal.truncate_suffix(1, 8).unwrap();
        wal.append_entry(1, 8, 2, 0, b"new").unwrap();
        wal.purge(1, 3, 1).unwrap();
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        let state = wal.group_state(1).unwrap();
        assert_eq!((state.first_index, state.last_index), (4, 8));
        assert_eq!(state.snapshot, Some((3, 1)));
        assert_eq!(wal.term(1, 8), Some(2));
        assert_eq!(wal.term(1, 3), Some(1));
        assert!(matches!(
            wal.entries(1, 2..4, usize::MAX),
            Err(Error::Compacted { first_index: 4, .. })
        ));
        assert_eq!(&*wal.entries(1, 8..9, usize::MAX).unwrap()[0].payload, b"new");
        wal.close().await.unwrap();
    });
}

#[test]
fn an_entry_that_does_not_follow_the_last_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        wal.append_entry(1, 5, 1, 0, b"").unwrap();
        assert_eq!(
            wal.append_entry(1, 7, 1, 0, b""),
            Err(Error::NonContiguousIndex {
                group: 1,
                index: 7,
                expected: 6
            })
        );
        wal.close().await.unwrap();
    });
}

#[test]
fn oversized_records_and_excess_pending_bytes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        pending_bytes_max: 4 << 20,
        batch_bytes_max: 1 << 20,
        record_bytes_max: 1 << 20,
        ..Config::default()
    };
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), config).await.unwrap();
        assert!(matches!(
            wal.append_entry(1, 1, 1, 0, &vec![0; 1 << 20]),
            Err(Error::RecordTooLarge {
                record_bytes_max: 1048576,
                ..
            })
        ));
        let chunk = vec![1; 512 << 10];
        let mut index = 1;
        let error = loop {
            match wal.append_entry(1, index, 1, 0, &chunk) {
                Ok(_) => index += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(
            error,
            Error::Backpressure {
                pending_bytes_max: 4194304,
                ..
            }
        ));
        wal.sync().await.unwrap();
        wal.append_entry(1, index, 1, 0, &chunk).unwrap();
        wal.close().await.unwrap();
    });
}

#[test]
fn purged_groups_let_old_segments_go_and_the_holder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        wal.append_hard_state(
            9,
            HardState {
                term: 1,
                vote: 0,
                commit: 0,
            },
        )
        .unwrap();
        for index in 1..=1500 {
            wal.append_entry(1, index, 1, 0, &[0; 100]).unwrap();
        }
        wal.sync().await.unwrap();
        let holder = wal.oldest_holder().unwrap();
        assert_eq!((holder.group, holder.lsn), (9, 1));
        assert_eq!(wal.delete_obsolete_segments().await.unwrap(), Vec::<u64>::new());
        wal.purge(1, 1400, 1).unwrap();
        wal.rewrite_group_metadata(9).unwrap();
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        assert!(deleted.len() >= 2, "deleted {deleted:?}");
        let holder = wal.oldest_holder().unwrap();
        assert_eq!(holder.group, 1);
        let before = wal.groups();
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.groups(), before);
        assert_eq!(wal.entries(1, 1401..1501, usize::MAX).unwrap().len(), 100);
        wal.close().await.unwrap();
    });
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let config = Config {
        segment_bytes: 1000,
        ..Config::default()
    };
    assert!(matches!(
        config.validate(),
        Err(Error::InvalidConfig {
            field: "segment_bytes",
            ..
        })
    ));
    // A record of the largest size must fit in a segment after a flush marker.
    let config = Config {
        segment_bytes: 1 << 20,
        batch_bytes_max: 1 << 20,
        record_bytes_max: (1 << 20) - 4096,
        ..Config::default()
    };
    assert!(matches!(
        config.validate(),
        Err(Error::InvalidConfig {
            field: "record_bytes_max",
            ..
        })
    ));
    let config = Config {
        batch_bytes_max: 1 << 30,
        ..Config::default()
    };
    assert!(matches!(
        config.validate(),
        Err(Error::InvalidConfig {
            field: "batch_bytes_max",
            ..
        })
    ));
}

#[test]
fn every_flush_starts_on_a_fresh_block_with_a_marker_and_reopen_reads_them_all() {
    use coraft_wal::format::{align_up, decode_record, Decoded, BLOCK_BYTES, FLUSH_MARKER_BYTES};
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        wal.append_entry(1, 1, 1, 0, &[3; 100]).unwrap();
        wal.sync().await.unwrap();
        wal.append_entry(1, 2, 2, 0, b"next flush").unwrap();
        wal.sync().await.unwrap();
        wal.close().await.unwrap();
        let path = &coraft_wal::recovery::list_segments(dir.path()).unwrap()[0].1;
        let bytes = std::fs::read(path).unwrap();
        let end_of_first = BLOCK_BYTES + FLUSH_MARKER_BYTES + 136;
        let second = align_up(end_of_first as u64) as usize;
        let Decoded::Marker(marker) = decode_record(&bytes[second..]) else {
            panic!("no flush marker on the block after the first flush");
        };
        assert_eq!(
            (marker.offset, marker.flush, marker.previous_end),
            (second as u64, 2, end_of_first as u64)
        );
        assert_eq!(marker.synced_through, 1);
        assert!(bytes[end_of_first..second].iter().all(|&b| b == 0));
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!(wal.last_lsn(), 2);
        assert_eq!(&*wal.entries(1, 2..3, usize::MAX).unwrap()[0].payload, b"next flush");
        wal.close().await.unwrap();
    });
}

#[test]
fn entries_not_yet_written_read_back_from_the_batch_with_valid_checksums() {
    // The append path checksums each record when the next one is appended;
    // a read of the open batch must see every record complete, the last one
    // included, and appends after the read must go on as before.
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        for index in 1..=3 {
            wal.append_entry(5, index, 1, 0, &payload(5, index, 1)).unwrap();
        }
        let entries = wal.entries(5, 3..4, usize::MAX).unwrap();
        assert_eq!(&*entries[0].payload, payload(5, 3, 1).as_slice());
        wal.append_entry(5, 4, 1, 0, &payload(5, 4, 1)).unwrap();
        let entries = wal.entries(5, 1..5, usize::MAX).unwrap();
        assert_eq!(entries.len(), 4);
        for entry in &entries {
            assert_eq!(&*entry.payload, payload(5, entry.index, 1).as_slice());
        }
        assert_eq!(wal.sync().await.unwrap(), 4);
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!((report.last_lsn, report.torn_tail), (4, None));
        assert_eq!(wal.entries(5, 1..5, usize::MAX).unwrap().len(), 4);
        wal.close().await.unwrap();
    });
}
