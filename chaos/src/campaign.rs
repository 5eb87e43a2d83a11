//! `coraft-chaos campaign`: every fault kind asked for, run `runs_per_kind`
//! times, each run a whole checked run ([`crate::run::run`]) with its own
//! seed and only that kind in its nemesis, on 3 and 5 nodes in turn; then
//! one table with a row per kind: runs, operations checked (registers,
//! counters, lists), unknown outcomes, faults injected, violations,
//! acknowledged writes lost, the recovery time after the faults that took
//! the leader away (p50 / p99 over every run of the kind) and the longest
//! time no write was acknowledged.
//!
//! Runs go kind by kind in rounds (the first run of every kind, then the
//! second, ...), so a campaign cut short by its time budget still covers
//! every kind. Each run's figures are a line of `campaign.jsonl` in the
//! output folder as soon as it ends; the table is `campaign.txt` (and
//! `campaign.json`) at the end. A run that passed has its folder removed;
//! a failing one (a violation, a write lost, a disagreement of the
//! checkers, a storage fault not handled, or a run that could not be
//! carried out) keeps `KIND/run-N-seed-S-nodes-M` with a `RERUN` file, and
//! so does a run that passed with no write acknowledged for longer than
//! [`SLOW_RUN_KEPT_MS`] (its nodes' logs show why).
//!
//! **Acknowledged writes lost** ([`writes_lost`]) is measured on the state
//! the cluster converged to (the final reads after healing), not inferred
//! from a violation: a register whose final value was written by an
//! acknowledged write that completed before another acknowledged write
//! began (values are unique: the later write was lost), a counter whose
//! final count is below the increments acknowledged, a list missing an
//! acknowledged append.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Completion, History, HistoryError, Key, Operation, Outcome, ProcessId};
use crate::linearizable::KeyVerdict;
use crate::list_append::{AppendOutcome, ListOperation};
use crate::nemesis::FaultKind;
use crate::rng::Rng;
use crate::run::{run, RunOptions, RunReport};
use crate::soak::rerun_command;
use crate::RunError;

/// A run that passed keeps its folder (history, fault timeline, the
/// nodes' data and logs) when no write was acknowledged for longer than
/// this, in ms: a liveness tail worth a look.
pub const SLOW_RUN_KEPT_MS: u64 = 3_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    /// The options of every run: `seed` seeds the campaign (each run's
    /// seed is drawn from it, its kind and its number), `out_dir` holds the
    /// runs' folders and the campaign's files; `nodes` and `nemesis` are
    /// replaced per run.
    pub base: RunOptions,
    /// The fault kinds, each run alone.
    pub kinds: Vec<FaultKind>,
    /// Runs of each kind.
    pub runs_per_kind: usize,
    /// Cluster sizes, taken in turn by a kind's runs (`[3, 5]`: run 1 on 3
    /// nodes, run 2 on 5, ...).
    pub node_counts: Vec<usize>,
    /// No run starts after this much time (`None`: every run).
    pub time_budget: Option<Duration>,
}

/// One run's figures, as the campaign adds them up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunFigures {
    /// Register reads, writes and compare-and-sets checked (final reads included).
    pub register_operations: usize,
    /// Counter increments and reads checked (final reads included).
    pub counter_operations: usize,
    /// List appends and reads checked (final reads included).
    pub list_operations: usize,
    /// Operations whose outcome the client never learned (registers,
    /// counters, list appends and list reads without an answer).
    pub unknown: usize,
    /// Faults injected.
    pub faults: usize,
    /// Violations: register keys not linearizable, registers, counters and
    /// lists the two checkers judged differently, list anomalies, counter violations, storage
    /// faults not handled as they must be.
    pub violations: usize,
    /// Register keys too large to check, or skipped by the second checker.
    pub unchecked_keys: usize,
    /// Acknowledged writes the converged state lacks ([`writes_lost`]).
    pub writes_lost: usize,
    /// For each fault that took the leader away and after which a write
    /// was acknowledged: ms from the fault to the first acknowledged write
    /// invoked after it.
    pub recoveries_ms: Vec<u64>,
    /// Faults that took the leader away after which no write invoked was
    /// acknowledged before the clients stopped.
    pub not_recovered: usize,
    /// The longest time, in ms, between two acknowledged writes (register,
    /// counter or list) of the clients.
    pub longest_unavailable_ms: u64,
}

