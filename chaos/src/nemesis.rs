//! The nemesis: faults injected into the cluster's processes on a seeded
//! schedule, each recorded on the history's clock.
//!
//! * `kill-leader`, `kill-node`: SIGKILL one node (the one whose metrics say
//!   it leads, or a random one), keep it down a while, restart it from its WAL.
//! * `kill-all`: SIGKILL every node at once, then restart them all.
//! * `stop-leader`, `stop-node`: SIGSTOP one node for longer than the
//!   election timeout (and the lease), then SIGCONT: a paused leader wakes
//!   up believing it still leads.
//! * `partition-halves`: cut the nodes into a smaller and a larger side.
//! * `partition-leader`: cut the leader off from every other node.
//! * `partition-bridge`: two sides that share one middle node, which alone
//!   sees everyone.
//! * `partition-ring`: shifting majorities: each node talks only to its two
//!   neighbours on a ring, so with five nodes every node sees a majority
//!   (itself and its neighbours) and no two see the same one. With fewer
//!   than five nodes the ring is cut open into a line (a bridge).
//! * `partition-one-way`: one node (the leader if one is known) can no
//!   longer send to the others (a blackhole route in its namespace only);
//!   they still send to it. Over TCP this stalls the connections both
//!   ways too, but the cut itself is one-way: the others' SYNs and
//!   heartbeats still arrive.
//! * `slow-links`: every node's link rate-limited by a `tc tbf` qdisc on
//!   its namespace's interface (egress, 1 Mbit/s, 200 ms of queue), so
//!   replication and elections run over slow, queueing links.
//!
//! * `snapshot-install`: SIGKILL a follower, keep it down until the live
//!   nodes have taken [`SNAPSHOTS_WHILE_DOWN`] more snapshots (their
//!   `[snapshot]` policy is then a small one, [`snapshot_policy`]: the
//!   leader compacts its log past the follower's end), restart it and wait
//!   for its `coraft_snapshots_installed_total` to say it was caught up by
//!   InstallSnapshot; the fault records how many it installed.
//!
//! * `proxy-delay`, `proxy-reorder`, `proxy-lossy`: node-to-node traffic
//!   runs through a fault-injecting TCP proxy per link ([`crate::proxy`]);
//!   `proxy-delay` holds every chunk 5–60 ms plus up to 20–150 ms of jitter
//!   on every link; `proxy-reorder` adds jitter and resets each connection
//!   after 200–1000 ms, delivering what it held 100–400 ms later on the old
//!   connection while the new one already carries newer messages;
//!   `proxy-lossy` makes every link to and from one node (the leader if one
//!   is known) stall for its last 100–400 ms and reset every 300–1200 ms,
//!   losing what was written during the stall.
//! * `transfer`: ask the leader (admin protocol, `TransferLeader`) to hand
//!   leadership to a random other node, and watch for the new leader.
//! * `membership`: remove a random node (the leader included: it hands
//!   over first) from the group through the admin protocol (`Remove`), keep
//!   it out a while — half the time SIGKILLed and restarted while out —
//!   then add it back as a voter (`AddVoter`, with its address) and wait
//!   until it has applied what the leader had committed when it was
//!   re-added ([`Fault::caught_up`]).
//! * `storage`: SIGKILL a random node, damage its WAL ([`crate::storage`]:
//!   a torn tail, a bit flip in a synced record, a zeroed sector, a
//!   truncated segment), start it. If it refuses to start (it must, naming
//!   the file and the offset, for synced records damaged), remove it from
//!   the group, wipe its WAL, start it with `--join` and add it back as a
//!   voter, waiting until it caught up; if it starts, wait until it caught
//!   up with the leader's commit index ([`StorageFault`]).
//!
//! Partitions need the nodes in network namespaces ([`Network`]); the
//! clients still reach every node, so an isolated leader keeps getting
//! requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use coraft::admin::{AdminCallError, AdminClient, AdminRequest, MemberSpec};

use crate::cluster::{Cluster, CLUSTER_ID};
use crate::netns::Network;
use crate::proxy::{LinkCounters, LinkFaults};
use crate::rng::Rng;
use crate::workload::Recorder;
use crate::RunError;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader, restart it later.
    KillLeader,
    /// SIGKILL a random node, restart it later.
    KillNode,
    /// SIGKILL every node, restart them all later.
    KillAll,
    /// SIGSTOP the leader, SIGCONT it later.
    StopLeader,
    /// SIGSTOP a random node, SIGCONT it later.
    StopNode,
    /// Cut the nodes into a smaller and a larger side, heal later.
    PartitionHalves,
    /// Cut the leader off from the other nodes, heal later.
    PartitionLeader,
    /// Two sides sharing one middle node, heal later.
    PartitionBridge,
    /// Each node sees only its ring neighbours (shifting majorities).
    PartitionRing,
    /// One node's outbound packets to its peers dropped, inbound kept.
    PartitionOneWay,
    /// Every node's link rate-limited (tc tbf), restored later.
    SlowLinks,
    /// SIGKILL a follower until the leader compacts past it, restart it:
    /// it must be caught up by InstallSnapshot.
    SnapshotInstall,
    /// Every proxied link delayed, with jitter.
    ProxyDelay,
    /// Every proxied link jittered and its connections reset, what they
    /// held delivered late on the old connection.
    ProxyReorder,
    /// One node's proxied links stall (losing what they read) and reset.
    ProxyLossy,
    /// Leadership handed to another node (admin `TransferLeader`).
    Transfer,
    /// A node removed from the group and added back (admin `Remove`,
    /// `AddVoter`).
    Membership,
    /// A node SIGKILLed, its WAL damaged ([`crate::storage`]), restarted:
    /// it refuses (then it is removed, wiped, re-added) or repairs and
    /// catches up.
    Storage,
}

