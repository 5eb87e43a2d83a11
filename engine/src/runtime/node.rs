//! Starting a node: one thread per shard, each a glommio executor that opens
//! its WAL, recovers its groups, connects to its peers and runs the shard
//! loop. [`Node`] and [`GroupHandle`] are how an embedding program talks to
//! it from any thread.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use coraft_net::{LocalIdentity, NetConfig};
use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::api::{Error, StateMachine};
use crate::raft::{Configuration, GroupId, LogIndex, NodeId, RaftConfig, RaftCore, ReadMode, Role, Term};

use super::events::{Event, EventQueue};
use super::group::Group;
use super::metrics::{render_prometheus, MetricsServer, ShardMetrics};
use super::park_bound::{ParkBound, PARK_BOUND};
use super::shard::Shard;
use super::storage::recover_group;
use super::transport::Peers;

/// Bound on requests from embedding threads queued for one shard.
pub const API_QUEUE_MAX: usize = 1 << 16;

/// Builds the state machine of a group, on the shard that will own it.
pub type StateMachineFactory = Arc<dyn Fn(GroupId) -> Box<dyn StateMachine> + Send + Sync>;

/// One node of the cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// The node.
    pub id: NodeId,
    /// Its shards' listen addresses, by shard index.
    pub shard_addresses: Vec<SocketAddr>,
}

/// Protocol options shared by every group of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// Pre-vote before campaigning (thesis §9.6).
    pub pre_vote: bool,
    /// Leaders step down without a quorum's contact; followers hearing a
    /// leader ignore votes (thesis §6.2, §4.2.3). Lease reads need it.
    pub check_quorum: bool,
    /// The lease lasts `election_timeout_ticks - clock_drift_margin_ticks`.
    pub clock_drift_margin_ticks: u64,
    /// This node's election priority in every group, 0 (off) to
    /// `ELECTION_PRIORITY_MAX` (10): a higher one campaigns sooner, so it
    /// tends to lead (the config's `raft.election_priority`).
    pub election_priority: u8,
}

