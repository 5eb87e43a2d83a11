//! The command lines of `coraft-node`, `coraft-sim` and `coraft-admin`, run
//! as real processes: `--help` names every option with its meaning and
//! default, and a bad value is refused with a message naming the option and
//! what it accepts, exit status 2, and no panic or backtrace.

use std::process::{Command, Output};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        // A backtrace would show if anything panicked; it must not.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{binary} runs: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `binary args --help` succeeds and lists each of `options`, each followed
/// on its line or the next by a description, and each of `defaults`.
fn help_lists(binary: &str, args: &[&str], options: &[&str], defaults: &[&str]) {
    let mut with_help = args.to_vec();
    with_help.push("--help");
    let output = run(binary, &with_help);
    let help = text(&output.stdout);
    assert!(
        output.status.success(),
        "{binary} {with_help:?}: {}",
        text(&output.stderr)
    );
    let lines: Vec<&str> = help.lines().collect();
    for option in options {
        let at = lines
            .iter()
            .position(|line| {
                let line = line.trim_start();
                line.starts_with('-') && line.split([' ', ',']).any(|word| word == *option)
            })
            .unwrap_or_else(|| panic!("{binary} {args:?} --help lacks {option}:\n{help}"));
        // clap puts the description after the option on its line (short
        // help) or on the lines below it (long help).
        let described = lines[at]
            .split_once("  ")
            .is_some_and(|(_, rest)| !rest.trim().is_empty())
            || lines
                .get(at + 1)
                .is_some_and(|next| !next.trim().is_empty() && !next.trim_start().starts_with('-'));
        assert!(described, "{option} has no description in:\n{help}");
    }
    for default in defaults {
        assert!(
            help.contains(default),
            "{binary} {args:?} --help lacks `{default}`:\n{help}"
        );
    }
}

/// `binary args` is refused: exit status 2, stderr names `option` and says
/// what it accepts (`accepts`), without a panic or a backtrace.
fn refuses(binary: &str, args: &[&str], option: &str, accepts: &str) {
    let output = run(binary, args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{binary} {args:?}: {stderr}");
    assert!(
        stderr.contains(option),
        "{binary} {args:?}: the message does not name {option}: {stderr}"
    );
    assert!(
        stderr.contains(accepts),
        "{binary} {args:?}: the message does not say `{accepts}`: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{binary} {args:?}: {stderr}"
    );
}

const NODE: &str = env!("CARGO_BIN_EXE_coraft-node");
const SIM: &str = env!("CARGO_BIN_EXE_coraft-sim");
const ADMIN: &str = env!("CARGO_BIN_EXE_coraft-admin");

#[test]
fn node_help_lists_every_option_with_its_default() {
    help_lists(
        NODE,
        &[],
        &[
            "--config",
            "--groups",
            "--join",
            "--state-machine",
            "--no-quiesce",
            "--session-timeout-ms",
            "--help",
            "--version",
        ],
        &[
            "[default: 1]",
            "[default: counter]",
            "[default: 600000]",
            "counter",
            "kv",
        ],
    );
}

#[test]
fn node_refuses_bad_values_naming_the_option() {
    refuses(
        NODE,
        &["--config", "x.toml", "--groups", "many"],
        "--groups",
        "invalid digit",
    );
    refuses(NODE, &["--config", "x.toml", "--groups", "0"], "--groups", "not in 1..");
    refuses(
        NODE,
        &["--config", "x.toml", "--state-machine", "sql"],
        "--state-machine",
        "counter, kv",
    );
    refuses(
        NODE,
        &["--config", "x.toml", "--session-timeout-ms", "soon"],
        "--session-timeout-ms",
        "invalid digit",
    );
    refuses(NODE, &["--groups", "2"], "--config", "required");
    refuses(
        NODE,
        &["--config", "x.toml", "--frobnicate"],
        "--frobnicate",
        "unexpected argument",
    );
}

#[test]
fn node_reports_a_missing_config_file_by_name_without_a_backtrace() {
    let output = run(NODE, &["--config", "/nonexistent/coraft-node.toml"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/coraft-node.toml"), "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn sim_help_lists_every_option_with_its_default() {
    help_lists(
        SIM,
        &[],
        &[
            "--seeds",
            "--first-seed",
            "--nodes",
            "--json",
            "--threads",
            "--verbose",
            "--pre-vote",
            "--check-quorum",
            "--clock-faults",
        ],
        &[
            "[default: 100]",
            "[default: 0]",
            "[default: 3]",
            "[default: on]",
            "[default: within-margin]",
            "per-seed",
            "beyond-margin",
        ],
    );
}

#[test]
fn sim_refuses_bad_values_naming_the_option() {
    refuses(SIM, &["--seeds", "ten"], "--seeds", "invalid digit");
    refuses(SIM, &["--nodes", "4"], "--nodes", "3, 5");
    refuses(SIM, &["--pre-vote", "maybe"], "--pre-vote", "on, off, per-seed");
    refuses(SIM, &["--check-quorum", "yes"], "--check-quorum", "on, off, per-seed");
    refuses(
        SIM,
        &["--clock-faults", "wild"],
        "--clock-faults",
        "none, within-margin, beyond-margin",
    );
}

#[test]
fn sim_runs_with_the_flags_ci_passes() {
    let output = run(
        SIM,
        &[
            "--seeds",
            "2",
            "--nodes",
            "3",
            "--first-seed",
            "7",
            "--pre-vote",
            "per-seed",
            "--check-quorum",
            "off",
            "--json",
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("2 seeds (3 nodes)"), "{stdout}");
    assert!(stdout.contains("{\"seeds\":2,\"violations\":0"), "{stdout}");
}

#[test]
fn admin_help_of_each_command_lists_its_options() {
    let global = ["--node", "--config", "--cluster-id", "--json", "--timeout-ms"];
    help_lists(ADMIN, &[], &global, &["[default: 5000]"]);
    let change = ["--group", "--wait-ms"];
    let commands: &[(&str, &[&str], &[&str])] = &[
        ("status", &["--group"], &[]),
        ("transfer", &["--group", "--to", "--wait-ms"], &["[default: 10000]"]),
        ("snapshot", &["--group"], &[]),
        ("rebalance", &["--wait-ms", "--dry-run"], &["[default: 30000]"]),
        ("add-learner", &["--id", "--address"], &["[default: 60000]"]),
        ("promote", &["--id"], &[]),
        ("add-voter", &["--id", "--address"], &[]),
        ("remove", &["--id"], &[]),
        ("change", &["--voters", "--address"], &[]),
        ("reset-peers", &["--voters", "--yes-i-know-this-can-lose-data"], &[]),
    ];
    for (command, options, defaults) in commands {
        let mut all: Vec<&str> = options.to_vec();
        all.extend(global);
        if !["status", "transfer", "snapshot", "rebalance"].contains(command) {
            all.extend(change);
        }
        help_lists(ADMIN, &[command], &all, defaults);
    }
}

#[test]
fn admin_refuses_bad_values_naming_the_option() {
    refuses(
        ADMIN,
        &["--node", "nowhere", "--cluster-id", "1", "status"],
        "--node",
        "host:port",
    );
    refuses(ADMIN, &["--cluster-id", "x", "status"], "--cluster-id", "invalid digit");
    refuses(
        ADMIN,
        &["--cluster-id", "1", "transfer", "--group", "1"],
        "--to",
        "required",
    );
    refuses(
        ADMIN,
        &[
            "--cluster-id",
            "1",
            "change",
            "--voters",
            "1",
            "--address",
            "2:127.0.0.1:1",
        ],
        "--address",
        "ID=ADDR",
    );
}
