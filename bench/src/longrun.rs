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
//!
//! Every failed write is counted by its kind (the client API's error:
//! `not_leader`, `timeout`, `busy: BOUND`, `shutdown`, ...), over the run and
//! per window, and with embedded nodes each window reads every group's term
//! and leader, so that failures can be told apart: leader changes (a
//! client retries them) from writes refused that should not be.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use coraft::api::{CommandCounter, Error};
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
    /// The shard-wide trigger: once a shard's groups together applied this
    /// many log bytes since their snapshots, the group holding the most
    /// takes one (0: off; else 64 KiB and up).
    #[arg(long, default_value_t = coraft_tuning::SNAPSHOT_SHARD_AFTER_LOG_BYTES_DEFAULT, value_name = "BYTES", value_parser = shard_after_log_bytes)]
    pub snapshot_shard_after_log_bytes: u64,
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
    #[arg(long, default_value_t = coraft_wal::config::SEGMENT_BYTES_DEFAULT, value_name = "BYTES", value_parser = crate::args::wal_segment_bytes)]
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
    /// S seconds after the load starts, move every group's leadership to
    /// the next node (the group handle's transfer, or with --processes the
    /// admin protocol's), to see the writers follow a leader change.
    #[arg(long, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
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

fn shard_after_log_bytes(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if n == 0 || n >= coraft_tuning::limits::SNAPSHOT_AFTER_LOG_BYTES_MIN => Ok(n),
        _ => Err(format!(
            "expected 0 (off) or bytes from {} (SNAPSHOT_AFTER_LOG_BYTES_MIN)",
            coraft_tuning::limits::SNAPSHOT_AFTER_LOG_BYTES_MIN
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
    /// The window's failed writes by kind (see [`Report::failures`]).
    pub failures: BTreeMap<String, u64>,
    /// Terms the groups began in the window, summed over the groups (each
    /// group's highest term on any node; embedded nodes only).
    pub term_advances: Option<u64>,
    /// Groups whose leader (node and term) differs from the window before
    /// (embedded nodes only).
    pub leaders_moved: Option<u64>,
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
    pub snapshot_shard_after_log_bytes: u64,
    pub snapshot_interval_ms: u64,
    pub log_tail_entries: u64,
    pub wal_segment_bytes: u64,
    pub flat_tolerance: f64,
    pub writes: u64,
    /// Command bytes acknowledged (each node's log holds them all).
    pub bytes_written: u64,
    pub errors: u64,
    /// The failed writes by kind: the client API's error (`not_leader`,
    /// `timeout`, `busy: BOUND`, `shutdown`, `storage`, ...), summing to
    /// `errors`. With `--processes` the writers follow `NotLeader` answers
    /// (counted in `not_leader`, not in `errors`) and the other failures are
    /// `failed` (answered with an error, or lost with a connection).
    pub failures: BTreeMap<String, u64>,
    /// Each group's term at the start and the end, and the leader changes
    /// seen (embedded nodes only).
    pub terms: Option<Terms>,
    /// Each node's shard counters at the end that tell a starved or stuck
    /// node (embedded nodes only).
    pub node_counters: Vec<NodeCounters>,
    pub samples: Vec<Sample>,
    pub verdict: Option<Verdict>,
    /// With `--transfer-leaders-at`: the leader change and what it cost.
    pub leader_change: Option<LeaderChange>,
    pub load_average: String,
    pub machine: Machine,
    pub command: String,
}

pub use crate::workload::LeaderChange;

/// The groups' terms over the run (each group's highest on any node).
#[derive(Debug, Clone, Serialize)]
pub struct Terms {
    /// Each group's term when the load started.
    pub start: Vec<u64>,
    /// Each group's term at the last window.
    pub end: Vec<u64>,
    /// Terms begun over the run, summed over the groups (an election that
    /// failed begins one too).
    pub term_advances: u64,
    /// Groups that began at least one term.
    pub groups_with_new_terms: u64,
    /// Leader changes seen window by window (several in one window count
    /// once), summed over the groups.
    pub leaders_moved: u64,
}

/// A node's shard counters at the end of the run (summed over its shards).
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounters {
    pub node: u64,
    /// Requests answered with a timeout.
    pub requests_timed_out: u64,
    /// Proposals refused (not leader, busy, ...).
    pub proposals_refused: u64,
    /// Loop turns over the turn budget.
    pub stalls: u64,
    /// Ticks made up after the shard was late to count them (a starved
    /// thread: elections follow).
    pub ticks_made_up: u64,
    /// Raft messages dropped (a peer's queue full, or the peer down).
    pub raft_messages_dropped: u64,
    pub snapshots_taken: u64,
    pub wal_segments_deleted: u64,
    pub groups_led: u64,
    /// Loop turns: the 99.9th percentile and the longest, µs (a turn
    /// longer than the election timeout lets the followers elect).
    pub turn_us_p999: u64,
    pub turn_us_max: u64,
}

/// The kind a failed write is counted as: the client API's error variant.
pub fn failure_kind(error: &Error) -> String {
    match error {
        Error::NotLeader { .. } => "not_leader".into(),
        Error::TermMismatch { .. } => "term_mismatch".into(),
        Error::Timeout => "timeout".into(),
        Error::Busy { bound } => format!("busy: {bound}"),
        Error::TooLarge { bound, .. } => format!("too_large: {bound}"),
        Error::Shutdown => "shutdown".into(),
        Error::Storage(_) => "storage".into(),
        Error::UnknownGroup(_) => "unknown_group".into(),
        Error::GroupRemoved(_) => "group_removed".into(),
        Error::SessionExpired => "session_expired".into(),
        Error::StaleSequence => "stale_sequence".into(),
        other => format!("other: {other}"),
    }
}

/// Failed writes by kind, shared by the writers (failures are rare: a lock).
#[derive(Default)]
pub(crate) struct FailureCounts {
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl FailureCounts {
    fn record(&self, error: &Error) {
        let mut counts = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(failure_kind(error)).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.by_kind.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What `after` counts beyond `before`, kinds with none left out.
fn counts_since(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(kind, &n)| (kind.clone(), n.saturating_sub(before.get(kind).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect()
}

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
            shard_after_log_bytes: args.snapshot_shard_after_log_bytes,
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
            || args.snapshot_shard_after_log_bytes > 0
            || args.snapshot_interval_ms > 0,
        "every snapshot trigger is 0: set one of --snapshot-after-entries, --snapshot-after-log-bytes, \
         --snapshot-shard-after-log-bytes, --snapshot-interval-ms, or say --no-snapshots"
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
    let failures = Arc::new(FailureCounts::default());
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
            let (nodes, stop, writes, errors, failures, window) = (
                nodes.clone(),
                stop.clone(),
                writes.clone(),
                errors.clone(),
                failures.clone(),
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
                        Err(error) => {
                            // Counted by kind; then the leader it names, or the next node.
                            failures.record(&error);
                            errors.fetch_add(1, Ordering::Relaxed);
                            let hinted = match error {
                                Error::NotLeader {
                                    leader_hint: Some(hint),
                                } => nodes.iter().position(|node| node.id() == hint).filter(|&n| n != at),
                                _ => None,
                            };
                            leader.store(hinted.unwrap_or((at + 1) % nodes.len()), Ordering::Relaxed);
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
        WindowTotals {
            latency_us: window,
            writes: writes.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            failures: failures.snapshot(),
        }
    };
    let mut probe_nodes = || -> Result<NodeFigures> {
        let (mut snapshots_taken, mut first_index_min, mut snapshot_index_min) = (0, u64::MAX, u64::MAX);
        // Each group's highest term on any node, and who leads in it.
        let mut leaders = vec![GroupLeader::default(); groups.len()];
        for node in nodes.iter() {
            for (g, group) in groups.iter().enumerate() {
                let status = block(node.group(*group).status())
                    .map_err(|e| anyhow!("status of node {} group {group}: {e}", node.id()))?;
                snapshots_taken += status.counters.snapshots_taken;
                first_index_min = first_index_min.min(status.first_index.0);
                snapshot_index_min = snapshot_index_min.min(status.snapshot_index.0);
                let seen = &mut leaders[g];
                if status.term.0 > seen.term {
                    *seen = GroupLeader {
                        term: status.term.0,
                        leader: None,
                    };
                }
                if status.term.0 == seen.term && status.role == Role::Leader {
                    seen.leader = Some(node.id().0);
                }
            }
        }
        Ok(NodeFigures {
            leaders: Some(leaders),
            rss_bytes: rss_bytes(None)?,
            rss_bytes_per_node: Vec::new(),
            snapshots_taken: Some(snapshots_taken),
            first_index_min: Some(first_index_min),
            snapshot_index_min,
        })
    };
    let node_ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
    let start_leaders = probe_nodes()?.leaders.expect("embedded nodes read the terms");
    let started = Instant::now();
    let transfer = args.transfer_leaders_at.map(|at_s| {
        let (nodes, groups) = (nodes.clone(), groups.to_vec());
        std::thread::spawn(move || {
            std::thread::sleep((started + Duration::from_secs(at_s)).saturating_duration_since(Instant::now()));
            transfer_leaders(&nodes, &groups, started)
        })
    });
    let (samples, failure) = sample_windows(
        args,
        root,
        &node_ids,
        started,
        Some(start_leaders.clone()),
        &take_window,
        &mut probe_nodes,
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().map_err(|_| anyhow!("a writer thread panicked"))?;
    }
    let leader_change =
        crate::workload::join_leader_transfer(transfer, failures.snapshot().get("not_leader").copied().unwrap_or(0))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let end_leaders = probe_nodes()?.leaders.expect("embedded nodes read the terms");
    let terms = Terms {
        term_advances: start_leaders
            .iter()
            .zip(&end_leaders)
            .map(|(s, e)| e.term.saturating_sub(s.term))
            .sum(),
        groups_with_new_terms: start_leaders
            .iter()
            .zip(&end_leaders)
            .filter(|(s, e)| e.term > s.term)
            .count() as u64,
        leaders_moved: samples.iter().filter_map(|s| s.leaders_moved).sum(),
        start: start_leaders.iter().map(|l| l.term).collect(),
        end: end_leaders.iter().map(|l| l.term).collect(),
    };
    let mut report = report(
        args,
        root,
        "embedded",
        samples,
        writes.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        failures.snapshot(),
    );
    report.leader_change = leader_change;
    report.terms = Some(terms);
    report.node_counters = nodes
        .iter()
        .map(|node| {
            let shards = node.metrics();
            let sum = |field: fn(&coraft::runtime::ShardMetrics) -> u64| shards.iter().map(field).sum();
            NodeCounters {
                node: node.id().0,
                requests_timed_out: sum(|m| m.requests_timed_out),
                proposals_refused: sum(|m| m.proposals_refused),
                stalls: sum(|m| m.stalls),
                ticks_made_up: sum(|m| m.ticks_made_up),
                raft_messages_dropped: sum(|m| m.raft_messages_dropped),
                snapshots_taken: sum(|m| m.snapshots_taken),
                wal_segments_deleted: sum(|m| m.wal_segments_deleted),
                groups_led: sum(|m| m.groups_led),
                turn_us_p999: shards
                    .iter()
                    .map(|m| m.turn_us.value_at_quantile(0.999))
                    .max()
                    .unwrap_or(0),
                turn_us_max: shards.iter().map(|m| m.turn_us.max()).max().unwrap_or(0),
            }
        })
        .collect();
    Ok(report)
}

/// How long the groups get to elect the leaders a transfer asked for (a
/// loaded machine: generous).
const TRANSFER_WAIT: Duration = Duration::from_secs(60);

/// Moves every group's leadership to the node after its leader (embedded
/// nodes: the group handle's transfer) and waits until each new leader
/// leads (`--transfer-leaders-at`).
fn transfer_leaders(nodes: &[Node], groups: &[GroupId], started: Instant) -> Result<LeaderChange> {
    let asked_at_s = started.elapsed().as_secs_f64();
    let leader_of = |group: GroupId| -> Result<Option<usize>> {
        for (n, node) in nodes.iter().enumerate() {
            let status = block(node.group(group).status()).map_err(|e| anyhow!("status: {e}"))?;
            if status.role == Role::Leader {
                return Ok(Some(n));
            }
        }
        Ok(None)
    };
    let mut targets = Vec::new();
    for &group in groups {
        let from = leader_of(group)?.ok_or_else(|| anyhow!("group {group} has no leader to move"))?;
        let to = (from + 1) % nodes.len();
        block(nodes[from].group(group).transfer_leader(nodes[to].id()))
            .map_err(|e| anyhow!("moving group {group} to node {}: {e}", nodes[to].id()))?;
        targets.push((group, to));
    }
    let deadline = Instant::now() + TRANSFER_WAIT;
    for (group, to) in targets {
        while leader_of(group)? != Some(to) {
            ensure!(
                Instant::now() < deadline,
                "group {group} did not move to node {} within {TRANSFER_WAIT:?}",
                nodes[to].id()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(LeaderChange {
        asked_at_s,
        done_at_s: started.elapsed().as_secs_f64(),
        groups_moved: groups.len() as u64,
        not_leader: 0,
    })
}

/// A group's highest term on any node, and the node leading in it (if one
/// does, as far as the nodes said).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupLeader {
    pub term: u64,
    pub leader: Option<u64>,
}

/// The load's figures at the end of a window: its latencies (since the
/// last window), and the writes, errors and failures by kind so far.
pub(crate) struct WindowTotals {
    pub latency_us: Histogram<u64>,
    pub writes: u64,
    pub errors: u64,
    pub failures: BTreeMap<String, u64>,
}

/// What one window's sample reads of the nodes.
pub(crate) struct NodeFigures {
    pub rss_bytes: u64,
    pub rss_bytes_per_node: Vec<u64>,
    pub snapshots_taken: Option<u64>,
    pub first_index_min: Option<u64>,
    pub snapshot_index_min: u64,
    /// Each group's term and leader (embedded nodes only).
    pub leaders: Option<Vec<GroupLeader>>,
}

/// The load's figures at the end of a window (the latencies reset).
pub(crate) type TakeWindow<'a> = &'a dyn Fn() -> WindowTotals;

/// Samples every `--sample-every` seconds from `started` until the warm-up
/// and the duration are over (or a probe fails: the samples so far and the
/// failure). `start_leaders`: the groups' terms and leaders when the load
/// started, if the probe reads them.
pub(crate) fn sample_windows(
    args: &LongrunArgs,
    root: &Path,
    nodes: &[NodeId],
    started: Instant,
    start_leaders: Option<Vec<GroupLeader>>,
    take_window: TakeWindow<'_>,
    probe_nodes: &mut dyn FnMut() -> Result<NodeFigures>,
) -> (Vec<Sample>, Option<anyhow::Error>) {
    let total_s = args.warmup + args.duration;
    let windows_count = total_s.div_ceil(args.sample_every);
    let mut samples = Vec::new();
    let (mut last_writes, mut last_errors) = (0u64, 0u64);
    let mut last_failures = BTreeMap::new();
    let mut last_leaders = start_leaders;
    let mut last_at = started;
    for index in 1..=windows_count {
        let end_s = (index * args.sample_every).min(total_s);
        let at = started + Duration::from_secs(end_s);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let totals = take_window();
        let (window, total_writes, total_errors) = (&totals.latency_us, totals.writes, totals.errors);
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
        let (term_advances, leaders_moved) = match (&last_leaders, &figures.leaders) {
            (Some(before), Some(after)) => (
                Some(
                    before
                        .iter()
                        .zip(after)
                        .map(|(b, a)| a.term.saturating_sub(b.term))
                        .sum(),
                ),
                Some(before.iter().zip(after).filter(|(b, a)| b != a).count() as u64),
            ),
            _ => (None, None),
        };
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
            failures: counts_since(&totals.failures, &last_failures),
            term_advances,
            leaders_moved,
            snapshots_taken: figures.snapshots_taken,
            first_index_min: figures.first_index_min,
            snapshot_index_min: figures.snapshot_index_min,
        };
        if !args.json {
            print_sample(&sample);
        }
        samples.push(sample);
        (last_writes, last_errors, last_at) = (total_writes, total_errors, now);
        last_failures = totals.failures;
        if figures.leaders.is_some() {
            last_leaders = figures.leaders;
        }
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
    failures: BTreeMap<String, u64>,
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
        snapshot_shard_after_log_bytes: args.snapshot_shard_after_log_bytes,
        snapshot_interval_ms: args.snapshot_interval_ms,
        log_tail_entries: args.log_tail_entries,
        wal_segment_bytes: args.wal_segment_bytes,
        flat_tolerance: args.flat_tolerance,
        writes,
        bytes_written: writes * args.payload as u64,
        errors,
        failures,
        terms: None,
        node_counters: Vec::new(),
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

/// `kind n, kind n, ...`
fn kinds(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
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
        "  {:>7.0}s{} {rss}  disk/node [{}] MiB  {:>8.0} writes/s  p50 {:>6} µs  p99 {:>7} µs  {} errors{}  \
         {snapshots}{}",
        sample.at_s,
        if sample.warmup { "*" } else { " " },
        list(&sample.disk_bytes),
        sample.writes_per_s,
        sample.p50_us,
        sample.p99_us,
        sample.errors,
        if sample.failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds(&sample.failures))
        },
        match (sample.term_advances, sample.leaders_moved) {
            (Some(terms), Some(moved)) if terms > 0 || moved > 0 => {
                format!("  {terms} new term(s), {moved} group(s) with a new leader")
            }
            _ => String::new(),
        },
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
                    "after {} entries / {} log bytes / {} ms, or a shard's {} log bytes (0: off), {} entries of tail",
                    args.snapshot_after_entries,
                    args.snapshot_after_log_bytes,
                    args.snapshot_interval_ms,
                    args.snapshot_shard_after_log_bytes,
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
    if !report.failures.is_empty() {
        println!("  failures {}", kinds(&report.failures));
    }
    if let Some(terms) = &report.terms {
        println!(
            "  terms    {} begun over {} group(s) ({} leader change(s) seen window by window)",
            terms.term_advances, terms.groups_with_new_terms, terms.leaders_moved
        );
    }
    for counters in &report.node_counters {
        println!(
            "  node {}   {} timed out, {} refused, {} stalls, {} ticks made up, {} messages dropped, {} snapshots, \
             {} segments deleted, leads {} group(s), turns p99.9 {} µs, longest {} µs",
            counters.node,
            counters.requests_timed_out,
            counters.proposals_refused,
            counters.stalls,
            counters.ticks_made_up,
            counters.raft_messages_dropped,
            counters.snapshots_taken,
            counters.wal_segments_deleted,
            counters.groups_led,
            counters.turn_us_p999,
            counters.turn_us_max
        );
    }
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
