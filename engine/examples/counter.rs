//! The counter of SOFAJRaft's first example, on coraft: a replicated i64
//! that clients add to and read linearizably. Three nodes run in this one
//! process on loopback, each with its own WAL in a temp dir.
//!
//! ```sh
//! cargo run --release -p coraft --example counter
//! ```
//!
//! The same counter as three server processes and a client, for separate
//! terminals: `counter-server` and `counter-client` (`docs/examples.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::{Command, StateMachine};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};

/// The replicated state: one number. Commands are little-endian i64 deltas.
#[derive(Default)]
struct Counter {
    value: i64,
}

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|command| {
                let delta = command.data.try_into().map(i64::from_le_bytes).unwrap_or(0);
                self.value += delta;
                self.value.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    // The whole state as of the last applied command: what the snapshot
    // policy (or `GroupHandle::snapshot`) saves before the log below it goes.
    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.value.to_le_bytes())
    }

    // Replaces the whole state (called on a fresh Counter at restart).
    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 8];
        reader.read_exact(&mut bytes)?;
        self.value = i64::from_le_bytes(bytes);
        Ok(())
    }
}

fn value(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Three nodes, one shard each, on free loopback ports (below the
    // kernel's ephemeral range, so no outbound connection takes one first).
    let peers: Vec<PeerSpec> = coraft::ports::free_loopback_addresses(3)?
        .into_iter()
        .enumerate()
        .map(|(i, address)| PeerSpec {
            id: NodeId(i as u64 + 1),
            shard_addresses: vec![address],
        })
        .collect();
    let group = GroupId(1);
    let factory: StateMachineFactory = Arc::new(|_group| Box::new(Counter::default()));
    let mut nodes = Vec::new();
    for peer in &peers {
        let options = NodeOptions {
            groups: vec![group],
            election_timeout_ticks: 20,
            ..NodeOptions::new(1, peer.id, peers.clone(), dir.path().join(format!("node-{}", peer.id)))
        };
        nodes.push(Node::start(options, factory.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    // Find the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let found = nodes
            .iter()
            .find(|n| futures_lite::future::block_on(n.group(group).status()).is_ok_and(|s| s.role == Role::Leader));
        if let Some(node) = found {
            break node;
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("node {} leads group {group}", leader.id());
    let handle = leader.group(group);
    for delta in [5i64, -2, 10] {
        let result = futures_lite::future::block_on(handle.apply(delta.to_le_bytes().to_vec()))?;
        println!("added {delta:>3} -> counter = {}", value(&result));
    }
    // A linearizable read from a follower: it asks the leader for the read
    // index, waits until it has applied it, then answers.
    let follower = nodes.iter().find(|n| n.id() != leader.id()).expect("three nodes");
    let read = futures_lite::future::block_on(follower.group(group).read(Vec::new()))?;
    println!("read on follower {}: counter = {}", follower.id(), value(&read));
    for node in nodes {
        node.shutdown();
    }
    Ok(())
}
