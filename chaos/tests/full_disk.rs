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

use coraft::api::{KvOp, KvResult};
use coraft::client::{Client, ClientConfig};
use coraft_chaos::cluster::Cluster;
use coraft_chaos::workload::GROUP;

mod common;
use common::node_bin;

/// The smallest segment a node takes (see `storage.rs`).
const SEGMENT_BYTES: u64 = 4_202_496;
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
/// How long one write may take to be acknowledged, retries included.
const WRITE_WAIT: Duration = Duration::from_secs(60);
/// How long the victim gets to catch up after its restart.
const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// A loop-mounted ext4 image; unmounted and detached when dropped.
struct LoopMount {
    device: String,
    mount_point: PathBuf,
}

impl LoopMount {
    /// Makes an ext4 file system of `bytes` in `image` and mounts it on
    /// `mount_point`; `Err` says why it cannot here.
    fn new(image: &Path, bytes: u64, mount_point: &Path) -> Result<LoopMount, String> {
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
        run("mkfs.ext4", &["-q", "-F", image_text])?;
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

/// Bytes free for an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    let text = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and a zeroed statvfs to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(text.as_ptr(), &mut stat) }, 0);
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// Writes `key = value` for every pair, each retried (same session and
/// sequence, so applied once) until acknowledged.
fn write_all(client: &mut Client, pairs: &[(u64, u64)]) {
    for &(key, value) in pairs {
        let deadline = Instant::now() + WRITE_WAIT;
        let mut result = client.write(GROUP, &KvOp::Write { key, value }.encode());
        while let Err(failure) = &result {
            assert!(
                Instant::now() < deadline,
                "write {key}={value} not acknowledged: {failure:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            result = client.retry_write();
        }
        assert_eq!(KvResult::decode(&result.unwrap()), Some(KvResult::Done));
    }
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

/// The victim's log written since its last start.
fn last_start_log(cluster: &Cluster) -> String {
    let text = std::fs::read_to_string(cluster.log_path(VICTIM)).unwrap_or_default();
    let start = text.rfind("--- coraft-chaos: starting node").unwrap_or(0);
    text[start..].to_string()
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
    let node_bin = node_bin();
    let victim_dir = dir.path().join("data").join(format!("node-{}", VICTIM + 1));
    let mount = match LoopMount::new(&dir.path().join("victim.ext4"), IMAGE_BYTES, &victim_dir) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED full_disk: cannot make a small file system for the victim's data: {why}");
            println!("SKIPPED full_disk: {why}");
            return;
        }
    };
    let mut cluster = Cluster::create_with_segments(&node_bin, dir.path(), 3, None, SEGMENT_BYTES).unwrap();
    assert_eq!(cluster.wal_dir(VICTIM), victim_dir);
    let data = mount.mount_point.clone();
    let ballast = data.join("ballast");
    let ballast_bytes = free_bytes(&data).saturating_sub(ROOM_BYTES);
    std::fs::write(&ballast, vec![0xB5u8; ballast_bytes as usize]).unwrap();
    println!(
        "victim's file system: {} bytes free after a ballast of {ballast_bytes}",
        free_bytes(&data)
    );
    cluster.start_all().unwrap();
    let config = cluster.client_config(Duration::from_secs(2));
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    let mut next_key = 1u64;

    // Write in parallel until the victim's WAL fails.
    let deadline = Instant::now() + FILL_WAIT;
    while cluster.metric(VICTIM, "coraft_wal_failed") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the victim's WAL did not fail in {FILL_WAIT:?}; {} bytes free; its log:\n{}",
            free_bytes(&data),
            last_start_log(&cluster)
        );
        assert!(
            cluster.exited(VICTIM).is_none(),
            "the victim exited while its disk filled; its log:\n{}",
            last_start_log(&cluster)
        );
        let written: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let config = config.clone();
                    let first = next_key + writer * 1_000;
                    scope.spawn(move || {
                        let mut client = Client::new(config);
                        let pairs: Vec<(u64, u64)> = (first..first + 100).map(|k| (k, k * 1_000 + 7)).collect();
                        write_all(&mut client, &pairs);
                        pairs
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        next_key += WRITERS * 1_000;
        acknowledged.extend(written.into_iter().flatten());
    }
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
        last_start_log(&cluster)
    );
    let log = last_start_log(&cluster);
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

    // The other two keep serving.
    let mut client = Client::new(config.clone());
    let pairs: Vec<(u64, u64)> = (next_key..next_key + 50).map(|k| (k, k * 1_000 + 7)).collect();
    next_key += 50;
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
    let pairs: Vec<(u64, u64)> = (next_key..next_key + 50).map(|k| (k, k * 1_000 + 7)).collect();
    next_key += 50;
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
            last_start_log(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = last_start_log(&cluster);
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
    let pairs: Vec<(u64, u64)> = (next_key..next_key + 50).map(|k| (k, k * 1_000 + 7)).collect();
    write_all(&mut client, &pairs);
    acknowledged.extend(pairs);
    let (last_key, last_value) = *acknowledged.last().unwrap();
    let deadline = Instant::now() + CATCH_UP_WAIT;
    let mut victim = node_client(&config, VICTIM);
    while stale_read(&mut victim, last_key) != Some(Some(last_value)) {
        assert!(
            Instant::now() < deadline,
            "the victim did not catch up in {CATCH_UP_WAIT:?}; its log:\n{}",
            last_start_log(&cluster)
        );
        assert!(
            cluster.exited(VICTIM).is_none(),
            "the victim exited after space was freed; its log:\n{}",
            last_start_log(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.metric(VICTIM, "coraft_wal_failed"), Some(0));
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
