//! `coraft-bench longrun --processes`: the long run against three
//! `coraft-node` processes this harness starts and stops
//! ([`crate::shape::Processes`]), each with the snapshot policy of the
//! command line in its config. The writers are the cluster benchmark's
//! closed-loop drivers ([`crate::workload`]) on the client protocol, one
//! connection per node, following leader changes; each window samples every node process's resident
//! memory (`/proc/PID/status`), its data dir and, over the admin protocol,
//! the index of its groups' newest snapshots.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use coraft::admin::AdminClient;
use coraft::raft::{GroupId, NodeId};
use coraft_tuning::{NodeConfig, PlacementPolicy, SnapshotSettings};

use crate::longrun::{new_histogram, rss_bytes, LongrunArgs, NodeFigures, Report, WindowTotals, CLUSTER_ID, NODES};
use crate::shape::{Processes, ProcessesSpec};
use crate::workload::{Mix, ReadPath, StateMachineKind, Totals, Workload};

/// How long one admin call to a node may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every node's config but its identity and addresses (which
/// [`Processes::start`] fills in).
fn base_config(args: &LongrunArgs) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.shards.count = 1;
    config.shards.placement = PlacementPolicy::Unbound;
    config.shards.spin_before_park_us = 0;
    config.wal.segment_bytes = args.wal_segment_bytes;
    config.wal.zero_ahead_bytes = coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT.min(args.wal_segment_bytes);
    // As the embedded long run: a loaded machine must not see elections.
    config.raft.election_timeout_ticks = 30;
    config.raft.heartbeat_interval_ticks = 3;
    config.snapshot = if args.no_snapshots {
        SnapshotSettings {
            after_entries: 0,
            after_log_bytes: 0,
            shard_after_log_bytes: 0,
            interval_ms: 0,
            log_tail_entries: args.log_tail_entries,
            ..SnapshotSettings::default()
        }
    } else {
        SnapshotSettings {
            after_entries: args.snapshot_after_entries,
            after_log_bytes: args.snapshot_after_log_bytes,
            shard_after_log_bytes: args.snapshot_shard_after_log_bytes,
            interval_ms: args.snapshot_interval_ms,
            log_tail_entries: args.log_tail_entries,
            ..SnapshotSettings::default()
        }
    };
    config
}

/// Starts the processes, runs the load and the sampling, stops them.
pub fn measure(args: &LongrunArgs, root: &Path) -> Result<Report> {
    let binary = crate::shape::node_binary(args.node_binary.as_deref())?;
    let base = base_config(args);
    let spec = ProcessesSpec {
        binary: &binary,
        base: Some(&base),
        cluster_id: CLUSTER_ID,
        nodes: NODES,
        shards: 1,
        groups: args.groups,
        state_machine: StateMachineKind::Counter,
        read_mode: ReadPath::ReadIndex,
        spin_before_park_us: None,
        shard_cores: None,
        wal_zero_ahead_bytes: base.wal.zero_ahead_bytes,
        wal_dsync_small_flush_bytes: base.wal.dsync_small_flush_bytes,
        wal_segment_bytes: base.wal.segment_bytes,
    };
    let mut processes = Processes::start(&spec, root)?;
    let outcome = drive(args, root, &mut processes);
    // A node that died mid-run explains the writers' errors.
    match (outcome, processes.check_running()) {
        (Err(error), Err(exited)) => Err(error.context(format!("{exited:#}"))),
        (outcome, _) => outcome,
    }
}

