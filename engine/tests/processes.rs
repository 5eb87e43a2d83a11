//! Real processes: three `coraft-node` processes started from TOML configs,
//! a client over TCP, a node killed with SIGKILL and restarted from its WAL.

use std::net::SocketAddr;
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
    start_with(config, &[])
}

fn start_with(config: &Path, extra: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", config.to_str().unwrap(), "--groups", "2"])
        .args(extra)
        .spawn()
        .expect("coraft-node starts");
    Process(child)
}

/// Writes one TOML config per node (one shard, unbound), Raft on `raft[i]`
/// and, when given, Prometheus metrics on `metrics[i]`; returns their paths.
fn write_configs(dir: &Path, raft: &[SocketAddr], metrics: Option<&[SocketAddr]>) -> Vec<std::path::PathBuf> {
    write_configs_with(dir, raft, metrics, |_| {})
}

/// [`write_configs`], each config changed by `edit` before it is written.
fn write_configs_with(
    dir: &Path,
    raft: &[SocketAddr],
    metrics: Option<&[SocketAddr]>,
    edit: impl Fn(&mut NodeConfig),
) -> Vec<std::path::PathBuf> {
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
                metrics_listen: metrics.map(|m| m[i]),
                peers: peers.clone(),
                ..NodeConfig::default()
            };
            config.shards.count = 1;
            config.shards.placement = PlacementPolicy::Unbound;
            config.shards.spin_before_park_us = 0;
            config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
            edit(&mut config);
            let path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
            path
        })
        .collect()
}

/// A client of the cluster whose node `i + 1` listens on `addresses[i]`.
fn client_for(addresses: &[SocketAddr]) -> Client {
    Client::new(ClientConfig {
        cluster_id: 9,
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
            .collect(),
        attempt_timeout: Duration::from_secs(2),
    })
}

/// Writes `data`, retrying until the cluster takes it (nodes starting,
/// electing, recovering); fails the test after 30 s.
fn write_within_30s(client: &mut Client, group: GroupId, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.write(group, data) {
            Ok(result) => return result,
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

#[test]
fn three_node_processes_replicate_and_one_killed_recovers_from_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3).unwrap();
    let paths = write_configs(dir.path(), &addresses, None);
    let mut processes: Vec<Option<Process>> = paths.iter().map(|p| Some(start(p))).collect();
    let mut client = client_for(&addresses);
    // The nodes need a moment to start and elect; the client retries.
    let first = count(&write_within_30s(&mut client, GroupId(1), b"a"));
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
    assert_eq!(count(&write_within_30s(&mut client, GroupId(1), b"a")), 16);
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

#[test]
fn kv_nodes_replicate_registers_and_lists_and_refuse_an_unknown_state_machine() {
    use coraft::api::{KvOp, KvResult};
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3).unwrap();
    let paths = write_configs(dir.path(), &addresses, None);
    let refused = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", paths[0].to_str().unwrap(), "--state-machine", "sql"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("invalid value 'sql' for '--state-machine <KIND>'") && stderr.contains("counter, kv"),
        "{stderr}"
    );
    let _processes: Vec<Process> = paths
        .iter()
        .map(|p| start_with(p, &["--state-machine", "kv"]))
        .collect();
    let mut client = client_for(&addresses);
    let result = |bytes: Vec<u8>| KvResult::decode(&bytes).expect("a kv result");
    let written = write_within_30s(&mut client, GroupId(1), &KvOp::Write { key: 4, value: 40 }.encode());
    assert_eq!(result(written), KvResult::Done);
    let cas = |expected| KvOp::Cas {
        key: 4,
        expected,
        new: 41,
    };
    let mismatch = client.write(GroupId(1), &cas(39).encode()).unwrap();
    assert_eq!(result(mismatch), KvResult::CasMismatch { current: Some(40) });
    assert_eq!(
        result(client.write(GroupId(1), &cas(40).encode()).unwrap()),
        KvResult::Done
    );
    let read = client.read(GroupId(1), &KvOp::Read { key: 4 }.encode()).unwrap();
    assert_eq!(result(read), KvResult::Value(Some(41)));
    for value in [7, 3] {
        let appended = client
            .write(GroupId(1), &KvOp::Append { key: 4, value }.encode())
            .unwrap();
        assert_eq!(result(appended), KvResult::Done);
    }
    let list = client.read(GroupId(1), &KvOp::ReadList { key: 4 }.encode()).unwrap();
    assert_eq!(result(list), KvResult::List(vec![7, 3]));
    let garbage = client.write(GroupId(1), b"not an op").unwrap();
    assert_eq!(result(garbage), KvResult::Error(coraft::api::KvError::Malformed));
}