impl RunFigures {
    /// The figures of one run whose final reads were made as process
    /// `final_process` (the run's client count).
    pub fn of(report: &RunReport, final_process: ProcessId) -> Result<RunFigures, HistoryError> {
        let completions = report.history.completions()?;
        let register_operations = completions
            .iter()
            .filter(|c| {
                matches!(
                    c.operation,
                    Operation::Read { .. } | Operation::Write { .. } | Operation::Cas { .. }
                )
            })
            .count();
        let counter_operations = completions.len() - register_operations;
        let unknown_lists = report
            .lists
            .iter()
            .filter(|operation| {
                matches!(
                    operation,
                    ListOperation::Append {
                        outcome: AppendOutcome::Unknown,
                        ..
                    } | ListOperation::Read { values: None, .. }
                )
            })
            .count();
        let not_linearizable = report
            .registers
            .keys
            .values()
            .filter(|v| matches!(v, KeyVerdict::NotLinearizable { .. }))
            .count();
        let too_large = report
            .registers
            .keys
            .values()
            .filter(|v| matches!(v, KeyVerdict::TooLarge { .. }))
            .count();
        let storage_mishandled = report
            .faults
            .iter()
            .filter_map(|f| f.storage.as_ref())
            .filter(|f| !f.back || f.started_on_damage || (f.refused && !f.named_file_and_offset))
            .count();
        let recoveries = report.recoveries_ns();
        Ok(RunFigures {
            register_operations,
            counter_operations,
            list_operations: report.lists.len(),
            unknown: report.outcomes[2] + unknown_lists,
            faults: report.faults.len(),
            violations: not_linearizable
                + report.disagreements().len()
                + report.counter_disagreements().len()
                + report.list_disagreements().len()
                + report.list_violations.len()
                + report.counter_violations.len()
                + storage_mishandled,
            unchecked_keys: too_large + report.second_opinion.counts()[2],
            writes_lost: writes_lost(&report.history, &report.lists, final_process)?.total(),
            recoveries_ms: recoveries
                .iter()
                .filter_map(|&(_, ns)| ns)
                .map(|ns| ns / 1_000_000)
                .collect(),
            not_recovered: recoveries.iter().filter(|(_, ns)| ns.is_none()).count(),
            longest_unavailable_ms: longest_without_acknowledged_write_ns(&completions, &report.lists, final_process)
                / 1_000_000,
        })
    }
}

/// Acknowledged writes the state the cluster converged to lacks, by object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WritesLost {
    /// Register writes and compare-and-sets (key, value written).
    pub registers: Vec<(Key, u64)>,
    /// Counters and the increments they lost (acknowledged − final count).
    pub counters: Vec<(Key, u64)>,
    /// List appends (key, value appended).
    pub lists: Vec<(Key, u64)>,
}

impl WritesLost {
    /// How many writes were lost in all.
    pub fn total(&self) -> usize {
        self.registers.len() + self.counters.iter().map(|&(_, n)| n as usize).sum::<usize>() + self.lists.len()
    }
}

