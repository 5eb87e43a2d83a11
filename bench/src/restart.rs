//! `coraft-bench restart`: how long a node takes from its start to serving,
//! with a long log and no snapshot against a snapshot plus a short tail of
//! the same data.
//!
//! One single-node cluster (real WAL with fdatasync in a temp dir; one node,
//! so the time is its own recovery and election, not its peers') with the
//! command counter and the snapshot policy off is filled with `--log-mib`
//! MiB of writes. The node is stopped and started again, and the time runs
//! from before `Node::start` until its group has a leader and a
//! linearizable read succeeds: the log is replayed from index 1. Then the
//! node takes a snapshot, applies `--tail-entries` small writes and takes a
//! second one (the WAL keeps what follows the older of the two newest
//! snapshots, so it now deletes the long log's segments), is stopped, and
//! the same is measured again: the newest snapshot is loaded and only the
//! tail read. The second read must answer the first's count of applied
//! writes plus the tail's. Before each start
//! the node's files are dropped from the page cache (`posix_fadvise`
//! DONTNEED on this run's files only), so the replay reads the disk.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory};
use serde::Serialize;

use crate::install::embedded_node_options;
use crate::longrun::{dir_bytes, load_average, rss_bytes};
use crate::machine::Machine;

const CLUSTER_ID: u64 = 0xC0_4A_FA;
const GROUP: GroupId = GroupId(1);
/// The largest `--log-mib` (64 GiB).
const LOG_MIB_MAX: u64 = 64 << 10;
/// Writers filling the log (each keeps one write outstanding).
const FILL_WRITERS: usize = 16;
/// Bytes of each write filling the log.
const FILL_WRITE_BYTES: usize = 64 << 10;
/// Bytes of each write of the tail after the snapshot.
const TAIL_WRITE_BYTES: usize = 256;
/// Seconds to wait for the WAL to delete the long log's segments.
const COMPACTION_WAIT_S: u64 = 60;
/// Failed reads a restart reports.
const READ_ERRORS_KEPT: usize = 4;
/// How often the restarted node is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How often a restart's resident memory is sampled.
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// `coraft-bench restart`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {
    /// MiB of log written before the restarts (64 KiB writes), 1 to 65536.
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = log_mib)]
    pub log_mib: u64,
    /// Writes of 256 bytes between the first snapshot and the second: the
    /// short tail replayed after the snapshot (also the entries the node
    /// keeps below a snapshot).
    #[arg(long, default_value_t = 1_000, value_name = "N", value_parser = crate::args::at_least_one_u64)]
    pub tail_entries: u64,
    /// Seconds a restart may take before the run fails.
    #[arg(long, default_value_t = 1_800, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub timeout: u64,
    /// Leave the node's files in the page cache before each start (a warm restart).
    #[arg(long)]
    pub warm: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn log_mib(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if (1..=LOG_MIB_MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected MiB of log from 1 to {LOG_MIB_MAX} (LOG_MIB_MAX)")),
    }
}

/// One restart's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// From before `Node::start` until it returned.
    pub start_s: f64,
    /// From before `Node::start` until the group had a leader.
    pub leader_s: f64,
    /// From before `Node::start` until a linearizable read answered.
    pub serving_s: f64,
    /// Bytes of the node's data dir on disk (WAL + snapshots) at the start.
    pub disk_bytes: u64,
    /// Of which snapshots.
    pub snapshot_bytes: u64,
    /// The group's first index in memory once serving (1: the whole log).
    pub first_index: u64,
    pub last_index: u64,
    /// The process's resident memory once serving.
    pub rss_bytes: u64,
    /// The process's resident memory just before `Node::start` (after the
    /// allocator returned what the previous node freed).
    pub rss_before_bytes: u64,
    /// The process's peak resident memory from before `Node::start` until
    /// serving (`VmHWM`, reset before the start).
    pub peak_rss_bytes: u64,
    /// The highest anonymous (heap) and file-mapped (WAL segments) resident
    /// memory sampled every [`MEMORY_SAMPLE_INTERVAL`] over the same span.
    pub peak_anon_bytes: u64,
    pub peak_file_bytes: u64,
    /// CPU time of the whole process (user + system, every thread) from
    /// before `Node::start` until serving (`getrusage`).
    pub cpu_s: f64,
    /// Page faults over the same span: minor (a page mapped from the page
    /// cache or a fresh heap page) and major (read from disk).
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Bytes the process read from the device over the same span
    /// (`read_bytes` of `/proc/self/io`; 0 if unreadable).
    pub disk_read_bytes: u64,
    /// What the read answered: the count of applied writes.
    pub applied: u64,
    /// The reads that failed before one succeeded (the first few).
    pub read_errors: Vec<String>,
}

