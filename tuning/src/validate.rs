//! Validation: a parsed [`NodeConfig`] checked against itself and against the
//! machine it is about to run on.
//!
//! Every check runs, whatever failed before it, so one pass reports all the
//! problems of a config. Each [`Problem`] names its field as a TOML path
//! (`shards.cores[1]`, `peers[2].address`) and says why as data. The checks
//! mirror what the engine, the WAL and the net refuse at start-up, so a config
//! that passes here starts.

use std::path::Path;

use crate::config::{CoreSelection, FsyncPolicy, NodeConfig, PlacementPolicy, ReadMode};
use crate::cpulist;
use crate::error::{Problem, ProblemKind, TuningError, Warning, WarningKind};
use crate::limits::*;
use crate::placement::{self, NodePlan};
use crate::topology::{IoUring, MemlockLimit, Topology};

/// Everything validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    /// What stops the node from starting, in field order.
    pub problems: Vec<Problem>,
    /// What is legal but probably unwise.
    pub warnings: Vec<Warning>,
}

impl Review {
    /// The problems' fields, for quick assertions and summaries.
    pub fn problem_fields(&self) -> Vec<&str> {
        self.problems.iter().map(|problem| problem.field.as_str()).collect()
    }
}

impl NodeConfig {
    /// Checks the config against itself and `topology` and reports every
    /// problem and warning; never stops at the first.
    pub fn review(&self, topology: &Topology) -> Review {
        self.examine(topology).0
    }

    /// Validates the config against `topology` and places its shards. On
    /// failure, [`TuningError::Invalid`] lists every problem found.
    pub fn validate(&self, topology: &Topology) -> Result<NodePlan, TuningError> {
        let (review, placed) = self.examine(topology);
        match placed {
            Some((cores, helper_cores)) if review.problems.is_empty() => {
                Ok(placement::plan(self.clone(), &cores, helper_cores, review.warnings))
            }
            _ => Err(TuningError::Invalid {
                problems: review.problems,
            }),
        }
    }

    /// The review and, when the shard and helper sections are sound, each
    /// shard's CPU and the helper threads' CPUs.
    #[allow(clippy::type_complexity)]
    fn examine(&self, topology: &Topology) -> (Review, Option<(Vec<Option<usize>>, Vec<usize>)>) {
        let mut check = Checker {
            review: Review::default(),
        };
        check.identity(self);
        let cores = check.shards(self, topology);
        let helper_cores = check.helper_threads(self, cores.as_deref(), topology);
        check.wal(self);
        check.raft(self);
        check.limits(self);
        check.snapshot(self);
        check.machine(topology);
        (check.review, cores.zip(helper_cores))
    }
}

struct Checker {
    review: Review,
}

impl Checker {
    fn problem(&mut self, field: impl Into<String>, kind: ProblemKind) {
        self.review.problems.push(Problem {
            field: field.into(),
            kind,
        });
    }

    fn warn(&mut self, field: impl Into<String>, kind: WarningKind) {
        self.review.warnings.push(Warning {
            field: field.into(),
            kind,
        });
    }

    /// Records a problem unless `min <= value <= max`; says whether it was in range.
    fn range(&mut self, field: &str, value: u64, min: u64, max: u64) -> bool {
        let ok = (min..=max).contains(&value);
        if !ok {
            self.problem(field, ProblemKind::OutOfRange { value, min, max });
        }
        ok
    }

