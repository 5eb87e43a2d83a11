//! `kv-server --store redb` as a user runs it: three processes whose pairs
//! live in redb files, killed with SIGKILL and restarted from their data
//! directories, and a node that missed writes catching up.

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

fn ok(addresses: &[SocketAddr], args: &[&str]) -> String {
    let output = kv(addresses, args);
    assert!(
        output.status.success(),
        "kv-client {args:?} failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn start(addresses: &[SocketAddr], dirs: &[std::path::PathBuf], id: usize) -> Server {
    let flags = ["--store", "redb", "--snapshot-interval-ms", "100"];
    Server::start(SERVER, id, addresses, &dirs[id - 1], &flags)
}

#[test]
fn redb_servers_killed_and_restarted_keep_every_pair_without_reloading_their_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let servers: Vec<Server> = (1..=3).map(|id| start(&addresses, &dirs, id)).collect();
    ok(&addresses, &["put", "x", "1"]);
    ok(&addresses, &["put", "y", "2"]);
    for server in &servers {
        server.wait_for_durable_snapshot("snapshot saved: 2 keys");
    }
    drop(servers); // SIGKILL all three
    for dir in &dirs {
        assert!(dir.join("kv.redb").exists(), "no store file in {}", dir.display());
    }

    let servers: Vec<Server> = (1..=3).map(|id| start(&addresses, &dirs, id)).collect();
    for server in &servers {
        server.wait_for("redb store opened: 2 keys", 0);
        // The snapshot is what the store holds already: nothing is copied.
        server.wait_for("is already in the store: 2 keys", 0);
    }
    assert_eq!(ok(&addresses, &["scan"]).lines().collect::<Vec<_>>(), ["x=1", "y=2"]);
    assert_eq!(ok(&addresses, &["put", "x", "3"]).trim(), "put x = 3 (was 1)");
    assert_eq!(ok(&addresses, &["get", "x"]).trim(), "x = 3");
}

#[test]
fn a_redb_server_that_missed_writes_catches_up_and_restarts_with_them() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let mut servers: Vec<Option<Server>> = (1..=3).map(|id| Some(start(&addresses, &dirs, id))).collect();
    ok(&addresses, &["put", "a", "1"]);
    servers[2].take(); // SIGKILL node 3
    for i in 0..20 {
        ok(&addresses, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    ok(&addresses, &["delete", "a"]);
    servers[2] = Some(start(&addresses, &dirs, 3));
    // Node 3 alone answers stale reads from its own store: it comes to
    // hold every pair, and again after it is killed and restarted.
    wait_until_node_holds(&addresses, 3, 20);
    servers[2].take();
    servers[2] = Some(start(&addresses, &dirs, 3));
    servers[2].as_ref().unwrap().wait_for("redb store opened", 0);
    wait_until_node_holds(&addresses, 3, 20);
    assert_eq!(ok(&addresses, &["get", "k19"]).trim(), "k19 = v19");
}

/// Waits until node `id`'s stale scan shows exactly `k00=v0`... up to
/// `count` pairs (and not the deleted `a`).
fn wait_until_node_holds(addresses: &[SocketAddr], id: usize, count: usize) {
    let only = format!("{id}={}", addresses[id - 1]);
    let expected: Vec<String> = (0..count).map(|i| format!("k{i:02}=v{i}")).collect();
    let deadline = std::time::Instant::now() + common::EVENT_WAIT;
    loop {
        let output = Command::new(env!("CARGO_BIN_EXE_kv-client"))
            .args(["--cluster", &only, "scan", "--stale"])
            .output()
            .expect("kv-client runs");
        let scan = String::from_utf8_lossy(&output.stdout).into_owned();
        if scan.lines().collect::<Vec<_>>() == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "node {id} holds: {scan}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
