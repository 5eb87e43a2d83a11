//! Client sessions on real `coraft-node` processes (Raft thesis §6.3): a
//! write the cluster cannot vouch for is refused with a typed error, never
//! answered `Ok` without being applied, and a retried write applies once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use coraft::client::{Client, ClientConfig, ClientFailure};
use coraft::raft::{GroupId, NodeId};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};

const GROUP: GroupId = GroupId(1);

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three `coraft-node` processes (one shard, one group each).
struct Cluster {
    _dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    processes: Vec<Option<Process>>,
    /// How each node was started, to start it again.
    commands: Vec<Vec<String>>,
}

impl Cluster {
    fn start(session_timeout_ms: u64) -> Cluster {
        Cluster::start_with(session_timeout_ms, "counter")
    }

    /// Nodes running the `--state-machine` `kind`.
    fn start_with(session_timeout_ms: u64, kind: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3).unwrap();
        let commands: Vec<Vec<String>> = write_configs(dir.path(), &addresses)
            .iter()
            .map(|path| {
                vec![
                    "--config".into(),
                    path.to_str().unwrap().into(),
                    "--groups".into(),
                    "1".into(),
                    "--session-timeout-ms".into(),
                    session_timeout_ms.to_string(),
                    "--state-machine".into(),
                    kind.into(),
                ]
            })
            .collect();
        let mut cluster = Cluster {
            _dir: dir,
            addresses,
            processes: Vec::new(),
            commands,
        };
        for n in 1..=3 {
            let process = cluster.spawn(NodeId(n));
            cluster.processes.push(Some(process));
        }
        cluster
    }

    fn spawn(&self, node: NodeId) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
            .args(&self.commands[node.0 as usize - 1])
            .spawn()
            .expect("coraft-node starts");
        Process(child)
    }

    /// Starts a killed node again, from its WAL.
    fn restart(&mut self, node: NodeId) {
        let process = self.spawn(node);
        self.processes[node.0 as usize - 1] = Some(process);
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            cluster_id: 9,
            nodes: self
                .addresses
                .iter()
                .enumerate()
                .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
                .collect(),
            attempt_timeout: Duration::from_secs(2),
        }
    }

    fn kill(&mut self, node: NodeId) {
        self.processes[node.0 as usize - 1].take();
    }
}

fn write_configs(dir: &Path, raft: &[SocketAddr]) -> Vec<PathBuf> {
    let peers: Vec<Peer> = raft
        .iter()
        .enumerate()
        .map(|(i, &a)| Peer {
            id: i as u64 + 1,
            address: a,
        })
        .collect();
    (0..raft.len())
        .map(|i| {
            let mut config = NodeConfig {
                cluster_id: 9,
                node_id: i as u64 + 1,
                listen: raft[i],
                peers: peers.clone(),
                ..NodeConfig::default()
            };
            config.shards.count = 1;
            config.shards.placement = PlacementPolicy::Unbound;
            config.shards.spin_before_park_us = 0;
            config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
            let path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
            path
        })
        .collect()
}