impl Default for Protocol {
    fn default() -> Protocol {
        let raft = coraft_tuning::RaftSettings::default();
        Protocol {
            pre_vote: raft.pre_vote,
            check_quorum: raft.check_quorum,
            clock_drift_margin_ticks: raft.clock_drift_margin_ticks,
            election_priority: raft.election_priority,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Peers from another cluster are refused.
    pub cluster_id: u64,
    /// This node.
    pub node_id: NodeId,
    /// Every voter, this node included (same shard count on every node).
    pub peers: Vec<PeerSpec>,
    /// Core of each shard; `None` runs it unpinned (tests, shared machines).
    pub shard_cores: Vec<Option<usize>>,
    /// CPUs of the node's threads that are not shard executors: each
    /// shard's blocking thread (glommio's pool of one: snapshot and install
    /// writes off the loop) and the metrics thread. `None`: the CPUs the
    /// thread calling `Node::start` may use that no shard is pinned to, or
    /// all of them when the shards are unbound or take every one (the
    /// tuning config's `[helper_threads]`). [`Node::helper_cores`] says
    /// what it resolved to.
    pub helper_cores: Option<Vec<usize>>,
    /// WAL directory; shard `s` writes in `wal_dir/shard-s` unless
    /// `shard_wal_dirs` names its directory.
    pub wal_dir: PathBuf,
    /// The WAL directory of each shard, overriding `wal_dir` (empty: none).
    pub shard_wal_dirs: Vec<PathBuf>,
    /// Size of each preallocated WAL segment file (a multiple of 4 KiB;
    /// default `coraft_wal::config::SEGMENT_BYTES_DEFAULT`, 64 MiB).
    pub wal_segment_bytes: u64,
    /// How far past the log's end an idle WAL zeroes its segment, so that
    /// small writes overwrite written blocks (a multiple of 4 KiB, 0 for
    /// off; default `coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT`, 64 MiB,
    /// a whole default segment; see docs/wal.md, "Zeroing ahead").
    pub wal_zero_ahead_bytes: u64,
    /// Let glommio put the WAL's segment writes on its polled ring
    /// (`coraft_wal::Config::polled_io`; default false: the executor would
    /// spin while a write is in flight; see docs/wal.md, "Polled I/O").
    pub wal_polled_io: bool,
    /// Flushes of at most this many bytes are one O_DSYNC write instead of
    /// a write and an fdatasync (`coraft_wal::Config::dsync_small_flush_bytes`;
    /// default 512 KiB, every flush; 0 for none below 512 KiB; see docs/tuning.md).
    pub wal_dsync_small_flush_bytes: usize,
    /// The groups this node hosts; group `g` lives on shard `g % shards`.
    pub groups: Vec<GroupId>,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_timeout_ticks: u64,
    /// Heartbeat interval in ticks.
    pub heartbeat_interval_ticks: u64,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Pre-vote, check-quorum and the lease's drift margin (the tuning
    /// config's `[raft]`; defaults: on, on, 2 ticks).
    pub protocol: Protocol,
    /// Every batch, window and queue bound (the tuning config's `[limits]`).
    pub limits: coraft_tuning::Limits,
    /// glommio's spin before parking: lower latency for a busier core.
    pub spin_before_park: Option<Duration>,
    /// Serve `GET /metrics` (Prometheus text format) on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// Let idle groups go quiet (no ticks, no per-group heartbeats) while a
    /// node-level beat per peer and tick watches the leaders' nodes.
    pub quiesce_idle_groups: bool,
    /// A request still waiting this long is answered with [`Error::Timeout`]
    /// (default [`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT), 10 s).
    pub request_timeout: Duration,
    /// A client session with no write for this long (by the leader's clock,
    /// as stamped in the log) expires; it is written into each session's
    /// registration (default [`SESSION_TIMEOUT_DEFAULT_MS`](super::SESSION_TIMEOUT_DEFAULT_MS), 10 min).
    pub session_timeout: Duration,
    /// When snapshots are taken and how much log they let go (the tuning
    /// config's `[snapshot]`; see [`SnapshotPolicy`](super::SnapshotPolicy)).
    pub snapshot: super::SnapshotPolicy,
}

impl NodeOptions {
    /// The options of node `node_id` of cluster `cluster_id`, whose WAL
    /// lives under `wal_dir` (shard `s` in `wal_dir/shard-s`), among
    /// `peers` (every voter, this node included): it runs as many unpinned
    /// shards as its own entry of `peers` lists addresses (one if it is not
    /// listed; [`Node::start`] then refuses the options), hosts no group
    /// until `groups` names some, and takes every other field's default:
    /// the tuning config's defaults (64 MiB segments zeroed 64 MiB ahead,
    /// no polled I/O; 10 ms ticks, an election timeout of 10 ticks, a
    /// heartbeat every 2, pre-vote and check-quorum on, `ReadMode::Safe`;
    /// `Limits::default()`; `SnapshotPolicy::default()`), helper threads
    /// where `helper_cores: None` puts them, no spin before parking, no
    /// metrics endpoint, idle groups
    /// quiesce, requests time out after
    /// [`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT) and sessions after
    /// [`SESSION_TIMEOUT_DEFAULT_MS`](super::SESSION_TIMEOUT_DEFAULT_MS).
    /// Change what differs with struct update syntax:
    ///
    /// ```
    /// # use coraft::raft::{GroupId, NodeId};
    /// # use coraft::runtime::{NodeOptions, PeerSpec};
    /// let me = NodeId(1);
    /// let peers = vec![PeerSpec { id: me, shard_addresses: vec!["127.0.0.1:7001".parse().unwrap()] }];
    /// let options = NodeOptions {
    ///     groups: vec![GroupId(1)],
    ///     election_timeout_ticks: 20,
    ///     ..NodeOptions::new(42, me, peers, "/var/lib/coraft/wal")
    /// };
    /// assert_eq!(options.shard_cores, vec![None]);
    /// ```
    pub fn new(cluster_id: u64, node_id: NodeId, peers: Vec<PeerSpec>, wal_dir: impl Into<PathBuf>) -> NodeOptions {
        let shards = peers
            .iter()
            .find(|p| p.id == node_id)
            .map_or(1, |p| p.shard_addresses.len().max(1));
        let raft = coraft_tuning::RaftSettings::default();
        NodeOptions {
            cluster_id,
            node_id,
            peers,
            shard_cores: vec![None; shards],
            helper_cores: None,
            wal_dir: wal_dir.into(),
            shard_wal_dirs: Vec::new(),
            wal_segment_bytes: coraft_wal::config::SEGMENT_BYTES_DEFAULT,
            wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
            wal_polled_io: false,
            wal_dsync_small_flush_bytes: coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
            groups: Vec::new(),
            tick: raft.tick(),
            election_timeout_ticks: raft.election_timeout_ticks,
            heartbeat_interval_ticks: raft.heartbeat_interval_ticks,
            read_mode: ReadMode::Safe,
            protocol: Protocol::default(),
            limits: coraft_tuning::Limits::default(),
            spin_before_park: None,
            metrics_listen: None,
            quiesce_idle_groups: true,
            request_timeout: super::shard::REQUEST_TIMEOUT,
            session_timeout: Duration::from_millis(super::SESSION_TIMEOUT_DEFAULT_MS),
            snapshot: super::SnapshotPolicy::default(),
        }
    }

    /// The options of a node described by a validated tuning plan, hosting
    /// `groups`. Shard `s` of every peer listens on its address's port + `s`;
    /// this node binds its `listen` address the same way.
    pub fn from_plan(plan: &coraft_tuning::NodePlan, groups: Vec<GroupId>) -> NodeOptions {
        let config = plan.config();
        let shard_count = plan.shards().len();
        let shard_addresses = |address: SocketAddr| -> Vec<SocketAddr> {
            (0..shard_count)
                .map(|s| SocketAddr::new(address.ip(), address.port().saturating_add(s as u16)))
                .collect()
        };
        let peers = config
            .peers
            .iter()
            .map(|peer| {
                let address = if peer.id == config.node_id {
                    config.listen
                } else {
                    peer.address
                };
                PeerSpec {
                    id: NodeId(peer.id),
                    shard_addresses: shard_addresses(address),
                }
            })
            .collect();
        NodeOptions {
            cluster_id: config.cluster_id,
            node_id: NodeId(config.node_id),
            peers,
            shard_cores: plan.shards().iter().map(|s| s.core).collect(),
            helper_cores: Some(plan.helper_cores().to_vec()),
            wal_dir: PathBuf::new(),
            shard_wal_dirs: plan.shards().iter().map(|s| s.wal_dir.clone()).collect(),
            wal_segment_bytes: config.wal.segment_bytes,
            wal_zero_ahead_bytes: config.wal.zero_ahead_bytes,
            wal_polled_io: config.wal.polled_io,
            wal_dsync_small_flush_bytes: config.wal.dsync_small_flush_bytes,
            groups,
            tick: config.raft.tick(),
            election_timeout_ticks: config.raft.election_timeout_ticks,
            heartbeat_interval_ticks: config.raft.heartbeat_interval_ticks,
            read_mode: match config.raft.read_mode {
                coraft_tuning::ReadMode::ReadIndex => ReadMode::Safe,
                coraft_tuning::ReadMode::Lease => ReadMode::Lease,
            },
            protocol: Protocol {
                pre_vote: config.raft.pre_vote,
                check_quorum: config.raft.check_quorum,
                clock_drift_margin_ticks: config.raft.clock_drift_margin_ticks,
                election_priority: config.raft.election_priority,
            },
            limits: config.limits.clone(),
            spin_before_park: config.shards.spin_before_park(),
            metrics_listen: config.metrics_listen,
            quiesce_idle_groups: true,
            request_timeout: super::shard::REQUEST_TIMEOUT,
            session_timeout: Duration::from_millis(super::SESSION_TIMEOUT_DEFAULT_MS),
            snapshot: super::SnapshotPolicy::from_settings(&config.snapshot),
        }
    }

    fn shard_count(&self) -> usize {
        self.shard_cores.len()
    }

    /// `helper_cores`, checked against the CPUs the calling thread may use,
    /// or their default (see the field).
    fn resolve_helper_cores(&self) -> Result<Vec<usize>, Error> {
        let allowed = super::affinity::current_thread_cpus()
            .map_err(|e| Error::Config(format!("reading this thread's CPU affinity: {e}")))?;
        let Some(cores) = &self.helper_cores else {
            return Ok(super::affinity::default_helper_cpus(&allowed, &self.shard_cores));
        };
        if cores.is_empty() {
            return Err(Error::Config("helper_cores lists no CPU".into()));
        }
        if let Some(cpu) = cores.iter().find(|cpu| !allowed.contains(cpu)) {
            return Err(Error::Config(format!(
                "helper_cores: CPU {cpu} is not one this thread may run on ({})",
                coraft_tuning::format_cpu_list(&allowed)
            )));
        }
        Ok(cores.clone())
    }

    fn validate(&self) -> Result<(), Error> {
        let fail = |reason: String| Err(Error::Config(reason));
        if self.shard_cores.is_empty() {
            return fail("at least one shard is needed".into());
        }
        if !self.peers.iter().any(|p| p.id == self.node_id) {
            return fail(format!("node {} is not among the peers", self.node_id));
        }
        for peer in &self.peers {
            if peer.shard_addresses.len() != self.shard_count() {
                return fail(format!(
                    "peer {} lists {} shard addresses, this node runs {} shards",
                    peer.id,
                    peer.shard_addresses.len(),
                    self.shard_count()
                ));
            }
        }
        if self.heartbeat_interval_ticks == 0 || self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return fail("heartbeat_interval_ticks must be at least 1 and below election_timeout_ticks".into());
        }
        if self.groups.len() > self.limits.groups_max {
            return fail(format!(
                "{} groups exceed limits.groups_max ({}): raise the limit or host fewer groups",
                self.groups.len(),
                self.limits.groups_max
            ));
        }
        if self.protocol.election_priority > crate::raft::ELECTION_PRIORITY_MAX {
            return fail(format!(
                "election_priority {} is above ELECTION_PRIORITY_MAX ({})",
                self.protocol.election_priority,
                crate::raft::ELECTION_PRIORITY_MAX
            ));
        }
        if self.snapshot.install_bytes_per_second < coraft_tuning::limits::SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN {
            return fail(format!(
                "snapshot.install_bytes_per_second {} is below SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN ({}): \
                 a snapshot stream that slow would take longer than an operator waits for",
                self.snapshot.install_bytes_per_second,
                coraft_tuning::limits::SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN
            ));
        }
        self.resolve_helper_cores()?;
        let margin = self.protocol.clock_drift_margin_ticks;
        if self.read_mode == ReadMode::Lease && margin < super::clock::LEASE_DRIFT_MARGIN_TICKS_MIN {
            return fail(format!(
                "lease reads need clock_drift_margin_ticks of at least LEASE_DRIFT_MARGIN_TICKS_MIN ({}), not {margin}: \
                 ticks quantize time by up to one tick on the leader and one on a follower",
                super::clock::LEASE_DRIFT_MARGIN_TICKS_MIN
            ));
        }
        Ok(())
    }
}

/// A storage fault injected into a shard's WAL by a test, through the WAL's
/// fault seam (`coraft_wal::FaultyFs`); see [`Node::start_with_wal_faults`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFault {
    /// Fail the next this-many fdatasyncs with EIO (without syncing).
    FailSyncs(usize),
    /// Fail every write with ENOSPC while true.
    NoSpace(bool),
}

