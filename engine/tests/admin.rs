//! `coraft-admin` against real `coraft-node` processes over real TCP: each
//! command's output, and the error and exit status of each bad input. Also
//! the admin protocol itself on a raw connection: a malformed admin frame is
//! answered with a typed error and the connection goes on serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId};
use coraft_net::admin::{
    AdminError, AdminReply, AdminRequest, AdminRequestFrame, AdminResponseFrame, NodeAddresses, ADMIN_ANSWER_BYTES_MAX,
    ADMIN_PROTOCOL_VERSION, ADMIN_STATUS_GROUPS_MAX,
};
use coraft_net::{BlockingConnection, FrameEncoder, FrameKind, Hello, Role, WIRE_VERSION};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};
use serde_json::{json, Value};

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
    coraft::ports::free_loopback_addresses(count).unwrap()
}

/// `count` free loopback addresses on consecutive ports (a node's shards
/// listen on its port, its port + 1, ...).
fn consecutive_ports(count: usize) -> Vec<SocketAddr> {
    loop {
        let addresses = free_addresses(count);
        if addresses.windows(2).all(|pair| pair[1].port() == pair[0].port() + 1) {
            return addresses;
        }
    }
}

/// Nodes 1, 2, ... at `addresses`, in order.
fn peers_of(addresses: &[SocketAddr]) -> Vec<Peer> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, &address)| Peer {
            id: i as u64 + 1,
            address,
        })
        .collect()
}

/// Writes one config per node (`shards` unbound shards each, shard `s`
/// listening on the node's port + `s`) and starts the nodes with `groups`
/// groups; returns the processes and config paths.
fn start_cluster(dir: &Path, addresses: &[SocketAddr], groups: u64, shards: usize) -> (Vec<Process>, Vec<PathBuf>) {
    let peers = peers_of(addresses);
    let mut processes = Vec::new();
    let mut paths = Vec::new();
    for i in 0..addresses.len() {
        let path = write_config(dir, i as u64 + 1, &peers, shards);
        processes.push(start_node(&path, groups, &[]));
        paths.push(path);
    }
    (processes, paths)
}

/// Writes node `id`'s config (listening on its address in `peers`).
fn write_config(dir: &Path, id: u64, peers: &[Peer], shards: usize) -> PathBuf {
    write_config_with_priority(dir, id, peers, shards, 0)
}

/// Writes node `id`'s config like `write_config`, with `raft.election_priority`.
fn write_config_with_priority(dir: &Path, id: u64, peers: &[Peer], shards: usize, priority: u8) -> PathBuf {
    let mut config = NodeConfig {
        cluster_id: CLUSTER,
        node_id: id,
        listen: peers.iter().find(|p| p.id == id).expect("listed").address,
        peers: peers.to_vec(),
        ..NodeConfig::default()
    };
    config.shards.count = shards;
    config.shards.placement = PlacementPolicy::Unbound;
    config.shards.spin_before_park_us = 0;
    config.raft.election_priority = priority;
    config.wal.dir = Some(dir.join(format!("node-{id}")));
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    path
}

fn start_node(config: &Path, groups: u64, flags: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", config.to_str().unwrap(), "--groups", &groups.to_string()])
        .args(flags)
        .spawn()
        .expect("coraft-node starts");
    Process(child)
}

/// Runs `coraft-admin` with `args`.
fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coraft-admin"))
        .args(args)
        .output()
        .expect("coraft-admin runs")
}