/// The run, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: &'static str,
    pub bench: &'static str,
    pub log_mib: u64,
    pub tail_entries: u64,
    pub cold: bool,
    pub writes: u64,
    pub fill_s: f64,
    pub snapshot_index: u64,
    pub snapshot_s: f64,
    pub long_log: Restart,
    pub snapshot_and_tail: Restart,
    pub load_average: String,
    pub machine: Machine,
    pub command: String,
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

fn options(root: &Path, address: std::net::SocketAddr, tail_entries: u64) -> NodeOptions {
    let id = NodeId(1);
    let peers = vec![PeerSpec {
        id,
        shard_addresses: vec![address],
    }];
    // Snapshots on demand only: the run takes the one it measures.
    let snapshot = SnapshotPolicy {
        after_entries: 0,
        after_log_bytes: 0,
        shard_after_log_bytes: 0,
        interval: Duration::ZERO,
        log_tail_entries: tail_entries,
        ..SnapshotPolicy::default()
    };
    embedded_node_options(CLUSTER_ID, id, peers, root.join("node-1"), vec![GROUP], snapshot)
}

/// Drops every file under `dir` from the page cache (this run's files only).
fn drop_cached(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            drop_cached(&path);
        } else if let Ok(file) = std::fs::File::open(&path) {
            // SAFETY: fadvise on an open descriptor; a failure only leaves the cache as it was.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

fn fill(node: &Arc<Node>, bytes: u64) -> Result<u64> {
    let writes_wanted = bytes.div_ceil(FILL_WRITE_BYTES as u64);
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..FILL_WRITERS)
        .map(|w| {
            let (node, next) = (node.clone(), next.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut command = vec![w as u8; FILL_WRITE_BYTES];
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= writes_wanted {
                        return Ok(());
                    }
                    command[..8].copy_from_slice(&n.to_le_bytes());
                    block(node.group(GROUP).apply(command.clone())).map_err(|e| anyhow!("write {n}: {e}"))?;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| anyhow!("a writer thread panicked"))??;
    }
    Ok(writes_wanted)
}

/// Writes `count` small entries (the tail after the first snapshot).
fn write_tail(node: &Arc<Node>, count: u64) -> Result<()> {
    for n in 0..count {
        let mut command = vec![0u8; TAIL_WRITE_BYTES];
        command[..8].copy_from_slice(&n.to_le_bytes());
        block(node.group(GROUP).apply(command)).map_err(|e| anyhow!("tail write {n}: {e}"))?;
    }
    Ok(())
}

fn wait_leader(node: &Node, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = block(node.group(GROUP).status()).map_err(|e| anyhow!("status: {e}"))?;
        if status.role == Role::Leader {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "no leader within {} s", timeout.as_secs());
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts the node and times it until it serves; returns it running.
fn restart(
    root: &Path,
    options: &NodeOptions,
    factory: &StateMachineFactory,
    args: &RestartArgs,
) -> Result<(Node, Restart)> {
    let (disk_bytes, snapshot_bytes) = dir_bytes(root);
    if !args.warm {
        drop_cached(root);
    }
    let timeout = Duration::from_secs(args.timeout);
    let rss_before_bytes = memory::fresh_start();
    let sampler = memory::Sampler::start();
    let usage_before = usage::now();
    let begun = Instant::now();
    let node = Node::start(options.clone(), factory.clone()).map_err(|e| anyhow!("starting the node: {e}"))?;
    let start_s = begun.elapsed().as_secs_f64();
    wait_leader(&node, timeout)?;
    let leader_s = begun.elapsed().as_secs_f64();
    let mut read_errors = Vec::new();
    let answer = loop {
        let reading = begun.elapsed().as_secs_f64();
        match block(node.group(GROUP).read(Vec::new())) {
            Ok(answer) => break answer,
            Err(e) => {
                ensure!(
                    begun.elapsed() < timeout,
                    "no read served within {} s: {e}",
                    timeout.as_secs()
                );
                if read_errors.len() < READ_ERRORS_KEPT {
                    read_errors.push(format!(
                        "read sent at {reading:.2} s failed at {:.2} s: {e}",
                        begun.elapsed().as_secs_f64()
                    ));
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    };
    let serving_s = begun.elapsed().as_secs_f64();
    let applied = u64::from_le_bytes(
        answer
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("the counter answered {} bytes, not 8", answer.len()))?,
    );
    let status = block(node.group(GROUP).status()).map_err(|e| anyhow!("status: {e}"))?;
    let usage_after = usage::now();
    let (peak_anon_bytes, peak_file_bytes) = sampler.stop();
    Ok((
        node,
        Restart {
            start_s,
            leader_s,
            serving_s,
            disk_bytes,
            snapshot_bytes,
            first_index: status.first_index.0,
            last_index: status.last_index.0,
            rss_bytes: rss_bytes(None).unwrap_or(0),
            rss_before_bytes,
            peak_rss_bytes: memory::status_bytes("VmHWM:"),
            peak_anon_bytes,
            peak_file_bytes,
            cpu_s: usage_after.cpu_s - usage_before.cpu_s,
            minor_faults: usage_after.minor_faults.saturating_sub(usage_before.minor_faults),
            major_faults: usage_after.major_faults.saturating_sub(usage_before.major_faults),
            disk_read_bytes: usage_after.read_bytes.saturating_sub(usage_before.read_bytes),
            applied,
            read_errors,
        },
    ))
}

/// Fills, restarts twice, and reports.
pub fn measure(args: &RestartArgs, root: &Path) -> Result<Report> {
    let address = coraft::ports::free_loopback_addresses(1)?[0];
    let options = options(root, address, args.tail_entries);
    let factory: StateMachineFactory = Arc::new(|_| Box::new(CommandCounter::default()));
    let node = Arc::new(Node::start(options.clone(), factory.clone()).map_err(|e| anyhow!("starting the node: {e}"))?);
    wait_leader(&node, Duration::from_secs(60))?;
    let filling = Instant::now();
    let writes = fill(&node, args.log_mib << 20)?;
    let fill_s = filling.elapsed().as_secs_f64();
    Arc::try_unwrap(node)
        .map_err(|_| anyhow!("a writer still holds the node"))?
        .shutdown();

    let (node, long_log) = restart(root, &options, &factory, args).context("the restart with the long log")?;
    // The WAL keeps everything after the older of a group's two newest
    // snapshots (so a damaged newest one can be skipped for it): a first
    // snapshot of the long log, the short tail, and a second snapshot let
    // it delete the long log's segments.
    let snapshotting = Instant::now();
    let first_snapshot = block(node.group(GROUP).snapshot())
        .map_err(|e| anyhow!("the first snapshot: {e}"))?
        .0;
    let snapshot_s = snapshotting.elapsed().as_secs_f64();
    let node = Arc::new(node);
    write_tail(&node, args.tail_entries)?;
    let node = Arc::try_unwrap(node).map_err(|_| anyhow!("a writer still holds the node"))?;
    let snapshot_index = block(node.group(GROUP).snapshot())
        .map_err(|e| anyhow!("the second snapshot: {e}"))?
        .0;
    ensure!(
        snapshot_index > first_snapshot,
        "the second snapshot ({snapshot_index}) is not past the first ({first_snapshot})"
    );
    // Segment deletion runs off the shard's loop after the purge: wait
    // until the long log's segments are gone (the WAL's current segment
    // and the one it zeroes ahead into may stay).
    let deadline = Instant::now() + Duration::from_secs(COMPACTION_WAIT_S);
    let segment = coraft_wal::config::SEGMENT_BYTES_DEFAULT;
    while dir_bytes(root).0 > (2 * segment + (1 << 20)).min(long_log.disk_bytes.saturating_sub(segment)) {
        if Instant::now() > deadline {
            eprintln!(
                "restart: the WAL still holds {} bytes {COMPACTION_WAIT_S} s after the second snapshot; measuring anyway",
                dir_bytes(root).0
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    node.shutdown();
    let (node, snapshot_and_tail) =
        restart(root, &options, &factory, args).context("the restart with the snapshot and its tail")?;
    node.shutdown();
    ensure!(
        long_log.applied + args.tail_entries == snapshot_and_tail.applied,
        "the restarts answered {} applied writes with the long log and {} with the snapshot and the {} tail writes",
        long_log.applied,
        snapshot_and_tail.applied,
        args.tail_entries
    );
    Ok(Report {
        system: "coraft",
        bench: "restart",
        log_mib: args.log_mib,
        tail_entries: args.tail_entries,
        cold: !args.warm,
        writes,
        fill_s,
        snapshot_index,
        snapshot_s,
        long_log,
        snapshot_and_tail,
        load_average: load_average(),
        machine: Machine::detect(root),
        command: crate::cluster::command_line(),
    })
}

/// The process's CPU time, page faults and disk reads so far.
mod usage {
    pub struct Usage {
        pub cpu_s: f64,
        pub minor_faults: u64,
        pub major_faults: u64,
        pub read_bytes: u64,
    }

    pub fn now() -> Usage {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let read_bytes = std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|line| line.strip_prefix("read_bytes:"))
                    .and_then(|value| value.trim().parse().ok())
            })
            .unwrap_or(0);
        Usage {
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            minor_faults: usage.ru_minflt as u64,
            major_faults: usage.ru_majflt as u64,
            read_bytes,
        }
    }
}

/// The process's resident memory, as a restart sees it.
mod memory {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    /// A field of `/proc/self/status` in bytes (0 if unreadable).
    pub fn status_bytes(field: &str) -> u64 {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return 0;
        };
        status
            .lines()
            .find(|line| line.starts_with(field))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Hands the heap the previous node freed back to the system and resets
    /// the peak (`VmHWM`), so that what follows is measured as in a fresh
    /// process; returns the resident memory left.
    pub fn fresh_start() -> u64 {
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        // "5" resets the peak resident set size to the current one.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        status_bytes("VmRSS:")
    }

    /// Samples the anonymous and file-mapped resident memory until stopped.
    /// Stops sampling when dropped (a restart that failed).
    pub struct Sampler {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<(u64, u64)>>,
    }

    impl Sampler {
        pub fn start() -> Sampler {
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = stop.clone();
            let thread = std::thread::spawn(move || {
                let (mut anon, mut file) = (0, 0);
                loop {
                    anon = status_bytes("RssAnon:").max(anon);
                    file = status_bytes("RssFile:").max(file);
                    if stopping.load(Ordering::Relaxed) {
                        return (anon, file);
                    }
                    std::thread::sleep(super::MEMORY_SAMPLE_INTERVAL);
                }
            });
            Sampler {
                stop,
                thread: Some(thread),
            }
        }

        /// The highest (anonymous, file-mapped) resident bytes sampled.
        pub fn stop(mut self) -> (u64, u64) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread
                .take()
                .and_then(|thread| thread.join().ok())
                .unwrap_or((0, 0))
        }
    }

    impl Drop for Sampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs the restart benchmark.
pub fn run(args: RestartArgs) -> Result<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).try_init();
    let dir = tempfile::tempdir().context("creating the benchmark's temp dir")?;
    if !args.json {
        println!("coraft restart time: one single-node cluster, WAL fdatasync on");
        println!("  machine  {}", Machine::detect(dir.path()).describe());
        println!("  command  {}", crate::cluster::command_line());
        println!("  load     {} (1, 5, 15 min) at the start", load_average());
        println!(
            "  config   {} MiB of log in 64 KiB writes, {} entries of tail after the snapshot, {} page cache",
            args.log_mib,
            args.tail_entries,
            if args.warm { "warm" } else { "cold (dropped)" }
        );
    }
    let report = measure(&args, dir.path())?;
    if args.json {
        println!("{}", serde_json::to_string(&report).context("the report serializes")?);
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    println!(
        "  filled   {} writes in {:.1} s; first snapshot in {:.2} s, the second (after the tail) at index {}",
        report.writes, report.fill_s, report.snapshot_s, report.snapshot_index
    );
    for (name, r) in [
        ("long log", &report.long_log),
        ("snapshot+tail", &report.snapshot_and_tail),
    ] {
        println!(
            "  {name:<14} serving after {:.2} s (start returned {:.2} s, leader {:.2} s); {:.0} MiB on disk \
             ({:.1} MiB snapshots), log {}..{}, rss {:.0} MiB",
            r.serving_s,
            r.start_s,
            r.leader_s,
            mib(r.disk_bytes),
            mib(r.snapshot_bytes),
            r.first_index,
            r.last_index,
            mib(r.rss_bytes)
        );
        println!(
            "  {:<14} rss {:.0} MiB before the start, peak {:.0} MiB ({:.2} per byte on disk); \
             sampled peaks: heap {:.0} MiB, mapped files {:.0} MiB",
            "",
            mib(r.rss_before_bytes),
            mib(r.peak_rss_bytes),
            r.peak_rss_bytes.saturating_sub(r.rss_before_bytes) as f64 / r.disk_bytes.max(1) as f64,
            mib(r.peak_anon_bytes),
            mib(r.peak_file_bytes)
        );
        println!(
            "  {:<14} cpu {:.2} s (every thread); {} minor and {} major page faults; {:.0} MiB read from the device",
            "",
            r.cpu_s,
            r.minor_faults,
            r.major_faults,
            mib(r.disk_read_bytes)
        );
        for error in &r.read_errors {
            println!("  {:<14} {error}", "");
        }
    }
    println!("  load     {} at the end", report.load_average);
    Ok(())
}
