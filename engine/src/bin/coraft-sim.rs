//! `coraft-sim`: runs seeded simulations of whole clusters and checks Raft's
//! invariants. A failure prints its seed and the command that replays it.
//!
//! ```text
//! coraft-sim --seeds N [--first-seed S] [--nodes 3|5] [--json] [--threads T]
//!            [--pre-vote on|off|per-seed] [--check-quorum on|off|per-seed]
//!            [--clock-faults none|within-margin|beyond-margin]
//! ```

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};
use coraft::raft::PlantedBug;
use coraft::sim::{run, CheckerKind, ClockFaults, SimOptions, SimOutcome, Toggle};

/// Runs seeded simulations of whole clusters (dropped, delayed, duplicated
/// and reordered messages, partitions, crashes, clock faults) and checks
/// Raft's invariants after every step. A failure prints its seed and the
/// command that replays it; the exit status is 1 when any seed failed.
#[derive(Parser, Debug)]
#[command(name = "coraft-sim", version)]
struct Args {
    /// How many seeds (simulated runs) to execute.
    #[arg(long, value_name = "N", default_value_t = 100)]
    seeds: u64,
    /// The first seed; runs use first-seed .. first-seed + seeds.
    #[arg(long, value_name = "S", default_value_t = 0)]
    first_seed: u64,
    /// Cluster size: 3 or 5 nodes.
    #[arg(long, value_name = "3|5", default_value_t = 3,
          value_parser = clap::builder::PossibleValuesParser::new(["3", "5"]).map(|n| n.parse::<u64>().expect("3 or 5")))]
    nodes: u64,
    /// Also print one JSON line with the totals (for CI).
    #[arg(long)]
    json: bool,
    /// Worker threads running seeds in parallel. Default (0): one per CPU.
    #[arg(long, value_name = "T", default_value_t = 0)]
    threads: u64,
    /// With --seeds 1, print the failure's full outcome.
    #[arg(long)]
    verbose: bool,
    /// Break a rule on purpose to see the checkers catch it.
    #[arg(long, value_enum, value_name = "BUG", default_value_t = Bug::None, hide = true)]
    planted_bug: Bug,
    /// Pre-vote before campaigning: on, off, or decided per seed.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ToggleArg::On)]
    pre_vote: ToggleArg,
    /// Leaders step down without a quorum's contact: on, off, or per seed.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ToggleArg::On)]
    check_quorum: ToggleArg,
    /// Clock faults: none, skew and late ticks within the lease's drift
    /// margin, or beyond it (leases become unsafe).
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = ClockFaultsArg::WithinMargin)]
    clock_faults: ClockFaultsArg,
}

/// `--pre-vote` and `--check-quorum` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum ToggleArg {
    /// Always on.
    On,
    /// Always off.
    Off,
    /// Each seed draws on or off.
    PerSeed,
}

impl ToggleArg {
    fn toggle(self) -> Toggle {
        match self {
            ToggleArg::On => Toggle::On,
            ToggleArg::Off => Toggle::Off,
            ToggleArg::PerSeed => Toggle::PerSeed,
        }
    }
}

/// `--clock-faults` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum ClockFaultsArg {
    /// Every clock on time.
    None,
    /// Skew and late bursts within the drift margin.
    WithinMargin,
    /// Skew and late bursts beyond it.
    BeyondMargin,
}

/// `--planted-bug` values (hidden).
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Bug {
    None,
    CommitPreviousTerm,
    VoteWithoutLogCheck,
    AckBeforePersist,
    ReadBeforeCommitInTerm,
    VoteBeforePersist,
    DoubleVote,
}

impl Args {
    fn planted_bug(&self) -> PlantedBug {
        match self.planted_bug {
            Bug::None => PlantedBug::None,
            Bug::CommitPreviousTerm => PlantedBug::CommitPreviousTermByCounting,
            Bug::VoteWithoutLogCheck => PlantedBug::VoteWithoutLogCheck,
            Bug::AckBeforePersist => PlantedBug::AcknowledgeBeforePersist,
            Bug::ReadBeforeCommitInTerm => PlantedBug::ReadBeforeCommitInTerm,
            Bug::VoteBeforePersist => PlantedBug::VoteBeforePersist,
            Bug::DoubleVote => PlantedBug::DoubleVote,
        }
    }

    fn clock_faults(&self) -> ClockFaults {
        match self.clock_faults {
            ClockFaultsArg::None => ClockFaults::None,
            ClockFaultsArg::WithinMargin => ClockFaults::WithinMargin,
            ClockFaultsArg::BeyondMargin => ClockFaults::BeyondMargin,
        }
    }

    /// The flags that change a run, as given (for the replay command).
    fn run_flags(&self) -> String {
        format!(
            "--nodes {} --pre-vote {} --check-quorum {} --clock-faults {}",
            self.nodes,
            value_name(self.pre_vote),
            value_name(self.check_quorum),
            value_name(self.clock_faults)
        )
    }
}

/// A value as it is written on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn parse_args() -> Args {
    let mut args = Args::parse();
    if args.threads == 0 {
        args.threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    }
    args
}