/// A request from an embedding thread to a shard.
pub(crate) enum ApiRequest {
    Propose {
        group: GroupId,
        data: Vec<u8>,
        expected_term: Option<Term>,
        reply: flume::Sender<Result<Vec<u8>, Error>>,
    },
    Read {
        group: GroupId,
        query: Vec<u8>,
        index_only: bool,
        /// Answered at once from this node's applied state, no leader contact.
        stale: bool,
        reply: flume::Sender<Result<Vec<u8>, Error>>,
    },
    Close {
        group: GroupId,
        reply: flume::Sender<()>,
    },
    Status {
        group: GroupId,
        reply: flume::Sender<Option<GroupStatus>>,
    },
    TransferLeader {
        group: GroupId,
        target: NodeId,
        reply: flume::Sender<Result<(), Error>>,
    },
    Metrics {
        reply: flume::Sender<ShardMetrics>,
    },
    Snapshot {
        group: GroupId,
        reply: flume::Sender<Result<LogIndex, Error>>,
    },
    WalFault {
        fault: WalFault,
        reply: flume::Sender<Result<(), Error>>,
    },
    Membership {
        group: GroupId,
        request: super::membership::MembershipRequest,
        reply: flume::Sender<Result<(), Error>>,
    },
    Addresses {
        reply: flume::Sender<BTreeMap<NodeId, Vec<SocketAddr>>>,
    },
    /// Whether the shard serves, and why not (`runtime/admin.rs`).
    Health {
        reply: flume::Sender<super::admin::ShardHealth>,
    },
    /// Every snapshot stream in flight on the shard, both ways.
    Installs {
        reply: flume::Sender<Vec<(GroupId, super::InstallProgress)>>,
    },
    /// `Node::create_group`; without a reply, a failure is logged.
    CreateGroup {
        group: GroupId,
        voters: Vec<NodeId>,
        reply: Option<flume::Sender<Result<(), Error>>>,
    },
    /// `Node::remove_group`.
    RemoveGroup {
        group: GroupId,
        reply: flume::Sender<Result<(), Error>>,
    },
    Shutdown,
}

/// A peer as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub node: NodeId,
    /// Highest index known replicated on it.
    pub match_index: LogIndex,
    /// Next index to send it.
    pub next_index: LogIndex,
    /// Entries it is behind the leader's last index.
    pub lag: u64,
}

/// A group's state on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The node reporting.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit_index: LogIndex,
    /// The index the state machine holds: while a snapshot installed from
    /// the leader loads off the shard's thread, the one before it (the
    /// snapshot index already shows the new snapshot).
    pub applied_index: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// Index of the newest snapshot this node took or restarted from (0:
    /// none).
    pub snapshot_index: LogIndex,
    /// Index of the first entry the core holds in memory: the log was
    /// compacted below it (1 if never compacted).
    pub first_index: LogIndex,
    /// Per-peer replication (leader only).
    pub peers: Vec<PeerStatus>,
    /// The configuration in force on this node (voters, learners, and the
    /// outgoing voters while joint).
    pub configuration: Configuration,
    /// The group is idle and quiet: it neither ticks nor heartbeats here.
    pub quiesced: bool,
    /// What the group did on this node.
    pub counters: super::group::GroupCounters,
    /// The snapshot streams (InstallSnapshot) of the group in flight here:
    /// on a leader one per follower it is sending to, on a follower the one
    /// it receives. Empty when none is.
    pub installs: Vec<super::InstallProgress>,
}

/// How a node's shards start.
#[derive(Clone, Copy)]
struct StartMode {
    /// The WAL writes through the fault seam (tests).
    wal_faults: bool,
    /// The node joins a running cluster (`Node::start_joining`).
    joining: bool,
}

struct ShardThread {
    api: flume::Sender<ApiRequest>,
    join: Option<glommio::ExecutorJoinHandle<()>>,
}

/// A running node.
pub struct Node {
    options: NodeOptions,
    shards: Vec<ShardThread>,
    metrics_server: Option<MetricsServer>,
    /// Wakes every shard's executor each `PARK_BOUND` (a glommio 0.9 bug
    /// can park one with runnable work); stopped after the shards.
    park_bound: Option<ParkBound>,
}

/// Creates groups on a running node ([`Node::group_creator`]); cheap to
/// clone, usable from any thread.
#[derive(Clone)]
pub struct GroupCreator {
    apis: Vec<flume::Sender<ApiRequest>>,
}

impl GroupCreator {
    /// As [`Node::create_group`], resolving once the group exists.
    pub async fn create_group(&self, group: GroupId, voters: Vec<NodeId>) -> Result<(), Error> {
        let receiver = self.request(group, voters, true)?.expect("a reply was asked for");
        receiver.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// Asks for `group` without waiting for the answer: for a state
    /// machine, which runs on the shard that will create it. A refusal
    /// (bad voters, a full disk) is logged by the shard at error level.
    pub fn create_group_in_background(&self, group: GroupId, voters: Vec<NodeId>) -> Result<(), Error> {
        self.request(group, voters, false).map(|_| ())
    }

    /// As [`Node::remove_group`], resolving once the group is removed.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), Error> {
        let receiver = self.remove_request(group)?;
        receiver.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    fn remove_request(&self, group: GroupId) -> Result<flume::Receiver<Result<(), Error>>, Error> {
        let shard = (group.0 % self.apis.len() as u64) as usize;
        let (reply, receiver) = flume::bounded(1);
        self.apis[shard]
            .try_send(ApiRequest::RemoveGroup { group, reply })
            .map_err(|e| match e {
                flume::TrySendError::Full(_) => Error::Busy { bound: "API_QUEUE_MAX" },
                flume::TrySendError::Disconnected(_) => Error::Shutdown,
            })?;
        Ok(receiver)
    }

    #[allow(clippy::type_complexity)]
    fn request(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        answer: bool,
    ) -> Result<Option<flume::Receiver<Result<(), Error>>>, Error> {
        let shard = (group.0 % self.apis.len() as u64) as usize;
        let (reply, receiver) = match answer {
            true => {
                let (reply, receiver) = flume::bounded(1);
                (Some(reply), Some(receiver))
            }
            false => (None, None),
        };
        self.apis[shard]
            .try_send(ApiRequest::CreateGroup { group, voters, reply })
            .map_err(|e| match e {
                flume::TrySendError::Full(_) => Error::Busy { bound: "API_QUEUE_MAX" },
                flume::TrySendError::Disconnected(_) => Error::Shutdown,
            })?;
        Ok(receiver)
    }
}

/// Talks to one group of a running node, from any thread.
#[derive(Clone)]
pub struct GroupHandle {
    group: GroupId,
    api: flume::Sender<ApiRequest>,
}

impl Node {
    /// Starts the node's shards and waits until each has recovered its groups
    /// and is listening.
    pub fn start(options: NodeOptions, factory: StateMachineFactory) -> Result<Node, Error> {
        Node::launch(options, factory, false, false)
    }

    /// Starts a node that joins a running cluster: its groups start with no
    /// configuration (it neither campaigns nor votes) and learn theirs from
    /// the log once a member adds it ([`GroupHandle::add_learner`] or
    /// [`GroupHandle::add_voter`] on the leader). `options.peers` needs only
    /// this node and the leader (the other members' addresses come in the
    /// log's address book); a group whose WAL already holds entries
    /// recovers as [`start`](Self::start) would. The seed need not lead:
    /// before starting, the node asks each peer in `options.peers` for the
    /// addresses it knows (the admin request `Addresses`) and adds the
    /// nodes it did not list, so it can answer whichever member leads; a
    /// peer that does not answer is left out with a warning.
    pub fn start_joining(mut options: NodeOptions, factory: StateMachineFactory) -> Result<Node, Error> {
        options.validate()?;
        learn_from_seeds(&mut options);
        Node::launch(options, factory, false, true)
    }

