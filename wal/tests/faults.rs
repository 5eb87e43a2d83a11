//! Injected faults: fsync errors poison the WAL, ENOSPC is a clear error that
//! loses nothing acknowledged, short writes are retried.

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
