//! The benchmark's clients follow a leader change (`bench/src/workload.rs`,
//! issue 17): three real nodes over loopback TCP, 64 closed-loop clients on
//! four groups, and mid-run every group's leadership is transferred to
//! another node. The clients' writes go on at the new leaders, and the
//! `NotLeader` answers they meet are a few per client, not a stream.

#[allow(dead_code)]
#[path = "../src/workload.rs"]
mod workload;

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::raft::{GroupId, NodeId};
use coraft_net::schema::ReadConsistency;

use common::{Cluster, CLUSTER_ID, LEADER_WAIT};
use workload::{plan_drivers, Mix, StateMachineKind, Totals, Workload};

const GROUPS: u64 = 4;
const CLIENTS: u64 = 64;
/// `NotLeader` answers allowed per client over the run: one to learn of
/// the transfer, a few more while the new leader's term settles (backoff
/// from 10 ms doubling to 500 ms), and slack for an election the
/// machine's load may cause. Without following, a client meets one per
/// round trip for the rest of the run: thousands.
const NOT_LEADER_PER_CLIENT_MAX: u64 = 16;
/// Writes that must complete after the transfer, per group (each group has
/// 16 clients).
const WRITES_AFTER_PER_GROUP_MIN: u64 = 64;

/// Waits until `done` holds, polling, at most `limit`; panics naming `what`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn clients_follow_a_leader_transfer_with_a_few_not_leader_answers_each() {
    let groups: Vec<GroupId> = (1..=GROUPS).map(GroupId).collect();
    let cluster = Cluster::start(&groups);
    let leaders: BTreeMap<GroupId, NodeId> = groups.iter().map(|&g| (g, cluster.leader(g))).collect();
    let mut planned: BTreeMap<(NodeId, usize), Vec<(u64, GroupId)>> = BTreeMap::new();
    for client in 1..=CLIENTS {
        let group = groups[(client % GROUPS) as usize];
        planned.entry((leaders[&group], 0)).or_default().push((client, group));
    }
    let addresses: BTreeMap<NodeId, Vec<std::net::SocketAddr>> =
        cluster.addresses.iter().map(|(&n, &a)| (n, vec![a])).collect();
    let drivers = plan_drivers(CLUSTER_ID, &addresses, planned, 1, ReadConsistency::Linearizable).unwrap();
    // Every node has a driver, clients or not, to take clients over.
    assert_eq!(drivers.len(), 3);
    let mix = Mix {
        workload: Workload::Write,
        read_ratio: 0.0,
        state_machine: StateMachineKind::Counter,
        keys: 1,
        payload: 16,
    };
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    // Long enough for the transfer and the writes after it on a loaded
    // machine; the drivers run to the end whatever happens.
    let stop_at = started + Duration::from_secs(30);
    let handles: Vec<_> = drivers
        .into_iter()
        .map(|driver| {
            let (mix, totals) = (mix.clone(), totals.clone());
            std::thread::spawn(move || workload::run_driver(driver, mix, started, stop_at, totals))
        })
        .collect();
    wait_for("writes before the transfer", Duration::from_secs(15), || {
        totals.completed.load(Ordering::Relaxed) >= 200
    });

    // Every group's leadership to the next node.
    let mut moved_to = BTreeMap::new();
    for &group in &groups {
        let from = leaders[&group];
        let to = NodeId(from.0 % 3 + 1);
        let leader = cluster.nodes.iter().find(|n| n.id() == from).unwrap();
        futures_lite::future::block_on(leader.group(group).transfer_leader(to))
            .unwrap_or_else(|error| panic!("transferring group {group} from node {from} to {to}: {error}"));
        moved_to.insert(group, to);
    }
    for (&group, &to) in &moved_to {
        wait_for(&format!("node {to} leads group {group}"), LEADER_WAIT, || {
            cluster.status(to, group).role == coraft::raft::Role::Leader
        });
    }
    let changed_at = Instant::now();
    assert!(
        changed_at + Duration::from_secs(10) < stop_at,
        "the transfer took most of the run"
    );
    let commit_at_change: BTreeMap<GroupId, u64> = moved_to
        .iter()
        .map(|(&g, &to)| (g, cluster.status(to, g).commit_index.0))
        .collect();
    let completed_at_change = totals.completed.load(Ordering::Relaxed);

    let mut failures = Vec::new();
    for handle in handles {
        if let Err(error) = handle.join().expect("a driver thread panicked") {
            failures.push(format!("{error:#}"));
        }
    }
    assert!(failures.is_empty(), "drivers failed: {failures:?}");
    let not_leader = totals.not_leader.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let completed_after = totals.completed.load(Ordering::Relaxed) - completed_at_change;
    eprintln!(
        "NotLeader answers {not_leader}, errors {errors}, writes after the change {completed_after} \
         (before it {completed_at_change})"
    );
    assert!(
        not_leader <= NOT_LEADER_PER_CLIENT_MAX * CLIENTS,
        "{not_leader} NotLeader answers for {CLIENTS} clients (at most {} allowed)",
        NOT_LEADER_PER_CLIENT_MAX * CLIENTS
    );
    assert!(not_leader >= 1, "the transfer was never noticed: did leadership move?");
    // Writes went on in every group after the change, under the new leader.
    for (&group, &to) in &moved_to {
        let status = cluster.status(to, group);
        let grown = status.commit_index.0 - commit_at_change[&group];
        assert!(
            grown >= WRITES_AFTER_PER_GROUP_MIN,
            "group {group}: {grown} entries committed after leadership moved to node {to} \
             (at least {WRITES_AFTER_PER_GROUP_MIN} expected); NotLeader {not_leader}, errors {errors}"
        );
    }
    assert!(
        completed_after >= WRITES_AFTER_PER_GROUP_MIN * GROUPS,
        "{completed_after} writes answered after the change"
    );
    // A leader change loses no write: a request refused with NotLeader is
    // sent again, not counted as failed (Timeouts of a loaded machine aside).
    assert!(errors <= CLIENTS, "{errors} failed requests");
}
