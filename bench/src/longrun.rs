//! `coraft-bench longrun`: does a cluster with snapshots on stay flat?
//!
//! A 3-node cluster (real TCP, real WALs with fdatasync and snapshot
//! stores in a temp dir) runs one or more groups of the command counter
//! under closed-loop writers for `--duration` seconds, with the snapshot
//! policy given on the command line. The nodes run in this process (the
//! writers use the leaders' group handles), or with `--processes` as three
//! `coraft-node` processes (the writers speak the client protocol, as the
//! cluster benchmark's `--processes` does: [`crate::shape`]). Every
//! `--sample-every` seconds it samples resident memory (this process's,
//! which the embedded nodes share, or each node process's from
//! `/proc/PID/status`), the bytes each node's data dir takes on disk (WAL
//! segments and snapshots, as allocated), and the writes/s and p99 of that
//! window. After the warm-up
//! the first quarter of the windows is held against the last quarter:
//! memory and disk are flat when the late windows' highest is within the
//! tolerance of the early ones' (each node process's too), writes/s when the late mean is within 10 %
//! of the early one, p99 when the late median is within 2x. `--no-snapshots` runs the same load with the
//! policy off, the curve to compare with.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::install::embedded_node_options;
use crate::machine::Machine;

pub(crate) const CLUSTER_ID: u64 = 0xC0_4A_F9;
/// Nodes of the cluster.
pub(crate) const NODES: usize = 3;
/// The most `--clients` (one thread each).
const CLIENTS_MAX: usize = 256;
/// The most `--groups`.
const GROUPS_MAX: u64 = 1024;
/// The most samples one run keeps (a sample every second for a day).
const SAMPLES_MAX: u64 = 86_400;
/// The smallest `--wal-segment-bytes`: room for one record of the WAL's
/// largest (4 MiB) after the segment's header.
const SEGMENT_BYTES_MIN: u64 = 8 << 20;
/// A write's latency above this is recorded as this (60 s).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Writes/s of the last window may differ from the first by this share.
const WRITES_TOLERANCE: f64 = 0.10;
/// The last window's p99 may be this many times the first's.
const P99_TOLERANCE_FACTOR: f64 = 2.0;

/// `coraft-bench longrun`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct LongrunArgs {
    /// Seconds measured after the warm-up.
    #[arg(long, default_value_t = 600, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub duration: u64,
    /// Seconds of load before the first window counts (memory and disk grow
    /// until the first snapshots and compactions).
    #[arg(long, default_value_t = 30, value_name = "S", value_parser = crate::args::seconds)]
    pub warmup: u64,
    /// Seconds per sample window.
    #[arg(long, default_value_t = 10, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub sample_every: u64,
    /// Closed-loop writers (one thread each, through the leader's group
    /// handle), 1 to 256.
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clients)]
    pub clients: usize,
    /// Raft groups; writers are spread over them round-robin, 1 to 1024.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = groups)]
    pub groups: u64,
    /// Bytes of each write's command, 0 to 65536.
    #[arg(long, default_value_t = 256, value_name = "BYTES", value_parser = crate::args::payload_bytes)]
    pub payload: usize,
    /// Snapshot after this many entries applied since the last one (0: not by entries).
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub snapshot_after_entries: u64,
    /// Snapshot after this many log bytes applied since the last one (0: not by bytes).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub snapshot_after_log_bytes: u64,
    /// Snapshot after this many milliseconds if anything was applied (0: not by time).
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub snapshot_interval_ms: u64,
    /// Entries kept below a snapshot for slow followers.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub log_tail_entries: u64,
    /// Run with the snapshot policy off (the curve to compare with).
    #[arg(long)]
    pub no_snapshots: bool,
    /// Bytes of each WAL segment file (compaction deletes whole segments),
    /// a multiple of 4096 from 8 MiB (a segment holds one 4 MiB record).
    #[arg(long, default_value_t = coraft_wal::config::SEGMENT_BYTES_DEFAULT, value_name = "BYTES", value_parser = segment_bytes)]
    pub wal_segment_bytes: u64,
    /// Memory and disk are flat when the last window is at most this share
    /// above the first (disk also gets one segment per node of slack: it
    /// moves in whole segments).
    #[arg(long, default_value_t = 0.25, value_name = "FRACTION", value_parser = crate::args::fraction)]
    pub flat_tolerance: f64,
    /// Run the nodes as three `coraft-node` processes (started and stopped
    /// by the harness) and sample each one's memory.
    #[arg(long)]
    pub processes: bool,
    /// With --processes: the coraft-node binary [default: beside coraft-bench].
    #[arg(long, value_name = "PATH", requires = "processes")]
    pub node_binary: Option<PathBuf>,
    /// With --processes: S seconds after the load starts, move every
    /// group's leadership to the next node (the admin protocol's transfer),
    /// to see the writers follow a leader change.
    #[arg(long, value_name = "S", requires = "processes", value_parser = crate::args::seconds_at_least_one)]
    pub transfer_leaders_at: Option<u64>,
    /// Print one JSON object (with every sample) instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn clients(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=CLIENTS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of clients from 1 to {CLIENTS_MAX} (CLIENTS_MAX)"
        )),
    }
}

