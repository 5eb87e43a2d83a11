//! `coraft-bench longrun` and `coraft-bench restart` on the real binary, in
//! short versions: with snapshots on, the nodes' data dirs at the end are
//! far below the bytes the run wrote (compaction deleted the WAL segments),
//! and the JSON carries every sample and the verdict, and after a leader
//! transfer the writes it refused counted as `not_leader`, the term the
//! transfer began and each node's counters; with `--processes`
//! each `coraft-node` process's resident memory and data dir stay bounded
//! while several times the data dir is written, and no process is left; a
//! restart from a
//! snapshot plus a tail answers the long log's count plus the tail's and
//! holds less on disk. Bad options are refused naming the option.

use std::process::Command;

use serde_json::Value;

fn number(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {value}"))
}

fn run_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args(args)
        .output()
        .expect("coraft-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

#[test]
fn a_short_long_run_keeps_the_data_dirs_far_below_the_bytes_written() {
    const SEGMENT: u64 = 8 << 20;
    let report = run_json(&[
        "longrun",
        "--duration",
        "6",
        "--warmup",
        "2",
        "--sample-every",
        "2",
        "--clients",
        "16",
        "--payload",
        "4096",
        "--wal-segment-bytes",
        &SEGMENT.to_string(),
        "--snapshot-after-entries",
        "1000",
        "--snapshot-interval-ms",
        "500",
        "--log-tail-entries",
        "100",
        "--transfer-leaders-at",
        "3",
        "--json",
    ]);
    assert_eq!(report["bench"], "longrun");
    assert_eq!(report["snapshots"], true);
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 4, "(2 + 6) / 2 windows: {report}");
    for sample in samples {
        for key in [
            "at_s",
            "rss_bytes",
            "writes_per_s",
            "p50_us",
            "p99_us",
            "snapshots_taken",
        ] {
            assert!(sample[key].is_number(), "{key}: {sample}");
        }
        assert_eq!(sample["disk_bytes"].as_array().map(Vec::len), Some(3), "{sample}");
        assert!(number(sample, "rss_bytes") > 0.0, "{sample}");
    }
    let verdict = &report["verdict"];
    assert!(verdict["early"]["writes_per_s"].is_number(), "{verdict}");
    for key in ["memory_flat", "disk_flat", "writes_within_10_percent", "p99_within_2x"] {
        assert!(verdict[key].is_boolean(), "{key}: {verdict}");
    }
    let last = samples.last().expect("a sample");
    assert!(number(last, "snapshots_taken") >= 3.0, "snapshots were taken: {last}");
    assert!(number(last, "first_index_min") > 1.0, "the logs were compacted: {last}");
    // Each node's log took every acknowledged command; its data dir must be
    // far below that (bounded by compaction), when the run wrote enough to
    // fill several segments.
    let written = number(&report, "bytes_written");
    assert!(
        written >= 6.0 * SEGMENT as f64,
        "the run wrote only {written} bytes: too little to show compaction (a very loaded machine?)"
    );
    for disk in last["disk_bytes"].as_array().expect("disk bytes") {
        let disk = disk.as_f64().expect("a number");
        assert!(
            disk < written / 2.0,
            "a node's data dir holds {disk} bytes after {written} bytes written: not compacted"
        );
    }
    assert!(
        report["command"].as_str().is_some_and(|c| c.contains("longrun")),
        "{report}"
    );
    assert!(report["load_average"].is_string(), "{report}");

    // The leader transfer: the writers it refused are counted by kind, the
    // window's and the run's, and the term it began is seen.
    assert_eq!(number(&report["leader_change"], "groups_moved"), 1.0, "{report}");
    let failures = report["failures"].as_object().expect("failures by kind");
    let not_leader = failures.get("not_leader").and_then(Value::as_f64).unwrap_or(0.0);
    assert!(
        not_leader >= 1.0,
        "no write counted as refused by the old leader: {report}"
    );
    let sum =
        |counts: &serde_json::Map<String, Value>| counts.values().map(|n| n.as_f64().expect("a count")).sum::<f64>();
    assert_eq!(
        sum(failures),
        number(&report, "errors"),
        "the kinds sum to the errors: {report}"
    );
    let mut windows_not_leader = 0.0;
    for sample in samples {
        let counts = sample["failures"].as_object().expect("a window's failures");
        assert_eq!(sum(counts), number(sample, "errors"), "{sample}");
        windows_not_leader += counts.get("not_leader").and_then(Value::as_f64).unwrap_or(0.0);
    }
    assert_eq!(
        windows_not_leader, not_leader,
        "the windows' counts add up to the run's: {report}"
    );
    let terms = &report["terms"];
    assert_eq!(number(terms, "groups_with_new_terms"), 1.0, "{terms}");
    assert!(number(terms, "term_advances") >= 1.0, "{terms}");
    assert!(number(terms, "leaders_moved") >= 1.0, "{terms}");
    let (start, end) = (&terms["start"][0], &terms["end"][0]);
    assert!(end.as_f64() > start.as_f64(), "{terms}");
    let windows_terms: f64 = samples.iter().map(|s| number(s, "term_advances")).sum();
    assert!(windows_terms >= 1.0, "a window saw the new term: {report}");
    let counters = report["node_counters"].as_array().expect("node counters");
    assert_eq!(counters.len(), 3, "{report}");
    let refused: f64 = counters.iter().map(|c| number(c, "proposals_refused")).sum();
    assert!(refused >= 1.0, "the old leader counted the writes it refused: {report}");
    let led: f64 = counters.iter().map(|c| number(c, "groups_led")).sum();
    assert_eq!(led, 1.0, "one node leads the group: {report}");
}

