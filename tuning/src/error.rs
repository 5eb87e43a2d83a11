//! Errors and findings: what can go wrong reading a config, and every problem
//! or warning validation reports, as data.
//!
//! A [`Problem`] stops the node from starting; a [`Warning`] does not. Both
//! name the config field they concern (`shards.cores[1]`, `wal.dirs`) and say
//! why in a structured [`ProblemKind`] / [`WarningKind`], so callers match on
//! kinds, never on text.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The crate's error.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// The config file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, has a value of the wrong type or an
    /// unknown key.
    #[error("{}: {message}", origin(path.as_deref(), *location))]
    Parse {
        /// The file, when parsed from one.
        path: Option<PathBuf>,
        /// Where in the text, when known.
        location: Option<TextLocation>,
        /// What toml said (it names an unknown key).
        message: String,
    },
    /// The config cannot be written as TOML (a path that is not UTF-8).
    #[error("cannot write the config as TOML: {message}")]
    Unserializable {
        /// What toml said.
        message: String,
    },
    /// The config cannot run on this machine; every problem found is listed.
    #[error("invalid config ({} problem(s)):\n{}", problems.len(), list(problems))]
    Invalid {
        /// All of them, in field order.
        problems: Vec<Problem>,
    },
}

/// `path:line:column`, or `config` for text that came from no file.
fn origin(path: Option<&std::path::Path>, location: Option<TextLocation>) -> String {
    let mut origin = path.map_or_else(|| "config".to_owned(), |path| path.display().to_string());
    if let Some(location) = location {
        origin.push_str(&format!(":{}:{}", location.line, location.column));
    }
    origin
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line and column in a text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLocation {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl TextLocation {
    /// The location of byte `offset` in `text`; `None` past its end or
    /// inside a character.
    pub fn of_offset(text: &str, offset: usize) -> Option<TextLocation> {
        let before = text.get(..offset)?;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Some(TextLocation {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        })
    }
}

/// A reason the config cannot start a node here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as a TOML path: `shards.cores[1]`, `peers[2].address`.
    pub field: String,
    /// Why.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind)
    }
}

