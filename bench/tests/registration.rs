//! The benchmark drivers' session registration (`bench/src/workload.rs`)
//! against three real nodes over loopback TCP: a registration sent to a node
//! that does not lead the group follows the leader it names, and one that
//! can reach no leader gives up after a bounded number of rounds.

#[allow(dead_code)]
#[path = "../src/workload.rs"]
mod workload;

mod common;

use std::time::{Duration, Instant};

use coraft::raft::{GroupId, NodeId};
use coraft_net::schema::{ClientRequest, ClientRequestBatch, ClientResponseBatch, ReadConsistency};
use coraft_net::BlockingConnection;

use common::{Cluster, CLUSTER_ID};
use workload::{register_sessions, Driver};

const GROUP: GroupId = GroupId(1);

/// A driver of `clients` (ids 1..) connected to `target`, which knows
/// the addresses of `known` for following a leader hint.
fn driver(cluster: &Cluster, target: NodeId, clients: u64, known: &[NodeId]) -> Driver {
    Driver {
        address: cluster.addresses[&target],
        cluster_id: CLUSTER_ID,
        target_node: target,
        shard: 0,
        clients: (1..=clients).map(|id| (id, GROUP)).collect(),
        rate: None,
        seed: 1,
        read_consistency: ReadConsistency::Linearizable,
        shard_addresses: known.iter().map(|n| (*n, cluster.addresses[n])).collect(),
        links: None,
    }
}

fn session(client: u64) -> u128 {
    (0x5e55 << 64) | u128::from(client)
}

/// One write of `client` under its session, sent to `node`: its result.
fn write(connection: &mut BlockingConnection, client: u64) -> Result<Vec<u8>, coraft_net::schema::ClientError> {
    connection
        .send(&ClientRequestBatch {
            requests: vec![ClientRequest::Propose {
                client_id: client,
                session: session(client),
                sequence: 1,
                lowest_unanswered: 1,
                group: GROUP.0,
                payload: b"w".to_vec(),
            }],
        })
        .unwrap();
    loop {
        let frame = connection.recv().unwrap().expect("the node answers");
        let Some(archived) = frame.client_responses() else {
            continue;
        };
        let batch = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived).unwrap();
        if let Some(response) = batch.responses.into_iter().find(|r| r.client_id == client) {
            return response.result;
        }
    }
}

#[test]
fn registrations_sent_to_a_follower_follow_its_leader_hint() {
    let cluster = Cluster::start(&[GROUP]);
    let leader = cluster.leader(GROUP);
    let follower = *cluster.addresses.keys().find(|&&n| n != leader).unwrap();
    let all: Vec<NodeId> = cluster.addresses.keys().copied().collect();
    let driver = driver(&cluster, follower, 3, &all);
    let mut connection = cluster.connect(follower, 1);
    // (Before the retry, the follower's NotLeader ended the run here.)
    register_sessions(&mut connection, &driver, |slot| session(slot as u64 + 1))
        .expect("the registrations follow the hint to the leader");
    // The sessions are in the group's log: a write under one is applied,
    // where an unregistered session is refused as expired.
    let mut to_leader = cluster.connect(leader, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match write(&mut to_leader, 3) {
            Ok(count) => {
                assert_eq!(count, 1u64.to_le_bytes());
                break;
            }
            Err(coraft_net::schema::ClientError::NotLeader { .. }) if Instant::now() < deadline => {
                // Leadership moved under the machine's load: ask the new one.
                to_leader = cluster.connect(cluster.leader(GROUP), 1);
            }
            Err(error) => panic!("a write under a registered session failed: {error:?}"),
        }
    }
    let mut unregistered = cluster.connect(cluster.leader(GROUP), 9);
    assert!(matches!(
        write(&mut unregistered, 9),
        Err(coraft_net::schema::ClientError::SessionExpired)
    ));
}

#[test]
fn registrations_that_reach_no_leader_give_up_after_their_rounds() {
    let mut cluster = Cluster::start(&[GROUP]);
    cluster.leader(GROUP);
    // One node left of three: it can elect no leader, and the driver knows
    // no other node's address, so each round goes to it again.
    let lone = cluster.nodes[0].id();
    for node in cluster.nodes.drain(1..) {
        node.shutdown();
    }
    let driver = driver(&cluster, lone, 2, &[lone]);
    let mut connection = cluster.connect(lone, 1);
    let started = Instant::now();
    let error = register_sessions(&mut connection, &driver, |slot| session(slot as u64 + 1))
        .expect_err("a node without a quorum registers no session");
    let message = format!("{error:#}");
    assert!(
        message.contains("NotLeader") && message.contains("round 12 of 12"),
        "{message}"
    );
    // 11 waits between rounds: 50 ms doubling up to 1 s, about 8 s.
    assert!(started.elapsed() >= Duration::from_secs(7), "{:?}", started.elapsed());
}
