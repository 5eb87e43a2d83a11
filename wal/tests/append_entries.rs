//! `Wal::append_entries`: a run of one group's entries in one call. It must
//! write exactly what as many `append_entry` calls would, and refuse a run
//! as a whole (nothing appended) when any part of it would be refused.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::{payload, run, small_config};
use coraft_wal::{Config, DmaFs, Error, FaultyFs, HardState, NewEntry, Wal};

/// A run of `count` entries of `group` from `first_index`, term 3, type 1.
fn run_of(group: u64, first_index: u64, count: u64) -> Vec<NewEntry<Vec<u8>>> {
    (first_index..first_index + count)
        .map(|index| NewEntry {
            term: 3,
            entry_type: 1,
            payload: payload(group, index, 3),
        })
        .collect()
}

/// Every segment file of `dir` with its bytes, by name.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, without_nonces(std::fs::read(&path).unwrap()))
        })
        .collect();
    files.sort();
    files
}

/// The segment's bytes with its random nonce (and the CRCs over it) zeroed
/// in the header and in every flush marker, so two logs can be compared.
fn without_nonces(mut bytes: Vec<u8>) -> Vec<u8> {
    use coraft_wal::format::{decode_record, encode_flush_marker_into, Decoded, FlushMarker, BLOCK_BYTES};
    bytes[32..44].fill(0);
    for block in (BLOCK_BYTES..bytes.len()).step_by(BLOCK_BYTES) {
        if let Decoded::Marker(marker) = decode_record(&bytes[block..]) {
            encode_flush_marker_into(&FlushMarker { nonce: 0, ..marker }, &mut bytes[block..]);
        }
    }
    bytes
}

/// Appends runs of three groups (interleaved with single records), long
/// enough to span several batches and segments, syncing after each round;
/// with `per_entry`, the same records one `append_entry` call at a time.
async fn write_rounds(dir: &Path, per_entry: bool) {
    let (wal, _) = Wal::open(dir, small_config()).await.unwrap();
    let mut next = [1u64; 3];
    for round in 0..12u64 {
        for group in 0..3u64 {
            let count = 5 + (round * 7 + group * 13) % 90;
            let first = next[group as usize];
            let entries = run_of(group, first, count);
            if per_entry {
                for (index, entry) in (first..).zip(&entries) {
                    wal.append_entry(group, index, entry.term, entry.entry_type, &entry.payload)
                        .unwrap();
                }
            } else {
                let last_lsn = wal.append_entries(group, first, &entries).unwrap();
                assert_eq!(last_lsn, Some(wal.last_lsn()));
            }
            next[group as usize] += count;
            let state = HardState {
                term: 3,
                vote: group,
                commit: round,
            };
            wal.append_hard_state(group, state).unwrap();
        }
        wal.sync().await.unwrap();
    }
    wal.close().await.unwrap();
}

#[test]
fn a_run_writes_the_same_bytes_as_one_append_per_entry_and_recovers() {
    let runs = tempfile::tempdir().unwrap();
    let singles = tempfile::tempdir().unwrap();
    run(|| async {
        write_rounds(runs.path(), false).await;
        write_rounds(singles.path(), true).await;
    });
    let (runs_files, singles_files) = (segment_files(runs.path()), segment_files(singles.path()));
    assert!(runs_files.len() > 3, "the runs span several segments");
    assert!(
        runs_files == singles_files,
        "the segment files differ from those of single appends"
    );
    run(|| async {
        let (wal, report) = Wal::open(runs.path(), small_config()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        for group in 0..3u64 {
            let state = wal.group_state(group).unwrap();
            assert_eq!(state.first_index, 1);
            assert_eq!(state.hard_state.map(|hard| hard.commit), Some(11));
            let entries = wal.entries(group, 1..state.last_index + 1, usize::MAX).unwrap();
            assert_eq!(entries.len() as u64, state.last_index);
            for entry in &entries {
                assert_eq!((entry.term, entry.entry_type), (3, 1));
                assert_eq!(&*entry.payload, payload(group, entry.index, 3).as_slice());
            }
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn a_run_reads_back_before_it_is_durable_and_continues_with_single_appends() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        // A group's first run fixes its first index, like a first append.
        assert_eq!(wal.append_entries(4, 10, &run_of(4, 10, 5)).unwrap(), Some(5));
        let state = wal.group_state(4).unwrap();
        assert_eq!((state.first_index, state.last_index), (10, 14));
        let unwritten = wal.entries(4, 10..15, usize::MAX).unwrap();
        assert_eq!(unwritten.len(), 5);
        assert_eq!(&*unwritten[4].payload, payload(4, 14, 3).as_slice());
        wal.append_entry(4, 15, 4, 0, b"single").unwrap();
        assert_eq!(wal.term(4, 15), Some(4));
        assert_eq!(wal.sync().await.unwrap(), 6);
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!(report.last_lsn, 6);
        let state = wal.group_state(4).unwrap();
        assert_eq!((state.first_index, state.last_index), (10, 15));
        wal.close().await.unwrap();
    });
}

#[test]
fn a_record_too_large_in_the_middle_of_a_run_refuses_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        wal.append_entries(1, 1, &run_of(1, 1, 3)).unwrap();
        let mut entries = run_of(1, 4, 6);
        entries[3].payload = vec![7; small_config().record_bytes_max];
        let error = wal.append_entries(1, 4, &entries).unwrap_err();
        assert!(
            matches!(
                error,
                Error::RecordTooLarge {
                    record_bytes,
                    record_bytes_max: 16384,
                } if record_bytes == 16384 + 36
            ),
            "{error:?}"
        );
        // Nothing of the run went in: the log ends where it did, and the
        // run's first index is still the one to append.
        assert_eq!(wal.last_lsn(), 3);
        assert_eq!(wal.group_state(1).unwrap().last_index, 3);
        entries[3].payload = b"fits".to_vec();
        assert_eq!(wal.append_entries(1, 4, &entries).unwrap(), Some(9));
        wal.sync().await.unwrap();
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let read = wal.entries(1, 1..10, usize::MAX).unwrap();
        assert_eq!(read.len(), 9);
        assert_eq!(&*read[6].payload, b"fits");
        wal.close().await.unwrap();
    });
}