fn groups(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if (1..=GROUPS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of groups from 1 to {GROUPS_MAX} (GROUPS_MAX)"
        )),
    }
}

fn segment_bytes(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if n >= SEGMENT_BYTES_MIN && n % 4096 == 0 && n <= coraft_tuning::limits::SEGMENT_BYTES_LIMIT => Ok(n),
        _ => Err(format!(
            "expected bytes, a multiple of 4096 from {SEGMENT_BYTES_MIN} (SEGMENT_BYTES_MIN) to {}",
            coraft_tuning::limits::SEGMENT_BYTES_LIMIT
        )),
    }
}

/// One sample window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started, at the window's end.
    pub at_s: f64,
    /// Whether the window ended inside the warm-up.
    pub warmup: bool,
    /// Resident memory in bytes: of this process (all three nodes), or
    /// with `--processes` the sum of the node processes'.
    pub rss_bytes: u64,
    /// With `--processes`: each node process's resident memory (empty
    /// otherwise).
    pub rss_bytes_per_node: Vec<u64>,
    /// Bytes allocated on disk under each node's data dir (WAL + snapshots).
    pub disk_bytes: Vec<u64>,
    /// Of which under each node's `snapshots` directories.
    pub snapshot_bytes: Vec<u64>,
    pub writes_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
    /// Snapshots taken so far, over every node and group (the group
    /// handle's counters: embedded nodes only).
    pub snapshots_taken: Option<u64>,
    /// The lowest first log index any node's group holds in memory
    /// (embedded nodes only).
    pub first_index_min: Option<u64>,
    /// The lowest index of the newest snapshot of any node's group (0: a
    /// group somewhere has none yet).
    pub snapshot_index_min: u64,
}

/// The verdict of the early windows against the late ones: the first and
/// the last quarter of the windows after the warm-up (at least one each), so
/// that one noisy window on a shared machine does not decide.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub memory_flat: bool,
    pub disk_flat: bool,
    pub writes_within_10_percent: bool,
    pub p99_within_2x: bool,
    /// Windows in each quarter.
    pub windows: usize,
    pub early: Summary,
    pub late: Summary,
}

/// A quarter of the run's windows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The highest resident memory of the windows.
    pub rss_bytes: u64,
    /// The highest resident memory of each node process over the windows
    /// (`--processes`).
    pub rss_bytes_per_node: Vec<u64>,
    /// The highest disk use of each node over the windows.
    pub disk_bytes: Vec<u64>,
    /// The mean of the windows' writes/s.
    pub writes_per_s: f64,
    /// The median of the windows' p99.
    pub p99_us: u64,
}

impl Summary {
    fn of(samples: &[&Sample]) -> Summary {
        let nodes = samples.first().map_or(0, |s| s.disk_bytes.len());
        let processes = samples.first().map_or(0, |s| s.rss_bytes_per_node.len());
        let mut p99: Vec<u64> = samples.iter().map(|s| s.p99_us).collect();
        p99.sort_unstable();
        Summary {
            rss_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            rss_bytes_per_node: (0..processes)
                .map(|n| samples.iter().map(|s| s.rss_bytes_per_node[n]).max().unwrap_or(0))
                .collect(),
            disk_bytes: (0..nodes)
                .map(|n| samples.iter().map(|s| s.disk_bytes[n]).max().unwrap_or(0))
                .collect(),
            writes_per_s: samples.iter().map(|s| s.writes_per_s).sum::<f64>() / samples.len().max(1) as f64,
            p99_us: p99.get(p99.len() / 2).copied().unwrap_or(0),
        }
    }
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: &'static str,
    pub bench: &'static str,
    /// `embedded` or `processes`.
    pub shape: &'static str,
    pub snapshots: bool,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub sample_every_s: u64,
    pub clients: usize,
    pub groups: u64,
    pub payload: usize,
    pub snapshot_after_entries: u64,
    pub snapshot_after_log_bytes: u64,
    pub snapshot_interval_ms: u64,
    pub log_tail_entries: u64,
    pub wal_segment_bytes: u64,
    pub flat_tolerance: f64,
    pub writes: u64,
    /// Command bytes acknowledged (each node's log holds them all).
    pub bytes_written: u64,
    pub errors: u64,
    pub samples: Vec<Sample>,
    pub verdict: Option<Verdict>,
    /// With `--transfer-leaders-at`: the leader change and what it cost.
    pub leader_change: Option<LeaderChange>,
    pub load_average: String,
    pub machine: Machine,
    pub command: String,
}

