//! Real processes: three `coraft-node` processes started from TOML configs,
//! a client over TCP, a node killed with SIGKILL and restarted from its WAL.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", config.to_str().unwrap(), "--groups", "2"])
        .spawn()
        .expect("coraft-node starts");
    Process(child)
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

#[test]
fn three_node_processes_replicate_and_one_killed_recovers_from_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addresses: Vec<SocketAddr> = ports.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(ports);
    let peers: Vec<Peer> = addresses
        .iter()
        .enumerate()
        .map(|(i, &a)| Peer {
            id: i as u64 + 1,
            address: a,
        })
        .collect();
    let mut paths = Vec::new();
    for (i, &address) in addresses.iter().enumerate() {
        let mut config = NodeConfig {
            cluster_id: 9,
            node_id: i as u64 + 1,
            listen: address,
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        config.shards.count = 1;
        config.shards.placement = PlacementPolicy::Unbound;
        config.shards.spin_before_park_us = 0;
        config.wal.dir = Some(dir.path().join(format!("node-{}", i + 1)));
        let path = dir.path().join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        paths.push(path);
    }
    let mut processes: Vec<Option<Process>> = paths.iter().map(|p| Some(start(p))).collect();
    let mut client = Client::new(ClientConfig {
        cluster_id: 9,
        client_id: 77,
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
            .collect(),
        attempt_timeout: Duration::from_secs(2),
    });
    // The nodes need a moment to start and elect; the client retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match client.write(GroupId(1), b"a") {
            Ok(result) => break count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "no write succeeded within 30 s: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(first, 1);
    for expected in 2..=10 {
        assert_eq!(count(&client.write(GroupId(1), b"a").unwrap()), expected);
    }
    assert_eq!(count(&client.write(GroupId(2), b"b").unwrap()), 1);
    // Kill node 1 without warning, write on, then restart it from its WAL.
    processes[0].take();
    for expected in 11..=15 {
        assert_eq!(count(&client.write(GroupId(1), b"a").unwrap()), expected);
    }
    processes[0] = Some(start(&paths[0]));
    // Node 2 stops cleanly on SIGTERM and restarts; meanwhile nodes 1 and 3
    // must form the quorum, so node 1 has recovered from its WAL.
    let mut node2 = processes[1].take().unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(node2.0.id() as i32, libc::SIGTERM) };
    let status = node2.0.wait().unwrap();
    assert!(status.success(), "node 2 stopped on SIGTERM with {status}");
    drop(node2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.write(GroupId(1), b"a") {
            Ok(result) => {
                assert_eq!(count(&result), 16);
                break;
            }
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "nodes 1 and 3 took no write within 30 s: {error}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    processes[1] = Some(start(&paths[1]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.read(GroupId(1), b"") {
            Ok(result) if count(&result) >= 16 => break,
            other => {
                assert!(Instant::now() < deadline, "no read of 16 writes within 30 s: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
