//! A full disk on a live node, on three real `coraft-node` processes hosting
//! the KV store. Node 3's data directory is a small ext4 file system made
//! by the test (an image file in a temp dir, attached to a loop device and
//! mounted as root), mostly taken by a ballast file, so that its WAL runs
//! out of space while clients write. The node must then:
//! - never acknowledge a write it did not persist: its shard stops serving
//!   (fail-stop) instead of panicking, and the other two keep the cluster
//!   serving;
//! - report the error clearly: its log names the error (no space), the file
//!   and what the WAL was doing; `coraft_wal_failed` is 1 in its metrics;
//! - started again while the disk is still full: never serve a write;
//! - once space is freed (the ballast deleted) and it is restarted: catch
//!   up, and every acknowledged write is read back from each node alone.
//!
//! Needs root, `losetup`, `mkfs.ext4` and a free loop device; without them
//! it says why and skips (it passes without checking anything). The mount
//! and the loop device are undone at the end, on failure too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coraft::admin::{AdminCallError, AdminClient, AdminError};
use coraft::api::{KvOp, KvResult};
use coraft::client::{Client, ClientConfig};
use coraft::raft::GroupId;
use coraft_chaos::cluster::{Cluster, CLUSTER_ID};
use coraft_chaos::workload::GROUP;
use coraft_tuning::SnapshotSettings;

mod common;
#[path = "common/storage_nodes.rs"]
mod storage_nodes;
use storage_nodes::{next_pairs, three_nodes, write_all, write_in_parallel, SEGMENT_BYTES};

/// The victim's file system image.
const IMAGE_BYTES: u64 = 24 << 20;
/// Room the ballast leaves on the victim's file system: two segments and
/// a half, so that the third segment cannot be made.
const ROOM_BYTES: u64 = 2 * SEGMENT_BYTES + SEGMENT_BYTES / 2;
/// The node whose disk fills (0-based).
const VICTIM: usize = 2;
/// Client threads writing until the victim's disk is full.
const WRITERS: u64 = 4;
/// How long filling the victim's disk may take.
const FILL_WAIT: Duration = Duration::from_secs(300);
/// How long the victim gets to catch up after its restart.
const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// A loop-mounted ext4 image; unmounted and detached when dropped.
struct LoopMount {
    device: String,
    mount_point: PathBuf,
}

impl LoopMount {
    /// Makes an ext4 file system of `bytes` in `image` (`mkfs_options`
    /// added to `mkfs.ext4`'s) and mounts it on `mount_point`; `Err` says
    /// why it cannot here.
    fn new(image: &Path, bytes: u64, mkfs_options: &[&str], mount_point: &Path) -> Result<LoopMount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root (a loop mount needs it)".into());
        }
        let run = |program: &str, args: &[&str]| -> Result<String, String> {
            let output = Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "{program} {args:?} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        std::fs::File::create(image)
            .and_then(|file| file.set_len(bytes))
            .map_err(|e| format!("cannot make the image {}: {e}", image.display()))?;
        let image_text = image.to_str().expect("a UTF-8 temp path");
        let mut mkfs = vec!["-q", "-F"];
        mkfs.extend_from_slice(mkfs_options);
        mkfs.push(image_text);
        run("mkfs.ext4", &mkfs)?;
        let device = run("losetup", &["--find", "--show", image_text])?;
        std::fs::create_dir_all(mount_point).map_err(|e| e.to_string())?;
        // From here on, dropping the guard undoes what was done.
        let mount = LoopMount {
            device: device.clone(),
            mount_point: mount_point.to_path_buf(),
        };
        run("mount", &[&device, mount_point.to_str().expect("a UTF-8 temp path")])?;
        Ok(mount)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let point = self.mount_point.to_str().expect("a UTF-8 temp path");
        let unmounted = Command::new("umount").arg(point).status().is_ok_and(|s| s.success())
            || Command::new("umount")
                .args(["--lazy", point])
                .status()
                .is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!("full_disk: could not unmount {point}");
        }
        let detached = Command::new("losetup")
            .args(["--detach", &self.device])
            .status()
            .is_ok_and(|s| s.success());
        if !detached {
            eprintln!("full_disk: could not detach {}", self.device);
        }
    }
}

