//! The spare segment: prepared beside the open one, claimed at rotation
//! (a rename and a header instead of a create and a fallocate), and left
//! behind by a crash without harm: recovery does not list it, the next open
//! replaces it, and a crash in the middle of a claim leaves a blank segment
//! that recovery removes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{run, small_config};
use coraft_wal::format::segment_file_name;
use coraft_wal::recovery::{list_segments, read_segment_range, recover, SEGMENT_RANGE_FILE_NAME};
use coraft_wal::{Error, IoOp, RecoveryMode, Wal, SPARE_SEGMENT_FILE_NAME};

/// Waits (generously: the machine is shared) until `dir` holds a prepared
/// spare of the configured segment size.
async fn wait_for_spare(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let spare = dir.join(SPARE_SEGMENT_FILE_NAME);
    while std::fs::metadata(&spare).map_or(true, |metadata| metadata.len() < small_config().segment_bytes) {
        assert!(Instant::now() < deadline, "no spare segment prepared in {dir:?}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends entries of 1,000 bytes to group 1 from `first` on, syncing each,
/// until the WAL has made one more segment (the first one, on a new log);
/// returns the next index.
async fn append_until_rotation(wal: &Wal, first: u64) -> u64 {
    let created = wal.stats().segments_created;
    let mut index = first;
    while wal.stats().segments_created == created {
        wal.append_entry(1, index, 1, 0, &[index as u8; 1000]).unwrap();
        wal.sync().await.unwrap();
        index += 1;
    }
    index
}

#[test]
fn rotation_claims_the_prepared_spare_and_the_log_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let next = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let mut next = append_until_rotation(&wal, 1).await;
        assert_eq!(next, 2);
        assert_eq!(wal.stats().segments_from_spare, 0, "the first segment is created");
        for _ in 0..3 {
            wait_for_spare(dir.path()).await;
            next = append_until_rotation(&wal, next).await;
        }
        let stats = wal.stats();
        assert_eq!(stats.segments_from_spare, 3, "{stats:?}");
        wal.close().await.unwrap();
        next
    });
    let segments = list_segments(dir.path()).unwrap();
    assert_eq!(segments.len(), 4, "{segments:?}");
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.removed_blank_segment, None);
        let entries = wal.entries(1, 1..next, usize::MAX).unwrap();
        assert_eq!(entries.len() as u64, next - 1);
        for entry in entries {
            assert_eq!(&*entry.payload, &[entry.index as u8; 1000][..]);
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn a_crash_with_a_spare_present_recovers_the_log_and_replaces_the_spare() {
    let dir = tempfile::tempdir().unwrap();
    let next = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let next = append_until_rotation(&wal, 1).await;
        wait_for_spare(dir.path()).await;
        // A crash: every acknowledged record is synced, no close marker.
        drop(wal);
        next
    });
    let spare = dir.path().join(SPARE_SEGMENT_FILE_NAME);
    assert!(spare.exists());
    // Recovery does not take the spare for a segment.
    let recovered = recover(dir.path(), RecoveryMode::Strict, false).unwrap();
    assert_eq!(recovered.segments.len(), 1);
    assert_eq!(recovered.next_lsn, next);
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        assert_eq!(report.segments, 1);
        assert_eq!(wal.group_state(1).unwrap().last_index, next - 1);
        // The leftover is replaced and then claimed at the next rotation.
        wait_for_spare(dir.path()).await;
        let after = append_until_rotation(&wal, next).await;
        assert_eq!(wal.stats().segments_from_spare, 1);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, after - 1);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_crash_between_renaming_the_spare_and_its_header_leaves_a_blank_segment_that_recovery_removes() {
    let dir = tempfile::tempdir().unwrap();
    let next = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let next = append_until_rotation(&wal, 1).await;
        wait_for_spare(dir.path()).await;
        drop(wal);
        next
    });
    // What a crash in the claim leaves: the spare under the next segment's
    // name, its header never written.
    let claimed = dir.path().join(segment_file_name(next));
    std::fs::rename(dir.path().join(SPARE_SEGMENT_FILE_NAME), &claimed).unwrap();
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.removed_blank_segment, Some(next));
        assert_eq!(report.segments, 1);
        assert_eq!(wal.group_state(1).unwrap().last_index, next - 1);
        let after = append_until_rotation(&wal, next).await;
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, after - 1);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_failed_range_write_beside_the_first_flush_into_a_claimed_spare_fails_the_sync_and_the_retry_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let next = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let mut next = append_until_rotation(&wal, 1).await;
        wait_for_spare(dir.path()).await;
        let named = read_segment_range(dir.path()).unwrap().unwrap();
        // The range file moved aside and a directory in its place: the
        // next range-file write (an overwrite of one of its slots) fails.
        let range_file = dir.path().join(SEGMENT_RANGE_FILE_NAME);
        let aside = dir.path().join("segment-range.aside");
        std::fs::rename(&range_file, &aside).unwrap();
        std::fs::create_dir(&range_file).unwrap();
        let created = wal.stats().segments_created;
        let failed = loop {
            wal.append_entry(1, next, 1, 0, &[next as u8; 1000]).unwrap();
            next += 1;
            if let Err(error) = wal.sync().await {
                break error;
            }
        };
        assert!(
            matches!(
                failed,
                Error::Io {
                    op: IoOp::RangeFile,
                    ..
                }
            ),
            "{failed:?}"
        );
        assert_eq!(wal.stats().segments_created, created + 1);
        assert_eq!(wal.stats().segments_from_spare, 1);
        assert!(wal.poisoned().is_none());
        // Not acknowledged: the range does not name the new segment yet.
        let newest = list_segments(dir.path()).unwrap().last().unwrap().0;
        assert!(wal.durable_lsn() < newest);
        std::fs::remove_dir(&range_file).unwrap();
        std::fs::rename(&aside, &range_file).unwrap();
        assert_eq!(read_segment_range(dir.path()).unwrap(), Some(named));
        assert_eq!(wal.sync().await.unwrap(), next - 1);
        assert_eq!(read_segment_range(dir.path()).unwrap().unwrap().newest, newest);
        wal.close().await.unwrap();
        next
    });
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        let entries = wal.entries(1, 1..next, usize::MAX).unwrap();
        assert_eq!(entries.len() as u64, next - 1);
        for entry in entries {
            assert_eq!(&*entry.payload, &[entry.index as u8; 1000][..]);
        }
        wal.close().await.unwrap();
    });
}
