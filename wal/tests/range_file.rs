//! The segment range file itself: deleting it is refused (segments made by
//! a WAL that keeps one say so in their header), `coraft-wal rebuild-range`
//! accepts such a directory explicitly, a failed write of it is retried
//! before any record goes into the segment it would name (injected through
//! the WAL's fault seam), and a crash in the middle of replacing it leaves
//! a WAL that opens.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::{last_index_after_open, open_error, run, small_config, tool, write_log};
use coraft_wal::format::segment_file_name;
use coraft_wal::recovery::{
    list_segments, read_segment_range, read_stored_range, recover, SegmentRange, StoredRange, SEGMENT_RANGE_FILE_NAME,
    SEGMENT_RANGE_SLOT_BYTES,
};
use coraft_wal::{DmaFs, Error, FaultyFs, IoOp, RecoveryMode, Wal};

fn range_path(dir: &Path) -> PathBuf {
    dir.join(SEGMENT_RANGE_FILE_NAME)
}

#[test]
fn a_deleted_range_file_is_refused_naming_it_and_the_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(range_path(dir.path())).unwrap();
    let error = open_error(dir.path());
    assert!(matches!(error, Error::MissingSegmentRange { .. }), "{error:?}");
    let message = message_naming_the_range_file(&error, dir.path());
    assert!(message.contains("coraft-wal rebuild-range"), "{message}");
    // The tools see it too; nothing was written.
    assert!(matches!(
        recover(dir.path(), RecoveryMode::TolerateTornTail, false),
        Err(Error::MissingSegmentRange { .. })
    ));
    assert!(!range_path(dir.path()).exists());
    assert_eq!(list_segments(dir.path()).unwrap(), segments);
    // Deleting it together with the newest segment is refused as well
    // (before, both went unnoticed and the segment's records were lost).
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegmentRange { .. }));
}

#[test]
fn rebuild_range_accepts_a_wal_whose_range_file_was_deleted_and_checks_resume() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    std::fs::remove_file(range_path(dir.path())).unwrap();
    let path = dir.path().to_str().unwrap();
    let (ok, text) = tool(&["rebuild-range", path]);
    assert!(ok, "{text}");
    let (first, last) = (segments[0].0, segments.last().unwrap().0);
    assert!(
        text.contains(&segment_file_name(first)) && text.contains(&segment_file_name(last)),
        "{text}"
    );
    assert_eq!(
        read_segment_range(dir.path()).unwrap(),
        Some(SegmentRange {
            oldest: first,
            newest: last
        })
    );
    assert_eq!(last_index_after_open(dir.path()), 200);
    // From then on a deleted newest segment is caught again.
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
    // The tool refuses what it cannot vouch for: a gap in the middle.
    std::fs::remove_file(range_path(dir.path())).unwrap();
    std::fs::remove_file(&segments[1].1).unwrap();
    let (ok, text) = tool(&["rebuild-range", path]);
    assert!(!ok, "{text}");
    assert!(text.contains(&segment_file_name(segments[2].0)), "{text}");
    assert!(!range_path(dir.path()).exists());
}

#[test]
fn a_crash_before_the_first_segment_was_named_in_a_range_file_opens() {
    // The first segment is made, then the range file written; a crash in
    // between leaves a segment that says "range file kept" without one.
    // It holds no record, so nothing can have been acknowledged: it opens.
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        faults.update(|plan| plan.failing_range_writes = usize::MAX);
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), Rc::new(fs))
            .await
            .unwrap();
        wal.append_entry(1, 1, 1, 0, b"never acknowledged").unwrap();
        let error = wal.sync().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::NoSpace {
                    op: IoOp::RangeFile,
                    ..
                } | Error::Io {
                    op: IoOp::RangeFile,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(wal.durable_lsn(), 0);
        // The process dies here.
        drop(wal);
    });
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    assert!(!range_path(dir.path()).exists());
    assert_eq!(last_index_after_open(dir.path()), 0);
    assert!(range_path(dir.path()).exists());
    write_log(dir.path(), 5);
    assert_eq!(last_index_after_open(dir.path()), 5);
}