/// The acknowledged writes that the final reads (made by `final_process`
/// after healing, once every client stopped) do not reflect:
///
/// * a register whose final read returned `v`, written by an acknowledged
///   write or compare-and-set `X`, and an acknowledged write or
///   compare-and-set `W` invoked after `X` completed: `W` follows `X` in
///   every order, and no later write brings the unique `v` back, so `W` is
///   lost (a final read of nothing loses every acknowledged write);
/// * a counter whose final count is below the increments acknowledged;
/// * a list whose final read lacks an acknowledged append.
///
/// A value written by an operation of unknown outcome proves nothing here
/// (it may have taken effect at any time); the linearizability checker
/// judges those.
pub fn writes_lost(
    history: &History,
    lists: &[ListOperation],
    final_process: ProcessId,
) -> Result<WritesLost, HistoryError> {
    let completions = history.completions()?;
    let mut lost = WritesLost::default();
    // The last answered final read of each register and counter.
    let mut final_reads: BTreeMap<Key, &Completion> = BTreeMap::new();
    for completion in completions.iter().filter(|c| c.process == final_process) {
        if let (Operation::Read { key } | Operation::CounterRead { key }, Outcome::Ok { .. }) =
            (completion.operation, completion.outcome)
        {
            final_reads.insert(key, completion);
        }
    }
    // Acknowledged register writes by key: (value, invoke, complete).
    let mut writes: HashMap<Key, Vec<(u64, u64, u64)>> = HashMap::new();
    let mut increments: HashMap<Key, u64> = HashMap::new();
    for completion in &completions {
        let (Outcome::Ok { .. }, Some(complete_ns)) = (completion.outcome, completion.complete_ns) else {
            continue;
        };
        match completion.operation {
            Operation::Write { key, value } | Operation::Cas { key, new: value, .. } => writes
                .entry(key)
                .or_default()
                .push((value, completion.invoke_ns, complete_ns)),
            Operation::Increment { key } => *increments.entry(key).or_default() += 1,
            _ => {}
        }
    }
    for (&key, read) in &final_reads {
        let Outcome::Ok { value } = read.outcome else { continue };
        match read.operation {
            Operation::Read { .. } => {
                let key_writes = writes.get(&key).map_or(&[][..], Vec::as_slice);
                // Writes that must follow the final value's write.
                let after_ns = match value {
                    None => Some(0),
                    Some(value) => key_writes
                        .iter()
                        .find(|&&(written, _, _)| written == value)
                        .map(|&(_, _, complete_ns)| complete_ns),
                };
                if let Some(after_ns) = after_ns {
                    for &(written, invoke_ns, _) in key_writes {
                        if (value.is_none() || invoke_ns > after_ns) && invoke_ns < read.invoke_ns {
                            lost.registers.push((key, written));
                        }
                    }
                }
            }
            Operation::CounterRead { .. } => {
                let acknowledged = increments.get(&key).copied().unwrap_or(0);
                let count = value.unwrap_or(0);
                if count < acknowledged {
                    lost.counters.push((key, acknowledged - count));
                }
            }
            _ => {}
        }
    }
    let mut final_lists: BTreeMap<Key, &Vec<u64>> = BTreeMap::new();
    for operation in lists {
        if let ListOperation::Read {
            process,
            key,
            values: Some(values),
            ..
        } = operation
        {
            if *process == final_process {
                final_lists.insert(*key, values);
            }
        }
    }
    for operation in lists {
        if let ListOperation::Append {
            key,
            value,
            outcome: AppendOutcome::Ok,
            ..
        } = operation
        {
            if final_lists.get(key).is_some_and(|values| !values.contains(value)) {
                lost.lists.push((*key, *value));
            }
        }
    }
    Ok(lost)
}

/// The longest time between two acknowledged writes (register writes and
/// compare-and-sets, counter increments, list appends) of the clients
/// (every process but `final_process`), in ns: how long the cluster took
/// no write at its worst. 0 with fewer than two.
pub fn longest_without_acknowledged_write_ns(
    completions: &[Completion],
    lists: &[ListOperation],
    final_process: ProcessId,
) -> u64 {
    let mut times: Vec<u64> = completions
        .iter()
        .filter(|c| c.process != final_process)
        .filter(|c| {
            matches!(
                c.operation,
                Operation::Write { .. } | Operation::Cas { .. } | Operation::Increment { .. }
            ) && matches!(c.outcome, Outcome::Ok { .. })
        })
        .filter_map(|c| c.complete_ns)
        .collect();
    times.extend(lists.iter().filter_map(|operation| match operation {
        ListOperation::Append {
            process,
            complete_ns,
            outcome: AppendOutcome::Ok,
            ..
        } if *process != final_process => Some(*complete_ns),
        _ => None,
    }));
    times.sort_unstable();
    times.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(0)
}

