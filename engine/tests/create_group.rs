//! Groups created on live nodes (`Node::create_group`): real nodes over
//! loopback TCP with real WALs in temp dirs. A created group elects a
//! leader, takes writes, and comes back when every node restarts.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};

/// Counts the commands applied; a query returns the count.
#[derive(Default)]
struct Counter {
    applied: u64,
}

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|_| {
                self.applied += 1;
                self.applied.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }
}

const SHARDS: usize = 2;

fn options(dir: &std::path::Path, peers: &[PeerSpec], id: NodeId) -> NodeOptions {
    NodeOptions {
        shard_cores: vec![None; SHARDS],
        wal_segment_bytes: 8 << 20,
        groups: vec![GroupId(1)],
        ..NodeOptions::new(7, id, peers.to_vec(), dir.join(format!("node-{id}")))
    }
}

fn start(dir: &std::path::Path, peers: &[PeerSpec]) -> Vec<Node> {
    peers
        .iter()
        .map(|p| {
            let factory: StateMachineFactory = Arc::new(|_| Box::new(Counter::default()));
            Node::start(options(dir, peers, p.id), factory).expect("node starts")
        })
        .collect()
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Applies one write through whichever node leads `group`, waiting up to
/// 30 s for one (the machine may be loaded).
fn apply(nodes: &[Node], group: GroupId) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes {
            let handle = node.group(group);
            let leads = block(handle.status()).is_ok_and(|s| s.role == Role::Leader);
            if leads {
                match block(handle.apply(b"w".to_vec())) {
                    Ok(answer) => return count(&answer),
                    Err(Error::NotLeader { .. } | Error::Busy { .. }) => {}
                    Err(error) => panic!("group {group}: apply failed: {error}"),
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group}: no leader took a write in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_group_created_on_live_nodes_elects_takes_writes_and_survives_a_restart_of_all() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let addresses = coraft::ports::free_loopback_addresses(3 * SHARDS).unwrap();
    let peers: Vec<PeerSpec> = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: addresses[n * SHARDS..(n + 1) * SHARDS].to_vec(),
        })
        .collect();
    let voters: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
    let nodes = start(dir.path(), &peers);
    // Group 7 is on shard 1 (7 % 2) of every node; nobody hosts it yet.
    let created = GroupId(7);
    assert!(matches!(
        block(nodes[0].group(created).status()),
        Err(Error::UnknownGroup(_))
    ));
    for node in &nodes {
        node.create_group(created, voters.clone()).expect("created");
    }
    // Creating it again does nothing and succeeds.
    nodes[0].create_group(created, voters.clone()).expect("idempotent");
    // Voters that leave this node out are refused.
    match nodes[0].create_group(GroupId(9), vec![NodeId(2), NodeId(3)]) {
        Err(Error::Config(reason)) => assert!(reason.contains("must include this node"), "{reason}"),
        other => panic!("a group without this node was created: {other:?}"),
    }
    for expected in 1..=5 {
        assert_eq!(apply(&nodes, created), expected);
    }
    assert_eq!(apply(&nodes, GroupId(1)), 1, "the static group is untouched");
    let list = dir
        .path()
        .join("node-1/shard-1")
        .join(coraft::runtime::CREATED_GROUPS_FILE);
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "7 1,2,3\n");
    for node in nodes {
        node.shutdown();
    }
    // Restarted with the same options (groups = [1] only): group 7 is back
    // with its log, so the next write is the sixth.
    let nodes = start(dir.path(), &peers);
    assert_eq!(apply(&nodes, created), 6);
    // The admin service serves the created group as a configured one.
    let mut admin = coraft::admin::AdminClient::connect(peers[1].shard_addresses[0], 7, Duration::from_secs(10))
        .expect("admin connection");
    match admin.call(coraft_net::admin::AdminRequest::Status {
        groups: vec![created.0],
    }) {
        Ok(coraft_net::admin::AdminReply::Status(report)) => {
            assert_eq!(
                report.groups.iter().map(|g| g.group).collect::<Vec<_>>(),
                vec![created.0]
            );
        }
        other => panic!("admin status of a created group: {other:?}"),
    }
    let status = block(nodes[1].group(created).status()).expect("hosted after the restart");
    assert_eq!(status.configuration.voters.len(), 3);
    assert!(matches!(
        block(nodes[0].group(GroupId(9)).status()),
        Err(Error::UnknownGroup(_))
    ));
    for node in nodes {
        node.shutdown();
    }
}

#[test]
fn a_member_that_creates_the_group_late_is_caught_up_by_the_log() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let addresses = coraft::ports::free_loopback_addresses(3 * SHARDS).unwrap();
    let peers: Vec<PeerSpec> = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: addresses[n * SHARDS..(n + 1) * SHARDS].to_vec(),
        })
        .collect();
    let voters: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
    let nodes = start(dir.path(), &peers);
    let created = GroupId(4);
    // Two of three voters host it: a quorum, so it elects and commits, and
    // what the leader sends node 3 is dropped there.
    for node in &nodes[..2] {
        node.create_group(created, voters.clone()).expect("created");
    }
    for expected in 1..=10 {
        assert_eq!(apply(&nodes, created), expected);
    }
    nodes[2].create_group(created, voters.clone()).expect("created late");
    // A linearizable read on node 3 answers once it has applied the ten
    // writes, which only the log can have brought it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = block(nodes[2].group(created).read(Vec::new()));
        if read.as_deref().is_ok_and(|answer| count(answer) == 10) {
            break;
        }
        assert!(Instant::now() < deadline, "node 3 did not catch up in 30 s: {read:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes {
        node.shutdown();
    }
}

#[test]
fn creating_an_existing_group_with_other_voters_or_a_static_group_is_refused() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let addresses = coraft::ports::free_loopback_addresses(3 * SHARDS).unwrap();
    let peers: Vec<PeerSpec> = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: addresses[n * SHARDS..(n + 1) * SHARDS].to_vec(),
        })
        .collect();
    let voters: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
    let factory: StateMachineFactory = Arc::new(|_| Box::new(Counter::default()));
    let node = Node::start(options(dir.path(), &peers, NodeId(1)), factory).expect("node starts");
    node.create_group(GroupId(7), voters.clone()).expect("created");
    // The same voters again: done already.
    node.create_group(GroupId(7), voters.clone()).expect("idempotent");
    // Other voters: the caller would believe the group has them.
    match node.create_group(GroupId(7), vec![NodeId(1), NodeId(2)]) {
        Err(Error::Config(reason)) => assert!(reason.contains("other voters"), "{reason}"),
        other => panic!("group 7 re-created with other voters answered {other:?}"),
    }
    // A static group (NodeOptions::groups) is not a created one: it is not
    // in the list, so "created" would not outlive a restart without it.
    match node.create_group(GroupId(1), voters.clone()) {
        Err(Error::Config(reason)) => assert!(reason.contains("NodeOptions::groups"), "{reason}"),
        other => panic!("static group 1 'created' answered {other:?}"),
    }
    let list = dir
        .path()
        .join("node-1/shard-1")
        .join(coraft::runtime::CREATED_GROUPS_FILE);
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "7 1,2,3\n");
    node.shutdown();
}