/// Leaves `room_bytes` free on `data` (a ballast file, returned), starts
/// the cluster and writes in parallel until the victim's WAL fails:
/// returns the ballast, the acknowledged writes and the next key.
fn fill_until_the_wal_fails(
    cluster: &mut Cluster,
    data: &Path,
    room_bytes: u64,
) -> (std::path::PathBuf, Vec<(u64, u64)>, u64) {
    let ballast = data.join("ballast");
    let ballast_bytes = free_bytes(data).saturating_sub(room_bytes);
    std::fs::write(&ballast, vec![0xB5u8; ballast_bytes as usize]).unwrap();
    println!(
        "victim's file system: {} bytes free after a ballast of {ballast_bytes}",
        free_bytes(data)
    );
    cluster.start_all().unwrap();
    let config = cluster.client_config(Duration::from_secs(2));
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    let mut next_key = 1u64;
    let deadline = Instant::now() + FILL_WAIT;
    while cluster.metric(VICTIM, "coraft_wal_failed") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the victim's WAL did not fail in {FILL_WAIT:?}; {} bytes free; its log:\n{}",
            free_bytes(data),
            cluster.log_since_start(VICTIM)
        );
        assert!(
            cluster.exited(VICTIM).is_none(),
            "the victim exited while its disk filled; its log:\n{}",
            cluster.log_since_start(VICTIM)
        );
        acknowledged.extend(write_in_parallel(&config, &mut next_key, WRITERS, 100));
    }
    (ballast, acknowledged, next_key)
}

