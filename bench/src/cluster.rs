//! `coraft-bench` with no subcommand: an embedded cluster on loopback (real
//! TCP, real WALs with fdatasync in a temp dir removed afterwards), driven
//! through the client protocol by closed-loop clients, or open-loop ones at
//! a fixed `--rate`, with writes, reads or a mix ([`crate::workload`]). The
//! fdatasync, TCP and replication floors are measured in the same run on the
//! same directory; `--sweep` repeats the run per point and `--report` draws
//! the points on one HTML page ([`crate::report`]). `--processes` and
//! `--target` run the same clients against `coraft-node` processes or a
//! running cluster instead ([`crate::shape`]).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::api::{CommandCounter, KvStore, KEYS_MAX};
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, ShardMetrics, StateMachineFactory};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::machine::Machine;
use crate::shape::{Remote, Shape};
use crate::workload::{DriverResult, Mix, ReadPath, StateMachineKind, Totals, Workload};

const CLUSTER_ID: u64 = 0xC0_4A_F7;
/// The replication floor runs at most this long (and warms up at most
/// `FLOOR_WARMUP_MAX`), whatever the benchmark's own duration.
const FLOOR_DURATION_MAX: Duration = Duration::from_secs(5);
const FLOOR_WARMUP_MAX: Duration = Duration::from_secs(1);
/// The payload of a write when `--payload` is not given.
const PAYLOAD_DEFAULT: usize = 16;
/// The mix's share of reads when `--read-ratio` is not given (SOFAJRaft's 9:1).
const READ_RATIO_DEFAULT: f64 = 0.9;
/// The keyspace of the KV state machine when `--keys` is not given.
const KEYS_DEFAULT: u64 = 10_000;
/// Bound on the points of one `--sweep`.
const SWEEP_POINTS_MAX: usize = 32;

/// The cluster benchmark's options (also the top-level options of
/// `coraft-bench` with no subcommand).
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Raft nodes in the cluster, odd (1 runs without replication).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = crate::args::odd_nodes)]
    pub nodes: usize,
    /// Clients. Closed loop: each keeps one request outstanding. With --rate:
    /// the most requests outstanding at once.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = crate::args::at_least_one)]
    pub clients: usize,
    /// Bytes of each write's command, 0 to 65536 [default: 16]. The counter
    /// state machine only (the KV store's writes are 17-byte ops).
    #[arg(long, value_name = "BYTES", value_parser = crate::args::payload_bytes)]
    pub payload: Option<usize>,
    /// Raft groups; clients are spread over them round-robin.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = crate::args::at_least_one_u64)]
    pub groups: u64,
    /// Shards (executors) per node; group g lives on shard g mod shards.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = crate::args::at_least_one)]
    pub shards: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub duration: u64,
    /// Seconds of warm-up before measuring (requests due then are not counted).
    #[arg(long, default_value_t = 2, value_name = "S", value_parser = crate::args::seconds)]
    pub warmup: u64,
    /// S seconds after the load starts (warm-up included), move every
    /// group's leadership to the next node (the admin protocol's transfer),
    /// to see what a leader change costs the clients.
    #[arg(long, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub transfer_leaders_at: Option<u64>,
    /// With --processes: S seconds after the load starts (warm-up
    /// included), kill with SIGKILL the coraft-node process that led the
    /// first group when the run started, to see what losing a leader costs
    /// the clients (its drivers' clients move to the other nodes; requests
    /// it left unanswered count as errors). The run goes on without it.
    #[arg(long, value_name = "S", value_parser = crate::args::seconds_at_least_one, requires = "processes")]
    pub kill_leader_at: Option<u64>,
    /// Driver threads (each one connection carrying many clients), plus one
    /// for each node and shard that starts without clients (it takes over
    /// the clients of a group whose leadership moves there).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = crate::args::at_least_one)]
    pub drivers: usize,
    /// What the clients send: writes, linearizable reads, or a mix.
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    pub workload: Workload,
    /// With --workload mixed: the share of requests that are reads, 0 to 1 [default: 0.9].
    #[arg(long, value_name = "FRACTION", value_parser = crate::args::fraction)]
    pub read_ratio: Option<f64>,
    /// How reads are served [default: read-index].
    #[arg(long, value_enum, value_name = "MODE")]
    pub read_mode: Option<ReadPath>,
    /// The nodes' state machine [default: kv with reads or --keys, else counter].
    #[arg(long, value_enum, value_name = "KIND")]
    pub state_machine: Option<StateMachineKind>,
    /// Keys the KV workload reads and writes, uniformly at random, 1 to
    /// 1000000 [default: 10000].
    #[arg(long, value_name = "N", value_parser = keys)]
    pub keys: Option<u64>,
    /// Open loop: offered requests per second over all clients, sent on a
    /// fixed schedule; latency counts from each request's due time.
    /// Without it the clients run a closed loop.
    #[arg(long, value_name = "OPS", value_parser = crate::args::at_least_one_u64)]
    pub rate: Option<u64>,
    /// Run once per value of one option and print a row per point, e.g.
    /// clients=1,16,64,256 (also payload=, groups=, shards=, rate=).
    #[arg(long, value_name = "OPTION=V,V,...", value_parser = Sweep::parse)]
    pub sweep: Option<Sweep>,
    /// Write a self-contained HTML page (inline SVG, no network) with
    /// throughput over time, latency percentiles, the floors, the machine and the command.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// glommio's spin before parking, in microseconds [default: off].
    #[arg(long, value_name = "US")]
    pub spin_before_park_us: Option<u64>,
    /// Pin shard s of every node to the s-th CPU of this list (cycling when
    /// there are more shards), e.g. 0,1 or 0-3 [default: unpinned]. The
    /// nodes' helper threads (each shard's blocking thread, metrics) run on
    /// the process's other CPUs, or all of them if the shards take every
    /// one (docs/tuning.md, `[helper_threads]`).
    #[arg(long, value_name = "CPULIST", value_parser = cpu_list)]
    pub shard_cores: Option<CpuList>,
    /// Bytes each WAL zeroes ahead of its writes.
    #[arg(long, default_value_t = coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT, value_name = "BYTES")]
    pub wal_zero_ahead_bytes: u64,
    /// WAL flushes of at most this many bytes are one O_DSYNC write instead
    /// of a write and an fdatasync (`wal.dsync_small_flush_bytes`; the
    /// default, 524288, takes every flush; 4096 a lone write's; 0 none
    /// below 512 KiB).
    #[arg(long, default_value_t = coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT, value_name = "BYTES")]
    pub wal_dsync_small_flush_bytes: usize,
    /// Bytes of each WAL segment file, a multiple of 4096 from 8 MiB to
    /// 1 GiB (`wal.segment_bytes`): each node rotates to a new segment
    /// (claiming the prepared spare) every this many bytes of log.
    #[arg(long, default_value_t = coraft_wal::config::SEGMENT_BYTES_DEFAULT, value_name = "BYTES", value_parser = crate::args::wal_segment_bytes)]
    pub wal_segment_bytes: u64,
    /// Skip the replication floor (3 bare logs, or 1 with `--nodes 1`; no Raft) measured before the run.
    #[arg(long)]
    pub no_floor: bool,
    /// With --workload mixed: skip the write-only run of the same clients
    /// measured right after the mixed one (the baseline its ops/s are
    /// held against).
    #[arg(long)]
    pub no_write_baseline: bool,
    /// Print one JSON line per point instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run each node as its own coraft-node process (found beside
    /// coraft-bench, or --node-binary) instead of in this process.
    #[arg(long, conflicts_with = "target")]
    pub processes: bool,
    /// Drive a cluster already running: each node's listen address
    /// (IP:PORT, comma-separated, every node). Needs --cluster-id.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',', num_args = 1..)]
    pub target: Vec<SocketAddr>,
    /// The cluster id of --target's nodes (or of the --processes nodes)
    /// [default with --processes: 12864247].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<u64>,
    /// With --processes: the base TOML config of every node (cores, shards,
    /// WAL and Raft settings); ids, ports, peers and WAL dirs are filled in
    /// per node. A shards.cores list of nodes x shards.count CPUs gives
    /// each node its own run of them, in node order.
    #[arg(long, value_name = "FILE", requires = "processes")]
    pub config: Option<PathBuf>,
    /// With --processes: the coraft-node binary [default: beside coraft-bench].
    #[arg(long, value_name = "PATH", requires = "processes")]
    pub node_binary: Option<PathBuf>,
}

