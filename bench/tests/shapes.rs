//! The cluster benchmark's deployment shapes on real processes:
//! `--processes` starts one `coraft-node` per node, drives it and leaves no
//! process behind; `--target` drives coraft-node processes this test
//! started itself; unreachable or mistaken targets and a missing node
//! binary are refused with a clear error and a non-zero exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_coraft-bench");

/// coraft-node beside coraft-bench (`cargo test --workspace` builds it;
/// `cargo build -p coraft --bin coraft-node` with the same profile does).
fn node_bin() -> PathBuf {
    let bin = Path::new(BENCH).with_file_name("coraft-node");
    assert!(
        bin.is_file(),
        "no coraft-node at {}: build it with the profile of this test run",
        bin.display()
    );
    bin
}

fn bench(args: &[&str], tmpdir: &Path) -> Output {
    Command::new(BENCH)
        .args(args)
        .env("TMPDIR", tmpdir)
        .output()
        .expect("coraft-bench runs")
}

fn json_line(output: &Output, args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

fn number(line: &Value, key: &str) -> f64 {
    line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {line}"))
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn processes_run_without_errors_and_leave_no_node_behind() {
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let node_arg = node.to_str().unwrap();
    let args = [
        "--processes",
        "--node-binary",
        node_arg,
        "--duration",
        "2",
        "--warmup",
        "1",
        "--clients",
        "4",
        "--no-floor",
        "--json",
    ];
    let line = json_line(&bench(&args, tmp.path()), &args);
    assert_eq!(line["shape"], "processes", "{line}");
    assert_eq!(line["config"]["shape"], "processes", "{line}");
    assert_eq!(number(&line, "nodes"), 3.0, "{line}");
    assert!(number(&line, "ops") > 0.0, "{line}");
    assert_eq!(number(&line, "errors"), 0.0, "{line}");
    // The nodes' configs lived under TMPDIR: no process names it any more.
    let left = processes_mentioning(tmp.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

/// Stops the test's own nodes however the test ends.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: SIGTERM to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn start_kv_nodes(node: &Path, dir: &Path, cluster_id: u64) -> (Nodes, Vec<SocketAddr>) {
    let listen = coraft::ports::free_loopback_addresses(3).unwrap();
    let peers: Vec<Peer> = listen
        .iter()
        .enumerate()
        .map(|(i, &address)| Peer {
            id: i as u64 + 1,
            address,
        })
        .collect();
    let mut nodes = Nodes(Vec::new());
    for (i, &address) in listen.iter().enumerate() {
        let mut config = NodeConfig {
            cluster_id,
            node_id: i as u64 + 1,
            listen: address,
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        config.shards.placement = PlacementPolicy::Unbound;
        config.raft.election_timeout_ticks = 30;
        config.raft.heartbeat_interval_ticks = 3;
        config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
        let path = dir.join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        let child = Command::new(node)
            .arg("--config")
            .arg(&path)
            .args(["--state-machine", "kv"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coraft-node starts");
        nodes.0.push(child);
    }
    (nodes, listen)
}

#[test]
fn target_drives_a_running_cluster_and_refuses_one_it_cannot_reach() {
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, listen) = start_kv_nodes(&node, tmp.path(), 4242);
    let target = listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let args = [
        "--target",
        &target,
        "--cluster-id",
        "4242",
        "--workload",
        "mixed",
        "--keys",
        "100",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--clients",
        "4",
        "--json",
    ];
    // The nodes may still be starting: discovery waits for their leaders.
    let line = json_line(&bench(&args, tmp.path()), &args);
    assert_eq!(line["shape"], "target", "{line}");
    assert_eq!(number(&line, "nodes"), 3.0, "{line}");
    assert!(number(&line, "reads") > 0.0 && number(&line, "writes") > 0.0, "{line}");
    assert_eq!(number(&line, "errors"), 0.0, "{line}");
    assert!(
        line.get("floor_ops_per_s").is_none(),
        "no replication floor with --target: {line}"
    );
    assert!(
        line["floors_note"].as_str().is_some_and(|n| n.contains("--target")),
        "{line}"
    );

    // Another cluster's id: refused by the nodes' handshake, named.
    let output = bench(
        &[
            "--target",
            &target,
            "--cluster-id",
            "1",
            "--duration",
            "1",
            "--no-floor",
        ],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster") && stderr.contains(&listen[0].to_string()),
        "{stderr}"
    );

    // Nothing listening: refused, naming the address.
    let dead = coraft::ports::free_loopback_addresses(1).unwrap()[0].to_string();
    let output = bench(
        &[
            "--target",
            &dead,
            "--cluster-id",
            "4242",
            "--duration",
            "1",
            "--no-floor",
        ],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&dead) && stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn shapes_refuse_what_they_cannot_honour() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], i32, &str); 5] = [
        (&["--target", "not-an-address", "--cluster-id", "1"], 2, "--target"),
        (&["--target", "127.0.0.1:7001"], 1, "--cluster-id"),
        (
            &["--target", "127.0.0.1:7001", "--cluster-id", "1", "--shards", "2"],
            1,
            "--shards",
        ),
        (&["--processes", "--target", "127.0.0.1:7001"], 2, "cannot be used with"),
        (
            &["--processes", "--node-binary", "/nonexistent/coraft-node"],
            1,
            "/nonexistent/coraft-node",
        ),
    ];
    for (args, code, needle) in cases {
        let output = bench(args, tmp.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// coraft-bench's `DRIVER_READ_TIMEOUT` (bench/src/workload.rs).
const DRIVER_READ_TIMEOUT_S: u64 = 30;

/// Sends `signal` to every node of the test.
fn signal_all(nodes: &Nodes, signal: i32) {
    for child in &nodes.0 {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
}

#[test]
fn a_run_whose_nodes_stop_answering_fails_naming_the_connection_within_the_bound() {
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, listen) = start_kv_nodes(&node, tmp.path(), 4343);
    let target = listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let mut bench = Command::new(BENCH)
        .args([
            "--target",
            &target,
            "--cluster-id",
            "4343",
            "--duration",
            "600",
            "--warmup",
            "0",
            "--clients",
            "4",
        ])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coraft-bench runs");
    // The progress lines say when the drivers run; then every node stops
    // (SIGSTOP: its sockets stay open, nothing answers).
    let stderr = bench.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let start_deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !seen.iter().any(|line: &String| line.starts_with("measuring")) {
        let left = start_deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = bench.kill();
                panic!("the run never started measuring: {seen:#?}");
            }
        }
    }
    signal_all(&nodes, libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    let bound = std::time::Duration::from_secs(DRIVER_READ_TIMEOUT_S + 30);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > bound {
            let _ = bench.kill();
            let _ = bench.wait();
            signal_all(&nodes, libc::SIGCONT);
            panic!("coraft-bench still waiting {bound:?} after its nodes stopped answering");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let waited = stopped.elapsed();
    signal_all(&nodes, libc::SIGCONT);
    seen.extend(lines.iter());
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        waited >= std::time::Duration::from_secs(DRIVER_READ_TIMEOUT_S - 1),
        "gave up after {waited:?}, before DRIVER_READ_TIMEOUT: {stderr}"
    );
    assert!(
        stderr.contains("DRIVER_READ_TIMEOUT")
            && stderr.contains(" shard 0 (127.0.0.1:")
            && listen.iter().any(|address| stderr.contains(&address.to_string())),
        "the error names the bound and the connection (node, shard, address): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_killed_leader_process_costs_its_outstanding_requests_and_the_writes_resume_on_the_other_nodes() {
    const CLIENTS: u64 = 16;
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let node_arg = node.to_str().unwrap();
    let clients = CLIENTS.to_string();
    // Killed 1 s into the measurement; 11 s after it for an election on a
    // loaded machine and the writes after it.
    let args = [
        "--processes",
        "--node-binary",
        node_arg,
        "--kill-leader-at",
        "3",
        "--duration",
        "12",
        "--warmup",
        "2",
        "--clients",
        &clients,
        "--no-floor",
        "--json",
    ];
    let output = bench(&args, tmp.path());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let line = json_line(&output, &args);
    assert!(stderr.contains("killing node"), "{stderr}");
    // Every client started on the one group's leader: each had a request
    // outstanding there when it died, counted as an error (a few more are
    // allowed for answers a loaded machine times out).
    let errors = number(&line, "errors");
    assert!(
        (1.0..=2.0 * CLIENTS as f64).contains(&errors),
        "{errors} errors for {CLIENTS} clients: {line}\n{stderr}"
    );
    // The clients moved to the other nodes and wrote there until the end.
    let timeline: Vec<f64> = line["timeline_ops_per_s"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline in {line}"))
        .iter()
        .map(|second| second.as_f64().unwrap())
        .collect();
    assert_eq!(timeline.len(), 12, "{line}");
    assert!(
        timeline[9..].iter().all(|&ops| ops > 0.0),
        "no writes in the run's last seconds, long after the kill: {timeline:?}\n{stderr}"
    );
    let left = processes_mentioning(tmp.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