#[test]
fn a_failed_range_file_write_is_retried_before_any_record_goes_into_the_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, last_index) = run(|| async {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), Rc::new(fs))
            .await
            .unwrap();
        let mut index = 1;
        // A first segment, durably named.
        while index <= 10 {
            wal.append_entry(1, index, 1, 0, &[1; 1000]).unwrap();
            index += 1;
        }
        wal.sync().await.unwrap();
        let created = wal.stats().segments_created;
        let named = read_segment_range(dir.path()).unwrap().unwrap();
        // The next two range-file writes fail (ENOSPC, then EIO).
        faults.update(|plan| plan.failing_range_writes = 2);
        let mut failures = Vec::new();
        let durable_before = wal.durable_lsn();
        while failures.len() < 2 {
            wal.append_entry(1, index, 1, 0, &[2; 1000]).unwrap();
            index += 1;
            if let Err(error) = wal.sync().await {
                failures.push(error);
            }
        }
        // The segment exists, nothing of the flush into it is durable, and
        // the range still names the one before.
        assert_eq!(wal.stats().segments_created, created + 1);
        assert!(wal.poisoned().is_none());
        assert_eq!(read_segment_range(dir.path()).unwrap(), Some(named));
        let newest = list_segments(dir.path()).unwrap().last().unwrap().0;
        assert!(newest > named.newest);
        assert!(
            wal.durable_lsn() < newest,
            "a record went into a segment the range does not name"
        );
        assert!(wal.durable_lsn() >= durable_before);
        assert!(
            matches!(
                failures[0],
                Error::NoSpace {
                    op: IoOp::RangeFile,
                    ..
                }
            ),
            "{:?}",
            failures[0]
        );
        assert!(
            matches!(
                failures[1],
                Error::Io {
                    op: IoOp::RangeFile,
                    ..
                }
            ),
            "{:?}",
            failures[1]
        );
        let message = failures[0].to_string();
        assert!(message.contains(SEGMENT_RANGE_FILE_NAME), "{message}");
        // The retry names the segment, then writes the records.
        let last = wal.last_lsn();
        assert_eq!(wal.sync().await.unwrap(), last);
        assert_eq!(
            read_segment_range(dir.path()).unwrap(),
            Some(SegmentRange {
                oldest: named.oldest,
                newest
            })
        );
        wal.close().await.unwrap();
        (last, index - 1)
    });
    assert!(durable > 0);
    assert_eq!(last_index_after_open(dir.path()), last_index);
    // And the newest segment's loss is refused.
    std::fs::remove_file(&list_segments(dir.path()).unwrap().last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
}

#[test]
fn a_failed_range_file_write_before_a_deletion_deletes_nothing_and_the_next_call_does() {
    let dir = tempfile::tempdir().unwrap();
    let before = write_log(dir.path(), 200);
    run(|| async {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), Rc::new(fs))
            .await
            .unwrap();
        wal.purge(1, 150, 1).unwrap();
        faults.update(|plan| plan.failing_range_writes = 1);
        let error = wal.delete_obsolete_segments().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::NoSpace {
                    op: IoOp::RangeFile,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(list_segments(dir.path()).unwrap(), before);
        assert_eq!(read_segment_range(dir.path()).unwrap().unwrap().oldest, before[0].0);
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        assert!(deleted.len() >= 2, "{deleted:?}");
        assert_eq!(
            read_segment_range(dir.path()).unwrap().unwrap().oldest,
            list_segments(dir.path()).unwrap()[0].0
        );
        wal.close().await.unwrap();
    });
    assert_eq!(last_index_after_open(dir.path()), 200);
}

#[test]
fn a_crash_while_replacing_the_range_file_leaves_a_wal_that_opens() {
    // The file is made by renaming a synced temporary over it (when there
    // is none, or an older format is converted): a crash mid-write leaves a
    // partial temporary next to the old file, which the next open removes.
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let kept = read_segment_range(dir.path()).unwrap().unwrap();
    let temporary = dir.path().join(format!("{SEGMENT_RANGE_FILE_NAME}.tmp"));
    std::fs::write(&temporary, &std::fs::read(range_path(dir.path())).unwrap()[..13]).unwrap();
    assert_eq!(last_index_after_open(dir.path()), 200);
    assert_eq!(read_segment_range(dir.path()).unwrap(), Some(kept));
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 201..=300 {
            wal.append_entry(1, index, 1, 0, &[3; 1000]).unwrap();
        }
        wal.close().await.unwrap();
    });
    assert!(!temporary.exists());
    let newest = list_segments(dir.path()).unwrap().last().unwrap().0;
    assert_eq!(read_segment_range(dir.path()).unwrap().unwrap().newest, newest);
    assert_eq!(last_index_after_open(dir.path()), 300);
}

