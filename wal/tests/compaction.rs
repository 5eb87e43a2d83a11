//! Compaction on real files: groups purge, segments no group needs are
//! deleted, segments still needed are kept, and a restart after deletion
//! recovers exactly each group's remaining log.

mod common;

use std::cell::Cell;
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{payload, run, small_config};
use coraft_wal::recovery::list_segments;
use coraft_wal::{DmaFs, FaultyFs, HardState, Need, Wal};

/// Lets every other ready task on the executor run once before going on.
async fn yield_once() {
    let yielded = Cell::new(false);
    poll_fn(|cx| {
        if yielded.replace(true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn segments_on_disk(dir: &Path) -> Vec<u64> {
    list_segments(dir).unwrap().into_iter().map(|(lsn, _)| lsn).collect()
}

/// Appends `count` entries to each of `groups` in turn, interleaved.
fn append_interleaved(wal: &Wal, groups: &[u64], from: u64, count: u64) {
    for index in from..from + count {
        for &group in groups {
            wal.append_entry(group, index, 1, 0, &payload(group, index, 1)).unwrap();
        }
    }
}

async fn assert_entries(wal: &Wal, group: u64, first: u64, last: u64) {
    let state = wal.group_state(group).unwrap();
    assert_eq!((state.first_index, state.last_index), (first, last), "group {group}");
    let entries = wal.entries(group, first..last + 1, usize::MAX).unwrap();
    assert_eq!(entries.len() as u64, last + 1 - first, "group {group}");
    for entry in entries {
        assert_eq!(
            &*entry.payload,
            &payload(group, entry.index, 1)[..],
            "group {group} index {}",
            entry.index
        );
    }
}

#[test]
fn segments_below_every_purge_point_are_deleted_one_still_needed_is_kept_and_a_restart_recovers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let hard_state = HardState {
            term: 1,
            vote: 1,
            commit: 1,
        };
        for group in [1, 2, 3] {
            wal.append_hard_state(group, hard_state).unwrap();
        }
        append_interleaved(&wal, &[1, 2, 3], 1, 600);
        wal.sync().await.unwrap();
        let all = segments_on_disk(dir.path());
        assert!(all.len() > 4, "segments {all:?}");
        // Groups 1 and 2 purge most of their log; group 3 only its first 300.
        wal.purge(1, 550, 1).unwrap();
        wal.purge(2, 590, 1).unwrap();
        wal.purge(3, 300, 1).unwrap();
        // Their hard states sit in the first segment: still needed.
        assert_eq!(wal.delete_obsolete_segments().await.unwrap(), Vec::<u64>::new());
        for group in [1, 2, 3] {
            wal.rewrite_group_metadata(group).unwrap();
        }
        let deleted = wal.delete_obsolete_segments().await.unwrap();
        // Group 3's entry 301 is the oldest record any group needs: every
        // segment before the one holding it goes, that one stays.
        let holder = wal.oldest_holder().unwrap();
        assert_eq!(holder.group, 3);
        assert_eq!(holder.lsn, 3 + 300 * 3 + 3);
        let oldest = &wal.segment_holders(1)[0];
        assert_eq!(oldest.segment, holder.segment);
        assert_eq!(oldest.holders.len(), 1, "{oldest:?}");
        assert_eq!(oldest.holders[0].group, 3);
        assert_eq!(oldest.holders[0].need, Need::Entry { index: 301 });
        assert_eq!(oldest.holders[0].purged_through, Some(300));
        let kept = segments_on_disk(dir.path());
        assert_eq!(kept[0], holder.segment, "kept {kept:?}, deleted {deleted:?}");
        assert!(kept[0] <= holder.lsn);
        assert_eq!(
            deleted,
            all.iter()
                .copied()
                .filter(|&lsn| lsn < holder.segment)
                .collect::<Vec<_>>()
        );
        assert!(!deleted.is_empty());
        let before = wal.groups();
        wal.close().await.unwrap();

        let (wal, report) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(report.segments, kept.len());
        assert_eq!(wal.groups(), before);
        assert_entries(&wal, 1, 551, 600).await;
        assert_entries(&wal, 2, 591, 600).await;
        assert_entries(&wal, 3, 301, 600).await;
        for group in [1, 2, 3] {
            assert_eq!(wal.group_state(group).unwrap().hard_state, Some(hard_state));
        }
        // The log goes on from there, and survives another restart.
        append_interleaved(&wal, &[1, 2, 3], 601, 10);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_entries(&wal, 1, 551, 610).await;
        assert_entries(&wal, 3, 301, 610).await;
        wal.close().await.unwrap();
    });
}

/// A purge appended by another task while `delete_obsolete_segments` waits
/// for its sync is not durable when the deletion runs: the segments it
/// would free must stay, or a crash leaves the group with a log that starts
/// past index 1 and no purge marker saying why.
#[test]
fn a_purge_appended_while_deletion_waits_for_its_sync_frees_nothing_until_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let wal = Rc::new(wal);
        append_interleaved(&wal, &[1], 1, 1500);
        wal.sync().await.unwrap();
        assert!(segments_on_disk(dir.path()).len() > 2);
        // One more record for the next sync to write.
        wal.append_entry(2, 1, 1, 0, b"x").unwrap();
        let purger = glommio::spawn_local({
            let wal = wal.clone();
            async move {
                wal.sync().await.unwrap();
                // Runs when that flush completes, before the deleter resumes.
                wal.purge(1, 1400, 1).unwrap();
            }
        });
        yield_once().await; // the purger waits on the flush first
        wal.delete_obsolete_segments().await.unwrap();
        purger.await;
        // Crash: the purge was never synced.
        drop(Rc::into_inner(wal).unwrap());

        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let state = wal.group_state(1).unwrap();
        match state.snapshot {
            Some((index, _)) => assert_eq!(state.first_index, index + 1, "{state:?}"),
            None => assert_eq!(state.first_index, 1, "entries lost without a purge marker: {state:?}"),
        }
        assert_eq!(state.last_index, 1500);
        wal.close().await.unwrap();
    });
}

