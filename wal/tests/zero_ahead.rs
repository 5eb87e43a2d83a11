//! Zeroing ahead: an idle flusher turns the preallocated (unwritten) blocks
//! past the log's end into written zeros, synced, so that later small
//! flushes overwrite blocks in place. Checked on the real file system with
//! FIEMAP, which reports unwritten extents.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{run, small_config};
use coraft_wal::{Config, DmaFs, Error, Faults, FaultyFs, Wal, ZERO_CHUNK_BYTES};

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
const EXTENTS_MAX: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_MAX],
}

/// Bytes of `[from, to)` of `path` that lie in unwritten extents.
fn unwritten_bytes(path: &Path, from: u64, to: u64) -> u64 {
    let file = std::fs::File::open(path).unwrap();
    let mut map = Fiemap {
        start: from,
        length: to - from,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: EXTENTS_MAX as u32,
        reserved: 0,
        extents: [FiemapExtent::default(); EXTENTS_MAX],
    };
    // SAFETY: `map` is a valid fiemap with room for `extent_count` extents.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
    assert_eq!(
        result,
        0,
        "FIEMAP on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    assert!((map.mapped_extents as usize) < EXTENTS_MAX, "more extents than fit");
    map.extents[..map.mapped_extents as usize]
        .iter()
        .filter(|extent| extent.flags & FIEMAP_EXTENT_UNWRITTEN != 0)
        .map(|extent| {
            let start = extent.logical.max(from);
            let end = (extent.logical + extent.length).min(to);
            end.saturating_sub(start)
        })
        .sum()
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = coraft_wal::recovery::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.pop().unwrap()
}

fn config(zero_ahead_bytes: u64) -> Config {
    Config {
        segment_bytes: 4 << 20,
        zero_ahead_bytes,
        ..small_config()
    }
}

/// Waits (yielding to the flusher) until `done` or a generous deadline.
async fn wait_for(wal: &Wal, done: impl Fn(&Wal) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(wal) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn an_idle_flusher_writes_zeros_ahead_of_the_log_and_not_beyond_the_distance() {
    let ahead: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), config(ahead)).await.unwrap();
        wal.append_entry(1, 1, 1, 0, b"first").unwrap();
        wal.sync().await.unwrap();
        wait_for(&wal, |wal| wal.stats().zeroed_bytes >= ahead).await;
        let stats = wal.stats();
        // The log ends inside the first 8 KiB (header block, one record
        // block): the zeros start at the next block and stop `ahead` later.
        assert_eq!(stats.zeroed_bytes, ahead, "{stats:?}");
        assert!(stats.zeroed_bytes as usize > ZERO_CHUNK_BYTES, "several steps");
        let segment = only_segment(dir.path());
        assert_eq!(unwritten_bytes(&segment, 8 << 10, (8 << 10) + ahead), 0);
        // Beyond the distance the preallocation is still unwritten.
        let rest = unwritten_bytes(&segment, (8 << 10) + ahead, 4 << 20);
        assert_eq!(rest, (4 << 20) - (8 << 10) - ahead);

        // The log moves on; the zeros follow it, and what was written reads back.
        for index in 2..2000 {
            wal.append_entry(1, index, 1, 0, &[7; 500]).unwrap();
            if index % 50 == 0 {
                wal.sync().await.unwrap();
            }
        }
        wal.sync().await.unwrap();
        let zeroed_before = wal.stats().zeroed_bytes;
        wait_for(&wal, |wal| wal.stats().zeroed_bytes > zeroed_before).await;
        assert!(wal.stats().zeroed_bytes > zeroed_before);
        wal.close().await.unwrap();
    });
    run(|| async {
        let (wal, report) = Wal::open(dir.path(), config(ahead)).await.unwrap();
        assert!(report.torn_tail.is_none(), "{report:?}");
        assert_eq!(wal.group_state(1).unwrap().last_index, 1999);
        assert_eq!(&*wal.entries(1, 1..2, usize::MAX).unwrap()[0].payload, b"first");
        assert_eq!(&*wal.entries(1, 1999..2000, usize::MAX).unwrap()[0].payload, &[7; 500]);
        wal.close().await.unwrap();
    });
}

#[test]
fn with_zeroing_ahead_off_the_preallocation_stays_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (wal, _) = Wal::open(dir.path(), config(0)).await.unwrap();
        wal.append_entry(1, 1, 1, 0, b"first").unwrap();
        wal.sync().await.unwrap();
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(wal.stats().zeroed_bytes, 0);
        let segment = only_segment(dir.path());
        assert_eq!(unwritten_bytes(&segment, 8 << 10, 4 << 20), (4 << 20) - (8 << 10));
        wal.close().await.unwrap();
    });
}

#[test]
fn a_failed_sync_of_a_zeroing_step_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let (fs, faults): (FaultyFs, Faults) = FaultyFs::new(Rc::new(DmaFs::default()));
        let (wal, _) = Wal::open_with_fs(dir.path(), config(1 << 20), Rc::new(fs))
            .await
            .unwrap();
        wal.append_entry(1, 1, 1, 0, b"acked").unwrap();
        wal.sync().await.unwrap();
        // Every sync fails from now on: the next zeroing step's does.
        faults.update(|plan| plan.failing_syncs = usize::MAX);
        wait_for(&wal, |wal| wal.poisoned().is_some()).await;
        assert!(matches!(wal.poisoned(), Some(Error::Poisoned { errno: Some(5), .. })));
        assert_eq!(wal.durable_lsn(), 1);
        assert!(matches!(
            wal.append_entry(1, 2, 1, 0, b"x"),
            Err(Error::Poisoned { .. })
        ));
    });
}

#[test]
fn a_log_of_large_flushes_is_not_zeroed_ahead_until_its_flushes_are_small_again() {
    let dir = tempfile::tempdir().unwrap();
    run(|| async {
        let config = Config {
            batch_bytes_max: 1 << 20,
            ..config(1 << 20)
        };
        let (wal, _) = Wal::open(dir.path(), config).await.unwrap();
        for index in 1..=200 {
            wal.append_entry(1, index, 1, 0, &[3; 1024]).unwrap();
        }
        wal.sync().await.unwrap();
        assert_eq!(wal.stats().flushes, 1);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(wal.stats().zeroed_bytes, 0, "after a 200 KiB flush");
        wal.append_entry(1, 201, 1, 0, b"small").unwrap();
        wal.sync().await.unwrap();
        wait_for(&wal, |wal| wal.stats().zeroed_bytes >= 1 << 20).await;
        assert_eq!(wal.stats().zeroed_bytes, 1 << 20);
        wal.close().await.unwrap();
    });
}