#[test]
fn a_torn_range_file_is_refused_naming_it_and_rebuild_range_recovers() {
    // A file system that does not rename atomically, or a copy cut short,
    // can leave the range file itself torn.
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let bytes = std::fs::read(range_path(dir.path())).unwrap();
    std::fs::write(range_path(dir.path()), &bytes[..13]).unwrap();
    let error = open_error(dir.path());
    assert!(matches!(error, Error::BadSegmentRange { .. }), "{error:?}");
    let message = message_naming_the_range_file(&error, dir.path());
    assert!(message.contains("coraft-wal rebuild-range"), "{message}");
    let (ok, text) = tool(&["rebuild-range", dir.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    std::fs::write(range_path(dir.path()), &bytes).unwrap();
    let range = read_segment_range(dir.path()).unwrap();
    let (ok, text) = tool(&["rebuild-range", dir.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    assert_eq!(read_segment_range(dir.path()).unwrap(), range);
    assert_eq!(last_index_after_open(dir.path()), 200);
}

#[test]
fn deletions_beside_new_segments_leave_the_range_file_naming_the_oldest_and_newest() {
    // The range file is written off the shard's thread, by the flusher when
    // it starts a segment and by deletions: interleaved, each must write
    // the range as it is then (a stale one naming deleted segments, or
    // missing a new one, is refused by the next open).
    let dir = tempfile::tempdir().unwrap();
    let (last, listed) = run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let wal = Rc::new(wal);
        let writer = {
            let wal = wal.clone();
            glommio::spawn_local(async move {
                for index in 1..=600u64 {
                    wal.append_entry(1, index, 1, 0, &[index as u8; 1000]).unwrap();
                    if index % 5 == 0 {
                        wal.sync().await.unwrap();
                    }
                }
            })
        };
        let mut deletions = 0;
        for round in 1..=40u64 {
            let last = wal.group_state(1).map_or(0, |state| state.last_index);
            if last > 20 {
                wal.purge(1, last - 20, 1).unwrap();
            }
            deletions += wal.delete_obsolete_segments().await.unwrap().len();
            glommio::timer::sleep(std::time::Duration::from_micros(200 * round)).await;
        }
        writer.await;
        wal.purge(1, 580, 1).unwrap();
        deletions += wal.delete_obsolete_segments().await.unwrap().len();
        assert!(
            deletions >= 4,
            "segments were deleted while others were made: {deletions}"
        );
        let listed = list_segments(dir.path()).unwrap();
        let range = read_segment_range(dir.path()).unwrap().unwrap();
        assert_eq!(
            (range.oldest, range.newest),
            (listed[0].0, listed.last().unwrap().0),
            "{listed:?}"
        );
        let wal = Rc::try_unwrap(wal).ok().expect("the writer is done");
        (wal.close().await.unwrap(), listed.len())
    });
    assert!(last > 0 && listed >= 1);
    assert_eq!(last_index_after_open(dir.path()), 600);
}

/// A file system that counts the range file's replacements (a temporary
/// file synced, renamed, the directory synced) and directory syncs, and
/// otherwise is the real one, spare segment included.
struct CountingFs {
    inner: DmaFs,
    replacements: std::cell::Cell<usize>,
    directory_syncs: std::cell::Cell<usize>,
}

impl coraft_wal::FileSystem for CountingFs {
    fn create_segment<'a>(
        &'a self,
        path: &'a Path,
        header: &'a [u8],
        segment_bytes: u64,
    ) -> coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<Rc<dyn coraft_wal::fs::SegmentFile>>> {
        self.inner.create_segment(path, header, segment_bytes)
    }
    fn prepare_spare<'a>(
        &'a self,
        path: &'a Path,
        segment_bytes: u64,
    ) -> Option<coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<Rc<dyn coraft_wal::fs::SegmentFile>>>> {
        self.inner.prepare_spare(path, segment_bytes)
    }
    fn open_segment<'a>(
        &'a self,
        path: &'a Path,
    ) -> coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<Rc<dyn coraft_wal::fs::SegmentFile>>> {
        self.inner.open_segment(path)
    }
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<()>> {
        self.directory_syncs.set(self.directory_syncs.get() + 1);
        self.inner.sync_dir(dir)
    }
    fn remove<'a>(&'a self, path: &'a Path) -> coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<()>> {
        self.inner.remove(path)
    }
    fn replace_file(&self, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.replacements.set(self.replacements.get() + 1);
        self.inner.replace_file(dir, name, bytes)
    }
    fn replace_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        bytes: &'a [u8],
    ) -> coraft_wal::fs::LocalBoxFuture<'a, std::io::Result<()>> {
        self.replacements.set(self.replacements.get() + 1);
        self.inner.replace_file_off_thread(dir, name, bytes)
    }
}