/// The first write of a client, retried while the nodes start and elect;
/// fails the test after 30 s.
fn first_write(client: &mut Client, data: &[u8]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.write(GROUP, data) {
            Ok(result) => return count(&result),
            Err(error) => {
                assert!(Instant::now() < deadline, "no write succeeded within 30 s: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

fn applied(client: &mut Client) -> u64 {
    count(&client.read(GROUP, b"").unwrap())
}

#[test]
fn restarted_client_with_its_old_session_is_never_told_an_unapplied_write_succeeded() {
    let cluster = Cluster::start(600_000);
    let mut first = Client::new(cluster.config());
    assert_eq!(first_write(&mut first, b"a1"), 1);
    assert_eq!(count(&first.write(GROUP, b"a2").unwrap()), 2);
    assert_eq!(count(&first.write(GROUP, b"a3").unwrap()), 3);
    // The scenario: the client restarts with its old id and starts
    // its sequence at 1 again. The cluster refuses what it cannot vouch for.
    let session = first.session();
    drop(first);
    let mut restarted = Client::resume(cluster.config(), session, 1);
    let answers: Vec<Result<u64, ClientFailure>> = (1..=4)
        .map(|i| restarted.write(GROUP, format!("b{i}").as_bytes()).map(|r| count(&r)))
        .collect();
    assert_eq!(
        answers,
        vec![
            Err(ClientFailure::StaleSequence),
            Err(ClientFailure::StaleSequence),
            Err(ClientFailure::StaleSequence),
            Ok(4),
        ]
    );
    assert_eq!(applied(&mut restarted), 4);
    // A client restarted without its session gets a new one: all applied.
    let mut fresh = Client::new(cluster.config());
    assert_ne!(fresh.session(), session);
    for expected in 5..=8 {
        assert_eq!(count(&fresh.write(GROUP, b"c").unwrap()), expected);
    }
    assert_eq!(applied(&mut fresh), 8);
}

#[test]
fn two_clients_racing_on_one_session_are_never_answered_with_each_others_results() {
    let cluster = Cluster::start(600_000);
    let mut first = Client::new(cluster.config());
    assert_eq!(first_write(&mut first, b"registers"), 1);
    // A second client claims the same session at the same sequence.
    let twin = Client::resume(cluster.config(), first.session(), first.next_sequence());
    const WRITES: usize = 20;
    let race = |mut client: Client, name: &'static str| {
        std::thread::spawn(move || {
            (0..WRITES)
                .map(|i| client.write(GROUP, format!("{name}{i}").as_bytes()).map(|r| count(&r)))
                .collect::<Vec<_>>()
        })
    };
    let (left, right) = (race(first, "left"), race(twin, "right"));
    let answers: Vec<Result<u64, ClientFailure>> =
        left.join().unwrap().into_iter().chain(right.join().unwrap()).collect();
    let mut counts: Vec<u64> = answers.iter().filter_map(|a| a.as_ref().ok().copied()).collect();
    for answer in &answers {
        assert!(
            matches!(answer, Ok(_) | Err(ClientFailure::StaleSequence)),
            "unexpected answer {answer:?} in {answers:?}"
        );
    }
    // Every `Ok` is a write of its own: the counts it returned are distinct,
    // and the counter holds exactly those writes and the first.
    counts.sort_unstable();
    counts.dedup();
    let oks = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(counts.len(), oks, "two answers carried one result: {answers:?}");
    let mut reader = Client::new(cluster.config());
    assert_eq!(applied(&mut reader), 1 + oks as u64, "answers: {answers:?}");
    assert!(
        oks >= WRITES,
        "each sequence applied once for one of the two: {answers:?}"
    );
}

#[test]
fn an_idle_session_expires_by_leader_time_while_others_keep_writing() {
    const TIMEOUT_MS: u64 = 1_500;
    let cluster = Cluster::start(TIMEOUT_MS);
    let mut idle = Client::new(cluster.config());
    let mut busy = Client::new(cluster.config());
    assert_eq!(first_write(&mut idle, b"idle"), 1);
    assert_eq!(first_write(&mut busy, b"busy"), 2);
    // Load from the busy client carries the leader's clock through the log
    // well past the idle session's timeout; its own session stays alive.
    let idle_since = Instant::now();
    let mut busy_writes = 1;
    while idle_since.elapsed() < Duration::from_millis(3 * TIMEOUT_MS) {
        busy.write(GROUP, b"busy").expect("an active session does not expire");
        busy_writes += 1;
    }
    assert_eq!(idle.write(GROUP, b"late"), Err(ClientFailure::SessionExpired));
    assert_eq!(idle.retry_write(), Err(ClientFailure::SessionExpired));
    assert_eq!(
        applied(&mut busy),
        1 + busy_writes,
        "the expired session's write was applied"
    );
    // The idle client's owner starts over with a new session.
    let mut again = Client::new(cluster.config());
    assert_eq!(count(&again.write(GROUP, b"again").unwrap()), 2 + busy_writes);
}

#[test]
fn a_write_retried_after_a_leader_change_applies_once() {
    let mut cluster = Cluster::start(600_000);
    let mut client = Client::new(cluster.config());
    assert_eq!(first_write(&mut client, b"one"), 1);
    assert_eq!(count(&client.write(GROUP, b"two").unwrap()), 2);
    // The answer to "two" might as well have been lost: the leader dies,
    // and the client sends the same (session, sequence) to the next one.
    let leader = client.leader_of(GROUP).expect("the client found the leader");
    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = loop {
        match client.retry_write() {
            Ok(result) => break count(&result),
            Err(ClientFailure::GaveUp { .. }) if Instant::now() < deadline => continue,
            Err(error) => panic!("the retry failed: {error}"),
        }
    };
    assert_eq!(retried, 2, "the retry got the original result");
    assert_ne!(client.leader_of(GROUP), Some(leader));
    assert_eq!(applied(&mut client), 2, "the retried write applied once");
    assert_eq!(count(&client.write(GROUP, b"three").unwrap()), 3);
}

#[test]
fn on_apply_lanes_a_write_retried_after_the_leader_is_killed_applies_once_also_after_it_restarts() {
    // The same as above with every node's counter applied off its shard
    // (`OffShard`): results, sessions and reads come from the lane.
    let mut cluster = Cluster::start_with(600_000, "counter-off-shard");
    let mut client = Client::new(cluster.config());
    assert_eq!(first_write(&mut client, b"one"), 1);
    for expected in 2..=20 {
        assert_eq!(count(&client.write(GROUP, b"w").unwrap()), expected);
    }
    let leader = client.leader_of(GROUP).expect("the client found the leader");
    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = loop {
        match client.retry_write() {
            Ok(result) => break count(&result),
            Err(ClientFailure::GaveUp { .. }) if Instant::now() < deadline => continue,
            Err(error) => panic!("the retry failed: {error}"),
        }
    };
    assert_eq!(retried, 20, "the retry got the original result");
    assert_eq!(applied(&mut client), 20, "the retried write applied once");
    // The killed node comes back from its WAL (replayed through its lane)
    // and the other former follower goes: the restarted node is now needed
    // for every quorum, and it must vouch for the session as the others do.
    cluster.restart(leader);
    let other = [NodeId(1), NodeId(2), NodeId(3)]
        .into_iter()
        .find(|&n| n != leader && Some(n) != client.leader_of(GROUP))
        .expect("a follower besides the restarted node");
    cluster.kill(other);
    let deadline = Instant::now() + Duration::from_secs(30);
    let retried = loop {
        match client.retry_write() {
            Ok(result) => break count(&result),
            Err(ClientFailure::GaveUp { .. }) if Instant::now() < deadline => continue,
            Err(error) => panic!("the retry after the restart failed: {error}"),
        }
    };
    assert_eq!(retried, 20, "the retry after the restart got the original result");
    assert_eq!(applied(&mut client), 20);
    assert_eq!(count(&client.write(GROUP, b"after").unwrap()), 21);
    assert_eq!(applied(&mut client), 21);
}
