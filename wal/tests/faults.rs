//! Injected faults: fsync errors poison the WAL, ENOSPC is a clear error that
//! loses nothing acknowledged, short writes are retried, a power cut that
//! garbles the block in flight loses nothing synced, and a flipped bit in a
//! synced record is corruption, never a torn tail.

mod common;

use std::rc::Rc;

use common::{run, small_config};
use coraft_wal::{DmaFs, Error, Faults, FaultyFs, IoOp, Wal};

async fn open_faulty(dir: &std::path::Path) -> (Wal, Faults) {
    let (fs, faults) = FaultyFs::new(Rc::new(DmaFs::default()));
    let (wal, _) = Wal::open_with_fs(dir, small_config(), Rc::new(fs)).await.unwrap();
    (wal, faults)
}

#[test]
fn an_fsync_error_poisons_the_wal_and_nothing_more_is_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, faults) = open_faulty(dir.path()).await;
        wal.append_entry(1, 1, 1, 0, b"acked").unwrap();
        assert_eq!(wal.sync().await.unwrap(), 1);
        faults.update(|plan| plan.failing_syncs = 1);
        wal.append_entry(1, 2, 1, 0, b"never acked").unwrap();
        let error = wal.sync().await.unwrap_err();
        assert!(matches!(error, Error::Poisoned { errno: Some(5), .. }), "{error:?}");
        assert_eq!(wal.durable_lsn(), 1);
        assert!(matches!(
            wal.append_entry(1, 3, 1, 0, b"x"),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
        assert!(wal.poisoned().is_some());
        drop(wal);
        // A power cut now loses what the failed fsync did not cover.
        faults.power_cut(0, 0).unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, 1);
        assert_eq!(&*wal.entries(1, 1..2, usize::MAX).unwrap()[0].payload, b"acked");
        wal.close().await.unwrap();
    });
}

#[test]
fn no_space_for_a_new_segment_is_a_clear_error_and_a_later_sync_retries() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, faults) = open_faulty(dir.path()).await;
        let mut index = 1;
        // Fill most of the first segment durably.
        while wal.stats().segments_created < 1 || index < 300 {
            wal.append_entry(1, index, 1, 0, &[1; 150]).unwrap();
            index += 1;
            wal.sync().await.unwrap();
        }
        let durable = wal.durable_lsn();
        faults.update(|plan| plan.no_space_on_create = true);
        let mut error = None;
        for _ in 0..1000 {
            wal.append_entry(1, index, 1, 0, &[2; 150]).unwrap();
            index += 1;
            if let Err(failure) = wal.sync().await {
                error = Some(failure);
                break;
            }
        }
        let error = error.expect("a rotation hit the full disk");
        assert!(matches!(error, Error::NoSpace { op: IoOp::Create, .. }), "{error:?}");
        assert!(wal.poisoned().is_none());
        assert!(wal.durable_lsn() >= durable);
        faults.update(|plan| plan.no_space_on_create = false);
        let last = wal.last_lsn();
        assert_eq!(wal.sync().await.unwrap(), last);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.group_state(1).unwrap().last_index, index - 1);
        wal.close().await.unwrap();
    });
}

#[test]
fn no_space_on_write_fails_the_sync_without_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, faults) = open_faulty(dir.path()).await;
        wal.append_entry(1, 1, 1, 0, b"one").unwrap();
        wal.sync().await.unwrap();
        faults.update(|plan| plan.no_space_on_write = true);
        wal.append_entry(1, 2, 1, 0, b"two").unwrap();
        assert!(matches!(wal.sync().await, Err(Error::NoSpace { op: IoOp::Write, .. })));
        assert_eq!(wal.durable_lsn(), 1);
        faults.update(|plan| plan.no_space_on_write = false);
        assert_eq!(wal.sync().await.unwrap(), 2);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_short_write_is_retried_and_the_data_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, faults) = open_faulty(dir.path()).await;
        faults.update(|plan| plan.short_writes = 2);
        for index in 1..=100 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 100]).unwrap();
        }
        assert_eq!(wal.sync().await.unwrap(), 100);
        faults.update(|plan| plan.short_writes = 10);
        wal.append_entry(1, 101, 1, 0, &[0; 9000]).unwrap();
        let error = wal.sync().await.unwrap_err();
        assert!(matches!(error, Error::Io { op: IoOp::Write, .. }), "{error:?}");
        faults.update(|plan| plan.short_writes = 0);
        assert_eq!(wal.sync().await.unwrap(), 101);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(wal.entries(1, 1..102, usize::MAX).unwrap().len(), 101);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_power_cut_that_garbles_the_whole_in_flight_block_keeps_every_synced_record() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, faults) = open_faulty(dir.path()).await;
        // Three small synced entries share their block with the next flush's
        // first records, unless every flush starts on a fresh block.
        for index in 1..=3 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 40]).unwrap();
            assert_eq!(wal.sync().await.unwrap(), index);
        }
        faults.update(|plan| plan.failing_syncs = 1);
        wal.append_entry(1, 4, 1, 0, b"in flight, never acknowledged").unwrap();
        assert!(wal.sync().await.is_err());
        drop(wal);
        faults.power_cut_garbling(0, 7).unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        let state = wal.group_state(1).expect("group 1 survives");
        assert!(state.last_index >= 3, "synced entries lost: {state:?}");
        for entry in wal.entries(1, 1..4, usize::MAX).unwrap() {
            assert_eq!(&*entry.payload, &[entry.index as u8; 40][..]);
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn a_flipped_bit_in_a_synced_record_of_the_active_segment_is_corruption_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for index in 1..=30 {
            wal.append_entry(1, index, 1, 0, &[index as u8; 100]).unwrap();
            wal.sync().await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let (segment, path) = coraft_wal::recovery::list_segments(dir.path()).unwrap()[0].clone();
    let recovered = coraft_wal::recovery::recover(dir.path(), coraft_wal::RecoveryMode::Strict, false).unwrap();
    // The 20th entry: its record's offset from the index.
    let offset = recovered.groups.get(1).unwrap().entry(20).unwrap().offset;
    flip_bit(&path, offset + 30, 3);
    for mode in [
        coraft_wal::RecoveryMode::TolerateTornTail,
        coraft_wal::RecoveryMode::Strict,
    ] {
        let config = coraft_wal::Config {
            recovery_mode: mode,
            ..small_config()
        };
        let error = run(|| async { Wal::open(dir.path(), config).await.map(|_| ()).unwrap_err() });
        assert_eq!(error, Error::Corruption { segment, offset }, "{mode:?}");
    }
}

fn flip_bit(path: &std::path::Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ (1 << bit)], offset).unwrap();
}