/// A client of nodes 1, 2, ... at `addresses`, in order.
fn client_of(addresses: &[SocketAddr]) -> Client {
    Client::new(ClientConfig {
        cluster_id: CLUSTER,
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
            .collect(),
        attempt_timeout: Duration::from_secs(2),
    })
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
                // A new leader's first entry commits a moment after the
                // nodes agree on it: settled waits for that too.
                if let Some(leaders) = agreed_leaders(&status).filter(|_| leaders_committed(&status)) {
                    return (status, leaders);
                }
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not settle within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether every leader in `status` has committed an entry (its term's
/// first, at least).
fn leaders_committed(status: &Value) -> bool {
    status["nodes"].as_array().into_iter().flatten().all(|node| {
        node["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["role"] == "leader")
            .all(|g| g["commit_index"].as_u64().is_some_and(|c| c >= 1))
    })
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
            assert_eq!(group["voters"], json!([1, 2, 3]));
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
    let mut client = client_of(&addresses);
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
    assert_eq!(report["leaders_after"], json!({"1": 2, "2": 2, "3": 2}), "{report}");
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
    // Its second shard listens on the next port: take both from the
    // allocator, or another test of this process may be handed that port.
    let addresses = consecutive_ports(2)[..1].to_vec();
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
    // The membership commands too: each names the group, exit status 1.
    for command in [
        &["add-learner", "--group", "77", "--id", "4", "--address", "127.0.0.1:1"][..],
        &["add-voter", "--group", "77", "--id", "4", "--address", "127.0.0.1:1"],
        &["promote", "--group", "77", "--id", "4"],
        &["remove", "--group", "77", "--id", "1"],
        &["change", "--group", "77", "--voters", "1"],
        &[
            "reset-peers",
            "--group",
            "77",
            "--voters",
            "1",
            "--yes-i-know-this-can-lose-data",
        ],
    ] {
        let unknown = admin(&[&["--config", config][..], command].concat());
        assert_eq!(unknown.status.code(), Some(1), "{command:?}: {}", stderr(&unknown));
        assert!(
            stderr(&unknown).contains("unknown group 77"),
            "{command:?}: {}",
            stderr(&unknown)
        );
    }

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
        client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
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
    // Tools of versions 1 and 2 (before NodeReport carried the election
    // priority; before StatusPage) are told so, on the same connection.
    assert_eq!(ADMIN_PROTOCOL_VERSION, 6);
    for old in [1, 2] {
        let answer = raw_call(
            &mut connection,
            &request_bytes(old, CLUSTER, AdminRequest::Status { groups: vec![] }),
        );
        assert_eq!(
            answer.result,
            Err(AdminError::UnsupportedVersion {
                found: old,
                supported: 6
            })
        );
    }
    // A version 3 tool is served (its requests read alike in versions 4 to 6),
    // but not the request version 4 added.
    let answer = raw_call(
        &mut connection,
        &request_bytes(3, CLUSTER, AdminRequest::Status { groups: vec![] }),
    );
    assert!(matches!(answer.result, Ok(AdminReply::Status(_))), "{answer:?}");
    let answer = raw_call(&mut connection, &request_bytes(3, CLUSTER, AdminRequest::Installs));
    assert_eq!(
        answer.result,
        Err(AdminError::UnsupportedVersion { found: 3, supported: 6 })
    );
    // A version 4 tool gets the streams, but not the shard states version
    // 5 added.
    let answer = raw_call(&mut connection, &request_bytes(4, CLUSTER, AdminRequest::Installs));
    assert!(matches!(answer.result, Ok(AdminReply::Installs { .. })), "{answer:?}");
    let answer = raw_call(&mut connection, &request_bytes(4, CLUSTER, AdminRequest::Shards));
    assert_eq!(
        answer.result,
        Err(AdminError::UnsupportedVersion { found: 4, supported: 6 })
    );
    let answer = raw_call(&mut connection, &request_bytes(5, CLUSTER, AdminRequest::Shards));
    match &answer.result {
        Ok(AdminReply::Shards(shards)) => {
            assert!(!shards.is_empty(), "{answer:?}");
            assert!(
                shards
                    .iter()
                    .all(|s| s.state == coraft_net::admin::ShardState::Serving && s.reason.is_empty()),
                "{answer:?}"
            );
        }
        other => panic!("a version 5 Shards request answered {other:?}"),
    }
    // A version 5 tool is not served the group requests version 6 added.
    let answer = raw_call(
        &mut connection,
        &request_bytes(5, CLUSTER, AdminRequest::RemoveGroup { group: 1 }),
    );
    assert_eq!(
        answer.result,
        Err(AdminError::UnsupportedVersion { found: 5, supported: 6 })
    );
    let answer = raw_call(&mut connection, &request_bytes(4, CLUSTER, AdminRequest::Installs));
    assert_eq!(
        answer.result,
        Ok(AdminReply::Installs {
            installs: vec![],
            total: 0
        })
    );
    // But a node joining from a version 2 build gets the addresses it asks
    // its seed for (the request and answer are laid out alike).
    let answer = raw_call(&mut connection, &request_bytes(2, CLUSTER, AdminRequest::Addresses));
    match answer.result {
        Ok(AdminReply::Addresses(nodes)) => assert!(nodes.len() <= 1, "{nodes:?}"),
        other => panic!("an addresses answer, not {other:?}"),
    }
    // A status answer too large for ADMIN_ANSWER_BYTES_MAX (group 2 named
    // as often as a request allows) is refused with the bound named, and
    // the connection serves on.
    let answer = raw_call(
        &mut connection,
        &request_bytes(
            ADMIN_PROTOCOL_VERSION,
            CLUSTER,
            AdminRequest::Status {
                groups: vec![2; ADMIN_STATUS_GROUPS_MAX],
            },
        ),
    );
    match &answer.result {
        Err(error @ AdminError::AnswerTooLarge { bytes, bytes_max }) => {
            assert_eq!(*bytes_max, ADMIN_ANSWER_BYTES_MAX as u64);
            assert!(*bytes > *bytes_max);
            assert!(
                error.to_string().contains("ADMIN_ANSWER_BYTES_MAX") && error.to_string().contains("pages"),
                "{error}"
            );
        }
        other => panic!("AnswerTooLarge, not {other:?}"),
    }
    // The same node's status in pages of one group: 1, 2, then none.
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let answer = raw_call(
            &mut connection,
            &request_bytes(
                ADMIN_PROTOCOL_VERSION,
                CLUSTER,
                AdminRequest::StatusPage { after, groups_max: 1 },
            ),
        );
        let Ok(AdminReply::Status(report)) = answer.result else {
            panic!("a status page, not {answer:?}");
        };
        let page: Vec<u64> = report.groups.iter().map(|g| g.group).collect();
        pages.push(page.clone());
        match page.last() {
            Some(&last) => after = last,
            None => break,
        }
        assert!(pages.len() <= 3, "{pages:?}");
    }
    assert_eq!(pages, vec![vec![1], vec![2], vec![]]);
    let answer = raw_call(
        &mut connection,
        &request_bytes(
            ADMIN_PROTOCOL_VERSION,
            CLUSTER,
            AdminRequest::StatusPage {
                after: 0,
                groups_max: 0,
            },
        ),
    );
    assert!(
        matches!(&answer.result, Err(AdminError::BadRequest { reason }) if reason.contains("ADMIN_STATUS_PAGE_GROUPS_MAX")),
        "{answer:?}"
    );
    // coraft-admin asks in pages: one group per answer still lists both.
    let paged = admin(&["--config", config, "--json", "status", "--page-groups", "1"]);
    assert!(paged.status.success(), "{}", stderr(&paged));
    let paged: Value = serde_json::from_slice(&paged.stdout).unwrap();
    let listed: Vec<u64> = paged["nodes"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![1, 2]);
    let zero = admin(&["--config", config, "status", "--page-groups", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
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

/// `coraft-admin ARGS --json status` of one group, parsed, if it succeeded.
fn group_status(args: &[&str], group: u64) -> Option<Value> {
    let mut all: Vec<&str> = args.to_vec();
    let group = group.to_string();
    all.extend(["--json", "status", "--group", &group]);
    let output = admin(&all);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).unwrap())
}

/// The report of `group` by its leader among the nodes `args` names.
fn leader_report(args: &[&str], group: u64) -> Option<Value> {
    let status = group_status(args, group)?;
    status["nodes"]
        .as_array()?
        .iter()
        .flat_map(|n| n["groups"].as_array().cloned().unwrap_or_default())
        .find(|g| g["role"] == "leader")
}

/// Polls until `check` holds for the leader's report of `group`; fails the
/// test after 30 s, naming `what`.
fn until_leader_reports(args: &[&str], group: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(report) = leader_report(args, group) {
            if check(&report) {
                return report;
            }
        }
        assert!(Instant::now() < deadline, "within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn succeeds(output: &Output) -> String {
    assert!(output.status.success(), "{}{}", stdout(output), stderr(output));
    stdout(output)
}

#[test]
fn membership_commands_replace_a_node_and_reset_peers_revives_a_group_that_lost_its_majority() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(4);
    let (mut processes, paths) = start_cluster(dir.path(), &addresses[..3], 2, 1);
    let config = paths[0].to_str().unwrap();
    settled(&paths[0], 3);
    let mut client = client_of(&addresses[..3]);
    for _ in 0..5 {
        client.write(GroupId(2), b"before").expect("a write to group 2");
    }

    // Node 4 starts empty, knowing the members' addresses, and waits.
    let all_peers: Vec<Peer> = addresses
        .iter()
        .enumerate()
        .map(|(i, &address)| Peer {
            id: i as u64 + 1,
            address,
        })
        .collect();
    let fourth = write_config(dir.path(), 4, &all_peers, 1);
    processes.push(start_node(&fourth, 2, &["--join"]));
    let node_4 = addresses[3].to_string();
    let with_config = ["--config", config];

    // add-learner, then promote, in group 1.
    let added = admin(&[
        "--config",
        config,
        "add-learner",
        "--group",
        "1",
        "--id",
        "4",
        "--address",
        &node_4,
    ]);
    assert_eq!(succeeds(&added).trim(), "group 1: node 4 added as a learner");
    let report = leader_report(&with_config, 1).unwrap();
    assert_eq!(report["learners"], json!([4]), "{report}");
    assert_eq!(report["voters"], json!([1, 2, 3]), "{report}");
    let promoted = admin(&["--config", config, "promote", "--group", "1", "--id", "4"]);
    assert_eq!(succeeds(&promoted).trim(), "group 1: learner 4 promoted to voter");
    until_leader_reports(&with_config, 1, "node 4 votes in group 1", |r| {
        r["voters"] == json!([1, 2, 3, 4])
    });
    // Promoting it again is refused: it is no learner now.
    let again = admin(&["--config", config, "promote", "--group", "1", "--id", "4"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("bad request"), "{}", stderr(&again));

    // add-voter in group 2: caught up first, then a voter; node 4 holds
    // the writes made before it joined.
    let added = admin(&[
        "--config",
        config,
        "add-voter",
        "--group",
        "2",
        "--id",
        "4",
        "--address",
        &node_4,
    ]);
    assert_eq!(succeeds(&added).trim(), "group 2: node 4 added as a voter");
    let leader = until_leader_reports(&with_config, 2, "node 4 votes in group 2", |r| {
        r["voters"] == json!([1, 2, 3, 4])
    });
    let commit = leader["commit_index"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_4 = group_status(&["--node", &node_4, "--cluster-id", "9"], 2);
        let applied = on_4
            .as_ref()
            .and_then(|s| s["nodes"][0]["groups"][0]["applied_index"].as_u64());
        if applied.is_some_and(|a| a >= commit) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 did not apply group 2 up to {commit}: {on_4:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // remove node 3 from every group; then a joint change of group 1.
    let removed = admin(&["--config", config, "remove", "--id", "3"]);
    assert_eq!(succeeds(&removed), "group 1: node 3 removed\ngroup 2: node 3 removed\n");
    let members = [
        "--node",
        &addresses[0].to_string(),
        "--node",
        &addresses[1].to_string(),
        "--node",
        &node_4,
    ];
    let mut members: Vec<&str> = members.to_vec();
    members.extend(["--cluster-id", "9"]);
    for group in [1, 2] {
        until_leader_reports(&members, group, "node 3 is out", |r| r["voters"] == json!([1, 2, 4]));
    }
    let mut change = members.clone();
    change.extend(["change", "--group", "1", "--voters", "1,2"]);
    assert_eq!(succeeds(&admin(&change)).trim(), "group 1: voters are now 1,2");
    until_leader_reports(&members, 1, "group 1 has voters 1 and 2", |r| {
        r["voters"] == json!([1, 2])
    });

    // reset-peers: refused without the flag, and says what it can lose.
    let refused = admin(&["--config", config, "reset-peers", "--group", "2", "--voters", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("CAN LOSE ACKNOWLEDGED WRITES"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("refused without --yes-i-know-this-can-lose-data"),
        "{}",
        stderr(&refused)
    );
    // Nodes 2 and 4 are gone for good: group 2 (voters 1, 2, 4) lost its
    // majority; reset on the survivor brings it back, and it takes writes.
    drop(processes.remove(3));
    drop(processes.remove(1));
    let node_1 = addresses[0].to_string();
    let reset = admin(&[
        "--node",
        &node_1,
        "--cluster-id",
        "9",
        "reset-peers",
        "--group",
        "2",
        "--voters",
        "1",
        "--yes-i-know-this-can-lose-data",
    ]);
    assert_eq!(succeeds(&reset).trim(), "group 2: voters forced to 1 on node(s) 1");
    until_leader_reports(
        &["--node", &node_1, "--cluster-id", "9"],
        2,
        "node 1 leads group 2 alone",
        |r| r["voters"] == json!([1]),
    );
    let mut survivor = client_of(&addresses[..1]);
    let count = survivor.write(GroupId(2), b"after").expect("the survivor takes writes");
    assert_eq!(
        u64::from_le_bytes(count.try_into().unwrap()),
        6,
        "the five writes before and this one"
    );
}

#[test]
fn rebalance_of_a_hundred_groups_on_three_nodes_leaves_each_leading_33_plus_or_minus_1() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let (_processes, paths) = start_cluster(dir.path(), &addresses, 100, 1);
    let config = paths[0].to_str().unwrap();
    let (_, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders.len(), 100);
    let rebalanced = admin(&["--config", config, "--json", "rebalance", "--wait-ms", "60000"]);
    assert!(
        rebalanced.status.success(),
        "{}{}",
        stdout(&rebalanced),
        stderr(&rebalanced)
    );
    let report: Value = serde_json::from_slice(&rebalanced.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    let (_, leaders) = settled(&paths[0], 3);
    for (node, count) in leaders_per_node(&leaders).into_iter().enumerate() {
        assert!(
            (32..=34).contains(&count),
            "node {} leads {count} of 100 groups",
            node + 1
        );
    }
}

#[test]
fn rebalance_with_priorities_5_5_1_gives_node_3_no_leader_and_splits_30_groups_between_1_and_2() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let peers = peers_of(&addresses);
    let mut _processes = Vec::new();
    let mut paths = Vec::new();
    for (id, priority) in [(1u64, 5u8), (2, 5), (3, 1)] {
        let path = write_config_with_priority(dir.path(), id, &peers, 1, priority);
        _processes.push(start_node(&path, 30, &[]));
        paths.push(path);
    }
    let config = paths[0].to_str().unwrap();
    let (status, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders.len(), 30);
    // status shows each node's priority, in JSON and in the table.
    let priorities: Vec<(u64, u64)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_u64().unwrap(), n["election_priority"].as_u64().unwrap()))
        .collect();
    assert_eq!(priorities, vec![(1, 5), (2, 5), (3, 1)], "{status}");
    let table = admin(&["--config", config, "status", "--group", "1"]);
    assert!(
        stdout(&table).contains("election priority (0: none): node 1: 5, node 2: 5, node 3: 1"),
        "{}",
        stdout(&table)
    );
    // Node 3 (priority 1) is made to lead ten groups, node 1 the rest.
    for group in 1..=30u64 {
        let to = if group <= 10 { "3" } else { "1" };
        let moved = admin(&[
            "--config",
            config,
            "transfer",
            "--group",
            &group.to_string(),
            "--to",
            to,
        ]);
        assert!(moved.status.success(), "group {group}: {}", stderr(&moved));
    }
    let (_, leaders) = settled(&paths[0], 3);
    assert_eq!(leaders_per_node(&leaders), vec![20, 0, 10]);

    let rebalanced = admin(&["--config", config, "--json", "rebalance", "--wait-ms", "60000"]);
    assert!(
        rebalanced.status.success(),
        "{}{}",
        stdout(&rebalanced),
        stderr(&rebalanced)
    );
    let report: Value = serde_json::from_slice(&rebalanced.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["leaders_after"], json!({"1": 15, "2": 15, "3": 0}), "{report}");
    let (_, leaders) = settled(&paths[0], 3);
    let counts = leaders_per_node(&leaders);
    assert_eq!(counts[2], 0, "node 3 (priority 1) leads {counts:?}");
    assert!(counts[0].abs_diff(counts[1]) <= 1, "nodes 1 and 2 lead {counts:?}");
    // Balanced by priority already: a second rebalance moves nothing.
    let again = admin(&["--config", config, "rebalance"]);
    assert!(
        stdout(&again).contains("the leaders are already balanced: nothing to move"),
        "{}",
        stdout(&again)
    );
}

/// Starts node `config` like `start_node`, its log (stderr, `info`) going
/// to `log`.
fn start_logged_node(config: &Path, groups: u64, log: &Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", config.to_str().unwrap(), "--groups", &groups.to_string()])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("coraft-node starts");
    Process(child)
}

#[test]
fn removing_the_leader_hands_leadership_over_before_the_removal_and_the_removed_node_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let peers = peers_of(&addresses);
    let mut logs = Vec::new();
    let mut paths = Vec::new();
    let mut _processes = Vec::new();
    for id in 1..=3u64 {
        let path = write_config(dir.path(), id, &peers, 1);
        let log = dir.path().join(format!("node-{id}.log"));
        _processes.push(start_logged_node(&path, 1, &log));
        logs.push(log);
        paths.push(path);
    }
    let config = paths[0].to_str().unwrap();
    let (_, leaders) = settled(&paths[0], 3);
    let old = leaders[0].1;
    let log_of = |node: u64| std::fs::read_to_string(&logs[node as usize - 1]).unwrap();

    let removed = admin(&["--config", config, "remove", "--id", &old.to_string(), "--group", "1"]);
    assert_eq!(succeeds(&removed), format!("group 1: node {old} removed\n"));

    // The old leader handed leadership over first; the new leader, not it,
    // proposed the removal.
    let old_log = log_of(old);
    let handing = old_log
        .find("handing leadership to node")
        .unwrap_or_else(|| panic!("the old leader did not hand over first:\n{old_log}"));
    assert!(!old_log.contains("proposed membership change"), "{old_log}");
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != old).collect();
    let proposer: Vec<u64> = survivors
        .iter()
        .copied()
        .filter(|&n| log_of(n).contains("proposed membership change"))
        .collect();
    assert_eq!(proposer.len(), 1, "one survivor proposed the removal");
    let new = proposer[0];
    assert!(
        old_log[handing..].contains(&format!("handing leadership to node {new}")),
        "{old_log}"
    );
    // The survivors agree: two voters, the new leader leading.
    let survivor_config = paths[new as usize - 1].to_str().unwrap();
    let report = until_leader_reports(&["--config", survivor_config], 1, "two voters", |group| {
        group["voters"].as_array().map(Vec::len) == Some(2)
    });
    assert_eq!(report["voters"], json!(survivors));
    // The removed node learns it, says so, and never leads again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_of(old).contains("this node was removed from the group") {
        assert!(
            Instant::now() < deadline,
            "the removed node never said so:\n{}",
            log_of(old)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let node = addresses[old as usize - 1].to_string();
    let status = group_status(&["--node", &node, "--cluster-id", "9"], 1).expect("the removed node answers");
    let role = &status["nodes"][0]["groups"][0]["role"];
    assert!(role.is_string() && *role != "leader", "{status}");
}

#[test]
fn a_change_while_another_is_in_flight_is_refused_by_the_tool_with_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(4);
    let (_processes, paths) = start_cluster(dir.path(), &addresses[..3], 1, 1);
    let config = paths[0].to_str().unwrap();
    let (_, leaders) = settled(&paths[0], 3);
    let leader = leaders[0].1;
    // Node 4 is never started: as a learner it cannot catch up, so
    // add-voter stays in flight (until the node's request timeout).
    let absent = addresses[3].to_string();
    let first = Process(
        Command::new(env!("CARGO_BIN_EXE_coraft-admin"))
            .args([
                "--config",
                config,
                "add-voter",
                "--id",
                "4",
                "--address",
                &absent,
                "--group",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("coraft-admin runs"),
    );
    until_leader_reports(&["--config", config], 1, "node 4 a learner", |group| {
        group["learners"].as_array().is_some_and(|l| l.contains(&json!(4)))
    });
    let follower = (1..=3).find(|&n| n != leader).unwrap().to_string();
    let refused = admin(&["--config", config, "remove", "--id", &follower, "--group", "1"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("group 1 has a membership change in progress: retry once it ends"),
        "{}",
        stderr(&refused)
    );
    drop(first);
}

/// A stand-in for a node of the older admin protocol `version`: a real
/// listener on a real socket that answers as such a node's admin service
/// does (a request of another version: `UnsupportedVersion`; `Addresses`
/// of its own: `known`). Serves one connection, then ends.
fn older_seed(version: u16, known: Vec<NodeAddresses>) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let address = free_addresses(1)[0];
    let (ready, listening) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async move {
                let identity = coraft_net::LocalIdentity {
                    cluster_id: CLUSTER,
                    node_id: 5,
                    shard_id: 0,
                };
                let listener = coraft_net::Listener::bind(address, coraft_net::NetConfig::new(identity)).unwrap();
                ready.send(()).unwrap();
                let mut connection = listener.accept().await.unwrap().handshake().await.unwrap();
                let mut writer = connection.take_response_writer().unwrap();
                while let Ok(Some(frame)) = connection.recv().await {
                    let Some(Ok(archived)) = frame.admin_request() else {
                        continue;
                    };
                    let request = rkyv::deserialize::<AdminRequestFrame, rkyv::rancor::Error>(archived).unwrap();
                    let added_in_6 = matches!(
                        request.request,
                        AdminRequest::CreateGroup { .. } | AdminRequest::RemoveGroup { .. }
                    );
                    if version < 6 && added_in_6 {
                        // Such a node cannot read the request: it answers
                        // as to any unreadable one (request id 0).
                        let answer = AdminResponseFrame {
                            version,
                            request_id: 0,
                            node_id: 5,
                            result: Err(AdminError::BadRequest {
                                reason: format!("the admin request does not read as admin protocol version {version}"),
                            }),
                        };
                        writer.send(&answer).await.unwrap();
                        continue;
                    }
                    let result = if request.version != version {
                        Err(AdminError::UnsupportedVersion {
                            found: request.version,
                            supported: version,
                        })
                    } else if request.request == AdminRequest::Addresses {
                        Ok(AdminReply::Addresses(known.clone()))
                    } else if version >= 3 && matches!(request.request, AdminRequest::StatusPage { .. }) {
                        // One group, once.
                        let after = match request.request {
                            AdminRequest::StatusPage { after, .. } => after,
                            _ => unreachable!(),
                        };
                        Ok(AdminReply::Status(coraft_net::admin::NodeReport {
                            node: 5,
                            cluster_id: CLUSTER,
                            shards: 1,
                            groups: if after == 0 { vec![older_group_report()] } else { vec![] },
                            election_priority: 0,
                        }))
                    } else if version >= 4 && request.request == AdminRequest::Installs {
                        Ok(AdminReply::Installs {
                            installs: vec![],
                            total: 0,
                        })
                    } else {
                        Err(AdminError::BadRequest {
                            reason: "not in this stand-in".into(),
                        })
                    };
                    let answer = AdminResponseFrame {
                        version,
                        request_id: request.request_id,
                        node_id: 5,
                        result,
                    };
                    writer.send(&answer).await.unwrap();
                }
            });
    });
    listening.recv().unwrap();
    (address, thread)
}

/// The one group a stand-in older node reports.
fn older_group_report() -> coraft_net::admin::GroupReport {
    coraft_net::admin::GroupReport {
        group: 1,
        role: coraft_net::admin::AdminRole::Leader,
        term: 2,
        leader: Some(5),
        commit_index: 9,
        applied_index: 9,
        last_index: 9,
        snapshot_index: 0,
        quiesced: false,
        voters: vec![5],
        outgoing_voters: vec![],
        learners: vec![],
        peers: vec![],
    }
}

#[test]
fn a_version_4_tool_asks_a_version_3_node_again_at_3_and_shows_its_status_without_install_progress() {
    let timeout = Duration::from_secs(10);
    let (node, thread) = older_seed(3, vec![]);
    let mut client = coraft::admin::AdminClient::connect(node, CLUSTER, timeout).unwrap();
    let report = client.status(&[]).expect("a version 3 node answers the status");
    assert_eq!(report.groups, vec![older_group_report()]);
    assert_eq!(client.version(), 3);
    assert_eq!(client.installs(), Ok(None), "a version 3 node reports no installs");
    drop(client);
    thread.join().unwrap();

    let (node, thread) = older_seed(3, vec![]);
    let output = admin(&[
        "--node",
        &node.to_string(),
        "--cluster-id",
        &CLUSTER.to_string(),
        "status",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("node 5: admin protocol 3 reports no snapshot streams"),
        "{}",
        stdout(&output)
    );
    thread.join().unwrap();
    let (node, thread) = older_seed(3, vec![]);
    let output = admin(&[
        "--node",
        &node.to_string(),
        "--cluster-id",
        &CLUSTER.to_string(),
        "--json",
        "status",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["nodes"][0]["groups"][0]["installs"], Value::Null);
    assert_eq!(json["nodes"][0]["groups"][0]["commit_index"], 9);
    thread.join().unwrap();
}

#[test]
fn a_version_5_tool_asks_a_version_4_node_again_at_4_and_shows_its_status_without_shard_states() {
    let timeout = Duration::from_secs(10);
    let (node, thread) = older_seed(4, vec![]);
    let mut client = coraft::admin::AdminClient::connect(node, CLUSTER, timeout).unwrap();
    let report = client.status(&[]).expect("a version 4 node answers the status");
    assert_eq!(report.groups, vec![older_group_report()]);
    assert_eq!(client.version(), 4);
    assert_eq!(client.installs(), Ok(Some((vec![], 0))));
    assert_eq!(client.shards(), Ok(None), "a version 4 node reports no shard states");
    drop(client);
    thread.join().unwrap();

    let (node, thread) = older_seed(4, vec![]);
    let output = admin(&[
        "--node",
        &node.to_string(),
        "--cluster-id",
        &CLUSTER.to_string(),
        "status",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("shards serving: node 5: not reported (admin protocol 4)"),
        "{}",
        stdout(&output)
    );
    thread.join().unwrap();
    let (node, thread) = older_seed(4, vec![]);
    let output = admin(&[
        "--node",
        &node.to_string(),
        "--cluster-id",
        &CLUSTER.to_string(),
        "--json",
        "status",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["nodes"][0]["shard_states"], Value::Null);
    assert_eq!(json["nodes"][0]["groups"][0]["shard_state"], Value::Null);
    assert_eq!(json["nodes"][0]["groups"][0]["installs"], serde_json::json!([]));
    assert_eq!(json["nodes"][0]["admin_protocol"], 4);
    thread.join().unwrap();
}

/// Asserts that `output`'s stderr says `text`.
fn says(output: &Output, text: &str) {
    assert!(stderr(output).contains(text), "{}", stderr(output));
}

/// Asserts that the command failed (exit status 1) saying `text`.
fn fails_saying(output: &Output, text: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stdout(output));
    says(output, text);
}

#[test]
fn remove_group_and_create_group_tell_a_version_5_node_apart_and_do_nothing_there() {
    let timeout = Duration::from_secs(10);
    // The library, first contact: the node cannot read the request and
    // says so in a frame of its version.
    let (node, thread) = older_seed(5, vec![]);
    let mut client = coraft::admin::AdminClient::connect(node, CLUSTER, timeout).unwrap();
    match client.remove_group(GroupId(100)) {
        Err(coraft::admin::AdminCallError::OlderProtocol {
            speaks: 5, needs: 6, ..
        }) => {}
        other => panic!("a version 5 node answered remove_group with {other:?}"),
    }
    assert_eq!(client.version(), 5, "spoken to at its version from then on");
    let error = client.create_group(GroupId(100), &[NodeId(5)]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("node 5 at {node} speaks admin protocol 5, create-group needs 6: upgrade the node first")
    );
    let report = client.status(&[]).expect("its status still reads");
    assert_eq!(report.groups, vec![older_group_report()]);
    drop(client);
    thread.join().unwrap();

    // The tool.
    for command in ["remove-group", "create-group"] {
        let (node, thread) = older_seed(5, vec![]);
        let output = admin(&[
            "--node",
            &node.to_string(),
            "--cluster-id",
            &CLUSTER.to_string(),
            command,
            "--group",
            "100",
        ]);
        fails_saying(
            &output,
            &format!("node 5 at {node} speaks admin protocol 5, {command} needs 6: upgrade the node first"),
        );
        thread.join().unwrap();
    }
}

/// The groups node `node` reports in `status`.
fn groups_on(status: &Value, node: u64) -> Vec<u64> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| {
            n["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["group"].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_else(|| panic!("node {node} reports its status"))
}

#[test]
fn groups_created_and_removed_through_the_tool_come_and_go_on_live_nodes_and_stay_gone_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let (mut processes, paths) = start_cluster(dir.path(), &addresses, 2, 1);
    let config = paths[0].to_str().unwrap();
    let node_1 = addresses[0].to_string();
    settled(&paths[0], 3);

    // create-group on every node of the config: voters 1, 2, 3; it elects.
    let out = succeeds(&admin(&["--config", config, "create-group", "--group", "100"]));
    for node in 1..=3 {
        assert!(
            out.contains(&format!("group 100: created with voters 1,2,3 on node {node}")),
            "{out}"
        );
    }
    let (status, leaders) = settled(&paths[0], 3);
    assert!(leaders.iter().any(|&(group, _)| group == 100), "{leaders:?}");
    for node in 1..=3 {
        assert_eq!(groups_on(&status, node), vec![1, 2, 100]);
    }
    // A write to it is applied.
    let mut client = client_of(&addresses);
    client.write(GroupId(100), b"x").expect("a write to the created group");
    drop(client);

    // Error cases: a configured group, an unknown group; nothing changes.
    let output = admin(&["--node", &node_1, "--cluster-id", "9", "remove-group", "--group", "1"]);
    fails_saying(
        &output,
        "group 1 is one of NodeOptions::groups here, not a group created at run time",
    );
    let output = admin(&["--config", config, "remove-group", "--group", "999"]);
    fails_saying(&output, "unknown group 999: the node does not host it");
    says(&output, "group 999 was not removed on 3 of 3 node(s)");

    // remove-group on node 1 only: gone there, the other members keep it
    // (the tool warns); again is done; creating it again is refused.
    let output = admin(&["--node", &node_1, "--cluster-id", "9", "remove-group", "--group", "100"]);
    assert!(
        stdout(&output).contains("group 100: removed on node 1"),
        "{}",
        stdout(&output)
    );
    says(&output, "warning: group 100 goes on at node(s) 2,3");
    let status = status_json(&paths[0]).expect("status answers");
    assert_eq!(groups_on(&status, 1), vec![1, 2]);
    assert_eq!(groups_on(&status, 2), vec![1, 2, 100]);
    succeeds(&admin(&[
        "--node",
        &node_1,
        "--cluster-id",
        "9",
        "remove-group",
        "--group",
        "100",
    ]));
    let output = admin(&[
        "--node",
        &node_1,
        "--cluster-id",
        "9",
        "create-group",
        "--group",
        "100",
        "--voters",
        "1,2,3",
    ]);
    fails_saying(&output, "group 100 was removed from this node");

    // remove-group on every node: gone from every status, no warning.
    let output = admin(&["--config", config, "--json", "remove-group", "--group", "100"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["group"], 100);
    assert_eq!(json["members_left"], json!([]));
    assert!(
        json["nodes"].as_array().unwrap().iter().all(|n| n["done"] == true),
        "{json}"
    );
    let status = status_json(&paths[0]).expect("status answers");
    for node in 1..=3 {
        assert_eq!(groups_on(&status, node), vec![1, 2]);
    }

    // Restart node 1 after a kill: its WAL does not bring the group back,
    // and its id stays retired there.
    drop(processes.remove(0));
    processes.insert(0, start_node(&paths[0], 2, &[]));
    let (status, _) = settled(&paths[0], 3);
    assert_eq!(groups_on(&status, 1), vec![1, 2]);
    let output = admin(&["--node", &node_1, "--cluster-id", "9", "status", "--group", "100"]);
    fails_saying(&output, "unknown group 100");
    let output = admin(&["--node", &node_1, "--cluster-id", "9", "create-group", "--group", "100"]);
    says(&output, "group 100 was removed from this node");
}

#[test]
fn a_joining_node_asks_a_seed_of_admin_version_2_again_at_its_version_and_names_a_version_1_seed() {
    let known = vec![
        NodeAddresses {
            node: 5,
            shard_addresses: vec!["127.0.0.1:7005".into(), "127.0.0.1:7006".into()],
        },
        NodeAddresses {
            node: 6,
            shard_addresses: vec!["127.0.0.1:7007".into(), "127.0.0.1:7008".into()],
        },
    ];
    let timeout = Duration::from_secs(10);
    // Version 2 serves Addresses; asked at version 3 it answers
    // UnsupportedVersion, so the joiner asks again at 2.
    let (seed, thread) = older_seed(2, known.clone());
    let learned = coraft::admin::seed_addresses(seed, CLUSTER, timeout).expect("a version 2 seed answers");
    assert_eq!(learned, known);
    thread.join().unwrap();
    // A version 1 node may not know Addresses: the joiner does not ask it
    // again; it gets the typed refusal (and starts with its config's peers).
    let (seed, thread) = older_seed(1, known);
    match coraft::admin::seed_addresses(seed, CLUSTER, timeout) {
        Err(coraft::admin::AdminCallError::Node {
            error: AdminError::UnsupportedVersion { found, supported: 1 },
            ..
        }) => assert_eq!(found, ADMIN_PROTOCOL_VERSION),
        other => panic!("the version 1 seed's refusal, not {other:?}"),
    }
    thread.join().unwrap();
}

/// Each group's (leader, term) as node `leader` reports it, once every
/// group it hosts is quiet (an idle leader goes quiet soon after it
/// committed everything).
fn quiet_leaderships(config: &Path, leader: u64) -> Vec<(u64, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = status_json(config) {
            let all_quiet = status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|n| n["groups"].as_array().unwrap().iter())
                .all(|g| g["quiesced"] == true);
            if all_quiet {
                if let Some(leaders) = agreed_leaders(&status) {
                    return leaders
                        .iter()
                        .map(|&(group, node)| (group, node, group_of(&status, leader, group)["term"].as_u64().unwrap()))
                        .collect();
                }
            }
        }
        assert!(Instant::now() < deadline, "the groups did not go quiet within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn followers_whose_own_node_stalled_keep_their_quiet_leader() {
    // Node 1 (priority 10) is made to lead all 20 groups; the groups go
    // quiet. Nodes 2 and 3 then stall (SIGSTOP) for 10 election timeouts.
    // When they run again, they make up the ticks they missed; that time
    // is no evidence that node 1 fell silent (its beats wait unread in
    // their sockets), so their quiet followers must not wake as if their
    // leader were gone. Before the fix both woke, granted each other's
    // votes, and elections moved leaderships away from a live node 1.
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let peers = peers_of(&addresses);
    let mut processes = Vec::new();
    let mut paths = Vec::new();
    for (id, priority) in [(1u64, 10u8), (2, 1), (3, 1)] {
        let path = write_config_with_priority(dir.path(), id, &peers, 1, priority);
        processes.push(start_node(&path, 20, &[]));
        paths.push(path);
    }
    let config = paths[0].to_str().unwrap();
    settled(&paths[0], 3);
    let rebalanced = admin(&["--config", config, "rebalance", "--wait-ms", "60000"]);
    assert!(
        rebalanced.status.success(),
        "{}{}",
        stdout(&rebalanced),
        stderr(&rebalanced)
    );
    let before = quiet_leaderships(&paths[0], 1);
    assert!(before.iter().all(|&(_, leader, _)| leader == 1), "{before:?}");

    let stalled = [processes[1].0.id() as i32, processes[2].0.id() as i32];
    for pid in stalled {
        // SAFETY: signalling our own children by their pids.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    std::thread::sleep(Duration::from_millis(1000));
    for pid in stalled {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    // Long enough for woken followers to time out and elect (2 T plus the
    // priority lag of 4.5 T, with T = 100 ms), several times over.
    std::thread::sleep(Duration::from_secs(3));
    let after = quiet_leaderships(&paths[0], 1);
    assert_eq!(after, before, "(group, leader, term) before and after the stall");
}
