//! The node configuration: one TOML file describes one node of a cluster.
//!
//! This is the first thing a node reads. It says who the node is (cluster and
//! node ids, addresses, the voters), how many shards it runs and on which
//! cores, where each shard's WAL lives and whether it fsyncs, the Raft timing
//! and every bound on a batch, a queue or a window. Parsing only checks syntax
//! and types (unknown keys are refused); [`NodeConfig::validate`] checks the
//! values against each other and against the machine, and places the shards.
//!
//! Names carry their unit last (`tick_ms`, `segment_bytes`,
//! `election_timeout_ticks`); every numeric field has a named default here and
//! a named hard limit in [`crate::limits`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{TextLocation, TuningError};

/// Default listen address of [`NodeConfig::default`].
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7001";
/// Default shard count.
pub const SHARD_COUNT_DEFAULT: usize = 1;
/// Default spin before an idle executor parks, in microseconds: none.
pub const SPIN_BEFORE_PARK_US_DEFAULT: u64 = 0;
/// WAL parent directory of [`NodeConfig::default`]; a parsed config has no
/// default directory and must name one.
pub const WAL_DIR_DEFAULT: &str = "coraft-wal";
/// Default WAL segment size: 64 MiB (as `coraft_wal::SEGMENT_BYTES_DEFAULT`).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default distance an idle WAL zeroes ahead of its end: 64 MiB, a whole
/// default segment (as `coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT`).
pub const ZERO_AHEAD_BYTES_DEFAULT: u64 = 64 << 20;
/// Default tick: 10 ms.
pub const TICK_MS_DEFAULT: u64 = 10;
/// Default base election timeout, in ticks (each term draws from `[T, 2T)`).
pub const ELECTION_TIMEOUT_TICKS_DEFAULT: u64 = 10;
/// Default leader heartbeat interval, in ticks.
pub const HEARTBEAT_INTERVAL_TICKS_DEFAULT: u64 = 2;
/// Default clock drift margin of lease reads, in ticks.
pub const CLOCK_DRIFT_MARGIN_TICKS_DEFAULT: u64 = 2;
/// Default bound on the proposals of one group handed to its core at once.
pub const BATCH_ENTRIES_MAX_DEFAULT: usize = 4096;
/// Default bound on the entry bytes of one AppendEntries: 1 MiB.
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 1 << 20;
/// Default bound on AppendEntries messages in flight to one follower.
pub const INFLIGHT_MESSAGES_MAX_DEFAULT: usize = 256;
/// Default bound on entry bytes in flight to one follower: 16 MiB.
pub const INFLIGHT_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default bound on proposed-but-uncommitted bytes of a leader: 64 MiB.
pub const UNCOMMITTED_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default bound on bytes queued to one peer connection: 4 MiB
/// (as `coraft_net::OUTBOUND_QUEUE_BYTES_MAX`).
pub const OUTBOUND_QUEUE_BYTES_MAX_DEFAULT: u64 = 4 << 20;
/// Default bound on the Raft groups one node hosts.
pub const GROUPS_MAX_DEFAULT: usize = 100_000;
/// Default `snapshot.after_entries`: 0, no snapshot by entry count.
pub const SNAPSHOT_AFTER_ENTRIES_DEFAULT: u64 = 0;
/// Default `snapshot.after_log_bytes`: a snapshot once a group applied
/// 32 MiB of log since its last one (what its log holds in memory, above the
/// tail, before compaction).
pub const SNAPSHOT_AFTER_LOG_BYTES_DEFAULT: u64 = 32 << 20;
/// Default `snapshot.shard_after_log_bytes`: 256 MiB. Once the groups of
/// one shard together applied this many log bytes since their last
/// snapshots, the one holding the most takes a snapshot: the bound on what
/// a shard's logs hold in memory above their tails, however many groups it
/// has (the per-group trigger alone lets `groups × after_log_bytes` pile up).
pub const SNAPSHOT_SHARD_AFTER_LOG_BYTES_DEFAULT: u64 = 256 << 20;
/// Default `snapshot.interval_ms`: one hour (a group that applied anything).
pub const SNAPSHOT_INTERVAL_MS_DEFAULT: u64 = 3_600_000;
/// Default `snapshot.log_tail_entries`: entries kept below a snapshot for
/// slow followers (the engine's `SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT`).
pub const SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT: u64 = 4096;
/// Default `snapshot.install_bytes_per_second`: 64 MiB/s, the pace of all
/// InstallSnapshot streams one shard sends (the engine's
/// `SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT`).
pub const SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT: u64 = 64 << 20;