#[test]
fn a_restart_from_a_snapshot_answers_the_long_logs_count_plus_the_tail() {
    let report = run_json(&["restart", "--log-mib", "160", "--tail-entries", "50", "--json"]);
    assert_eq!(report["bench"], "restart");
    let (long, short) = (&report["long_log"], &report["snapshot_and_tail"]);
    // The counter answers how many writes it applied: every fill write, then
    // the same plus the tail (the measuring code checks it too).
    assert_eq!(number(long, "applied"), number(&report, "writes"), "{report}");
    assert_eq!(number(short, "applied"), number(long, "applied") + 50.0, "{report}");
    assert_eq!(
        number(long, "first_index"),
        1.0,
        "the long log is replayed from index 1: {report}"
    );
    assert!(
        number(short, "first_index") > number(&report, "writes"),
        "after the snapshots the log starts past the fill: {report}"
    );
    assert!(
        number(short, "disk_bytes") < number(long, "disk_bytes"),
        "the long log's segments were deleted: {report}"
    );
    for restart in [long, short] {
        for key in ["start_s", "leader_s", "serving_s"] {
            assert!(number(restart, key) > 0.0, "{key}: {restart}");
        }
        assert!(number(restart, "serving_s") >= number(restart, "leader_s"), "{restart}");
    }
}

