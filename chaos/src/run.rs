//! One chaos run: start the cluster, run the clients and the nemesis for a
//! while, heal, wait for the cluster, read every key once more, check the
//! history, and leave the history, the fault timeline, the summary and the
//! nodes' logs in the output folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::client::Client;

use crate::cluster::Cluster;
use crate::counter::{check_counters, CounterViolation};
use crate::history::{History, Operation, Outcome};
use crate::linearizable::{check_registers, KeyVerdict, RegisterReport, Verdict, STATES_EXPLORED_MAX};
use crate::list_append::{check_lists, ListOperation, ListViolation};
use crate::nemesis::{self, Fault, FaultKind, Timing};
use crate::netns::Network;
use crate::second_opinion::{
    check_counters_second_opinion, check_lists_second_opinion, check_registers_second_opinion, Disagreement,
    SecondOpinion, APPLY_STEPS_MAX,
};
use crate::workload::{self, Shared, WorkloadShape};
use crate::RunError;

/// The second checker, as the summary names it.
pub const SECOND_CHECKER: &str = "todc-utils WGLChecker";
/// How long one client attempt waits for a node's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the healed cluster has to answer the final reads.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `coraft-node` binary.
    pub node_bin: PathBuf,
    /// Where the history, logs and summary go (created if missing).
    pub out_dir: PathBuf,
    /// Seeds the nemesis and the clients.
    pub seed: u64,
    /// How long clients and the nemesis run.
    pub duration: Duration,
    /// Nodes in the cluster (3 or 5).
    pub nodes: usize,
    /// Client threads.
    pub clients: usize,
    /// Fault kinds the nemesis draws from.
    pub nemesis: Vec<FaultKind>,
    /// The nemesis's timing.
    pub timing: Timing,
    /// How clients choose keys.
    pub shape: WorkloadShape,
    /// Bound on one key's linearizability search.
    pub states_explored_max: usize,
    /// Keep the nodes' WALs after a run that passed (a failing run keeps them always).
    pub keep_data: bool,
}

impl RunOptions {
    /// Options with the defaults of the `coraft-chaos` binary.
    pub fn new(node_bin: PathBuf, out_dir: PathBuf, seed: u64) -> RunOptions {
        RunOptions {
            node_bin,
            out_dir,
            seed,
            duration: Duration::from_secs(30),
            nodes: 3,
            clients: 5,
            nemesis: FaultKind::ALL
                .iter()
                .copied()
                .filter(|k| !k.is_partition() && !matches!(k, FaultKind::SnapshotInstall | FaultKind::Storage))
                .collect(),
            timing: Timing::default(),
            shape: WorkloadShape {
                keys_active: 4,
                ops_per_key: 50,
            },
            states_explored_max: STATES_EXPLORED_MAX,
            keep_data: false,
        }
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The recorded history (client operations and the final reads).
    pub history: History,
    /// The faults injected.
    pub faults: Vec<Fault>,
    /// The verdict of each key's register.
    pub registers: RegisterReport,
    /// The second checker's verdict on each key ([`crate::second_opinion`]).
    pub second_opinion: SecondOpinion,
    /// The second checker's verdict on each counter, as a
    /// fetch-and-increment object.
    pub counter_opinion: SecondOpinion,
    /// The second checker's verdict on each list.
    pub list_opinion: SecondOpinion,
    /// The list-append operations (the final reads included).
    pub lists: Vec<ListOperation>,
    /// What the list-append checker found.
    pub list_violations: Vec<ListViolation>,
    /// What the counter checker found.
    pub counter_violations: Vec<CounterViolation>,
    /// Operations by outcome: ok, failed, unknown.
    pub outcomes: [usize; 3],
    /// Where the files are.
    pub out_dir: PathBuf,
}

impl RunReport {
    /// The whole history's verdict.
    pub fn verdict(&self) -> Verdict {
        self.registers.verdict()
    }

