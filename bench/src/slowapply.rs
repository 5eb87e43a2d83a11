//! `coraft-bench slowapply`: does a slow state machine on one group stall
//! the other groups of its shard?
//!
//! An embedded 3-node cluster (one unbound shard per node, real TCP, real
//! WALs in a temp dir) hosts `--groups` groups. Group 1 gets `--slow-writers`
//! closed-loop writers and a state machine that sleeps `--apply-sleep-ms`
//! in every `on_apply` batch; every other group gets `--writers` closed-loop
//! writers and a state machine that does not sleep. Three runs, each on a
//! fresh cluster: `baseline` (group 1 does not sleep), `on-shard` (it
//! sleeps on the shard's loop, as every state machine did before the apply
//! lane) and `lane` (it sleeps on its own apply thread: `OffShard`).
//! Reported per run: the other groups' write latency (p50, p99, max) and
//! writes/s, group 1's writes/s, and the interval between the node-level
//! beats the shards send their peers (p99, max over the three nodes: one
//! tick, 10 ms, when the loop is on time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use coraft::api::{Command, OffShard, StateMachine};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, PeerSpec, SnapshotPolicy, StateMachineFactory};
use hdrhistogram::Histogram;

const CLUSTER_ID: u64 = 0x510A;
/// The largest `--groups`.
const GROUPS_MAX: u64 = 64;
/// The largest `--writers` and `--slow-writers`.
const WRITERS_MAX: usize = 64;
/// The largest `--apply-sleep-ms`.
const APPLY_SLEEP_MS_MAX: u64 = 1000;
/// Bytes of each write's payload.
const PAYLOAD_BYTES: usize = 64;

/// `coraft-bench slowapply`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct SlowApplyArgs {
    /// Groups on the shard, 2 to 64; group 1 is the slow one.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = groups)]
    pub groups: u64,
    /// Milliseconds group 1's state machine sleeps in each apply batch.
    #[arg(long, default_value_t = 2, value_name = "MS", value_parser = apply_sleep_ms)]
    pub apply_sleep_ms: u64,
    /// Closed-loop writers on each other group, 1 to 64.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = writers)]
    pub writers: usize,
    /// Closed-loop writers on group 1, 1 to 64.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = writers)]
    pub slow_writers: usize,
    /// Seconds each run measures (after a one-second warmup).
    #[arg(long, default_value_t = 5, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub duration: u64,
    /// Which runs, in order: baseline, on-shard, lane.
    #[arg(long, value_delimiter = ',', default_value = "baseline,on-shard,lane", value_name = "RUNS", value_parser = mode)]
    pub runs: Vec<Mode>,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn mode(raw: &str) -> Result<Mode, String> {
    [Mode::Baseline, Mode::OnShard, Mode::Lane]
        .into_iter()
        .find(|m| m.name() == raw)
        .ok_or_else(|| format!("expected baseline, on-shard or lane, not {raw:?}"))
}

fn groups(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if (2..=GROUPS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of groups from 2 to {GROUPS_MAX} (GROUPS_MAX)"
        )),
    }
}

fn writers(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=WRITERS_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of writers from 1 to {WRITERS_MAX} (WRITERS_MAX)"
        )),
    }
}

fn apply_sleep_ms(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if n <= APPLY_SLEEP_MS_MAX => Ok(n),
        _ => Err(format!(
            "expected milliseconds from 0 to {APPLY_SLEEP_MS_MAX} (APPLY_SLEEP_MS_MAX)"
        )),
    }
}

/// Counts the commands it applied, sleeping `sleep` per batch.
struct Sleeper {
    applied: u64,
    sleep: Duration,
}

impl StateMachine for Sleeper {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        commands
            .map(|_| {
                self.applied += 1;
                self.applied.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }
}

/// Where group 1's state machine sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It does not.
    Baseline,
    /// On the shard's loop.
    OnShard,
    /// On its own apply thread (`OffShard`).
    Lane,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::OnShard => "on-shard",
            Mode::Lane => "lane",
        }
    }
}

/// What one run measured.
struct Outcome {
    mode: Mode,
    /// The other groups' writes.
    latency_us: Histogram<u64>,
    writes: u64,
    slow_writes: u64,
    errors: u64,
    beat_interval_us: Histogram<u64>,
    seconds: f64,
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

pub fn run(args: SlowApplyArgs) -> Result<()> {
    let mut outcomes = Vec::new();
    for &mode in &args.runs {
        let root = tempfile::tempdir()?;
        outcomes.push(run_once(&args, mode, root.path())?);
    }
    report(&args, &outcomes);
    Ok(())
}

fn run_once(args: &SlowApplyArgs, mode: Mode, root: &std::path::Path) -> Result<Outcome> {
    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3)?;
    let peers: Vec<PeerSpec> = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: vec![addresses[n]],
        })
        .collect();
    let sleep = Duration::from_millis(args.apply_sleep_ms);
    let factory: StateMachineFactory = Arc::new(move |group| {
        let slow = group == GroupId(1) && mode != Mode::Baseline;
        let sleeper = Sleeper {
            applied: 0,
            sleep: if slow { sleep } else { Duration::ZERO },
        };
        if slow && mode == Mode::Lane {
            Box::new(OffShard::new(sleeper))
        } else {
            Box::new(sleeper)
        }
    });
    let groups: Vec<GroupId> = (1..=args.groups).map(GroupId).collect();
    let mut nodes = Vec::new();
    for peer in &peers {
        let snapshot = SnapshotPolicy {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval: Duration::ZERO,
            ..SnapshotPolicy::default()
        };
        let mut options = crate::install::embedded_node_options(
            CLUSTER_ID,
            peer.id,
            peers.clone(),
            root.join(format!("node-{}", peer.id)),
            groups.clone(),
            snapshot,
        );
        // Every group keeps heartbeating: the beats are what is measured.
        options.quiesce_idle_groups = false;
        nodes.push(Node::start(options, factory.clone()).map_err(|e| anyhow!("starting node {}: {e}", peer.id))?);
    }
    let result = measure(args, mode, &nodes, &groups);
    for node in nodes {
        node.shutdown();
    }
    result
}