/// One run of the campaign.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRun {
    /// Its fault kind (its nemesis's only one).
    pub kind: FaultKind,
    /// Its number among the kind's runs, from 1.
    pub run: usize,
    /// Its seed.
    pub seed: u64,
    /// Its cluster size.
    pub nodes: usize,
    /// Whether it passed: checked with no violation and no write lost.
    pub passed: bool,
    /// Why it could not be carried out, if it could not.
    pub error: Option<String>,
    /// Its figures (all 0 if it could not be carried out).
    pub figures: RunFigures,
    /// Seconds it took, checking included.
    pub seconds: f64,
    /// Its folder, if kept (failing runs, and passed runs with a gap in
    /// acknowledged writes over [`SLOW_RUN_KEPT_MS`]).
    pub kept: Option<PathBuf>,
    /// The command that re-runs it.
    pub rerun: String,
}

/// The figures of one kind (or of all), added up over its runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindRow {
    /// The kind (`None`: the total over every kind).
    pub kind: Option<FaultKind>,
    /// Runs.
    pub runs: usize,
    /// Runs on 3 nodes.
    pub runs_3_nodes: usize,
    /// Runs on 5 nodes.
    pub runs_5_nodes: usize,
    /// Runs that failed (a violation, a write lost, or not carried out).
    pub failed: usize,
    /// Runs that could not be carried out.
    pub errors: usize,
    /// Register operations checked.
    pub register_operations: usize,
    /// Counter operations checked.
    pub counter_operations: usize,
    /// List operations checked.
    pub list_operations: usize,
    /// Unknown outcomes.
    pub unknown: usize,
    /// Faults injected.
    pub faults: usize,
    /// Violations.
    pub violations: usize,
    /// Keys too large to check or skipped.
    pub unchecked_keys: usize,
    /// Acknowledged writes lost.
    pub writes_lost: usize,
    /// Leader faults after which a write was acknowledged.
    pub recoveries: usize,
    /// Their recovery time's median, ms (nearest rank).
    pub recovery_p50_ms: Option<u64>,
    /// Their recovery time's 99th percentile, ms (nearest rank).
    pub recovery_p99_ms: Option<u64>,
    /// Leader faults after which no write was acknowledged.
    pub not_recovered: usize,
    /// The longest time with no write acknowledged, ms, over the runs.
    pub longest_unavailable_ms: u64,
}

/// The `p`-th percentile of sorted `values` (nearest rank), if any.
pub fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

impl KindRow {
    /// Adds up `runs` as the row of `kind`.
    pub fn of<'a>(kind: Option<FaultKind>, runs: impl IntoIterator<Item = &'a CampaignRun>) -> KindRow {
        let mut row = KindRow {
            kind,
            ..KindRow::default()
        };
        let mut recoveries = Vec::new();
        for run in runs {
            let f = &run.figures;
            row.runs += 1;
            row.runs_3_nodes += usize::from(run.nodes == 3);
            row.runs_5_nodes += usize::from(run.nodes == 5);
            row.failed += usize::from(!run.passed);
            row.errors += usize::from(run.error.is_some());
            row.register_operations += f.register_operations;
            row.counter_operations += f.counter_operations;
            row.list_operations += f.list_operations;
            row.unknown += f.unknown;
            row.faults += f.faults;
            row.violations += f.violations;
            row.unchecked_keys += f.unchecked_keys;
            row.writes_lost += f.writes_lost;
            row.not_recovered += f.not_recovered;
            row.longest_unavailable_ms = row.longest_unavailable_ms.max(f.longest_unavailable_ms);
            recoveries.extend_from_slice(&f.recoveries_ms);
        }
        recoveries.sort_unstable();
        row.recoveries = recoveries.len();
        row.recovery_p50_ms = percentile(&recoveries, 50);
        row.recovery_p99_ms = percentile(&recoveries, 99);
        row
    }
}

/// A whole campaign's result.
#[derive(Debug, Clone, Serialize)]
pub struct Campaign {
    /// The campaign's seed.
    pub seed: u64,
    /// Seconds each run's clients and nemesis ran.
    pub duration_s: u64,
    /// Every run, in the order they ran.
    pub runs: Vec<CampaignRun>,
    /// One row per kind, in the order asked for.
    pub rows: Vec<KindRow>,
    /// Every run added up.
    pub total: KindRow,
}