#[derive(Default)]
struct Totals {
    violations: u64,
    liveness_failures: u64,
    steps: u64,
    writes: u64,
    reads: u64,
    crashes: u64,
    configuration_changes: u64,
    snapshots: u64,
    quiesced_core_ticks: u64,
    lease_reads: u64,
    /// Seeds whose first violation each checker found.
    failing_seeds_by_checker: std::collections::BTreeMap<CheckerKind, u64>,
    first_failing_seed: Option<u64>,
    failures: Vec<SimOutcome>,
}

fn main() {
    let args = parse_args();
    // Panics become per-seed violations; keep their text off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (next, done, totals) = (next.clone(), done.clone(), totals.clone());
            let (seeds, first_seed, nodes, planted_bug) = (args.seeds, args.first_seed, args.nodes, args.planted_bug());
            let (pre_vote, check_quorum, clock_faults) =
                (args.pre_vote.toggle(), args.check_quorum.toggle(), args.clock_faults());
            std::thread::spawn(move || loop {
                let offset = next.fetch_add(1, Ordering::Relaxed);
                if offset >= seeds {
                    return;
                }
                let mut options = SimOptions::new(first_seed + offset, nodes);
                options.planted_bug = planted_bug;
                options.pre_vote = pre_vote;
                options.check_quorum = check_quorum;
                options.clock_faults = clock_faults;
                let outcome = run(options);
                let mut t = totals.lock().expect("no worker panics while holding the lock");
                t.steps += outcome.steps;
                t.writes += outcome.writes_acknowledged;
                t.reads += outcome.reads_confirmed;
                t.crashes += outcome.crashes;
                t.configuration_changes += outcome.configuration_changes;
                t.snapshots += outcome.snapshots_installed;
                t.quiesced_core_ticks += outcome.quiesced_core_ticks;
                t.lease_reads += outcome.lease_reads;
                if let Some(kind) = outcome.first_checker() {
                    *t.failing_seeds_by_checker.entry(kind).or_default() += 1;
                }
                if !outcome.passed() {
                    t.violations += outcome.violations.len() as u64;
                    t.liveness_failures += u64::from(outcome.liveness_failure.is_some());
                    t.first_failing_seed = Some(t.first_failing_seed.map_or(outcome.seed, |s| s.min(outcome.seed)));
                    t.failures.push(outcome);
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    let mut last_report = Instant::now();
    while done.load(Ordering::Relaxed) < args.seeds && workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let interval_s = if std::io::stderr().is_terminal() { 1 } else { 10 };
        if last_report.elapsed().as_secs() >= interval_s {
            last_report = Instant::now();
            let t = totals.lock().expect("lock");
            let lead = if std::io::stderr().is_terminal() { "\r" } else { "" };
            let tail = if std::io::stderr().is_terminal() { "   " } else { "\n" };
            eprint!(
                "{lead}{}/{} seeds, {} violations, {} liveness failures, {:.0} s{tail}",
                done.load(Ordering::Relaxed),
                args.seeds,
                t.violations,
                t.liveness_failures,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    for worker in workers {
        if worker.join().is_err() {
            eprintln!("\ncoraft-sim: a simulation panicked (see above for the seed's message)");
            std::process::exit(101);
        }
    }
    let t = totals.lock().expect("lock");
    let seconds = started.elapsed().as_secs_f64();
    eprintln!();
    let mut failures: Vec<&SimOutcome> = t.failures.iter().collect();
    failures.sort_by_key(|f| f.seed);
    for failure in failures.iter().take(10) {
        eprintln!("seed {} FAILED:", failure.seed);
        for violation in &failure.violations {
            eprintln!("  violation: {violation}");
        }
        if let Some(liveness) = &failure.liveness_failure {
            eprintln!("  liveness: {liveness}");
        }
        eprintln!(
            "  replay: cargo run --release -p coraft --bin coraft-sim -- --seeds 1 --first-seed {} {}",
            failure.seed,
            args.run_flags()
        );
    }
    println!(
        "{} seeds ({} nodes) in {:.1} s: {} violations, {} liveness failures; {} steps, {} writes acknowledged, \
         {} reads confirmed ({} from a lease), {} crashes, {} configuration entries, {} snapshots installed, \
         {} quiet core-ticks",
        args.seeds,
        args.nodes,
        seconds,
        t.violations,
        t.liveness_failures,
        t.steps,
        t.writes,
        t.reads,
        t.lease_reads,
        t.crashes,
        t.configuration_changes,
        t.snapshots,
        t.quiesced_core_ticks
    );
    for (kind, seeds) in &t.failing_seeds_by_checker {
        println!("  {seeds} seeds failed first on {kind}");
    }
    if args.verbose && args.seeds == 1 {
        println!("{:?}", t.failures.first());
    }
    if args.json {
        let first = t.first_failing_seed.map_or("null".to_string(), |s| s.to_string());
        println!(
            "{{\"seeds\":{},\"violations\":{},\"liveness_failures\":{},\"steps\":{},\"first_failing_seed\":{}}}",
            args.seeds, t.violations, t.liveness_failures, t.steps, first
        );
    }
    if t.violations > 0 || t.liveness_failures > 0 {
        std::process::exit(1);
    }
}
