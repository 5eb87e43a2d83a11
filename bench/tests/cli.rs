//! `coraft-bench`'s command line, on the real binary: every option is in
//! `--help` with its default, bad values are refused naming the option and
//! what it accepts (exit code 2, no backtrace), and combinations the harness
//! cannot honour are refused with the reason before anything starts.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("coraft-bench runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_option_of_the_cluster_benchmark_with_its_default() {
    let output = bench(&["--help"]);
    assert!(output.status.success());
    let (stdout, _) = text(&output);
    for option in [
        "--nodes",
        "--clients",
        "--payload",
        "--groups",
        "--shards",
        "--duration",
        "--warmup",
        "--drivers",
        "--workload",
        "--read-ratio",
        "--read-mode",
        "--state-machine",
        "--keys",
        "--rate",
        "--sweep",
        "--report",
        "--spin-before-park-us",
        "--shard-cores",
        "--wal-zero-ahead-bytes",
        "--no-floor",
        "--json",
        "--processes",
        "--target",
        "--cluster-id",
        "--config",
        "--node-binary",
        "--transfer-leaders-at",
        "--kill-leader-at",
    ] {
        assert!(stdout.contains(option), "--help lacks {option}:\n{stdout}");
    }
    for default in [
        "[default: 3]",
        "[default: 64]",
        "[default: 16]",
        "[default: 10]",
        "[default: 0.9]",
        "[default: write]",
    ] {
        assert!(stdout.contains(default), "--help lacks {default}:\n{stdout}");
    }
    for subcommand in [
        "cluster", "wal", "net", "idle", "reactor", "floor", "longrun", "restart",
    ] {
        assert!(stdout.contains(subcommand), "--help lacks the subcommand {subcommand}");
    }
}

#[test]
fn every_subcommand_has_help_with_its_options() {
    for (subcommand, options) in [
        ("cluster", &["--clients", "--workload", "--rate"][..]),
        (
            "wal",
            &[
                "--dir",
                "--seconds",
                "--point",
                "--raw-dsync",
                "--per-entry",
                "--polled-io",
                "--json",
            ][..],
        ),
        (
            "net",
            &[
                "--sizes",
                "--seconds",
                "--rtt-seconds",
                "--repeats",
                "--spin-us",
                "--unpinned",
                "--copy-payloads",
            ][..],
        ),
        (
            "idle",
            &["--groups", "--duration", "--settle-timeout", "--no-quiesce", "--json"][..],
        ),
        ("reactor", &["--json"][..]),
        (
            "floor",
            &[
                "--clients",
                "--payload",
                "--drivers",
                "--duration",
                "--warmup",
                "--json",
            ][..],
        ),
    ] {
        let output = bench(&[subcommand, "--help"]);
        assert!(output.status.success(), "{subcommand} --help failed");
        let (stdout, _) = text(&output);
        for option in options {
            assert!(stdout.contains(option), "{subcommand} --help lacks {option}:\n{stdout}");
        }
        if subcommand != "reactor" {
            assert!(
                stdout.contains("[default:"),
                "{subcommand} --help shows no defaults:\n{stdout}"
            );
        }
    }
}

/// A refusal: non-zero exit, the stderr names `option` and contains `why`,
/// and no panic or backtrace.
fn assert_refused(args: &[&str], option: &str, why: &str) {
    let output = bench(args);
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{args:?} was accepted");
    assert!(
        stderr.contains(option),
        "{args:?}: the refusal does not name {option}: {stderr}"
    );
    assert!(
        stderr.contains(why),
        "{args:?}: the refusal does not say `{why}`: {stderr}"
    );
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{args:?}: {bad} in {stderr}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_option_and_what_it_accepts() {
    assert_refused(&["--clients", "0"], "--clients", "at least 1");
    assert_refused(&["--clients", "many"], "--clients", "whole number");
    assert_refused(&["--nodes", "4"], "--nodes", "odd");
    assert_refused(&["--payload", "65537"], "--payload", "64 KiB");
    assert_refused(&["--duration", "0"], "--duration", "at least 1");
    assert_refused(&["--workload", "scan"], "--workload", "write");
    assert_refused(&["--read-mode", "eventual"], "--read-mode", "stale");
    assert_refused(
        &["--workload", "mixed", "--read-ratio", "1.5"],
        "--read-ratio",
        "fraction from 0 to 1",
    );
    assert_refused(&["--keys", "0"], "--keys", "1 to 1000000");
    assert_refused(&["--rate", "0"], "--rate", "at least 1");
    assert_refused(
        &["--sweep", "colour=1,2"],
        "--sweep",
        "clients, payload, groups, shards or rate",
    );
    assert_refused(&["--sweep", "clients=1,0"], "--sweep", "at least 1");
    assert_refused(&["--bogus"], "--bogus", "unexpected argument");
    assert_refused(&["net", "--sizes", "0"], "--sizes", "1 to 1048576");
    assert_refused(&["wal", "--point", "9"], "--point", "from 0 to 4");
    assert_refused(&["idle", "--groups", "0"], "--groups", "at least 1");
    assert_refused(&["floor", "--payload", "70000"], "--payload", "64 KiB");
}

#[test]
fn combinations_the_harness_cannot_honour_are_refused_with_the_reason() {
    assert_refused(&["--workload", "read", "--payload", "100"], "--payload", "17-byte ops");
    assert_refused(
        &["--duration", "5", "--warmup", "1", "--transfer-leaders-at", "6"],
        "--transfer-leaders-at 6",
        "not within the run",
    );
    assert_refused(
        &[
            "--processes",
            "--duration",
            "5",
            "--warmup",
            "1",
            "--kill-leader-at",
            "6",
        ],
        "--kill-leader-at 6",
        "not within the run",
    );
    // Only processes can be killed.
    assert_refused(&["--kill-leader-at", "2"], "--kill-leader-at", "--processes");
    assert_refused(
        &["--keys", "10", "--state-machine", "counter"],
        "--keys",
        "KV state machine",
    );
    assert_refused(&["--read-ratio", "0.5"], "--read-ratio", "mixed only");
    assert_refused(&["--read-mode", "lease"], "--read-mode", "applies to reads");
    assert_refused(
        &["--workload", "mixed", "--read-mode", "follower"],
        "--read-mode follower",
        "writes must go to the leader",
    );
    assert_refused(
        &["--workload", "read", "--read-mode", "follower", "--nodes", "1"],
        "--read-mode follower",
        "--nodes 3",
    );
    assert_refused(
        &["--workload", "mixed", "--read-mode", "stale"],
        "--read-mode stale",
        "writes must go to the leader",
    );
    assert_refused(
        &["--sweep", "payload=16,64", "--workload", "read"],
        "--payload",
        "17-byte ops",
    );
}
