//! A short chaos run as an ordinary test: three real `coraft-node`
//! processes hosting the KV store, five clients, a nemesis that kills and
//! pauses nodes (the leader among them); the history must check
//! linearizable (and the lists free of anomalies), the faults must really
//! have happened, and the same history with one read made stale, or one
//! acknowledged append dropped from a list read, must be rejected.

use std::process::Command;
use std::time::Duration;

use coraft_chaos::history::{Event, History, Operation, Outcome};
use coraft_chaos::linearizable::{check_registers, Verdict, STATES_EXPLORED_MAX};
use coraft_chaos::list_append::{check_lists, AppendOutcome, ListOperation, ListViolation};
use coraft_chaos::nemesis::{plan, storage_damage, FaultKind, Timing};
use coraft_chaos::run::{run, RunOptions};
use coraft_chaos::second_opinion::{
    check_counters_second_opinion, check_lists_second_opinion, check_registers_second_opinion, Opinion, APPLY_STEPS_MAX,
};
use coraft_chaos::storage::Damage;

mod common;

/// `CORAFT_CHAOS_NODE_BIN` (say, `target/fast/coraft-node`), or this
/// profile's `coraft-node`, built.
fn node_bin() -> std::path::PathBuf {
    std::env::var_os("CORAFT_CHAOS_NODE_BIN").map_or_else(common::node_bin, std::path::PathBuf::from)
}

/// Makes one `Ok` read stale: it now returns the value of a write that a
/// later write had overwritten before the read began (what a leader serving
/// reads from its own state without confirming its leadership can return).
/// Returns the mutated event's index.
fn make_one_read_stale(history: &mut History) -> Option<usize> {
    let completions = history.completions().unwrap();
    // (key, value, invoke, complete) of acknowledged writes.
    let writes: Vec<(u64, u64, u64, u64)> = completions
        .iter()
        .filter_map(|c| match (c.operation, c.outcome, c.complete_ns) {
            (Operation::Write { key, value }, Outcome::Ok { .. }, Some(end)) => Some((key, value, c.invoke_ns, end)),
            _ => None,
        })
        .collect();
    for read in &completions {
        let (Operation::Read { key }, Outcome::Ok { value }) = (read.operation, read.outcome) else {
            continue;
        };
        // An old write W and a newer write W2 on the key: W completed
        // before W2 began, W2 completed before the read began.
        let stale = writes.iter().find(|&&(k, old_value, _, old_end)| {
            k == key
                && Some(old_value) != value
                && writes
                    .iter()
                    .any(|&(k2, _, new_start, new_end)| k2 == key && new_start > old_end && new_end < read.invoke_ns)
        });
        let Some(&(_, old_value, _, _)) = stale else {
            continue;
        };
        // The read's completion event: the process's first completion after its invocation.
        let index = history.events.iter().enumerate().position(|(_, event)| {
            matches!(event, Event::Complete { process, time_ns, .. }
                if *process == read.process && Some(*time_ns) == read.complete_ns)
        })?;
        if let Event::Complete { outcome, .. } = &mut history.events[index] {
            *outcome = Outcome::Ok { value: Some(old_value) };
        }
        return Some(index);
    }
    None
}

