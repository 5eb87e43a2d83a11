//! `coraft-bench wal`: the WAL against raw O_DIRECT writes + fdatasync.
//!
//! For each point (payload size, entries per batch) it measures, on the same
//! directory and in the same run, alternating rounds of the physical floor —
//! plain O_DIRECT writes of the batch's size (rounded up to 4 KiB) at
//! sequential offsets of a preallocated file, each followed by fdatasync —
//! and of the WAL: the batch appended and group-committed, with the next
//! batch appended while the previous flush is in flight (two commits
//! outstanding), except the single-entry point, which appends and awaits
//! each sync alone to measure the latency of a lone durable append.
//!
//! The WAL side appends each batch as one `append_entries` call per group
//! (a run of ~1/64 of the batch's entries), as the engine appends a Ready's
//! entries; `--per-entry` appends with one `append_entry` call per entry
//! instead, round robin over the groups (the harness before 2026-11-24).
//!
//! Neither side prepares data inside its timed loop: the floor writes one
//! buffer filled before its clock starts, the WAL appends one payload
//! allocated before its clock starts. `--raw-dsync` makes the floor write
//! with O_DSYNC instead of write + fdatasync (the WAL's own way since it
//! flushes with O_DSYNC), to tell the two kinds of floor apart; `--point N`
//! runs one point only, for profiling.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use coraft_wal::{Config, NewEntry, Wal};
use glommio::io::OpenOptions;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

/// Bytes of a WAL entry record besides its payload (prefix + group, term, index).
const ENTRY_OVERHEAD_BYTES: usize = 36;
/// Size of each preallocated file the raw floor writes into (one per round).
/// Files are deleted only at the end of the run: freeing extents on a disk
/// mounted with `discard` slows later fsyncs and would taint the next side.
const RAW_FILE_BYTES: u64 = 1 << 30;
/// Default measuring time per side of each point.
const SECONDS_PER_SIDE_DEFAULT: f64 = 3.0;
/// Alternating floor/WAL rounds per point.
const ROUNDS: u32 = 3;
/// Groups the entries are spread over (one shard's worth).
const GROUPS: u64 = 64;

/// One measured point.
#[derive(Debug, Clone, Copy)]
struct Point {
    payload: usize,
    entries_per_batch: usize,
}

impl Point {
    fn batch_bytes(&self) -> usize {
        self.entries_per_batch * (self.payload + ENTRY_OVERHEAD_BYTES)
    }
}

const POINTS: [Point; 5] = [
    Point {
        payload: 16,
        entries_per_batch: 1,
    },
    Point {
        payload: 16,
        entries_per_batch: 2_000,
    },
    Point {
        payload: 16,
        entries_per_batch: 20_000,
    },
    Point {
        payload: 1024,
        entries_per_batch: 1_000,
    },
    Point {
        payload: 4096,
        entries_per_batch: 250,
    },
];

struct Options {
    json: bool,
    dir: Option<PathBuf>,
    seconds: f64,
    /// Only this point (its position in [`POINTS`]), for profiling.
    point: Option<usize>,
    /// The floor writes with O_DSYNC instead of write + fdatasync.
    raw_dsync: bool,
    /// The WAL side appends with one `append_entry` call per entry.
    per_entry: bool,
    /// `Config::polled_io` for the WAL; the floor then shares glommio's choice.
    polled_io: bool,
}

/// `coraft-bench wal`: the WAL against raw O_DIRECT writes of the same
/// bytes plus fdatasync, alternated on the same directory, per point.
#[derive(clap::Args, Debug, Clone)]
pub struct WalArgs {
    /// Directory for the WAL and the raw file (default: a temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seconds each side (WAL, raw) runs per round.
    #[arg(long, default_value_t = SECONDS_PER_SIDE_DEFAULT, value_name = "S", value_parser = crate::args::positive_seconds)]
    pub seconds: f64,
    /// Run only this point (0 to 4), for profiling.
    #[arg(long, value_name = "N", value_parser = point)]
    pub point: Option<usize>,
    /// The raw side writes with O_DSYNC instead of write + fdatasync.
    #[arg(long)]
    pub raw_dsync: bool,
    /// The WAL side appends one entry per call instead of batches.
    #[arg(long)]
    pub per_entry: bool,
    /// Polled I/O for the WAL (the raw side then shares glommio's choice).
    #[arg(long)]
    pub polled_io: bool,
    /// Print one JSON line per point instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn point(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(point) if point < POINTS.len() => Ok(point),
        _ => Err(format!("expected a point number from 0 to {}", POINTS.len() - 1)),
    }
}

