//! Lease reads on a real clock: a live 3-node cluster in lease-read mode
//! (real glommio shards, loopback TCP, WALs with fdatasync), whose peer
//! links run through relays the test can cut. The leader's shard stalls in
//! a slow `on_apply` while it is cut off; the other two elect a new leader
//! and acknowledge a write; then the old leader wakes with a read queued.
//! It must not answer that read from its lease with the old value: the
//! stall took longer than the lease, and the shard's clock has to see it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block;
use coraft::api::{Command, Error, StateMachine};
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, Protocol, StateMachineFactory};

/// Bound on how long a stalled `on_apply` waits for the test to release it.
const STALL_MAX: Duration = Duration::from_secs(30);

/// Makes the next `on_apply` on one node block until released.
#[derive(Default)]
struct Stall {
    armed: AtomicBool,
    stalled: AtomicBool,
    released: AtomicBool,
}

/// Counts commands; a query returns the count. Stalls when armed.
struct Counter {
    count: u64,
    stall: Arc<Stall>,
}

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        let results: Vec<Vec<u8>> = commands
            .map(|_| {
                self.count += 1;
                self.count.to_le_bytes().to_vec()
            })
            .collect();
        if self.stall.armed.swap(false, Ordering::SeqCst) {
            // The shard's executor is blocked here: no tick, no message.
            self.stall.stalled.store(true, Ordering::SeqCst);
            let started = Instant::now();
            while !self.stall.released.load(Ordering::SeqCst) && started.elapsed() < STALL_MAX {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        results
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.count.to_le_bytes().to_vec()
    }
}

/// A TCP relay on loopback towards one node's shard; cutting it closes its
/// connections and refuses new ones.
struct Relay {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_cut, accept_streams) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(inbound) = incoming else { continue };
                if accept_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut open = accept_streams.lock().unwrap();
                    open.push(inbound.try_clone().unwrap());
                    open.push(outbound.try_clone().unwrap());
                }
                if accept_cut.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    let _ = outbound.shutdown(Shutdown::Both);
                    continue;
                }
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        Relay { address, cut, streams }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self.streams.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

struct RelayedCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    stalls: Vec<Arc<Stall>>,
    /// `relays[from][to]`: the link node `from + 1` dials to reach `to + 1`.
    relays: Vec<Vec<Option<Relay>>>,
}