impl Campaign {
    /// Adds up `runs` per kind (in `kinds`' order) and in all.
    pub fn of(seed: u64, duration_s: u64, kinds: &[FaultKind], runs: Vec<CampaignRun>) -> Campaign {
        let rows = kinds
            .iter()
            .map(|&kind| KindRow::of(Some(kind), runs.iter().filter(|r| r.kind == kind)))
            .collect();
        let total = KindRow::of(None, &runs);
        Campaign {
            seed,
            duration_s,
            runs,
            rows,
            total,
        }
    }

    /// Runs that failed.
    pub fn failed(&self) -> Vec<&CampaignRun> {
        self.runs.iter().filter(|r| !r.passed).collect()
    }

    /// The table (Markdown), then one line per failing run.
    pub fn table(&self) -> String {
        let mut text = String::from(
            "| fault kind | runs (3 / 5 nodes) | failed | operations checked: registers / counters / lists | unknown | faults | violations | acknowledged writes lost | recovery p50 / p99 (leader faults) | longest without a write acknowledged |\n\
             |---|---|---:|---|---:|---:|---:|---:|---|---:|\n",
        );
        for row in self.rows.iter().chain(std::iter::once(&self.total)) {
            let name = row.kind.map_or("**all**".to_string(), |k| format!("`{}`", k.name()));
            let recovery = match (row.recovery_p50_ms, row.recovery_p99_ms) {
                (Some(p50), Some(p99)) => format!("{p50} / {p99} ms ({})", row.recoveries),
                _ => "—".to_string(),
            };
            let recovery = if row.not_recovered > 0 {
                format!("{recovery}; {} without", row.not_recovered)
            } else {
                recovery
            };
            let failed = if row.errors > 0 {
                format!("{} ({} not carried out)", row.failed, row.errors)
            } else {
                row.failed.to_string()
            };
            let violations = if row.unchecked_keys > 0 {
                format!("{} ({} keys unchecked)", row.violations, row.unchecked_keys)
            } else {
                row.violations.to_string()
            };
            text.push_str(&format!(
                "| {name} | {} ({} / {}) | {failed} | {} / {} / {} | {} | {} | {violations} | {} | {recovery} | {} ms |\n",
                row.runs,
                row.runs_3_nodes,
                row.runs_5_nodes,
                row.register_operations,
                row.counter_operations,
                row.list_operations,
                row.unknown,
                row.faults,
                row.writes_lost,
                row.longest_unavailable_ms,
            ));
        }
        for run in self.failed() {
            text.push_str(&format!(
                "FAILED {} run {} (seed {}, {} nodes): {}; kept in {}; re-run: {}\n",
                run.kind.name(),
                run.run,
                run.seed,
                run.nodes,
                run.error.as_deref().unwrap_or("violations or writes lost"),
                run.kept.as_ref().map_or("?".into(), |p| p.display().to_string()),
                run.rerun
            ));
        }
        text
    }
}