/// A list of CPUs (`--shard-cores`), one value for clap.
#[derive(Debug, Clone)]
pub struct CpuList(pub Vec<usize>);

fn cpu_list(raw: &str) -> Result<CpuList, String> {
    coraft_tuning::parse_cpu_list(raw).map(CpuList)
}

fn keys(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(keys) if keys >= 1 && keys <= KEYS_MAX as u64 => Ok(keys),
        _ => Err(format!(
            "expected a number of keys from 1 to {KEYS_MAX} (the KV store's KEYS_MAX)"
        )),
    }
}

/// Which option a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Clients,
    Payload,
    Groups,
    Shards,
    Rate,
}

/// `--sweep OPTION=V,V,...`.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub axis: Axis,
    pub values: Vec<u64>,
}

impl Sweep {
    fn parse(raw: &str) -> Result<Sweep, String> {
        let (name, values) = raw
            .split_once('=')
            .ok_or("expected OPTION=V,V,..., e.g. clients=1,16,64,256")?;
        let axis = match name.trim() {
            "clients" => Axis::Clients,
            "payload" => Axis::Payload,
            "groups" => Axis::Groups,
            "shards" => Axis::Shards,
            "rate" => Axis::Rate,
            other => {
                return Err(format!(
                    "cannot sweep `{other}`: expected clients, payload, groups, shards or rate"
                ))
            }
        };
        let values = values
            .split(',')
            .map(|value| {
                let value = value.trim();
                match axis {
                    Axis::Payload => crate::args::payload_bytes(value).map(|v| v as u64),
                    _ => crate::args::at_least_one_u64(value),
                }
                .map_err(|why| format!("{name} value `{value}`: {why}"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() > SWEEP_POINTS_MAX {
            return Err(format!(
                "at most {SWEEP_POINTS_MAX} points (SWEEP_POINTS_MAX), not {}",
                values.len()
            ));
        }
        Ok(Sweep { axis, values })
    }
}

/// One run's configuration, checked (a point of a sweep is one of these).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub nodes: usize,
    pub shards: usize,
    pub groups: u64,
    pub clients: usize,
    pub drivers: usize,
    pub workload: Workload,
    /// Share of reads (0 for writes only, 1 for reads only).
    pub read_ratio: f64,
    pub read_mode: ReadPath,
    pub state_machine: StateMachineKind,
    /// Keys of the KV workload (0 with the counter).
    pub keys: u64,
    pub payload: usize,
    /// Open loop's offered requests per second; `None`: closed loop.
    pub rate: Option<u64>,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub spin_before_park_us: Option<u64>,
    /// `--shard-cores`: shard s of every node on the s-th (cycling); `None`: unpinned.
    pub shard_cores: Option<Vec<usize>>,
    pub wal_zero_ahead_bytes: u64,
    pub wal_dsync_small_flush_bytes: usize,
    pub wal_segment_bytes: u64,
    pub replication_floor: bool,
    /// A mixed closed-loop point also measures the same clients writing
    /// only, right after it on a fresh cluster (`--no-write-baseline`: not).
    pub write_baseline: bool,
    /// `--transfer-leaders-at`: when every group's leadership moves.
    pub transfer_leaders_at_s: Option<u64>,
    /// `--kill-leader-at`: when the first group's leader process is killed.
    pub kill_leader_at_s: Option<u64>,
    /// Where the nodes run.
    pub shape: Shape,
}

impl Settings {
    /// Checks the options together; a combination the harness cannot honour
    /// is refused with the reason.
    pub fn from_args(args: &ClusterArgs) -> Result<Settings> {
        let reads = args.workload != Workload::Write;
        let state_machine = args.state_machine.unwrap_or(if reads || args.keys.is_some() {
            StateMachineKind::Kv
        } else {
            StateMachineKind::Counter
        });
        let payload_swept = args.sweep.as_ref().is_some_and(|sweep| sweep.axis == Axis::Payload);
        if state_machine == StateMachineKind::Kv && (args.payload.is_some() || payload_swept) {
            bail!(
                "--payload applies to the counter state machine; the KV store's writes are 17-byte ops \
                 (key, value): drop --payload, or use --workload write without --keys"
            );
        }
        if state_machine == StateMachineKind::Counter && args.keys.is_some() {
            bail!("--keys needs the KV state machine (--state-machine kv); the counter has no keys");
        }
        if args.read_ratio.is_some() && args.workload != Workload::Mixed {
            bail!("--read-ratio applies to --workload mixed only");
        }
        if args.read_mode.is_some() && !reads {
            bail!("--read-mode applies to reads: use --workload read or mixed");
        }
        let read_mode = args.read_mode.unwrap_or(ReadPath::ReadIndex);
        if matches!(read_mode, ReadPath::Follower | ReadPath::Stale) {
            let name = read_mode.name();
            if args.nodes < 3 {
                bail!("--read-mode {name} needs a follower: --nodes 3 or more");
            }
            if args.workload != Workload::Read {
                bail!(
                    "--read-mode {name} runs with --workload read only: a client's connection goes to \
                     one node, and writes must go to the leader"
                );
            }
        }
        let shape = if args.processes {
            Shape::Processes
        } else if !args.target.is_empty() {
            Shape::Target
        } else {
            Shape::Embedded
        };
        let shards_swept = args.sweep.as_ref().is_some_and(|sweep| sweep.axis == Axis::Shards);
        let node_settings = [
            ("--shards", args.shards != 1 || shards_swept),
            ("--spin-before-park-us", args.spin_before_park_us.is_some()),
            ("--shard-cores", args.shard_cores.is_some()),
            (
                "--wal-zero-ahead-bytes",
                args.wal_zero_ahead_bytes != coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
            ),
            (
                "--wal-dsync-small-flush-bytes",
                args.wal_dsync_small_flush_bytes != coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
            ),
            (
                "--wal-segment-bytes",
                args.wal_segment_bytes != coraft_wal::config::SEGMENT_BYTES_DEFAULT,
            ),
        ];
        if shape == Shape::Target {
            if args.cluster_id.is_none() {
                bail!("--target needs --cluster-id ID (the cluster_id of the nodes' configs)");
            }
            if let Some((option, _)) = node_settings.iter().find(|(_, given)| *given) {
                bail!("{option} configures the nodes coraft-bench starts; with --target the running nodes decide");
            }
        }
        if args.config.is_some() {
            if let Some((option, _)) = node_settings.iter().find(|(_, given)| *given) {
                bail!("{option} and --config: the config file sets the nodes' shards, spin and WAL; drop {option}");
            }
        }
        if args.cluster_id.is_some() && shape == Shape::Embedded {
            bail!("--cluster-id applies to --target or --processes");
        }
        if args
            .rate
            .is_some_and(|rate| rate < args.drivers.min(args.clients) as u64)
        {
            bail!(
                "--rate must be at least one request per second per driver ({})",
                args.drivers.min(args.clients)
            );
        }
        for (flag, at) in [
            ("--kill-leader-at", args.kill_leader_at),
            ("--transfer-leaders-at", args.transfer_leaders_at),
        ] {
            if let Some(at) = at.filter(|&at| at >= args.warmup + args.duration) {
                bail!(
                    "{flag} {at} is not within the run ({} s of warm-up and {} s measured)",
                    args.warmup,
                    args.duration
                );
            }
        }
        Ok(Settings {
            nodes: args.nodes,
            shards: args.shards,
            groups: args.groups,
            clients: args.clients,
            drivers: args.drivers,
            workload: args.workload,
            read_ratio: match args.workload {
                Workload::Write => 0.0,
                Workload::Read => 1.0,
                Workload::Mixed => args.read_ratio.unwrap_or(READ_RATIO_DEFAULT),
            },
            read_mode,
            state_machine,
            keys: match state_machine {
                StateMachineKind::Kv => args.keys.unwrap_or(KEYS_DEFAULT),
                StateMachineKind::Counter => 0,
            },
            payload: match state_machine {
                StateMachineKind::Kv => 17,
                StateMachineKind::Counter => args.payload.unwrap_or(PAYLOAD_DEFAULT),
            },
            rate: args.rate,
            duration_s: args.duration,
            warmup_s: args.warmup,
            spin_before_park_us: args.spin_before_park_us,
            shard_cores: args.shard_cores.as_ref().map(|list| list.0.clone()),
            wal_zero_ahead_bytes: args.wal_zero_ahead_bytes,
            wal_dsync_small_flush_bytes: args.wal_dsync_small_flush_bytes,
            wal_segment_bytes: args.wal_segment_bytes,
            replication_floor: !args.no_floor,
            write_baseline: args.workload == Workload::Mixed && args.rate.is_none() && !args.no_write_baseline,
            transfer_leaders_at_s: args.transfer_leaders_at,
            kill_leader_at_s: args.kill_leader_at,
            shape,
        })
    }

    /// This configuration with the swept option set to `value`.
    fn at(&self, axis: Axis, value: u64) -> Settings {
        let mut point = self.clone();
        match axis {
            Axis::Clients => point.clients = value as usize,
            Axis::Payload => point.payload = value as usize,
            Axis::Groups => point.groups = value,
            Axis::Shards => point.shards = value as usize,
            Axis::Rate => point.rate = Some(value),
        }
        point
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} {} node(s), {} shard(s) each, {} group(s), {} clients on {} drivers, {}",
            self.shape.name(),
            self.nodes,
            self.shards,
            self.groups,
            self.clients,
            self.drivers,
            match self.rate {
                Some(rate) => format!("open loop at {rate} requests/s"),
                None => "closed loop".into(),
            }
        );
        match self.workload {
            Workload::Write => text += ", writes",
            Workload::Read => text += &format!(", reads ({})", self.read_mode.name()),
            Workload::Mixed => text += &format!(", {:.0} % reads ({})", self.read_ratio * 100.0, self.read_mode.name()),
        }
        match self.state_machine {
            StateMachineKind::Counter => text += &format!(", counter state machine, {} B writes", self.payload),
            StateMachineKind::Kv => text += &format!(", KV state machine over {} keys", self.keys),
        }
        text += &format!(
            ", {} s after {} s warm-up, spin before park {}, WAL zero-ahead {} B",
            self.duration_s,
            self.warmup_s,
            self.spin_before_park_us.map_or("off".into(), |us| format!("{us} µs")),
            self.wal_zero_ahead_bytes
        );
        if self.wal_segment_bytes != coraft_wal::config::SEGMENT_BYTES_DEFAULT {
            text += &format!(", WAL segments of {} B", self.wal_segment_bytes);
        }
        if self.wal_dsync_small_flush_bytes > 0 {
            text += &format!(
                ", WAL flushes up to {} B as O_DSYNC writes",
                self.wal_dsync_small_flush_bytes
            );
        }
        if let Some(cores) = &self.shard_cores {
            text += &format!(
                ", shard s pinned to CPU [{}][s mod {}]",
                coraft_tuning::format_cpu_list(cores),
                cores.len()
            );
        }
        text
    }
}

impl ReadPath {
    pub fn name(self) -> &'static str {
        match self {
            ReadPath::ReadIndex => "read-index",
            ReadPath::Lease => "lease",
            ReadPath::Follower => "follower",
            ReadPath::Stale => "stale",
        }
    }
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
        }
    }
}

