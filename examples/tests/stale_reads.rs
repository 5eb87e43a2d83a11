//! Stale reads as a user runs them: `kv-client get --stale` against one
//! `kv-server` process, answered from what that node applied, even once the
//! other two are killed, while a linearizable read there cannot be served.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Instant;

use common::{cluster_flag, data_dirs, describe, free_addresses, Server, EVENT_WAIT};

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");

fn kv(cluster: &str, wait_secs: u64, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-client"))
        .args(["--cluster", cluster, "--wait-secs", &wait_secs.to_string()])
        .args(args)
        .output()
        .expect("kv-client runs")
}

fn ok(cluster: &str, args: &[&str]) -> String {
    let output = kv(cluster, 60, args);
    assert!(
        output.status.success(),
        "kv-client {args:?} failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `ID=HOST:PORT` of one node: a client that talks to it alone.
fn only(addresses: &[SocketAddr], id: usize) -> String {
    format!("{id}={}", addresses[id - 1])
}

/// The node that printed `leader start` last.
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
fn a_follower_cut_off_from_the_leader_answers_stale_reads_with_what_it_applied() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let dirs = data_dirs(root.path());
    let no_snapshots = ["--snapshot-interval-ms", "0"];
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|id| Some(Server::start(SERVER, id, &addresses, &dirs[id - 1], &no_snapshots)))
        .collect();
    let all = cluster_flag(&addresses);
    let written: Vec<String> = (1..=5).map(|i| format!("v{i}")).collect();
    for value in &written {
        ok(&all, &["put", "k", value]);
    }
    let leader = leader(&servers);
    let follower = leader % 3 + 1;
    let at_follower = only(&addresses, follower);

    // The follower may lag behind the acknowledged writes: its stale reads
    // show values that were written, in the order they were written, up to
    // the last one.
    let deadline = Instant::now() + EVENT_WAIT;
    let mut seen = 0;
    loop {
        let output = kv(&at_follower, 60, &["get", "k", "--stale"]);
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if text != "k = (absent)" {
            let value = text
                .strip_prefix("k = ")
                .unwrap_or_else(|| panic!("{}", describe(&output)));
            let at = written
                .iter()
                .position(|w| w == value)
                .unwrap_or_else(|| panic!("a stale read returned {value}, which nobody wrote"));
            assert!(at + 1 >= seen, "stale reads went back from v{seen} to {value}");
            seen = at + 1;
        }
        if seen == written.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the follower applied only v{seen}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Cut it off: the leader and the other follower are killed (SIGKILL).
    for id in (1..=3).filter(|&id| id != follower) {
        servers[id - 1].take();
    }
    // Alone, it answers stale reads with the last value it applied...
    assert_eq!(ok(&at_follower, &["get", "k", "--stale"]).trim(), "k = v5");
    let scan = ok(&at_follower, &["scan", "--stale"]);
    assert_eq!(scan.trim(), "k=v5");
    // ...but no linearizable read: no leader can confirm one.
    let output = kv(&at_follower, 3, &["get", "k"]);
    assert!(
        !output.status.success(),
        "a cut-off follower served a linearizable read: {}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no answer from the cluster"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // It stays what it applied while the node elects in vain.
    assert_eq!(ok(&at_follower, &["get", "k", "--stale"]).trim(), "k = v5");
}