/// Snapshots the live nodes must take, each, while the `snapshot-install`
/// fault's follower is down: two snapshots of [`snapshot_policy`]'s
/// `after_entries` each, past a tail of `log_tail_entries`, leave the
/// leader's log starting above what the follower had.
pub const SNAPSHOTS_WHILE_DOWN: u64 = 3;
/// The longest the `snapshot-install` fault keeps its follower down waiting
/// for those snapshots (the clients may be slow on a loaded machine).
const SNAPSHOT_DOWN_MAX: Duration = Duration::from_secs(20);
/// How long the restarted follower has to report an installed snapshot.
const SNAPSHOT_INSTALL_WAIT: Duration = Duration::from_secs(20);

/// The `[snapshot]` policy of every node in a run whose nemesis has
/// `snapshot-install`: a snapshot every 64 entries applied, 16 entries kept
/// below it, so that a follower down for a few hundred writes is behind the
/// leader's log.
pub fn snapshot_policy() -> coraft_tuning::SnapshotSettings {
    coraft_tuning::SnapshotSettings {
        after_entries: 64,
        log_tail_entries: 16,
        ..coraft_tuning::SnapshotSettings::default()
    }
}

/// Set by `coraft-chaos` on SIGINT or SIGTERM: the nemesis heals and stops,
/// the run ends normally (its network torn down, its history checked).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

impl FaultKind {
    /// Every kind, in the order `--nemesis` lists them.
    pub const ALL: [FaultKind; 18] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::KillAll,
        FaultKind::StopLeader,
        FaultKind::StopNode,
        FaultKind::PartitionHalves,
        FaultKind::PartitionLeader,
        FaultKind::PartitionBridge,
        FaultKind::PartitionRing,
        FaultKind::PartitionOneWay,
        FaultKind::SlowLinks,
        FaultKind::SnapshotInstall,
        FaultKind::ProxyDelay,
        FaultKind::ProxyReorder,
        FaultKind::ProxyLossy,
        FaultKind::Transfer,
        FaultKind::Membership,
        FaultKind::Storage,
    ];

    /// Whether the kind needs the nodes' links proxied.
    pub fn is_proxy(self) -> bool {
        matches!(
            self,
            FaultKind::ProxyDelay | FaultKind::ProxyReorder | FaultKind::ProxyLossy
        )
    }

    /// Whether the kind needs the nodes in network namespaces.
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionHalves
                | FaultKind::PartitionLeader
                | FaultKind::PartitionBridge
                | FaultKind::PartitionRing
                | FaultKind::PartitionOneWay
                | FaultKind::SlowLinks
        )
    }

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillNode => "kill-node",
            FaultKind::KillAll => "kill-all",
            FaultKind::StopLeader => "stop-leader",
            FaultKind::StopNode => "stop-node",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionRing => "partition-ring",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::SlowLinks => "slow-links",
            FaultKind::SnapshotInstall => "snapshot-install",
            FaultKind::ProxyDelay => "proxy-delay",
            FaultKind::ProxyReorder => "proxy-reorder",
            FaultKind::ProxyLossy => "proxy-lossy",
            FaultKind::Transfer => "transfer",
            FaultKind::Membership => "membership",
            FaultKind::Storage => "storage",
        }
    }

    /// Parses a comma-separated list of kinds; `kill` means every kill
    /// kind, `stop` every stop kind, `partition` every partition kind,
    /// `proxy` every proxy kind, `none` no fault.
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let more: Vec<FaultKind> = match word {
                "kill" => vec![FaultKind::KillLeader, FaultKind::KillNode, FaultKind::KillAll],
                "stop" => vec![FaultKind::StopLeader, FaultKind::StopNode],
                "partition" => vec![
                    FaultKind::PartitionHalves,
                    FaultKind::PartitionLeader,
                    FaultKind::PartitionBridge,
                    FaultKind::PartitionRing,
                    FaultKind::PartitionOneWay,
                ],
                "proxy" => vec![FaultKind::ProxyDelay, FaultKind::ProxyReorder, FaultKind::ProxyLossy],
                "none" => vec![],
                _ => match FaultKind::ALL.iter().find(|k| k.name() == word) {
                    Some(&kind) => vec![kind],
                    None => {
                        return Err(format!(
                            "unknown fault `{word}`: expected kill, stop, partition, proxy, none, or one of {}",
                            FaultKind::ALL.map(FaultKind::name).join(", ")
                        ))
                    }
                },
            };
            for kind in more {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        Ok(kinds)
    }
}