#[test]
fn a_short_run_under_kills_and_pauses_is_linearizable_and_a_stale_read_in_it_is_caught() {
    let dir = tempfile::Builder::new().prefix("coraft-chaos-test").tempdir().unwrap();
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), 14);
    options.duration = Duration::from_secs(20);
    options.nemesis = FaultKind::parse_list("kill-leader,kill-all,stop-leader,stop-node").unwrap();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
    // The faults really happened: processes were killed and paused, and
    // taking the leader down made another node lead.
    let hit = |kinds: &[FaultKind]| {
        report
            .faults
            .iter()
            .any(|f| kinds.contains(&f.kind) && !f.nodes.is_empty())
    };
    assert!(
        hit(&[FaultKind::KillLeader, FaultKind::KillAll]),
        "no node killed:\n{summary}"
    );
    assert!(
        hit(&[FaultKind::StopLeader, FaultKind::StopNode]),
        "no node paused:\n{summary}"
    );
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.leader_before.is_some() && f.leader_after.is_some() && f.leader_after != f.leader_before),
        "the leader never changed:\n{summary}"
    );
    // The history file is the history checked.
    let file = std::fs::File::open(dir.path().join("history.jsonl")).unwrap();
    let mut history = History::read_json_lines(std::io::BufReader::new(file)).unwrap();
    assert_eq!(history, report.history);
    // One stale read planted in this real history is caught.
    let mutated = make_one_read_stale(&mut history).expect("the run has a read after two ordered writes");
    let verdict = check_registers(&history, STATES_EXPLORED_MAX).unwrap().verdict();
    assert!(
        matches!(verdict, Verdict::NotLinearizable { .. }),
        "a stale read at event {mutated} was not caught: {verdict:?}"
    );
    // The second checker (crates.io) judged the real history's keys, and
    // rejects the stale read too.
    let [agreed_linearizable, _, skipped, _] = report.second_opinion.counts();
    assert!(
        agreed_linearizable > 100 && skipped * 10 < agreed_linearizable,
        "the second checker judged too few keys:\n{summary}"
    );
    let second = check_registers_second_opinion(&history, APPLY_STEPS_MAX).unwrap();
    let ours = check_registers(&history, STATES_EXPLORED_MAX).unwrap();
    assert!(
        second.disagreements(&ours).is_empty(),
        "{:?}",
        second.disagreements(&ours)
    );
    assert!(
        second
            .keys
            .values()
            .any(|o| matches!(o, Opinion::NotLinearizable { .. })),
        "the second checker missed the stale read at event {mutated}"
    );
    // The counters: the run drove them, and one acknowledged increment of
    // the real history made to return another's count is caught.
    let increments = report
        .history
        .completions()
        .unwrap()
        .into_iter()
        .filter(|c| matches!(c.operation, Operation::Increment { .. }) && matches!(c.outcome, Outcome::Ok { .. }))
        .count();
    assert!(increments > 10, "too few increments acknowledged:\n{summary}");
    let mut bad = report.history.clone();
    let counts: Vec<(usize, u64, u64)> = {
        let completions = bad.completions().unwrap();
        completions
            .iter()
            .filter_map(|c| match (c.operation, c.outcome, c.complete_ns) {
                (Operation::Increment { key }, Outcome::Ok { value: Some(count) }, Some(end)) => {
                    let index = bad.events.iter().position(|event| {
                        matches!(event, Event::Complete { process, time_ns, .. } if *process == c.process && *time_ns == end)
                    })?;
                    Some((index, key, count))
                }
                _ => None,
            })
            .collect()
    };
    let (first, key, count) = counts[0];
    let &(second, _, _) = counts
        .iter()
        .find(|&&(index, k, c)| index != first && k == key && c != count)
        .expect("two acknowledged increments of one counter");
    if let Event::Complete { outcome, .. } = &mut bad.events[second] {
        *outcome = Outcome::Ok { value: Some(count) };
    }
    assert!(
        !coraft_chaos::counter::check_counters(&bad).unwrap().is_empty(),
        "a duplicated count was not caught"
    );
    // The second checker judged every real counter as a fetch-and-increment
    // object, and rejects the duplicated count.
    assert_eq!(
        report.counter_opinion.counts()[..3],
        [4, 0, 0],
        "the second checker on the counters:\n{summary}"
    );
    let second_counters = check_counters_second_opinion(&bad, APPLY_STEPS_MAX).unwrap();
    assert!(
        matches!(second_counters.keys[&key], Opinion::NotLinearizable { .. }),
        "the second checker missed the duplicated count: {:?}",
        second_counters.keys[&key]
    );
    // The lists too: one acknowledged append dropped from a later read of
    // the real run is reported lost.
    let mut lists = report.lists.clone();
    assert!(lists.len() > 100, "too few list operations:\n{summary}");
    let acknowledged: std::collections::HashMap<(u64, u64), u64> = lists
        .iter()
        .filter_map(|operation| match operation {
            ListOperation::Append {
                key,
                value,
                complete_ns,
                outcome: AppendOutcome::Ok,
                ..
            } => Some(((*key, *value), *complete_ns)),
            _ => None,
        })
        .collect();
    let dropped = lists.iter_mut().find_map(|operation| match operation {
        ListOperation::Read {
            key,
            invoke_ns,
            values: Some(values),
            ..
        } if values
            .first()
            .and_then(|v| acknowledged.get(&(*key, *v)))
            .is_some_and(|&end| end < *invoke_ns) =>
        {
            Some(values.remove(0))
        }
        _ => None,
    });
    let dropped = dropped.expect("the run has a list read after an acknowledged append");
    assert!(
        check_lists(&lists)
            .iter()
            .any(|v| matches!(v, ListViolation::LostAppend { value, .. } if *value == dropped)),
        "dropping acknowledged append {dropped} from a read was not caught"
    );
    // The second checker judged the real lists (all of them but a few too
    // large to search) as linearizable, and rejects the dropped append.
    let [lists_linearizable, lists_not, lists_skipped, _] = report.list_opinion.counts();
    assert!(
        lists_linearizable > 100 && lists_not == 0 && lists_skipped * 10 < lists_linearizable,
        "the second checker on the lists:\n{summary}"
    );
    let second_lists = check_lists_second_opinion(&lists, APPLY_STEPS_MAX);
    assert!(
        second_lists
            .keys
            .values()
            .any(|o| matches!(o, Opinion::NotLinearizable { .. })),
        "the second checker missed the dropped append {dropped}"
    );
}

