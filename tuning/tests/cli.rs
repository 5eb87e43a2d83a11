//! The `coraft-tune` binary, run as a process against real files.

mod common;

use std::process::{Command, Output};

use common::THREE_NODES;

fn coraft_tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coraft-tune"))
        .args(args)
        .output()
        .expect("coraft-tune runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn io_uring_works() -> bool {
    matches!(
        coraft_tuning::probe_io_uring(),
        coraft_tuning::IoUring::Available { .. }
    )
}

#[test]
fn detect_prints_the_cpus_and_io_uring_state() {
    let output = coraft_tune(&["detect"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("CPUs online:"), "{text}");
    assert!(text.contains("physical cores:"), "{text}");
    assert!(text.contains("NUMA nodes:"), "{text}");
    assert!(text.contains("io_uring:"), "{text}");
}

#[test]
fn example_output_passes_check_on_this_machine() {
    let example = coraft_tune(&["example"]);
    assert!(example.status.success());
    let (_dir, path) = write_config(&stdout(&example));
    let check = coraft_tune(&["check", &path]);
    if io_uring_works() {
        assert_eq!(check.status.code(), Some(0), "{}{}", stdout(&check), stderr(&check));
        assert!(stdout(&check).contains(": ok, "), "{}", stdout(&check));
    } else {
        assert!(stdout(&check).contains("machine: io_uring is unavailable"));
    }
}

#[test]
fn check_exits_1_listing_every_problem() {
    let text = THREE_NODES
        .replace("cores = [0, 1]", "cores = [4096, 4096]")
        .replace("node_id = 1", "node_id = 8");
    let (_dir, path) = write_config(&text);
    let output = coraft_tune(&["check", &path]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("error: node_id: node 8 is not among the peers"), "{text}");
    assert!(
        text.contains("error: shards.cores[0]: core 4096 does not exist"),
        "{text}"
    );
    assert!(
        text.contains("error: shards.cores[1]: core 4096 does not exist"),
        "{text}"
    );
    assert!(text.contains("problem(s); the node would not start"), "{text}");
}

#[test]
fn check_reports_a_parse_error_with_its_location() {
    let (_dir, path) = write_config(&THREE_NODES.replace("[wal]", "[wal]\nfsynk = \"always\""));
    let output = coraft_tune(&["check", &path]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains(&format!("{path}:")), "{text}");
    assert!(text.contains("unknown field `fsynk`"), "{text}");
}

#[test]
fn check_refuses_fsync_never_which_the_engine_does_not_implement() {
    let text = THREE_NODES
        .replace("cores = [0, 1]", "placement = \"unbound\"")
        .replace("[wal]", "[wal]\nfsync = \"never\"");
    let (_dir, path) = write_config(&text);
    let output = coraft_tune(&["check", &path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: wal.fsync: \"never\" is not supported: the engine fdatasyncs every WAL write"),
        "{text}"
    );
}

#[test]
fn check_refuses_a_segment_the_nodes_wal_refuses() {
    // 2 MiB passes the 64 KiB minimum, but a node's WAL bounds a record at
    // 4 MiB, and a segment must hold one after its header and a flush marker.
    let text = THREE_NODES
        .replace("cores = [0, 1]", "placement = \"unbound\"")
        .replace("[wal]", "[wal]\nsegment_bytes = 2097152");
    let (_dir, path) = write_config(&text);
    let output = coraft_tune(&["check", &path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: wal.segment_bytes: the WAL refuses it: its record_bytes_max = 4194304"),
        "{text}"
    );
    assert!(text.contains("needs at least 4202496"), "{text}");
}

#[test]
fn suggest_prints_a_shards_section_and_refuses_impossible_counts() {
    let output = coraft_tune(&["suggest"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("[shards]\ncount = "), "{}", stdout(&output));

    let output = coraft_tune(&["suggest", "--shards", "100000"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("placement = \"unbound\""));
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    for args in [&["frobnicate"][..], &[], &["suggest", "--shards", "zero"], &["check"]] {
        let output = coraft_tune(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let text = stderr(&output);
        assert!(
            text.contains("Usage:") || text.contains("try '--help'"),
            "{args:?}: {text}"
        );
        assert!(!stderr(&output).contains("panicked"), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn bad_values_name_the_option_and_what_it_accepts() {
    for (value, accepts) in [("zero", "invalid digit"), ("0", "not in 1..")] {
        let output = coraft_tune(&["suggest", "--shards", value]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains("--shards") && text.contains(accepts), "{text}");
    }
    let output = coraft_tune(&["check"]);
    assert!(stderr(&output).contains("<CONFIG.toml>"), "{}", stderr(&output));
}

#[test]
fn help_lists_every_command_and_option() {
    let output = coraft_tune(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for command in ["detect", "suggest", "check", "example", "help"] {
        assert!(
            text.lines().any(|line| line.trim_start().starts_with(command)),
            "--help lacks {command}:\n{text}"
        );
    }
    let output = coraft_tune(&["suggest", "--help"]);
    let text = stdout(&output);
    assert!(text.contains("-n, --shards <N>"), "{text}");
    assert!(text.contains("Default: one per usable physical core"), "{text}");
    // The short form still works.
    let output = coraft_tune(&["suggest", "-n", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("count = 1"), "{}", stdout(&output));
}

#[test]
fn sweep_lists_its_candidates_with_suggests_layout_among_them_and_refuses_bad_values() {
    // --dry-run runs nothing: it prints each candidate and its command.
    let output = coraft_tune(&[
        "sweep",
        "--dry-run",
        "--shards",
        "1,2",
        "--cores",
        "0",
        "--spin-us",
        "0,50",
        "--bench",
        "/opt/bench",
        "--duration",
        "3",
        "--repeats",
        "2",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(
        text.contains(
            "shards 2, CPUs 0, spin 50 µs: taskset -c 0 /opt/bench --shards 2 --spin-before-park-us 50 \
             --shard-cores 0 --groups 4 --clients 64 --duration 3 --warmup 1 --no-floor --json"
        ),
        "{text}"
    );
    let suggested = coraft_tuning::Topology::detect().suggest(None);
    let lines = text.lines().count();
    // 2 shard counts x 1 CPU set x 2 spins, plus suggest's layout unless it
    // is one of them (1 shard on CPU 0, no spin).
    let suggest_is_listed = suggested.shard_count <= 2 && suggested.cores.as_deref() == Some(&[0][..]);
    assert_eq!(lines, if suggest_is_listed { 4 } else { 5 }, "{text}");
    assert!(
        stderr(&output).contains("run(s) of coraft-bench"),
        "{}",
        stderr(&output)
    );

    for (args, option, accepts) in [
        (&["sweep", "--shards", "0"][..], "--shards", "not in 1..=64"),
        (&["sweep", "--spin-us", "fast"][..], "--spin-us", "invalid digit"),
        (&["sweep", "--cores", "3-1"][..], "--cores", "reversed range"),
        (
            &["sweep", "--cores", "4095"][..],
            "--cores",
            "is not one this process may use",
        ),
        (&["sweep", "--duration", "0"][..], "--duration", "not in 1..=3600"),
        (&["sweep", "--repeats", "many"][..], "--repeats", "invalid digit"),
    ] {
        let output = coraft_tune(args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(option) && text.contains(accepts), "{args:?}: {text}");
    }
    // Without a benchmark binary it says where it looked and how to build one.
    let output = coraft_tune(&["sweep", "--bench", "/nonexistent/coraft-bench", "--repeats", "1"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--bench: no coraft-bench at /nonexistent/coraft-bench"),
        "{text}"
    );
    assert!(text.contains("cargo build --profile fast -p coraft-bench"), "{text}");
}
