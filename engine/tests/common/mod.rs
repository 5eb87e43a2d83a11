//! What the in-process cluster tests share (`mod common;` in a test
//! file): the peers of a cluster of one-shard nodes on free loopback
//! addresses, and a way to wait for a future on the test's thread. Each
//! test keeps its own node options (`NodeOptions::new` and the fields it
//! sets) and its own state machine.

// A test file uses some of these, not all.
#![allow(dead_code)]

use coraft::raft::NodeId;
use coraft::runtime::PeerSpec;

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
