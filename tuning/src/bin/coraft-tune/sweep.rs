//! `coraft-tune sweep`: measures candidate layouts on this machine with the
//! cluster benchmark and says whether the layout `suggest` gives is within
//! [`SUGGEST_TOLERANCE`] of the fastest, slower, or whether the runs cannot
//! tell.
//!
//! Each candidate is a number of shards per node, a set of CPUs and a
//! `spin_before_park_us`. One run is one `coraft-bench` process (the
//! embedded three-node cluster, real TCP and fdatasync'ed WALs) started
//! with `--shards N --spin-before-park-us US --shard-cores CPUS --no-floor
//! --json` and with its CPU affinity set to the candidate's CPUs: each
//! shard's executor (of every node) is pinned to one CPU of the set, shard
//! `s` to the `s`-th (cycling), as a node started from the layout would
//! pin it, and the set bounds every other thread (the client drivers, the
//! nodes' helpers).
//!
//! Runs are scheduled in rounds: each round runs every candidate once, in
//! a shuffled order (seeded; `--seed` repeats it), so that a burst of
//! other work on a shared machine lands on a different layout each time.
//! The verdict ([`verdict`]) compares suggest's layout with each other
//! layout by the ratio of their figures *within a round*, not by medians of
//! absolute figures, and says "undecided" rather than guess when the
//! ratios do not point one way often enough.

mod verdict;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use coraft_tuning::{format_cpu_list, parse_cpu_list, Topology};
use verdict::{judge, quantile, Comparison, Verdict};

/// How far below the fastest candidate `suggest`'s layout may measure and
/// still count as agreeing with the sweep: 5%.
pub const SUGGEST_TOLERANCE: f64 = 0.05;
/// The chance of a wrong decided verdict (pass or fail) the sweep accepts:
/// it decides at 95% confidence.
const VERDICT_ALPHA: f64 = 0.05;
/// Exit status when the runs cannot tell (0: within, 1: slower or nothing
/// measured, 2: a bad command line).
const EXIT_UNDECIDED: u8 = 3;
/// Most candidates one sweep runs (shards x CPU sets x spins).
const CANDIDATES_MAX: usize = 64;
/// Most lines of a failed run's stderr printed.
const FAILED_RUN_LINES_MAX: usize = 5;
/// How much longer than its warm-up and measurement one coraft-bench run
/// may take (starting and stopping the cluster) before it is killed and
/// counted as failed: generous, past coraft-bench's own bounds on a stuck
/// node (120 s per step of the embedded cluster, 30 s per driver).
const RUN_TIMEOUT_MARGIN: Duration = Duration::from_secs(240);

/// The options of `coraft-tune sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The coraft-bench binary (build it with `cargo build --profile fast
    /// -p coraft-bench`). Default: coraft-bench beside this coraft-tune.
    #[arg(long, value_name = "PATH")]
    bench: Option<PathBuf>,
    /// Shards per node to try, separated by commas. Default: 1 up to the
    /// usable CPUs, and the count `suggest` gives.
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: Vec<u64>,
    /// A set of CPUs to run the cluster on, as a cpulist (`0-1`, `0,2`);
    /// repeat the option for several sets. Default: every usable CPU, then
    /// each usable CPU alone, and the CPUs `suggest` gives.
    #[arg(long, value_name = "CPULIST", value_parser = parse_cpu_list)]
    cores: Vec<Vec<usize>>,
    /// Spins before parking (spin_before_park_us) to try, in microseconds,
    /// separated by commas.
    #[arg(long, value_name = "US,...", value_delimiter = ',', default_values_t = [0u64, 100],
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    spin_us: Vec<u64>,
    /// Seconds each run measures (coraft-bench --duration).
    #[arg(long, value_name = "S", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds each run warms up first (coraft-bench --warmup).
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Closed-loop clients (coraft-bench --clients).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    clients: u64,
    /// Raft groups (coraft-bench --groups); group g lives on shard
    /// g % shards, so it should be a multiple of every shard count tried.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    groups: u64,
    /// Rounds: each runs every candidate once, in a shuffled order. A
    /// verdict needs at least 5 rounds to pass and more to fail (see
    /// docs/tuning.md).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100))]
    repeats: u64,
    /// Seed of the shuffled order of each round. Default: from the clock
    /// (printed, so an order can be repeated).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the candidates and the command of each run; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON line per candidate and one for the verdict instead of
    /// the table.
    #[arg(long)]
    json: bool,
}