fn get_metrics(address: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains('{'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_follower_does_not_stop_the_leader_or_grow_its_memory_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(6).unwrap();
    let (raft, metrics) = addresses.split_at(3);
    let processes: Vec<Process> = write_configs(dir.path(), raft, Some(metrics))
        .iter()
        .map(|p| start(p))
        .collect();
    let mut client = client_for(raft);
    write_within_30s(&mut client, GroupId(1), b"w");
    // Find the leader of group 1 (the node whose metrics say it leads one group;
    // group 2 may be led by another node, so ask about group 1 by writing).
    let led: Vec<u64> = metrics
        .iter()
        .map(|&m| {
            get_metrics(m)
                .and_then(|t| metric(&t, "coraft_groups_led"))
                .unwrap_or(0)
        })
        .collect();
    let stalled = (0..3)
        .find(|&i| led[i] == 0)
        .expect("with 2 groups and 3 nodes, some node leads none");
    let pid = processes[stalled].0.id();
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let leader_index = (0..3)
        .find(|&i| i != stalled && led[i] > 0)
        .unwrap_or((stalled + 1) % 3);
    let leader_pid = processes[leader_index].0.id();
    let rss_before = resident_kib(leader_pid);
    let payload = vec![7u8; 1024];
    for _ in 0..3000 {
        client
            .write(GroupId(1), &payload)
            .expect("the leader commits with the other follower");
    }
    let rss_after = resident_kib(leader_pid);
    eprintln!("leader RSS {rss_before} KiB -> {rss_after} KiB over 3,000 writes of 1 KiB with a follower stopped");
    // About 3 MiB of entries stay in the leader's log (no compaction yet;
    // measured growth: 3.7 MiB). Queuing those entries again for the stalled
    // follower would add up to the 4 MiB outbound bound; the in-flight window
    // (256 appends) must stop the leader well before that.
    assert!(
        rss_after.saturating_sub(rss_before) < 6 * 1024,
        "leader memory grew from {rss_before} KiB to {rss_after} KiB while a follower stalled"
    );
    // SAFETY: resuming our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = get_metrics(metrics[stalled])
            .and_then(|t| metric(&t, "coraft_entries_applied_total"))
            .unwrap_or(0);
        if applied >= 3001 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled follower applied only {applied} entries after resuming"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a leader queued for a follower before the follower stopped reaches
/// it late (`docs/architecture.md`, "What a peer's queue held when it
/// stopped"): SIGSTOP leaves the follower's connections open, so the
/// appends in flight and in the kernel's buffers at that moment are read
/// only after SIGCONT, by which time the leader has taken snapshots and
/// compacted past them. They must change nothing: the follower is caught
/// up by a snapshot, ends with exactly the leader's state, and can lead
/// with it.
#[test]
fn appends_queued_before_a_pause_arrive_after_compaction_and_change_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(6).unwrap();
    let (raft, metrics) = addresses.split_at(3);
    let paths = write_configs_with(dir.path(), raft, Some(metrics), |config| {
        // A snapshot every 300 entries, 20 kept below it: a few hundred
        // writes compact past anything queued before the pause.
        config.snapshot.after_entries = 300;
        config.snapshot.log_tail_entries = 20;
    });
    let processes: Vec<Process> = paths.iter().map(|p| start(p)).collect();
    let mut client = client_for(raft);
    write_within_30s(&mut client, GroupId(1), b"w");
    let leader = client.leader_of(GroupId(1)).expect("a leader answered").0 as usize - 1;
    let paused = (leader + 1) % 3;

    // A steady write load from its own client, so appends are in flight to
    // every follower when one is paused.
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the writer if an assertion below fails too.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_writer = StopOnDrop(stop.clone());
    let acknowledged = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acknowledged, raft) = (stop.clone(), acknowledged.clone(), raft.to_vec());
        std::thread::spawn(move || {
            let mut client = client_for(&raft);
            while !stop.load(Ordering::Relaxed) {
                match client.write(GroupId(1), &[9u8; 256]) {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let taken = |i: usize| {
        get_metrics(metrics[i])
            .and_then(|t| metric(&t, "coraft_snapshots_taken_total"))
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(300));
    let pid = processes[paused].0.id();
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let at_pause = (acknowledged.load(Ordering::Relaxed), taken(leader));
    let deadline = Instant::now() + Duration::from_secs(60);
    // At least 1,500 writes and three snapshots on the leader while paused.
    while acknowledged.load(Ordering::Relaxed) < at_pause.0 + 1_500 || taken(leader) < at_pause.1 + 3 {
        assert!(
            Instant::now() < deadline,
            "the leader took {} snapshots and {} writes were acknowledged in 60 s with a follower paused",
            taken(leader) - at_pause.1,
            acknowledged.load(Ordering::Relaxed) - at_pause.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Bytes sent to the paused follower before and after its stop, unread:
    // the late messages this test is about.
    let unread = unread_bytes_at_port(raft[paused].port());
    assert!(unread > 0, "nothing waits in the paused follower's sockets");
    // SAFETY: resuming our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");
    let acknowledged = acknowledged.load(Ordering::Relaxed);

    // The cluster's value: every acknowledged write applied once (a write
    // that failed may have been applied too, so at least).
    let total = count(&client.read(GroupId(1), b"").expect("a linearizable read"));
    eprintln!("{acknowledged} writes acknowledged, the counter at {total}, {unread} bytes were unread in the paused follower's sockets");
    assert!(
        total > acknowledged,
        "the counter is {total} after {acknowledged} acknowledged writes and one more"
    );

    // The paused follower reaches exactly that value, by a snapshot (asked
    // alone: a client that knew the others could be answered by them).
    let mut from_paused = Client::new(ClientConfig {
        cluster_id: 9,
        nodes: vec![(NodeId(paused as u64 + 1), vec![raft[paused]])],
        attempt_timeout: Duration::from_secs(2),
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = from_paused.read_stale(GroupId(1), b"").map(|r| count(&r));
        if seen == Ok(total) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed follower holds {seen:?} 30 s after its pause ended; the leader holds {total}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let installed = get_metrics(metrics[paused])
        .and_then(|t| metric(&t, "coraft_snapshots_installed_total"))
        .unwrap_or(0);
    assert!(installed >= 1, "the resumed follower was caught up without a snapshot");

    // It can lead with that state: leadership moves to it, and writes
    // count on from the same value (each write also tells the client where
    // the leader is now).
    let mut expected = total;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.leader_of(GroupId(1)) != Some(NodeId(paused as u64 + 1)) {
        assert!(
            Instant::now() < deadline,
            "leadership did not move to the resumed follower in 30 s"
        );
        if let Some(current) = client.leader_of(GroupId(1)) {
            let address = raft[current.0 as usize - 1];
            let _ = coraft::admin::AdminClient::connect(address, 9, Duration::from_secs(5))
                .and_then(|mut admin| admin.transfer_leader(GroupId(1), NodeId(paused as u64 + 1)));
        }
        std::thread::sleep(Duration::from_millis(200));
        expected += 1;
        assert_eq!(write_once_within_30s(&mut client), expected);
    }
    expected += 1;
    assert_eq!(
        write_once_within_30s(&mut client),
        expected,
        "a write to the resumed follower, now leader"
    );
}

/// Writes to group 1 once, retrying the same write (its session makes a
/// retry apply at most once) until it is answered; returns the counter.
fn write_once_within_30s(client: &mut Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = client.write(GroupId(1), b"x");
    loop {
        match answer {
            Ok(result) => return count(&result),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "a write was not answered within 30 s: {error}"
                );
                std::thread::sleep(Duration::from_millis(100));
                answer = client.retry_write();
            }
        }
    }
}

/// Bytes received and not yet read by their process, over the IPv4 TCP
/// sockets whose local port is `port` (`/proc/net/tcp`'s `rx_queue`).
fn unread_bytes_at_port(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let rx = u64::from_str_radix(fields.get(4)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port).then_some(rx)
        })
        .sum()
}