pub use crate::workload::LeaderChange;

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

/// A process's resident memory (this one's without `pid`), from
/// `/proc/PID/status`.
pub fn rss_bytes(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("{path} has no VmRSS line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("{path}: unreadable VmRSS line {line:?}"))?;
    Ok(kib * 1024)
}

/// Bytes allocated on disk under `dir` (like `du`), and of those under any
/// directory named `snapshots`. Files removed while walking are skipped.
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    fn walk(dir: &Path, in_snapshots: bool, total: &mut u64, snapshots: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let inside = in_snapshots || entry.file_name() == "snapshots";
                walk(&entry.path(), inside, total, snapshots);
            } else {
                let bytes = meta.blocks() * 512;
                *total += bytes;
                if in_snapshots {
                    *snapshots += bytes;
                }
            }
        }
    }
    let (mut total, mut snapshots) = (0, 0);
    walk(dir, false, &mut total, &mut snapshots);
    (total, snapshots)
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` says them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn options(args: &LongrunArgs, root: &Path, peers: &[PeerSpec], id: NodeId, groups: &[GroupId]) -> NodeOptions {
    let snapshot = if args.no_snapshots {
        SnapshotPolicy {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            log_tail_entries: args.log_tail_entries,
            ..SnapshotPolicy::default()
        }
    } else {
        SnapshotPolicy {
            after_entries: args.snapshot_after_entries,
            after_log_bytes: args.snapshot_after_log_bytes,
            interval: Duration::from_millis(args.snapshot_interval_ms),
            log_tail_entries: args.log_tail_entries,
            ..SnapshotPolicy::default()
        }
    };
    NodeOptions {
        wal_segment_bytes: args.wal_segment_bytes,
        wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT.min(args.wal_segment_bytes),
        ..embedded_node_options(
            CLUSTER_ID,
            id,
            peers.to_vec(),
            node_dir(root, id),
            groups.to_vec(),
            snapshot,
        )
    }
}

pub(crate) fn node_dir(root: &Path, id: NodeId) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// One writer's shared state: the histogram of the current window.
struct WriterWindow {
    latency_us: Mutex<Histogram<u64>>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

/// Runs the cluster with the load and the sampling; returns the report.
pub fn measure(args: &LongrunArgs, root: &Path) -> Result<Report> {
    ensure!(
        (args.warmup + args.duration) / args.sample_every <= SAMPLES_MAX,
        "--duration/--sample-every: at most {SAMPLES_MAX} samples (SAMPLES_MAX)"
    );
    ensure!(
        args.no_snapshots
            || args.snapshot_after_entries > 0
            || args.snapshot_after_log_bytes > 0
            || args.snapshot_interval_ms > 0,
        "every snapshot trigger is 0: set one of --snapshot-after-entries, --snapshot-after-log-bytes, \
         --snapshot-interval-ms, or say --no-snapshots"
    );
    if args.processes {
        return crate::longrun_processes::measure(args, root);
    }
    let addresses = coraft::ports::free_loopback_addresses(NODES)?;
    let peers: Vec<PeerSpec> = (0..NODES)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: vec![addresses[n]],
        })
        .collect();
    let groups: Vec<GroupId> = (1..=args.groups).map(GroupId).collect();
    let factory: StateMachineFactory = Arc::new(|_| Box::new(CommandCounter::default()));
    let mut nodes = Vec::new();
    for peer in &peers {
        nodes.push(
            Node::start(options(args, root, &peers, peer.id, &groups), factory.clone())
                .map_err(|e| anyhow!("starting node {}: {e}", peer.id))?,
        );
    }
    let nodes = Arc::new(nodes);
    let result = drive(args, root, &nodes, &groups);
    match Arc::try_unwrap(nodes) {
        Ok(nodes) => {
            for node in nodes {
                node.shutdown();
            }
        }
        Err(_) => eprintln!("longrun: a writer still holds the nodes; they stop when it ends"),
    }
    result
}

fn drive(args: &LongrunArgs, root: &Path, nodes: &Arc<Vec<Node>>, groups: &[GroupId]) -> Result<Report> {
    // A leader in every group before the load starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut leaders = vec![None; groups.len()];
    while leaders.iter().any(Option::is_none) {
        ensure!(
            Instant::now() < deadline,
            "not every group elected a leader within 60 s"
        );
        for (g, group) in groups.iter().enumerate() {
            for (n, node) in nodes.iter().enumerate() {
                let status = block(node.group(*group).status()).map_err(|e| anyhow!("status: {e}"))?;
                if status.role == Role::Leader {
                    leaders[g] = Some(n);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let windows: Vec<Arc<WriterWindow>> = (0..args.clients)
        .map(|_| {
            Arc::new(WriterWindow {
                latency_us: Mutex::new(new_histogram()),
            })
        })
        .collect();
    let writers: Vec<_> = (0..args.clients)
        .map(|w| {
            let group_index = w % groups.len();
            let group = groups[group_index];
            let leader = Arc::new(AtomicUsize::new(leaders[group_index].expect("elected")));
            let (nodes, stop, writes, errors, window) = (
                nodes.clone(),
                stop.clone(),
                writes.clone(),
                errors.clone(),
                windows[w].clone(),
            );
            let payload = args.payload;
            std::thread::spawn(move || {
                let mut command = vec![w as u8; payload];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A varying command, so nothing can be deduplicated.
                    if payload >= 8 {
                        command[..8].copy_from_slice(&n.to_le_bytes());
                    }
                    n += 1;
                    let at = leader.load(Ordering::Relaxed);
                    let started = Instant::now();
                    match block(nodes[at].group(group).apply(command.clone())) {
                        Ok(_) => {
                            let us = (started.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
                            window.latency_us.lock().expect("not poisoned").record(us).ok();
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            // Not the leader (any more), or a timeout: try the next node.
                            errors.fetch_add(1, Ordering::Relaxed);
                            leader.store((at + 1) % nodes.len(), Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();

    let take_window = || {
        let mut window = new_histogram();
        for writer in &windows {
            let mut histogram = writer.latency_us.lock().expect("not poisoned");
            window.add(&*histogram).ok();
            histogram.reset();
        }
        (window, writes.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
    };
    let mut probe_nodes = || -> Result<NodeFigures> {
        let (mut snapshots_taken, mut first_index_min, mut snapshot_index_min) = (0, u64::MAX, u64::MAX);
        for node in nodes.iter() {
            for group in groups {
                let status = block(node.group(*group).status())
                    .map_err(|e| anyhow!("status of node {} group {group}: {e}", node.id()))?;
                snapshots_taken += status.counters.snapshots_taken;
                first_index_min = first_index_min.min(status.first_index.0);
                snapshot_index_min = snapshot_index_min.min(status.snapshot_index.0);
            }
        }
        Ok(NodeFigures {
            rss_bytes: rss_bytes(None)?,
            rss_bytes_per_node: Vec::new(),
            snapshots_taken: Some(snapshots_taken),
            first_index_min: Some(first_index_min),
            snapshot_index_min,
        })
    };
    let node_ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
    let (samples, failure) = sample_windows(args, root, &node_ids, Instant::now(), &take_window, &mut probe_nodes);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().map_err(|_| anyhow!("a writer thread panicked"))?;
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(report(
        args,
        root,
        "embedded",
        samples,
        writes.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    ))
}

/// What one window's sample reads of the nodes.
pub(crate) struct NodeFigures {
    pub rss_bytes: u64,
    pub rss_bytes_per_node: Vec<u64>,
    pub snapshots_taken: Option<u64>,
    pub first_index_min: Option<u64>,
    pub snapshot_index_min: u64,
}

/// The load's latencies since the last call (reset), and its writes and
/// errors so far.
pub(crate) type TakeWindow<'a> = &'a dyn Fn() -> (Histogram<u64>, u64, u64);

/// Samples every `--sample-every` seconds from `started` until the warm-up
/// and the duration are over (or a probe fails: the samples so far and the
/// failure).
pub(crate) fn sample_windows(
    args: &LongrunArgs,
    root: &Path,
    nodes: &[NodeId],
    started: Instant,
    take_window: TakeWindow<'_>,
    probe_nodes: &mut dyn FnMut() -> Result<NodeFigures>,
) -> (Vec<Sample>, Option<anyhow::Error>) {
    let total_s = args.warmup + args.duration;
    let windows_count = total_s.div_ceil(args.sample_every);
    let mut samples = Vec::new();
    let (mut last_writes, mut last_errors) = (0u64, 0u64);
    let mut last_at = started;
    for index in 1..=windows_count {
        let end_s = (index * args.sample_every).min(total_s);
        let at = started + Duration::from_secs(end_s);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let (window, total_writes, total_errors) = take_window();
        let mut disk_bytes = Vec::new();
        let mut snapshot_bytes = Vec::new();
        for &id in nodes {
            let (disk, snapshots) = dir_bytes(&node_dir(root, id));
            disk_bytes.push(disk);
            snapshot_bytes.push(snapshots);
        }
        let figures = match probe_nodes() {
            Ok(figures) => figures,
            Err(failure) => return (samples, Some(failure)),
        };
        let seconds = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let sample = Sample {
            at_s: now.duration_since(started).as_secs_f64(),
            warmup: end_s <= args.warmup,
            rss_bytes: figures.rss_bytes,
            rss_bytes_per_node: figures.rss_bytes_per_node,
            disk_bytes,
            snapshot_bytes,
            writes_per_s: total_writes.saturating_sub(last_writes) as f64 / seconds,
            p50_us: window.value_at_quantile(0.5),
            p99_us: window.value_at_quantile(0.99),
            errors: total_errors.saturating_sub(last_errors),
            snapshots_taken: figures.snapshots_taken,
            first_index_min: figures.first_index_min,
            snapshot_index_min: figures.snapshot_index_min,
        };
        if !args.json {
            print_sample(&sample);
        }
        samples.push(sample);
        (last_writes, last_errors, last_at) = (total_writes, total_errors, now);
    }
    (samples, None)
}

/// The report of a run whose windows are `samples`.
pub(crate) fn report(
    args: &LongrunArgs,
    root: &Path,
    shape: &'static str,
    samples: Vec<Sample>,
    writes: u64,
    errors: u64,
) -> Report {
    let measured: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
    let verdict = (measured.len() >= 2).then(|| verdict(args, &measured));
    Report {
        system: "coraft",
        bench: "longrun",
        shape,
        snapshots: !args.no_snapshots,
        duration_s: args.duration,
        warmup_s: args.warmup,
        sample_every_s: args.sample_every,
        clients: args.clients,
        groups: args.groups,
        payload: args.payload,
        snapshot_after_entries: args.snapshot_after_entries,
        snapshot_after_log_bytes: args.snapshot_after_log_bytes,
        snapshot_interval_ms: args.snapshot_interval_ms,
        log_tail_entries: args.log_tail_entries,
        wal_segment_bytes: args.wal_segment_bytes,
        flat_tolerance: args.flat_tolerance,
        writes,
        bytes_written: writes * args.payload as u64,
        errors,
        samples,
        verdict,
        leader_change: None,
        load_average: load_average(),
        machine: Machine::detect(root),
        command: crate::cluster::command_line(),
    }
}

fn verdict(args: &LongrunArgs, measured: &[&Sample]) -> Verdict {
    let windows = measured.len().div_ceil(4).min(measured.len() / 2).max(1);
    let early = Summary::of(&measured[..windows]);
    let late = Summary::of(&measured[measured.len() - windows..]);
    let within = |first: f64, last: f64, slack: f64| last <= first * (1.0 + args.flat_tolerance) + slack;
    let disk_flat = early
        .disk_bytes
        .iter()
        .zip(&late.disk_bytes)
        .all(|(&f, &l)| within(f as f64, l as f64, args.wal_segment_bytes as f64));
    // With node processes each one must be flat, not only their sum.
    let memory_flat = within(early.rss_bytes as f64, late.rss_bytes as f64, 0.0)
        && early
            .rss_bytes_per_node
            .iter()
            .zip(&late.rss_bytes_per_node)
            .all(|(&f, &l)| within(f as f64, l as f64, 0.0));
    Verdict {
        memory_flat,
        disk_flat,
        writes_within_10_percent: (late.writes_per_s - early.writes_per_s).abs()
            <= WRITES_TOLERANCE * early.writes_per_s,
        p99_within_2x: late.p99_us as f64 <= P99_TOLERANCE_FACTOR * early.p99_us as f64,
        windows,
        early,
        late,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn print_sample(sample: &Sample) {
    let list = |bytes: &[u64]| {
        bytes
            .iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rss = if sample.rss_bytes_per_node.is_empty() {
        format!("rss {:>7.1} MiB", mib(sample.rss_bytes))
    } else {
        format!("rss/node [{}] MiB", list(&sample.rss_bytes_per_node))
    };
    let snapshots = match (sample.snapshots_taken, sample.first_index_min) {
        (Some(taken), Some(first)) => format!("{taken} snapshots  first index {first}"),
        _ => format!("snapshot index >= {}", sample.snapshot_index_min),
    };
    println!(
        "  {:>7.0}s{} {rss}  disk/node [{}] MiB  {:>8.0} writes/s  p50 {:>6} µs  p99 {:>7} µs  {} errors  {snapshots}",
        sample.at_s,
        if sample.warmup { "*" } else { " " },
        list(&sample.disk_bytes),
        sample.writes_per_s,
        sample.p50_us,
        sample.p99_us,
        sample.errors,
    );
}

/// Runs the long-run benchmark.
pub fn run(args: LongrunArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("creating the benchmark's temp dir")?;
    if !args.json {
        println!(
            "coraft long run: 3 {} on loopback, WAL fdatasync on",
            if args.processes {
                "coraft-node processes"
            } else {
                "nodes in this process"
            }
        );
        println!("  machine  {}", Machine::detect(dir.path()).describe());
        println!("  command  {}", crate::cluster::command_line());
        println!("  load     {} (1, 5, 15 min) at the start", load_average());
        println!(
            "  config   {} writers, {} group(s), {}-byte writes, snapshots {}, segments of {} bytes",
            args.clients,
            args.groups,
            args.payload,
            if args.no_snapshots {
                "off".to_string()
            } else {
                format!(
                    "after {} entries / {} log bytes / {} ms (0: off), {} entries of tail",
                    args.snapshot_after_entries,
                    args.snapshot_after_log_bytes,
                    args.snapshot_interval_ms,
                    args.log_tail_entries
                )
            },
            args.wal_segment_bytes
        );
        println!(
            "  samples  every {} s, {} s warm-up (marked *), then {} s",
            args.sample_every, args.warmup, args.duration
        );
    }
    let report = measure(&args, dir.path())?;
    if args.json {
        println!("{}", serde_json::to_string(&report).context("the report serializes")?);
        return Ok(());
    }
    println!(
        "  total    {} writes ({:.1} MiB of commands), {} errors; load {} at the end",
        report.writes,
        mib(report.bytes_written),
        report.errors,
        report.load_average
    );
    if let Some(change) = &report.leader_change {
        println!(
            "  leaders  {} group(s) moved to the next node at {:.1}-{:.1} s; {} NotLeader answers (each sent again)",
            change.groups_moved, change.asked_at_s, change.done_at_s, change.not_leader
        );
    }
    match &report.verdict {
        None => println!("  verdict  none: fewer than two windows after the warm-up"),
        Some(v) => {
            let yes = |ok: bool| if ok { "yes" } else { "NO" };
            println!(
                "  verdict  the first {} window(s) after the warm-up against the last {} (most memory and disk, \
                 mean writes/s, median p99)",
                v.windows, v.windows
            );
            println!(
                "  memory   flat: {} ({:.1} -> {:.1} MiB, tolerance {:.0} %)",
                yes(v.memory_flat),
                mib(v.early.rss_bytes),
                mib(v.late.rss_bytes),
                args.flat_tolerance * 100.0
            );
            if !v.early.rss_bytes_per_node.is_empty() {
                println!(
                    "  per node {:?} -> {:?} bytes",
                    v.early.rss_bytes_per_node, v.late.rss_bytes_per_node
                );
            }
            println!(
                "  disk     flat: {} ({:?} -> {:?} bytes per node, tolerance {:.0} % + one segment)",
                yes(v.disk_flat),
                v.early.disk_bytes,
                v.late.disk_bytes,
                args.flat_tolerance * 100.0
            );
            println!(
                "  writes/s within 10 %: {} ({:.0} -> {:.0})",
                yes(v.writes_within_10_percent),
                v.early.writes_per_s,
                v.late.writes_per_s
            );
            println!(
                "  p99      within 2x: {} ({} -> {} µs)",
                yes(v.p99_within_2x),
                v.early.p99_us,
                v.late.p99_us
            );
        }
    }
    Ok(())
}