/// One layout to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    shards: u64,
    cpus: Vec<usize>,
    spin_us: u64,
}

impl Candidate {
    fn label(&self) -> String {
        format!(
            "shards {}, CPUs {}, spin {} µs",
            self.shards,
            format_cpu_list(&self.cpus),
            self.spin_us
        )
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    ops_per_s: f64,
    p99_us: f64,
    /// CPU the whole benchmark process used, in cores (its nodes and its
    /// client drivers).
    cpu_cores: f64,
}

/// A command line the user gave that cannot be swept: exit status 2.
fn refuse(message: String) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try 'coraft-tune sweep --help'.");
    ExitCode::from(2)
}

/// Runs the sweep.
pub fn sweep(args: SweepArgs) -> ExitCode {
    let topology = Topology::detect();
    let allowed = topology.allowed_cpus();
    for set in &args.cores {
        if set.is_empty() {
            return refuse("--cores: an empty CPU list".to_owned());
        }
        if let Some(cpu) = set.iter().find(|cpu| !allowed.contains(cpu)) {
            return refuse(format!(
                "--cores {}: CPU {cpu} is not one this process may use (usable: {})",
                format_cpu_list(set),
                format_cpu_list(&allowed)
            ));
        }
    }
    let suggestion = topology.suggest(None);
    let suggested = Candidate {
        shards: suggestion.shard_count as u64,
        cpus: suggestion.cores.clone().map_or_else(
            || allowed.clone(),
            |mut cores| {
                cores.sort_unstable();
                cores
            },
        ),
        spin_us: 0,
    };
    let candidates = candidates(&args, &allowed, &suggested);
    if candidates.len() > CANDIDATES_MAX {
        return refuse(format!(
            "{} candidates (--shards x --cores x --spin-us) exceed {CANDIDATES_MAX}: try fewer",
            candidates.len()
        ));
    }
    let bench = match &args.bench {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map(|exe| exe.with_file_name("coraft-bench"))
            .unwrap_or_else(|_| PathBuf::from("coraft-bench")),
    };
    if !args.dry_run && !bench.is_file() {
        eprintln!(
            "error: --bench: no coraft-bench at {}: build it with `cargo build --profile fast -p coraft-bench` \
             (and coraft-tune with the same profile), or pass --bench PATH",
            bench.display()
        );
        return ExitCode::FAILURE;
    }
    let runs = candidates.len() as u64 * args.repeats;
    let seconds = runs * (args.duration + args.warmup);
    eprintln!(
        "{} candidate(s) x {} repeat(s) = {runs} run(s) of coraft-bench, at least {seconds} s; suggest's layout: {}",
        candidates.len(),
        args.repeats,
        suggested.label()
    );
    if args.dry_run {
        for candidate in &candidates {
            println!(
                "{}: taskset -c {} {} {}",
                candidate.label(),
                format_cpu_list(&candidate.cpus),
                bench.display(),
                bench_args(&args, candidate).join(" ")
            );
        }
        return ExitCode::SUCCESS;
    }
    let seed = args.seed.unwrap_or_else(seed_from_clock);
    eprintln!("round order seed: {seed} (--seed {seed} repeats this order)");
    let mut order_rng = SplitMix64(seed);
    // measured[candidate][round]; `None` where the run failed.
    let mut measured: Vec<Vec<Option<Run>>> = vec![Vec::new(); candidates.len()];
    for round in 0..args.repeats {
        let mut this_round: Vec<Option<Run>> = vec![None; candidates.len()];
        let order = shuffled(candidates.len(), &mut order_rng);
        for (position, &index) in order.iter().enumerate() {
            let candidate = &candidates[index];
            let load = load_average_1min();
            eprint!(
                "round {}/{}, run {}/{} (load {}): {} ... ",
                round + 1,
                args.repeats,
                position + 1,
                order.len(),
                format_load(load),
                candidate.label()
            );
            let _ = std::io::stderr().flush();
            match run_bench(&bench, &args, candidate) {
                Ok(run) => {
                    eprintln!(
                        "{:.0} writes/s, p99 {:.0} µs, {:.2} cores",
                        run.ops_per_s, run.p99_us, run.cpu_cores
                    );
                    this_round[index] = Some(Run { measured: run, load });
                }
                Err(reason) => eprintln!("failed: {reason}"),
            }
        }
        for (runs, run) in measured.iter_mut().zip(this_round) {
            runs.push(run);
        }
    }
    report(&args, &candidates, &measured, &suggested)
}