fn parse(args: WalArgs) -> Options {
    Options {
        json: args.json,
        dir: args.dir,
        seconds: args.seconds,
        point: args.point,
        raw_dsync: args.raw_dsync,
        per_entry: args.per_entry,
        polled_io: args.polled_io,
    }
}

/// Runs the WAL benchmark with the given command-line arguments.
pub fn run(args: WalArgs) -> Result<()> {
    let options = parse(args);
    let temp = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let dir = temp.path().to_path_buf();
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wal-bench")
        .make()
        .map_err(|error| anyhow::anyhow!("glommio executor: {error}"))?;
    let seconds = Duration::from_secs_f64(options.seconds);
    let json = options.json;
    let only = options.point;
    let raw_dsync = options.raw_dsync;
    let per_entry = options.per_entry;
    let polled_io = options.polled_io;
    executor.run(async move {
        // Both sides use the same ring: glommio decides once per thread and
        // device, and the WAL by default keeps its device off the polled one.
        if !polled_io {
            coraft_wal::keep_off_the_poll_ring(&dir).await;
        }
        if !json {
            println!(
                "{:>7} {:>10} {:>12} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>11}",
                "payload",
                "batch_B",
                "entries/s",
                "MB/s",
                "raw_MB/s",
                "ratio",
                "fsyncs/s",
                "p50_us",
                "p99_us",
                "raw_p50_us"
            );
        }
        let round = seconds / ROUNDS;
        for (number, point) in POINTS.iter().enumerate() {
            if only.is_some_and(|only| only != number) {
                continue;
            }
            // Alternate floor and WAL so that drift of a shared, noisy disk
            // hits both sides alike.
            let (mut raw, mut wal) = (Measured::new(), Measured::new());
            for turn in 0..ROUNDS {
                let raw_path = dir.join(format!("raw-{number}-{turn}"));
                raw.add(&measure_raw(&raw_path, *point, round, raw_dsync).await?);
                let wal_dir = dir.join(format!("wal-{number}-{turn}"));
                wal.add(&measure_wal(&wal_dir, *point, round, per_entry, polled_io).await?);
            }
            report(json, *point, &raw, &wal);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// What one side of a point measured.
struct Measured {
    entries: u64,
    bytes: u64,
    fsyncs: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            entries: 0,
            bytes: 0,
            fsyncs: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        }
    }

    fn add(&mut self, other: &Measured) {
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.fsyncs += other.fsyncs;
        self.elapsed += other.elapsed;
        self.latency_us.add(&other.latency_us).expect("same histogram bounds");
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }
}

async fn measure_raw(path: &Path, point: Point, seconds: Duration, dsync: bool) -> Result<Measured> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
        .dma_open(path)
        .await
        .map_err(std::io::Error::from)?;
    file.pre_allocate(RAW_FILE_BYTES, false)
        .await
        .map_err(std::io::Error::from)?;
    let write_bytes = point.batch_bytes().div_ceil(4096) * 4096;
    // One buffer, filled before the clock starts and written again and again:
    // the floor is the disk's, not the cost of preparing a megabyte per write.
    let mut buffer = file.alloc_dma_buffer(write_bytes);
    buffer.as_bytes_mut().fill(0x5a);
    let buffer = Rc::new(buffer);
    let mut measured = Measured::new();
    let mut offset = 0u64;
    let start = Instant::now();
    while start.elapsed() < seconds && offset + (write_bytes as u64) < RAW_FILE_BYTES {
        let began = Instant::now();
        file.write_rc_at(buffer.clone(), offset)
            .await
            .map_err(std::io::Error::from)?;
        if !dsync {
            file.fdatasync().await.map_err(std::io::Error::from)?;
        }
        measured
            .latency_us
            .saturating_record(began.elapsed().as_micros() as u64);
        offset += write_bytes as u64;
        measured.fsyncs += 1;
        measured.entries += point.entries_per_batch as u64;
        measured.bytes += point.batch_bytes() as u64;
    }
    measured.elapsed = start.elapsed();
    drop(buffer);
    file.close().await.map_err(std::io::Error::from)?;
    Ok(measured)
}

async fn measure_wal(
    dir: &Path,
    point: Point,
    seconds: Duration,
    per_entry: bool,
    polled_io: bool,
) -> Result<Measured> {
    let config = Config {
        polled_io,
        ..Config::default()
    };
    let (wal, _) = Wal::open(dir, config).await?;
    let wal = Rc::new(wal);
    let payload = vec![0x5a; point.payload];
    let run = vec![
        NewEntry {
            term: 1,
            entry_type: 0,
            payload: &payload[..],
        };
        point.entries_per_batch.div_ceil(GROUPS as usize)
    ];
    let mut next_index = vec![1u64; GROUPS as usize];
    let mut append_batch = |wal: &Wal| -> Result<()> {
        if per_entry {
            for entry in 0..point.entries_per_batch {
                let group = entry as u64 % GROUPS;
                let index = &mut next_index[group as usize];
                wal.append_entry(group, *index, 1, 0, &payload)?;
                *index += 1;
            }
            return Ok(());
        }
        for group in 0..GROUPS.min(point.entries_per_batch as u64) {
            // The entries `e` of the batch with `e % GROUPS == group`.
            let count = (point.entries_per_batch - group as usize).div_ceil(GROUPS as usize);
            let index = &mut next_index[group as usize];
            wal.append_entries(group, *index, &run[..count])?;
            *index += count as u64;
        }
        Ok(())
    };
    let mut measured = Measured::new();
    let start = Instant::now();
    if point.entries_per_batch == 1 {
        while start.elapsed() < seconds {
            let began = Instant::now();
            append_batch(&wal)?;
            wal.sync().await?;
            measured
                .latency_us
                .saturating_record(began.elapsed().as_micros() as u64);
            measured.entries += 1;
        }
    } else {
        // Two commits outstanding: the next batch is appended while the
        // previous flush is in flight, as the engine's loop does.
        let mut previous = None;
        while start.elapsed() < seconds {
            let began = Instant::now();
            append_batch(&wal)?;
            let commit = wal.sync();
            if let Some((began, commit)) = previous.replace((began, commit)) {
                commit.await?;
                measured
                    .latency_us
                    .saturating_record(Instant::now().duration_since(began).as_micros() as u64);
                measured.entries += point.entries_per_batch as u64;
            }
        }
        if let Some((began, commit)) = previous {
            commit.await?;
            measured
                .latency_us
                .saturating_record(began.elapsed().as_micros() as u64);
            measured.entries += point.entries_per_batch as u64;
        }
    }
    measured.elapsed = start.elapsed();
    measured.bytes = measured.entries * (point.payload + ENTRY_OVERHEAD_BYTES) as u64;
    measured.fsyncs = wal.stats().flushes;
    let wal = Rc::try_unwrap(wal).map_err(|_| anyhow::anyhow!("WAL still shared"))?;
    wal.close().await?;
    Ok(measured)
}

fn report(json: bool, point: Point, raw: &Measured, wal: &Measured) {
    const MB: f64 = 1e6;
    let mb_per_s = wal.per_second(wal.bytes) / MB;
    let raw_mb_per_s = raw.per_second(raw.bytes) / MB;
    let ratio = mb_per_s / raw_mb_per_s;
    let entries_per_s = wal.per_second(wal.entries);
    let fsyncs_per_s = wal.per_second(wal.fsyncs);
    let flush_p50_us = wal.latency_us.value_at_quantile(0.5);
    let flush_p99_us = wal.latency_us.value_at_quantile(0.99);
    let raw_fsync_p50_us = raw.latency_us.value_at_quantile(0.5);
    if json {
        let line = serde_json::json!({
            "payload": point.payload,
            "batch_bytes": point.batch_bytes(),
            "entries_per_s": entries_per_s.round(),
            "mb_per_s": (mb_per_s * 100.0).round() / 100.0,
            "raw_mb_per_s": (raw_mb_per_s * 100.0).round() / 100.0,
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "fsyncs_per_s": fsyncs_per_s.round(),
            "flush_p50_us": flush_p50_us,
            "flush_p99_us": flush_p99_us,
            "raw_fsync_p50_us": raw_fsync_p50_us,
        });
        println!("{line}");
    } else {
        println!(
            "{:>7} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>6.3} {:>9.0} {:>9} {:>9} {:>11}",
            point.payload,
            point.batch_bytes(),
            entries_per_s,
            mb_per_s,
            raw_mb_per_s,
            ratio,
            fsyncs_per_s,
            flush_p50_us,
            flush_p99_us,
            raw_fsync_p50_us
        );
    }
}