/// The command line as run, for the record.
pub fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The floors one point was measured against, in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Floors {
    /// p50 of a 4 KiB O_DIRECT write + fdatasync in the WAL's directory.
    pub fsync_p50_us: u64,
    /// p50 of a 64-byte loopback ping-pong.
    pub tcp_rtt_p50_us: u64,
    /// The least one replicated write can take (2 RTT + fdatasync).
    pub write_us: u64,
    /// The least one read can take on this read path.
    pub read_us: u64,
}

/// What one point measured.
pub struct PointResult {
    pub settings: Settings,
    pub floors: Floors,
    pub latency_us: Histogram<u64>,
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    /// `NotLeader` answers, each followed by the same request sent to the
    /// leader it named or the next node (not in `errors`).
    pub not_leader: u64,
    /// `--transfer-leaders-at`: the leader change.
    pub leader_change: Option<crate::workload::LeaderChange>,
    pub unsent: u64,
    pub cpu: Duration,
    /// Requests answered per second of the measurement, in order.
    pub timeline: Vec<u64>,
    pub replication_floor: Option<crate::floor::Floor>,
    pub stages: Vec<(NodeId, ShardMetrics)>,
    /// A mixed point's write-only baseline: the same clients writing only,
    /// measured right after it (`Settings::write_baseline`).
    pub write_baseline: Option<WriteBaseline>,
}

/// The same point's clients writing only, measured in the same run.
pub struct WriteBaseline {
    pub ops_per_s: f64,
    pub cpu_us_per_op: f64,
    pub p50_us: u64,
}