/// One node's configuration, as read from TOML.
///
/// `cluster_id`, `node_id`, `listen`, `peers` and a WAL directory are
/// required; everything else has a default. [`NodeConfig::default`] is a
/// single-voter cluster on [`LISTEN_DEFAULT`] logging under
/// [`WAL_DIR_DEFAULT`] (relative to the working directory), handy for tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The cluster; the handshake refuses peers of another cluster.
    pub cluster_id: u64,
    /// This node; must be one of `peers` (0 is reserved for "no node").
    pub node_id: u64,
    /// Address the node binds for Raft and client traffic.
    pub listen: SocketAddr,
    /// Address of the Prometheus HTTP endpoint; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Every voter, this node included: its id and the address others dial.
    pub peers: Vec<Peer>,
    /// Shards (glommio executors) and their cores.
    #[serde(default)]
    pub shards: ShardSettings,
    /// Write-ahead log placement and durability.
    #[serde(default)]
    pub wal: WalSettings,
    /// Raft timing and protocol options.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Bounds on batches, windows and queues.
    #[serde(default)]
    pub limits: Limits,
    /// What `coraft-node` logs to stderr.
    #[serde(default)]
    pub log: LogSettings,
    /// When each group takes a snapshot and how much log it keeps.
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    /// Where the node's threads that are not shard executors run.
    #[serde(default, skip_serializing_if = "HelperThreadSettings::is_auto")]
    pub helper_threads: HelperThreadSettings,
}

/// The `[helper_threads]` section: the CPUs of every thread a node runs
/// that is not a shard's executor: each shard's blocking thread (glommio's
/// pool of one, which writes snapshots and received install chunks off the
/// shard's loop), the metrics endpoint's
/// thread and `coraft-node`'s main thread.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HelperThreadSettings {
    /// `[2, 3]`: every helper thread may run on these CPUs (any of them;
    /// the OS picks). Omitted or `"auto"`: the CPUs this process may use
    /// that no shard is pinned to, or all of them when the shards are
    /// unbound or take every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<CoreSelection>,
}

impl HelperThreadSettings {
    /// Whether the section says nothing but the default (`"auto"`).
    pub fn is_auto(&self) -> bool {
        matches!(self.cores, None | Some(CoreSelection::Auto))
    }
}

/// The `[snapshot]` section: each group takes a snapshot by itself when one
/// of the triggers fires (0 turns a trigger off), then drops its log below it
/// except a tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSettings {
    /// After this many entries applied since the group's last snapshot.
    pub after_entries: u64,
    /// After this many log bytes applied since the group's last snapshot.
    pub after_log_bytes: u64,
    /// After the shard's groups together applied this many log bytes since
    /// their last snapshots: a snapshot of the group holding the most.
    pub shard_after_log_bytes: u64,
    /// After this long since the group's last snapshot (or its start), if it
    /// applied anything since (checked when it applies).
    pub interval_ms: u64,
    /// Entries kept below a snapshot, in memory and in the WAL, so a
    /// follower that far behind is caught up entry by entry.
    pub log_tail_entries: u64,
    /// Pace of all the snapshot streams one shard sends to followers that
    /// need compacted entries (InstallSnapshot), in bytes per second, so
    /// that catching a follower up leaves the network and the disk to
    /// replication of the other groups.
    pub install_bytes_per_second: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            after_entries: SNAPSHOT_AFTER_ENTRIES_DEFAULT,
            after_log_bytes: SNAPSHOT_AFTER_LOG_BYTES_DEFAULT,
            shard_after_log_bytes: SNAPSHOT_SHARD_AFTER_LOG_BYTES_DEFAULT,
            interval_ms: SNAPSHOT_INTERVAL_MS_DEFAULT,
            log_tail_entries: SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT,
            install_bytes_per_second: SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT,
        }
    }
}