    /// Whether the run passed: every register linearizable, the second
    /// checker agreeing on every register, counter and list, no list
    /// anomaly, no counter violation, every storage fault handled
    /// ([`RunReport::storage_faults_handled`]).
    pub fn passed(&self) -> bool {
        self.verdict() == Verdict::Linearizable
            && self.disagreements().is_empty()
            && self.counter_disagreements().is_empty()
            && self.list_disagreements().is_empty()
            && self.storage_faults_handled()
            && self.list_violations.is_empty()
            && self.counter_violations.is_empty()
    }

    /// The keys our checker and the second one judged differently.
    pub fn disagreements(&self) -> Vec<Disagreement> {
        self.second_opinion.disagreements(&self.registers)
    }

    /// The counters the second checker judges otherwise than ours
    /// ([`crate::counter`]: a counter with a violation is rejected).
    pub fn counter_disagreements(&self) -> Vec<Disagreement> {
        let rejected: BTreeSet<u64> = self.counter_violations.iter().map(counter_violation_key).collect();
        self.counter_opinion.disagreements_with_rejected(&rejected)
    }

    /// The lists the second checker judges otherwise than ours
    /// ([`crate::list_append`]: a list with an anomaly is rejected).
    pub fn list_disagreements(&self) -> Vec<Disagreement> {
        let rejected: BTreeSet<u64> = self.list_violations.iter().map(list_violation_key).collect();
        self.list_opinion.disagreements_with_rejected(&rejected)
    }

    /// For each fault that took the leader away (killed, paused or cut
    /// off, or every node killed): nanoseconds from its start to the
    /// completion of the first acknowledged write or compare-and-set invoked
    /// after it started (what a client waits for the cluster to take writes
    /// again); `None` if none was.
    pub fn recoveries_ns(&self) -> Vec<(FaultKind, Option<u64>)> {
        let completions = self.history.completions().unwrap_or_default();
        self.faults
            .iter()
            .filter(|f| {
                f.kind == FaultKind::KillAll
                    || (f.kind == FaultKind::Storage
                        && f.leader_before.is_some()
                        && f.nodes.first() == f.leader_before.as_ref())
                    || (f.leader_before.is_some()
                        && matches!(
                            f.kind,
                            FaultKind::KillLeader
                                | FaultKind::StopLeader
                                | FaultKind::PartitionLeader
                                | FaultKind::PartitionOneWay
                        ))
            })
            .map(|fault| {
                let first = completions
                    .iter()
                    .filter(|c| c.invoke_ns >= fault.start_ns)
                    .filter(|c| matches!(c.operation, Operation::Write { .. } | Operation::Cas { .. }))
                    .filter(|c| matches!(c.outcome, Outcome::Ok { .. }))
                    .filter_map(|c| c.complete_ns)
                    .min();
                (fault.kind, first.map(|end| end - fault.start_ns))
            })
            .collect()
    }

    /// For a run with `snapshot-install` faults: how many there were, the
    /// snapshots their restarted followers installed, and how many of the
    /// faults saw at least one install.
    pub fn snapshot_installs(&self) -> Option<(usize, u64, usize)> {
        let faults: Vec<&Fault> = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::SnapshotInstall)
            .collect();
        (!faults.is_empty()).then(|| {
            (
                faults.len(),
                faults.iter().map(|f| f.snapshots_installed).sum(),
                faults.iter().filter(|f| f.snapshots_installed > 0).count(),
            )
        })
    }

    /// What the proxies did during the proxy faults (summed), if there were any.
    pub fn proxy_effects(&self) -> Option<crate::proxy::LinkCounters> {
        let mut total = crate::proxy::LinkCounters::default();
        let mut any = false;
        for counters in self.faults.iter().filter_map(|f| f.proxy.as_ref()) {
            total.add(counters);
            any = true;
        }
        any.then_some(total)
    }

    /// For `membership` faults: how many removed a node, and how many of
    /// those saw it added back and caught up.
    pub fn membership_changes(&self) -> Option<(usize, usize)> {
        let faults: Vec<&Fault> = self.faults.iter().filter(|f| f.kind == FaultKind::Membership).collect();
        (!faults.is_empty()).then(|| {
            (
                faults.iter().filter(|f| f.caught_up.is_some()).count(),
                faults.iter().filter(|f| f.caught_up == Some(true)).count(),
            )
        })
    }