    /// Like [`start`](Self::start), but every shard's WAL writes through the
    /// WAL's fault seam, so a test can make its fdatasync fail or its disk
    /// full with [`inject_wal_fault`](Self::inject_wal_fault). Test support.
    #[doc(hidden)]
    pub fn start_with_wal_faults(options: NodeOptions, factory: StateMachineFactory) -> Result<Node, Error> {
        Node::launch(options, factory, true, false)
    }

    /// Injects `fault` into shard `shard`'s WAL (a node started with
    /// [`start_with_wal_faults`](Self::start_with_wal_faults)). Test support.
    #[doc(hidden)]
    pub fn inject_wal_fault(&self, shard: usize, fault: WalFault) -> Result<(), Error> {
        let api = &self
            .shards
            .get(shard)
            .ok_or_else(|| Error::Config(format!("no shard {shard}")))?
            .api;
        let (reply, answer) = flume::bounded(1);
        api.try_send(ApiRequest::WalFault { fault, reply })
            .map_err(|_| Error::Busy { bound: "API_QUEUE_MAX" })?;
        answer.recv().map_err(|_| Error::Shutdown)?
    }

    fn launch(
        mut options: NodeOptions,
        factory: StateMachineFactory,
        wal_faults: bool,
        joining: bool,
    ) -> Result<Node, Error> {
        options.validate()?;
        let helper_cores = options.resolve_helper_cores()?;
        options.helper_cores = Some(helper_cores.clone());
        // A blocking thread starts with the CPUs of the thread calling this
        // (glommio starts it before pinning its executor): when the helpers
        // may use all of those, there is nothing to pin (and no need for
        // the sysfs topology glommio reads to build a CPU set).
        let mut sorted_helpers = helper_cores.clone();
        sorted_helpers.sort_unstable();
        sorted_helpers.dedup();
        let caller_cpus = super::affinity::current_thread_cpus()
            .map_err(|e| Error::Config(format!("reading this thread's CPU affinity: {e}")))?;
        let blocking_placement = if sorted_helpers == caller_cpus {
            PoolPlacement::Unbound(1)
        } else {
            let set = CpuSet::online()
                .map_err(|e| Error::Config(format!("reading the online CPUs: {e}")))?
                .filter(|location| helper_cores.contains(&location.cpu));
            PoolPlacement::Fenced(1, set)
        };
        let park_bound = ParkBound::start(
            &format!("coraft-{}-wake", options.node_id),
            PARK_BOUND,
            Some(helper_cores.clone()),
        )
        .map_err(|e| Error::Config(format!("starting the park-bound thread: {e}")))?;
        let mut shards = Vec::new();
        let mut started = Vec::new();
        let mesh = (options.shard_count() > 1).then(|| super::forward::mesh(options.shard_count()));
        // Every shard's API channel exists before any shard starts: the
        // admin service each of them holds reaches all of them.
        let api_channels: Vec<_> = (0..options.shard_count())
            .map(|_| flume::bounded::<ApiRequest>(API_QUEUE_MAX))
            .collect();
        let admin = Arc::new(super::admin::AdminService::new(
            options.cluster_id,
            options.node_id,
            options.protocol.election_priority,
            options.groups.clone(),
            api_channels.iter().map(|(api, _)| api.clone()).collect(),
        ));
        for (shard, (api, api_rx)) in api_channels.into_iter().enumerate() {
            let (ready_tx, ready_rx) = flume::bounded::<Result<(), Error>>(1);
            let placement = options.shard_cores[shard].map_or(Placement::Unbound, Placement::Fixed);
            let mut builder = LocalExecutorBuilder::new(placement).name(&format!("coraft-{}-{shard}", options.node_id));
            if let Some(spin) = options.spin_before_park {
                builder = builder.spin_before_park(spin);
            }
            builder = builder.blocking_thread_pool_placement(blocking_placement.clone());
            let shard_options = options.clone();
            let factory = factory.clone();
            let mesh = mesh.clone();
            let admin = admin.clone();
            let keeper = park_bound.keeper();
            let join = builder
                .spawn(move || async move {
                    // First, so that no park of this executor, even while it
                    // starts, outlasts PARK_BOUND.
                    if let Some(keeper) = keeper {
                        glommio::spawn_local(keeper).detach();
                    }
                    // Every line this thread writes names its node and shard.
                    let _shard = crate::logging::shard_span(shard_options.node_id, shard).entered();
                    // The blocking thread carries the executor's name until
                    // it is given its own, so the two can be told apart.
                    let name = format!("coraft-{}-{shard}-blk", shard_options.node_id);
                    glommio::executor()
                        .spawn_blocking(move || super::affinity::name_current_thread(&name))
                        .await;
                    let channels = ShardChannels {
                        mesh,
                        api: api_rx,
                        ready: ready_tx,
                        admin,
                    };
                    let mode = StartMode { wal_faults, joining };
                    run_shard(shard_options, shard, factory, channels, mode).await;
                })
                .map_err(|e| Error::Config(format!("starting shard {shard}: {e}")))?;
            shards.push(ShardThread { api, join: Some(join) });
            started.push(ready_rx);
        }
        let mut node = Node {
            options,
            shards,
            metrics_server: None,
            park_bound: Some(park_bound),
        };
        for (shard, ready) in started.into_iter().enumerate() {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(Error::Config(format!("shard {shard} stopped while starting"))),
            }
        }
        if let Some(address) = node.options.metrics_listen {
            let apis: Vec<flume::Sender<ApiRequest>> = node.shards.iter().map(|s| s.api.clone()).collect();
            let id = node.options.node_id.0;
            let server = MetricsServer::start(address, helper_cores, move || {
                render_prometheus(id, &collect_metrics(&apis))
            })
            .map_err(|e| Error::Network(format!("metrics endpoint on {address}: {e}")))?;
            node.metrics_server = Some(server);
        }
        Ok(node)
    }

    /// The CPUs of the node's threads that are not shard executors
    /// ([`NodeOptions::helper_cores`], resolved), sorted as given. An
    /// embedding program may pin its own threads there too
    /// ([`pin_current_thread`](super::pin_current_thread)).
    pub fn helper_cores(&self) -> &[usize] {
        self.options.helper_cores.as_deref().unwrap_or_default()
    }

    /// A snapshot of every shard's metrics.
    pub fn metrics(&self) -> Vec<ShardMetrics> {
        let apis: Vec<flume::Sender<ApiRequest>> = self.shards.iter().map(|s| s.api.clone()).collect();
        collect_metrics(&apis)
    }

