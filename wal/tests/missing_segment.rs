//! A missing first or last segment file is refused on open, naming the file
//! and the directory; the states the WAL leaves behind on purpose (a fresh
//! directory, segments deleted after a purge, a crash while creating a
//! segment, a crash between recording a deletion and doing it) still open.

mod common;

use std::path::{Path, PathBuf};

use common::{last_index_after_open, open_error, run, small_config, write_log};
use coraft_wal::format::segment_file_name;
use coraft_wal::recovery::{list_segments, recover};
use coraft_wal::{Error, RecoveryMode, Wal};

fn assert_names(error: &Error, segment: u64, dir: &Path) {
    let message = error.to_string();
    assert!(
        matches!(error, Error::MissingSegment { segment: s, .. } if *s == segment),
        "{error:?}"
    );
    assert!(message.contains(&segment_file_name(segment)), "{message}");
    assert!(message.contains(&dir.display().to_string()), "{message}");
}

#[test]
fn a_deleted_last_segment_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    assert!(segments.len() >= 3, "{segments:?}");
    let (last, path) = segments.last().unwrap().clone();
    std::fs::remove_file(&path).unwrap();
    assert_names(&open_error(dir.path()), last, dir.path());
    // The tools see it too, and the open left the files as they were.
    assert!(matches!(
        recover(dir.path(), RecoveryMode::TolerateTornTail, false),
        Err(Error::MissingSegment { .. })
    ));
    assert_eq!(list_segments(dir.path()).unwrap().len(), segments.len() - 1);
}

#[test]
fn the_last_two_segments_deleted_are_refused_naming_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    for (_, path) in &segments[segments.len() - 2..] {
        std::fs::remove_file(path).unwrap();
    }
    assert_names(&open_error(dir.path()), segments.last().unwrap().0, dir.path());
}

#[test]
fn every_segment_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    for (_, path) in &segments {
        std::fs::remove_file(path).unwrap();
    }
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
}

#[test]
fn a_deleted_first_segment_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    let (first, path) = segments[0].clone();
    std::fs::remove_file(&path).unwrap();
    assert_names(&open_error(dir.path()), first, dir.path());
}

#[test]
fn a_deleted_first_segment_after_a_purge_that_still_needed_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    // Purge the first 30 entries only: the first segment holds later ones.
    let deleted = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        wal.purge(1, 30, 1).unwrap();
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        wal.close().await.unwrap();
        deleted
    });
    assert!(deleted.is_empty(), "{deleted:?}");
    let (first, path) = list_segments(dir.path()).unwrap()[0].clone();
    std::fs::remove_file(&path).unwrap();
    assert_names(&open_error(dir.path()), first, dir.path());
}

#[test]
fn a_fresh_wal_opens_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(last_index_after_open(dir.path()), 0);
    assert_eq!(last_index_after_open(dir.path()), 0);
    write_log(dir.path(), 5);
    assert_eq!(last_index_after_open(dir.path()), 5);
}

/// Purges group 1 through `index` and deletes what no group needs; returns
/// the deleted segments.
fn purge_and_delete(dir: &Path, index: u64) -> Vec<u64> {
    run(|| async {
        let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
        wal.purge(1, index, 1).unwrap();
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        wal.close().await.unwrap();
        deleted
    })
}

#[test]
fn segments_deleted_after_a_purge_are_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let deleted = purge_and_delete(dir.path(), 150);
    assert!(deleted.len() >= 2, "{deleted:?}");
    assert_eq!(last_index_after_open(dir.path()), 200);
    // And the log goes on: more segments, another purge, reopen.
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 201..=400 {
            wal.append_entry(1, index, 1, 0, &[7; 1000]).unwrap();
        }
        wal.close().await.unwrap();
    });
    assert!(!purge_and_delete(dir.path(), 350).is_empty());
    assert_eq!(last_index_after_open(dir.path()), 400);
}

#[test]
fn a_crash_between_recording_a_deletion_and_removing_the_files_opens() {
    let dir = tempfile::tempdir().unwrap();
    let before = write_log(dir.path(), 200);
    let saved: Vec<(PathBuf, Vec<u8>)> = before
        .iter()
        .map(|(_, path)| (path.clone(), std::fs::read(path).unwrap()))
        .collect();
    let deleted = purge_and_delete(dir.path(), 150);
    assert!(!deleted.is_empty());
    // The files the deletion removed come back, as if it never ran.
    for (path, bytes) in &saved {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
    assert_eq!(last_index_after_open(dir.path()), 200);
    // The next deletion removes them again, and the WAL still opens.
    assert!(!purge_and_delete(dir.path(), 150).is_empty());
    assert_eq!(last_index_after_open(dir.path()), 200);
}

/// Opens, returns what the open removed as a blank segment and group 1's
/// last index, and closes.
fn open_removing_blank(dir: &Path) -> (Option<u64>, u64) {
    run(|| async {
        let (wal, report) = Wal::open(dir, small_config()).await.unwrap();
        let last = wal.group_state(1).map_or(0, |state| state.last_index);
        wal.close().await.unwrap();
        (report.removed_blank_segment, last)
    })
}

#[test]
fn a_crash_while_creating_the_next_segment_opens() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 190);
    // Created but never preallocated.
    let next_lsn = recover(dir.path(), RecoveryMode::Strict, false).unwrap().next_lsn;
    let next = dir.path().join(segment_file_name(next_lsn));
    assert!(!next.exists(), "the log ends in a segment without records");
    std::fs::write(&next, b"").unwrap();
    assert_eq!(open_removing_blank(dir.path()), (Some(next_lsn), 190));
    // Preallocated, its header never written.
    let next_lsn = recover(dir.path(), RecoveryMode::Strict, false).unwrap().next_lsn;
    let next = dir.path().join(segment_file_name(next_lsn));
    if !next.exists() {
        std::fs::write(&next, vec![0; small_config().segment_bytes as usize]).unwrap();
        assert_eq!(open_removing_blank(dir.path()), (Some(next_lsn), 190));
    }
    assert_eq!(last_index_after_open(dir.path()), 190);
}

#[test]
fn a_wal_without_a_range_file_opens_and_is_checked_from_then_on() {
    // A WAL written before the range file existed: it opens as it is, and
    // the open records its range, so a later deletion is caught.
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 190);
    std::fs::remove_file(dir.path().join(coraft_wal::recovery::SEGMENT_RANGE_FILE_NAME)).unwrap();
    // Older code wrote no flags in the segment headers.
    for (_, path) in &segments {
        use coraft_wal::format::{decode_segment_header, encode_segment_header};
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let mut block = vec![0; coraft_wal::format::BLOCK_BYTES];
        file.read_exact_at(&mut block, 0).unwrap();
        let header = decode_segment_header(&block).unwrap();
        assert_eq!(header.flags, coraft_wal::format::SEGMENT_FLAG_RANGE_FILE);
        let old = coraft_wal::format::SegmentHeader { flags: 0, ..header };
        file.write_all_at(&encode_segment_header(&old), 0).unwrap();
    }
    assert_eq!(last_index_after_open(dir.path()), 190);
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
}

#[test]
fn a_zeroed_header_on_the_newest_segment_is_not_taken_for_a_creation_cut_short() {
    // Before the range file, a last segment whose header block reads as
    // zeros was removed as blank, and its synced records with it.
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    let (last, path) = segments.last().unwrap().clone();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; coraft_wal::format::BLOCK_BYTES], 0).unwrap();
    assert_eq!(open_error(dir.path()), Error::BadSegmentHeader { segment: last });
    assert!(path.exists());
}