impl RelayedCluster {
    fn start(read_mode: ReadMode) -> RelayedCluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3).unwrap();
        let relays: Vec<Vec<Option<Relay>>> = (0..3)
            .map(|from| {
                (0..3)
                    .map(|to| (from != to).then(|| Relay::start(addresses[to])))
                    .collect()
            })
            .collect();
        let stalls: Vec<Arc<Stall>> = (0..3).map(|_| Arc::default()).collect();
        let nodes = (0..3)
            .map(|me| {
                let peers = (0..3)
                    .map(|to| PeerSpec {
                        id: NodeId(to as u64 + 1),
                        shard_addresses: vec![match &relays[me][to] {
                            Some(relay) => relay.address,
                            None => addresses[me],
                        }],
                    })
                    .collect();
                let options = NodeOptions {
                    wal_segment_bytes: 8 << 20,
                    groups: vec![GroupId(1)],
                    read_mode,
                    // A quiet leader holds no lease; this test needs one.
                    quiesce_idle_groups: false,
                    request_timeout: Duration::from_secs(2),
                    ..NodeOptions::new(
                        11,
                        NodeId(me as u64 + 1),
                        peers,
                        dir.path().join(format!("node-{}", me + 1)),
                    )
                };
                let stall = stalls[me].clone();
                let factory: StateMachineFactory = Arc::new(move |_| {
                    Box::new(Counter {
                        count: 0,
                        stall: stall.clone(),
                    })
                });
                Node::start(options, factory).expect("node starts")
            })
            .collect();
        RelayedCluster {
            _dir: dir,
            nodes,
            stalls,
            relays,
        }
    }

    /// Cuts (or heals) every link to and from node `index + 1`.
    fn cut(&self, index: usize, cut: bool) {
        for other in 0..3 {
            if other != index {
                self.relays[index][other].as_ref().unwrap().set_cut(cut);
                self.relays[other][index].as_ref().unwrap().set_cut(cut);
            }
        }
    }

    /// Waits for a leader of group 1 among `candidates` (node indexes).
    fn leader_among(&self, candidates: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &i in candidates {
                let status = block(self.nodes[i].group(GroupId(1)).status()).unwrap();
                if status.role == Role::Leader {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader among {candidates:?} within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes through whichever of `candidates` leads, retrying refusals.
    fn write(&self, candidates: &[usize]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.leader_among(candidates);
            match block(self.nodes[leader].group(GroupId(1)).apply(b"w".to_vec())) {
                Ok(result) => return count(&result),
                Err(error) => {
                    assert!(Instant::now() < deadline, "no write acknowledged within 20 s: {error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// One stall of the leader past its lease while it is cut off; returns what
/// the old leader answered to a read queued during the stall, and the count
/// the new leader acknowledged.
fn stall_the_leader_and_read_from_it(cluster: &RelayedCluster) -> (Result<u64, Error>, u64) {
    let all = [0, 1, 2];
    for _ in 0..5 {
        cluster.write(&all);
    }
    let old = cluster.leader_among(&all);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let stall = &cluster.stalls[old];
    stall.released.store(false, Ordering::SeqCst);
    stall.stalled.store(false, Ordering::SeqCst);
    stall.armed.store(true, Ordering::SeqCst);
    // The old leader stalls applying this write (answered once it wakes).
    let old_handle = cluster.nodes[old].group(GroupId(1));
    let mut stalled_write = Box::pin(old_handle.apply(b"s".to_vec()));
    assert!(block(futures_lite::future::poll_once(&mut stalled_write)).is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stall.stalled.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the leader did not stall within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    cluster.cut(old, true);
    // The others elect a leader and acknowledge a write the old one lacks.
    let acknowledged = cluster.write(&others);
    // A read reaches the old leader's queue while it still stalls.
    let mut read = Box::pin(old_handle.read(Vec::new()));
    assert!(block(futures_lite::future::poll_once(&mut read)).is_none());
    stall.released.store(true, Ordering::SeqCst);
    let answer = block(read).map(|bytes| count(&bytes));
    let _ = block(stalled_write);
    cluster.cut(old, false);
    (answer, acknowledged)
}

#[test]
fn a_leader_stalled_past_its_lease_while_cut_off_never_serves_a_stale_lease_read() {
    let cluster = RelayedCluster::start(ReadMode::Lease);
    let mut stale = Vec::new();
    for round in 0..3 {
        let (answer, acknowledged) = stall_the_leader_and_read_from_it(&cluster);
        eprintln!("round {round}: the old leader answered {answer:?}; the new one had acknowledged {acknowledged}");
        match answer {
            Ok(seen) if seen < acknowledged => stale.push((round, seen, acknowledged)),
            Ok(_) => {}
            // The old leader noticed the time: it stepped down, or its
            // ReadIndex round found no quorum.
            Err(Error::NotLeader { .. } | Error::Timeout) => {}
            Err(error) => panic!("round {round}: unexpected read error {error}"),
        }
        // Let the healed node rejoin before the next round.
        let deadline = Instant::now() + Duration::from_secs(20);
        while (0..3).any(|i| {
            block(cluster.nodes[i].group(GroupId(1)).status())
                .map_or(true, |s| s.applied_index < s.commit_index || s.leader.is_none())
        }) {
            assert!(Instant::now() < deadline, "the cluster did not settle within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let made_up: u64 = cluster.nodes.iter().map(|n| n.metrics()[0].ticks_made_up).sum();
    assert!(made_up > 0, "the stalled shards made up no ticks");
    assert!(
        stale.is_empty(),
        "stale lease reads (round, value read, value acknowledged before): {stale:?}"
    );
}

#[test]
fn a_lease_node_refuses_a_drift_margin_below_the_minimum() {
    let cluster_dir = tempfile::tempdir().unwrap();
    let address = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let options = NodeOptions {
        wal_segment_bytes: 8 << 20,
        wal_zero_ahead_bytes: 0,
        groups: vec![GroupId(1)],
        read_mode: ReadMode::Lease,
        protocol: Protocol {
            clock_drift_margin_ticks: coraft::runtime::LEASE_DRIFT_MARGIN_TICKS_MIN - 1,
            ..Protocol::default()
        },
        request_timeout: Duration::from_secs(2),
        ..NodeOptions::new(
            11,
            NodeId(1),
            vec![PeerSpec {
                id: NodeId(1),
                shard_addresses: vec![address],
            }],
            cluster_dir.path().to_path_buf(),
        )
    };
    let factory: StateMachineFactory = Arc::new(|_| {
        Box::new(Counter {
            count: 0,
            stall: Arc::default(),
        })
    });
    match Node::start(options, factory) {
        Err(Error::Config(reason)) => assert!(reason.contains("LEASE_DRIFT_MARGIN_TICKS_MIN"), "{reason}"),
        Err(other) => panic!("refused with the wrong error: {other}"),
        Ok(_) => panic!("a lease node started with a drift margin below the minimum"),
    }
}