    /// For `storage` faults: [damage made, refused, refusals naming file and
    /// offset, started, started on damage they must refuse, back].
    pub fn storage_faults(&self) -> Option<[usize; 6]> {
        let faults: Vec<&crate::nemesis::StorageFault> =
            self.faults.iter().filter_map(|f| f.storage.as_ref()).collect();
        (!faults.is_empty()).then(|| {
            let count = |test: fn(&crate::nemesis::StorageFault) -> bool| faults.iter().filter(|f| test(f)).count();
            [
                count(|f| f.damaged.is_some()),
                count(|f| f.refused),
                count(|f| f.refused && f.named_file_and_offset),
                count(|f| !f.refused),
                count(|f| f.started_on_damage),
                count(|f| f.back),
            ]
        })
    }

    /// Whether every storage fault went as it must: a refusal names the file
    /// and the offset, no node starts on damaged synced records, and every
    /// node is back (re-added, or caught up).
    pub fn storage_faults_handled(&self) -> bool {
        self.faults
            .iter()
            .filter_map(|f| f.storage.as_ref())
            .all(|f| f.back && !f.started_on_damage && (!f.refused || f.named_file_and_offset))
    }

    /// For `transfer` faults: how many, and after how many of them another
    /// node was seen leading.
    pub fn transfers(&self) -> Option<(usize, usize)> {
        let faults: Vec<&Fault> = self.faults.iter().filter(|f| f.kind == FaultKind::Transfer).collect();
        (!faults.is_empty()).then(|| {
            (
                faults.len(),
                faults
                    .iter()
                    .filter(|f| f.leader_after.is_some() && f.leader_after != f.leader_before)
                    .count(),
            )
        })
    }

