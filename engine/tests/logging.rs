//! `coraft-node --log-format json` as a real process: every line it writes
//! is a JSON object naming the node, a shard's lines name the shard, and a
//! group's lines (here: the loud lines of a reset-peers) name the group.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};
use serde_json::Value;

const CLUSTER: u64 = 11;
const NODE: u64 = 3;

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-node cluster's config: node `NODE` with `shards` unbound shards.
fn write_config(dir: &Path, shards: usize) -> PathBuf {
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let mut config = NodeConfig {
        cluster_id: CLUSTER,
        node_id: NODE,
        listen: address,
        peers: vec![Peer { id: NODE, address }],
        ..NodeConfig::default()
    };
    config.shards.count = shards;
    config.shards.placement = PlacementPolicy::Unbound;
    config.shards.spin_before_park_us = 0;
    config.wal.dir = Some(dir.join("wal"));
    let path = dir.join("node.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    path
}

fn admin(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coraft-admin"))
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .expect("coraft-admin runs")
}

/// The spans of a JSON log line, each an object of its fields and `name`.
fn spans(line: &Value) -> Vec<&serde_json::Map<String, Value>> {
    line["spans"]
        .as_array()
        .map(|spans| spans.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

/// The value of `field` in the innermost span of `line` that has it.
fn span_field(line: &Value, field: &str) -> Option<u64> {
    spans(line).iter().rev().find_map(|span| span.get(field)?.as_u64())
}

#[test]
fn every_json_line_of_a_node_names_the_node_and_a_groups_lines_name_shard_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 2);
    let log_path = dir.path().join("node.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let node = Process(
        Command::new(env!("CARGO_BIN_EXE_coraft-node"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--groups",
                "2",
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "info")
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("coraft-node starts"),
    );
    // Group 2 lives on shard 0 (2 % 2); wait until the node leads it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = admin(&config, &["--json", "status", "--group", "2"]);
        if output.status.success() {
            let status: Value = serde_json::from_slice(&output.stdout).unwrap();
            if status["nodes"][0]["groups"][0]["role"] == "leader" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node {NODE} never led group 2");
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = admin(
        &config,
        &[
            "reset-peers",
            "--group",
            "2",
            "--voters",
            &NODE.to_string(),
            "--yes-i-know-this-can-lose-data",
        ],
    );
    assert!(
        output.status.success(),
        "reset-peers: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // SIGTERM: the node logs that it stops, from its main thread.
    // SAFETY: signalling a child this test started and still owns.
    unsafe { libc::kill(node.0.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut node = node;
    while node.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty(), "the node wrote no line");
    for line in &lines {
        assert_eq!(span_field(line, "node"), Some(NODE), "a line without the node: {line}");
        // RUST_LOG=info does not name glommio: its events stay off.
        assert!(
            !line["target"].as_str().is_some_and(|t| t.starts_with("glommio")),
            "{line}"
        );
        assert!(
            line["fields"]["message"].is_string(),
            "a line without a message: {line}"
        );
    }
    let reset: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("RESET PEERS"))
        })
        .collect();
    assert_eq!(reset.len(), 1, "one loud reset line expected:\n{text}");
    assert_eq!(span_field(reset[0], "group"), Some(2), "{}", reset[0]);
    assert_eq!(span_field(reset[0], "shard"), Some(0), "{}", reset[0]);
    assert_eq!(reset[0]["level"], "ERROR");
    let admin_warning = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("an admin request resets group 2"))
        })
        .unwrap_or_else(|| panic!("no admin warning:\n{text}"));
    assert_eq!(span_field(admin_warning, "group"), Some(2), "{admin_warning}");
    assert!(span_field(admin_warning, "shard").is_some(), "{admin_warning}");
    let stopping = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("stopping"))
        })
        .unwrap_or_else(|| panic!("no stopping line:\n{text}"));
    assert_eq!(
        span_field(stopping, "shard"),
        None,
        "the main thread is no shard: {stopping}"
    );
}

#[test]
fn a_bad_rust_log_is_refused_with_its_value_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1);
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "coraft=loud")
        .output()
        .expect("coraft-node runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RUST_LOG=`coraft=loud` is not a log filter"),
        "{stderr}"
    );
}