/// Why a field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    /// A number outside its allowed range.
    #[error("{value} is outside the allowed range {min}..={max}")]
    OutOfRange {
        /// The value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A number that must be 0 (off) or within a range.
    #[error("{value} is neither 0 (off) nor in the allowed range {min}..={max}")]
    OffOrOutOfRange {
        /// The value found.
        value: u64,
        /// Smallest allowed other than 0.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A number that must be a multiple of another.
    #[error("{value} is not a multiple of {multiple}")]
    NotMultiple {
        /// The value found.
        value: u64,
        /// The required factor.
        multiple: u64,
    },
    /// A number that must be below another field's.
    #[error("{value} must be below {other_field} ({other_value})")]
    NotBelow {
        /// The value found.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other_value: u64,
    },
    /// A number that must be at least another field's.
    #[error("{value} must be at least {other_field} ({other_value})")]
    BelowOther {
        /// The value found.
        value: u64,
        /// The field it is compared with.
        other_field: &'static str,
        /// That field's value.
        other_value: u64,
    },
    /// A batch that would not fit in one WAL segment.
    #[error("{value} exceeds the {segment_room_bytes} bytes a WAL segment holds after its header (wal.segment_bytes)")]
    ExceedsSegment {
        /// The value found.
        value: u64,
        /// `wal.segment_bytes` minus the segment header.
        segment_room_bytes: u64,
    },
    /// An id 0, which means "no node".
    #[error("0 is reserved for \"no node\"")]
    ReservedId,
    /// `node_id` is not one of the peers.
    #[error("node {node_id} is not among the peers (every voter, this node included, must be listed)")]
    NodeNotAPeer {
        /// The node id.
        node_id: u64,
    },
    /// No peers listed.
    #[error("no peers: list every voter, this node included")]
    NoPeers,
    /// Two peers share an id.
    #[error("peer id {id} is already used by peers[{first_index}]")]
    DuplicatePeerId {
        /// The id.
        id: u64,
        /// The first peer with it.
        first_index: usize,
    },
    /// Two peers share an address.
    #[error("address {address} is already used by peers[{first_index}]")]
    DuplicatePeerAddress {
        /// The address.
        address: SocketAddr,
        /// The first peer with it.
        first_index: usize,
    },
    /// A peer address nobody can dial (unspecified IP or port 0).
    #[error("{address} cannot be dialled (unspecified IP or port 0)")]
    Undialable {
        /// The address.
        address: SocketAddr,
    },
    /// Two listeners on one socket.
    #[error("{address} clashes with {other_field}: same port on an overlapping address")]
    ListenClash {
        /// The address.
        address: SocketAddr,
        /// The other listener's field.
        other_field: &'static str,
    },
    /// A CPU this machine does not have online.
    #[error("core {core} does not exist on this {cpu_count}-CPU machine (online CPUs: {online})")]
    CoreMissing {
        /// The CPU asked for.
        core: usize,
        /// How many CPUs are online.
        cpu_count: usize,
        /// The online CPUs as a Linux cpulist (`0-1`).
        online: String,
    },
    /// An online CPU outside this process's affinity mask (taskset, cgroup cpuset).
    #[error("core {core} is online but outside this process's CPU affinity (allowed: {allowed})")]
    CoreNotAllowed {
        /// The CPU asked for.
        core: usize,
        /// The allowed CPUs as a cpulist.
        allowed: String,
    },
    /// Two shards on one CPU.
    #[error("core {core} is already taken by shard {shard}: two shards on one core")]
    CoreShared {
        /// The CPU.
        core: usize,
        /// The shard that listed it first.
        shard: usize,
    },
    /// `cores` does not list one CPU per shard.
    #[error("lists {listed} core(s) for {shards} shard(s): list exactly one per shard")]
    CoreCountMismatch {
        /// Cores listed.
        listed: usize,
        /// `shards.count`.
        shards: usize,
    },
    /// `cores = "auto"` cannot pin this many shards.
    #[error("\"auto\" cannot pin {shards} shard(s) on the {cpus} CPU(s) this process may use; lower shards.count or use placement = \"unbound\"")]
    AutoCannotPlace {
        /// `shards.count`.
        shards: usize,
        /// Usable CPUs.
        cpus: usize,
    },
    /// A list of CPUs that names none.
    #[error("lists no CPU: list at least one, or omit the key for \"auto\"")]
    NoCoresListed,
    /// A CPU listed twice in a set of CPUs.
    #[error("core {core} is already listed at index {first_index}")]
    CoreListedTwice {
        /// The CPU.
        core: usize,
        /// Where it was listed first.
        first_index: usize,
    },
    /// `cores` given with `placement = "unbound"`.
    #[error("cores are only used with placement = \"fixed\"; remove them or pin the shards")]
    CoresWithUnbound,
    /// Neither `wal.dir` nor `wal.dirs`.
    #[error("no WAL directory: set wal.dir (a parent, shard i uses dir/shard-i) or wal.dirs (one per shard)")]
    NoWalDir,
    /// Both `wal.dir` and `wal.dirs`.
    #[error("set wal.dir or wal.dirs, not both")]
    WalDirAndDirs,
    /// `wal.dirs` does not list one directory per shard.
    #[error("lists {listed} path(s) for {shards} shard(s): list exactly one per shard, or use wal.dir")]
    WalDirCountMismatch {
        /// Directories listed.
        listed: usize,
        /// `shards.count`.
        shards: usize,
    },
    /// Two shards would share a WAL directory.
    #[error("directory is already used by wal.dirs[{first_index}]: two shards cannot share a WAL")]
    DuplicateWalDir {
        /// The first entry with it.
        first_index: usize,
    },
    /// An empty path.
    #[error("empty path")]
    EmptyPath,
    /// The path exists and is not a directory.
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Lease reads without check-quorum.
    #[error("lease reads need raft.check_quorum = true (a leader must step down when it loses its quorum)")]
    LeaseNeedsCheckQuorum,
    /// A lease-read drift margin below the least the engine accepts.
    #[error(
        "lease reads need a drift margin of at least {min} ticks (ticks quantize the lease on both sides), not {value}"
    )]
    LeaseMarginTooSmall {
        /// The margin given.
        value: u64,
        /// The least accepted ([`crate::limits::LEASE_DRIFT_MARGIN_TICKS_MIN`]).
        min: u64,
    },
    /// The lease is not longer than the heartbeat interval.
    #[error("the lease (election_timeout_ticks - clock_drift_margin_ticks = {lease_ticks}) must exceed heartbeat_interval_ticks ({heartbeat_interval_ticks})")]
    LeaseTooShort {
        /// The lease length.
        lease_ticks: u64,
        /// The heartbeat interval.
        heartbeat_interval_ticks: u64,
    },
    /// `wal.fsync = "never"`, which the engine does not implement.
    #[error("\"never\" is not supported: the engine fdatasyncs every WAL write before acknowledging it; remove the key or set \"always\"")]
    FsyncNeverUnsupported,
    /// A value the WAL's own check (`coraft_wal::Config::validate`) refuses,
    /// given the bounds the node runs its WAL with.
    #[error("the WAL refuses it: its {wal_field} = {wal_value} {reason}{}", minimum.map(|min| format!("; needs at least {min}")).unwrap_or_default())]
    WalRefuses {
        /// The `coraft_wal::Config` field its check names.
        wal_field: &'static str,
        /// That field's value.
        wal_value: u64,
        /// The rule, as the WAL states it.
        reason: &'static str,
        /// The least value of this config field that passes, when known.
        minimum: Option<u64>,
    },
    /// The machine cannot run glommio at all.
    #[error("io_uring is unavailable: {reason}")]
    IoUringUnavailable {
        /// Why, from the probe.
        reason: String,
    },
}

