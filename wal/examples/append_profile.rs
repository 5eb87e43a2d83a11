//! The synchronous append path alone, for `perf stat`, `perf record` and
//! `valgrind --tool=callgrind`: 16-byte entries over 64 groups, in batches
//! of 20,000 (a 1 MiB flush), as `coraft-bench wal --point 2` appends them:
//! one `append_entries` call per group and batch (a run of ~312 entries, as
//! the engine appends a Ready's entries), or with `per-entry` as a second
//! argument one `append_entry` call per entry, round robin over the groups.
//!
//! The WAL writes through a file system that completes every write and sync
//! at once without touching a disk, so the process never waits for I/O (and
//! glommio never busy-polls a ring): instruction counts of a run are
//! repeatable on a loaded machine, and a profile shows the append path and
//! the flusher's own CPU work only. Nothing here is durable.
//!
//! ```sh
//! cargo build --release -p coraft-wal --example append_profile
//! perf stat -e instructions:u target/release/examples/append_profile 50
//! perf stat -e instructions:u target/release/examples/append_profile 50 per-entry
//! ```

use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use coraft_wal::format::align_up;
use coraft_wal::fs::LocalBoxFuture;
use coraft_wal::{Config, FileSystem, NewEntry, SegmentFile, Wal};
use glommio::{LocalExecutorBuilder, Placement};

const ENTRIES_PER_BATCH: u64 = 20_000;
const GROUPS: u64 = 64;
const PAYLOAD_BYTES: usize = 16;
const BATCHES_DEFAULT: u64 = 50;

/// Segment files that accept every write and sync at once.
struct DiscardingSegment;

impl SegmentFile for DiscardingSegment {
    fn write_at<'a>(&'a self, _offset: u64, data: &'a [u8]) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(async move { Ok(align_up(data.len() as u64) as usize) })
    }

    fn sync_data(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A file system of [`DiscardingSegment`]s.
struct DiscardingFs;

impl FileSystem for DiscardingFs {
    fn create_segment<'a>(
        &'a self,
        _path: &'a Path,
        _header: &'a [u8],
        _segment_bytes: u64,
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async { Ok(Rc::new(DiscardingSegment) as Rc<dyn SegmentFile>) })
    }

    fn open_segment<'a>(&'a self, _path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async { Ok(Rc::new(DiscardingSegment) as Rc<dyn SegmentFile>) })
    }

    fn sync_dir<'a>(&'a self, _dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, _path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn main() -> anyhow::Result<()> {
    let batches: u64 = match std::env::args().nth(1) {
        Some(count) => count.parse()?,
        None => BATCHES_DEFAULT,
    };
    let per_entry = match std::env::args().nth(2).as_deref() {
        None => false,
        Some("per-entry") => true,
        Some(other) => anyhow::bail!("unknown mode `{other}` (try `per-entry`)"),
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_path_buf();
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .map_err(|error| anyhow::anyhow!("glommio executor: {error}"))?;
    executor.run(async move {
        let (wal, _) = Wal::open_with_fs(&path, Config::default(), Rc::new(DiscardingFs)).await?;
        let payload = [0x5au8; PAYLOAD_BYTES];
        let mut next_index = [1u64; GROUPS as usize];
        let run = vec![
            NewEntry {
                term: 1,
                entry_type: 0,
                payload: &payload[..],
            };
            ENTRIES_PER_BATCH.div_ceil(GROUPS) as usize
        ];
        let start = Instant::now();
        // Two commits outstanding, as `coraft-bench wal` runs them.
        let mut previous = None;
        for _ in 0..batches {
            if per_entry {
                for entry in 0..ENTRIES_PER_BATCH {
                    let group = entry % GROUPS;
                    let index = &mut next_index[group as usize];
                    wal.append_entry(group, *index, 1, 0, &payload)?;
                    *index += 1;
                }
            } else {
                for group in 0..GROUPS {
                    // Group g gets the entries e < ENTRIES_PER_BATCH with e % GROUPS == g.
                    let count = (ENTRIES_PER_BATCH - group).div_ceil(GROUPS) as usize;
                    let index = &mut next_index[group as usize];
                    wal.append_entries(group, *index, &run[..count])?;
                    *index += count as u64;
                }
            }
            if let Some(commit) = previous.replace(wal.sync()) {
                commit.await?;
            }
        }
        if let Some(commit) = previous {
            commit.await?;
        }
        let elapsed = start.elapsed();
        let entries = batches * ENTRIES_PER_BATCH;
        println!(
            "{entries} entries in {batches} batches: {:.1} ns/entry (wall, appends and flushes)",
            elapsed.as_nanos() as f64 / entries as f64
        );
        wal.close().await?;
        Ok::<_, anyhow::Error>(())
    })
}