    /// The node's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        render_prometheus(self.options.node_id.0, &self.metrics())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.options.node_id
    }

    /// A handle on one group (hosted or not: requests to an unknown group
    /// fail with [`Error::UnknownGroup`]).
    pub fn group(&self, group: GroupId) -> GroupHandle {
        let shard = (group.0 % self.shards.len() as u64) as usize;
        GroupHandle {
            group,
            api: self.shards[shard].api.clone(),
        }
    }

    /// Creates `group` on this running node, with `voters` (this node among
    /// them) as its first configuration, on the shard the placement rule
    /// names (`group % shards`); its records go in that shard's WAL. Call
    /// it on every member with the same voters, as `NodeOptions::groups`
    /// would be: the group elects a leader once a quorum of them hosts it.
    /// The group is in the shard's list of created groups (a small file
    /// rewritten atomically in its WAL directory) before this returns, so
    /// a restarted node brings it back. Creating a group that was created
    /// already with the same voters (in any order) does nothing and
    /// succeeds; with other voters, or a group of `NodeOptions::groups`,
    /// it is refused ([`Error::Config`]). Blocks until the shard answers.
    pub fn create_group(&self, group: GroupId, voters: Vec<NodeId>) -> Result<(), Error> {
        let receiver = self.group_creator().request(group, voters, true)?;
        receiver
            .expect("a reply was asked for")
            .recv()
            .map_err(|_| Error::Shutdown)?
    }

    /// Removes `group`, a group created at run time
    /// ([`Node::create_group`]), from this node: requests waiting on it
    /// fail with [`Error::GroupRemoved`], as does every later request to
    /// it here; its state machine is dropped (with an apply lane, once the
    /// lane has applied what it was handed); its snapshots are deleted; and
    /// the shard's WAL gets a record that forgets it, so its records no
    /// longer hold WAL segments back and a restart does not bring it back.
    /// The shard's list of created groups marks it removed before anything
    /// else happens (durably), and its id is retired on this node: creating
    /// it again is refused ([`Error::Config`]), because the group's other
    /// replicas may still run under that id, and a fresh replica would
    /// join them as a voter that forgot its log and votes.
    ///
    /// Removing a group does not change its configuration: to take one
    /// replica away from a group that goes on, remove the node from the
    /// group's membership first. To retire a whole group, remove it on
    /// every member. Removing a removed group succeeds and does nothing. A
    /// group of `NodeOptions::groups` cannot be removed ([`Error::Config`]);
    /// nor can a group while a snapshot of it is being written, sent or
    /// loaded here ([`Error::Config`] says which: ask again later). Blocks
    /// until the shard answers.
    pub fn remove_group(&self, group: GroupId) -> Result<(), Error> {
        let receiver = self.group_creator().remove_request(group)?;
        receiver.recv().map_err(|_| Error::Shutdown)?
    }

    /// A handle that creates groups on this node from any thread, even from
    /// inside a state machine (which must not block on its own shard).
    pub fn group_creator(&self) -> GroupCreator {
        GroupCreator {
            apis: self.shards.iter().map(|s| s.api.clone()).collect(),
        }
    }

    /// Stops every shard: requests in flight fail with [`Error::Shutdown`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.metrics_server = None;
        for shard in &self.shards {
            let _ = shard.api.send(ApiRequest::Shutdown);
        }
        for shard in &mut self.shards {
            if let Some(join) = shard.join.take() {
                let _ = join.join();
            }
        }
        self.park_bound = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a joining node waits for a seed's answer about addresses.
const SEED_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds to `options.peers` the nodes its seeds know and it does not
/// (`Node::start_joining`), each with as many shard addresses as this node
/// runs shards (others are left out with a warning).
fn learn_from_seeds(options: &mut NodeOptions) {
    let seeds: Vec<(NodeId, SocketAddr)> = options
        .peers
        .iter()
        .filter(|p| p.id != options.node_id)
        .map(|p| (p.id, p.shard_addresses[0]))
        .collect();
    for (seed, address) in seeds {
        let nodes = match crate::admin::seed_addresses(address, options.cluster_id, SEED_ANSWER_TIMEOUT) {
            Ok(nodes) => nodes,
            Err(error) => {
                log::warn!(
                    "node {}: cannot ask seed {seed} at {address} for the members' addresses: {error}",
                    options.node_id
                );
                continue;
            }
        };
        for known in nodes {
            let id = NodeId(known.node);
            if options.peers.iter().any(|p| p.id == id) {
                continue;
            }
            let parsed: Result<Vec<SocketAddr>, _> = known.shard_addresses.iter().map(|a| a.parse()).collect();
            match parsed {
                Ok(addresses) if addresses.len() == options.shard_count() => {
                    log::info!("node {}: seed {seed} names node {id} at {addresses:?}", options.node_id);
                    options.peers.push(PeerSpec {
                        id,
                        shard_addresses: addresses,
                    });
                }
                _ => log::warn!(
                    "node {}: seed {seed} names node {id} at {:?}, not {} shard addresses; left out",
                    options.node_id,
                    known.shard_addresses,
                    options.shard_count()
                ),
            }
        }
    }
}

/// Asks each shard for its metrics (shards that stopped are left out).
fn collect_metrics(apis: &[flume::Sender<ApiRequest>]) -> Vec<ShardMetrics> {
    let mut answers = Vec::new();
    for api in apis {
        let (reply, answer) = flume::bounded(1);
        if api.try_send(ApiRequest::Metrics { reply }).is_ok() {
            answers.push(answer);
        }
    }
    answers
        .into_iter()
        .filter_map(|a| a.recv_timeout(Duration::from_secs(2)).ok())
        .collect()
}

impl GroupHandle {
    pub(crate) fn new(group: GroupId, api: flume::Sender<ApiRequest>) -> GroupHandle {
        GroupHandle { group, api }
    }

    /// The group.
    pub fn id(&self) -> GroupId {
        self.group
    }

    /// Replicates `data` and resolves with what the state machine returned
    /// for it. Only the leader takes writes ([`Error::NotLeader`] otherwise).
    pub async fn apply(&self, data: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.propose(data, None).await
    }

    /// Like [`apply`](Self::apply), but only if the leader is still in
    /// `term` (e.g. the term of [`StateMachine::on_leader_start`]): a write
    /// meant for one leadership is refused with [`Error::TermMismatch`]
    /// once another began, and is then not applied.
    pub async fn apply_in_term(&self, data: Vec<u8>, term: Term) -> Result<Vec<u8>, Error> {
        self.propose(data, Some(term)).await
    }

    async fn propose(&self, data: Vec<u8>, expected_term: Option<Term>) -> Result<Vec<u8>, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Propose {
            group: self.group,
            data,
            expected_term,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// A linearizable read: `query` runs against the state machine once it
    /// has applied everything committed when the read arrived (a ReadIndex
    /// round, or the leader's lease with [`ReadMode::Lease`]).
    pub async fn read(&self, query: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Read {
            group: self.group,
            query,
            index_only: false,
            stale: false,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// A possibly stale read: `query` runs at once against this node's
    /// state machine as it stands, leader or not, without contacting the
    /// leader. It sees every command this node has applied and none it has
    /// not, so it may miss writes already acknowledged elsewhere (a
    /// follower that lags, or is cut off from the leader, answers from
    /// where it is); successive stale reads on one node never go back.
    pub async fn read_stale(&self, query: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Read {
            group: self.group,
            query,
            index_only: false,
            stale: true,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// The read index (thesis §6.4): an index every write acknowledged
    /// before this call is at or below. Serve a linearizable read from any
    /// replica once it has applied this index.
    pub async fn read_index(&self) -> Result<LogIndex, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Read {
            group: self.group,
            query: Vec::new(),
            index_only: true,
            stale: false,
            reply,
        })?;
        let bytes = answer.recv_async().await.map_err(|_| Error::Shutdown)??;
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| Error::Storage("a read index answer is not 8 bytes".into()))?;
        Ok(LogIndex(u64::from_le_bytes(bytes)))
    }

    /// Stops this group taking requests on this node (they fail with
    /// [`Error::Shutdown`]) and resolves once those in flight have finished.
    /// The group keeps replicating; only its callers here are turned away.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Close {
            group: self.group,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)
    }

