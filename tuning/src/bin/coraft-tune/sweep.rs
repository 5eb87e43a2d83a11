//! `coraft-tune sweep`: measures candidate layouts on this machine with the
//! cluster benchmark and says which is fastest and whether the layout
//! `suggest` gives is within [`SUGGEST_TOLERANCE`] of it.
//!
//! Each candidate is a number of shards per node, a set of CPUs and a
//! `spin_before_park_us`. One run is one `coraft-bench` process (the
//! embedded three-node cluster, real TCP and fdatasync'ed WALs) started
//! with `--shards N --spin-before-park-us US --shard-cores CPUS --no-floor
//! --json` and with its CPU affinity set to the candidate's CPUs: each
//! shard's executor (of every node) is pinned to one CPU of the set, shard
//! `s` to the `s`-th (cycling), as a node started from the layout would
//! pin it, and the set bounds every other thread (the client drivers, the
//! nodes' helpers). Runs of all candidates are
//! interleaved, round after round, so a burst of noise from other work on
//! the machine hits every candidate alike; each candidate's median counts.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use coraft_tuning::{format_cpu_list, parse_cpu_list, Topology};

/// How far below the fastest candidate `suggest`'s layout may measure and
/// still count as agreeing with the sweep: 5%.
pub const SUGGEST_TOLERANCE: f64 = 0.05;
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
    /// Runs of each candidate, interleaved round by round; the median
    /// counts.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    repeats: u64,
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
    let mut measured: Vec<Vec<Measured>> = vec![Vec::new(); candidates.len()];
    for round in 0..args.repeats {
        for (index, candidate) in candidates.iter().enumerate() {
            eprint!("round {}/{}: {} ... ", round + 1, args.repeats, candidate.label());
            let _ = std::io::stderr().flush();
            match run_bench(&bench, &args, candidate) {
                Ok(run) => {
                    eprintln!(
                        "{:.0} writes/s, p99 {:.0} µs, {:.2} cores",
                        run.ops_per_s, run.p99_us, run.cpu_cores
                    );
                    measured[index].push(run);
                }
                Err(reason) => eprintln!("failed: {reason}"),
            }
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

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// A candidate's medians: writes/s, p99 µs, CPU cores.
fn medians(runs: &[Measured]) -> Option<(f64, f64, f64)> {
    Some((
        median(runs.iter().map(|r| r.ops_per_s).collect())?,
        median(runs.iter().map(|r| r.p99_us).collect())?,
        median(runs.iter().map(|r| r.cpu_cores).collect())?,
    ))
}

/// Prints the table (or JSON lines) and the verdict; exit 0 when
/// `suggested` is within the tolerance of the fastest, 1 when it is not or
/// could not be measured.
fn report(args: &SweepArgs, candidates: &[Candidate], measured: &[Vec<Measured>], suggested: &Candidate) -> ExitCode {
    let results: Vec<Option<(f64, f64, f64)>> = measured.iter().map(|runs| medians(runs)).collect();
    let fastest = results
        .iter()
        .enumerate()
        .filter_map(|(index, result)| result.map(|(ops, _, _)| (index, ops)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let suggested_index = candidates
        .iter()
        .position(|c| c == suggested)
        .expect("suggested is a candidate");
    if args.json {
        for ((candidate, result), runs) in candidates.iter().zip(&results).zip(measured) {
            let runs: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.ops_per_s)).collect();
            let (ops, p99, cpu) = result.map_or(("null".into(), "null".into(), "null".into()), |(o, p, c)| {
                (format!("{o:.0}"), format!("{p:.0}"), format!("{c:.2}"))
            });
            println!(
                "{{\"shards\":{},\"cpus\":\"{}\",\"spin_before_park_us\":{},\"ops_per_s\":{ops},\"p99_us\":{p99},\"cpu_cores\":{cpu},\"runs_ops_per_s\":[{}]}}",
                candidate.shards,
                format_cpu_list(&candidate.cpus),
                candidate.spin_us,
                runs.join(",")
            );
        }
    } else {
        println!(
            "{:<36} {:>10} {:>9} {:>9}  runs (writes/s)",
            "layout", "writes/s", "p99 µs", "CPU cores"
        );
        for ((index, candidate), result) in candidates.iter().enumerate().zip(&results) {
            let mark = match (Some(index) == fastest.map(|f| f.0), index == suggested_index) {
                (true, true) => " (fastest, suggested)",
                (true, false) => " (fastest)",
                (false, true) => " (suggested)",
                (false, false) => "",
            };
            let runs: Vec<String> = measured[index].iter().map(|r| format!("{:.0}", r.ops_per_s)).collect();
            match result {
                Some((ops, p99, cpu)) => println!(
                    "{:<36} {ops:>10.0} {p99:>9.0} {cpu:>9.2}  {}{mark}",
                    candidate.label(),
                    runs.join(", ")
                ),
                None => println!(
                    "{:<36} {:>10} {:>9} {:>9}  every run failed{mark}",
                    candidate.label(),
                    "-",
                    "-",
                    "-"
                ),
            }
        }
    }
    let Some((fastest_index, best)) = fastest else {
        eprintln!("error: every run failed");
        return ExitCode::FAILURE;
    };
    let Some((ops, _, _)) = results[suggested_index] else {
        eprintln!("error: suggest's layout ({}) could not be measured", suggested.label());
        return ExitCode::FAILURE;
    };
    let ratio = ops / best;
    let within = ratio >= 1.0 - SUGGEST_TOLERANCE;
    if args.json {
        println!(
            "{{\"fastest\":\"{}\",\"fastest_ops_per_s\":{best:.0},\"suggested\":\"{}\",\"suggested_ops_per_s\":{ops:.0},\"ratio\":{ratio:.3},\"within_tolerance\":{within}}}",
            candidates[fastest_index].label(),
            suggested.label()
        );
    } else {
        println!(
            "fastest: {} at {best:.0} writes/s\nsuggest's layout: {} at {ops:.0} writes/s, {:.1}% of the fastest: {}",
            candidates[fastest_index].label(),
            suggested.label(),
            ratio * 100.0,
            if within {
                format!("within {:.0}%", SUGGEST_TOLERANCE * 100.0)
            } else {
                format!("NOT within {:.0}%", SUGGEST_TOLERANCE * 100.0)
            }
        );
    }
    if within {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