/// Bytes free for an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    let text = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and a zeroed statvfs to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(text.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// `coraft-admin status` of node `index`: its table, and its `--json`.
/// The binary is the one built beside `coraft-node` (`common::node_bin`
/// builds the workspace's tests, which builds it).
fn admin_status(cluster: &Cluster, index: usize) -> (String, serde_json::Value) {
    // target/<profile dir>/deps/<test> -> target/<profile dir>/coraft-admin
    let exe = std::env::current_exe().unwrap();
    let admin = exe.parent().unwrap().parent().unwrap().join("coraft-admin");
    let run = |json: bool| {
        let mut command = Command::new(&admin);
        command.args([
            "--node",
            &cluster.raft_address(index).to_string(),
            "--cluster-id",
            &CLUSTER_ID.to_string(),
        ]);
        if json {
            command.arg("--json");
        }
        let output = command.arg("status").output().expect("coraft-admin runs");
        assert!(
            output.status.success(),
            "coraft-admin status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let json = serde_json::from_str(&run(true)).expect("coraft-admin --json prints JSON");
    (run(false), json)
}

/// A client that reads from node `index` only.
fn node_client(config: &ClientConfig, index: usize) -> Client {
    let mut config = config.clone();
    config.nodes = vec![config.nodes[index].clone()];
    Client::new(config)
}

/// The value node `index`'s state machine holds for `key` (a stale read).
fn stale_read(client: &mut Client, key: u64) -> Option<Option<u64>> {
    match KvResult::decode(&client.read_stale(GROUP, &KvOp::Read { key }.encode()).ok()?) {
        Some(KvResult::Value(value)) => Some(value),
        _ => None,
    }
}

#[test]
fn a_node_whose_disk_fills_stops_serving_and_after_space_is_freed_catches_up_with_every_acknowledged_write() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-full-disk")
        .tempdir()
        .unwrap();
    // The victim's data directory (where `Cluster` puts it). The mount is
    // declared before the cluster, so it is dropped after it: the nodes
    // are stopped before the file system goes, on failure too.
    let victim_dir = dir.path().join("data").join(format!("node-{}", VICTIM + 1));
    let mount = match LoopMount::new(&dir.path().join("victim.ext4"), IMAGE_BYTES, &[], &victim_dir) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED full_disk: cannot make a small file system for the victim's data: {why}");
            println!("SKIPPED full_disk: {why}");
            return;
        }
    };
    let mut cluster = three_nodes(dir.path(), None);
    assert_eq!(cluster.wal_dir(VICTIM), victim_dir);
    let data = mount.mount_point.clone();
    // Write in parallel until the victim's WAL fails.
    let (ballast, mut acknowledged, mut next_key) = fill_until_the_wal_fails(&mut cluster, &data, ROOM_BYTES);
    let config = cluster.client_config(Duration::from_secs(2));
    println!(
        "the victim's WAL failed after {} acknowledged writes, {} bytes free",
        acknowledged.len(),
        free_bytes(&data)
    );
    // Fail-stop, not a crash: the process still runs and says why.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cluster.exited(VICTIM).is_none(),
        "the victim exited; its log:\n{}",
        cluster.log_since_start(VICTIM)
    );
    let log = cluster.log_since_start(VICTIM);
    let failure = log
        .lines()
        .find(|line| line.contains("THE WAL FAILED"))
        .unwrap_or_else(|| panic!("the victim's log does not report the WAL failure:\n{log}"));
    println!("the victim's log: {failure}");
    assert!(
        failure.contains("no space left on device"),
        "not reported as a full disk: {failure}"
    );
    assert!(
        failure.contains(".wal") || failure.contains("segment-range"),
        "the failure does not name the file: {failure}"
    );
    assert!(!log.contains("panicked"), "the victim panicked:\n{log}");

    // `coraft-admin status` names the failed shard and why, in its table
    // and its JSON.
    let (table, json) = admin_status(&cluster, VICTIM);
    println!("coraft-admin status of the failed node:\n{table}");
    assert!(
        table.contains("shards serving: node 3: 0 of 1") && table.contains("shards not serving:"),
        "{table}"
    );
    let failed_row = table
        .lines()
        .find(|line| line.contains("FAILED"))
        .unwrap_or_else(|| panic!("no failed shard in the table:\n{table}"));
    assert!(failed_row.contains("no space left on device"), "{failed_row}");
    assert!(
        table.contains("(shard 0 failed)"),
        "the group's row does not say so:\n{table}"
    );
    let shard = &json["nodes"][0]["shard_states"][0];
    assert_eq!(shard["state"], "failed", "{json}");
    assert!(
        shard["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no space left on device"),
        "{json}"
    );
    assert_eq!(json["nodes"][0]["groups"][0]["shard_state"], "failed", "{json}");

    // The other two keep serving.
    let mut client = Client::new(config.clone());
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    // The failed node serves nothing, not even what it has applied.
    let mut victim = node_client(&config, VICTIM);
    assert_eq!(
        stale_read(&mut victim, acknowledged[0].0),
        None,
        "the failed node answered a read"
    );

    // Restarted on the still-full disk: whatever it does, it must not
    // serve, and must say why if it stops.
    assert!(cluster.kill(VICTIM));
    cluster.start(VICTIM).unwrap();
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    // It either stops (exits) or fails its WAL again at its first write.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(status) = cluster.exited(VICTIM) {
            break Some(status);
        }
        if cluster.metric(VICTIM, "coraft_wal_failed") == Some(1) {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "restarted on a full disk, the node neither stopped nor reported its WAL failed:\n{}",
            cluster.log_since_start(VICTIM)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = cluster.log_since_start(VICTIM);
    let says_full = |text: &str| text.to_lowercase().contains("no space left on device");
    match exited {
        Some(status) => {
            assert!(!status.success(), "a node on a full disk exited with success");
            assert!(
                says_full(&log),
                "the node on a full disk exited without saying the disk is full:\n{log}"
            );
            println!(
                "restarted on the full disk: exited ({status}): {}",
                log.lines().find(|l| says_full(l)).unwrap_or("")
            );
        }
        None => {
            let failure = log.lines().find(|l| l.contains("THE WAL FAILED")).unwrap_or("");
            assert!(says_full(failure), "not reported as a full disk:\n{log}");
            println!("restarted on the full disk: runs with its WAL failed again: {failure}");
            assert!(cluster.kill(VICTIM));
        }
    }

    // Space freed, restarted: it catches up.
    std::fs::remove_file(&ballast).unwrap();
    cluster.start(VICTIM).unwrap();
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    let (last_key, last_value) = *acknowledged.last().unwrap();
    let deadline = Instant::now() + CATCH_UP_WAIT;
    let mut victim = node_client(&config, VICTIM);
    while stale_read(&mut victim, last_key) != Some(Some(last_value)) {
        assert!(
            Instant::now() < deadline,
            "the victim did not catch up in {CATCH_UP_WAIT:?}; its log:\n{}",
            cluster.log_since_start(VICTIM)
        );
        assert!(
            cluster.exited(VICTIM).is_none(),
            "the victim exited after space was freed; its log:\n{}",
            cluster.log_since_start(VICTIM)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.metric(VICTIM, "coraft_wal_failed"), Some(0));
    let (table, json) = admin_status(&cluster, VICTIM);
    assert!(table.contains("shards serving: node 3: 1 of 1"), "{table}");
    assert!(!table.contains("shards not serving:"), "{table}");
    assert_eq!(json["nodes"][0]["shard_states"][0]["state"], "serving", "{json}");
    assert_eq!(
        json["nodes"][0]["shard_states"][0]["reason"],
        serde_json::Value::Null,
        "{json}"
    );
    // Every acknowledged write is on every node.
    for node in 0..3 {
        let mut reader = node_client(&config, node);
        let deadline = Instant::now() + CATCH_UP_WAIT;
        while stale_read(&mut reader, last_key) != Some(Some(last_value)) {
            assert!(Instant::now() < deadline, "node {} did not catch up", node + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
        for &(key, value) in &acknowledged {
            assert_eq!(
                stale_read(&mut reader, key),
                Some(Some(value)),
                "node {}: acknowledged write {key}={value} is not there",
                node + 1
            );
        }
    }
    println!(
        "every one of {} acknowledged writes is on all three nodes",
        acknowledged.len()
    );
    cluster.stop_all();
    drop(cluster);
    drop(mount);
}

/// The victim's snapshot file system: small, so that a ballast can leave
/// it almost no room while its WAL (on the test's disk) has plenty.
const SNAPSHOT_IMAGE_BYTES: u64 = 8 << 20;
/// Room the ballast leaves there: less than a snapshot of the keys written
/// before it (16 bytes a key, so 1,000 keys take 16 KB).
const SNAPSHOT_ROOM_BYTES: u64 = 4 << 10;
/// Keys written before the snapshot disk is filled, and between the
/// attempts after it.
const KEYS_PER_ROUND: u64 = 1_200;
/// Entries between the policy's snapshots.
const SNAPSHOT_AFTER_ENTRIES: u64 = 300;

/// The victim's snapshot directories of `GROUP` (`tmp-`, complete or set
/// aside), by name.
fn snapshot_entries(group_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(group_dir).map_or(Vec::new(), |items| {
        items
            .filter_map(Result::ok)
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .collect()
    });
    names.sort();
    names
}

/// The newest complete snapshot among `names` (by index, not by name).
fn newest_snapshot(names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|name| {
            let index: u64 = name.strip_prefix("snapshot-")?.split('-').next()?.parse().ok()?;
            Some((index, name.clone()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Asks node `index` for a snapshot of `GROUP` through the admin protocol.
fn admin_snapshot(cluster: &Cluster, index: usize) -> Result<u64, AdminCallError> {
    let mut admin = AdminClient::connect(cluster.raft_address(index), CLUSTER_ID, Duration::from_secs(30))?;
    admin.snapshot(GroupId(GROUP.0))
}

/// Waits until node `index`'s state machine holds every one of `pairs`.
/// Writers run in parallel, so the last pair acknowledged need not be the
/// last applied: a node may hold it before an earlier one.
fn wait_holds_all(config: &ClientConfig, index: usize, pairs: &[(u64, u64)], cluster: &mut Cluster) {
    let mut reader = node_client(config, index);
    let deadline = Instant::now() + CATCH_UP_WAIT;
    let mut checked = 0;
    while checked < pairs.len() {
        let (key, value) = pairs[checked];
        let found = stale_read(&mut reader, key);
        if found == Some(Some(value)) {
            checked += 1;
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: acknowledged write {key}={value} is not there after {CATCH_UP_WAIT:?} (it reads {found:?}); its log:\n{}",
            index + 1,
            cluster.log_since_start(index)
        );
        assert!(
            cluster.exited(index).is_none(),
            "node {} exited; its log:\n{}",
            index + 1,
            cluster.log_since_start(index)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_snapshot_that_meets_a_full_disk_fails_cleanly_the_node_serves_from_its_wal_and_snapshots_once_space_is_freed() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-full-snapshot-disk")
        .tempdir()
        .unwrap();
    // The victim's snapshots (`<shard dir>/snapshots`) on a small file
    // system of their own; its WAL stays on the test's disk. No blocks
    // reserved for root (the node runs as root here).
    let snapshots = dir
        .path()
        .join("data")
        .join(format!("node-{}", VICTIM + 1))
        .join("shard-0")
        .join("snapshots");
    let group_dir = snapshots.join(format!("group-{}", GROUP.0));
    let mount = match LoopMount::new(
        &dir.path().join("snapshots.ext4"),
        SNAPSHOT_IMAGE_BYTES,
        &["-m", "0"],
        &snapshots,
    ) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED full_disk: cannot make a small file system for the victim's snapshots: {why}");
            println!("SKIPPED full_disk: {why}");
            return;
        }
    };
    let policy = SnapshotSettings {
        after_entries: SNAPSHOT_AFTER_ENTRIES,
        // A tail longer than any lag here: the victim is caught up from
        // the log, never sent a snapshot (which would meet the full disk
        // too, on another path).
        log_tail_entries: 100_000,
        ..SnapshotSettings::default()
    };
    let mut cluster = three_nodes(dir.path(), Some(policy));
    cluster.start_all().unwrap();
    let config = cluster.client_config(Duration::from_secs(2));
    let mut next_key = 1u64;
    let mut acknowledged = write_in_parallel(&config, &mut next_key, WRITERS, KEYS_PER_ROUND / WRITERS);
    wait_holds_all(&config, VICTIM, &acknowledged, &mut cluster);
    let taken_before = cluster.metric(VICTIM, "coraft_snapshots_taken_total").unwrap_or(0);
    assert!(
        taken_before > 0,
        "the victim took no snapshot by policy before its disk filled"
    );

    // Fill the snapshot file system but SNAPSHOT_ROOM_BYTES.
    let ballast = mount.mount_point.join("ballast");
    let ballast_bytes = free_bytes(&mount.mount_point).saturating_sub(SNAPSHOT_ROOM_BYTES);
    std::fs::write(&ballast, vec![0xB5u8; ballast_bytes as usize]).unwrap();
    let room = free_bytes(&mount.mount_point);
    println!("the victim's snapshot file system: {room} bytes free");
    assert!(
        room < 16 * KEYS_PER_ROUND,
        "{room} bytes free: room for a whole snapshot"
    );
    let complete_before: Vec<String> = snapshot_entries(&group_dir)
        .into_iter()
        .filter(|name| name.starts_with("snapshot-"))
        .collect();

    // Writes go on; each snapshot the policy takes meets the full disk.
    acknowledged.extend(write_in_parallel(
        &config,
        &mut next_key,
        WRITERS,
        KEYS_PER_ROUND / WRITERS,
    ));
    wait_holds_all(&config, VICTIM, &acknowledged, &mut cluster);
    // One on demand, through the admin protocol: refused, naming the file
    // and the full disk.
    let refused = admin_snapshot(&cluster, VICTIM);
    let reason = match &refused {
        Err(AdminCallError::Node {
            error: AdminError::Failed { reason },
            ..
        }) => reason.clone(),
        other => panic!(
            "a snapshot on a full disk answered {other:?}; the victim's log:\n{}",
            cluster.log_since_start(VICTIM)
        ),
    };
    println!("the snapshot on the full disk: {reason}");
    assert!(
        reason.to_lowercase().contains("no space left on device"),
        "not reported as a full disk: {reason}"
    );
    assert!(
        reason.contains(group_dir.to_str().unwrap()),
        "the refusal does not name the file: {reason}"
    );
    let log = cluster.log_since_start(VICTIM);
    let policy_failure = log
        .lines()
        .find(|line| line.contains("snapshot policy's snapshot") && line.contains("failed"))
        .unwrap_or_else(|| panic!("no policy snapshot failed on the full disk; the victim's log:\n{log}"));
    println!("the victim's log: {policy_failure}");
    assert!(
        policy_failure.to_lowercase().contains("no space left on device"),
        "{policy_failure}"
    );
    assert!(!log.contains("panicked"), "the victim panicked:\n{log}");
    assert!(!log.contains("THE WAL FAILED"), "the victim's WAL failed:\n{log}");
    // Nothing of the failed snapshots is left: no temp directory, no
    // complete snapshot but those from before.
    let entries = snapshot_entries(&group_dir);
    assert!(
        !entries.iter().any(|name| name.starts_with("tmp-")),
        "a failed snapshot left its temp directory: {entries:?}"
    );
    let complete: Vec<&String> = entries.iter().filter(|name| name.starts_with("snapshot-")).collect();
    assert_eq!(complete, complete_before.iter().collect::<Vec<_>>(), "{entries:?}");
    assert_eq!(cluster.metric(VICTIM, "coraft_wal_failed"), Some(0));

    // The victim still serves: its writes are acknowledged through it
    // when it leads, and it answers reads from what it applied.
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut Client::new(config.clone()), &pairs);
    acknowledged.extend(pairs);
    wait_holds_all(&config, VICTIM, &acknowledged, &mut cluster);

    // SIGKILLed and restarted on the still-full disk: it starts from its
    // newest complete snapshot and the WAL, and holds every write.
    assert!(cluster.kill(VICTIM));
    cluster.start(VICTIM).unwrap();
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut Client::new(config.clone()), &pairs);
    acknowledged.extend(pairs);
    wait_holds_all(&config, VICTIM, &acknowledged, &mut cluster);
    let log = cluster.log_since_start(VICTIM);
    let newest_before = newest_snapshot(&complete_before).expect("a snapshot before the disk filled");
    assert!(
        log.contains(&format!("loaded snapshot {}", group_dir.join(&newest_before).display())),
        "the restart did not load the newest complete snapshot {newest_before}:\n{log}"
    );
    assert!(!log.contains("THE WAL FAILED"), "{log}");

    // Space freed: a snapshot on demand succeeds, and the policy's again.
    std::fs::remove_file(&ballast).unwrap();
    let index = admin_snapshot(&cluster, VICTIM).unwrap_or_else(|e| {
        panic!(
            "a snapshot after space was freed failed: {e}; log:\n{}",
            cluster.log_since_start(VICTIM)
        )
    });
    let taken_after_free = cluster.metric(VICTIM, "coraft_snapshots_taken_total").unwrap_or(0);
    acknowledged.extend(write_in_parallel(
        &config,
        &mut next_key,
        WRITERS,
        KEYS_PER_ROUND / WRITERS,
    ));
    wait_holds_all(&config, VICTIM, &acknowledged, &mut cluster);
    let deadline = Instant::now() + CATCH_UP_WAIT;
    while cluster.metric(VICTIM, "coraft_snapshots_taken_total").unwrap_or(0) <= taken_after_free {
        assert!(
            Instant::now() < deadline,
            "the policy took no snapshot after space was freed; log:\n{}",
            cluster.log_since_start(VICTIM)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let entries = snapshot_entries(&group_dir);
    let newest = newest_snapshot(&entries).expect("a snapshot after space was freed");
    println!("after space was freed: a snapshot at {index} on demand, then the policy's; the store holds {entries:?}");
    assert!(!entries.iter().any(|name| name.starts_with("tmp-")), "{entries:?}");

    // Restarted once more: from the newest snapshot, with every write.
    assert!(cluster.kill(VICTIM));
    cluster.start(VICTIM).unwrap();
    for node in 0..3 {
        wait_holds_all(&config, node, &acknowledged, &mut cluster);
    }
    let log = cluster.log_since_start(VICTIM);
    assert!(
        log.contains(&format!("loaded snapshot {}", group_dir.join(&newest).display())),
        "the restart did not load the newest snapshot {newest}:\n{log}"
    );
    println!(
        "every one of {} acknowledged writes is on all three nodes",
        acknowledged.len()
    );
    cluster.stop_all();
    drop(cluster);
    drop(mount);
}

/// The whole data directory's file system in the race test: WAL segments,
/// snapshots and the node's other files share it.
const RACE_IMAGE_BYTES: u64 = 24 << 20;
/// Room the ballast leaves there: two segments (made as the WAL needs
/// them, each taken whole by `fallocate`) and a little more, about the
/// size of the two snapshots kept and one being written by then, so that
/// snapshots and the WAL's segments compete for the last blocks: which one
/// meets the full disk first depends on the timing.
const RACE_ROOM_BYTES: u64 = 2 * SEGMENT_BYTES + (160 << 10);
/// Entries between the policy's snapshots in the race test: many
/// snapshots while the disk fills.
const RACE_SNAPSHOT_AFTER_ENTRIES: u64 = 200;

/// The `loaded snapshot <path>` paths in `log`.
fn loaded_snapshots(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("loaded snapshot ")? + "loaded snapshot ".len()..];
            Some(rest.split(' ').next()?.to_string())
        })
        .collect()
}

#[test]
fn a_snapshot_and_the_wal_racing_for_the_last_space_on_one_disk_lose_no_acknowledged_write_and_use_no_half_snapshot() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-full-disk-race")
        .tempdir()
        .unwrap();
    // The victim's whole data directory (WAL and snapshots) on one small
    // file system, no blocks reserved for root. Declared before the
    // cluster, so dropped after it, on failure too.
    let victim_dir = dir.path().join("data").join(format!("node-{}", VICTIM + 1));
    let mount = match LoopMount::new(
        &dir.path().join("race.ext4"),
        RACE_IMAGE_BYTES,
        &["-m", "0"],
        &victim_dir,
    ) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED full_disk: cannot make a small file system for the victim's data: {why}");
            println!("SKIPPED full_disk: {why}");
            return;
        }
    };
    let policy = SnapshotSettings {
        after_entries: RACE_SNAPSHOT_AFTER_ENTRIES,
        // No compaction frees a segment: the disk fills for sure, and the
        // victim is caught up from the log, not sent a snapshot.
        log_tail_entries: 100_000,
        ..SnapshotSettings::default()
    };
    let mut cluster = three_nodes(dir.path(), Some(policy));
    assert_eq!(cluster.wal_dir(VICTIM), victim_dir);
    let group_dir = victim_dir
        .join("shard-0")
        .join("snapshots")
        .join(format!("group-{}", GROUP.0));
    let data = mount.mount_point.clone();
    // Write in parallel until the victim's WAL fails (it must: nothing
    // frees a segment). Snapshots are taken all along.
    let (ballast, mut acknowledged, mut next_key) = fill_until_the_wal_fails(&mut cluster, &data, RACE_ROOM_BYTES);
    let config = cluster.client_config(Duration::from_secs(2));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cluster.exited(VICTIM).is_none(),
        "the victim exited; its log:\n{}",
        cluster.log_since_start(VICTIM)
    );
    let log = cluster.log_since_start(VICTIM);
    assert!(!log.contains("panicked"), "the victim panicked:\n{log}");
    let taken = cluster.metric(VICTIM, "coraft_snapshots_taken_total").unwrap_or(0);
    let snapshot_failures: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("snapshot policy's snapshot") && line.contains("failed"))
        .collect();
    println!(
        "the victim's WAL failed after {} acknowledged writes, {} bytes free; {taken} snapshots taken, {} failed",
        acknowledged.len(),
        free_bytes(&data),
        snapshot_failures.len()
    );
    assert!(taken > 0, "no snapshot was taken while the disk filled:\n{log}");
    for failure in &snapshot_failures {
        println!("the victim's log: {failure}");
        assert!(
            failure.to_lowercase().contains("no space left on device") && failure.contains(group_dir.to_str().unwrap()),
            "a failed snapshot not reported as a full disk naming its file: {failure}"
        );
    }
    // The WAL's failure is fail-stop, says the disk is full and names the
    // file.
    let failure = log
        .lines()
        .find(|line| line.contains("THE WAL FAILED"))
        .unwrap_or_else(|| panic!("the victim's log does not report the WAL failure:\n{log}"));
    println!("the victim's log: {failure}");
    assert!(
        failure.contains("no space left on device"),
        "not reported as a full disk: {failure}"
    );
    assert!(
        failure.contains(".wal") || failure.contains("segment-range"),
        "the failure does not name the file: {failure}"
    );
    // The failed node serves nothing; the other two go on.
    let mut client = Client::new(config.clone());
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    let mut victim = node_client(&config, VICTIM);
    assert_eq!(
        stale_read(&mut victim, acknowledged[0].0),
        None,
        "the failed node answered a read"
    );
    let entries_at_failure = snapshot_entries(&group_dir);
    println!("the victim's snapshot store when its WAL failed: {entries_at_failure:?}");

    // SIGKILLed (a snapshot may be half written) and restarted on the
    // still-full disk: it must not serve, and must say why if it stops.
    assert!(cluster.kill(VICTIM));
    let entries_after_kill = snapshot_entries(&group_dir);
    cluster.start(VICTIM).unwrap();
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    let deadline = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(status) = cluster.exited(VICTIM) {
            break Some(status);
        }
        if cluster.metric(VICTIM, "coraft_wal_failed") == Some(1) {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "restarted on a full disk, the node neither stopped nor reported its WAL failed:\n{}",
            cluster.log_since_start(VICTIM)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = cluster.log_since_start(VICTIM);
    assert!(
        log.to_lowercase().contains("no space left on device"),
        "restarted on the full disk, the node does not say the disk is full:\n{log}"
    );
    match exited {
        Some(status) => {
            assert!(!status.success(), "a node on a full disk exited with success");
            println!("restarted on the full disk: exited ({status})");
        }
        None => {
            println!("restarted on the full disk: runs with its WAL failed again");
            assert!(cluster.kill(VICTIM));
        }
    }
    let mut loaded = loaded_snapshots(&log);

    // Space freed, restarted: it catches up and serves again.
    std::fs::remove_file(&ballast).unwrap();
    cluster.start(VICTIM).unwrap();
    let pairs = next_pairs(&mut next_key, 50);
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    for node in 0..3 {
        wait_holds_all(&config, node, &acknowledged, &mut cluster);
    }
    assert_eq!(cluster.metric(VICTIM, "coraft_wal_failed"), Some(0));
    let log = cluster.log_since_start(VICTIM);
    assert!(!log.contains("panicked"), "{log}");
    loaded.extend(loaded_snapshots(&log));
    // No half snapshot was used: every snapshot a start loaded was a
    // complete one (never a temp directory), none was found damaged, and
    // no temp directory outlives a start.
    println!("snapshot store after the kill: {entries_after_kill:?}; loaded on the restarts: {loaded:?}");
    assert!(!loaded.is_empty(), "no restart loaded a snapshot:\n{log}");
    for path in &loaded {
        let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("snapshot-"),
            "a start loaded {path}, not a complete snapshot"
        );
    }
    assert!(!log.contains("damaged"), "a start found a damaged snapshot:\n{log}");
    let entries = snapshot_entries(&group_dir);
    assert!(
        !entries.iter().any(|name| name.starts_with("tmp-")),
        "a temp directory outlived the start: {entries:?}"
    );
    // Snapshots work again once there is room.
    let index = admin_snapshot(&cluster, VICTIM).unwrap_or_else(|e| {
        panic!(
            "a snapshot after space was freed failed: {e}; log:\n{}",
            cluster.log_since_start(VICTIM)
        )
    });
    println!(
        "after space was freed: a snapshot at {index}; every one of {} acknowledged writes is on all three nodes",
        acknowledged.len()
    );
    cluster.stop_all();
    drop(cluster);
    drop(mount);
}