#[test]
fn a_run_past_the_pending_bound_or_off_the_last_index_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let config = small_config();
        let (wal, _) = Wal::open(dir.path(), config.clone()).await.unwrap();
        wal.append_entry(2, 1, 1, 0, b"first").unwrap();
        // More bytes than may wait for durability, in records that each fit.
        let too_many = config.pending_bytes_max / (10 << 10) + 1;
        let big: Vec<NewEntry<&[u8]>> = (0..too_many)
            .map(|_| NewEntry {
                term: 1,
                entry_type: 0,
                payload: &[9u8; 10 << 10][..],
            })
            .collect();
        assert!(matches!(
            wal.append_entries(2, 2, &big),
            Err(Error::Backpressure { pending_bytes_max, .. }) if pending_bytes_max == config.pending_bytes_max
        ));
        assert_eq!(
            wal.append_entries(2, 3, &run_of(2, 3, 2)),
            Err(Error::NonContiguousIndex {
                group: 2,
                index: 3,
                expected: 2
            })
        );
        assert_eq!(wal.append_entries::<&[u8]>(2, 2, &[]), Ok(None));
        assert_eq!(wal.last_lsn(), 1);
        assert_eq!(wal.group_state(2).unwrap().last_index, 1);
        // Half of it fits.
        assert!(wal.append_entries(2, 2, &big[..too_many / 2]).is_ok());
        wal.close().await.unwrap();
    });
}

#[test]
fn a_poisoned_wal_refuses_a_run() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir.path(), small_config(), Rc::new(fs))
            .await
            .unwrap();
        wal.append_entries(1, 1, &run_of(1, 1, 4)).unwrap();
        assert_eq!(wal.sync().await.unwrap(), 4);
        faults.update(|plan| plan.failing_syncs = 1);
        wal.append_entries(1, 5, &run_of(1, 5, 4)).unwrap();
        assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
        assert!(matches!(
            wal.append_entries(1, 9, &run_of(1, 9, 2)),
            Err(Error::Poisoned { .. })
        ));
        drop(wal);
        // The unacknowledged run is lost in a power cut; the synced one is not.
        faults.power_cut(0, 0).unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, 4);
        wal.close().await.unwrap();
    });
}

#[test]
fn runs_flushed_as_large_o_dsync_writes_with_two_commits_outstanding_survive_reopen() {
    // 1 MiB runs: every flush is one O_DSYNC write (DSYNC_WRITE_BYTES_MIN),
    // awaited while the next run is appended, as coraft-bench wal does.
    let dir = tempfile::tempdir().unwrap();
    let runs = 6u64;
    let per_run = 256u64;
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), Config::default()).await.unwrap();
        let mut previous = None;
        for number in 0..runs {
            let first = number * per_run + 1;
            let entries: Vec<NewEntry<Vec<u8>>> = (first..first + per_run)
                .map(|index| NewEntry {
                    term: 1,
                    entry_type: 0,
                    payload: vec![(index % 251) as u8; 4096],
                })
                .collect();
            wal.append_entries(5, first, &entries).unwrap();
            if let Some(commit) = previous.replace(wal.sync()) {
                commit.await.unwrap();
            }
        }
        assert_eq!(previous.unwrap().await.unwrap(), runs * per_run);
        assert!(wal.stats().bytes_written >= runs * per_run * 4096);
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(dir.path(), Config::default()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        assert_eq!(wal.group_state(5).unwrap().last_index, runs * per_run);
        let entries = wal.entries(5, 1..runs * per_run + 1, usize::MAX).unwrap();
        assert_eq!(entries.len() as u64, runs * per_run);
        for entry in &entries {
            assert!(entry.payload.iter().all(|&byte| byte == (entry.index % 251) as u8));
            assert_eq!(entry.payload.len(), 4096);
        }
        wal.close().await.unwrap();
    });
}
