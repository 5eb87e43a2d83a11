//! The counter example as a user runs it: three `counter-server` processes
//! and `counter-client` processes talking to them over TCP; a leader killed
//! with SIGKILL in the middle of a stream of increments; servers restarted
//! from their data directories.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen in well under a
/// second on an idle machine (CI machines are anything but idle).
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// A running `counter-server`, killed (SIGKILL) when dropped, however the
/// test ends; its stdout lines are collected as they come.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(id: usize, addresses: &[SocketAddr], data: &Path, extra: &[&str]) -> Server {
        let peers: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_counter-server"))
            .args(["--id", &id.to_string(), "--listen", &addresses[id - 1].to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--data")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("counter-server starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, lines }
    }

    /// Waits until the server has printed a line containing `text` (at or
    /// after line `from`), and returns it.
    fn wait_for(&self, text: &str, from: usize) -> String {
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().skip(from).find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with `{text}` within {EVENT_WAIT:?}; the server printed:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn printed(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a client process left running when a test fails.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn cluster_flag(addresses: &[SocketAddr]) -> String {
    addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

fn client_command(addresses: &[SocketAddr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_counter-client"));
    command.args(["--cluster", &cluster_flag(addresses), "--wait-secs", "60"]);
    command
}

/// Runs `counter-client ARGS` to completion; asserts it succeeded.
fn client(addresses: &[SocketAddr], args: &[&str]) -> String {
    let output = client_command(addresses)
        .args(args)
        .output()
        .expect("counter-client runs");
    assert!(
        output.status.success(),
        "counter-client {args:?} failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The value and the answering node in a client line `incr D -> value V
/// (leader: node N)` or `value V (read on node N)`.
fn value_and_node(line: &str) -> (i64, usize) {
    let line = line.trim();
    let value = line
        .split("value ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in `{line}`"));
    let node = line
        .rsplit(" node ")
        .next()
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no node in `{line}`"));
    (value, node)
}

fn data_dirs(root: &Path) -> Vec<PathBuf> {
    (1..=3).map(|i| root.join(format!("node-{i}"))).collect()
}

#[test]
fn a_leader_killed_mid_stream_loses_no_acknowledged_increment_and_applies_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let no_snapshots = ["--snapshot-interval-ms", "0"];
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|id| Some(Server::start(id, &addresses, &dirs[id - 1], &no_snapshots)))
        .collect();
    assert_eq!(value_and_node(&client(&addresses, &["incr", "5"])).0, 5);
    assert_eq!(value_and_node(&client(&addresses, &["incr", "-2"])).0, 3);
    assert_eq!(value_and_node(&client(&addresses, &["get"])).0, 3);

    // A node of another cluster refuses the client: a clear error.
    let output = client_command(&addresses)
        .args(["--cluster-id", "2", "get"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("handshake refused"), "{}", describe(&output));
    assert!(!stderr.contains("panicked"), "{}", describe(&output));

    // A stream of 100 increments of 1 in one session; the leader is killed
    // without warning after the 20th is acknowledged.
    let increments = 100;
    let mut stream = Guard(
        client_command(&addresses)
            .args(["incr", "1", "--repeat", &increments.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut acknowledged = Vec::new();
    let mut killed = None;
    let mut after_kill = [0; 3];
    for line in BufReader::new(stream.0.stdout.take().unwrap()).lines() {
        let (value, leader) = value_and_node(&line.unwrap());
        acknowledged.push(value);
        if acknowledged.len() == 20 {
            for (i, server) in servers.iter().enumerate() {
                after_kill[i] = server.as_ref().map_or(0, |s| s.printed().len());
            }
            servers[leader - 1].take(); // SIGKILL
            killed = Some(leader);
        }
    }
    let status = stream.0.wait().unwrap();
    assert!(status.success(), "the stream of increments failed: {status}");
    let killed = killed.expect("20 increments were acknowledged");
    // Every increment was acknowledged, once, in order: retries across the
    // election did not apply one twice.
    assert_eq!(acknowledged, (4..4 + increments).collect::<Vec<i64>>());
    // A surviving node took over.
    let new_leader = servers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
        .find(|(i, s)| {
            s.printed()
                .iter()
                .skip(after_kill[*i])
                .any(|l| l.contains("leader start"))
        })
        .map(|(i, _)| i + 1);
    assert!(
        new_leader.is_some_and(|n| n != killed),
        "no surviving node printed `leader start`"
    );
    let (value, answered_by) = value_and_node(&client(&addresses, &["get"]));
    assert_eq!(value, 3 + increments);
    assert_ne!(answered_by, killed);

    // The killed node restarts from its log and catches up.
    let restarted = Server::start(killed, &addresses, &dirs[killed - 1], &no_snapshots);
    restarted.wait_for(&format!("-> value {}", 3 + increments), 0);
    servers[killed - 1] = Some(restarted);
}

#[test]
fn servers_restarted_from_their_data_dirs_load_their_snapshots_and_keep_the_value() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let snapshots = ["--snapshot-interval-ms", "100"];
    let servers: Vec<Server> = (1..=3)
        .map(|id| Server::start(id, &addresses, &dirs[id - 1], &snapshots))
        .collect();
    let output = client(&addresses, &["incr", "7", "--repeat", "3"]);
    let values: Vec<i64> = output.lines().map(|l| value_and_node(l).0).collect();
    assert_eq!(values, [7, 14, 21]);
    for server in &servers {
        server.wait_for("snapshot saved: value 21", 0);
    }
    drop(servers); // SIGKILL all three

    let servers: Vec<Server> = (1..=3)
        .map(|id| Server::start(id, &addresses, &dirs[id - 1], &snapshots))
        .collect();
    for server in &servers {
        server.wait_for("snapshot loaded: value 21", 0);
    }
    assert_eq!(value_and_node(&client(&addresses, &["get"])).0, 21);
    assert_eq!(value_and_node(&client(&addresses, &["incr", "1"])).0, 22);
    for server in &servers {
        server.wait_for("-> value 22", 0);
        // The snapshot covers the first three increments: not applied again.
        let printed = server.printed();
        assert!(
            !printed.iter().any(|l| l.contains("-> value 7")),
            "a restarted server applied an increment its snapshot covers:\n{}",
            printed.join("\n")
        );
    }
}

#[test]
fn bad_flags_and_an_unreachable_cluster_give_clear_errors_not_panics() {
    let root = tempfile::tempdir().unwrap();
    let free = free_addresses(1)[0];
    let run = |program: &str, args: &[&str]| -> String {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            !output.status.success(),
            "{program} {args:?} succeeded: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{program} {args:?} panicked: {stderr}");
        stderr
    };
    let client = env!("CARGO_BIN_EXE_counter-client");
    let server = env!("CARGO_BIN_EXE_counter-server");
    let stderr = run(client, &["--cluster", "127.0.0.1:8081,nowhere", "get"]);
    assert!(stderr.contains("--cluster") && stderr.contains("`nowhere`"), "{stderr}");
    let stderr = run(client, &["--cluster", &free.to_string(), "incr", "five"]);
    assert!(stderr.contains("five"), "{stderr}");
    let stderr = run(client, &["--cluster", &free.to_string(), "decr", "1"]);
    assert!(stderr.contains("decr"), "{stderr}");
    let stderr = run(client, &["--cluster", &free.to_string(), "--wait-secs", "0", "get"]);
    assert!(stderr.contains("no answer from the cluster"), "{stderr}");

    let data = root.path().to_str().unwrap();
    let listen = free.to_string();
    let peers = format!("1={listen}");
    let stderr = run(
        server,
        &["--id", "4", "--listen", &listen, "--peers", &peers, "--data", data],
    );
    assert!(stderr.contains("--peers does not list node 4"), "{stderr}");
    let stderr = run(
        server,
        &[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--peers",
            &peers,
            "--data",
            data,
        ],
    );
    assert!(stderr.contains("differs from node 1's address"), "{stderr}");
    let stderr = run(
        server,
        &[
            "--id",
            "1",
            "--listen",
            &listen,
            "--peers",
            "1=127.0.0.1",
            "--data",
            data,
        ],
    );
    assert!(
        stderr.contains("--peers") && stderr.contains("`1=127.0.0.1`"),
        "{stderr}"
    );
    let stderr = run(
        server,
        &["--id", "0", "--listen", &listen, "--peers", &peers, "--data", data],
    );
    assert!(stderr.contains("--id"), "{stderr}");
}