/// The run's namespaces and routes visible in the root namespace.
fn network_traces() -> (Vec<String>, Vec<String>) {
    let run = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().expect("ip runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let namespaces = run(&["netns", "list"])
        .lines()
        .filter(|l| l.starts_with("cchaos-"))
        .map(String::from)
        .collect();
    let routes = run(&["route", "show", "table", "all"])
        .lines()
        .filter(|l| l.contains("10.213."))
        .map(String::from)
        .collect();
    (namespaces, routes)
}

#[test]
fn a_short_run_under_partitions_is_linearizable_and_leaves_no_namespace_or_route() {
    if !coraft_chaos::netns::Network::available() {
        eprintln!("skipped: partitions need root and `ip netns` (network namespaces)");
        return;
    }
    let before = network_traces();
    let dir = tempfile::Builder::new().prefix("coraft-chaos-part").tempdir().unwrap();
    // Seed 2539 plans the leader isolated, a bridge, random halves, then a
    // ring (`nemesis::tests::the_ci_partition_seed_plans_every_partition_shape_early`).
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), 2539);
    options.duration = Duration::from_secs(15);
    options.nemesis = FaultKind::parse_list("partition").unwrap();
    let planned: Vec<FaultKind> = coraft_chaos::nemesis::plan(2539, &options.nemesis, 3, &options.timing, 8)
        .iter()
        .map(|d| d.kind)
        .collect();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    assert_eq!(network_traces(), before, "the run left namespaces or routes behind");
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let partitions: Vec<_> = report.faults.iter().filter(|f| f.kind.is_partition()).collect();
    assert!(!partitions.is_empty(), "no partition:\n{summary}");
    assert!(partitions.iter().all(|f| f.sides.len() >= 2 && !f.nodes.is_empty()));
    // The run made the faults its seed planned, in order: at least the
    // first three (the isolated leader, the bridge, the halves).
    let made: Vec<FaultKind> = report.faults.iter().map(|f| f.kind).collect();
    assert!(
        made.len() >= 3 && planned.starts_with(&made),
        "made {made:?}, planned {planned:?}:\n{summary}"
    );
    let bridge = report
        .faults
        .iter()
        .find(|f| f.kind == FaultKind::PartitionBridge)
        .expect("a bridge");
    let shared: Vec<&u64> = bridge.sides[0].iter().filter(|n| bridge.sides[1].contains(n)).collect();
    assert_eq!(shared.len(), 1, "a bridge's sides share one node: {:?}", bridge.sides);
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
}

#[test]
fn a_short_run_with_a_follower_caught_up_by_snapshot_install_is_linearizable() {
    let dir = tempfile::Builder::new().prefix("coraft-chaos-snap").tempdir().unwrap();
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), 33);
    options.duration = Duration::from_secs(10);
    options.nemesis = FaultKind::parse_list("snapshot-install").unwrap();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
    // A follower was killed and, restarted behind the leader's compacted
    // log, installed a snapshot (its own metrics say so).
    let (faults, installs, caught_up) = report.snapshot_installs().expect("a snapshot-install fault");
    assert!(
        faults >= 1 && installs >= 1 && caught_up >= 1,
        "no snapshot installed:\n{summary}"
    );
    assert!(report
        .faults
        .iter()
        .all(|f| f.kind == FaultKind::SnapshotInstall && f.nodes.len() == 1 && f.leader_before.is_some()));
}

