//! The counter example as a user runs it: three `counter-server` processes
//! and `counter-client` processes talking to them over TCP; a leader killed
//! with SIGKILL in the middle of a stream of increments; servers restarted
//! from their data directories.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{cluster_flag, data_dirs, describe, free_addresses, Guard, Server};

const SERVER: &str = env!("CARGO_BIN_EXE_counter-server");

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

#[test]
fn a_leader_killed_mid_stream_loses_no_acknowledged_increment_and_applies_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let no_snapshots = ["--snapshot-interval-ms", "0"];
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|id| Some(Server::start(SERVER, id, &addresses, &dirs[id - 1], &no_snapshots)))
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
    let restarted = Server::start(SERVER, killed, &addresses, &dirs[killed - 1], &no_snapshots);
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
        .map(|id| Server::start(SERVER, id, &addresses, &dirs[id - 1], &snapshots))
        .collect();
    let output = client(&addresses, &["incr", "7", "--repeat", "3"]);
    let values: Vec<i64> = output.lines().map(|l| value_and_node(l).0).collect();
    assert_eq!(values, [7, 14, 21]);
    for server in &servers {
        server.wait_for_durable_snapshot("snapshot saved: value 21");
    }
    drop(servers); // SIGKILL all three

    let servers: Vec<Server> = (1..=3)
        .map(|id| Server::start(SERVER, id, &addresses, &dirs[id - 1], &snapshots))
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