impl PointResult {
    pub fn ops(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn ops_per_s(&self) -> f64 {
        self.ops() as f64 / self.settings.duration_s as f64
    }

    pub fn quantile(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }

    /// The floor the p50 is held against: the read floor when most
    /// requests are reads, else the write floor.
    pub fn floor_us(&self) -> f64 {
        if self.settings.read_ratio >= 0.5 {
            self.floors.read_us as f64
        } else {
            self.floors.write_us as f64
        }
    }

    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops().max(1) as f64
    }
}

/// What a point needs to reach its nodes, beyond its settings.
enum Deployment {
    Embedded,
    Processes {
        binary: PathBuf,
        base: Option<Box<coraft_tuning::NodeConfig>>,
        cluster_id: u64,
    },
    Target {
        addresses: Vec<SocketAddr>,
        cluster_id: u64,
    },
}

/// Runs the cluster benchmark.
pub fn run(args: ClusterArgs) -> Result<()> {
    let mut settings = Settings::from_args(&args)?;
    let deployment = match settings.shape {
        Shape::Embedded => Deployment::Embedded,
        Shape::Processes => {
            let binary = crate::shape::node_binary(args.node_binary.as_deref())?;
            let base = match &args.config {
                Some(path) => {
                    let config = coraft_tuning::NodeConfig::from_file(path)
                        .with_context(|| format!("--config {}", path.display()))?;
                    if config.wal.dir.is_some() || config.wal.dirs.is_some() {
                        eprintln!(
                            "--config {}: each node's WAL goes to the run's temp dir instead of wal.dir/wal.dirs \
                             (set TMPDIR to put it on another disk)",
                            path.display()
                        );
                    }
                    settings.shards = config.shards.count;
                    settings.spin_before_park_us = Some(config.shards.spin_before_park_us);
                    settings.wal_zero_ahead_bytes = config.wal.zero_ahead_bytes;
                    settings.wal_dsync_small_flush_bytes = config.wal.dsync_small_flush_bytes;
                    settings.wal_segment_bytes = config.wal.segment_bytes;
                    Some(Box::new(config))
                }
                None => None,
            };
            Deployment::Processes {
                binary,
                base,
                cluster_id: args.cluster_id.unwrap_or(CLUSTER_ID),
            }
        }
        Shape::Target => {
            settings.nodes = args.target.len();
            Deployment::Target {
                addresses: args.target.clone(),
                cluster_id: args.cluster_id.context("--target needs --cluster-id")?,
            }
        }
    };
    let points: Vec<Settings> = match &args.sweep {
        Some(sweep) => sweep
            .values
            .iter()
            .map(|&value| settings.at(sweep.axis, value))
            .collect(),
        None => vec![settings.clone()],
    };
    let dir = tempfile::tempdir().context("creating the benchmark's temp dir")?;
    let machine = Machine::detect(dir.path());
    let command = command_line();
    if !args.json {
        println!(
            "coraft cluster benchmark: {}",
            match settings.shape {
                Shape::Embedded => format!(
                    "{} node(s) in this process on loopback, WAL fdatasync on",
                    settings.nodes
                ),
                Shape::Processes => format!("{} coraft-node processes on loopback, WAL fdatasync on", settings.nodes),
                Shape::Target => format!(
                    "the running cluster at {} (cluster id {})",
                    args.target.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
                    args.cluster_id.unwrap_or_default()
                ),
            }
        );
        println!("  machine  {}", machine.describe());
        println!("  command  {command}");
        println!("  config   {}", settings.describe());
        if let Some(sweep) = &args.sweep {
            println!(
                "  sweep    {} over {:?}",
                serde_json::to_string(&sweep.axis).unwrap_or_default().trim_matches('"'),
                sweep.values
            );
        }
    }
    let mut results = Vec::new();
    for (index, point) in points.iter().enumerate() {
        if args.sweep.is_some() && !args.json {
            eprintln!("point {} of {}: {}", index + 1, points.len(), point.describe());
        }
        let mut result = run_point(point, &deployment, dir.path(), args.json)?;
        if point.write_baseline && point.transfer_leaders_at_s.is_none() {
            // The ratio the read target is stated in: the same clients on
            // the same machine minutes apart, writes only.
            if !args.json {
                eprintln!("write-only baseline: the same clients writing only (--no-write-baseline skips it)");
            }
            let mut writes = point.clone();
            writes.workload = Workload::Write;
            writes.read_ratio = 0.0;
            writes.replication_floor = false;
            writes.write_baseline = false;
            let baseline = run_point(&writes, &deployment, dir.path(), true).context("the write-only baseline")?;
            result.write_baseline = Some(WriteBaseline {
                ops_per_s: baseline.ops_per_s(),
                cpu_us_per_op: baseline.cpu_us_per_op(),
                p50_us: baseline.quantile(0.5),
            });
        }
        if args.json {
            println!("{}", json_line(&result, &machine, &command));
        } else if args.sweep.is_some() {
            if index == 0 {
                print_row_header();
            }
            print_row(&result);
        } else {
            print_table(&result);
        }
        results.push(result);
    }
    if let Some(path) = &args.report {
        let page = crate::report::page(&results, &machine, &command, args.sweep.as_ref().map(|s| s.axis));
        std::fs::write(path, page).with_context(|| format!("writing the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// Starts a cluster for `settings` in `dir`, drives it, shuts it down.
fn run_point(settings: &Settings, deployment: &Deployment, dir: &Path, json: bool) -> Result<PointResult> {
    let fsync_us = fsync_floor_p50_us(dir)?;
    let rtt_us = tcp_rtt_floor_p50_us()?;
    // One replicated write cannot take less than the client's round trip,
    // the leader's round trip to a follower, and that follower's fdatasync
    // (the leader's own runs beside it); one node needs no follower. A read
    // takes the client's round trip, plus the leader's heartbeat round for
    // a ReadIndex, plus the follower's round trip to the leader for a
    // follower read.
    let replicated = settings.nodes > 1;
    let floors = Floors {
        fsync_p50_us: fsync_us,
        tcp_rtt_p50_us: rtt_us,
        write_us: if replicated {
            2 * rtt_us + fsync_us
        } else {
            rtt_us + fsync_us
        },
        read_us: match settings.read_mode {
            _ if !replicated => rtt_us,
            ReadPath::Lease => rtt_us,
            ReadPath::ReadIndex => 2 * rtt_us,
            ReadPath::Follower => 3 * rtt_us,
            ReadPath::Stale => rtt_us,
        },
    };
    // The same closed loop on blocking threads with nothing but the physical
    // work: what this machine allows three replicating logs (see `floor`).
    let floor_refusal = crate::floor::refusal(settings.nodes, settings.clients, settings.payload);
    let wants_floor = settings.replication_floor
        && crate::floor::FLOOR_NODES.contains(&settings.nodes)
        && settings.shape != Shape::Target;
    if settings.shape == Shape::Target && settings.replication_floor && !json {
        eprintln!("no replication floor with --target: it measures this machine, not the cluster's hosts");
    }
    if wants_floor && settings.workload != Workload::Write {
        eprintln!("no replication floor in this run: it measures writes only");
    } else if let (true, Some(refusal)) = (wants_floor, &floor_refusal) {
        eprintln!("no replication floor in this run: {refusal}");
    }
    let replication_floor = if wants_floor && settings.workload == Workload::Write && floor_refusal.is_none() {
        let floor_options = crate::floor::FloorOptions {
            nodes: settings.nodes,
            clients: settings.clients,
            payload: settings.payload,
            drivers: settings.drivers.min(settings.clients),
            duration: Duration::from_secs(settings.duration_s).min(FLOOR_DURATION_MAX),
            warmup: Duration::from_secs(settings.warmup_s).min(FLOOR_WARMUP_MAX),
        };
        if !json {
            eprintln!(
                "replication floor: {} s on blocking threads (--no-floor skips it)",
                floor_options.duration.as_secs()
            );
        }
        Some(crate::floor::run_floor(dir, &floor_options).context("the replication floor")?)
    } else {
        None
    };
    let groups: Vec<GroupId> = (1..=settings.groups).map(GroupId).collect();
    let run_dir = tempfile::tempdir_in(dir).context("creating the run's WAL dir")?;
    let mut stages = Vec::new();
    let mut point = settings.clone();
    let outcome = match (settings.shape, deployment) {
        (Shape::Embedded, _) => {
            let addresses = free_addresses(settings.nodes * settings.shards)?;
            let peers: Vec<PeerSpec> = (0..settings.nodes)
                .map(|n| PeerSpec {
                    id: NodeId(n as u64 + 1),
                    shard_addresses: addresses[n * settings.shards..(n + 1) * settings.shards].to_vec(),
                })
                .collect();
            let factory: StateMachineFactory = match settings.state_machine {
                StateMachineKind::Counter => Arc::new(|_| Box::new(CommandCounter::default())),
                StateMachineKind::Kv => Arc::new(|_| Box::new(KvStore::default())),
            };
            // Every wait on the nodes below ends, or the run does.
            let guard = crate::step_guard::StepGuard::start();
            let mut nodes = Vec::new();
            for peer in &peers {
                let node_options = NodeOptions {
                    cluster_id: CLUSTER_ID,
                    node_id: peer.id,
                    peers: peers.clone(),
                    shard_cores: shard_cores(settings),
                    helper_cores: None,
                    wal_dir: run_dir.path().join(format!("node-{}", peer.id)),
                    shard_wal_dirs: Vec::new(),
                    wal_segment_bytes: settings.wal_segment_bytes,
                    wal_zero_ahead_bytes: settings.wal_zero_ahead_bytes,
                    wal_polled_io: false,
                    wal_dsync_small_flush_bytes: settings.wal_dsync_small_flush_bytes,
                    groups: groups.clone(),
                    tick: Duration::from_millis(10),
                    election_timeout_ticks: 30,
                    heartbeat_interval_ticks: 3,
                    read_mode: match settings.read_mode {
                        ReadPath::Lease => ReadMode::Lease,
                        ReadPath::ReadIndex | ReadPath::Follower | ReadPath::Stale => ReadMode::Safe,
                    },
                    protocol: Default::default(),
                    limits: Default::default(),
                    spin_before_park: settings.spin_before_park_us.map(Duration::from_micros),
                    metrics_listen: None,
                    quiesce_idle_groups: true,
                    request_timeout: coraft::runtime::REQUEST_TIMEOUT,
                    session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
                    snapshot: coraft::runtime::SnapshotPolicy::default(),
                };
                guard.step(format!("starting node {} ({} shards)", peer.id, settings.shards));
                nodes.push(
                    Node::start(node_options, factory.clone())
                        .map_err(|e| anyhow!("starting node {}: {e}", peer.id))?,
                );
            }
            guard.step("waiting for every group's leader");
            let outcome = embedded_leaders(&nodes, &groups).and_then(|leaders| {
                guard.idle();
                let cluster = Remote {
                    cluster_id: CLUSTER_ID,
                    addresses: peers.iter().map(|p| (p.id, p.shard_addresses.clone())).collect(),
                    leaders,
                };
                drive(settings, &cluster, json, &process_cpu)
            });
            // Where the time went, per node, from the engine's own metrics.
            for node in &nodes {
                guard.step(format!("reading node {}'s metrics", node.id()));
                for shard in node.metrics() {
                    stages.push((node.id(), shard));
                }
            }
            for node in nodes {
                guard.step(format!("shutting down node {}", node.id()));
                node.shutdown();
            }
            drop(guard);
            outcome
        }
        (
            Shape::Processes,
            Deployment::Processes {
                binary,
                base,
                cluster_id,
            },
        ) => {
            let spec = crate::shape::ProcessesSpec {
                binary,
                base: base.as_deref(),
                cluster_id: *cluster_id,
                nodes: settings.nodes,
                shards: settings.shards,
                groups: settings.groups,
                state_machine: settings.state_machine,
                read_mode: settings.read_mode,
                spin_before_park_us: settings.spin_before_park_us,
                shard_cores: settings.shard_cores.clone(),
                wal_zero_ahead_bytes: settings.wal_zero_ahead_bytes,
                wal_dsync_small_flush_bytes: settings.wal_dsync_small_flush_bytes,
                wal_segment_bytes: settings.wal_segment_bytes,
            };
            let mut processes = crate::shape::Processes::start(&spec, run_dir.path())?;
            let cluster = processes.discover(*cluster_id, &groups)?;
            let killer = settings.kill_leader_at_s.map(|at_s| {
                kill_leader_at(
                    &processes,
                    &cluster,
                    &groups,
                    Instant::now() + Duration::from_secs(at_s),
                )
            });
            let outcome = drive(settings, &cluster, json, &|| process_cpu() + processes.cpu());
            if let Some(killer) = killer {
                killer
                    .join()
                    .map_err(|_| anyhow!("the thread killing the leader panicked"))?;
            }
            // (A killed node shows here too: it names what the drivers met.)
            // A node that died mid-run explains the drivers' errors.
            match (outcome, processes.check_running()) {
                (Err(error), Err(exited)) => Err(error.context(format!("{exited:#}"))),
                (outcome, _) => outcome,
            }
        }
        (Shape::Target, Deployment::Target { addresses, cluster_id }) => {
            let cluster = crate::shape::discover(addresses, *cluster_id, &groups, crate::shape::target_timeout())?;
            // The running nodes decide how many shards they have.
            point.nodes = cluster.addresses.len();
            point.shards = cluster.shards();
            drive(&point, &cluster, json, &process_cpu)
        }
        (shape, _) => bail!("no deployment for the {} shape", shape.name()),
    };
    let (driven, cpu, timeline, errors, not_leader, leader_change) = outcome?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut reads, mut writes, mut unsent) = (0, 0, 0);
    for result in driven {
        latency_us.add(&result.latency_us).ok();
        reads += result.reads;
        writes += result.writes;
        unsent += result.unsent;
    }
    Ok(PointResult {
        settings: point,
        floors,
        latency_us,
        reads,
        writes,
        errors,
        not_leader,
        leader_change,
        unsent,
        cpu,
        timeline,
        replication_floor,
        stages,
        write_baseline: None,
    })
}

type Driven = (
    Vec<DriverResult>,
    Duration,
    Vec<u64>,
    u64,
    u64,
    Option<crate::workload::LeaderChange>,
);

/// Waits for leaders, runs the drivers, samples progress each second.
/// Each shard's CPU per `--shard-cores` (the same on every node), or unpinned.
fn shard_cores(settings: &Settings) -> Vec<Option<usize>> {
    match &settings.shard_cores {
        Some(cores) if !cores.is_empty() => (0..settings.shards).map(|s| Some(cores[s % cores.len()])).collect(),
        _ => vec![None; settings.shards],
    }
}

/// `--kill-leader-at`: a thread that kills with SIGKILL, at `at`, the
/// process of the node that led the first group when the run started.
fn kill_leader_at(
    processes: &crate::shape::Processes,
    cluster: &Remote,
    groups: &[GroupId],
    at: Instant,
) -> std::thread::JoinHandle<()> {
    let leader = cluster.leaders[&groups[0]];
    // Node n is the n-th process (`Processes::start`).
    let pid = processes.processes[leader.0 as usize - 1].child.id();
    std::thread::spawn(move || {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        eprintln!("killing node {leader} (pid {pid}), the first group's leader (--kill-leader-at)");
        // SAFETY: SIGKILL to our own child, not reaped yet (its pid cannot
        // have been reused).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    })
}

/// Waits for a leader in every group of the nodes in this process.
fn embedded_leaders(nodes: &[Node], groups: &[GroupId]) -> Result<std::collections::BTreeMap<GroupId, NodeId>> {
    let mut leaders = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leaders.len() < groups.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every group elected a leader within 30 s"
        );
        for &group in groups {
            for node in nodes {
                let status = futures_lite::future::block_on(node.group(group).status()).map_err(|e| anyhow!("{e}"))?;
                if status.role == Role::Leader {
                    leaders.insert(group, status.node);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(leaders)
}

/// Runs the drivers against `cluster`'s leaders, samples progress each
/// second; `cpu` reads the CPU time the run is charged with.
fn drive(settings: &Settings, cluster: &Remote, json: bool, cpu: &dyn Fn() -> Duration) -> Result<Driven> {
    let leaders = &cluster.leaders;
    let groups: Vec<GroupId> = leaders.keys().copied().collect();
    let node_ids: Vec<NodeId> = cluster.addresses.keys().copied().collect();
    // Clients: round-robin over groups; drivers: per (target node, shard).
    // The target is the group's leader, or for follower reads the next node.
    let target_of = |group: GroupId| -> NodeId {
        let leader: NodeId = leaders[&group];
        match settings.read_mode {
            ReadPath::Follower | ReadPath::Stale => {
                let at = node_ids.iter().position(|&n| n == leader).unwrap_or(0);
                node_ids[(at + 1) % node_ids.len()]
            }
            _ => leader,
        }
    };
    let mut by_target: std::collections::BTreeMap<(NodeId, usize), Vec<(u64, GroupId)>> = Default::default();
    for client in 0..settings.clients {
        let group = groups[client % groups.len()];
        let shard = (group.0 % settings.shards as u64) as usize;
        by_target
            .entry((target_of(group), shard))
            .or_default()
            .push((client as u64 + 1, group));
    }
    // Every node gets a driver per shard, with or without clients: a client
    // whose group's leader moves is handed to the new leader's driver.
    let per_target = settings.drivers.div_ceil(by_target.len()).max(1);
    let mut drivers = crate::workload::plan_drivers(
        cluster.cluster_id,
        &cluster.addresses,
        by_target,
        per_target,
        settings.read_mode.consistency(),
    )?;
    // Open loop: each driver offers its clients' share of the rate.
    if let Some(rate) = settings.rate {
        // (A driver that starts without clients drives the ones handed to
        // it closed loop.)
        for driver in drivers.iter_mut().filter(|driver| !driver.clients.is_empty()) {
            driver.rate = Some(rate as f64 * driver.clients.len() as f64 / settings.clients as f64);
        }
    }
    let mix = Mix {
        workload: settings.workload,
        read_ratio: settings.read_ratio,
        state_machine: settings.state_machine,
        keys: settings.keys,
        payload: settings.payload,
    };
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let warmup = Duration::from_secs(settings.warmup_s);
    let measure_from = started + warmup;
    let stop_at = measure_from + Duration::from_secs(settings.duration_s);
    let mut handles: Vec<_> = drivers
        .into_iter()
        .map(|driver| {
            let (mix, totals) = (mix.clone(), totals.clone());
            std::thread::spawn(move || crate::workload::run_driver(driver, mix, measure_from, stop_at, totals))
        })
        .collect();
    // `--transfer-leaders-at`: every group's leadership to the next node,
    // over the admin protocol (served on each node's first shard address).
    let transfer = settings.transfer_leaders_at_s.map(|at_s| {
        let addresses: Vec<SocketAddr> = cluster
            .addresses
            .values()
            .filter_map(|addresses| addresses.first().copied())
            .collect();
        let (cluster_id, groups) = (cluster.cluster_id, groups.clone());
        std::thread::spawn(move || {
            std::thread::sleep((started + Duration::from_secs(at_s)).saturating_duration_since(Instant::now()));
            crate::workload::transfer_leaders(&addresses, cluster_id, &groups, started)
        })
    });
    // One sample a second: progress on stderr, and the measured seconds'
    // throughput for the report.
    let mut cpu_at_start = warmup.is_zero().then(cpu);
    let mut timeline = Vec::new();
    let (mut last_answered, mut last_completed) = (0, 0);
    let seconds = settings.warmup_s + settings.duration_s;
    let (lead, tail) = if std::io::stderr().is_terminal() {
        ("\r", "   ")
    } else {
        ("", "\n")
    };
    let mut results = Vec::new();
    for second in 1..=seconds {
        let at = started + Duration::from_secs(second);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        // A driver runs until the end of the run unless it failed (a node
        // that stopped answering, see DRIVER_READ_TIMEOUT): its error ends
        // the run now rather than after the rest of the duration.
        while let Some(at) = handles.iter().position(|handle| handle.is_finished()) {
            let result = handles
                .swap_remove(at)
                .join()
                .map_err(|_| anyhow!("a driver thread panicked"))?;
            results.push(result?);
        }
        let answered = totals.answered.load(Ordering::Relaxed);
        let completed = totals.completed.load(Ordering::Relaxed);
        if second == settings.warmup_s {
            cpu_at_start = Some(cpu());
        }
        if second > settings.warmup_s {
            timeline.push(completed - last_completed);
        }
        let phase = if second <= settings.warmup_s {
            "warming up"
        } else {
            "measuring"
        };
        let errors = totals.errors.load(Ordering::Relaxed);
        let not_leader = totals.not_leader.load(Ordering::Relaxed);
        if !json || std::io::stderr().is_terminal() {
            eprint!(
                "{lead}{phase}: {:>10} ops/s, {errors} errors, {not_leader} NotLeader{tail}",
                answered - last_answered
            );
            let _ = std::io::stderr().flush();
        }
        (last_answered, last_completed) = (answered, completed);
    }
    if !json || std::io::stderr().is_terminal() {
        eprintln!();
    }
    let cpu = cpu().saturating_sub(cpu_at_start.unwrap_or_default());
    for handle in handles {
        results.push(handle.join().map_err(|_| anyhow!("a driver thread panicked"))??);
    }
    let not_leader = totals.not_leader.load(Ordering::Relaxed);
    let leader_change = crate::workload::join_leader_transfer(transfer, not_leader)?;
    Ok((
        results,
        cpu,
        timeline,
        totals.errors.load(Ordering::Relaxed),
        not_leader,
        leader_change,
    ))
}

fn json_line(result: &PointResult, machine: &Machine, command: &str) -> String {
    let s = &result.settings;
    let q = |quantile: f64| result.quantile(quantile);
    // Field order as documented (serde_json would sort the keys).
    format!(
        "{{\"system\":\"coraft\",\"shape\":\"{}\",\"workload\":\"{}\",\"nodes\":{},\"groups\":{},\"shards\":{},\"clients\":{},\
         \"payload\":{},\"duration_s\":{},\"ops\":{},\"ops_per_s\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\
         \"p999_us\":{},\"max_us\":{},\"errors\":{},\"not_leader\":{},\"fsync\":true,\"fsync_floor_p50_us\":{},\"tcp_rtt_floor_p50_us\":{},\
         \"write_floor_us\":{},\"cpu_us_per_op\":{:.2}{},\"read_floor_us\":{},\"floor_us\":{:.0},\"reads\":{},\"writes\":{},\
         \"unsent\":{},\"cpu_scope\":\"{}\"{}{},\"timeline_ops_per_s\":{},\"config\":{},\"machine\":{},\"command\":{}}}",
        s.shape.name(),
        s.workload.name(),
        s.nodes,
        s.groups,
        s.shards,
        s.clients,
        s.payload,
        s.duration_s,
        result.ops(),
        result.ops_per_s(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        result.latency_us.max(),
        result.errors,
        result.not_leader,
        result.floors.fsync_p50_us,
        result.floors.tcp_rtt_p50_us,
        result.floors.write_us,
        result.cpu_us_per_op(),
        result
            .replication_floor
            .as_ref()
            .map(|f| format!(
                ",\"floor_ops_per_s\":{:.0},\"floor_p50_us\":{},\"floor_p99_us\":{},\"floor_cpu_us_per_op\":{:.2}",
                f.ops_per_s,
                f.latency_us.value_at_quantile(0.5),
                f.latency_us.value_at_quantile(0.99),
                f.cpu_us_per_op
            ))
            .unwrap_or_default(),
        result.floors.read_us,
        result.floor_us(),
        result.reads,
        result.writes,
        result.unsent,
        cpu_scope(s.shape),
        result
            .leader_change
            .as_ref()
            .map(|change| format!(
                ",\"leader_change\":{}",
                serde_json::to_string(change).expect("a leader change serializes")
            ))
            .unwrap_or_default(),
        floors_note(s.shape)
            .map(|note| format!(",\"floors_note\":{}", serde_json::to_string(note).expect("a string serializes")))
            .unwrap_or_default()
            + &result
                .write_baseline
                .as_ref()
                .map(|b| format!(
                    ",\"write_only_ops_per_s\":{:.0},\"write_only_cpu_us_per_op\":{:.2},\"write_only_p50_us\":{},\
                     \"ops_over_write_only\":{:.2}",
                    b.ops_per_s,
                    b.cpu_us_per_op,
                    b.p50_us,
                    result.ops_per_s() / b.ops_per_s.max(1.0)
                ))
                .unwrap_or_default(),
        serde_json::to_string(&result.timeline).expect("numbers serialize"),
        serde_json::to_string(s).expect("settings serialize"),
        serde_json::to_string(machine).expect("the machine serializes"),
        serde_json::to_string(command).expect("a string serializes"),
    )
}

/// Whose CPU time `cpu_us_per_op` counts.
fn cpu_scope(shape: Shape) -> &'static str {
    match shape {
        Shape::Embedded => "bench and nodes (one process)",
        Shape::Processes => "bench and node processes",
        Shape::Target => "bench only",
    }
}

/// What the floors of a shape do not cover.
fn floors_note(shape: Shape) -> Option<&'static str> {
    (shape == Shape::Target).then_some(
        "--target: the fdatasync and RTT floors are this machine's (its temp dir, loopback), not the \
         cluster's hosts'; no replication floor",
    )
}

fn print_row_header() {
    println!(
        "  {:>7} {:>7} {:>6} {:>6} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7}",
        "clients",
        "payload",
        "groups",
        "shards",
        "rate",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "floor µs",
        "p50/fl",
        "CPU µs/op",
        "errors"
    );
}

fn print_row(result: &PointResult) {
    let s = &result.settings;
    println!(
        "  {:>7} {:>7} {:>6} {:>6} {:>9} {:>12.0} {:>9} {:>9} {:>9} {:>9.0} {:>7.2} {:>9.2} {:>7}",
        s.clients,
        s.payload,
        s.groups,
        s.shards,
        s.rate.map_or("closed".into(), |rate| rate.to_string()),
        result.ops_per_s(),
        result.quantile(0.5),
        result.quantile(0.99),
        result.quantile(0.999),
        result.floor_us(),
        result.quantile(0.5) as f64 / result.floor_us().max(1.0),
        result.cpu_us_per_op(),
        result.errors + result.unsent,
    );
}

fn print_table(result: &PointResult) {
    let s = &result.settings;
    let q = |quantile: f64| result.quantile(quantile);
    let seconds = s.duration_s as f64;
    let what = match s.workload {
        Workload::Write => "writes/s",
        Workload::Read => "reads/s",
        Workload::Mixed => "ops/s",
    };
    println!("  {what:<15} {:>12.0}", result.ops_per_s());
    if s.workload == Workload::Mixed {
        println!("  reads, writes   {:>12}, {} (measured)", result.reads, result.writes);
    }
    if let Some(b) = &result.write_baseline {
        println!(
            "  write-only      {:>12.0} writes/s, p50 {} µs, {:.2} µs CPU per write (the same clients writing only, \
             measured right after); ops/s over it {:.2}",
            b.ops_per_s,
            b.p50_us,
            b.cpu_us_per_op,
            result.ops_per_s() / b.ops_per_s.max(1.0)
        );
    }
    if let Some(rate) = s.rate {
        println!(
            "  offered         {:>12} /s (open loop; latency from each request's due time), {} never sent",
            rate, result.unsent
        );
    }
    println!("  latency p50     {:>9} µs", q(0.5));
    println!("  latency p90     {:>9} µs", q(0.9));
    println!("  latency p99     {:>9} µs", q(0.99));
    println!("  latency p99.9   {:>9} µs", q(0.999));
    println!("  latency max     {:>9} µs", result.latency_us.max());
    println!("  errors          {:>12}", result.errors);
    println!(
        "  NotLeader       {:>12} (each sent again, to the leader named or the next node)",
        result.not_leader
    );
    if let Some(change) = &result.leader_change {
        println!(
            "  leaders moved   {:>12} group(s) to the next node, asked at {:.1} s, in place at {:.1} s",
            change.groups_moved, change.asked_at_s, change.done_at_s
        );
    }
    let floors = &result.floors;
    println!(
        "  fdatasync floor {:>9} µs (p50 of 4 KiB O_DIRECT write + fdatasync, same disk)",
        floors.fsync_p50_us
    );
    if s.workload == Workload::Write {
        println!(
            "  p50 / floor     {:>12.2}",
            q(0.5) as f64 / floors.fsync_p50_us.max(1) as f64
        );
    }
    println!(
        "  TCP RTT floor   {:>9} µs (p50 of a 64-byte loopback ping-pong)",
        floors.tcp_rtt_p50_us
    );
    if s.workload != Workload::Read {
        println!(
            "  write floor     {:>9} µs ({}; p50 / this {:.2})",
            floors.write_us,
            if s.nodes > 1 {
                "2 RTT + fdatasync: client to leader, leader to follower"
            } else {
                "RTT + fdatasync"
            },
            q(0.5) as f64 / floors.write_us.max(1) as f64
        );
    }
    if s.workload != Workload::Write {
        println!(
            "  read floor      {:>9} µs ({}; p50 / this {:.2})",
            floors.read_us,
            match s.read_mode {
                _ if s.nodes == 1 => "RTT",
                ReadPath::Lease => "RTT: client to leader",
                ReadPath::ReadIndex => "2 RTT: client to leader, heartbeat round",
                ReadPath::Follower => "3 RTT: client to follower, follower to leader, heartbeat round",
                ReadPath::Stale => "RTT: client to follower, no leader contact",
            },
            q(0.5) as f64 / floors.read_us.max(1) as f64
        );
    }
    println!(
        "  CPU per op      {:>9.2} µs (user + system time of the {} while measuring; {:.2} cores busy)",
        result.cpu_us_per_op(),
        cpu_scope(s.shape),
        result.cpu.as_secs_f64() / seconds
    );
    if let Some(f) = &result.replication_floor {
        let fq = |quantile: f64| f.latency_us.value_at_quantile(quantile);
        println!(
            "  replication floor {:>7.0} writes/s, p50 {} µs, p99 {} µs, {:.2} µs CPU per write, \
             flush p50/p99 {}/{} µs ({} log(s) group-committing, loopback, blocking threads, no Raft; \
             `coraft-bench floor --nodes {}`)",
            f.ops_per_s,
            fq(0.5),
            fq(0.99),
            f.cpu_us_per_op,
            f.flush_us.value_at_quantile(0.5),
            f.flush_us.value_at_quantile(0.99),
            s.nodes,
            s.nodes
        );
        println!(
            "  against the floor   {:>5.2} of its writes/s, p50 {:.2}×, p99 {:.2}×",
            result.ops_per_s() / f.ops_per_s.max(1.0),
            q(0.5) as f64 / fq(0.5).max(1) as f64,
            q(0.99) as f64 / fq(0.99).max(1) as f64
        );
    }
    if let Some(note) = floors_note(s.shape) {
        println!("  floors note     {note}");
    }
    if result.stages.is_empty() {
        return;
    }
    println!("  where the time goes (per node and shard, whole run incl. warm-up):");
    println!(
        "    node shard  leads  turns   stalls  WAL syncs  sync p50/p99 µs   proposal→result p50/p99 µs  turn p99 µs"
    );
    for (node, m) in &result.stages {
        println!(
            "    {:>4} {:>5} {:>6} {:>6} {:>8} {:>10} {:>8}/{:<8} {:>12}/{:<14} {:>10}",
            node,
            m.shard,
            m.groups_led,
            m.turns,
            m.stalls,
            m.wal_syncs,
            m.wal_sync_us.value_at_quantile(0.5),
            m.wal_sync_us.value_at_quantile(0.99),
            m.proposal_us.value_at_quantile(0.5),
            m.proposal_us.value_at_quantile(0.99),
            m.turn_us.value_at_quantile(0.99),
        );
    }
    println!("  stages of a write on the leaders, p50/p99 µs:");
    println!("    node shard     queue wait   replication RTT   proposal→commit   apply batch");
    for (node, m) in result.stages.iter().filter(|(_, m)| m.groups_led > 0) {
        let pair = |h: &Histogram<u64>| format!("{}/{}", h.value_at_quantile(0.5), h.value_at_quantile(0.99));
        println!(
            "    {:>4} {:>5} {:>14} {:>17} {:>17} {:>13}",
            node,
            m.shard,
            pair(&m.queue_us),
            pair(&m.replication_us),
            pair(&m.commit_us),
            pair(&m.apply_us),
        );
    }
}

/// p50 of a 64-byte ping-pong over loopback TCP between two threads, in
/// microseconds: the floor of one network hop and back.
fn tcp_rtt_floor_p50_us() -> Result<u64> {
    use std::io::{Read, Write};
    const ROUNDS: usize = 2000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the RTT floor's listener")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; 64];
        for _ in 0..ROUNDS {
            stream.read_exact(&mut buffer)?;
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(address).context("connecting to the RTT floor's listener")?;
    stream.set_nodelay(true)?;
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut buffer = [0x5au8; 64];
    for _ in 0..ROUNDS {
        let started = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        histogram.record(started.elapsed().as_micros() as u64).ok();
    }
    echo.join()
        .map_err(|_| anyhow!("the RTT floor's echo thread panicked"))?
        .context("the RTT floor's echo")?;
    Ok(histogram.value_at_quantile(0.5))
}

/// User + system CPU time of this process so far (every thread: the nodes'
/// executors, their io_uring workers, the drivers).
pub(crate) fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// p50 of a 4 KiB O_DIRECT write + fdatasync in `dir`: the floor of a durable write.
fn fsync_floor_p50_us(dir: &std::path::Path) -> Result<u64> {
    let path = dir.join("fsync-floor");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
    // SAFETY: the layout is non-zero; the buffer is freed below.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    anyhow::ensure!(!buffer.is_null(), "allocating an aligned buffer");
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut result = Ok(());
    for round in 0..300u64 {
        let started = Instant::now();
        // SAFETY: buffer holds 4096 bytes, aligned as O_DIRECT requires.
        let written = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                buffer as *const libc::c_void,
                4096,
                (round % 64) as i64 * 4096,
            )
        };
        // SAFETY: a valid open file descriptor.
        let synced = unsafe { libc::fdatasync(file.as_raw_fd()) };
        if written != 4096 || synced != 0 {
            result = Err(anyhow!(
                "raw write + fdatasync failed: {}",
                std::io::Error::last_os_error()
            ));
            break;
        }
        histogram.record(started.elapsed().as_micros() as u64).ok();
    }
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(buffer, layout) };
    let _ = std::fs::remove_file(&path);
    result.map(|()| histogram.value_at_quantile(0.5))
}

fn free_addresses(count: usize) -> Result<Vec<SocketAddr>> {
    Ok(coraft::ports::free_loopback_addresses(count)?)
}
