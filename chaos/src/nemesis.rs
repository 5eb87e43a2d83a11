//! The nemesis: faults injected into the cluster's processes on a seeded
//! schedule, each recorded on the history's clock.
//!
//! * `kill-leader`, `kill-node`: SIGKILL one node (the one whose metrics say
//!   it leads, or a random one), keep it down a while, restart it from its WAL.
//! * `kill-all`: SIGKILL every node at once, then restart them all.
//! * `stop-leader`, `stop-node`: SIGSTOP one node for longer than the
//!   election timeout (and the lease), then SIGCONT: a paused leader wakes
//!   up believing it still leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::Cluster;
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
}

impl FaultKind {
    /// Every kind, in the order `--nemesis` lists them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::KillAll,
        FaultKind::StopLeader,
        FaultKind::StopNode,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillNode => "kill-node",
            FaultKind::KillAll => "kill-all",
            FaultKind::StopLeader => "stop-leader",
            FaultKind::StopNode => "stop-node",
        }
    }

    /// Parses a comma-separated list of kinds; `kill` means every kill
    /// kind, `stop` every stop kind, `none` no fault.
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let more: Vec<FaultKind> = match word {
                "kill" => vec![FaultKind::KillLeader, FaultKind::KillNode, FaultKind::KillAll],
                "stop" => vec![FaultKind::StopLeader, FaultKind::StopNode],
                "none" => vec![],
                _ => match FaultKind::ALL.iter().find(|k| k.name() == word) {
                    Some(&kind) => vec![kind],
                    None => {
                        return Err(format!(
                            "unknown fault `{word}`: expected kill, stop, none, or one of {}",
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
    /// The nodes it hit (1-based ids).
    pub nodes: Vec<u64>,
    /// The leader before it (1-based id), if one was found.
    pub leader_before: Option<u64>,
    /// For a fault that took the leader down: the leader the others elected
    /// while it was down, if one was seen.
    pub leader_after: Option<u64>,
    /// When it started, ns since the run started.
    pub start_ns: u64,
    /// When it was healed (the node restarted or resumed).
    pub end_ns: u64,
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
    /// How long to look for a new leader after taking the old one down.
    pub new_leader_wait_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            gap_ms: (1_000, 3_000),
            down_ms: (300, 2_000),
            pause_ms: (500, 2_500),
            new_leader_wait_ms: 5_000,
        }
    }
}

/// Sleeps `ms`, waking early if `stop` is set.
fn sleep_unless(ms: u64, stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !stop.load(Ordering::Relaxed) {
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

/// Injects faults of `kinds` until `deadline` (or `stop`), then heals
/// nothing itself: each fault is healed before the next one starts.
pub fn run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    seed: u64,
    timing: Timing,
    deadline: Instant,
    recorder: &Recorder,
    stop: &AtomicBool,
) -> Result<Vec<Fault>, RunError> {
    let mut rng = Rng::new(seed ^ 0x004E_454D_4553_4953);
    let mut faults = Vec::new();
    if kinds.is_empty() {
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(faults);
    }
    loop {
        sleep_unless(rng.between(timing.gap_ms.0, timing.gap_ms.1), stop);
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            return Ok(faults);
        }
        // Every draw is made whatever the cluster looks like, so the seed
        // alone decides the kinds, the random nodes and the durations.
        let kind = kinds[rng.index(kinds.len())];
        let random_node = rng.index(cluster.len());
        let down_ms = rng.between(timing.down_ms.0, timing.down_ms.1);
        let pause_ms = rng.between(timing.pause_ms.0, timing.pause_ms.1);
        let leader = cluster.leader();
        let target = match kind {
            FaultKind::KillLeader | FaultKind::StopLeader => leader,
            _ => None,
        }
        .unwrap_or(random_node);
        let start_ns = recorder.now_ns();
        let id = |index: usize| index as u64 + 1;
        let mut fault = Fault {
            kind,
            nodes: vec![],
            leader_before: leader.map(id),
            leader_after: None,
            start_ns,
            end_ns: start_ns,
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
        }
        fault.end_ns = recorder.now_ns();
        eprintln!(
            "coraft-chaos: {} nodes {:?} (leader before {:?}, after {:?}) {:.1}s-{:.1}s",
            kind.name(),
            fault.nodes,
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
        assert_eq!(FaultKind::parse_list("kill,stop").unwrap(), FaultKind::ALL.to_vec());
        let error = FaultKind::parse_list("kill,partition").unwrap_err();
        assert!(error.contains("`partition`"), "{error}");
    }
}