    fn identity(&mut self, config: &NodeConfig) {
        if config.node_id == 0 {
            self.problem("node_id", ProblemKind::ReservedId);
        } else if !config.peers.is_empty() && config.self_peer().is_none() {
            self.problem(
                "node_id",
                ProblemKind::NodeNotAPeer {
                    node_id: config.node_id,
                },
            );
        }
        if let Some(metrics) = config.metrics_listen {
            let overlapping = metrics.ip() == config.listen.ip()
                || metrics.ip().is_unspecified()
                || config.listen.ip().is_unspecified();
            if metrics.port() == config.listen.port() && overlapping {
                self.problem(
                    "metrics_listen",
                    ProblemKind::ListenClash {
                        address: metrics,
                        other_field: "listen",
                    },
                );
            }
        }
        if config.peers.is_empty() {
            self.problem("peers", ProblemKind::NoPeers);
        }
        self.range("peers", config.peers.len() as u64, 0, PEERS_LIMIT as u64);
        for (index, peer) in config.peers.iter().enumerate() {
            let earlier = &config.peers[..index];
            if peer.id == 0 {
                self.problem(format!("peers[{index}].id"), ProblemKind::ReservedId);
            } else if let Some(first_index) = earlier.iter().position(|other| other.id == peer.id) {
                let kind = ProblemKind::DuplicatePeerId {
                    id: peer.id,
                    first_index,
                };
                self.problem(format!("peers[{index}].id"), kind);
            }
            let address = peer.address;
            if address.ip().is_unspecified() || address.port() == 0 {
                self.problem(format!("peers[{index}].address"), ProblemKind::Undialable { address });
            } else if let Some(first_index) = earlier.iter().position(|other| other.address == address) {
                let kind = ProblemKind::DuplicatePeerAddress { address, first_index };
                self.problem(format!("peers[{index}].address"), kind);
            }
        }
        let voters = config.peers.len();
        if voters >= 2 && voters % 2 == 0 {
            self.warn("peers", WarningKind::EvenVoters { voters });
        }
        if let Some(me) = config.self_peer() {
            if me.address.port() != config.listen.port() {
                let kind = WarningKind::ListenPortDiffers {
                    listen_port: config.listen.port(),
                    address: me.address,
                };
                self.warn("listen", kind);
            }
        }
    }

    /// Checks `[shards]`; returns each shard's CPU (`None` = unbound) when sound.
    fn shards(&mut self, config: &NodeConfig, topology: &Topology) -> Option<Vec<Option<usize>>> {
        let shards = &config.shards;
        let count = shards.count;
        let count_ok = self.range("shards.count", count as u64, 1, SHARD_COUNT_LIMIT as u64);
        self.range(
            "shards.spin_before_park_us",
            shards.spin_before_park_us,
            0,
            SPIN_BEFORE_PARK_US_LIMIT,
        );
        let allowed = topology.allowed_cpus();

        if shards.placement == PlacementPolicy::Unbound {
            if shards.cores.is_some() {
                self.problem("shards.cores", ProblemKind::CoresWithUnbound);
            }
            if shards.spin_before_park_us > 0 {
                let kind = WarningKind::SpinWhileUnbound {
                    spin_before_park_us: shards.spin_before_park_us,
                };
                self.warn("shards.spin_before_park_us", kind);
            }
            if count > allowed.len() {
                let kind = WarningKind::Oversubscribed {
                    shards: count,
                    cpus: allowed.len(),
                };
                self.warn("shards.count", kind);
            }
            return (count_ok && shards.cores.is_none()).then(|| vec![None; count]);
        }

        let (cores, auto) = match &shards.cores {
            None | Some(CoreSelection::Auto) => {
                if !count_ok {
                    return None;
                }
                let Some(cores) = topology.suggest(Some(count)).cores else {
                    let kind = ProblemKind::AutoCannotPlace {
                        shards: count,
                        cpus: allowed.len(),
                    };
                    self.problem("shards.cores", kind);
                    return None;
                };
                (cores, true)
            }
            Some(CoreSelection::List(list)) => (self.core_list(list, count, topology)?, false),
        };
        self.placement_warnings(&cores, auto, topology);
        count_ok.then(|| cores.into_iter().map(Some).collect())
    }

