//! The state machine hears when its node starts and stops leading: every
//! `on_leader_start` is followed by one `on_leader_stop` before the state
//! machine is dropped, with `LeaderStopReason::Shutdown` when the node
//! shuts down while leading. Real nodes (glommio shards, loopback TCP,
//! WALs in temp dirs).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, LeaderStopReason, StateMachine};
use coraft::raft::{GroupId, NodeId, Role, Term};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};

const GROUP: GroupId = GroupId(1);

/// What a node's state machine was told, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Start(Term),
    Stop(LeaderStopReason),
}

type Log = Arc<Mutex<Vec<Heard>>>;

/// Counts commands and writes down the leadership callbacks.
struct Recorder {
    count: u64,
    log: Log,
}

impl StateMachine for Recorder {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|_| {
                self.count += 1;
                self.count.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_leader_start(&mut self, term: Term) {
        self.log.lock().unwrap().push(Heard::Start(term));
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        self.log.lock().unwrap().push(Heard::Stop(reason));
    }
}

fn options(dir: &std::path::Path, id: u64, addresses: &[SocketAddr]) -> NodeOptions {
    NodeOptions {
        wal_segment_bytes: 8 << 20,
        wal_zero_ahead_bytes: 0,
        groups: vec![GROUP],
        request_timeout: Duration::from_secs(5),
        ..NodeOptions::new(
            31,
            NodeId(id),
            addresses
                .iter()
                .enumerate()
                .map(|(i, &address)| PeerSpec {
                    id: NodeId(i as u64 + 1),
                    shard_addresses: vec![address],
                })
                .collect(),
            dir.join(format!("node-{id}")),
        )
    }
}

fn free_addresses(count: usize) -> Vec<SocketAddr> {
    coraft::ports::free_loopback_addresses(count).unwrap()
}

fn start(dir: &std::path::Path, id: u64, addresses: &[SocketAddr], log: &Log) -> Node {
    let log = log.clone();
    let factory: StateMachineFactory = Arc::new(move |_| {
        Box::new(Recorder {
            count: 0,
            log: log.clone(),
        })
    });
    Node::start(options(dir, id, addresses), factory).expect("node starts")
}

/// Writes through `node` until it acknowledges (it leads once it does).
fn write_through(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = block(node.group(GROUP).apply(b"w".to_vec())) {
        assert!(Instant::now() < deadline, "no write acknowledged within 20 s: {error}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn heard(log: &Log) -> Vec<Heard> {
    log.lock().unwrap().clone()
}

/// Starts and stops alternate, beginning with a start and, once the state
/// machine is gone, ending with a stop.
fn assert_balanced(node: u64, heard: &[Heard]) {
    for (position, event) in heard.iter().enumerate() {
        let expected_start = position.is_multiple_of(2);
        assert_eq!(
            matches!(event, Heard::Start(_)),
            expected_start,
            "node {node}: starts and stops do not alternate: {heard:?}"
        );
    }
    assert!(
        heard.len().is_multiple_of(2),
        "node {node} stopped while its state machine still believed it led: {heard:?}"
    );
}

#[test]
fn a_leader_hears_it_stops_leading_when_its_node_shuts_down_and_again_after_a_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(1);
    let log = Log::default();
    // A single voter leads from its first election until it stops.
    let node = start(dir.path(), 1, &addresses, &log);
    write_through(&node);
    let Heard::Start(first) = heard(&log)[0] else {
        panic!("the first callback is a start: {:?}", heard(&log));
    };
    node.shutdown();
    assert_eq!(
        heard(&log),
        vec![Heard::Start(first), Heard::Stop(LeaderStopReason::Shutdown)]
    );

    let node = start(dir.path(), 1, &addresses, &log);
    write_through(&node);
    node.shutdown();
    let heard = heard(&log);
    assert_eq!(heard.len(), 4, "{heard:?}");
    assert!(
        matches!(heard[2], Heard::Start(term) if term > first),
        "the restarted node leads in a later term: {heard:?}"
    );
    assert_eq!(heard[3], Heard::Stop(LeaderStopReason::Shutdown));
}

#[test]
fn every_leader_start_is_matched_by_a_stop_when_three_nodes_shut_down_one_by_one() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|i| Some(start(dir.path(), i as u64 + 1, &addresses, &logs[i])))
        .collect();
    // Shut down whichever node leads, twice (the second time the two left
    // elect first), then the last one.
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            let running: Vec<usize> = (0..3).filter(|&i| nodes[i].is_some()).collect();
            if running.len() == 1 {
                break running[0];
            }
            let leading = running.iter().copied().find(|&i| {
                let node = nodes[i].as_ref().expect("running");
                block(node.group(GROUP).status()).unwrap().role == Role::Leader
            });
            if let Some(leader) = leading {
                break leader;
            }
            assert!(Instant::now() < deadline, "round {round}: no leader within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        nodes[leader].take().expect("running").shutdown();
        // The status answer may come before the shard's turn tells the
        // state machine (it does before the turn ends, so before the
        // shutdown is handled): look once the node has stopped.
        let heard = heard(&logs[leader]);
        assert_balanced(leader as u64 + 1, &heard);
        if round < 2 {
            assert!(
                heard.iter().any(|h| matches!(h, Heard::Start(_))),
                "node {} was seen leading but never heard it: {heard:?}",
                leader + 1
            );
        }
    }
    // A node seen leading just before its shutdown heard Shutdown (unless
    // it lost the lead in between, on a loaded machine, and heard of the
    // new term instead; it cannot have happened both times).
    let shutdowns = logs
        .iter()
        .flat_map(heard)
        .filter(|h| *h == Heard::Stop(LeaderStopReason::Shutdown))
        .count();
    assert!(
        shutdowns >= 1,
        "no leader heard Shutdown: {:?}",
        logs.iter().map(heard).collect::<Vec<_>>()
    );
}