/// Something legal but probably unwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The field, as a TOML path, or `machine` for the host itself.
    pub field: String,
    /// Why.
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind)
    }
}

/// What a warning is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarningKind {
    /// Two shards on SMT siblings of one physical core.
    #[error("core {core} is an SMT sibling of core {sibling} (shard {shard}): the two shards share one physical core")]
    SmtSiblings {
        /// This shard's CPU.
        core: usize,
        /// The sibling CPU another shard uses.
        sibling: usize,
        /// That shard.
        shard: usize,
    },
    /// The shards span several NUMA nodes.
    #[error("shards span NUMA nodes {nodes:?}; cross-shard messages cross the interconnect")]
    SpansNumaNodes {
        /// The nodes used.
        nodes: Vec<usize>,
    },
    /// CPU 0 is used on a machine big enough to leave it to the OS.
    #[error(
        "core 0 takes the OS's housekeeping and many interrupts; with {physical_cores} physical cores, leave it free"
    )]
    OsCoreUsed {
        /// Physical cores usable.
        physical_cores: usize,
    },
    /// A helper thread's CPU that a shard is pinned to, while some CPU the
    /// process may use has no shard.
    #[error("core {core} runs shard {shard}: helper threads there take time from it while CPUs {free} have no shard")]
    HelperOnShardCore {
        /// The CPU.
        core: usize,
        /// The shard pinned to it.
        shard: usize,
        /// The usable CPUs no shard is pinned to, as a cpulist.
        free: String,
    },
    /// Spinning executors that are not pinned.
    #[error("spinning {spin_before_park_us} µs before parking with unbound shards burns CPU the OS may need for other shards")]
    SpinWhileUnbound {
        /// The spin.
        spin_before_park_us: u64,
    },
    /// More shards than CPUs.
    #[error("{shards} shards on {cpus} usable CPU(s): shards will preempt each other")]
    Oversubscribed {
        /// `shards.count`.
        shards: usize,
        /// Usable CPUs.
        cpus: usize,
    },
    /// An even number of voters.
    #[error("{voters} voters tolerate as many failures as {} do; an odd count is cheaper", voters - 1)]
    EvenVoters {
        /// Voters listed.
        voters: usize,
    },
    /// `listen` and this node's advertised address differ in port.
    #[error(
        "listen port {listen_port} differs from this node's peer address {address}; fine only behind a port forward"
    )]
    ListenPortDiffers {
        /// `listen`'s port.
        listen_port: u16,
        /// This node's entry in `peers`.
        address: SocketAddr,
    },
    /// io_uring support could not be established.
    #[error("io_uring support unknown: {reason}")]
    IoUringUnknown {
        /// Why.
        reason: String,
    },
    /// The kernel is older than glommio needs.
    #[error("kernel {release} is older than {}.{}, the oldest glommio runs on", crate::limits::KERNEL_VERSION_MIN.0, crate::limits::KERNEL_VERSION_MIN.1)]
    KernelTooOld {
        /// `uname -r`.
        release: String,
    },
    /// RLIMIT_MEMLOCK below what glommio asks for.
    #[error(
        "locked-memory limit is {bytes} bytes, below the {} glommio asks for (raise `ulimit -l`)",
        crate::limits::MEMLOCK_BYTES_MIN
    )]
    MemlockLow {
        /// The soft limit.
        bytes: u64,
    },
}