/// One fault injected, on the history's clock.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// The nodes it hit (1-based ids): killed, paused, or cut off from
    /// some other node.
    pub nodes: Vec<u64>,
    /// For a partition: the sides (1-based ids); nodes talk only within a side.
    pub sides: Vec<Vec<u64>>,
    /// The leader before it (1-based id), if one was found.
    pub leader_before: Option<u64>,
    /// For a fault that took the leader down: the leader the others elected
    /// while it was down, if one was seen.
    pub leader_after: Option<u64>,
    /// When it started, ns since the run started.
    pub start_ns: u64,
    /// When it was healed (the node restarted or resumed).
    pub end_ns: u64,
    /// For `snapshot-install`: the snapshots the restarted node installed
    /// from a leader (its `coraft_snapshots_installed_total`), 0 if none
    /// was seen in time.
    pub snapshots_installed: u64,
    /// For a proxy fault: the links it set (1-based `[from, to]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<[u64; 2]>,
    /// For a proxy fault: what the proxies did while it lasted (all links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<LinkCounters>,
    /// For `transfer` and `membership`: what the admin calls answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin: Vec<String>,
    /// For `membership`: whether the re-added node applied what the
    /// leader had committed when it was added back (`None`: not re-added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up: Option<bool>,
    /// For `storage`: what was damaged and what the node did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageFault>,
}

/// What a `storage` fault damaged and how the node took it.
#[derive(Debug, Clone, Serialize)]
pub struct StorageFault {
    /// What was damaged (`None`: no segment fitted the damage drawn, the
    /// node was restarted as it was).
    pub damaged: Option<crate::storage::Damaged>,
    /// Whether the node refused to start (exited on its own).
    pub refused: bool,
    /// Its error line when it refused, or the line saying where it cut a
    /// torn tail when it started.
    pub message: Option<String>,
    /// For a refusal: whether the message names the damaged file and the
    /// offset (or, for a truncation, the file's new length).
    pub named_file_and_offset: bool,
    /// Whether it started although the damage was to synced records it
    /// must refuse ([`crate::storage::Damage::must_refuse`]).
    pub started_on_damage: bool,
    /// Whether it is back: a refusing node removed, wiped, re-added and
    /// caught up; a starting node caught up with the leader's commit index.
    pub back: bool,
}

/// The nemesis's timing, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time between faults: drawn from `[min, max)`.
    pub gap_ms: (u64, u64),
    /// How long a killed node stays down.
    pub down_ms: (u64, u64),
    /// How long a stopped node stays paused (longer than the election timeout).
    pub pause_ms: (u64, u64),
    /// How long a partition lasts.
    pub partition_ms: (u64, u64),
    /// How long to look for a new leader after taking the old one down.
    pub new_leader_wait_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            gap_ms: (1_000, 3_000),
            down_ms: (300, 2_000),
            pause_ms: (500, 2_500),
            partition_ms: (1_000, 4_000),
            new_leader_wait_ms: 5_000,
        }
    }
}