#[test]
fn bad_longrun_and_restart_options_are_refused_naming_the_option() {
    for (args, option) in [
        (vec!["longrun", "--clients", "0"], "--clients"),
        (vec!["longrun", "--wal-segment-bytes", "4096"], "--wal-segment-bytes"),
        (vec!["longrun", "--flat-tolerance", "2"], "--flat-tolerance"),
        (
            vec!["longrun", "--snapshot-shard-after-log-bytes", "4096"],
            "--snapshot-shard-after-log-bytes",
        ),
        (vec!["restart", "--log-mib", "0"], "--log-mib"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
            .args(&args)
            .output()
            .expect("coraft-bench runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
    // Every snapshot trigger off without --no-snapshots is a mistake.
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args([
            "longrun",
            "--duration",
            "1",
            "--snapshot-after-entries",
            "0",
            "--snapshot-interval-ms",
            "0",
            "--snapshot-shard-after-log-bytes",
            "0",
        ])
        .output()
        .expect("coraft-bench runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--no-snapshots"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn a_short_long_run_on_node_processes_keeps_each_ones_memory_and_disk_bounded_while_many_times_its_data_dir_is_written()
{
    const SEGMENT: u64 = 8 << 20;
    const PAYLOAD: u64 = 65536;
    const SAMPLE_EVERY_S: f64 = 2.0;
    let node = std::path::Path::new(env!("CARGO_BIN_EXE_coraft-bench")).with_file_name("coraft-node");
    assert!(
        node.is_file(),
        "no coraft-node at {}: build it with the profile of this test run",
        node.display()
    );
    // The processes' data dirs go under this dir, so that a process left
    // behind is found by its command line.
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args([
            "longrun",
            "--processes",
            "--duration",
            "16",
            "--warmup",
            "2",
            "--sample-every",
            "2",
            "--clients",
            "16",
            "--payload",
            &PAYLOAD.to_string(),
            "--wal-segment-bytes",
            &SEGMENT.to_string(),
            "--snapshot-after-entries",
            "100",
            "--snapshot-interval-ms",
            "500",
            "--log-tail-entries",
            "20",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("coraft-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(report["shape"], "processes");
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 9, "(2 + 16) / 2 windows: {report}");
    let per_node = |sample: &Value, key: &str| -> Vec<f64> {
        let values: Vec<f64> = sample[key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}` in {sample}"))
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect();
        assert_eq!(values.len(), 3, "{key}: {sample}");
        values
    };
    let written = number(&report, "bytes_written");
    let disk_max = (0..3)
        .map(|n| samples.iter().map(|s| per_node(s, "disk_bytes")[n]).fold(0.0, f64::max))
        .fold(0.0, f64::max);
    // Each node's log took every acknowledged command: the run must have
    // written several times what any data dir ever held.
    assert!(
        written >= 4.0 * SEGMENT as f64 && written >= 3.0 * disk_max,
        "the run wrote only {written} bytes (data dirs up to {disk_max}): too little to show compaction (a very \
         loaded machine?)"
    );
    assert!(
        disk_max < written / 2.0,
        "a node's data dir held {disk_max} bytes after {written} written: not compacted"
    );
    // Memory: each node process's resident memory may grow past its first
    // sample by much less than what was written after it (a node that
    // keeps its log in memory grows by all of it).
    let first = &samples[0];
    let written_after_first: f64 = samples[1..]
        .iter()
        .map(|s| number(s, "writes_per_s") * SAMPLE_EVERY_S * PAYLOAD as f64)
        .sum();
    assert!(written_after_first >= 2.0 * SEGMENT as f64, "{report}");
    for n in 0..3 {
        let start = per_node(first, "rss_bytes_per_node")[n];
        assert!(start > 0.0, "{first}");
        let most = samples
            .iter()
            .map(|s| per_node(s, "rss_bytes_per_node")[n])
            .fold(0.0, f64::max);
        assert!(
            most - start < written_after_first / 2.0,
            "node {} grew from {start} to {most} bytes resident while {written_after_first} bytes were written",
            n + 1
        );
    }
    let last = samples.last().expect("a sample");
    assert!(
        number(last, "snapshot_index_min") > number(first, "snapshot_index_min"),
        "every node's groups took newer snapshots: {first} -> {last}"
    );
    let left = processes_mentioning(&tmp.path().display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn a_long_run_on_node_processes_goes_on_writing_after_every_groups_leadership_moves() {
    const CLIENTS: f64 = 16.0;
    // `NotLeader` answers allowed per writer: see bench/tests/leader_change.rs.
    const NOT_LEADER_PER_CLIENT_MAX: f64 = 16.0;
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args([
            "longrun",
            "--processes",
            "--duration",
            "16",
            "--warmup",
            "2",
            "--sample-every",
            "2",
            "--clients",
            "16",
            "--groups",
            "4",
            "--payload",
            "16",
            "--transfer-leaders-at",
            "5",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("coraft-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    let change = &report["leader_change"];
    assert_eq!(number(change, "groups_moved"), 4.0, "{report}");
    let done_at_s = number(change, "done_at_s");
    let not_leader = number(change, "not_leader");
    assert!(not_leader >= 1.0, "no writer noticed the change: {report}");
    assert!(
        not_leader <= NOT_LEADER_PER_CLIENT_MAX * CLIENTS,
        "{not_leader} NotLeader answers for {CLIENTS} writers: {report}"
    );
    // Every window that began after the new leaders were in place has writes.
    let after: Vec<&Value> = report["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| number(s, "at_s") - 2.0 >= done_at_s)
        .collect();
    assert!(
        after.len() >= 2,
        "the leader change ended too late in the run: {report}"
    );
    for sample in after {
        assert!(
            number(sample, "writes_per_s") > 0.0,
            "no writes in a window after the leader change: {sample}"
        );
    }
    let left = processes_mentioning(&tmp.path().display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