    /// The group's state on this node.
    pub async fn status(&self) -> Result<GroupStatus, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Status {
            group: self.group,
            reply,
        })?;
        answer
            .recv_async()
            .await
            .map_err(|_| Error::Shutdown)?
            .ok_or(Error::UnknownGroup(self.group))
    }

    /// Takes a snapshot of the group on this node (leader or follower) at
    /// its applied index: the state machine's `on_snapshot_save` writes it
    /// into the group's snapshot store, with the index's term, the
    /// configuration there and the client sessions. Resolves with the
    /// snapshot's index once it is durable; if nothing was applied since the
    /// newest snapshot, with that one's index. A restarted node loads the
    /// newest valid snapshot and applies only the entries after it.
    ///
    /// A state machine that hands a view (`StateMachine::snapshot_view`)
    /// is written on a blocking thread while the shard goes on serving;
    /// otherwise `on_snapshot_save` runs on the shard's thread and the
    /// shard's other groups wait (`docs/architecture.md`, "Snapshot policy
    /// and log compaction"). It waits first until every applied entry is
    /// durable in the WAL here.
    pub async fn snapshot(&self) -> Result<LogIndex, Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Snapshot {
            group: self.group,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// Asks the leader to hand leadership to `target`.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::TransferLeader {
            group: self.group,
            target,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    /// Adds `peer` to the group as a learner: it receives the log but does
    /// not vote. Ask the leader (else [`Error::NotLeader`]). `peer`'s shard
    /// addresses go into the log first (an address-book entry every member
    /// applies and connects by), so a node started with
    /// [`Node::start_joining`] is reached and caught up by the log.
    /// Resolves once the change is committed. One change at a time per
    /// group: while one is in flight, [`Error::ChangeInProgress`].
    pub async fn add_learner(&self, peer: PeerSpec) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::AddLearner(peer))
            .await
    }

    /// Makes the learner `node` a voter (a single-voter change, no joint
    /// configuration). Resolves once committed; [`Error::InvalidChange`] if
    /// `node` is not a learner.
    pub async fn promote_learner(&self, node: NodeId) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::Promote(node))
            .await
    }

    /// Adds `peer` as a voter safely: first as a learner (unless it is one),
    /// then, once it holds the log up to the entry that made it a learner
    /// and is within [`PROMOTE_LAG_ENTRIES_MAX`](super::PROMOTE_LAG_ENTRIES_MAX)
    /// entries of the leader's last, promoted. A voter that has yet to catch up
    /// would count towards the quorum without holding the log, so the group
    /// could stall until it does. Resolves when the promotion is committed;
    /// the whole sequence is one change in flight. The request timeout of
    /// the node bounds it ([`Error::Timeout`]: the learner may stay a learner).
    pub async fn add_voter(&self, peer: PeerSpec) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::AddVoter(peer))
            .await
    }

    /// Removes `node` (voter or learner) from the group. Removing the leader
    /// itself is allowed: it first hands leadership to the most caught-up
    /// other voter (a transfer: caught up, then TimeoutNow), then asks the
    /// new leader over the admin protocol to propose the removal, and
    /// resolves with that answer; leadership moves without waiting out an
    /// election timeout and no departing leader commits anything.
    /// The removed node learns it was removed, logs it, and never campaigns
    /// in the group again; members close their connection to it once no
    /// group of theirs counts it. Resolves once the removal is committed.
    pub async fn remove_member(&self, node: NodeId) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::Remove(node))
            .await
    }

    /// Makes `voters` the group's voters: the missing ones are added, the
    /// others removed, through joint consensus when more than one voter
    /// changes (thesis §4.3). A node new to the group needs its shard
    /// addresses in its [`PeerSpec`]; a member's may be left empty.
    /// Learners stay learners. Resolves once the group has left the joint
    /// configuration. New voters are not caught up first: prefer
    /// [`add_voter`](Self::add_voter) for a node that starts empty.
    pub async fn change_members(&self, voters: Vec<PeerSpec>) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::Change(voters))
            .await
    }

    /// UNSAFE recovery when a majority of the group is gone for good: this
    /// node adopts `voters` as the configuration at once, without consensus
    /// (the core's `force_configuration`), and the next leader records it in
    /// the log. Call it with the same `voters` on every survivor. What it
    /// can lose: any entry the lost nodes held and the survivors do not,
    /// acknowledged writes included; and if a "lost" node was only
    /// partitioned and comes back, two configurations may each elect a
    /// leader and diverge: wipe such a node before it returns. Logged at
    /// error level. Resolves once the configuration is adopted here.
    pub async fn reset_peers(&self, voters: Vec<NodeId>) -> Result<(), Error> {
        self.membership(super::membership::MembershipRequest::Reset(voters))
            .await
    }

    async fn membership(&self, request: super::membership::MembershipRequest) -> Result<(), Error> {
        let (reply, answer) = flume::bounded(1);
        self.submit(ApiRequest::Membership {
            group: self.group,
            request,
            reply,
        })?;
        answer.recv_async().await.map_err(|_| Error::Shutdown)?
    }

    fn submit(&self, request: ApiRequest) -> Result<(), Error> {
        self.api.try_send(request).map_err(|e| match e {
            flume::TrySendError::Full(_) => Error::Busy { bound: "API_QUEUE_MAX" },
            flume::TrySendError::Disconnected(_) => Error::Shutdown,
        })
    }
}

/// What a shard's thread is handed to join the rest of the node.
struct ShardChannels {
    mesh: Option<super::forward::Mesh>,
    api: flume::Receiver<ApiRequest>,
    ready: flume::Sender<Result<(), Error>>,
    admin: Arc<super::admin::AdminService>,
}