/// Sleeps `ms`, waking early if `stop` is set.
fn sleep_unless(ms: u64, stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Waits up to `ms` for a leader other than `old` among the live nodes.
fn await_new_leader(cluster: &Cluster, old: Option<usize>, ms: u64) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    loop {
        if let Some(leader) = cluster.leader().filter(|&l| Some(l) != old) {
            return Some(leader);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sides of a partition of `nodes` nodes (0-based).
fn partition_sides(kind: FaultKind, nodes: usize, leader: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..nodes).collect();
    for i in (1..nodes).rev() {
        order.swap(i, rng.index(i + 1));
    }
    match kind {
        FaultKind::PartitionLeader | FaultKind::PartitionOneWay => {
            vec![vec![leader], (0..nodes).filter(|&n| n != leader).collect()]
        }
        FaultKind::PartitionRing if nodes >= 5 => (0..nodes).map(|i| vec![order[i], order[(i + 1) % nodes]]).collect(),
        FaultKind::PartitionRing => (0..nodes - 1).map(|i| vec![order[i], order[i + 1]]).collect(),
        FaultKind::PartitionBridge => {
            // Two sides of (nodes - 1) / 2 and the rest, sharing the middle one.
            let half = nodes / 2;
            vec![order[..=half].to_vec(), order[half..].to_vec()]
        }
        _ => {
            let small = nodes / 2;
            vec![order[..small].to_vec(), order[small..].to_vec()]
        }
    }
}

/// How long a membership change (with the retries a new leader or a
/// change in flight need) may take.
const MEMBERSHIP_CHANGE_WAIT: Duration = Duration::from_secs(30);
/// How long one admin call may take (a promotion waits for a catch-up).
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn admin_client(cluster: &Cluster, index: usize) -> Result<AdminClient, AdminCallError> {
    AdminClient::connect(cluster.raft_address(index), CLUSTER_ID, ADMIN_CALL_TIMEOUT)
}

/// The group's report from node `index`, if it answers.
fn group_report(cluster: &Cluster, index: usize) -> Option<coraft::admin::GroupReport> {
    let mut client = admin_client(cluster, index).ok()?;
    client.status(&[crate::workload::GROUP]).ok()?.groups.into_iter().next()
}

/// The leader's commit index now (0 if no leader answers).
fn leader_commit(cluster: &Cluster) -> u64 {
    cluster
        .leader()
        .and_then(|leader| group_report(cluster, leader))
        .map_or(0, |report| report.commit_index)
}

/// Sends a membership `request` to the leader until it is done, or the
/// leader's configuration shows node `node` a voter (`member`) or not a
/// member (a call whose answer was lost may have applied), or `until`.
fn change_membership(
    cluster: &Cluster,
    request: AdminRequest,
    node: u64,
    member: bool,
    until: Instant,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut last = "no leader found".to_string();
    while Instant::now() < until && !stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
        if let Some(leader) = cluster.leader() {
            if let Some(report) = group_report(cluster, leader) {
                let voter = report.voters.contains(&node) && report.outgoing_voters.is_empty();
                let gone = !report.voters.contains(&node) && !report.learners.contains(&node);
                if (member && voter) || (!member && gone) {
                    return Ok(());
                }
            }
            match admin_client(cluster, leader).and_then(|mut client| client.change_membership(request.clone())) {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// Waits until node `index` reports an applied index of `index_min` or
/// more and counts itself a voter.
fn await_applied(cluster: &Cluster, index: usize, index_min: u64, until: Instant) -> bool {
    while Instant::now() < until {
        if let Some(report) = group_report(cluster, index) {
            if report.applied_index >= index_min && report.voters.contains(&(index as u64 + 1)) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// How long a node whose WAL was damaged has to refuse to start, or to
/// answer a status request.
const STORAGE_START_WAIT: Duration = Duration::from_secs(20);
/// How long a node back from a storage fault has to catch up.
const STORAGE_CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// The `storage` fault on node `node`, already killed: damages its WAL,
/// starts it, and brings it back whichever way it went (`admin` gets the
/// membership calls' answers).
fn storage_fault(
    cluster: &mut Cluster,
    node: usize,
    damage: crate::storage::Damage,
    admin: &mut Vec<String>,
) -> Result<StorageFault, RunError> {
    let id = node as u64 + 1;
    let shard = cluster.wal_dir(node).join("shard-0");
    let damaged = match crate::storage::damage(&shard, damage) {
        Ok(damaged) => Some(damaged),
        Err(why) => {
            eprintln!("coraft-chaos: storage: {} not made on node {id}: {why}", damage.name());
            None
        }
    };
    cluster.start(node)?;
    // Refused (exited) or serving (answers a status request).
    let until = Instant::now() + STORAGE_START_WAIT;
    let exited = loop {
        if let Some(status) = cluster.exited(node) {
            break Some(status);
        }
        if group_report(cluster, node).is_some() || Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = cluster.log_since_start(node);
    let mut fault = StorageFault {
        damaged: damaged.clone(),
        refused: exited.is_some(),
        message: None,
        named_file_and_offset: false,
        started_on_damage: false,
        back: false,
    };
    if exited.is_some() {
        let line = log
            .lines()
            .find(|line| line.starts_with("Error") || line.contains("error"))
            .unwrap_or("(no error line)")
            .trim()
            .to_string();
        if let Some(damaged) = &damaged {
            let place = match damaged.damage {
                crate::storage::Damage::TruncatedSegment => format!("{} bytes", damaged.offset),
                // Where recovery stops depends on whether a flush starts there.
                crate::storage::Damage::ZeroedSector => "offset ".to_string(),
                _ => format!("offset {}", damaged.offset),
            };
            // The error and its causes, over as many lines as it takes.
            fault.named_file_and_offset = log.contains(&damaged.file_name) && log.contains(&place);
        }
        fault.message = Some(line);
        // Out of the group, wiped, back in as a new empty member: an empty
        // WAL must never come back as the voter it was (docs/operations.md).
        let change_until = Instant::now() + MEMBERSHIP_CHANGE_WAIT;
        let never = AtomicBool::new(false);
        let removed = change_membership(
            cluster,
            AdminRequest::Remove {
                group: crate::workload::GROUP.0,
                node: id,
            },
            id,
            false,
            change_until,
            &never,
        );
        admin.push(match &removed {
            Ok(()) => format!("remove {id}: done"),
            Err(e) => format!("remove {id}: {e}"),
        });
        if removed.is_err() {
            // Not wiped: it stays down, and the run reports it not back.
            return Ok(fault);
        }
        let wal_dir = cluster.wal_dir(node).to_path_buf();
        std::fs::remove_dir_all(&wal_dir).map_err(|source| RunError::Io {
            what: format!("wiping {}", wal_dir.display()),
            source,
        })?;
        cluster.start_joining(node)?;
        let add_until = Instant::now() + MEMBERSHIP_CHANGE_WAIT;
        let committed = leader_commit(cluster);
        let added = change_membership(
            cluster,
            AdminRequest::AddVoter {
                group: crate::workload::GROUP.0,
                member: MemberSpec {
                    node: id,
                    address: Some(cluster.raft_address(node).to_string()),
                },
            },
            id,
            true,
            add_until,
            &never,
        );
        admin.push(match &added {
            Ok(()) => format!("add voter {id}: done"),
            Err(e) => format!("add voter {id}: {e}"),
        });
        fault.back = added.is_ok() && await_applied(cluster, node, committed, add_until);
    } else {
        fault.started_on_damage = damaged.as_ref().is_some_and(|d| d.damage.must_refuse());
        fault.message = log
            .lines()
            .find(|line| line.contains("torn"))
            .map(|line| line.trim().to_string());
        // Caught up before the next fault: a node that cut a flush it had
        // synced lost entries its peers must give back first.
        let committed = leader_commit(cluster);
        fault.back = await_applied(cluster, node, committed, Instant::now() + STORAGE_CATCH_UP_WAIT);
    }
    Ok(fault)
}

/// Mixed into the run's seed for the nemesis's own generator.
const NEMESIS_SEED_MIX: u64 = 0x004E_454D_4553_4953;

/// What the nemesis draws for one fault, before looking at the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    /// Quiet time before it.
    pub gap_ms: u64,
    /// Its kind.
    pub kind: FaultKind,
    /// The node it hits when it does not aim at the leader (0-based).
    pub random_node: usize,
    /// How long a killed node stays down.
    pub down_ms: u64,
    /// How long a paused node stays paused.
    pub pause_ms: u64,
    /// How long a partition or link fault lasts.
    pub partition_ms: u64,
    /// Seeds the fault's details (sides, link settings).
    pub detail_seed: u64,
}

impl Draw {
    fn next(rng: &mut Rng, kinds: &[FaultKind], nodes: usize, timing: &Timing) -> Draw {
        Draw {
            gap_ms: rng.between(timing.gap_ms.0, timing.gap_ms.1),
            kind: kinds[rng.index(kinds.len())],
            random_node: rng.index(nodes),
            down_ms: rng.between(timing.down_ms.0, timing.down_ms.1),
            pause_ms: rng.between(timing.pause_ms.0, timing.pause_ms.1),
            partition_ms: rng.between(timing.partition_ms.0, timing.partition_ms.1),
            detail_seed: rng.next_u64(),
        }
    }
}

/// The damage a `storage` fault of `draw` makes.
pub fn storage_damage(draw: &Draw) -> crate::storage::Damage {
    let mut rng = Rng::new(draw.detail_seed);
    crate::storage::Damage::ALL[rng.index(crate::storage::Damage::ALL.len())]
}

/// The first `count` draws [`run`] makes for `seed` (what a run's seed
/// plans; how many of them a run gets to depends on its duration and on
/// the processes' timing).
pub fn plan(seed: u64, kinds: &[FaultKind], nodes: usize, timing: &Timing, count: usize) -> Vec<Draw> {
    let mut rng = Rng::new(seed ^ NEMESIS_SEED_MIX);
    (0..count).map(|_| Draw::next(&mut rng, kinds, nodes, timing)).collect()
}

/// Injects faults of `kinds` until `deadline` (or `stop`, or
/// [`INTERRUPTED`]); each fault is healed before the next one starts.
/// Partition kinds need `network`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cluster: &mut Cluster,
    mut network: Option<&mut Network>,
    kinds: &[FaultKind],
    seed: u64,
    timing: Timing,
    deadline: Instant,
    recorder: &Recorder,
    stop: &AtomicBool,
) -> Result<Vec<Fault>, RunError> {
    let mut rng = Rng::new(seed ^ NEMESIS_SEED_MIX);
    let mut faults = Vec::new();
    let stopping = || stop.load(Ordering::Relaxed) || INTERRUPTED.load(Ordering::Relaxed);
    if kinds.is_empty() {
        while Instant::now() < deadline && !stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(faults);
    }
    loop {
        // Every draw is made whatever the cluster looks like, so the seed
        // alone decides the kinds, the random nodes and the durations.
        let draw = Draw::next(&mut rng, kinds, cluster.len(), &timing);
        sleep_unless(draw.gap_ms, stop);
        if Instant::now() >= deadline || stopping() {
            return Ok(faults);
        }
        if let Some(network) = network.as_deref() {
            if !network.intact() {
                return Err(crate::RunError::Setup(
                    "the run's network (bridge or a namespace) vanished: aborting".into(),
                ));
            }
        }
        let Draw {
            kind,
            random_node,
            down_ms,
            pause_ms,
            partition_ms,
            ..
        } = draw;
        let mut partition_rng = Rng::new(draw.detail_seed);
        let leader = cluster.leader();
        let target = match kind {
            FaultKind::KillLeader | FaultKind::StopLeader | FaultKind::PartitionLeader | FaultKind::PartitionOneWay => {
                leader
            }
            _ => None,
        }
        .unwrap_or(random_node);
        let start_ns = recorder.now_ns();
        let id = |index: usize| index as u64 + 1;
        let mut fault = Fault {
            kind,
            nodes: vec![],
            sides: vec![],
            leader_before: leader.map(id),
            leader_after: None,
            start_ns,
            end_ns: start_ns,
            snapshots_installed: 0,
            links: vec![],
            proxy: None,
            admin: vec![],
            caught_up: None,
            storage: None,
        };
        match kind {
            FaultKind::KillAll => {
                for index in 0..cluster.len() {
                    if cluster.kill(index) {
                        fault.nodes.push(id(index));
                    }
                }
                sleep_unless(down_ms, stop);
                cluster.start_all()?;
            }
            FaultKind::KillLeader | FaultKind::KillNode => {
                if cluster.kill(target) {
                    fault.nodes.push(id(target));
                }
                let down_until = Instant::now() + Duration::from_millis(down_ms);
                if Some(target) == leader {
                    fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
                }
                sleep_unless(
                    down_until.saturating_duration_since(Instant::now()).as_millis() as u64,
                    stop,
                );
                cluster.start(target)?;
            }
            FaultKind::StopLeader | FaultKind::StopNode => {
                if cluster.pause(target, true) {
                    fault.nodes.push(id(target));
                }
                let pause_until = Instant::now() + Duration::from_millis(pause_ms);
                if Some(target) == leader {
                    fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
                }
                sleep_unless(
                    pause_until.saturating_duration_since(Instant::now()).as_millis() as u64,
                    stop,
                );
                cluster.pause(target, false);
            }
            FaultKind::SnapshotInstall => {
                // A follower: the node drawn, or the next one if it leads.
                let Some(leader) = leader else {
                    eprintln!("coraft-chaos: snapshot-install skipped: no leader found");
                    continue;
                };
                let follower = if random_node == leader {
                    (random_node + 1) % cluster.len()
                } else {
                    random_node
                };
                let taken = |cluster: &Cluster| -> Vec<Option<u64>> {
                    (0..cluster.len())
                        .map(|i| {
                            (i != follower)
                                .then(|| cluster.metric(i, "coraft_snapshots_taken_total"))
                                .flatten()
                        })
                        .collect()
                };
                let before = taken(cluster);
                if cluster.kill(follower) {
                    fault.nodes.push(id(follower));
                }
                // Down until every live node that answered before has taken
                // its snapshots (or the wait is over).
                let down_until = (Instant::now() + SNAPSHOT_DOWN_MAX).min(deadline);
                while Instant::now() < down_until && !stopping() {
                    let now = taken(cluster);
                    let behind = before.iter().zip(&now).any(|(b, n)| match (b, n) {
                        (Some(b), Some(n)) => *n < b + SNAPSHOTS_WHILE_DOWN,
                        (Some(_), None) => true,
                        _ => false,
                    });
                    if !behind {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                cluster.start(follower)?;
                // Its metrics start at 0 with the process.
                // Past the run's deadline it waits a little more, not the whole wait.
                let install_until = (Instant::now() + SNAPSHOT_INSTALL_WAIT).min(deadline + Duration::from_secs(3));
                while Instant::now() < install_until && !stopping() {
                    fault.snapshots_installed = cluster
                        .metric(follower, "coraft_snapshots_installed_total")
                        .unwrap_or(0);
                    if fault.snapshots_installed > 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            FaultKind::ProxyDelay | FaultKind::ProxyReorder | FaultKind::ProxyLossy => {
                let links = cluster
                    .links()
                    .ok_or_else(|| crate::RunError::Setup(format!("{} needs the nodes' links proxied", kind.name())))?;
                let until = Instant::now() + Duration::from_millis(partition_ms);
                let faults = match kind {
                    FaultKind::ProxyDelay => LinkFaults {
                        delay_ms: partition_rng.between(5, 60),
                        jitter_ms: partition_rng.between(20, 150),
                        ..LinkFaults::default()
                    },
                    FaultKind::ProxyReorder => LinkFaults {
                        jitter_ms: partition_rng.between(20, 100),
                        lifetime_ms: Some((200, 1_000)),
                        late_delivery: Some(partition_rng.between(100, 400)),
                        ..LinkFaults::default()
                    },
                    _ => LinkFaults {
                        lifetime_ms: Some((300, 1_200)),
                        stall_ms: partition_rng.between(100, 400),
                        ..LinkFaults::default()
                    },
                };
                let chosen: Vec<(usize, usize)> = links
                    .all()
                    .map(|(link, _)| link)
                    .filter(|&(from, to)| kind != FaultKind::ProxyLossy || from == target || to == target)
                    .collect();
                let before = links.counters();
                for &(from, to) in &chosen {
                    links.link(from, to).set_faults(faults);
                }
                fault.links = chosen.iter().map(|&(from, to)| [id(from), id(to)]).collect();
                fault.nodes = if kind == FaultKind::ProxyLossy {
                    vec![id(target)]
                } else {
                    (0..cluster.len()).map(id).collect()
                };
                if kind == FaultKind::ProxyLossy && Some(target) == leader {
                    fault.leader_after =
                        await_new_leader(cluster, leader, timing.new_leader_wait_ms.min(partition_ms)).map(id);
                }
                sleep_unless(until.saturating_duration_since(Instant::now()).as_millis() as u64, stop);
                links.heal();
                fault.proxy = Some(links.counters().since(&before));
            }
            FaultKind::Transfer => {
                let Some(from) = leader else {
                    eprintln!("coraft-chaos: transfer skipped: no leader found");
                    continue;
                };
                let to = if random_node == from {
                    (random_node + 1) % cluster.len()
                } else {
                    random_node
                };
                fault.nodes = vec![id(from), id(to)];
                let answer = admin_client(cluster, from).and_then(|mut client| {
                    client.transfer_leader(crate::workload::GROUP, coraft::raft::NodeId(id(to)))
                });
                fault.admin.push(match &answer {
                    Ok(()) => format!("transfer {} -> {}: started", id(from), id(to)),
                    Err(e) => format!("transfer {} -> {}: {e}", id(from), id(to)),
                });
                fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
            }
            FaultKind::Membership => {
                let node = random_node;
                fault.nodes = vec![id(node)];
                let change_until = Instant::now() + MEMBERSHIP_CHANGE_WAIT;
                let removed = change_membership(
                    cluster,
                    AdminRequest::Remove {
                        group: crate::workload::GROUP.0,
                        node: id(node),
                    },
                    id(node),
                    false,
                    change_until,
                    stop,
                );
                fault.admin.push(match &removed {
                    Ok(()) => format!("remove {}: done", id(node)),
                    Err(e) => format!("remove {}: {e}", id(node)),
                });
                if removed.is_ok() {
                    if leader == Some(node) {
                        fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
                    }
                    // Out a while; half the time killed and restarted while out.
                    let out_until = Instant::now() + Duration::from_millis(down_ms);
                    if pause_ms % 2 == 0 && cluster.kill(node) {
                        fault.admin.push(format!("killed {} while removed", id(node)));
                    }
                    sleep_unless(
                        out_until.saturating_duration_since(Instant::now()).as_millis() as u64,
                        stop,
                    );
                    cluster.start(node)?;
                }
                // Back in whatever the removal answered (an answer lost on
                // the way may hide a removal done), however long the run has
                // left: it must end with every node a voter.
                let add_until = Instant::now() + MEMBERSHIP_CHANGE_WAIT;
                let committed = leader_commit(cluster);
                let added = change_membership(
                    cluster,
                    AdminRequest::AddVoter {
                        group: crate::workload::GROUP.0,
                        member: MemberSpec {
                            node: id(node),
                            address: Some(cluster.raft_address(node).to_string()),
                        },
                    },
                    id(node),
                    true,
                    add_until,
                    &AtomicBool::new(false),
                );
                fault.admin.push(match &added {
                    Ok(()) => format!("add voter {}: done", id(node)),
                    Err(e) => format!("add voter {}: {e}", id(node)),
                });
                if removed.is_ok() {
                    fault.caught_up = Some(added.is_ok() && await_applied(cluster, node, committed, add_until));
                }
            }
            FaultKind::Storage => {
                let node = random_node;
                let damage = storage_damage(&draw);
                fault.nodes = vec![id(node)];
                cluster.kill(node);
                if Some(node) == leader {
                    fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
                }
                fault.storage = Some(storage_fault(cluster, node, damage, &mut fault.admin)?);
            }
            FaultKind::SlowLinks => {
                let network = network.as_deref_mut().ok_or_else(|| {
                    crate::RunError::Setup(format!("{} needs the nodes in network namespaces", kind.name()))
                })?;
                let until = Instant::now() + Duration::from_millis(partition_ms);
                network.slow_links(true)?;
                fault.nodes = (0..cluster.len()).map(id).collect();
                sleep_unless(until.saturating_duration_since(Instant::now()).as_millis() as u64, stop);
                network.slow_links(false)?;
            }
            FaultKind::PartitionHalves
            | FaultKind::PartitionLeader
            | FaultKind::PartitionBridge
            | FaultKind::PartitionRing
            | FaultKind::PartitionOneWay => {
                let network = network.as_deref_mut().ok_or_else(|| {
                    crate::RunError::Setup(format!("{} needs the nodes in network namespaces", kind.name()))
                })?;
                let sides = partition_sides(kind, cluster.len(), target, &mut partition_rng);
                let until = Instant::now() + Duration::from_millis(partition_ms);
                if kind == FaultKind::PartitionOneWay {
                    network.cut_one_way(sides[0][0], &sides[1])?;
                } else {
                    network.partition(&sides)?;
                }
                fault.sides = sides.iter().map(|s| s.iter().map(|&n| id(n)).collect()).collect();
                fault.nodes = (0..cluster.len())
                    .filter(|n| sides.iter().filter(|s| s.contains(n)).count() < sides.len())
                    .map(id)
                    .collect();
                if matches!(kind, FaultKind::PartitionLeader | FaultKind::PartitionOneWay) && leader.is_some() {
                    fault.leader_after = await_new_leader(cluster, leader, timing.new_leader_wait_ms).map(id);
                }
                sleep_unless(until.saturating_duration_since(Instant::now()).as_millis() as u64, stop);
                network.heal()?;
            }
        }
        fault.end_ns = recorder.now_ns();
        eprintln!(
            "coraft-chaos: {}{} nodes {:?} sides {:?} (leader before {:?}, after {:?}) {:.1}s-{:.1}s",
            kind.name(),
            if kind == FaultKind::SnapshotInstall {
                format!(" ({} snapshots installed)", fault.snapshots_installed)
            } else if let Some(proxy) = &fault.proxy {
                format!(" ({proxy:?})")
            } else if let Some(storage) = &fault.storage {
                format!(
                    " ({}: {}{}{})",
                    storage.damaged.as_ref().map_or("no damage made", |d| d.damage.name()),
                    if storage.refused { "refused" } else { "started" },
                    storage.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
                    if storage.back { "; back" } else { "; NOT BACK" }
                )
            } else if !fault.admin.is_empty() {
                format!(
                    " ({}{})",
                    fault.admin.join("; "),
                    match fault.caught_up {
                        Some(true) => ", caught up",
                        Some(false) => ", NOT caught up",
                        None => "",
                    }
                )
            } else {
                String::new()
            },
            fault.nodes,
            fault.sides,
            fault.leader_before,
            fault.leader_after,
            fault.start_ns as f64 / 1e9,
            fault.end_ns as f64 / 1e9
        );
        faults.push(fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_expand_groups_drop_duplicates_and_name_a_bad_word() {
        assert_eq!(
            FaultKind::parse_list("stop,kill-all,stop-node").unwrap(),
            vec![FaultKind::StopLeader, FaultKind::StopNode, FaultKind::KillAll]
        );
        assert_eq!(FaultKind::parse_list("none").unwrap(), vec![]);
        assert_eq!(
            FaultKind::parse_list("kill,stop,partition,slow-links,snapshot-install,proxy,transfer,membership,storage")
                .unwrap(),
            FaultKind::ALL.to_vec()
        );
        let error = FaultKind::parse_list("kill,partitions").unwrap_err();
        assert!(error.contains("`partitions`"), "{error}");
    }

    #[test]
    fn partition_sides_are_a_minority_and_a_majority_an_isolated_leader_or_a_bridge() {
        let mut rng = Rng::new(3);
        for nodes in [3, 5] {
            let halves = partition_sides(FaultKind::PartitionHalves, nodes, 0, &mut rng);
            assert_eq!(
                halves.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![nodes / 2, nodes - nodes / 2]
            );
            let isolated = partition_sides(FaultKind::PartitionLeader, nodes, 1, &mut rng);
            assert_eq!(isolated[0], vec![1]);
            assert!(!isolated[1].contains(&1) && isolated[1].len() == nodes - 1);
            let bridge = partition_sides(FaultKind::PartitionBridge, nodes, 0, &mut rng);
            let shared: Vec<&usize> = bridge[0].iter().filter(|n| bridge[1].contains(n)).collect();
            assert_eq!(shared.len(), 1, "{bridge:?}");
            assert_eq!(bridge[0].len() + bridge[1].len(), nodes + 1);
            // The ring: every node talks to exactly two others on five
            // nodes (so each sees a majority of its own), to one or two on
            // the line that three nodes make.
            let ring = partition_sides(FaultKind::PartitionRing, nodes, 0, &mut rng);
            for node in 0..nodes {
                let mut peers: Vec<usize> = ring
                    .iter()
                    .filter(|side| side.contains(&node))
                    .flatten()
                    .copied()
                    .filter(|&n| n != node)
                    .collect();
                peers.sort();
                peers.dedup();
                if nodes == 5 {
                    assert_eq!(peers.len(), 2, "{ring:?}");
                } else {
                    assert!((1..=2).contains(&peers.len()), "{ring:?}");
                }
            }
            if nodes == 5 {
                // No two nodes see the same majority.
                let mut majorities: Vec<Vec<usize>> = (0..nodes)
                    .map(|node| {
                        let mut seen: Vec<usize> =
                            ring.iter().filter(|s| s.contains(&node)).flatten().copied().collect();
                        seen.sort();
                        seen.dedup();
                        seen
                    })
                    .collect();
                majorities.sort();
                majorities.dedup();
                assert_eq!(majorities.len(), nodes, "{ring:?}");
            }
        }
    }

    /// The seed of the partition run in `tests/run.rs` (CI): its first
    /// four faults are the leader isolated, a bridge, random halves and a
    /// ring, all within its 15 s (gaps and durations sum to under 12 s).
    #[test]
    fn the_ci_partition_seed_plans_every_partition_shape_early() {
        let kinds = FaultKind::parse_list("partition").unwrap();
        let draws = plan(2539, &kinds, 3, &Timing::default(), 4);
        assert_eq!(
            draws.iter().map(|d| d.kind).collect::<Vec<_>>(),
            vec![
                FaultKind::PartitionLeader,
                FaultKind::PartitionBridge,
                FaultKind::PartitionHalves,
                FaultKind::PartitionRing
            ]
        );
        assert!(draws.iter().map(|d| d.gap_ms + d.partition_ms).sum::<u64>() < 12_000);
    }
}