/// Every combination of the shard counts, CPU sets and spins asked for,
/// with `suggested` among them.
fn candidates(args: &SweepArgs, allowed: &[usize], suggested: &Candidate) -> Vec<Candidate> {
    let mut shards = args.shards.clone();
    if shards.is_empty() {
        shards = (1..=allowed.len().max(1) as u64).collect();
        shards.push(suggested.shards);
    }
    let mut cpu_sets = args.cores.clone();
    if cpu_sets.is_empty() {
        cpu_sets.push(allowed.to_vec());
        if allowed.len() > 1 {
            cpu_sets.extend(allowed.iter().map(|&cpu| vec![cpu]));
        }
        cpu_sets.push(suggested.cpus.clone());
    }
    let mut candidates = Vec::new();
    for &shards in &shards {
        for cpus in &cpu_sets {
            for &spin_us in &args.spin_us {
                let candidate = Candidate {
                    shards,
                    cpus: cpus.clone(),
                    spin_us,
                };
                if !candidates.contains(&candidate) {
                    candidates.push(candidate);
                }
            }
        }
    }
    if !candidates.contains(suggested) {
        candidates.push(suggested.clone());
    }
    candidates
}

/// coraft-bench's arguments for one run of `candidate`.
fn bench_args(args: &SweepArgs, candidate: &Candidate) -> Vec<String> {
    [
        "--shards".to_owned(),
        candidate.shards.to_string(),
        "--spin-before-park-us".to_owned(),
        candidate.spin_us.to_string(),
        "--shard-cores".to_owned(),
        format_cpu_list(&candidate.cpus),
        "--groups".to_owned(),
        args.groups.to_string(),
        "--clients".to_owned(),
        args.clients.to_string(),
        "--duration".to_owned(),
        args.duration.to_string(),
        "--warmup".to_owned(),
        args.warmup.to_string(),
        "--no-floor".to_owned(),
        "--json".to_owned(),
    ]
    .to_vec()
}

/// Runs coraft-bench once for `candidate`, bound to its CPUs.
fn run_bench(bench: &Path, args: &SweepArgs, candidate: &Candidate) -> Result<Measured, String> {
    let mut command = Command::new(bench);
    command
        .args(bench_args(args, candidate))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpus = candidate.cpus.clone();
    // SAFETY: the closure runs in the forked child before exec and only
    // fills a local CPU set and makes one system call (both async-signal-safe).
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in &cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let timeout = Duration::from_secs(args.warmup + args.duration) + RUN_TIMEOUT_MARGIN;
    let output = output_within(&mut command, timeout).map_err(|e| format!("{}: {e}", bench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(FAILED_RUN_LINES_MAX).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "coraft-bench exited with {}: {}",
            output.status,
            tail.join(" | ")
        ));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .ok_or_else(|| "coraft-bench printed no JSON line".to_owned())?;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("coraft-bench's JSON line: {e}: {line}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("coraft-bench's JSON line has no number `{name}`: {line}"))
    };
    let ops_per_s = field("ops_per_s")?;
    Ok(Measured {
        ops_per_s,
        p99_us: field("p99_us")?,
        cpu_cores: field("cpu_us_per_op")? * ops_per_s / 1e6,
    })
}

