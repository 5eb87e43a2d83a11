//! `coraft-bench install` on the real binary, with a tiny state: the
//! restarted follower installs the leader's snapshot (it received at least
//! the state's bytes), the leader served writes meanwhile, and the JSON line
//! carries the throughput, the raw TCP floor and their ratio. Bad options
//! are refused naming the option.

use std::process::Command;

use serde_json::Value;

fn number(line: &Value, key: &str) -> f64 {
    line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {line}"))
}

#[test]
fn a_restarted_follower_installs_a_4_mib_snapshot_and_the_json_has_the_figures() {
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args(["install", "--state-mib", "4", "--writers", "2", "--json"])
        .output()
        .expect("coraft-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let line = &lines[0];
    assert_eq!(line["bench"], "install");
    assert_eq!(number(line, "state_mib"), 4.0);
    // The snapshot's data is the 4 MiB blob and 8 bytes, after its metadata.
    assert!(number(line, "bytes_received") >= (4 << 20) as f64, "{line}");
    assert!(number(line, "bytes_sent") >= number(line, "bytes_received"), "{line}");
    assert!(number(line, "snapshot_index") >= 300.0, "{line}");
    for key in [
        "stream_mb_per_s",
        "restart_to_installed_mb_per_s",
        "raw_tcp_mb_per_s",
        "ratio",
        "restart_to_installed_s",
    ] {
        assert!(number(line, key) > 0.0, "{key}: {line}");
    }
    assert!(
        number(line, "restart_to_installed_s") >= number(line, "stream_s"),
        "{line}"
    );
    assert_eq!(number(line, "install_bytes_per_second"), (4u64 << 30) as f64);
    assert!(
        number(line, "writes") > 0.0,
        "the leader served writes meanwhile: {line}"
    );
    assert!(
        line["command"].as_str().is_some_and(|c| c.contains("--state-mib 4")),
        "{line}"
    );
    assert!(number(&line["machine"], "cores") >= 1.0);
    // The engine's part and the loader's are reported apart: the engine's
    // ends when the snapshot is durable, before or when it is installed;
    // the follower's loader (into the memory its blob kept) prepared it.
    assert_eq!(line["loader"], "kept", "{line}");
    assert!(number(line, "engine_stream_s") <= number(line, "stream_s"), "{line}");
    assert!(number(line, "engine_mb_per_s") > 0.0, "{line}");
    assert!(number(line, "loader_s") > 0.0, "{line}");
    assert!(line["loader_after_durable_s"].is_number(), "{line}");
}

#[test]
fn bad_install_options_are_refused_naming_the_option() {
    for (args, option) in [
        (["install", "--state-mib", "0"], "--state-mib"),
        (["install", "--state-mib", "5000"], "--state-mib"),
        (["install", "--writers", "65"], "--writers"),
        (["install", "--loader", "reused"], "--loader"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
            .args(args)
            .output()
            .expect("coraft-bench runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}