/// The node leading `group`, waiting up to 30 s for one.
fn leader(nodes: &[Node], group: GroupId) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (index, node) in nodes.iter().enumerate() {
            if block(node.group(group).status()).is_ok_and(|s| s.role == Role::Leader) {
                return Ok(index);
            }
        }
        ensure!(Instant::now() < deadline, "group {group} elected no leader within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn measure(args: &SlowApplyArgs, mode: Mode, nodes: &[Node], groups: &[GroupId]) -> Result<Outcome> {
    let mut leaders = Vec::new();
    for &group in groups {
        leaders.push(leader(nodes, group)?);
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let (before, after, seconds) = std::thread::scope(|scope| {
        for (&group, &leader) in groups.iter().zip(&leaders) {
            let slow = group == GroupId(1);
            let writers = if slow { args.slow_writers } else { args.writers };
            for _ in 0..writers {
                let handle = nodes[leader].group(group);
                let (measuring, stop, latency, counts) = (&measuring, &stop, &latency, &counts);
                scope.spawn(move || {
                    let payload = vec![0x5A; PAYLOAD_BYTES];
                    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                    let (mut writes, mut errors) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let outcome = block(handle.apply(payload.clone()));
                        if !measuring.load(Ordering::Relaxed) {
                            continue;
                        }
                        match outcome {
                            Ok(_) => {
                                writes += 1;
                                if !slow {
                                    let _ = local.record((started.elapsed().as_micros() as u64).max(1));
                                }
                            }
                            Err(error) => {
                                if errors == 0 {
                                    eprintln!("slowapply: a write to group {group} failed: {error}");
                                }
                                errors += 1
                            }
                        }
                    }
                    let mut counts = counts.lock().expect("no writer panics holding it");
                    if slow {
                        counts.1 += writes;
                    } else {
                        counts.0 += writes;
                    }
                    counts.2 += errors;
                    let _ = latency.lock().expect("no writer panics holding it").add(&local);
                });
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let before = beats(nodes);
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(args.duration));
        measuring.store(false, Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        let after = beats(nodes);
        stop.store(true, Ordering::Relaxed);
        (before, after, seconds)
    });
    let mut beat_interval_us = after?;
    beat_interval_us
        .subtract(&before?)
        .map_err(|e| anyhow!("the beat intervals: {e:?}"))?;
    let (writes, slow_writes, errors) = *counts.lock().expect("writers are done");
    let latency_us = latency.lock().expect("writers are done").clone();
    Ok(Outcome {
        mode,
        latency_us,
        writes,
        slow_writes,
        errors,
        beat_interval_us,
        seconds,
    })
}

/// The beat intervals of every node's shards so far, merged.
fn beats(nodes: &[Node]) -> Result<Histogram<u64>> {
    let mut merged = Histogram::<u64>::new_with_bounds(1, coraft::runtime::LATENCY_MAX_US, 3)?;
    for node in nodes {
        for shard in node.metrics() {
            merged.add(&shard.beat_interval_us)?;
        }
    }
    Ok(merged)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report(args: &SlowApplyArgs, outcomes: &[Outcome]) {
    if args.json {
        let runs: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "mode": o.mode.name(),
                    "other_groups_writes_per_s": o.writes as f64 / o.seconds,
                    "other_groups_p50_ms": ms(o.latency_us.value_at_quantile(0.5)),
                    "other_groups_p99_ms": ms(o.latency_us.value_at_quantile(0.99)),
                    "other_groups_max_ms": ms(o.latency_us.max()),
                    "slow_group_writes_per_s": o.slow_writes as f64 / o.seconds,
                    "beat_interval_p99_ms": ms(o.beat_interval_us.value_at_quantile(0.99)),
                    "beat_interval_max_ms": ms(o.beat_interval_us.max()),
                    "errors": o.errors,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "groups": args.groups,
                "apply_sleep_ms": args.apply_sleep_ms,
                "writers": args.writers,
                "slow_writers": args.slow_writers,
                "duration_s": args.duration,
                "runs": runs,
            })
        );
        return;
    }
    println!(
        "slowapply: {} groups on one shard, group 1 sleeps {} ms per apply batch ({} writers), \
         {} writers on each other group, {} s per run",
        args.groups, args.apply_sleep_ms, args.slow_writers, args.writers, args.duration
    );
    println!(
        "{:<9} {:>12} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10} {:>7}",
        "run", "others w/s", "p50 ms", "p99 ms", "max ms", "group1 w/s", "beat p99", "beat max", "errors"
    );
    for o in outcomes {
        println!(
            "{:<9} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>12.0} {:>10.2} {:>10.2} {:>7}",
            o.mode.name(),
            o.writes as f64 / o.seconds,
            ms(o.latency_us.value_at_quantile(0.5)),
            ms(o.latency_us.value_at_quantile(0.99)),
            ms(o.latency_us.max()),
            o.slow_writes as f64 / o.seconds,
            ms(o.beat_interval_us.value_at_quantile(0.99)),
            ms(o.beat_interval_us.max()),
            o.errors
        );
    }
}