/// The least severe log records `coraft-node` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Failures only (the fail-stop error).
    Error,
    /// Failures and what an operator should look at (a torn WAL tail
    /// truncated at recovery, refused handshakes, dropped messages).
    Warn,
    /// And start-up and shutdown.
    #[default]
    Info,
    /// And the effective config and per-connection events.
    Debug,
    /// Everything.
    Trace,
}

/// The `[log]` section. The `RUST_LOG` environment variable, when set,
/// overrides `level` (and may set levels per module: `coraft::runtime=debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Least severe records printed.
    pub level: LogLevel,
}

/// A voter of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The voter's node id.
    pub id: u64,
    /// The address other nodes dial to reach it.
    pub address: SocketAddr,
}

/// How shards are placed on CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// Each shard is pinned to one CPU (glommio `Placement::Fixed`).
    #[default]
    Fixed,
    /// Shards float; the OS schedules them (glommio `Placement::Unbound`).
    /// For tests, laptops and shared machines.
    Unbound,
}

/// Which CPUs the shards use when `placement = "fixed"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSelection {
    /// `cores = "auto"`: the layout [`crate::Topology::suggest`] gives.
    Auto,
    /// `cores = [0, 1]`: shard `i` runs on CPU `cores[i]`.
    List(Vec<usize>),
}

/// The `[shards]` section: one shard is one glommio executor thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardSettings {
    /// Number of shards.
    pub count: usize,
    /// CPUs of the shards; omitted means `"auto"` with fixed placement, and
    /// must be omitted with unbound placement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<CoreSelection>,
    /// Pinned or not.
    pub placement: PlacementPolicy,
    /// How long an idle executor spins before it parks in the kernel
    /// (glommio `spin_before_park`), in microseconds; 0 parks at once.
    /// Spinning trades CPU for wake-up latency.
    pub spin_before_park_us: u64,
}

/// What the WAL does after each group commit write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fdatasync before anything is acknowledged: the only safe choice, and
    /// the only one the engine implements.
    #[default]
    Always,
    /// Never sync. The engine does not implement it (every write is
    /// fdatasync'ed), so validation refuses it rather than ignore it.
    Never,
}

/// The `[wal]` section: where each shard's log lives.
///
/// Set exactly one of `dir` (a parent: shard `i` uses `dir/shard-i`) or
/// `dirs` (one directory per shard, to spread shards over disks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalSettings {
    /// Parent directory of the shards' WAL directories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// One WAL directory per shard, in shard order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs: Option<Vec<PathBuf>>,
    /// Size of each preallocated segment file; a multiple of 4 KiB.
    pub segment_bytes: u64,
    /// How far past the log's end an idle WAL writes zeros over the
    /// preallocated segment, so that small writes overwrite blocks instead
    /// of converting unwritten extents; a multiple of 4 KiB, 0 for off.
    pub zero_ahead_bytes: u64,
    /// Let the I/O runtime put segment writes on its polled (IOPOLL) ring.
    /// Off by default: the shard's executor then spins while a write is in
    /// flight, which only pays on NVMe devices with poll queues and a core
    /// per shard (docs/wal.md, "Polled I/O").
    pub polled_io: bool,
    /// Flushes of at most this many bytes (a lone write's flush is one
    /// 4 KiB block) are one O_DSYNC write instead of a write and an
    /// fdatasync; 512 KiB by default (every flush; from 512 KiB up a flush
    /// is always one), 0 for none below that. Less CPU per write, a lower
    /// median and more writes/s on the benchmark machine; the gain depends
    /// on the device (docs/tuning.md, "WAL: small flushes as `O_DSYNC`
    /// writes"); at most 512 KiB.
    pub dsync_small_flush_bytes: usize,
    /// Sync policy.
    pub fsync: FsyncPolicy,
}