#[test]
fn rotations_and_deletions_update_the_range_file_in_place_without_a_rename_or_directory_sync() {
    // Each update used to replace the file (a temporary file fsynced,
    // renamed, the directory fsynced: three syncs a rotation's first flush
    // waited for). Now the file, once made, keeps its inode and each update
    // is one slot written and fdatasynced.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 20);
    let inode = std::fs::metadata(range_path(dir.path())).unwrap().ino();
    let (replacements, directory_syncs, created, deleted) = run(|| async {
        let fs = Rc::new(CountingFs {
            inner: DmaFs::default(),
            replacements: Default::default(),
            directory_syncs: Default::default(),
        });
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), fs.clone()).await.unwrap();
        let (replaced_at_open, synced_at_open) = (fs.replacements.get(), fs.directory_syncs.get());
        for index in 21..=400 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 1000]).unwrap();
            if index % 10 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.sync().await.unwrap();
        let created = wal.stats().segments_created;
        let created_from_spare = wal.stats().segments_from_spare;
        wal.purge(1, 380, 1).unwrap();
        let deleted = wal.delete_obsolete_segments().await.unwrap().len();
        wal.close().await.unwrap();
        // Directory syncs: one per segment made (created, or the spare
        // renamed) and the deletion's, none for the range file.
        let directory_syncs = fs.directory_syncs.get() - synced_at_open;
        assert_eq!(
            directory_syncs,
            created as usize + 1,
            "{created} segments ({created_from_spare} from the spare) and a deletion"
        );
        (
            fs.replacements.get() - replaced_at_open,
            directory_syncs,
            created,
            deleted,
        )
    });
    assert!(created >= 5 && deleted >= 3, "{created} made, {deleted} deleted");
    assert_eq!(
        replacements, 0,
        "{created} new segments and a deletion replaced the range file {replacements} times ({directory_syncs} directory syncs)"
    );
    assert_eq!(std::fs::metadata(range_path(dir.path())).unwrap().ino(), inode);
    let listed = list_segments(dir.path()).unwrap();
    assert_eq!(
        read_segment_range(dir.path()).unwrap(),
        Some(SegmentRange {
            oldest: listed[0].0,
            newest: listed.last().unwrap().0
        })
    );
    assert_eq!(last_index_after_open(dir.path()), 400);
}

/// The range file's two slots.
fn slots(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(range_path(dir)).unwrap();
    assert_eq!(bytes.len(), 2 * SEGMENT_RANGE_SLOT_BYTES);
    let (first, second) = bytes.split_at(SEGMENT_RANGE_SLOT_BYTES);
    (first.to_vec(), second.to_vec())
}

/// Overwrites `len` bytes of slot `slot` at `at` with garbage, as a write
/// cut short by a crash could leave it.
fn tear_slot(dir: &Path, slot: u64, at: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(range_path(dir)).unwrap();
    let offset = slot * SEGMENT_RANGE_SLOT_BYTES as u64 + at;
    file.write_all_at(&vec![0xa5; len], offset).unwrap();
}