#[test]
fn a_short_run_over_delayed_reordering_and_lossy_proxied_links_is_linearizable() {
    let dir = tempfile::Builder::new().prefix("coraft-chaos-proxy").tempdir().unwrap();
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), 41);
    options.duration = Duration::from_secs(15);
    options.nemesis = FaultKind::parse_list("proxy").unwrap();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
    // The proxies really interfered: every fault set links, and the
    // delays, resets and losses they report happened.
    assert!(report.faults.len() >= 2, "too few faults:\n{summary}");
    for fault in &report.faults {
        assert!(fault.kind.is_proxy() && !fault.links.is_empty(), "{fault:?}");
        let effect = fault.proxy.expect("a proxy fault counts what the proxies did");
        match fault.kind {
            FaultKind::ProxyDelay => assert!(effect.bytes_delayed > 0, "{fault:?}"),
            FaultKind::ProxyReorder => assert!(effect.resets > 0, "{fault:?}"),
            _ => assert!(effect.resets > 0 && effect.bytes_lost > 0, "{fault:?}"),
        }
    }
    let effects = report.proxy_effects().expect("proxy effects");
    assert!(effects.bytes_forwarded > 0);
}

#[test]
fn a_short_run_with_transfers_membership_changes_and_kills_is_linearizable_and_re_added_nodes_catch_up() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-members")
        .tempdir()
        .unwrap();
    // Seed 1352 plans a removal (the node killed while out), a transfer, a
    // leader kill, another removal.
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), 1352);
    options.duration = Duration::from_secs(20);
    options.nemesis = FaultKind::parse_list("transfer,membership,kill-node,kill-leader").unwrap();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
    // Every node removed was added back and applied what the leader had
    // committed when it was re-added; at least one removal happened.
    let (removed, caught_up) = report.membership_changes().expect("membership faults");
    assert!(
        removed >= 1 && caught_up == removed,
        "{removed} removed, {caught_up} caught up:\n{summary}"
    );
    // A transfer moved leadership.
    let (transfers, changed) = report.transfers().expect("transfer faults");
    assert!(
        transfers >= 1 && changed >= 1,
        "{transfers} transfers, {changed} changed the leader:\n{summary}"
    );
}

/// `--nemesis storage`: nodes SIGKILLed mid-run, their WALs damaged, and
/// restarted. A node whose synced records were damaged must refuse to start
/// naming the file and the offset; the harness then removes it, wipes it and
/// adds it back, and it must catch up. A node with a torn tail starts and
/// catches up. The history stays linearizable throughout.
#[test]
fn a_short_run_under_storage_faults_is_linearizable_and_every_damaged_node_refuses_or_repairs_and_comes_back() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-storage-run")
        .tempdir()
        .unwrap();
    // The first seed whose first fault damages synced records (a refusal)
    // and whose second garbles a torn tail (a repair).
    let kinds = [FaultKind::Storage];
    let seed = (1..10_000u64)
        .find(|&seed| {
            let draws = plan(seed, &kinds, 3, &Timing::default(), 2);
            let damages: Vec<Damage> = draws.iter().map(storage_damage).collect();
            damages[0].must_refuse() && damages[1] == Damage::TornTail && draws[0].gap_ms < 2_000
        })
        .unwrap();
    let mut options = RunOptions::new(node_bin(), dir.path().to_path_buf(), seed);
    options.duration = Duration::from_secs(20);
    options.nemesis = kinds.to_vec();
    let report = run(&options).expect("the run completes");
    let summary = report.summary();
    if !report.passed() {
        let kept = dir.keep();
        panic!("the run failed; its files are kept in {}:\n{summary}", kept.display());
    }
    println!("{summary}");
    let [ok, _, _] = report.outcomes;
    assert!(ok > 100, "too few operations acknowledged:\n{summary}");
    let storage: Vec<_> = report.faults.iter().filter_map(|f| f.storage.as_ref()).collect();
    // The first fault: damaged synced records, refused naming file and
    // offset, the node removed, wiped, re-added and caught up.
    let first = storage.first().expect("a storage fault");
    assert!(first.damaged.is_some(), "{first:?}");
    assert!(first.refused && first.named_file_and_offset && first.back, "{first:?}");
    // Every fault: a refusal names its file and offset, no node starts on
    // damaged synced records, every node came back.
    for fault in &storage {
        assert!(fault.back && !fault.started_on_damage, "{fault:?}");
        assert!(!fault.refused || fault.named_file_and_offset, "{fault:?}");
        if let Some(damaged) = &fault.damaged {
            if !fault.refused && damaged.damage == Damage::TornTail {
                let message = fault.message.as_deref().unwrap_or("");
                assert!(message.contains(&damaged.file_name), "{fault:?}");
            }
        }
    }
    let json = report.summary_json();
    assert_eq!(
        json["storage"]["refused"],
        json["storage"]["refusals_naming_file_and_offset"]
    );
}
