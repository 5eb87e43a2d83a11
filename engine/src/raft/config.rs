//! The knobs of one core, with their validation.

use super::error::ConfigError;
use super::types::{GroupId, NodeId};

/// How `read_index` confirms a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round confirms leadership for every read
    /// (Raft thesis §6.4). Safe whatever the clocks do.
    Safe,
    /// Lease: while a quorum acknowledged a heartbeat round sent less than
    /// `lease_ticks` ago, the leader answers at once (thesis §6.4.1). Needs
    /// `check_quorum` and clocks whose drift stays within the margin.
    Lease,
}

/// A rule of the protocol broken on purpose, so tests can show the simulator
/// catches it. Never set outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlantedBug {
    /// The rules hold.
    #[default]
    None,
    /// A leader commits an entry of an earlier term by counting replicas,
    /// which Raft §5.4.2 forbids.
    CommitPreviousTermByCounting,
    /// A voter grants its vote without checking the candidate's log is up to
    /// date (Raft §5.4.1).
    VoteWithoutLogCheck,
    /// A follower acknowledges entries before they are persisted.
    AcknowledgeBeforePersist,
    /// A new leader serves reads at its commit index before it committed an
    /// entry of its own term, when that index may still be stale (thesis §6.4).
    ReadBeforeCommitInTerm,
    /// A voter sends its vote before the vote is on disk (Raft Figure 2).
    VoteBeforePersist,
    /// A voter grants a second vote in a term it already voted in (Raft §5.2).
    DoubleVote,
}

/// Bound on the entries of one AppendEntries message, in bytes
/// (at least one entry is always sent).
pub const DEFAULT_APPEND_BYTES_MAX: u64 = 1 << 20;

/// Configuration of one core.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This node.
    pub id: NodeId,
    /// The group.
    pub group: GroupId,
    /// Base election timeout T; each term draws a timeout in [T, 2T).
    pub election_timeout_ticks: u64,
    /// Leader heartbeat interval; must be below the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Pre-vote before campaigning (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down if it has not heard from a quorum within an
    /// election timeout; followers then also ignore votes while they hear
    /// from a leader (thesis §4.2.3, §6.2).
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Ticks by which a follower's clock may run slower than the leader's
    /// over one election timeout; the lease is
    /// `election_timeout_ticks - clock_drift_margin_ticks`.
    pub clock_drift_margin_ticks: u64,
    /// Bound on AppendEntries messages in flight to one follower.
    pub inflight_messages_max: usize,
    /// Bound on entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Bound on the entry bytes of one AppendEntries.
    pub append_bytes_max: u64,
    /// Bound on proposed-but-uncommitted entry bytes at a leader; proposals
    /// beyond it are refused (back-pressure).
    pub uncommitted_bytes_max: u64,
    /// Ticks a follower may stay in Snapshot state without an answer before
    /// the leader probes it again.
    pub snapshot_timeout_ticks: u64,
    /// Election priority: 0 disables it. Otherwise a node waits
    /// `(priority_max - priority)` extra half-timeouts before campaigning, so
    /// higher-priority nodes tend to win.
    pub election_priority: u8,
    /// Let an idle group go quiet: once everything is committed and every
    /// follower holds it, the leader sends one last heartbeat marked
    /// `quiesce` and then neither it nor its followers tick until something
    /// happens (`quiesce.rs`). The runtime then watches the leader's node
    /// instead, with one message per node pair, and calls
    /// [`RaftCore::leader_unreachable`](super::RaftCore::leader_unreachable)
    /// when it goes silent.
    pub quiesce: bool,
    /// Seed of the core's random generator (election timeouts).
    pub seed: u64,
    #[doc(hidden)]
    pub planted_bug: PlantedBug,
}

/// The highest election priority.
pub const ELECTION_PRIORITY_MAX: u8 = 10;

impl RaftConfig {
    /// Defaults: T = 10 ticks, heartbeat every 2 ticks, pre-vote and
    /// check-quorum on, ReadIndex reads.
    pub fn new(id: NodeId, group: GroupId) -> RaftConfig {
        RaftConfig {
            id,
            group,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            clock_drift_margin_ticks: 2,
            inflight_messages_max: 256,
            inflight_bytes_max: 16 << 20,
            append_bytes_max: DEFAULT_APPEND_BYTES_MAX,
            uncommitted_bytes_max: 64 << 20,
            snapshot_timeout_ticks: 30,
            election_priority: 0,
            quiesce: false,
            seed: id.0,
            planted_bug: PlantedBug::None,
        }
    }

    /// Ticks a lease lasts after the heartbeat round that confirmed it was sent.
    pub fn lease_ticks(&self) -> u64 {
        self.election_timeout_ticks
            .saturating_sub(self.clock_drift_margin_ticks)
    }

    /// Checks the settings agree with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::Invalid {
                field: "id",
                reason: "node id 0 is reserved for \"no node\"",
            });
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::Invalid {
                field: "heartbeat_interval_ticks",
                reason: "must be at least 1",
            });
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::Invalid {
                field: "election_timeout_ticks",
                reason: "must exceed heartbeat_interval_ticks",
            });
        }
        if self.inflight_messages_max == 0 || self.inflight_bytes_max == 0 {
            return Err(ConfigError::Invalid {
                field: "inflight_messages_max",
                reason: "in-flight bounds must be at least 1",
            });
        }
        if self.read_mode == ReadMode::Lease {
            if !self.check_quorum {
                return Err(ConfigError::Invalid {
                    field: "read_mode",
                    reason: "lease reads need check_quorum",
                });
            }
            if self.lease_ticks() <= self.heartbeat_interval_ticks {
                return Err(ConfigError::Invalid {
                    field: "clock_drift_margin_ticks",
                    reason: "the lease (election timeout minus drift margin) must exceed the heartbeat interval",
                });
            }
        }
        if self.election_priority > ELECTION_PRIORITY_MAX {
            return Err(ConfigError::Invalid {
                field: "election_priority",
                reason: "must be at most ELECTION_PRIORITY_MAX (10)",
            });
        }
        Ok(())
    }
}