#[test]
fn a_torn_slot_gives_way_to_the_other_and_the_next_update_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    assert!(segments.len() >= 3, "{segments:?}");
    let newest = read_stored_range(dir.path()).unwrap().unwrap();
    assert!(newest.sequence >= 2, "{newest:?}");
    // The slot before it holds the previous update: the segment before.
    let (slot, other) = (newest.sequence % 2, 1 - newest.sequence % 2);
    let previous = {
        let (first, second) = slots(dir.path());
        let bytes = if other == 0 { first } else { second };
        assert_ne!(bytes, vec![0; SEGMENT_RANGE_SLOT_BYTES]);
        bytes
    };
    // Tearing the older slot changes nothing.
    let saved = std::fs::read(range_path(dir.path())).unwrap();
    tear_slot(dir.path(), other, 20, 8);
    assert_eq!(read_stored_range(dir.path()).unwrap(), Some(newest));
    std::fs::write(range_path(dir.path()), &saved).unwrap();
    // An update torn in its sequence number, in its range, or its CRC.
    for at in [12, 28, 36] {
        std::fs::write(range_path(dir.path()), &saved).unwrap();
        tear_slot(dir.path(), slot, at, 4);
        let stored = read_stored_range(dir.path()).unwrap().unwrap();
        assert_eq!(stored.sequence, newest.sequence - 1, "torn at {at}");
        assert_eq!(&previous[12..20], &stored.sequence.to_le_bytes());
        assert_eq!(stored.range.oldest, newest.range.oldest);
        assert!(stored.range.newest < newest.range.newest, "{stored:?} {newest:?}");
    }
    // The WAL opens (the segments newer than the range's newest are what a
    // crash before the update's sync leaves) and writes the torn slot next.
    assert_eq!(last_index_after_open(dir.path()), 200);
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 201..=300 {
            wal.append_entry(1, index, 1, 0, &[3; 1000]).unwrap();
        }
        wal.close().await.unwrap();
    });
    let stored = read_stored_range(dir.path()).unwrap().unwrap();
    assert!(stored.sequence >= newest.sequence, "{stored:?}");
    assert_eq!(
        stored.range.newest,
        list_segments(dir.path()).unwrap().last().unwrap().0
    );
    assert_eq!(last_index_after_open(dir.path()), 300);
}

#[test]
fn both_slots_bad_is_refused_naming_the_file_and_rebuild_range_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    let stored = read_stored_range(dir.path()).unwrap().unwrap();
    tear_slot(dir.path(), 0, 30, 10);
    tear_slot(dir.path(), 1, 0, 4);
    let error = open_error(dir.path());
    assert!(matches!(error, Error::BadSegmentRange { .. }), "{error:?}");
    message_naming_the_range_file(&error, dir.path());
    let (ok, text) = tool(&["rebuild-range", dir.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    assert_eq!(read_stored_range(dir.path()).unwrap().unwrap().range, stored.range);
    assert_eq!(last_index_after_open(dir.path()), 200);
    // A slot in the wrong place (a sequence always goes to slot
    // `sequence % 2`) is no valid slot either.
    let (first, second) = slots(dir.path());
    std::fs::write(range_path(dir.path()), [second, first].concat()).unwrap();
    assert!(matches!(open_error(dir.path()), Error::BadSegmentRange { .. }));
    assert!(segments.len() >= 3);
}

#[test]
fn an_older_one_record_range_file_is_read_and_converted_once_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 200);
    let (oldest, newest) = (segments[0].0, segments.last().unwrap().0);
    // The format before the slots: magic, oldest, newest, CRC32.
    let mut old = b"CORAFTR1".to_vec();
    old.extend_from_slice(&oldest.to_le_bytes());
    old.extend_from_slice(&newest.to_le_bytes());
    let crc = coraft_wal::format::crc32(&old);
    old.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(range_path(dir.path()), &old).unwrap();
    assert_eq!(
        read_stored_range(dir.path()).unwrap(),
        Some(StoredRange {
            range: SegmentRange { oldest, newest },
            sequence: 0
        })
    );
    // Its checks hold before the conversion...
    let newest_file = std::fs::read(&segments.last().unwrap().1).unwrap();
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
    assert_eq!(std::fs::read(range_path(dir.path())).unwrap(), old);
    std::fs::write(&segments.last().unwrap().1, newest_file).unwrap();
    // ...and after it.
    assert_eq!(last_index_after_open(dir.path()), 200);
    assert_eq!(
        read_stored_range(dir.path()).unwrap(),
        Some(StoredRange {
            range: SegmentRange { oldest, newest },
            sequence: 1
        })
    );
    assert_eq!(slots(dir.path()).0, vec![0; SEGMENT_RANGE_SLOT_BYTES]);
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert!(matches!(open_error(dir.path()), Error::MissingSegment { .. }));
}

/// `error`'s message, asserting that it names the range file in `dir`.
fn message_naming_the_range_file(error: &Error, dir: &std::path::Path) -> String {
    let message = error.to_string();
    assert!(message.contains(&range_path(dir).display().to_string()), "{message}");
    message
}