    /// The summary as JSON (`summary.json`, `coraft-chaos --json`): the
    /// figures of [`RunReport::summary`], by name.
    pub fn summary_json(&self) -> serde_json::Value {
        let [ok, failed, unknown] = self.outcomes;
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for fault in &self.faults {
            *by_kind.entry(fault.kind.name()).or_default() += 1;
        }
        let mut recoveries: Vec<u64> = self.recoveries_ns().iter().filter_map(|&(_, ns)| ns).collect();
        recoveries.sort_unstable();
        let ms = |ns: Option<&u64>| ns.map(|ns| ns / 1_000_000);
        let mut counts = [0usize; 3];
        for verdict in self.registers.keys.values() {
            counts[match verdict {
                KeyVerdict::Linearizable => 0,
                KeyVerdict::NotLinearizable { .. } => 1,
                KeyVerdict::TooLarge { .. } => 2,
            }] += 1;
        }
        let second = self.second_opinion.counts();
        let lost_appends = self
            .list_violations
            .iter()
            .filter(|v| matches!(v, ListViolation::LostAppend { .. }))
            .count();
        serde_json::json!({
            "seed": self.seed,
            "passed": self.passed(),
            "operations": { "ok": ok, "failed": failed, "unknown": unknown },
            "list_operations": self.lists.len(),
            "faults": by_kind,
            "faults_total": self.faults.len(),
            "snapshots_installed": self.snapshot_installs().map_or(0, |(_, installs, _)| installs),
            "proxy": self.proxy_effects(),
            "membership": self.membership_changes().map(|(removed, caught_up)| {
                serde_json::json!({ "removed": removed, "re_added_caught_up": caught_up })
            }),
            "storage": self.storage_faults().map(|[damaged, refused, named, started, started_on_damage, back]| {
                serde_json::json!({
                    "damage_made": damaged,
                    "refused": refused,
                    "refusals_naming_file_and_offset": named,
                    "started": started,
                    "started_on_damage_it_must_refuse": started_on_damage,
                    "back": back,
                })
            }),
            "transfers": self.transfers().map(|(transfers, changed)| {
                serde_json::json!({ "transfers": transfers, "leader_changed": changed })
            }),
            "recovery_ms": {
                "faults": recoveries.len(),
                "median": ms(recoveries.get(recoveries.len() / 2)),
                "max": ms(recoveries.last()),
            },
            "keys": { "linearizable": counts[0], "not_linearizable": counts[1], "too_large": counts[2] },
            "second_opinion": {
                "checker": SECOND_CHECKER,
                "linearizable": second[0],
                "not_linearizable": second[1],
                "skipped": second[2],
                "judged_without_unobserved_unknowns": second[3],
                "disagreements": self.disagreements(),
            },
            "second_opinion_counters": {
                "linearizable": self.counter_opinion.counts()[0],
                "not_linearizable": self.counter_opinion.counts()[1],
                "skipped": self.counter_opinion.counts()[2],
                "disagreements": self.counter_disagreements(),
            },
            "second_opinion_lists": {
                "linearizable": self.list_opinion.counts()[0],
                "not_linearizable": self.list_opinion.counts()[1],
                "skipped": self.list_opinion.counts()[2],
                "judged_without_unobserved_unknowns": self.list_opinion.counts()[3],
                "disagreements": self.list_disagreements(),
            },
            "list_anomalies": self.list_violations.len(),
            "counter_violations": self.counter_violations.len(),
            "acknowledged_appends_lost": lost_appends,
            "out_dir": self.out_dir.display().to_string(),
        })
    }

    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let [ok, failed, unknown] = self.outcomes;
        text.push_str(&format!("seed {}\n", self.seed));
        text.push_str(&format!(
            "operations {}: ok {ok}, failed {failed}, unknown {unknown}\n",
            ok + failed + unknown
        ));
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for fault in &self.faults {
            *by_kind.entry(fault.kind.name()).or_default() += 1;
        }
        let faults: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        text.push_str(&format!("faults {}: {}\n", self.faults.len(), faults.join(", ")));
        if let Some((faults, installs, caught_up)) = self.snapshot_installs() {
            text.push_str(&format!(
                "snapshot installs {installs} (in {caught_up} of {faults} snapshot-install faults the restarted follower installed one)\n"
            ));
        }
        if let Some(proxy) = self.proxy_effects() {
            text.push_str(&format!(
                "proxied links during proxy faults: {} connections, {} reset, {} bytes forwarded ({} delayed), {} bytes lost, {} bytes delivered late\n",
                proxy.connections, proxy.resets, proxy.bytes_forwarded, proxy.bytes_delayed, proxy.bytes_lost, proxy.bytes_late
            ));
        }
        if let Some((removed, caught_up)) = self.membership_changes() {
            text.push_str(&format!(
                "membership: {removed} nodes removed, {caught_up} of them added back and caught up\n"
            ));
        }
        if let Some([damaged, refused, named, started, started_on_damage, back]) = self.storage_faults() {
            text.push_str(&format!(
                "storage: damage made {damaged}; refused to start {refused} (naming file and offset: {named}), \
                 started {started} (on damage it must refuse: {started_on_damage}); back in the group and caught up {back}\n"
            ));
        }
        if let Some((transfers, changed)) = self.transfers() {
            text.push_str(&format!(
                "transfers {transfers}: another node seen leading after {changed}\n"
            ));
        }
        let leaders: BTreeSet<u64> = self
            .faults
            .iter()
            .flat_map(|f| f.leader_before.into_iter().chain(f.leader_after))
            .collect();
        text.push_str(&format!("leaders seen {leaders:?}\n"));
        let mut recoveries: Vec<u64> = self.recoveries_ns().iter().filter_map(|&(_, ns)| ns).collect();
        recoveries.sort_unstable();
        if let Some(&max) = recoveries.last() {
            text.push_str(&format!(
                "writes again after a leader fault (fault start to the first acknowledged write invoked after it): \
                 {} faults, median {} ms, max {} ms\n",
                recoveries.len(),
                recoveries[recoveries.len() / 2] / 1_000_000,
                max / 1_000_000
            ));
        }
        let mut counts = [0usize; 3];
        for verdict in self.registers.keys.values() {
            counts[match verdict {
                KeyVerdict::Linearizable => 0,
                KeyVerdict::NotLinearizable { .. } => 1,
                KeyVerdict::TooLarge { .. } => 2,
            }] += 1;
        }
        text.push_str(&format!(
            "keys {}: linearizable {}, not linearizable {}, too large to check {}\n",
            self.registers.keys.len(),
            counts[0],
            counts[1],
            counts[2]
        ));
        for (key, verdict) in &self.registers.keys {
            match verdict {
                KeyVerdict::Linearizable => {}
                KeyVerdict::NotLinearizable { not_placed, .. } => text.push_str(&format!(
                    "  key {key}: NOT LINEARIZABLE; no legal place for {not_placed:?}\n"
                )),
                KeyVerdict::TooLarge { states_explored } => {
                    text.push_str(&format!("  key {key}: too large ({states_explored} states explored)\n"))
                }
            }
        }
        let second = self.second_opinion.counts();
        let disagreements = self.disagreements();
        text.push_str(&format!(
            "second opinion ({SECOND_CHECKER}): linearizable {}, not linearizable {}, skipped {}; disagreements {}\n",
            second[0],
            second[1],
            second[2],
            disagreements.len()
        ));
        for disagreement in disagreements.iter().take(10) {
            text.push_str(&format!(
                "  key {}: CHECKERS DISAGREE: ours says {}, the second says {:?}\n",
                disagreement.key,
                if disagreement.ours_linearizable {
                    "linearizable"
                } else {
                    "not linearizable"
                },
                disagreement.theirs
            ));
        }
        let list_keys: BTreeSet<u64> = self
            .lists
            .iter()
            .map(|operation| match operation {
                ListOperation::Append { key, .. } | ListOperation::Read { key, .. } => *key,
            })
            .collect();
        text.push_str(&format!(
            "lists {} ({} operations): anomalies {}\n",
            list_keys.len(),
            self.lists.len(),
            self.list_violations.len()
        ));
        for violation in self.list_violations.iter().take(10) {
            text.push_str(&format!("  {violation:?}\n"));
        }
        let counter_operations = self
            .history
            .completions()
            .unwrap_or_default()
            .iter()
            .filter(|c| matches!(c.operation, Operation::Increment { .. } | Operation::CounterRead { .. }))
            .count();
        text.push_str(&format!(
            "counters ({counter_operations} operations): violations {}\n",
            self.counter_violations.len()
        ));
        for violation in self.counter_violations.iter().take(10) {
            text.push_str(&format!("  {violation:?}\n"));
        }
        for (what, opinion, disagreements) in [
            ("counters", &self.counter_opinion, self.counter_disagreements()),
            ("lists", &self.list_opinion, self.list_disagreements()),
        ] {
            let counts = opinion.counts();
            text.push_str(&format!(
                "second opinion on the {what} ({SECOND_CHECKER}): linearizable {}, not linearizable {}, skipped {}; disagreements {}\n",
                counts[0],
                counts[1],
                counts[2],
                disagreements.len()
            ));
            for disagreement in disagreements.iter().take(10) {
                text.push_str(&format!(
                    "  {what} key {}: CHECKERS DISAGREE: ours says {}, the second says {:?}\n",
                    disagreement.key,
                    if disagreement.ours_linearizable {
                        "no anomaly"
                    } else {
                        "anomalies"
                    },
                    disagreement.theirs
                ));
            }
        }
        text.push_str(&format!(
            "verdict {:?}{}{}\nfiles in {}\n",
            self.verdict(),
            if disagreements.is_empty()
                && self.counter_disagreements().is_empty()
                && self.list_disagreements().is_empty()
            {
                ""
            } else {
                ", checkers disagree"
            },
            match (self.list_violations.is_empty(), self.counter_violations.is_empty()) {
                (true, true) => "",
                (false, true) => ", list anomalies",
                (true, false) => ", counter violations",
                (false, false) => ", list anomalies, counter violations",
            },
            self.out_dir.display()
        ));
        text
    }
}

