//! The key-value example as a user runs it: three `kv-server` processes and
//! `kv-client` processes; the leader killed with SIGKILL between writes.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};

use common::{cluster_flag, data_dirs, describe, free_addresses, Server};

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");

fn kv(addresses: &[SocketAddr], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-client"))
        .args(["--cluster", &cluster_flag(addresses), "--wait-secs", "60"])
        .args(args)
        .output()
        .expect("kv-client runs")
}

/// Runs `kv-client ARGS`, asserts it succeeded, returns its stdout.
fn ok(addresses: &[SocketAddr], args: &[&str]) -> String {
    let output = kv(addresses, args);
    assert!(
        output.status.success(),
        "kv-client {args:?} failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `kv-client ARGS`, asserts it failed, returns stdout and stderr.
fn fails(addresses: &[SocketAddr], args: &[&str]) -> String {
    let output = kv(addresses, args);
    assert!(
        !output.status.success(),
        "kv-client {args:?} succeeded: {}",
        describe(&output)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    text
}

/// The server that printed `leader start` in the highest term.
fn leader(servers: &[Option<Server>]) -> usize {
    let mut best = None;
    for (i, server) in servers.iter().enumerate() {
        let Some(server) = server else { continue };
        for line in server.printed() {
            let Some(rest) = line.split("leader start in term ").nth(1) else {
                continue;
            };
            let term: u64 = rest.split(':').next().unwrap().parse().unwrap();
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, i + 1));
            }
        }
    }
    best.expect("some server printed `leader start`").1
}

#[test]
fn put_get_cas_delete_and_scan_keep_every_acknowledged_write_across_a_killed_leader() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let no_snapshots = ["--snapshot-interval-ms", "0"];
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|id| Some(Server::start(SERVER, id, &addresses, &dirs[id - 1], &no_snapshots)))
        .collect();
    assert_eq!(ok(&addresses, &["put", "a", "1"]).trim(), "put a = 1 (was (absent))");
    assert_eq!(ok(&addresses, &["put", "a", "2"]).trim(), "put a = 2 (was 1)");
    assert_eq!(ok(&addresses, &["get", "a"]).trim(), "a = 2");
    let refused = fails(&addresses, &["cas", "a", "--expected", "1", "--new", "3"]);
    assert!(refused.contains("not swapped, the value is 2"), "{refused}");
    assert_eq!(
        ok(&addresses, &["cas", "a", "--expected", "2", "--new", "3"]).trim(),
        "cas a: swapped (was 2)"
    );
    assert_eq!(
        ok(&addresses, &["cas", "b", "--new", "x"]).trim(),
        "cas b: swapped (was (absent))"
    );
    assert_eq!(ok(&addresses, &["delete", "b"]).trim(), "delete b (was x)");
    assert!(fails(&addresses, &["get", "b"]).contains("b = (absent)"));
    let long_key = "k".repeat(coraft_examples::kv::KEY_BYTES_MAX + 1);
    let refused = fails(&addresses, &["put", &long_key, "v"]);
    assert!(
        refused.contains("a key of 4097 bytes exceeds 4096 bytes (not sent)"),
        "{refused}"
    );

    // Twenty puts, each its own client; the leader is killed after the tenth.
    for i in 0..20 {
        if i == 10 {
            let killed = leader(&servers);
            servers[killed - 1].take(); // SIGKILL
        }
        ok(&addresses, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    let scan = ok(&addresses, &["scan", "--start", "k", "--end", "l"]);
    let expected: Vec<String> = (0..20).map(|i| format!("k{i:02}=v{i}")).collect();
    assert_eq!(scan.lines().collect::<Vec<_>>(), expected);
    let all = ok(&addresses, &["scan", "--limit", "2"]);
    assert_eq!(all.lines().collect::<Vec<_>>(), ["a=3", "k00=v0"]);
}

#[test]
fn kv_client_refuses_bad_commands_before_contacting_anyone() {
    let addresses = free_addresses(1);
    assert!(fails(&addresses, &["cas", "a"]).contains("--new"));
    assert!(fails(&addresses, &["cas", "a", "--new", "x", "--delete"]).contains("cannot be used with"));
    assert!(fails(&addresses, &["scan", "--limit", "0"]).contains("--limit"));
    assert!(fails(&addresses, &["frobnicate"]).contains("frobnicate"));
    // Over the store's bound: refused before contacting anyone (the
    // cluster here is unreachable), naming the bound.
    let long_key = "k".repeat(4097);
    let put: [&str; 3] = ["put", &long_key, "v"];
    let get: [&str; 2] = ["get", &long_key];
    for args in [&put[..], &get[..]] {
        let text = fails(&addresses, args);
        assert!(
            text.contains("a key of 4097 bytes exceeds 4096 bytes (not sent)"),
            "{text}"
        );
    }
    // A malformed address and an unreachable cluster.
    let raw = |args: &[&str]| -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_kv-client"))
            .args(args)
            .output()
            .expect("kv-client runs");
        assert!(
            !output.status.success(),
            "kv-client {args:?} succeeded: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    let stderr = raw(&["--cluster", "127.0.0.1:8091,nowhere", "get", "a"]);
    assert!(stderr.contains("--cluster") && stderr.contains("`nowhere`"), "{stderr}");
    let stderr = raw(&[
        "--cluster",
        &cluster_flag(&addresses),
        "--wait-secs",
        "0",
        "put",
        "a",
        "1",
    ]);
    assert!(stderr.contains("no answer from the cluster"), "{stderr}");
}

#[test]
fn kv_servers_restarted_from_their_data_dirs_load_their_snapshots() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let snapshots = ["--snapshot-interval-ms", "100"];
    let servers: Vec<Server> = (1..=3)
        .map(|id| Server::start(SERVER, id, &addresses, &dirs[id - 1], &snapshots))
        .collect();
    ok(&addresses, &["put", "x", "1"]);
    ok(&addresses, &["put", "y", "2"]);
    for server in &servers {
        server.wait_for_durable_snapshot("snapshot saved: 2 keys");
    }
    drop(servers); // SIGKILL all three

    let servers: Vec<Server> = (1..=3)
        .map(|id| Server::start(SERVER, id, &addresses, &dirs[id - 1], &snapshots))
        .collect();
    for server in &servers {
        server.wait_for("snapshot loaded: 2 keys", 0);
    }
    assert_eq!(ok(&addresses, &["scan"]).lines().collect::<Vec<_>>(), ["x=1", "y=2"]);
    assert_eq!(ok(&addresses, &["put", "x", "3"]).trim(), "put x = 3 (was 1)");
}