/// How a leader confirms a linearizable read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// ReadIndex: one heartbeat round per read batch confirms leadership
    /// (Raft thesis §6.4). Safe whatever the clocks do.
    #[default]
    ReadIndex,
    /// Lease: answer at once while a quorum acknowledged a recent heartbeat
    /// (thesis §6.4.1). Needs `check_quorum` and bounded clock drift.
    Lease,
}

/// The `[raft]` section: timing and protocol options shared by every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Length of one tick, the unit of every Raft timeout.
    pub tick_ms: u64,
    /// Base election timeout T; each term draws a timeout in `[T, 2T)`.
    pub election_timeout_ticks: u64,
    /// Leader heartbeat interval; must be below the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Pre-vote before campaigning (thesis §9.6).
    pub pre_vote: bool,
    /// Leaders step down without a quorum's contact (thesis §6.2).
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Ticks a follower's clock may lag over one election timeout; the lease
    /// lasts `election_timeout_ticks - clock_drift_margin_ticks`.
    pub clock_drift_margin_ticks: u64,
    /// This node's election priority, 0 (off) to 10: a node of priority p
    /// waits `10 - p` extra half election timeouts before campaigning, so
    /// nodes of higher priority tend to lead.
    pub election_priority: u8,
}

/// The `[limits]` section: every bound on a batch, window or queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most proposals of one group a shard hands to the group's Raft core
    /// at once (AppendEntries and apply batches are bounded in bytes).
    pub batch_entries_max: usize,
    /// Most entry bytes in one AppendEntries; at least one entry is always
    /// sent.
    pub batch_bytes_max: u64,
    /// Most AppendEntries messages in flight to one follower.
    pub inflight_messages_max: usize,
    /// Most entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Most proposed-but-uncommitted bytes per leader; beyond it proposals
    /// are refused (back-pressure).
    pub uncommitted_bytes_max: u64,
    /// Most bytes queued and in flight on one outbound connection.
    pub outbound_queue_bytes_max: u64,
    /// Most Raft groups this node hosts: `coraft-node` refuses to start with
    /// more (`--groups`).
    pub groups_max: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let listen: SocketAddr = LISTEN_DEFAULT.parse().expect("LISTEN_DEFAULT is a socket address");
        NodeConfig {
            cluster_id: 1,
            node_id: 1,
            listen,
            metrics_listen: None,
            peers: vec![Peer { id: 1, address: listen }],
            shards: ShardSettings::default(),
            wal: WalSettings {
                dir: Some(PathBuf::from(WAL_DIR_DEFAULT)),
                ..WalSettings::default()
            },
            raft: RaftSettings::default(),
            limits: Limits::default(),
            log: LogSettings::default(),
            snapshot: SnapshotSettings::default(),
            helper_threads: HelperThreadSettings::default(),
        }
    }
}

impl Default for ShardSettings {
    fn default() -> Self {
        ShardSettings {
            count: SHARD_COUNT_DEFAULT,
            cores: None,
            placement: PlacementPolicy::Fixed,
            spin_before_park_us: SPIN_BEFORE_PARK_US_DEFAULT,
        }
    }
}

