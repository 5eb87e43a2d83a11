//! The payloads recovery copies while it checks each record
//! (`Config::keep_recovered_payloads`, `Wal::take_recovered_entries`): the
//! entries handed over are exactly those `Wal::entries` reads from the
//! segments, and every check recovery makes still refuses damage.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{payload, run, small_config, write_log};
use coraft_wal::format::{BLOCK_BYTES, FLUSH_MARKER_BYTES};
use coraft_wal::recovery::{list_segments, recover};
use coraft_wal::{Config, Error, Payload, RecoveryMode, Wal};

fn keeping() -> Config {
    Config {
        keep_recovered_payloads: true,
        ..small_config()
    }
}

/// (index, term, type, payload) of each entry.
type Seen = Vec<(u64, u64, u8, Vec<u8>)>;

fn seen(entries: Vec<coraft_wal::Entry>) -> Seen {
    entries
        .into_iter()
        .map(|entry| (entry.index, entry.term, entry.entry_type, entry.payload.to_vec()))
        .collect()
}

#[test]
fn recovered_entries_are_what_the_segments_hold_after_truncations_purges_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=400u64 {
            for group in 1..=3u64 {
                let entry_type = (index % 3) as u8;
                wal.append_entry(group, index, 1, entry_type, &payload(group, index, 1))
                    .unwrap();
            }
            if index % 25 == 0 {
                wal.sync().await.unwrap();
            }
        }
        // Group 1 loses a suffix and is rewritten in term 2, group 2 purges
        // a prefix, group 3 is forgotten and starts again.
        wal.truncate_suffix(1, 300).unwrap();
        for index in 300..=350 {
            wal.append_entry(1, index, 2, 1, &payload(1, index, 2)).unwrap();
        }
        wal.purge(2, 150, 1).unwrap();
        wal.forget_group(3).unwrap();
        for index in 1..=10 {
            wal.append_entry(3, index, 5, 1, &payload(3, index, 5)).unwrap();
        }
        wal.close().await.unwrap();
    });
    assert!(list_segments(dir.path()).unwrap().len() >= 3, "the log spans segments");
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), keeping()).await.unwrap();
        for (group, first, last) in [(1, 1, 350), (2, 151, 400), (3, 1, 10)] {
            let state = wal.group_state(group).unwrap();
            assert_eq!((state.first_index, state.last_index), (first, last), "group {group}");
            let taken = wal.take_recovered_entries(group).expect("copied by recovery");
            assert!(taken.iter().all(|entry| matches!(entry.payload, Payload::Owned(_))));
            let taken = seen(taken);
            let read = seen(wal.entries(group, first..last + 1, usize::MAX).unwrap());
            assert_eq!(taken.len() as u64, last - first + 1, "group {group}");
            assert_eq!(taken, read, "group {group}");
            // Taken once.
            assert!(wal.take_recovered_entries(group).is_none());
        }
        // A group appended to before its copies are taken reads from the WAL.
        wal.append_entry(2, 401, 1, 0, b"late").unwrap();
        wal.drop_recovered_entries();
        assert!(wal.take_recovered_entries(2).is_none());
        wal.close().await.unwrap();
        // Without the option nothing is copied.
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert!(wal.take_recovered_entries(1).is_none());
        wal.close().await.unwrap();
    });
}

#[test]
fn a_corrupt_record_in_a_middle_segment_is_still_refused_naming_its_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_log(dir.path(), 300);
    assert!(segments.len() >= 3);
    let (segment, path) = segments[1].clone();
    let record_bytes = 12 + 24 + 1000;
    let record = (BLOCK_BYTES + FLUSH_MARKER_BYTES) as u64 + 3 * record_bytes;
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xff], record + 40).unwrap();
    let expected = Error::Corruption {
        segment,
        offset: record,
    };
    // What `recover` (the checking pass the engine's copy used to follow)
    // refused it with, and the same from the pass that copies payloads.
    assert_eq!(
        recover(dir.path(), RecoveryMode::TolerateTornTail, false).unwrap_err(),
        expected
    );
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let error = run(|| async {
            let config = Config {
                recovery_mode: mode,
                ..keeping()
            };
            match Wal::open(dir.path(), config).await {
                Ok(_) => panic!("a WAL with a corrupt record in a middle segment opened"),
                Err(error) => error,
            }
        });
        assert_eq!(error, expected, "{mode:?}");
    }
}

#[test]
fn a_torn_tail_is_cut_and_its_entries_are_not_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=100 {
            wal.append_entry(1, index, 1, 0, &payload(1, index, 1)).unwrap();
            if index == 40 {
                wal.sync().await.unwrap();
            }
        }
        wal.sync().await.unwrap();
        // A crash: no close marker vouches for the last flush.
        drop(wal);
    });
    let recovered = recover(dir.path(), RecoveryMode::TolerateTornTail, false).unwrap();
    let last = recovered.segments.last().unwrap();
    let last_record_bytes = 12 + 24 + payload(1, 100, 1).len() as u64;
    let file = OpenOptions::new().write(true).open(&last.path).unwrap();
    file.write_all_at(&[0xff], last.end_offset - last_record_bytes + 20)
        .unwrap();
    let strict = run(|| async {
        let config = Config {
            recovery_mode: RecoveryMode::Strict,
            ..keeping()
        };
        Wal::open(dir.path(), config).await.err()
    });
    assert!(matches!(strict, Some(Error::TornTail { .. })), "{strict:?}");
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), keeping()).await.unwrap();
        assert!(report.torn_tail.is_some());
        let taken = seen(wal.take_recovered_entries(1).expect("copied by recovery"));
        let expected: Seen = (1..=99).map(|index| (index, 1, 0, payload(1, index, 1))).collect();
        assert_eq!(taken, expected);
        wal.close().await.unwrap();
    });
}

/// Pages of the file at `path` in the page cache (`mincore` on a fresh
/// mapping of it).
fn cached_pages(path: &std::path::Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only mapping that is never read, only asked about.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let page = 4096;
    let mut resident = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: `resident` has a byte for each page of the mapping.
    let status = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), resident.as_mut_ptr()) };
    assert_eq!(status, 0, "mincore: {}", std::io::Error::last_os_error());
    resident.iter().filter(|&&byte| byte & 1 != 0).count()
}

#[test]
fn copying_recovery_leaves_the_checked_segments_out_of_the_page_cache() {
    // On disk, not tmpfs: a tmpfs file's pages are its storage and stay.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let segments = write_log(dir.path(), 300);
    assert!(segments.len() >= 3, "the log spans segments");
    // The last segment is the writer's after the open; the others are
    // only read.
    let checked = &segments[..segments.len() - 1];
    let cached = |label: &str| -> Vec<usize> {
        let pages: Vec<usize> = checked.iter().map(|(_, path)| cached_pages(path)).collect();
        eprintln!("{label}: cached pages per segment {pages:?}");
        pages
    };
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), keeping()).await.unwrap();
        assert_eq!(wal.take_recovered_entries(1).expect("copied").len(), 300);
        // The payloads are in memory: the cache holds no second copy.
        assert!(
            cached("copying open").iter().all(|&pages| pages == 0),
            "a copying open left segments in the page cache"
        );
        wal.close().await.unwrap();
    });
    run(|| async {
        // The same walk without copies leaves them cached for the reads
        // that follow (and shows that this file system's cache is seen).
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert!(
            cached("plain open").iter().all(|&pages| pages > 0),
            "the plain open's walk should leave its segments cached"
        );
        assert_eq!(wal.entries(1, 1..301, usize::MAX).unwrap().len(), 300);
        wal.close().await.unwrap();
    });
}