/// The counter a violation is about.
fn counter_violation_key(violation: &CounterViolation) -> u64 {
    match violation {
        CounterViolation::DuplicateCount { key, .. }
        | CounterViolation::CountOutOfBounds { key, .. }
        | CounterViolation::ReadBelowAcknowledged { key, .. }
        | CounterViolation::ReadAboveAttempted { key, .. } => *key,
    }
}

/// The list an anomaly is about.
fn list_violation_key(violation: &ListViolation) -> u64 {
    match violation {
        ListViolation::Duplicate { key, .. }
        | ListViolation::Phantom { key, .. }
        | ListViolation::Order { key, .. }
        | ListViolation::LostAppend { key, .. }
        | ListViolation::Stale { key, .. } => *key,
    }
}

/// Counts completions by outcome: ok, failed, unknown.
pub fn outcome_counts(history: &History) -> Result<[usize; 3], RunError> {
    let mut counts = [0usize; 3];
    for completion in history
        .completions()
        .map_err(|e| RunError::Setup(format!("history: {e}")))?
    {
        counts[match completion.outcome {
            Outcome::Ok { .. } => 0,
            Outcome::Failed => 1,
            Outcome::Unknown => 2,
        }] += 1;
    }
    Ok(counts)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    std::fs::write(path, bytes).map_err(|source| RunError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// Runs the whole thing; `Err` only if the harness itself failed (the
/// cluster could not start, or did not answer after healing). A
/// linearizability violation is a report whose [`RunReport::passed`] is false.
pub fn run(options: &RunOptions) -> Result<RunReport, RunError> {
    if !(1..=9).contains(&options.nodes) || options.clients == 0 {
        return Err(RunError::Setup(format!(
            "--nodes {} --clients {}: need 1 to 9 nodes and at least one client",
            options.nodes, options.clients
        )));
    }
    std::fs::create_dir_all(&options.out_dir).map_err(|source| RunError::Io {
        what: format!("creating {}", options.out_dir.display()),
        source,
    })?;
    // Declared before the cluster, so dropped after it: the nodes die
    // before their namespaces go.
    let mut network = if options.nemesis.iter().any(|k| k.is_partition()) {
        Some(Network::create(options.nodes)?)
    } else {
        None
    };
    let snapshot = options
        .nemesis
        .contains(&FaultKind::SnapshotInstall)
        .then(nemesis::snapshot_policy);
    let proxied = options.nemesis.iter().any(|k| k.is_proxy());
    if proxied && options.nemesis.contains(&FaultKind::Membership) {
        // A node added back is named by its real address, which the
        // address book then hands every member: it would bypass the proxies.
        return Err(RunError::Setup(
            "proxy faults and `membership` do not mix: a re-added node's address bypasses the proxies".into(),
        ));
    }
    let mut cluster = Cluster::create_full(
        &options.node_bin,
        &options.out_dir,
        options.nodes,
        network.as_ref(),
        crate::cluster::SEGMENT_BYTES,
        snapshot,
        proxied.then_some(options.seed),
    )?;
    cluster.start_all()?;
    let shared = Arc::new(Shared::new());
    let client_config = cluster.client_config(ATTEMPT_TIMEOUT);
    // The cluster elects first; the clients' own retries would also do.
    await_cluster(&client_config, Duration::from_secs(30))?;
    let threads: Vec<_> = (0..options.clients)
        .map(|i| {
            let shared = shared.clone();
            let config = client_config.clone();
            let seed = options
                .seed
                .wrapping_add(i as u64 + 1)
                .wrapping_mul(0x2545_F491_4F6C_DD1D);
            let shape = options.shape;
            std::thread::spawn(move || workload::client_loop(shared, config, i as u64, seed, shape))
        })
        .collect();
    let deadline = Instant::now() + options.duration;
    let faults = nemesis::run(
        &mut cluster,
        network.as_mut(),
        &options.nemesis,
        options.seed,
        options.timing,
        deadline,
        &shared.recorder,
        &shared.stop,
    );
    // Heal before the clients stop, so their last operations can finish.
    let healed = match network.as_mut() {
        Some(network) => network.heal().and_then(|()| cluster.heal()),
        None => cluster.heal(),
    };
    shared.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let faults = faults?;
    healed?;
    final_reads(&shared, &client_config, options.clients as u64)?;
    cluster.stop_all();
    let history = shared.recorder.history();
    let mut bytes = Vec::new();
    history
        .write_json_lines(&mut bytes)
        .map_err(|e| RunError::Setup(format!("history: {e}")))?;
    write_file(&options.out_dir.join("history.jsonl"), &bytes)?;
    let timeline = serde_json::to_string_pretty(&faults).map_err(|e| RunError::Setup(e.to_string()))?;
    write_file(&options.out_dir.join("faults.json"), timeline.as_bytes())?;
    let registers =
        check_registers(&history, options.states_explored_max).map_err(|e| RunError::Setup(format!("history: {e}")))?;
    let second_opinion = check_registers_second_opinion(&history, APPLY_STEPS_MAX)
        .map_err(|e| RunError::Setup(format!("history: {e}")))?;
    let lists = std::mem::take(&mut *shared.lists.lock().expect("lists lock"));
    let mut list_lines = String::new();
    for operation in &lists {
        list_lines.push_str(&serde_json::to_string(operation).map_err(|e| RunError::Setup(e.to_string()))?);
        list_lines.push('\n');
    }
    write_file(&options.out_dir.join("lists.jsonl"), list_lines.as_bytes())?;
    let counter_violations = check_counters(&history).map_err(|e| RunError::Setup(format!("history: {e}")))?;
    let counter_opinion = check_counters_second_opinion(&history, APPLY_STEPS_MAX)
        .map_err(|e| RunError::Setup(format!("history: {e}")))?;
    let list_opinion = check_lists_second_opinion(&lists, APPLY_STEPS_MAX);
    let report = RunReport {
        counter_opinion,
        list_opinion,
        counter_violations,
        list_violations: check_lists(&lists),
        lists,
        seed: options.seed,
        outcomes: outcome_counts(&history)?,
        history,
        faults,
        registers,
        second_opinion,
        out_dir: options.out_dir.clone(),
    };
    write_file(&options.out_dir.join("summary.txt"), report.summary().as_bytes())?;
    let json = serde_json::to_string_pretty(&report.summary_json()).map_err(|e| RunError::Setup(e.to_string()))?;
    write_file(&options.out_dir.join("summary.json"), json.as_bytes())?;
    let completions = report
        .history
        .completions()
        .map_err(|e| RunError::Setup(format!("history: {e}")))?;
    let title = format!(
        "coraft-chaos seed {}: {} nodes, {} clients, {} faults",
        options.seed,
        options.nodes,
        options.clients,
        report.faults.len()
    );
    write_file(
        &options.out_dir.join("plot.svg"),
        crate::plot::svg(&completions, &report.faults, &title).as_bytes(),
    )?;
    if report.passed() && !options.keep_data {
        let _ = std::fs::remove_dir_all(options.out_dir.join("data"));
    }
    Ok(report)
}

/// Waits until the cluster answers a linearizable read.
fn await_cluster(config: &coraft::client::ClientConfig, timeout: Duration) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    let mut client = Client::new(config.clone());
    loop {
        match workload::execute(&mut client, Operation::Read { key: u64::MAX }) {
            Outcome::Ok { .. } => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(RunError::Setup(format!(
                    "the cluster did not answer a read within {timeout:?} (see the node logs)"
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads every key the clients touched once more, after healing, as
/// process `process`: what the cluster holds in the end is checked with
/// the rest of the history.
fn final_reads(shared: &Shared, config: &coraft::client::ClientConfig, process: u64) -> Result<(), RunError> {
    let keys: BTreeSet<u64> = shared
        .recorder
        .history()
        .events
        .iter()
        .filter_map(|event| match event {
            crate::history::Event::Invoke {
                operation: Operation::Read { key } | Operation::Write { key, .. } | Operation::Cas { key, .. },
                ..
            } => Some(*key),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut client = Client::new(config.clone());
    let list_keys: BTreeSet<u64> = shared
        .lists
        .lock()
        .expect("lists lock")
        .iter()
        .map(|operation| match operation {
            crate::list_append::ListOperation::Append { key, .. }
            | crate::list_append::ListOperation::Read { key, .. } => *key,
        })
        .collect();
    for key in list_keys {
        loop {
            let read = workload::read_list(&mut client, &shared.recorder, process, key);
            let answered = matches!(read, crate::list_append::ListOperation::Read { values: Some(_), .. });
            shared.lists.lock().expect("lists lock").push(read);
            if answered {
                break;
            }
            if Instant::now() >= deadline {
                return Err(RunError::Setup(format!(
                    "the healed cluster did not answer a read of list {key} within {RECOVERY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let counters: BTreeSet<u64> = shared
        .recorder
        .history()
        .events
        .iter()
        .filter_map(|event| match event {
            crate::history::Event::Invoke {
                operation: Operation::Increment { key } | Operation::CounterRead { key },
                ..
            } => Some(*key),
            _ => None,
        })
        .collect();
    let reads = keys
        .into_iter()
        .map(|key| Operation::Read { key })
        .chain(counters.into_iter().map(|key| Operation::CounterRead { key }));
    for operation in reads {
        loop {
            shared.recorder.invoke(process, operation);
            let outcome = workload::execute(&mut client, operation);
            shared.recorder.complete(process, outcome);
            if outcome != Outcome::Unknown {
                break;
            }
            if Instant::now() >= deadline {
                return Err(RunError::Setup(format!(
                    "the healed cluster did not answer {operation:?} within {RECOVERY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, leader_before: Option<u64>, start_ns: u64) -> Fault {
        Fault {
            kind,
            nodes: vec![1],
            sides: vec![],
            leader_before,
            leader_after: None,
            start_ns,
            end_ns: start_ns + 1,
            snapshots_installed: 0,
            links: vec![],
            proxy: None,
            admin: vec![],
            caught_up: None,
            storage: None,
        }
    }

    #[test]
    fn recovery_runs_from_a_leader_fault_to_the_first_acknowledged_write_invoked_after_it() {
        let mut history = History::new();
        history.invoke(1, 5, Operation::Write { key: 1, value: 1 });
        history.invoke(2, 12, Operation::Read { key: 1 });
        history.invoke(3, 15, Operation::Write { key: 1, value: 2 });
        history.complete(2, 16, Outcome::Ok { value: Some(1) });
        history.complete(1, 20, Outcome::Ok { value: None });
        history.invoke(4, 21, Operation::Write { key: 1, value: 3 });
        history.complete(4, 30, Outcome::Failed);
        history.complete(3, 40, Outcome::Ok { value: None });
        let report = RunReport {
            seed: 0,
            outcomes: outcome_counts(&history).unwrap(),
            history,
            faults: vec![
                fault(FaultKind::KillLeader, Some(1), 10),
                fault(FaultKind::StopNode, Some(1), 10),
                fault(FaultKind::StopLeader, None, 10),
                fault(FaultKind::KillAll, None, 35),
            ],
            registers: RegisterReport::default(),
            second_opinion: SecondOpinion::default(),
            counter_opinion: SecondOpinion::default(),
            list_opinion: SecondOpinion::default(),
            lists: vec![],
            list_violations: vec![],
            counter_violations: vec![],
            out_dir: PathBuf::new(),
        };
        // The write invoked at 5 started before the fault; the read and the
        // failed write do not count; the write invoked at 15 completes at 40.
        assert_eq!(
            report.recoveries_ns(),
            vec![(FaultKind::KillLeader, Some(30)), (FaultKind::KillAll, None)]
        );
        assert!(report.summary().contains("1 faults, median 0 ms"));
        let json = report.summary_json();
        assert_eq!(json["recovery_ms"]["faults"], 1);
        assert_eq!(json["faults"]["kill-all"], 1);
        assert_eq!(json["operations"]["ok"], 3);
    }
}
