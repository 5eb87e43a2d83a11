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
//! Partitions need the nodes in network namespaces ([`Network`]); the
//! clients still reach every node, so an isolated leader keeps getting
//! requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::Cluster;
use crate::netns::Network;
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
    pub const ALL: [FaultKind; 12] = [
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
    ];

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
        }
    }

    /// Parses a comma-separated list of kinds; `kill` means every kill
    /// kind, `stop` every stop kind, `partition` every partition kind,
    /// `none` no fault.
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
                "none" => vec![],
                _ => match FaultKind::ALL.iter().find(|k| k.name() == word) {
                    Some(&kind) => vec![kind],
                    None => {
                        return Err(format!(
                            "unknown fault `{word}`: expected kill, stop, partition, none, or one of {}",
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
    let mut rng = Rng::new(seed ^ 0x004E_454D_4553_4953);
    let mut faults = Vec::new();
    let stopping = || stop.load(Ordering::Relaxed) || INTERRUPTED.load(Ordering::Relaxed);
    if kinds.is_empty() {
        while Instant::now() < deadline && !stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(faults);
    }
    loop {
        sleep_unless(rng.between(timing.gap_ms.0, timing.gap_ms.1), stop);
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
        // Every draw is made whatever the cluster looks like, so the seed
        // alone decides the kinds, the random nodes and the durations.
        let kind = kinds[rng.index(kinds.len())];
        let random_node = rng.index(cluster.len());
        let down_ms = rng.between(timing.down_ms.0, timing.down_ms.1);
        let pause_ms = rng.between(timing.pause_ms.0, timing.pause_ms.1);
        let partition_ms = rng.between(timing.partition_ms.0, timing.partition_ms.1);
        let mut partition_rng = Rng::new(rng.next_u64());
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
            FaultKind::parse_list("kill,stop,partition,slow-links,snapshot-install").unwrap(),
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
}