/// With nothing needed when `delete_obsolete_segments` is called, records
/// another task appends while it waits for its sync (here over two segment
/// rotations) are not deleted with the old segments.
#[test]
fn records_appended_while_deletion_waits_for_its_sync_are_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let wal = Rc::new(wal);
        append_interleaved(&wal, &[1], 1, 1500);
        wal.sync().await.unwrap();
        // Group 1's whole log is dropped: no group needs anything, and the
        // truncation is what the next sync writes.
        wal.truncate_suffix(1, 1).unwrap();
        let appender = glommio::spawn_local({
            let wal = wal.clone();
            async move {
                wal.sync().await.unwrap();
                // Runs when that flush completes, before the deleter resumes.
                append_interleaved(&wal, &[2], 1, 1000);
            }
        });
        yield_once().await; // the appender waits on the flush first
        wal.delete_obsolete_segments().await.unwrap();
        appender.await;
        assert_entries(&wal, 2, 1, 1000).await;
        Rc::into_inner(wal).unwrap().close().await.unwrap();

        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_entries(&wal, 2, 1, 1000).await;
        wal.close().await.unwrap();
    });
}

/// A deletion's unlinks can each wait for the device (ext4 with `discard`:
/// 10-25 ms per 64 MiB segment). The range lock is held only while the
/// range file and the segment list change, not across the unlinks: a
/// rotation meanwhile names its new segment in the range file and its
/// flush goes on, instead of every write waiting behind the unlinks.
#[test]
fn a_rotation_goes_on_while_a_deletion_unlinks() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), Rc::new(fs))
            .await
            .unwrap();
        let wal = Rc::new(wal);
        append_interleaved(&wal, &[1], 1, 2000);
        wal.sync().await.unwrap();
        wal.purge(1, 1990, 1).unwrap();
        wal.rewrite_group_metadata(1).unwrap();
        let held = || {
            let mut held = 0;
            faults.update(|plan| held = plan.removes_held);
            held
        };
        faults.update(|plan| plan.hold_removes = true);
        let deleting = glommio::spawn_local({
            let wal = wal.clone();
            async move { wal.delete_obsolete_segments().await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while held() == 0 {
            assert!(Instant::now() < deadline, "the deletion never reached its first unlink");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // Appends and syncs until the WAL makes a new segment, each sync
        // given 5 s.
        let created = wal.stats().segments_created;
        let mut index = 2001;
        while wal.stats().segments_created == created {
            wal.append_entry(1, index, 1, 0, &payload(1, index, 1)).unwrap();
            let synced = Rc::new(Cell::new(false));
            glommio::spawn_local({
                let (wal, synced) = (wal.clone(), synced.clone());
                async move {
                    wal.sync().await.unwrap();
                    synced.set(true);
                }
            })
            .detach();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !synced.get() {
                assert!(
                    Instant::now() < deadline,
                    "a sync waited 5 s behind a deletion's unlinks (entry {index})"
                );
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            index += 1;
        }
        assert!(held() > 0, "the unlink is still held: the rotation did not wait for it");
        faults.update(|plan| plan.hold_removes = false);
        let deleted = deleting.await.unwrap();
        assert!(!deleted.is_empty());
        let kept = segments_on_disk(dir.path());
        for segment in &deleted {
            assert!(
                !kept.contains(segment),
                "segment {segment} deleted but on disk: {kept:?}"
            );
        }
        let last = wal.group_state(1).unwrap().last_index;
        Rc::try_unwrap(wal)
            .ok()
            .expect("no task holds the WAL")
            .close()
            .await
            .unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, last);
        assert_entries(&wal, 1, 1991, last).await;
        wal.close().await.unwrap();
    });
}