/// Runs `command` to its end like `Command::output`, but kills it once it
/// has run for `timeout`: a run that hangs fails with the reason and the
/// sweep goes on.
fn output_within(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("starting: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = loop {
        match child.try_wait().map_err(|e| format!("waiting: {e}"))? {
            Some(status) => break status,
            None if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                let tail: Vec<&str> = stderr.lines().rev().take(FAILED_RUN_LINES_MAX).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "no result within {} s (warm-up + duration + RUN_TIMEOUT_MARGIN): killed; its last lines: {}",
                    timeout.as_secs(),
                    tail.join(" | ")
                ));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads `pipe` to its end on a thread of its own (so neither pipe of a
/// child fills while the other is read).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// One run's figures and the machine's 1-minute load average when it
/// started (`None` where /proc/loadavg could not be read).
#[derive(Debug, Clone, Copy)]
struct Run {
    measured: Measured,
    load: Option<f64>,
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn format_load(load: Option<f64>) -> String {
    load.map_or_else(|| "?".to_owned(), |load| format!("{load:.1}"))
}

/// A seed for the round order when `--seed` is not given.
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// SplitMix64: a small seeded generator for the round order (no need for
/// more: it only has to keep a layout from always running in one place of
/// a round).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `0..count` in a random order (Fisher-Yates).
fn shuffled(count: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// A candidate's figures over its measured runs: the median and quartiles
/// of writes/s, the median p99 (µs) and CPU (cores).
struct Summary {
    ops_per_s: f64,
    ops_quartiles: (f64, f64),
    p99_us: f64,
    cpu_cores: f64,
}

fn summary(runs: &[Option<Run>]) -> Option<Summary> {
    let runs: Vec<&Measured> = runs.iter().flatten().map(|run| &run.measured).collect();
    if runs.is_empty() {
        return None;
    }
    let ops: Vec<f64> = runs.iter().map(|r| r.ops_per_s).collect();
    let p99: Vec<f64> = runs.iter().map(|r| r.p99_us).collect();
    let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_cores).collect();
    Some(Summary {
        ops_per_s: quantile(&ops, 0.5),
        ops_quartiles: (quantile(&ops, 0.25), quantile(&ops, 0.75)),
        p99_us: quantile(&p99, 0.5),
        cpu_cores: quantile(&cpu, 0.5),
    })
}

/// Prints the table (or JSON lines), the paired comparisons and the
/// verdict; exit 0 when `suggested` is within the tolerance of every
/// other layout, 1 when it is slower than one by more (or nothing could
/// be measured), [`EXIT_UNDECIDED`] when the runs cannot tell.
fn report(
    args: &SweepArgs,
    candidates: &[Candidate],
    measured: &[Vec<Option<Run>>],
    suggested: &Candidate,
) -> ExitCode {
    let summaries: Vec<Option<Summary>> = measured.iter().map(|runs| summary(runs)).collect();
    let fastest = summaries
        .iter()
        .enumerate()
        .filter_map(|(index, summary)| summary.as_ref().map(|s| (index, s.ops_per_s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(index, _)| index);
    let suggested_index = candidates
        .iter()
        .position(|c| c == suggested)
        .expect("suggested is a candidate");
    let ops_by_round = |index: usize| -> Vec<Option<f64>> {
        measured[index]
            .iter()
            .map(|run| run.map(|run| run.measured.ops_per_s))
            .collect()
    };
    let others: Vec<usize> = (0..candidates.len()).filter(|&i| i != suggested_index).collect();
    let other_rounds: Vec<Vec<Option<f64>>> = others.iter().map(|&i| ops_by_round(i)).collect();
    let other_slices: Vec<&[Option<f64>]> = other_rounds.iter().map(Vec::as_slice).collect();
    let (comparisons, verdict) = judge(
        &ops_by_round(suggested_index),
        &other_slices,
        SUGGEST_TOLERANCE,
        VERDICT_ALPHA,
    );
    let loads: Vec<f64> = measured.iter().flatten().flatten().filter_map(|run| run.load).collect();
    let load_range = (
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );

    if args.json {
        print_json(candidates, measured, &summaries, &others, &comparisons);
    } else {
        print_table(candidates, measured, &summaries, fastest, suggested_index);
        print_comparisons(candidates, &others, &comparisons);
        if !loads.is_empty() {
            println!(
                "load average (1 min) at the start of the runs: {:.1}-{:.1} on {} CPU(s)",
                load_range.0,
                load_range.1,
                Topology::detect().allowed_cpus().len()
            );
        }
    }
    let tolerance = SUGGEST_TOLERANCE * 100.0;
    let (text, json, exit) = match &verdict {
        Verdict::Within { confidence } => (
            format!(
                "within {tolerance:.0}%: suggest's layout ({}) is within {tolerance:.0}% of every other layout (paired per-round ratios; confidence {})",
                suggested.label(),
                format_confidence(*confidence)
            ),
            format!("\"verdict\":\"within\",\"confidence\":{confidence:.4}"),
            ExitCode::SUCCESS,
        ),
        Verdict::Slower { than, by, confidence } => {
            let than = &candidates[others[*than]];
            (
                format!(
                    "slower by {:.1}%: suggest's layout ({}) against {} (median of paired per-round ratios; confidence {}, corrected for {} layouts compared)",
                    by * 100.0,
                    suggested.label(),
                    than.label(),
                    format_confidence(*confidence),
                    comparisons.len()
                ),
                format!(
                    "\"verdict\":\"slower\",\"than\":\"{}\",\"slower_by\":{by:.4},\"confidence\":{confidence:.4}",
                    than.label()
                ),
                ExitCode::FAILURE,
            )
        }
        Verdict::Undecided {
            reason,
            rounds_needed_within,
            rounds_needed_slower,
        } => (
            format!(
                "undecided: {reason}; run longer / on a quieter machine (a pass needs {rounds_needed_within}+ rounds, a fail {rounds_needed_slower}+, and more the noisier the machine)"
            ),
            format!(
                "\"verdict\":\"undecided\",\"reason\":\"{reason}\",\"rounds_needed_within\":{rounds_needed_within},\"rounds_needed_slower\":{rounds_needed_slower}"
            ),
            ExitCode::from(EXIT_UNDECIDED),
        ),
    };
    if args.json {
        let load = if loads.is_empty() {
            "null,null".to_owned()
        } else {
            format!("{:.2},{:.2}", load_range.0, load_range.1)
        };
        println!(
            "{{\"suggested\":\"{}\",\"tolerance\":{SUGGEST_TOLERANCE},\"alpha\":{VERDICT_ALPHA},\"rounds\":{},\"load_1min_range\":[{load}],{json}}}",
            suggested.label(),
            args.repeats
        );
    } else {
        println!("verdict: {text}");
    }
    if fastest.is_none() {
        eprintln!("error: every run failed");
        return ExitCode::FAILURE;
    }
    exit
}

/// A p-value to 4 decimals, "<0.0001" below that.
fn format_p(p: f64) -> String {
    if p < 0.0001 {
        "<0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

/// A confidence as a percentage; never "100%", which no finite number of
/// rounds gives.
fn format_confidence(confidence: f64) -> String {
    if confidence >= 0.999 {
        "≥ 99.9%".to_owned()
    } else {
        format!("{:.1}%", confidence * 100.0)
    }
}

/// The layout table: per layout the median writes/s and its quartiles, the
/// median p99 and CPU, and every run as writes/s@load, in round order.
fn print_table(
    candidates: &[Candidate],
    measured: &[Vec<Option<Run>>],
    summaries: &[Option<Summary>],
    fastest: Option<usize>,
    suggested_index: usize,
) {
    println!(
        "{:<36} {:>8} {:>15} {:>7} {:>5}  runs by round (writes/s@load)",
        "layout", "writes/s", "IQR", "p99 µs", "CPU"
    );
    for (index, candidate) in candidates.iter().enumerate() {
        let mark = match (Some(index) == fastest, index == suggested_index) {
            (true, true) => " (highest median, suggested)",
            (true, false) => " (highest median)",
            (false, true) => " (suggested)",
            (false, false) => "",
        };
        let runs: Vec<String> = measured[index]
            .iter()
            .map(|run| match run {
                Some(run) => format!("{:.0}@{}", run.measured.ops_per_s, format_load(run.load)),
                None => "failed".to_owned(),
            })
            .collect();
        match &summaries[index] {
            Some(s) => println!(
                "{:<36} {:>8.0} {:>15} {:>7.0} {:>5.2}  {}{mark}",
                candidate.label(),
                s.ops_per_s,
                format!("{:.0}-{:.0}", s.ops_quartiles.0, s.ops_quartiles.1),
                s.p99_us,
                s.cpu_cores,
                runs.join(" ")
            ),
            None => println!(
                "{:<36} {:>8} {:>15} {:>7} {:>5}  every run failed{mark}",
                candidate.label(),
                "-",
                "-",
                "-",
                "-"
            ),
        }
    }
}

/// Each other layout against suggest's, paired round by round.
fn print_comparisons(candidates: &[Candidate], others: &[usize], comparisons: &[Comparison]) {
    let threshold = 1.0 / (1.0 - SUGGEST_TOLERANCE);
    println!(
        "\nagainst suggest's layout, paired by round (that layout's writes/s / suggest's, same round):\n{:<36} {:>6} {:>6} {:>11} {:>9} {:>9} {:>9}",
        "layout",
        "rounds",
        "median",
        "IQR",
        format!(">{threshold:.3}"),
        "p faster",
        "p within"
    );
    for comparison in comparisons {
        println!(
            "{:<36} {:>6} {:>6.3} {:>11} {:>9} {:>9} {:>9}",
            candidates[others[comparison.other]].label(),
            comparison.rounds,
            comparison.median_ratio,
            format!(
                "{:.2}-{:.2}",
                comparison.ratio_quartiles.0, comparison.ratio_quartiles.1
            ),
            format!(
                "{}/{}",
                comparison.rounds_faster,
                comparison.rounds_faster + comparison.rounds_not_faster
            ),
            format_p(comparison.p_faster),
            format_p(comparison.p_within)
        );
    }
}

/// One JSON line per layout (with every run and its load) and one per
/// comparison.
fn print_json(
    candidates: &[Candidate],
    measured: &[Vec<Option<Run>>],
    summaries: &[Option<Summary>],
    others: &[usize],
    comparisons: &[Comparison],
) {
    for ((candidate, summary), runs) in candidates.iter().zip(summaries).zip(measured) {
        let runs: Vec<String> = runs
            .iter()
            .map(|run| match run {
                Some(run) => format!(
                    "{{\"ops_per_s\":{:.0},\"p99_us\":{:.0},\"load_1min\":{}}}",
                    run.measured.ops_per_s,
                    run.measured.p99_us,
                    run.load.map_or_else(|| "null".to_owned(), |load| format!("{load:.2}"))
                ),
                None => "null".to_owned(),
            })
            .collect();
        let figures = summary.as_ref().map_or_else(
            || "\"ops_per_s\":null,\"ops_per_s_q1\":null,\"ops_per_s_q3\":null,\"p99_us\":null,\"cpu_cores\":null".to_owned(),
            |s| {
                format!(
                    "\"ops_per_s\":{:.0},\"ops_per_s_q1\":{:.0},\"ops_per_s_q3\":{:.0},\"p99_us\":{:.0},\"cpu_cores\":{:.2}",
                    s.ops_per_s, s.ops_quartiles.0, s.ops_quartiles.1, s.p99_us, s.cpu_cores
                )
            },
        );
        println!(
            "{{\"shards\":{},\"cpus\":\"{}\",\"spin_before_park_us\":{},{figures},\"runs\":[{}]}}",
            candidate.shards,
            format_cpu_list(&candidate.cpus),
            candidate.spin_us,
            runs.join(",")
        );
    }
    for comparison in comparisons {
        println!(
            "{{\"versus_suggested\":\"{}\",\"rounds\":{},\"median_ratio\":{:.4},\"ratio_q1\":{:.4},\"ratio_q3\":{:.4},\"rounds_faster_than_tolerance\":{},\"rounds_within_tolerance\":{},\"p_faster\":{:.5},\"p_within\":{:.5}}}",
            candidates[others[comparison.other]].label(),
            comparison.rounds,
            comparison.median_ratio,
            comparison.ratio_quartiles.0,
            comparison.ratio_quartiles.1,
            comparison.rounds_faster,
            comparison.rounds_not_faster,
            format_p(comparison.p_faster),
            format_p(comparison.p_within)
        );
    }
}

#[cfg(test)]
mod run_timeout_tests {
    use super::*;

    #[test]
    fn a_run_past_its_timeout_is_killed_and_fails_with_the_reason_and_its_last_lines() {
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo starting node 1 >&2; exec sleep 600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let error = output_within(&mut command, Duration::from_secs(1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
        assert!(
            error.contains("no result within 1 s") && error.contains("killed") && error.contains("starting node 1"),
            "{error}"
        );
    }

    #[test]
    fn a_run_within_its_timeout_gives_its_output() {
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo '{\"ops_per_s\":1}'; echo note >&2; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = output_within(&mut command, Duration::from_secs(60)).unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "{\"ops_per_s\":1}\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "note\n");
    }
}
