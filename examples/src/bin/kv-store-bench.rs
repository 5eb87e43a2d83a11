//! `kv-store-bench`: what each store behind the KV example costs, without
//! Raft around it (`docs/examples.md`, "Which store"): fills a store
//! through `on_apply` in batches as the engine hands them, then writes a
//! snapshot to a file and loads it into a fresh store, and prints writes/s,
//! the snapshot's time and size, and the process's resident memory.
//!
//! ```text
//! kv-store-bench --store redb --keys 1000000 --dir /tmp/kv-bench
//! ```

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use coraft::api::{Command, StateMachine};
use coraft::raft::{LogIndex, NodeId, Term};
use coraft_examples::kv::{KvStore, KvWrite};
use coraft_examples::store::{open_database_with, RedbKv, CACHE_BYTES, FLUSH_INTERVAL};

#[derive(Parser, Debug)]
#[command(name = "kv-store-bench", about = "Measures the KV example's stores outside Raft")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum)]
    store: Store,
    /// Keys to put (distinct, 16 bytes each).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keys: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    value_bytes: u32,
    /// Commands per `on_apply` batch.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    batch: u64,
    /// An empty or missing directory for the store and snapshot files.
    #[arg(long)]
    dir: PathBuf,
    /// redb's page cache, MiB (the store's `CACHE_BYTES` by default; 1024
    /// is redb's own default).
    #[arg(long, default_value_t = (CACHE_BYTES >> 20) as u64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    redb_cache_mib: u64,
    /// How often the redb store's file is synced in the background, ms (the
    /// store's `FLUSH_INTERVAL` by default; 0: never).
    #[arg(long, default_value_t = FLUSH_INTERVAL.as_millis() as u64)]
    redb_flush_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    Memory,
    Redb,
}

fn make(args: &Args, dir: &std::path::Path) -> Result<Box<dyn StateMachine>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(match args.store {
        Store::Memory => Box::new(KvStore::new(NodeId(1))),
        Store::Redb => {
            let flush = (args.redb_flush_ms > 0).then(|| Duration::from_millis(args.redb_flush_ms));
            let database = open_database_with(dir, (args.redb_cache_mib << 20) as usize, flush)?;
            Box::new(RedbKv::open(NodeId(1), database)?)
        }
    })
}

/// (resident, peak resident) MiB of this process.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.dir.exists() && std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!("--dir {} is not empty", args.dir.display());
    }
    let store_dir = args.dir.join("store");
    let mut store = make(&args, &store_dir)?;
    let value = vec![b'v'; args.value_bytes as usize];
    let started = Instant::now();
    let mut index = 0u64;
    while index < args.keys {
        let end = (index + args.batch).min(args.keys);
        let commands: Vec<Vec<u8>> = (index..end)
            .map(|i| {
                KvWrite::Put {
                    key: format!("key-{i:012}").into_bytes(),
                    value: value.clone(),
                }
                .encode()
            })
            .collect();
        let mut batch = commands.iter().enumerate().map(|(n, data)| Command {
            index: LogIndex(index + n as u64 + 1),
            term: Term(1),
            data,
        });
        store.on_apply(&mut batch);
        index = end;
    }
    let fill = started.elapsed();
    let (rss, peak) = rss_mib();
    println!(
        "fill: {} keys of {} value bytes in {:.2} s: {:.0} writes/s; RSS {rss} MiB (peak {peak} MiB); store files {} MiB",
        args.keys,
        args.value_bytes,
        fill.as_secs_f64(),
        args.keys as f64 / fill.as_secs_f64(),
        dir_bytes(&store_dir) >> 20
    );

    let path = args.dir.join("snapshot");
    let started = Instant::now();
    let mut view = store.snapshot_view().context("the store offers a snapshot view")?;
    let taken = started.elapsed();
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = BufWriter::new(file);
    view.write_to(&mut writer)?;
    writer.flush()?;
    writer.get_ref().sync_all()?;
    drop(view);
    let saved = started.elapsed();
    let (_, peak) = rss_mib();
    println!(
        "snapshot: view taken in {:.1} ms, written and synced in {:.2} s, {} MiB; peak RSS {peak} MiB",
        taken.as_secs_f64() * 1e3,
        saved.as_secs_f64(),
        std::fs::metadata(&path)?.len() >> 20
    );
    drop(store);

    let mut fresh = make(&args, &args.dir.join("loaded"))?;
    let started = Instant::now();
    let file = std::fs::File::open(&path)?;
    fresh.on_snapshot_load(&mut BufReader::new(file))?;
    let (rss, peak) = rss_mib();
    println!(
        "load: {:.2} s into a fresh store; RSS {rss} MiB (peak {peak} MiB)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
