//! `coraft-tune sweep` end to end, as a process running its benchmark as
//! child processes: first a stand-in benchmark (a shell script) whose
//! figures follow a "weather" that changes from round to round, so that
//! the scheduling and the paired verdict can be checked exactly; then the
//! real `coraft-bench`, for a short sweep.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coraft_tuning::{format_cpu_list, Topology};

/// Longest a sweep in these tests may take before it is killed (a hung
/// child run must fail the test, not stall the suite).
const SWEEP_DEADLINE: Duration = Duration::from_secs(900);

/// Runs `coraft-tune sweep ARGS` in its own process group, with `env`,
/// killing the whole group past [`SWEEP_DEADLINE`].
fn sweep(args: &[&str], env: &[(&str, String)]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_coraft-tune"));
    command
        .arg("sweep")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().expect("coraft-tune starts");
    let pid = child.id() as i32;
    let started = Instant::now();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    loop {
        match receiver.recv_timeout(Duration::from_secs(1)) {
            Ok(output) => return output.expect("coraft-tune's output"),
            Err(_) if started.elapsed() > SWEEP_DEADLINE => {
                // SAFETY: signals the process group this test started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                panic!("coraft-tune sweep {args:?} still running after {SWEEP_DEADLINE:?}: killed");
            }
            Err(_) => {}
        }
    }
}

/// suggest's layout as the stand-in sees it: "SHARDS CPULIST 0".
fn suggested_layout() -> String {
    let topology = Topology::detect();
    let suggestion = topology.suggest(None);
    let mut cpus = suggestion.cores.unwrap_or_else(|| topology.allowed_cpus());
    cpus.sort_unstable();
    format!("{} {} 0", suggestion.shard_count, format_cpu_list(&cpus))
}

/// A stand-in for coraft-bench: logs the layout of each run to `runs`
/// beside it and prints coraft-bench's JSON line with writes/s =
/// weather(round) x speed(layout). The weather takes 1x, 4x, 7x, 10x in
/// turn, one per round (the sweep's rounds, counted from the runs made:
/// `CANDIDATES` per round); the speed is 100 for suggest's layout
/// (`SUGGESTED`), `SPIN_SPEED` for a layout spinning 100 µs (or
/// `SPIN_SPEED_ODD` in odd rounds when set), 90 for any other.
const STAND_IN: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift ;;
    --shard-cores) cores=$2; shift ;;
    --spin-before-park-us) spin=$2; shift ;;
  esac
  shift