impl Default for WalSettings {
    /// No directory (a config must name one), 64 MiB segments, fsync on.
    fn default() -> Self {
        WalSettings {
            dir: None,
            dirs: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            zero_ahead_bytes: ZERO_AHEAD_BYTES_DEFAULT,
            polled_io: false,
            dsync_small_flush_bytes: coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
            fsync: FsyncPolicy::Always,
        }
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_ms: TICK_MS_DEFAULT,
            election_timeout_ticks: ELECTION_TIMEOUT_TICKS_DEFAULT,
            heartbeat_interval_ticks: HEARTBEAT_INTERVAL_TICKS_DEFAULT,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            clock_drift_margin_ticks: CLOCK_DRIFT_MARGIN_TICKS_DEFAULT,
            election_priority: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_entries_max: BATCH_ENTRIES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            inflight_messages_max: INFLIGHT_MESSAGES_MAX_DEFAULT,
            inflight_bytes_max: INFLIGHT_BYTES_MAX_DEFAULT,
            uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX_DEFAULT,
            outbound_queue_bytes_max: OUTBOUND_QUEUE_BYTES_MAX_DEFAULT,
            groups_max: GROUPS_MAX_DEFAULT,
        }
    }
}

impl NodeConfig {
    /// Parses a config from TOML text. Syntax errors, wrong types and unknown
    /// keys come back as [`TuningError::Parse`] with the line and column.
    pub fn from_toml_str(text: &str) -> Result<NodeConfig, TuningError> {
        toml::from_str(text).map_err(|error| parse_error(None, text, &error))
    }

    /// Reads and parses a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<NodeConfig, TuningError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TuningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| parse_error(Some(path), &text, &error))
    }

    /// The config as TOML (without comments), e.g. to log the effective
    /// config. Fails only on a path that is not UTF-8.
    pub fn to_toml_string(&self) -> Result<String, TuningError> {
        toml::to_string(self).map_err(|error| TuningError::Unserializable {
            message: error.to_string(),
        })
    }

    /// This node's entry in `peers`, if it has one.
    pub fn self_peer(&self) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.id == self.node_id)
    }
}

impl WalSettings {
    /// The `coraft_wal::Config` each shard's WAL opens with: `segment_bytes`,
    /// `zero_ahead_bytes`, `polled_io` and `dsync_small_flush_bytes` from here, the WAL's defaults for
    /// the rest (its record bound, 4 MiB, among them). Validation runs its
    /// `validate`, so a config `check` accepts is one the WAL accepts.
    pub fn wal_config(&self) -> coraft_wal::Config {
        coraft_wal::Config {
            segment_bytes: self.segment_bytes,
            zero_ahead_bytes: self.zero_ahead_bytes,
            polled_io: self.polled_io,
            dsync_small_flush_bytes: self.dsync_small_flush_bytes,
            ..coraft_wal::Config::default()
        }
    }
}

impl ShardSettings {
    /// `spin_before_park_us` as glommio wants it: `None` when zero.
    pub fn spin_before_park(&self) -> Option<Duration> {
        (self.spin_before_park_us > 0).then(|| Duration::from_micros(self.spin_before_park_us))
    }
}

impl RaftSettings {
    /// The tick as a duration.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Ticks a lease lasts (only meaningful with [`ReadMode::Lease`]).
    pub fn lease_ticks(&self) -> u64 {
        self.election_timeout_ticks
            .saturating_sub(self.clock_drift_margin_ticks)
    }
}

fn parse_error(path: Option<&Path>, text: &str, error: &toml::de::Error) -> TuningError {
    TuningError::Parse {
        path: path.map(Path::to_path_buf),
        location: error.span().and_then(|span| TextLocation::of_offset(text, span.start)),
        message: error.message().trim_end().to_owned(),
    }
}

impl Serialize for CoreSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CoreSelection::Auto => serializer.serialize_str("auto"),
            CoreSelection::List(cores) => cores.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CoreSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CoreSelectionVisitor;

        impl<'de> Visitor<'de> for CoreSelectionVisitor {
            type Value = CoreSelection;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("\"auto\" or a list of CPU numbers such as [0, 1]")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<CoreSelection, E> {
                if value == "auto" {
                    Ok(CoreSelection::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CoreSelection, A::Error> {
                let mut cores = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(crate::limits::SHARD_COUNT_LIMIT));
                while let Some(core) = seq.next_element::<usize>()? {
                    cores.push(core);
                }
                Ok(CoreSelection::List(cores))
            }
        }

        deserializer.deserialize_any(CoreSelectionVisitor)
    }
}
