//! `coraft-admin` against real `coraft-node` processes over real TCP: each
//! command's output, and the error and exit status of each bad input. Also
//! the admin protocol itself on a raw connection: a malformed admin frame is
//! answered with a typed error and the connection goes on serving.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId};
use coraft_net::admin::{
    AdminError, AdminReply, AdminRequest, AdminRequestFrame, AdminResponseFrame, ADMIN_PROTOCOL_VERSION,
};
use coraft_net::{BlockingConnection, FrameEncoder, FrameKind, Hello, Role, WIRE_VERSION};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};
use serde_json::Value;

const CLUSTER: u64 = 9;

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` free loopback addresses.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let ports: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ports.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Writes one config per node (`shards` unbound shards each, shard `s`
/// listening on the node's port + `s`) and starts the nodes with `groups`
/// groups; returns the processes and config paths.
fn start_cluster(dir: &Path, addresses: &[SocketAddr], groups: u64, shards: usize) -> (Vec<Process>, Vec<PathBuf>) {
    let peers: Vec<Peer> = addresses
        .iter()
        .enumerate()
        .map(|(i, &address)| Peer {
            id: i as u64 + 1,
            address,
        })
        .collect();
    let mut processes = Vec::new();
    let mut paths = Vec::new();
    for (i, &listen) in addresses.iter().enumerate() {
        let mut config = NodeConfig {
            cluster_id: CLUSTER,
            node_id: i as u64 + 1,
            listen,
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        config.shards.count = shards;
        config.shards.placement = PlacementPolicy::Unbound;
        config.shards.spin_before_park_us = 0;
        config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
        let path = dir.join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
            .args(["--config", path.to_str().unwrap(), "--groups", &groups.to_string()])
            .spawn()
            .expect("coraft-node starts");
        processes.push(Process(child));
        paths.push(path);
    }
    (processes, paths)
}

/// Runs `coraft-admin` with `args`.
fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coraft-admin"))
        .args(args)
        .output()
        .expect("coraft-admin runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `coraft-admin --config CONFIG status --json`, parsed.
fn status_json(config: &Path) -> Option<Value> {
    let output = admin(&["--config", config.to_str().unwrap(), "--json", "status"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("status --json prints JSON"))
}

/// Each group's leader, if every node reporting agrees on one leader that
/// says it leads (and no other node says so).
fn agreed_leaders(status: &Value) -> Option<Vec<(u64, u64)>> {
    let mut by_group: std::collections::BTreeMap<u64, Vec<(u64, &Value)>> = Default::default();
    for node in status["nodes"].as_array()? {
        let id = node["node"].as_u64()?;
        for group in node["groups"].as_array()? {
            by_group.entry(group["group"].as_u64()?).or_default().push((id, group));
        }
    }
    let mut leaders = Vec::new();
    for (group, reports) in by_group {
        let leading: Vec<u64> = reports
            .iter()
            .filter(|(_, g)| g["role"] == "leader")
            .map(|(n, _)| *n)
            .collect();
        if leading.len() != 1 || reports.iter().any(|(_, g)| g["leader"].as_u64() != Some(leading[0])) {
            return None;
        }
        leaders.push((group, leading[0]));
    }
    Some(leaders)
}

/// Polls status until all `nodes` answer and every group has one leader all
/// agree on; fails the test after 30 s.
fn settled(config: &Path, nodes: usize) -> (Value, Vec<(u64, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = status_json(config) {
            if status["nodes"].as_array().map(Vec::len) == Some(nodes) {
                if let Some(leaders) = agreed_leaders(&status) {
                    return (status, leaders);
                }
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not settle within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leaders_per_node(leaders: &[(u64, u64)]) -> Vec<usize> {
    (1..=3)
        .map(|n| leaders.iter().filter(|(_, l)| *l == n).count())
        .collect()
}

fn group_of(status: &Value, node: u64, group: u64) -> &Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["groups"].as_array().unwrap().iter().find(|g| g["group"] == group))
        .unwrap_or_else(|| panic!("node {node} reports group {group}"))
}

#[test]
fn status_transfer_snapshot_and_rebalance_work_on_a_live_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let (_processes, paths) = start_cluster(dir.path(), &addresses, 6, 1);
    let config = paths[0].to_str().unwrap();

    // status: one leader per group, every node agreeing; indexes in order.
    let (status, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders.len(), 6, "{status}");
    for node in status["nodes"].as_array().unwrap() {
        assert_eq!(node["cluster_id"], CLUSTER);
        for group in node["groups"].as_array().unwrap() {
            let commit = group["commit_index"].as_u64().unwrap();
            let applied = group["applied_index"].as_u64().unwrap();
            let last = group["last_index"].as_u64().unwrap();
            assert!(applied <= commit && commit <= last, "{group}");
            assert_eq!(group["voters"], serde_json::json!([1, 2, 3]));
            if group["role"] == "leader" {
                assert!(commit >= 1, "a leader has committed its first entry: {group}");
                let peers = group["peers"].as_array().unwrap();
                assert_eq!(peers.len(), 2, "{group}");
                for peer in peers {
                    let matched = peer["match_index"].as_u64().unwrap();
                    assert!(matched <= last);
                    assert_eq!(peer["lag"].as_u64().unwrap(), last - matched);
                }
            } else {
                assert!(group["peers"].as_array().unwrap().is_empty());
            }
        }
    }
    let table = admin(&["--config", config, "status", "--group", "1"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("GROUP"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("1 ")).count(), 3, "{text}");
    assert_eq!(text.matches("leader ").count(), 1, "{text}");
    assert!(text.contains("leaders per node:"), "{text}");

    // transfer: group 1 moves to another node, which then leads it.
    let from = leaders.iter().find(|(g, _)| *g == 1).unwrap().1;
    let to = from % 3 + 1;
    let moved = admin(&["--config", config, "transfer", "--group", "1", "--to", &to.to_string()]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert!(
        stdout(&moved).contains(&format!("from node {from} to node {to}")),
        "{}",
        stdout(&moved)
    );
    let (_, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders.iter().find(|(g, _)| *g == 1).unwrap().1, to);

    // snapshot: after writes to group 2, every node's snapshot index rises
    // from 0 to the index the command printed.
    let mut client = Client::new(ClientConfig {
        cluster_id: CLUSTER,
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
            .collect(),
        attempt_timeout: Duration::from_secs(2),
    });
    for _ in 0..5 {
        client.write(GroupId(2), b"x").expect("a write to group 2");
    }
    let (before, _) = settled(&paths[0], 3);
    for node in 1..=3 {
        assert_eq!(group_of(&before, node, 2)["snapshot_index"], 0);
    }
    let snapshot = admin(&["--config", config, "--json", "snapshot", "--group", "2"]);
    assert!(snapshot.status.success(), "{}", stderr(&snapshot));
    let taken: Value = serde_json::from_slice(&snapshot.stdout).unwrap();
    let taken = taken["snapshots"].as_array().unwrap();
    assert_eq!(taken.len(), 3, "one snapshot per node: {taken:?}");
    let (after, _) = settled(&paths[0], 3);
    for entry in taken {
        let index = entry["snapshot_index"].as_u64().unwrap();
        // The session registration and five writes are applied everywhere
        // by the time the followers learn the commit index; a follower may
        // lag, but the leader has applied all of them.
        assert!(index >= 1, "{entry}");
        let node = entry["node"].as_u64().unwrap();
        assert_eq!(group_of(&after, node, 2)["snapshot_index"], index);
    }
    let leader_of_2 = agreed_leaders(&after).unwrap().iter().find(|(g, _)| *g == 2).unwrap().1;
    let leader_snapshot = taken.iter().find(|e| e["node"] == leader_of_2).unwrap();
    assert!(
        leader_snapshot["snapshot_index"].as_u64().unwrap() >= 6,
        "{leader_snapshot}"
    );

    // rebalance: with every group led by node 1, it ends at 2 per node.
    for group in 1..=6 {
        let moved = admin(&[
            "--config",
            config,
            "transfer",
            "--group",
            &group.to_string(),
            "--to",
            "1",
        ]);
        assert!(moved.status.success(), "{}", stderr(&moved));
    }
    let (_, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders_per_node(&leaders), vec![6, 0, 0]);
    let rebalanced = admin(&["--config", config, "--json", "rebalance"]);
    assert!(
        rebalanced.status.success(),
        "{}{}",
        stdout(&rebalanced),
        stderr(&rebalanced)
    );
    let report: Value = serde_json::from_slice(&rebalanced.stdout).unwrap();
    assert_eq!(report["moves"].as_array().unwrap().len(), 4, "{report}");
    assert_eq!(
        report["leaders_after"],
        serde_json::json!({"1": 2, "2": 2, "3": 2}),
        "{report}"
    );
    let (_, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders_per_node(&leaders), vec![2, 2, 2]);
    // A second rebalance has nothing to do.
    let again = admin(&["--config", config, "rebalance"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("nothing to move"), "{}", stdout(&again));
}

/// One admin request on a raw connection; the answer, deserialized.
fn raw_call(connection: &mut BlockingConnection, frame_bytes: &[u8]) -> AdminResponseFrame {
    connection.send_raw(frame_bytes).unwrap();
    loop {
        let frame = connection.recv().unwrap().expect("an answer, not a closed connection");
        if let Some(archived) = frame.admin_response() {
            return rkyv::deserialize::<AdminResponseFrame, rkyv::rancor::Error>(archived).unwrap();
        }
    }
}

fn request_bytes(version: u16, cluster_id: u64, request: AdminRequest) -> Vec<u8> {
    let mut encoder = FrameEncoder::new();
    encoder
        .encode(&AdminRequestFrame {
            version,
            cluster_id,
            request_id: 7,
            request,
        })
        .unwrap();
    encoder.as_bytes().to_vec()
}

#[test]
fn bad_addresses_groups_clusters_and_frames_get_clear_errors_and_a_failing_exit() {
    // No node at all: unreachable, exit 1, the address named.
    let closed = free_addresses(1)[0];
    let output = admin(&["--node", &closed.to_string(), "--cluster-id", "9", "status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot reach a node at {closed}")),
        "{}",
        stderr(&output)
    );

    // One node of two shards: group 1 lives on shard 1, group 2 on shard 0.
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(1);
    let (_processes, paths) = start_cluster(dir.path(), &addresses, 2, 2);
    let config = paths[0].to_str().unwrap();
    let node = addresses[0].to_string();
    settled(&paths[0], 1);
    // Either shard's address answers for every group of the node.
    let second_shard = SocketAddr::new(addresses[0].ip(), addresses[0].port() + 1).to_string();
    let both = admin(&["--node", &second_shard, "--cluster-id", "9", "--json", "status"]);
    assert!(both.status.success(), "{}", stderr(&both));
    let both: Value = serde_json::from_slice(&both.stdout).unwrap();
    assert_eq!(both["nodes"][0]["shards"], 2, "{both}");
    let groups: Vec<u64> = both["nodes"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_u64().unwrap())
        .collect();
    assert_eq!(groups, vec![1, 2]);

    let unknown = admin(&["--config", config, "status", "--group", "77"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("unknown group 77"), "{}", stderr(&unknown));
    let unknown = admin(&["--config", config, "transfer", "--group", "77", "--to", "1"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("unknown group 77"), "{}", stderr(&unknown));
    let unknown = admin(&["--config", config, "snapshot", "--group", "77"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("unknown group 77"), "{}", stderr(&unknown));

    let foreign = admin(&["--node", &node, "--cluster-id", "10", "status"]);
    assert_eq!(foreign.status.code(), Some(1));
    assert!(
        stderr(&foreign).contains(&format!("the node at {node} belongs to cluster 9, not to cluster 10")),
        "{}",
        stderr(&foreign)
    );

    let not_a_voter = admin(&["--config", config, "transfer", "--group", "1", "--to", "5"]);
    assert_eq!(not_a_voter.status.code(), Some(1));
    assert!(stderr(&not_a_voter).contains("not a voter"), "{}", stderr(&not_a_voter));

    let no_cluster = admin(&["--node", &node, "status"]);
    assert_eq!(no_cluster.status.code(), Some(1));
    assert!(stderr(&no_cluster).contains("--cluster-id"), "{}", stderr(&no_cluster));
    let bad_address = admin(&["--node", "nowhere", "--cluster-id", "9", "status"]);
    assert_eq!(bad_address.status.code(), Some(2));
    assert!(
        stderr(&bad_address).contains("not a host:port address"),
        "{}",
        stderr(&bad_address)
    );

    let help = admin(&["--help"]);
    assert!(help.status.success());
    for option in [
        "--node",
        "--config",
        "--cluster-id",
        "--json",
        "--timeout-ms",
        "[default: 5000]",
    ] {
        assert!(
            stdout(&help).contains(option),
            "--help lacks {option}: {}",
            stdout(&help)
        );
    }
    let help = admin(&["rebalance", "--help"]);
    assert!(stdout(&help).contains("[default: 30000]"), "{}", stdout(&help));

    // The protocol itself: a body that is no admin archive, another
    // version, another cluster in the body: each a typed answer, and the
    // connection still serves the next request.
    let hello = Hello {
        cluster_id: CLUSTER,
        node_id: 0,
        shard_id: 0,
        target_shard_id: 0,
        target_node_id: 0,
        role: Role::Client,
    };
    let mut connection = BlockingConnection::connect(addresses[0], &hello, Duration::from_secs(5)).unwrap();
    let mut garbage = FrameEncoder::new();
    garbage
        .encode_raw(FrameKind::AdminRequest, WIRE_VERSION, &[0xff; 48])
        .unwrap();
    let answer = raw_call(&mut connection, garbage.as_bytes());
    assert_eq!(answer.request_id, 0);
    assert!(
        matches!(&answer.result, Err(AdminError::BadRequest { reason }) if reason.contains("does not read")),
        "{answer:?}"
    );
    let answer = raw_call(
        &mut connection,
        &request_bytes(99, CLUSTER, AdminRequest::Status { groups: vec![] }),
    );
    assert_eq!(
        answer.result,
        Err(AdminError::UnsupportedVersion {
            found: 99,
            supported: ADMIN_PROTOCOL_VERSION
        })
    );
    let answer = raw_call(
        &mut connection,
        &request_bytes(ADMIN_PROTOCOL_VERSION, 4, AdminRequest::Status { groups: vec![] }),
    );
    assert_eq!(
        answer.result,
        Err(AdminError::WrongCluster {
            expected: CLUSTER,
            found: 4
        })
    );
    let answer = raw_call(
        &mut connection,
        &request_bytes(ADMIN_PROTOCOL_VERSION, CLUSTER, AdminRequest::Status { groups: vec![] }),
    );
    assert_eq!(answer.request_id, 7);
    match answer.result {
        Ok(AdminReply::Status(report)) => {
            assert_eq!(report.node, 1);
            assert_eq!(report.groups.len(), 2);
        }
        other => panic!("a status answer, not {other:?}"),
    }
}