done
dir=$(dirname "$0")
n=$(cat "$dir/count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$dir/count"
echo "$shards $cores $spin" >> "$dir/runs"
round=$((n / CANDIDATES))
weather=$(( (round % 4) * 3 + 1 ))
if [ "$shards $cores $spin" = "$SUGGESTED" ]; then
  speed=100
elif [ "$spin" = 100 ]; then
  speed=$SPIN_SPEED
  if [ -n "$SPIN_SPEED_ODD" ] && [ $((round % 2)) = 1 ]; then speed=$SPIN_SPEED_ODD; fi
else
  speed=90
fi
echo "coraft-bench stand-in: $shards shard(s) on $cores"
echo "{\"ops_per_s\":$((weather * speed * 100)),\"p99_us\":1500,\"cpu_us_per_op\":20}"
"#;

struct StandIn {
    dir: tempfile::TempDir,
    script: PathBuf,
}

fn stand_in() -> StandIn {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("coraft-bench");
    std::fs::write(&script, STAND_IN).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    StandIn { dir, script }
}

/// Sweeps 1 shard on the first usable CPU, spinning 0 and 100 µs, plus
/// suggest's layout, over `ROUNDS` rounds of the stand-in.
fn sweep_stand_in(stand_in: &StandIn, spin_speed: &str, spin_speed_odd: &str, json: bool) -> (Output, usize) {
    let first_cpu = Topology::detect().allowed_cpus()[0].to_string();
    let suggested = suggested_layout();
    // 2 layouts, and suggest's unless it is one of them.
    let candidates = if suggested == format!("1 {first_cpu} 0") { 2 } else { 3 };
    let script = stand_in.script.to_string_lossy().into_owned();
    let mut args = vec![
        "--bench",
        &script,
        "--shards",
        "1",
        "--cores",
        &first_cpu,
        "--spin-us",
        "0,100",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--repeats",
        ROUNDS,
        "--seed",
        "7",
    ];
    if json {
        args.push("--json");
    }
    let env = [
        ("CANDIDATES", candidates.to_string()),
        ("SUGGESTED", suggested),
        ("SPIN_SPEED", spin_speed.to_owned()),
        ("SPIN_SPEED_ODD", spin_speed_odd.to_owned()),
    ];
    (sweep(&args, &env), candidates)
}

const ROUNDS: &str = "8";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_sweep_runs_every_layout_once_a_round_in_shuffled_orders_and_pairs_runs_by_round() {
    // The spinning layout is 2% faster than suggest's in every round, the
    // other 10% slower, while the weather swings 10x between rounds: the
    // absolute figures overlap completely, the paired ratios do not.
    let stand_in = stand_in();
    let (output, candidates) = sweep_stand_in(&stand_in, "102", "", false);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("verdict: within 5%"), "{stdout}");

    // Each round ran every layout exactly once; the orders differ.
    let runs = std::fs::read_to_string(stand_in.dir.path().join("runs")).unwrap();
    let runs: Vec<&str> = runs.lines().collect();
    let rounds: usize = ROUNDS.parse().unwrap();
    assert_eq!(runs.len(), candidates * rounds, "{runs:?}");
    let orders: Vec<Vec<&str>> = runs.chunks(candidates).map(<[&str]>::to_vec).collect();
    for order in &orders {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        let mut first = orders[0].clone();
        first.sort_unstable();
        assert_eq!(sorted, first, "a round did not run every layout once: {orders:?}");
    }
    assert!(
        orders.iter().any(|order| *order != orders[0]),
        "every round ran the layouts in one order: {orders:?}"
    );
    // Every run is listed by round with the load average at its start.
    let spin_row = stdout
        .lines()
        .find(|line| line.starts_with("shards 1,") && line.contains("spin 100 µs"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(spin_row.matches('@').count(), rounds, "{spin_row}");
    assert!(spin_row.contains(" 10200@"), "{spin_row}");
    assert!(
        stdout.contains("load average (1 min) at the start of the runs: "),
        "{stdout}"
    );
    assert!(stderr.contains("round order seed: 7"), "{stderr}");
    // The paired ratio of the spinning layout is exactly 1.02 in every round.
    let pair_row = stdout
        .lines()
        .filter(|line| line.starts_with("shards 1,") && line.contains("spin 100 µs"))
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(pair_row.contains(" 1.020 "), "{pair_row}");
}

#[test]
fn a_sweep_says_slower_when_one_layout_wins_every_round_and_undecided_when_rounds_disagree() {
    // 1.5x faster in every round: a decided loss, in JSON.
    let stand_in = stand_in();
    let (output, candidates) = sweep_stand_in(&stand_in, "150", "", true);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let layouts: Vec<&serde_json::Value> = lines.iter().filter(|v| v.get("shards").is_some()).collect();
    assert_eq!(layouts.len(), candidates, "{stdout}");
    for layout in &layouts {
        let runs = layout["runs"].as_array().unwrap();
        assert_eq!(runs.len(), ROUNDS.parse::<usize>().unwrap(), "{layout}");
        assert!(runs.iter().all(|run| run["load_1min"].is_number()), "{layout}");
    }
    let verdict = lines.last().unwrap();
    assert_eq!(verdict["verdict"], "slower", "{verdict}");
    assert!(verdict["than"].as_str().unwrap().contains("spin 100 µs"), "{verdict}");
    let slower_by = verdict["slower_by"].as_f64().unwrap();
    assert!((slower_by - (1.0 - 1.0 / 1.5)).abs() < 1e-3, "{verdict}");
    assert!(verdict["confidence"].as_f64().unwrap() >= 0.95, "{verdict}");

    // 1.5x in even rounds, 0.7x in odd ones: no verdict either way.
    let stand_in = self::stand_in();
    let (output, _) = sweep_stand_in(&stand_in, "150", "70", false);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("verdict: undecided: spread too wide") && stdout.contains("run longer / on a quieter machine"),
        "{stdout}"
    );
}

/// coraft-bench beside coraft-tune. `cargo test --workspace` has built
/// it; with `-p coraft-tuning` alone it may be missing, then it is built
/// (with the profile of this test's binaries). An existing one is used as
/// it is, even if older than the sources.
fn coraft_bench() -> PathBuf {
    let tune = Path::new(env!("CARGO_BIN_EXE_coraft-tune"));
    let bench = tune.with_file_name("coraft-bench");
    if bench.is_file() {
        return bench;
    }
    let profile_dir = tune
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // `cargo test` builds binaries with the test profile, into target/debug.
    let profile = if profile_dir == "debug" {
        "test".to_owned()
    } else {
        profile_dir
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--profile",
            &profile,
            "-p",
            "coraft-bench",
            "--bin",
            "coraft-bench",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p coraft-bench failed");
    assert!(bench.is_file(), "no coraft-bench at {}", bench.display());
    bench
}

#[test]
fn a_short_sweep_of_the_real_benchmark_measures_every_run_and_does_not_decide_from_two_rounds() {
    let bench = coraft_bench();
    let first_cpu = Topology::detect().allowed_cpus()[0].to_string();
    let output = sweep(
        &[
            "--bench",
            &bench.to_string_lossy(),
            "--shards",
            "1",
            "--cores",
            &first_cpu,
            "--spin-us",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--clients",
            "8",
            "--groups",
            "2",
            "--repeats",
            "2",
        ],
        &[],
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    // Two rounds can never reach 95% confidence either way.
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    let rows: Vec<&str> = stdout.lines().take_while(|line| !line.is_empty()).skip(1).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        // Two runs, each with writes/s above 0 and the load at its start.
        let runs: Vec<&str> = row.split_whitespace().filter(|field| field.contains('@')).collect();
        assert_eq!(runs.len(), 2, "{row}");
        for run in runs {
            let (ops, load) = run.split_once('@').unwrap();
            assert!(ops.parse::<f64>().unwrap() > 0.0, "{row}");
            assert!(load.parse::<f64>().is_ok(), "{row}");
        }
    }
    assert!(stdout.contains("verdict: undecided"), "{stdout}");
}