fn drive(args: &LongrunArgs, root: &Path, processes: &mut Processes) -> Result<Report> {
    let groups: Vec<GroupId> = (1..=args.groups).map(GroupId).collect();
    let cluster = processes.discover(CLUSTER_ID, &groups)?;
    let node_ids: Vec<NodeId> = (1..=NODES as u64).map(NodeId).collect();
    let mut admins = Vec::new();
    for &address in &processes.addresses {
        admins.push(
            AdminClient::connect(address, CLUSTER_ID, ADMIN_TIMEOUT).with_context(|| format!("admin {address}"))?,
        );
    }
    let pids: Vec<u32> = processes.processes.iter().map(|p| p.child.id()).collect();

    // Clients round-robin over the groups, planned on their group's leader.
    let mut by_leader: BTreeMap<(NodeId, usize), Vec<(u64, GroupId)>> = BTreeMap::new();
    for client in 0..args.clients {
        let group = groups[client % groups.len()];
        by_leader
            .entry((cluster.leaders[&group], 0))
            .or_default()
            .push((client as u64 + 1, group));
    }
    let mix = Mix {
        workload: Workload::Write,
        read_ratio: 0.0,
        state_machine: StateMachineKind::Counter,
        keys: 1,
        payload: args.payload,
    };
    let totals = Arc::new(Totals {
        window_latency_us: Some(Mutex::new(new_histogram())),
        ..Totals::default()
    });
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.warmup + args.duration);
    // One driver per node, linked: a writer whose group's leader moves is
    // handed to the new leader's driver.
    let mut drivers = Vec::new();
    for driver in crate::workload::plan_drivers(
        CLUSTER_ID,
        &cluster.addresses,
        by_leader,
        1,
        ReadPath::ReadIndex.consistency(),
    )? {
        let (mix, totals) = (mix.clone(), totals.clone());
        drivers.push(std::thread::spawn(move || {
            crate::workload::run_driver(driver, mix, started, stop_at, totals)
        }));
    }

    // `--transfer-leaders-at`: every group's leadership to the next node.
    let transfer = args.transfer_leaders_at.map(|at_s| {
        let (addresses, groups) = (processes.addresses.clone(), groups.clone());
        std::thread::spawn(move || {
            std::thread::sleep((started + Duration::from_secs(at_s)).saturating_duration_since(Instant::now()));
            crate::workload::transfer_leaders(&addresses, CLUSTER_ID, &groups, started)
        })
    });

    let take_window = || {
        let window = totals.window_latency_us.as_ref().expect("set above");
        let mut histogram = window.lock().unwrap_or_else(|p| p.into_inner());
        let taken = histogram.clone();
        histogram.reset();
        WindowTotals {
            latency_us: taken,
            writes: totals.completed.load(Ordering::Relaxed),
            errors: totals.errors.load(Ordering::Relaxed),
            failures: failures(&totals),
        }
    };
    let mut probe_nodes = || -> Result<NodeFigures> {
        let mut rss_per_node = Vec::new();
        for (&pid, &id) in pids.iter().zip(&node_ids) {
            rss_per_node.push(rss_bytes(Some(pid)).with_context(|| format!("node {id}"))?);
        }
        let mut snapshot_index_min = u64::MAX;
        for admin in &mut admins {
            for chunk in groups.chunks(coraft::admin::ADMIN_STATUS_GROUPS_MAX) {
                let node = admin.node();
                let report = admin.status(chunk).with_context(|| format!("status of node {node}"))?;
                for group in report.groups {
                    snapshot_index_min = snapshot_index_min.min(group.snapshot_index);
                }
            }
        }
        Ok(NodeFigures {
            rss_bytes: rss_per_node.iter().sum(),
            rss_bytes_per_node: rss_per_node,
            snapshots_taken: None,
            first_index_min: None,
            snapshot_index_min,
            leaders: None,
        })
    };
    let (samples, failure) =
        crate::longrun::sample_windows(args, root, &node_ids, started, None, &take_window, &mut probe_nodes);
    drop(admins);
    if let Some(failure) = failure {
        // The drivers end at `stop_at`, or sooner once the nodes are gone.
        return Err(failure);
    }
    for driver in drivers {
        driver
            .join()
            .map_err(|_| anyhow!("a writer thread panicked"))?
            .context("a writer")?;
    }
    let leader_change = crate::workload::join_leader_transfer(transfer, totals.not_leader.load(Ordering::Relaxed))?;
    let mut report = crate::longrun::report(
        args,
        root,
        "processes",
        samples,
        totals.completed.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed),
        failures(&totals),
    );
    report.leader_change = leader_change;
    Ok(report)
}

/// The writers' failures by kind as the client protocol's drivers count
/// them: `NotLeader` answers (followed, not errors) and the rest.
fn failures(totals: &Totals) -> BTreeMap<String, u64> {
    [
        ("not_leader", totals.not_leader.load(Ordering::Relaxed)),
        ("failed", totals.errors.load(Ordering::Relaxed)),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(kind, n)| (kind.to_string(), n))
    .collect()
}