async fn run_shard(
    options: NodeOptions,
    shard: usize,
    factory: StateMachineFactory,
    channels: ShardChannels,
    mode: StartMode,
) {
    let ShardChannels {
        mesh,
        api,
        ready,
        admin,
    } = channels;
    // Every shard joins the mesh before anything that may fail: joining
    // waits for all of them.
    let joined = super::forward::Forwarder::join(mesh, shard)
        .await
        .map_err(Error::Config);
    let started = match joined {
        Ok(forwarding) => start_shard(&options, shard, &factory, forwarding, admin, mode).await,
        Err(error) => Err(error),
    };
    let (shard_state, bell) = match started {
        Ok(started) => {
            let _ = ready.send(Ok(()));
            started
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let events = shard_state.events.clone();
    let bridge = glommio::spawn_local(async move {
        while let Ok(request) = api.recv_async().await {
            let stop = matches!(request, ApiRequest::Shutdown);
            if let Err(refused) = events.push(Event::Api(request)) {
                match *refused {
                    Event::Api(ApiRequest::Propose { reply, .. } | ApiRequest::Read { reply, .. }) => {
                        let _ = reply.send(Err(Error::Busy {
                            bound: "EVENTS_QUEUED_MAX",
                        }));
                    }
                    Event::Api(ApiRequest::Snapshot { reply, .. }) => {
                        let _ = reply.send(Err(Error::Busy {
                            bound: "EVENTS_QUEUED_MAX",
                        }));
                    }
                    Event::Api(ApiRequest::Membership { reply, .. } | ApiRequest::TransferLeader { reply, .. }) => {
                        let _ = reply.send(Err(Error::Busy {
                            bound: "EVENTS_QUEUED_MAX",
                        }));
                    }
                    Event::Api(ApiRequest::CreateGroup { reply: Some(reply), .. }) => {
                        let _ = reply.send(Err(Error::Busy {
                            bound: "EVENTS_QUEUED_MAX",
                        }));
                    }
                    Event::Api(ApiRequest::CreateGroup { group, reply: None, .. }) => {
                        // Asked in the background: nobody else hears of it.
                        log::error!("creating group {group} failed: the shard's events are full (EVENTS_QUEUED_MAX)");
                    }
                    _ => {}
                }
            }
            if stop {
                return;
            }
        }
        let _ = events.push(Event::Api(ApiRequest::Shutdown));
    });
    shard_state.run(bell, options.tick).await;
    bridge.cancel().await;
}

async fn start_shard(
    options: &NodeOptions,
    shard: usize,
    factory: &StateMachineFactory,
    forwarding: Option<(Rc<super::forward::Forwarder>, super::forward::MeshReceivers)>,
    admin: Arc<super::admin::AdminService>,
    mode: StartMode,
) -> Result<(Shard, glommio::channels::local_channel::LocalReceiver<()>), Error> {
    let wal_faults = mode.wal_faults;
    let dir = options
        .shard_wal_dirs
        .get(shard)
        .cloned()
        .unwrap_or_else(|| options.wal_dir.join(format!("shard-{shard}")));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(format!("creating {}: {e}", dir.display())))?;
    let wal_config = coraft_wal::Config {
        segment_bytes: options.wal_segment_bytes,
        zero_ahead_bytes: options.wal_zero_ahead_bytes,
        polled_io: options.wal_polled_io,
        dsync_small_flush_bytes: options.wal_dsync_small_flush_bytes,

        // Each group's log is built from the payloads recovery copied as it
        // checked them (`recover_group`): the log is read once.
        keep_recovered_payloads: true,
        ..coraft_wal::Config::default()
    };
    let opening = std::time::Instant::now();
    let (opened, faults) = if wal_faults {
        let real = coraft_wal::DmaFs {
            polled_io: options.wal_polled_io,
            dsync_small_flush_bytes: options.wal_dsync_small_flush_bytes,
        };
        let (fs, faults) = coraft_wal::FaultyFs::new(Rc::new(real));
        let opened = coraft_wal::Wal::open_with_fs(&dir, wal_config, Rc::new(fs)).await;
        (opened, Some(faults))
    } else {
        (coraft_wal::Wal::open(&dir, wal_config).await, None)
    };
    let (wal, report) = opened.map_err(|e| Error::Storage(format!("opening the WAL in {}: {e}", dir.display())))?;
    log::info!(
        "node {} shard {shard}: WAL in {} opened in {:.2} s ({} segments, last LSN {})",
        options.node_id,
        dir.display(),
        opening.elapsed().as_secs_f64(),
        report.segments,
        report.last_lsn
    );
    if let Some(torn) = report.torn_tail {
        log::warn!(
            "node {} shard {shard}: cut a torn WAL tail (the last flush, whose sync may never have returned) in {} at offset {}: {:?}",
            options.node_id,
            dir.join(coraft_wal::format::segment_file_name(torn.segment)).display(),
            torn.offset,
            torn.reason
        );
    }
    // A joining node's groups wait for their configuration in the log.
    let voters = if mode.joining {
        Configuration::default()
    } else {
        Configuration::with_voters(options.peers.iter().map(|p| p.id))
    };
    let created = super::created_groups::CreatedGroups::load(&dir)?;
    super::group_creation::finish_removals_at_start(options, &dir, &wal, &created)?;
    let mut groups = BTreeMap::new();
    for &group in options
        .groups
        .iter()
        .filter(|g| (g.0 % options.shard_count() as u64) as usize == shard)
    {
        groups.insert(group, open_group(options, &dir, &wal, group, voters.clone(), factory)?);
    }
    // Groups created at run time come back with the voters they were
    // created with (the log then says what changed since).
    for (group, first_voters) in created.groups() {
        if let std::collections::btree_map::Entry::Vacant(entry) = groups.entry(group) {
            let first = Configuration::with_voters(first_voters.iter().copied());
            entry.insert(open_group(options, &dir, &wal, group, first, factory)?);
        }
        admin.add_group(group);
    }
    // Payloads of groups this node no longer opens are not kept.
    wal.drop_recovered_entries();
    let identity = LocalIdentity {
        cluster_id: options.cluster_id,
        node_id: options.node_id.0,
        shard_id: shard as u32,
    };
    let mut net_config = NetConfig::new(identity);
    net_config.outbound_queue_bytes_max =
        usize::try_from(options.limits.outbound_queue_bytes_max).unwrap_or(usize::MAX);
    let me = options
        .peers
        .iter()
        .find(|p| p.id == options.node_id)
        .expect("validated");
    let listener = coraft_net::Listener::bind(me.shard_addresses[shard], net_config)
        .map_err(|e| Error::Network(format!("listening on {}: {e}", me.shard_addresses[shard])))?;
    let remotes: Vec<(NodeId, SocketAddr)> = options
        .peers
        .iter()
        .filter(|p| p.id != options.node_id)
        .map(|p| (p.id, p.shard_addresses[shard]))
        .collect();
    let peers = Peers::connect(net_config, shard as u32, &remotes).map_err(Error::Network)?;
    let (events, bell) = EventQueue::new();
    let endpoints = super::shard::Endpoints {
        peers,
        listener: Rc::new(listener),
        forwarding,
        admin,
    };
    // Segments the recovered purge markers (or those `open_group` wrote
    // again) free are deleted as after a purge on a running node.
    let purged = groups.values().any(|g| g.wal_purged > LogIndex(0));
    let mut shard_state = Shard::new(shard, options, groups, Rc::new(wal), events, endpoints);
    shard_state.wal_faults = faults;
    if purged {
        shard_state.segment_deletion.want();
    }
    shard_state.creation = Some(super::group_creation::GroupCreation {
        options: options.clone(),
        dir,
        factory: factory.clone(),
        created,
        retiring: Vec::new(),
    });
    // Members added at run time whose address-book entries a snapshot
    // compacted away: their addresses came with the snapshot.
    shard_state.learn_restored_addresses();
    Ok((shard_state, bell))
}

/// Recovers `group` from the shard's WAL and snapshot store (in
/// `shard_dir`), with `voters` as its configuration if the log names none,
/// and its state machine from `factory`.
pub(super) fn open_group(
    options: &NodeOptions,
    dir: &std::path::Path,
    wal: &coraft_wal::Wal,
    group: GroupId,
    voters: Configuration,
    factory: &StateMachineFactory,
) -> Result<Group, Error> {
    let mut initial = recover_group(wal, group, voters)?;
    let recovered_hard_state = initial.hard_state;
    let mut state_machine = factory(group);
    let loaded = load_snapshot(dir, group, &mut initial, state_machine.as_mut())?;
    if loaded.adopted {
        // A snapshot installed from a leader whose WAL write did not
        // become durable before a crash: write it again (the shard's
        // first group commit makes it durable; a crash before that
        // brings us here again).
        let meta = initial
            .snapshot
            .as_ref()
            .expect("adopted snapshots are the purge point");
        wal.truncate_suffix(group.0, meta.index.0 + 1)
            .and_then(|_| wal.purge(group.0, meta.index.0, meta.term.0))
            .map_err(|e| Error::Storage(format!("group {group}: purging the WAL to an installed snapshot: {e}")))?;
    }
    let (store, sessions, addresses) = (loaded.store, loaded.sessions, loaded.addresses);
    let wal_purged = initial.snapshot.as_ref().map_or(LogIndex(0), |s| s.index);
    let mut config = RaftConfig::new(options.node_id, group);
    config.election_timeout_ticks = options.election_timeout_ticks;
    config.heartbeat_interval_ticks = options.heartbeat_interval_ticks;
    config.read_mode = options.read_mode;
    config.quiesce = options.quiesce_idle_groups;
    config.pre_vote = options.protocol.pre_vote;
    config.check_quorum = options.protocol.check_quorum;
    config.clock_drift_margin_ticks = options.protocol.clock_drift_margin_ticks;
    config.election_priority = options.protocol.election_priority;
    config.inflight_messages_max = options.limits.inflight_messages_max;
    config.inflight_bytes_max = options.limits.inflight_bytes_max;
    config.append_bytes_max = options.limits.batch_bytes_max;
    config.uncommitted_bytes_max = options.limits.uncommitted_bytes_max;
    config.seed = options.node_id.0.wrapping_mul(0x9E37_79B9).wrapping_add(group.0);
    let core = RaftCore::new(config, initial).map_err(|e| Error::Config(e.to_string()))?;
    let mut hosted = Group::new(core, state_machine);
    hosted.sessions = sessions;
    if let Err(reason) = hosted.restore_address_book(&addresses) {
        // Addresses are only where to connect: the static peers and
        // later address-book entries still serve.
        log::warn!(
            "node {} group {group}: ignoring the snapshot's address book: {reason}",
            options.node_id
        );
    }
    hosted.snapshots = Some(store);
    hosted.stored_snapshot = loaded.snapshot;
    hosted.wal_purged = wal_purged;
    hosted.hard_states = super::storage::HardStateWriter::recovered(recovered_hard_state);
    if let Some(index) = hosted.stored_snapshot.as_ref().map(|s| s.meta.index) {
        // The log is compacted after the loaded snapshot as it was when that
        // snapshot became durable (`Shard::snapshot_durable`): the WAL keeps
        // entries back to its purge point (an older kept snapshot), which
        // are not the core's log. Without this a restarted node held in
        // memory every entry the WAL kept, and as leader caught a lagging
        // follower up from them instead of by its snapshot, unlike a node
        // that did not restart. A purge marker a crash lost is written again
        // (the shard's first sync makes it durable; its first turn deletes
        // the segments no group needs any more).
        let tail = options.snapshot.log_tail_entries;
        // What it forgets is dropped here: the shard does not serve yet.
        super::compaction::compact_group(wal, group, &mut hosted, index, tail, None)?;
    }
    Ok(hosted)
}

/// The directory of `group`'s snapshots: `snapshots/group-<g>` in its
/// shard's WAL directory (the WAL only reads its segment files there).
pub(crate) fn snapshot_dir(shard_wal_dir: &std::path::Path, group: GroupId) -> PathBuf {
    shard_wal_dir.join("snapshots").join(format!("group-{}", group.0))
}

/// What `load_snapshot` found.
struct LoadedSnapshot {
    store: super::snapshot_store::SnapshotStore,
    /// The client sessions as of the snapshot (empty without one).
    sessions: super::sessions::SessionTable,
    /// The snapshot loaded.
    snapshot: Option<super::snapshot_store::StoredSnapshot>,
    /// The address book's bytes as of the snapshot (empty without one).
    addresses: Vec<u8>,
    /// It is a snapshot installed from a leader that the WAL does not
    /// record yet: the caller writes its purge point.
    adopted: bool,
}

/// Opens `group`'s snapshot store and, if it holds a valid snapshot, loads
/// the newest into `state_machine` and records it in `initial`, so the core
/// applies only the entries after it. Returns the store, the client
/// sessions and the address book's bytes as of the snapshot (empty without
/// one). A newer snapshot that fails its checks is skipped with a warning
/// naming its path and reason.
fn load_snapshot(
    shard_wal_dir: &std::path::Path,
    group: GroupId,
    initial: &mut crate::raft::InitialState,
    state_machine: &mut dyn StateMachine,
) -> Result<LoadedSnapshot, Error> {
    let dir = snapshot_dir(shard_wal_dir, group);
    let store = super::snapshot_store::SnapshotStore::open(&dir, group)
        .map_err(|e| Error::Storage(format!("group {group}: opening the snapshot store: {e}")))?;
    let found = store
        .newest_valid()
        .map_err(|e| Error::Storage(format!("group {group}: reading the snapshot store: {e}")))?;
    for skipped in &found.skipped {
        log::warn!(
            "group {group}: skipping snapshot {} for an older one: {}",
            skipped.path.display(),
            skipped.reason
        );
    }
    // The WAL's purge point, if the group's log was compacted: a snapshot
    // at or past it must be loaded, or the entries up to it are gone.
    let purged = initial.snapshot.as_ref().map(|s| (s.index, s.term));
    let skipped = || {
        found
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.path.display(), s.reason))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(snapshot) = found.snapshot.as_ref() else {
        if let Some((index, _)) = purged {
            return Err(Error::Storage(format!(
                "group {group}: the WAL is purged through index {index}, but {} holds no valid snapshot \
                 to restart from (skipped: [{}]); the entries up to {index} are gone",
                dir.display(),
                skipped()
            )));
        }
        // The whole log is in the WAL: the restart replays it.
        set_aside_damaged(&store, group, &found.skipped, &skipped())?;
        return Ok(LoadedSnapshot {
            store,
            sessions: super::sessions::SessionTable::default(),
            snapshot: None,
            addresses: Vec::new(),
            adopted: false,
        });
    };
    if let Some((index, _)) = purged.filter(|&(index, _)| snapshot.meta.index < index) {
        return Err(Error::Storage(format!(
            "group {group}: the newest valid snapshot {} covers index {}, older than the WAL's purge point \
             {index} (skipped: [{}]); entries {} to {index} are gone",
            snapshot.path.display(),
            snapshot.meta.index,
            skipped(),
            snapshot.meta.index.next()
        )));
    }
    // A snapshot this node took covers entries that were durable in the WAL
    // before it was written, so the WAL holds its entry: as its purge point
    // or as an entry after it. One installed from a leader is published in
    // the store before the WAL records it (`install.rs`): after a crash in
    // between, the WAL lacks its entry (or holds a stale one there). Its
    // entries are committed (a leader snapshots only applied entries), so
    // it is adopted as the core would install it: the log it replaces goes.
    let in_log = purged == Some((snapshot.meta.index, snapshot.meta.term))
        || initial
            .entries
            .iter()
            .find(|e| e.index == snapshot.meta.index)
            .is_some_and(|e| e.term == snapshot.meta.term);
    if !in_log {
        log::warn!(
            "group {group}: snapshot {} (index {} term {}) is not in the WAL: a snapshot installed from a leader \
             just before a crash; the log it replaces is dropped",
            snapshot.path.display(),
            snapshot.meta.index,
            snapshot.meta.term
        );
        initial.entries.clear();
        initial.snapshot = Some(snapshot.meta.clone());
    }
    if let Some(base) = initial.snapshot.as_mut() {
        // The snapshot's configuration serves as the one at the purge point:
        // a configuration entry between the two is replayed over it, so the
        // configuration in force from the snapshot on is right (nothing asks
        // for one at an index below the snapshot).
        base.configuration = snapshot.meta.configuration.clone();
    }
    let sessions = super::sessions::SessionTable::decode(&snapshot.sessions).map_err(|e| {
        Error::Storage(format!(
            "group {group}: the session table of snapshot {}: {e}",
            snapshot.path.display()
        ))
    })?;
    let mut reader = snapshot
        .open_reader()
        .map_err(|e| Error::Storage(format!("group {group}: {e}")))?;
    // The shard's loop has not started: a loader prepares here, at once.
    let how = super::install::load_into(state_machine, &mut reader)
        .map_err(|(how, e)| Error::Storage(format!("group {group}: {how} of {}: {e}", snapshot.path.display())))?;
    log::debug!("group {group}: snapshot loaded with {how}");
    log::info!(
        "group {group}: loaded snapshot {} (index {})",
        snapshot.path.display(),
        snapshot.meta.index
    );
    initial.loaded_snapshot = Some(snapshot.meta.clone());
    // The restart goes on from this one.
    set_aside_damaged(&store, group, &found.skipped, &skipped())?;
    Ok(LoadedSnapshot {
        snapshot: found.snapshot.clone(),
        store,
        sessions,
        addresses: snapshot.addresses.clone(),
        adopted: !in_log,
    })
}

/// Once a restart goes on without them, the damaged snapshots it skipped
/// must no longer count as kept snapshots (`SnapshotStore::set_aside`).
/// Only then: a refused start leaves every file as it found it.
fn set_aside_damaged(
    store: &super::snapshot_store::SnapshotStore,
    group: GroupId,
    skipped: &[super::snapshot_store::SkippedSnapshot],
    described: &str,
) -> Result<(), Error> {
    let aside = store.set_aside(skipped).map_err(|e| {
        Error::Storage(format!(
            "group {group}: setting aside the damaged snapshots [{described}]: {e}"
        ))
    })?;
    for path in aside {
        log::warn!("group {group}: damaged snapshot set aside as {}", path.display());
    }
    Ok(())
}