    /// Checks `[helper_threads]` given the shards' CPUs (`None` when the
    /// shard section is unsound); returns the helper threads' CPUs, sorted.
    fn helper_threads(
        &mut self,
        config: &NodeConfig,
        shard_cores: Option<&[Option<usize>]>,
        topology: &Topology,
    ) -> Option<Vec<usize>> {
        let allowed = topology.allowed_cpus();
        let pinned: Vec<usize> = shard_cores.unwrap_or_default().iter().flatten().copied().collect();
        let free: Vec<usize> = allowed.iter().copied().filter(|cpu| !pinned.contains(cpu)).collect();
        let list = match &config.helper_threads.cores {
            None | Some(CoreSelection::Auto) => return Some(if free.is_empty() { allowed } else { free }),
            Some(CoreSelection::List(list)) => list,
        };
        let before = self.review.problems.len();
        if list.is_empty() {
            self.problem("helper_threads.cores", ProblemKind::NoCoresListed);
        }
        for (index, &core) in list.iter().enumerate() {
            let field = format!("helper_threads.cores[{index}]");
            match topology.cpu(core) {
                None => {
                    let online = topology.online_cpus();
                    let kind = ProblemKind::CoreMissing {
                        core,
                        cpu_count: online.len(),
                        online: cpulist::format(&online),
                    };
                    self.problem(field, kind);
                }
                Some(cpu) if !cpu.allowed => {
                    let kind = ProblemKind::CoreNotAllowed {
                        core,
                        allowed: cpulist::format(&allowed),
                    };
                    self.problem(field, kind);
                }
                Some(_) => {
                    if let Some(first_index) = list[..index].iter().position(|&other| other == core) {
                        self.problem(field, ProblemKind::CoreListedTwice { core, first_index });
                    } else if let Some(shard) = shard_cores
                        .unwrap_or_default()
                        .iter()
                        .position(|&shard_core| shard_core == Some(core))
                    {
                        if !free.is_empty() {
                            let kind = WarningKind::HelperOnShardCore {
                                core,
                                shard,
                                free: cpulist::format(&free),
                            };
                            self.warn(field, kind);
                        }
                    }
                }
            }
        }
        (self.review.problems.len() == before).then(|| {
            let mut cores = list.clone();
            cores.sort_unstable();
            cores
        })
    }

    /// Checks an explicit core list; returns it when every entry is usable.
    fn core_list(&mut self, list: &[usize], count: usize, topology: &Topology) -> Option<Vec<usize>> {
        let before = self.review.problems.len();
        if list.len() != count {
            let kind = ProblemKind::CoreCountMismatch {
                listed: list.len(),
                shards: count,
            };
            self.problem("shards.cores", kind);
        }
        for (index, &core) in list.iter().enumerate() {
            let field = format!("shards.cores[{index}]");
            match topology.cpu(core) {
                None => {
                    let online = topology.online_cpus();
                    let kind = ProblemKind::CoreMissing {
                        core,
                        cpu_count: online.len(),
                        online: cpulist::format(&online),
                    };
                    self.problem(field, kind);
                }
                Some(cpu) if !cpu.allowed => {
                    let kind = ProblemKind::CoreNotAllowed {
                        core,
                        allowed: cpulist::format(&topology.allowed_cpus()),
                    };
                    self.problem(field, kind);
                }
                Some(_) => {
                    if let Some(shard) = list[..index].iter().position(|&other| other == core) {
                        self.problem(field, ProblemKind::CoreShared { core, shard });
                    }
                }
            }
        }
        (self.review.problems.len() == before).then(|| list.to_vec())
    }

