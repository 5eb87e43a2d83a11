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

use coraft::raft::PlantedBug;
use coraft::sim::{run, CheckerKind, ClockFaults, SimOptions, SimOutcome, Toggle};

struct Args {
    seeds: u64,
    first_seed: u64,
    nodes: u64,
    json: bool,
    threads: u64,
    verbose: bool,
    planted_bug: PlantedBug,
    pre_vote: Toggle,
    check_quorum: Toggle,
    clock_faults: ClockFaults,
}

impl Args {
    /// The flags that change a run, as given (for the replay command).
    fn run_flags(&self) -> String {
        let toggle = |t: Toggle| match t {
            Toggle::On => "on",
            Toggle::Off => "off",
            Toggle::PerSeed => "per-seed",
        };
        let clocks = match self.clock_faults {
            ClockFaults::None => "none",
            ClockFaults::WithinMargin => "within-margin",
            ClockFaults::BeyondMargin => "beyond-margin",
        };
        format!(
            "--nodes {} --pre-vote {} --check-quorum {} --clock-faults {clocks}",
            self.nodes,
            toggle(self.pre_vote),
            toggle(self.check_quorum)
        )
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        first_seed: 0,
        nodes: 3,
        json: false,
        threads: 0,
        verbose: false,
        planted_bug: PlantedBug::None,
        pre_vote: Toggle::On,
        check_quorum: Toggle::On,
        clock_faults: ClockFaults::WithinMargin,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let raw = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            raw.parse().map_err(|_| format!("{name}: `{raw}` is not a number"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?,
            "--first-seed" => args.first_seed = value("--first-seed")?,
            "--nodes" => args.nodes = value("--nodes")?,
            "--threads" => args.threads = value("--threads")?,
            "--json" => args.json = true,
            "--pre-vote" | "--check-quorum" => {
                let raw = it.next().unwrap_or_default();
                let toggle =
                    Toggle::parse(&raw).ok_or_else(|| format!("{flag}: `{raw}` is not on, off or per-seed"))?;
                if flag == "--pre-vote" {
                    args.pre_vote = toggle;
                } else {
                    args.check_quorum = toggle;
                }
            }
            "--clock-faults" => {
                args.clock_faults = match it.next().as_deref() {
                    Some("none") => ClockFaults::None,
                    Some("within-margin") => ClockFaults::WithinMargin,
                    Some("beyond-margin") => ClockFaults::BeyondMargin,
                    other => {
                        return Err(format!(
                            "--clock-faults: {other:?} is not none, within-margin or beyond-margin"
                        ))
                    }
                }
            }
            "--verbose" => args.verbose = true,
            // Hidden: break a rule on purpose to see the checkers catch it.
            "--planted-bug" => {
                args.planted_bug = match it.next().as_deref() {
                    Some("commit-previous-term") => PlantedBug::CommitPreviousTermByCounting,
                    Some("vote-without-log-check") => PlantedBug::VoteWithoutLogCheck,
                    Some("ack-before-persist") => PlantedBug::AcknowledgeBeforePersist,
                    Some("read-before-commit-in-term") => PlantedBug::ReadBeforeCommitInTerm,
                    Some("vote-before-persist") => PlantedBug::VoteBeforePersist,
                    Some("double-vote") => PlantedBug::DoubleVote,
                    other => return Err(format!("unknown planted bug {other:?}")),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: coraft-sim --seeds N [--first-seed S] [--nodes 3|5] [--json] [--threads T] [--verbose]\n\
                     \x20      [--pre-vote on|off|per-seed] [--check-quorum on|off|per-seed]\n\
                     \x20      [--clock-faults none|within-margin|beyond-margin]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
        }
    }
    if args.nodes != 3 && args.nodes != 5 {
        return Err(format!("--nodes must be 3 or 5, not {}", args.nodes));
    }
    if args.threads == 0 {
        args.threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    }
    Ok(args)
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
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("coraft-sim: {error}");
            std::process::exit(2);
        }
    };
    // Panics become per-seed violations; keep their text off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (next, done, totals) = (next.clone(), done.clone(), totals.clone());
            let (seeds, first_seed, nodes, planted_bug) = (args.seeds, args.first_seed, args.nodes, args.planted_bug);
            let (pre_vote, check_quorum, clock_faults) = (args.pre_vote, args.check_quorum, args.clock_faults);
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
