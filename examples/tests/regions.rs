//! The region-sharded KV as a user runs it: three `kv-region-server`
//! processes, splits made with `kv-region-client split` while a routing
//! client writes and one server is killed (SIGKILL) and restarted, then
//! every acknowledged write read back through the
//! routing client, each region holding only its own range's keys, and the
//! same after every server is killed with SIGKILL and restarted.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster_flag, data_dirs, describe, free_addresses, Server, EVENT_WAIT};
use coraft::admin::AdminClient;
use coraft::client::{Client, ClientConfig};
use coraft::raft::{GroupId, NodeId};
use coraft_examples::kv::{KvWrite, WriteOutcome};
use coraft_examples::region::RegionDescriptor;
use coraft_examples::region_client::RegionClient;

const SERVER: &str = env!("CARGO_BIN_EXE_kv-region-server");
const WRITES: usize = 600;

fn routing_client(addresses: &[SocketAddr]) -> RegionClient {
    let client = Client::new(ClientConfig {
        cluster_id: 1,
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
            .collect(),
        attempt_timeout: Duration::from_secs(2),
    });
    RegionClient::new(client, Duration::from_secs(60))
}

fn start_servers(addresses: &[SocketAddr], root: &Path) -> Vec<Server> {
    let servers: Vec<Server> = data_dirs(root)
        .iter()
        .enumerate()
        .map(|(i, data)| Server::start(SERVER, i + 1, addresses, data, &[]))
        .collect();
    for server in &servers {
        server.wait_for("listening on", 0);
    }
    servers
}

fn split(addresses: &[SocketAddr], key: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kv-region-client"))
        .args(["--cluster", &cluster_flag(addresses), "--wait-secs", "60", "split", key])
        .output()
        .expect("kv-region-client runs");
    assert!(output.status.success(), "split {key} failed: {}", describe(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

/// Checks the region map (contiguous from the empty key to no end, `count`
/// regions), that each region's group holds only keys of its range, and
/// that every acknowledged write is read back, by get and by scan.
fn check(client: &mut RegionClient, count: usize, acknowledged: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let map: Vec<RegionDescriptor> = client.regions().expect("the region map");
    assert_eq!(map.len(), count, "regions: {map:?}");
    assert!(map[0].start.is_empty() && map.last().unwrap().end.is_empty(), "{map:?}");
    for pair in map.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "the map has a gap or an overlap: {map:?}");
    }
    let mut held = BTreeMap::new();
    for region in &map {
        for (key, value) in client.raw_pairs(region.id).expect("a region's pairs") {
            assert!(
                region.contains(&key),
                "region {region:?} holds {:?}, outside its range",
                String::from_utf8_lossy(&key)
            );
            assert!(held.insert(key, value).is_none(), "a key in two regions");
        }
    }
    for (key, value) in acknowledged {
        assert_eq!(held.get(key), Some(value), "an acknowledged write is not in its region");
        let read = client.get(key).expect("get");
        assert_eq!(read.as_ref(), Some(value), "get {:?}", String::from_utf8_lossy(key));
    }
    let scanned: BTreeMap<_, _> = client.scan(b"", b"", 100_000).expect("scan").into_iter().collect();
    assert_eq!(scanned, held, "a scan across the regions sees what the regions hold");
}

#[test]
fn splits_under_a_write_load_lose_no_acknowledged_write_and_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let servers = start_servers(&addresses, root.path());
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (acknowledged, written, addresses) = (acknowledged.clone(), written.clone(), addresses.clone());
        std::thread::spawn(move || {
            let mut client = routing_client(&addresses);
            // Keys in an order that hits every future region throughout.
            for n in 0..WRITES {
                let i = (n * 7) % WRITES;
                let value = format!("v{n}").into_bytes();
                let put = KvWrite::Put {
                    key: key(i),
                    value: value.clone(),
                };
                match client.write(&put).expect("a write gets an answer") {
                    WriteOutcome::Done { .. } => {
                        acknowledged.lock().unwrap().insert(key(i), value);
                    }
                    WriteOutcome::Refused(reason) => panic!("a put was refused: {reason}"),
                }
                written.store(n + 1, Ordering::SeqCst);
            }
            client.redirects()
        })
    };
    let wait_for_writes = |count: usize| {
        let deadline = Instant::now() + EVENT_WAIT * 2;
        while written.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "the writer stalled at {}",
                written.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_writes(50);
    let first = split(&addresses, "k0300");
    assert!(
        first.contains("new:   region") && first.contains("[\"k0300\", (end))"),
        "{first}"
    );
    wait_for_writes(200);
    split(&addresses, "k0100");
    // One server killed with SIGKILL in the middle of the stream, and
    // started again from its data dir: it brings back the regions the
    // splits created and catches up while the others go on.
    let mut servers: Vec<Option<Server>> = servers.into_iter().map(Some).collect();
    wait_for_writes(300);
    servers[0] = None;
    wait_for_writes(350);
    let data = data_dirs(root.path());
    servers[0] = Some(Server::start(SERVER, 1, &addresses, &data[0], &[]));
    split(&addresses, "k0450");
    let redirects = writer.join().expect("the writer finished");
    // Writes went on after each split with the map cached before it: some
    // reached a region that no longer held their key and were sent on.
    assert!(redirects >= 1, "the writer never met a 'wrong region' answer");
    // Every replica applied every split (and so hosts every region).
    for server in servers.iter().flatten() {
        for key in ["k0300", "k0100", "k0450"] {
            server.wait_for(&format!("split at \"{key}\""), 0);
        }
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), WRITES, "every put was acknowledged");
    check(&mut routing_client(&addresses), 4, &acknowledged);
    // Every server killed with SIGKILL and restarted: the regions created by
    // splits come back, with their keys.
    drop(servers);
    let servers = start_servers(&addresses, root.path());
    check(&mut routing_client(&addresses), 4, &acknowledged);
    drop(servers);
}