    fn placement_warnings(&mut self, cores: &[usize], auto: bool, topology: &Topology) {
        let field = |index: usize| {
            if auto {
                "shards.cores".to_owned()
            } else {
                format!("shards.cores[{index}]")
            }
        };
        let physical_cores = topology.physical_cores().len();
        for (index, &core) in cores.iter().enumerate() {
            let Some(cpu) = topology.cpu(core) else { continue };
            let sibling_shard = cores[..index]
                .iter()
                .position(|&other| other != core && cpu.siblings.contains(&other));
            if let Some(shard) = sibling_shard {
                let kind = WarningKind::SmtSiblings {
                    core,
                    sibling: cores[shard],
                    shard,
                };
                self.warn(field(index), kind);
            }
            if core == 0 && physical_cores >= OS_RESERVED_CORE_FROM_PHYSICAL_CORES {
                self.warn(field(index), WarningKind::OsCoreUsed { physical_cores });
            }
        }
        let mut nodes: Vec<usize> = cores
            .iter()
            .filter_map(|&core| topology.cpu(core))
            .map(|cpu| cpu.numa_node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.len() > 1 {
            self.warn("shards.cores", WarningKind::SpansNumaNodes { nodes });
        }
    }

    fn wal(&mut self, config: &NodeConfig) {
        let wal = &config.wal;
        match (&wal.dir, &wal.dirs) {
            (Some(_), Some(_)) => self.problem("wal", ProblemKind::WalDirAndDirs),
            (None, None) => self.problem("wal", ProblemKind::NoWalDir),
            (Some(dir), None) => self.directory("wal.dir".to_owned(), dir),
            (None, Some(dirs)) => {
                if dirs.len() != config.shards.count {
                    let kind = ProblemKind::WalDirCountMismatch {
                        listed: dirs.len(),
                        shards: config.shards.count,
                    };
                    self.problem("wal.dirs", kind);
                }
                for (index, dir) in dirs.iter().enumerate() {
                    let field = format!("wal.dirs[{index}]");
                    if let Some(first_index) = dirs[..index].iter().position(|other| other == dir) {
                        self.problem(field, ProblemKind::DuplicateWalDir { first_index });
                    } else {
                        self.directory(field, dir);
                    }
                }
            }
        }
        let segment_ok = self.range(
            "wal.segment_bytes",
            wal.segment_bytes,
            SEGMENT_BYTES_MIN,
            SEGMENT_BYTES_LIMIT,
        );
        if wal.segment_bytes % SEGMENT_ALIGN_BYTES != 0 {
            let kind = ProblemKind::NotMultiple {
                value: wal.segment_bytes,
                multiple: SEGMENT_ALIGN_BYTES,
            };
            self.problem("wal.segment_bytes", kind);
        }
        if wal.zero_ahead_bytes % SEGMENT_ALIGN_BYTES != 0 {
            let kind = ProblemKind::NotMultiple {
                value: wal.zero_ahead_bytes,
                multiple: SEGMENT_ALIGN_BYTES,
            };
            self.problem("wal.zero_ahead_bytes", kind);
        }
        let segment_room_bytes = wal.segment_bytes.saturating_sub(SEGMENT_HEADER_BYTES);
        if segment_ok && config.limits.batch_bytes_max > segment_room_bytes {
            let kind = ProblemKind::ExceedsSegment {
                value: config.limits.batch_bytes_max,
                segment_room_bytes,
            };
            self.problem("limits.batch_bytes_max", kind);
        }
        if wal.fsync == FsyncPolicy::Never {
            self.problem("wal.fsync", ProblemKind::FsyncNeverUnsupported);
        }
        let zero_ahead_ok = wal.zero_ahead_bytes % SEGMENT_ALIGN_BYTES == 0;
        if segment_ok && wal.segment_bytes % SEGMENT_ALIGN_BYTES == 0 && zero_ahead_ok {
            self.wal_accepts(wal);
        }
    }

    /// Runs the WAL's own check on the config each shard opens its WAL with
    /// (`WalSettings::wal_config`), so that what passes here the WAL takes.
    /// Called once this module's own rules on the WAL fields hold, so a
    /// mistake is not reported twice.
    fn wal_accepts(&mut self, wal: &crate::config::WalSettings) {
        let wal_config = wal.wal_config();
        let Err(coraft_wal::Error::InvalidConfig { field, value, reason }) = wal_config.validate() else {
            return;
        };
        // The record bound is fixed by the node; what an operator changes is
        // the segment that must hold one record after the header and a flush marker.
        let (config_field, minimum) = match field {
            "record_bytes_max" => {
                let least = (wal_config.record_bytes_max
                    + coraft_wal::format::SEGMENT_HEADER_BYTES
                    + coraft_wal::format::FLUSH_MARKER_BYTES) as u64;
                (
                    "wal.segment_bytes",
                    Some(least.div_ceil(SEGMENT_ALIGN_BYTES) * SEGMENT_ALIGN_BYTES),
                )
            }
            "segment_bytes" => ("wal.segment_bytes", None),
            "zero_ahead_bytes" => ("wal.zero_ahead_bytes", None),
            "dsync_small_flush_bytes" => ("wal.dsync_small_flush_bytes", None),
            _ => ("wal", None),
        };
        let kind = ProblemKind::WalRefuses {
            wal_field: field,
            wal_value: value,
            reason,
            minimum,
        };
        self.problem(config_field, kind);
    }

    /// A WAL directory may not exist yet (the engine creates it), but must
    /// not be empty or an existing non-directory.
    fn directory(&mut self, field: String, dir: &Path) {
        if dir.as_os_str().is_empty() {
            self.problem(field, ProblemKind::EmptyPath);
        } else if dir.exists() && !dir.is_dir() {
            let path = dir.to_path_buf();
            self.problem(field, ProblemKind::NotADirectory { path });
        }
    }

    fn raft(&mut self, config: &NodeConfig) {
        let raft = &config.raft;
        self.range("raft.tick_ms", raft.tick_ms, 1, TICK_MS_LIMIT);
        let election_ok = self.range(
            "raft.election_timeout_ticks",
            raft.election_timeout_ticks,
            2,
            ELECTION_TIMEOUT_TICKS_LIMIT,
        );
        let heartbeat_ok = self.range(
            "raft.heartbeat_interval_ticks",
            raft.heartbeat_interval_ticks,
            1,
            ELECTION_TIMEOUT_TICKS_LIMIT,
        );
        if election_ok && heartbeat_ok && raft.heartbeat_interval_ticks >= raft.election_timeout_ticks {
            let kind = ProblemKind::NotBelow {
                value: raft.heartbeat_interval_ticks,
                other_field: "raft.election_timeout_ticks",
                other_value: raft.election_timeout_ticks,
            };
            self.problem("raft.heartbeat_interval_ticks", kind);
        }
        self.range(
            "raft.clock_drift_margin_ticks",
            raft.clock_drift_margin_ticks,
            0,
            ELECTION_TIMEOUT_TICKS_LIMIT,
        );
        self.range(
            "raft.election_priority",
            u64::from(raft.election_priority),
            0,
            ELECTION_PRIORITY_LIMIT,
        );
        if raft.read_mode == ReadMode::Lease {
            if !raft.check_quorum {
                self.problem("raft.read_mode", ProblemKind::LeaseNeedsCheckQuorum);
            }
            if raft.clock_drift_margin_ticks < LEASE_DRIFT_MARGIN_TICKS_MIN {
                let kind = ProblemKind::LeaseMarginTooSmall {
                    value: raft.clock_drift_margin_ticks,
                    min: LEASE_DRIFT_MARGIN_TICKS_MIN,
                };
                self.problem("raft.clock_drift_margin_ticks", kind);
            }
            if raft.lease_ticks() <= raft.heartbeat_interval_ticks {
                let kind = ProblemKind::LeaseTooShort {
                    lease_ticks: raft.lease_ticks(),
                    heartbeat_interval_ticks: raft.heartbeat_interval_ticks,
                };
                self.problem("raft.clock_drift_margin_ticks", kind);
            }
        }
    }

    fn limits(&mut self, config: &NodeConfig) {
        let limits = &config.limits;
        let usize_range = |value: usize, max: usize| (value as u64, max as u64);
        let (entries, entries_max) = usize_range(limits.batch_entries_max, BATCH_ENTRIES_LIMIT);
        self.range("limits.batch_entries_max", entries, 1, entries_max);
        let batch_ok = self.range("limits.batch_bytes_max", limits.batch_bytes_max, 1, BATCH_BYTES_LIMIT);
        let (messages, messages_max) = usize_range(limits.inflight_messages_max, INFLIGHT_MESSAGES_LIMIT);
        self.range("limits.inflight_messages_max", messages, 1, messages_max);
        let (groups, groups_max) = usize_range(limits.groups_max, GROUPS_LIMIT);
        self.range("limits.groups_max", groups, 1, groups_max);
        let windows = [
            (
                "limits.inflight_bytes_max",
                limits.inflight_bytes_max,
                INFLIGHT_BYTES_LIMIT,
            ),
            (
                "limits.uncommitted_bytes_max",
                limits.uncommitted_bytes_max,
                UNCOMMITTED_BYTES_LIMIT,
            ),
            (
                "limits.outbound_queue_bytes_max",
                limits.outbound_queue_bytes_max,
                OUTBOUND_QUEUE_BYTES_LIMIT,
            ),
        ];
        // A window smaller than one batch could never hold a full batch.
        for (field, value, max) in windows {
            if self.range(field, value, 1, max) && batch_ok && value < limits.batch_bytes_max {
                let kind = ProblemKind::BelowOther {
                    value,
                    other_field: "limits.batch_bytes_max",
                    other_value: limits.batch_bytes_max,
                };
                self.problem(field, kind);
            }
        }
    }

    fn snapshot(&mut self, config: &NodeConfig) {
        let snapshot = &config.snapshot;
        let triggers = [
            (
                "snapshot.after_entries",
                snapshot.after_entries,
                SNAPSHOT_AFTER_ENTRIES_MIN,
                u64::MAX,
            ),
            (
                "snapshot.after_log_bytes",
                snapshot.after_log_bytes,
                SNAPSHOT_AFTER_LOG_BYTES_MIN,
                u64::MAX,
            ),
            (
                "snapshot.shard_after_log_bytes",
                snapshot.shard_after_log_bytes,
                SNAPSHOT_AFTER_LOG_BYTES_MIN,
                u64::MAX,
            ),
            (
                "snapshot.interval_ms",
                snapshot.interval_ms,
                SNAPSHOT_INTERVAL_MS_MIN,
                SNAPSHOT_INTERVAL_MS_LIMIT,
            ),
        ];
        for (field, value, min, max) in triggers {
            if value != 0 && !(min..=max).contains(&value) {
                self.problem(field, ProblemKind::OffOrOutOfRange { value, min, max });
            }
        }
        self.range(
            "snapshot.log_tail_entries",
            snapshot.log_tail_entries,
            0,
            SNAPSHOT_LOG_TAIL_ENTRIES_LIMIT,
        );
        self.range(
            "snapshot.install_bytes_per_second",
            snapshot.install_bytes_per_second,
            SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN,
            SNAPSHOT_INSTALL_BYTES_PER_SECOND_LIMIT,
        );
    }

    fn machine(&mut self, topology: &Topology) {
        match &topology.io_uring {
            IoUring::Available { .. } => {}
            IoUring::Unavailable { reason, .. } => {
                let kind = ProblemKind::IoUringUnavailable { reason: reason.clone() };
                self.problem("machine", kind);
            }
            IoUring::Unknown { reason } => {
                let kind = WarningKind::IoUringUnknown { reason: reason.clone() };
                self.warn("machine", kind);
            }
        }
        if let (Some(version), Some(release)) = (topology.kernel_version(), &topology.kernel_release) {
            if version < KERNEL_VERSION_MIN {
                let kind = WarningKind::KernelTooOld {
                    release: release.clone(),
                };
                self.warn("machine", kind);
            }
        }
        if let MemlockLimit::Bytes(bytes) = topology.memlock {
            if bytes < MEMLOCK_BYTES_MIN {
                self.warn("machine", WarningKind::MemlockLow { bytes });
            }
        }
    }
}
