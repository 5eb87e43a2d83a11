//! What the in-process cluster tests share (`mod common;` in a test
//! file): the peers of a cluster of one-shard nodes on free loopback
//! addresses, and a way to wait for a future on the test's thread. Each
//! test keeps its own node options (`NodeOptions::new` and the fields it
//! sets) and its own state machine.

// A test file uses some of these, not all.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, PeerSpec};

/// Nodes 1 to `count`, one shard each, listening on free loopback
/// addresses (in that order).
pub fn loopback_peers(count: usize) -> Vec<PeerSpec> {
    coraft::ports::free_loopback_addresses(count)
        .expect("free loopback addresses")
        .into_iter()
        .enumerate()
        .map(|(i, address)| PeerSpec {
            id: NodeId(i as u64 + 1),
            shard_addresses: vec![address],
        })
        .collect()
}

/// Waits on this thread for `future` (a `GroupHandle`'s answer).
pub fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

/// Waits up to `patience` until exactly one of the running `nodes` (node
/// `i + 1` at index `i`) leads `group`, and returns it.
pub fn single_leader(nodes: &[Option<Node>], group: GroupId, patience: Duration) -> NodeId {
    let deadline = Instant::now() + patience;
    loop {
        let leaders: Vec<NodeId> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.as_ref().map(|node| (NodeId(i as u64 + 1), node)))
            .filter(|(_, node)| block(node.group(group).status()).is_ok_and(|s| s.role == Role::Leader))
            .map(|(id, _)| id)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single leader of group {group}: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