/// The seed of run `run` (from 1) of `kind` in a campaign seeded `seed`.
pub fn run_seed(seed: u64, kind: FaultKind, run: usize) -> u64 {
    let kind_index = FaultKind::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u64;
    let mut rng = Rng::new(
        seed ^ (kind_index + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    rng.next_u64() >> 1
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Runs the campaign; each run is reported on stderr as it ends and
/// appended to `campaign.jsonl`. `Err` only if the output folder cannot be
/// written or the options make no campaign.
pub fn campaign(options: &CampaignOptions) -> Result<Campaign, RunError> {
    if options.kinds.is_empty() || options.runs_per_kind == 0 || options.node_counts.is_empty() {
        return Err(RunError::Setup(
            "a campaign needs at least one fault kind, one run per kind and one cluster size".into(),
        ));
    }
    let out = &options.base.out_dir;
    std::fs::create_dir_all(out).map_err(io_error(format!("creating {}", out.display())))?;
    let log_path = out.join("campaign.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_error(format!("opening {}", log_path.display())))?;
    let started = Instant::now();
    let mut runs = Vec::new();
    'rounds: for number in 1..=options.runs_per_kind {
        for &kind in &options.kinds {
            if options.time_budget.is_some_and(|budget| started.elapsed() >= budget)
                || crate::nemesis::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
            {
                break 'rounds;
            }
            let seed = run_seed(options.base.seed, kind, number);
            let nodes = options.node_counts[(number - 1) % options.node_counts.len()];
            let mut round = options.base.clone();
            round.seed = seed;
            round.nodes = nodes;
            round.nemesis = vec![kind];
            round.out_dir = out
                .join(kind.name())
                .join(format!("run-{number}-seed-{seed}-nodes-{nodes}"));
            let rerun = rerun_command(&round);
            // Its nodes' data and logs are removed below unless kept.
            round.keep_data = true;
            let run_started = Instant::now();
            let (passed, error, figures) = match run(&round) {
                Ok(report) => match RunFigures::of(&report, round.clients as ProcessId) {
                    Ok(figures) => (report.passed() && figures.writes_lost == 0, None, figures),
                    Err(e) => (false, Some(format!("history: {e}")), RunFigures::default()),
                },
                Err(error) => (false, Some(error.to_string()), RunFigures::default()),
            };
            let slow = passed && figures.longest_unavailable_ms > SLOW_RUN_KEPT_MS;
            let kept = if passed && !slow {
                let _ = std::fs::remove_dir_all(&round.out_dir);
                // The kind's folder too, if no failing run is in it.
                let _ = std::fs::remove_dir(out.join(kind.name()));
                None
            } else {
                let _ = std::fs::create_dir_all(&round.out_dir);
                let _ = std::fs::write(round.out_dir.join("RERUN"), format!("{rerun}\n"));
                Some(round.out_dir.clone())
            };
            let result = CampaignRun {
                kind,
                run: number,
                seed,
                nodes,
                passed,
                error,
                figures,
                seconds: run_started.elapsed().as_secs_f64(),
                kept,
                rerun,
            };
            let line = serde_json::to_string(&result).map_err(|e| RunError::Setup(e.to_string()))?;
            writeln!(log, "{line}").map_err(io_error(format!("writing {}", log_path.display())))?;
            eprintln!(
                "coraft-chaos: campaign {} run {number} (seed {seed}, {nodes} nodes, {:.0} s): {}",
                kind.name(),
                result.seconds,
                if passed {
                    format!(
                        "passed ({} operations, {} faults){}",
                        result.figures.register_operations
                            + result.figures.counter_operations
                            + result.figures.list_operations,
                        result.figures.faults,
                        if slow {
                            format!(
                                "; no write acknowledged for {} ms: kept in {}",
                                result.figures.longest_unavailable_ms,
                                round.out_dir.display()
                            )
                        } else {
                            String::new()
                        }
                    )
                } else {
                    format!(
                        "FAILED{}; kept in {}; re-run: {}",
                        result.error.as_ref().map_or(String::new(), |e| format!(" ({e})")),
                        round.out_dir.display(),
                        result.rerun
                    )
                }
            );
            runs.push(result);
        }
    }
    let campaign = Campaign::of(options.base.seed, options.base.duration.as_secs(), &options.kinds, runs);
    let table = campaign.table();
    std::fs::write(out.join("campaign.txt"), &table)
        .map_err(io_error(format!("writing {}/campaign.txt", out.display())))?;
    let json = serde_json::to_string_pretty(&campaign).map_err(|e| RunError::Setup(e.to_string()))?;
    std::fs::write(out.join("campaign.json"), json)
        .map_err(io_error(format!("writing {}/campaign.json", out.display())))?;
    Ok(campaign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_append(process: ProcessId, key: Key, value: u64, complete_ns: u64) -> ListOperation {
        ListOperation::Append {
            process,
            key,
            value,
            invoke_ns: complete_ns - 1,
            complete_ns,
            outcome: AppendOutcome::Ok,
        }
    }

    fn list_read(process: ProcessId, key: Key, at: u64, values: &[u64]) -> ListOperation {
        ListOperation::Read {
            process,
            key,
            invoke_ns: at,
            complete_ns: at + 1,
            values: Some(values.to_vec()),
        }
    }

    /// Clients 0 and 1, final reads as process 9.
    fn history(final_value: Option<u64>, counter: u64) -> History {
        let mut history = History::new();
        // Write 1 acknowledged, then write 2 acknowledged strictly after it,
        // and an unknown write 3 overlapping both.
        history.invoke(0, 10, Operation::Write { key: 1, value: 1 });
        history.invoke(1, 11, Operation::Write { key: 1, value: 3 });
        history.complete(0, 20, Outcome::Ok { value: None });
        history.invoke(0, 30, Operation::Write { key: 1, value: 2 });
        history.complete(0, 40, Outcome::Ok { value: None });
        history.complete(1, 45, Outcome::Unknown);
        history.invoke(0, 50, Operation::Increment { key: 7 });
        history.complete(0, 60, Outcome::Ok { value: Some(1) });
        history.invoke(0, 61, Operation::Increment { key: 7 });
        history.complete(0, 70, Outcome::Ok { value: Some(2) });
        history.invoke(9, 100, Operation::Read { key: 1 });
        history.complete(9, 101, Outcome::Ok { value: final_value });
        history.invoke(9, 102, Operation::CounterRead { key: 7 });
        history.complete(9, 103, Outcome::Ok { value: Some(counter) });
        history
    }

    #[test]
    fn writes_lost_are_read_off_the_converged_state() {
        let lists = [
            list_append(0, 5, 100, 10),
            list_append(1, 5, 101, 12),
            list_read(9, 5, 200, &[100, 101]),
        ];
        // The last acknowledged write's value, or the unknown one (which may
        // have come last): nothing lost.
        for value in [2, 3] {
            assert_eq!(writes_lost(&history(Some(value), 2), &lists, 9).unwrap().total(), 0);
        }
        // The register back at 1: write 2 (invoked after 1 completed) lost.
        let lost = writes_lost(&history(Some(1), 2), &lists, 9).unwrap();
        assert_eq!(lost.registers, vec![(1, 2)]);
        // Nothing there at all: both acknowledged writes lost.
        let lost = writes_lost(&history(None, 2), &lists, 9).unwrap();
        assert_eq!(lost.registers, vec![(1, 1), (1, 2)]);
        // The counter one short, and a list missing an acknowledged append.
        let lists = [
            list_append(0, 5, 100, 10),
            list_append(1, 5, 101, 12),
            list_read(9, 5, 200, &[101]),
        ];
        let lost = writes_lost(&history(Some(2), 1), &lists, 9).unwrap();
        assert_eq!(lost.counters, vec![(7, 1)]);
        assert_eq!(lost.lists, vec![(5, 100)]);
        assert_eq!(lost.total(), 2);
    }

    #[test]
    fn the_longest_gap_between_acknowledged_writes_is_the_clients_worst_unavailability() {
        let history = history(Some(2), 2);
        let completions = history.completions().unwrap();
        // Acknowledged writes complete at 20, 40, 60, 70; an append at 150;
        // the final reads (process 9) do not count.
        let lists = [list_append(0, 5, 100, 150), list_append(9, 5, 101, 1_000)];
        assert_eq!(longest_without_acknowledged_write_ns(&completions, &lists, 9), 80);
        assert_eq!(longest_without_acknowledged_write_ns(&completions, &[], 9), 20);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let values: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&values, 50), Some(100));
        assert_eq!(percentile(&values, 99), Some(198));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn run_seeds_differ_by_kind_and_run_and_repeat() {
        let a = run_seed(5, FaultKind::KillLeader, 1);
        assert_eq!(a, run_seed(5, FaultKind::KillLeader, 1));
        assert_ne!(a, run_seed(5, FaultKind::KillLeader, 2));
        assert_ne!(a, run_seed(5, FaultKind::StopLeader, 1));
        assert_ne!(a, run_seed(6, FaultKind::KillLeader, 1));
    }
}