/// The groups node `address` hosts, and its snapshot index of each.
fn hosted(address: SocketAddr) -> Option<BTreeMap<u64, u64>> {
    let mut admin = AdminClient::connect(address, 1, Duration::from_secs(5)).ok()?;
    let report = admin.status(&[]).ok()?;
    Some(report.groups.iter().map(|g| (g.group, g.snapshot_index)).collect())
}

fn put(client: &mut RegionClient, key: Vec<u8>, value: &str) {
    let put = KvWrite::Put {
        key,
        value: value.as_bytes().to_vec(),
    };
    match client.write(&put).expect("a write gets an answer") {
        WriteOutcome::Done { .. } => {}
        WriteOutcome::Refused(reason) => panic!("a put was refused: {reason}"),
    }
}

#[test]
fn a_replica_that_learns_of_a_split_from_the_parents_snapshot_hosts_the_new_region() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let data = data_dirs(root.path());
    // No log kept below a snapshot: a replica behind one is sent it.
    let start = |i: usize| Server::start(SERVER, i + 1, &addresses, &data[i], &["--log-tail-entries", "0"]);
    let mut servers: Vec<Option<Server>> = (0..3).map(|i| Some(start(i))).collect();
    for server in servers.iter().flatten() {
        server.wait_for("listening on", 0);
    }
    let mut client = routing_client(&addresses);
    for i in 0..100 {
        put(&mut client, key(i), "first");
    }
    // Node 3 misses the split and the writes after it; the parent then
    // snapshots past the split on nodes 1 and 2 and drops its log.
    servers[2] = None;
    split(&addresses, "k0050");
    let map = client.regions().expect("the region map");
    assert_eq!(map.len(), 2, "{map:?}");
    let child = map[1].id;
    for i in 0..50 {
        put(&mut client, key(i), "second");
    }
    // Whichever of the two leads sends its own snapshot: node 3 must reach
    // at least the older of them (an entry may commit between the two).
    let mut snapshot_index = u64::MAX;
    for &address in &addresses[..2] {
        let mut admin = AdminClient::connect(address, 1, Duration::from_secs(10)).expect("admin connection");
        snapshot_index = snapshot_index.min(admin.snapshot(GroupId(1)).expect("a snapshot of region 1"));
    }
    // Nodes 1 and 2 queue nothing for node 3 while it is down, but what
    // they queued before their connections noticed its stop would still be
    // delivered once it is back. Restarted, they come back with the same
    // compacted log (`--log-tail-entries 0`) and empty queues.
    servers[0] = None;
    servers[1] = None;
    servers[0] = Some(start(0));
    servers[1] = Some(start(1));
    for server in servers.iter().flatten() {
        server.wait_for("listening on", 0);
    }
    // Node 3 comes back and is sent region 1's snapshot, which covers the
    // split it never applied: it must host the new region too.
    servers[2] = Some(start(2));
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let groups = hosted(addresses[2]).unwrap_or_default();
        let installed = groups.get(&1).is_some_and(|&index| index >= snapshot_index);
        if installed && groups.contains_key(&child) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 does not host region {child} after installing region 1's snapshot at {snapshot_index}: \
             it hosts (group, snapshot index) {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // With node 1 gone the new region needs node 3's vote: it must elect
    // and take writes, and hold the keys it had from the split on.
    servers[0] = None;
    put(&mut client, key(70), "third");
    for i in 50..100 {
        let expected: &[u8] = if i == 70 { b"third" } else { b"first" };
        let value = client.get(&key(i)).expect("get");
        assert_eq!(value.as_deref(), Some(expected), "key {i}");
    }
    let pairs = client.raw_pairs(child).expect("the new region's pairs");
    assert_eq!(pairs.len(), 50, "the new region holds the keys from k0050 on");
    // Restarted from its own snapshot and log (node 1 still down), node 3
    // still hosts it: the region takes writes again.
    servers[2] = None;
    servers[2] = Some(start(2));
    put(&mut client, key(71), "fourth");
    assert_eq!(client.get(&key(71)).expect("get").as_deref(), Some(&b"fourth"[..]));
    drop(servers);
}
