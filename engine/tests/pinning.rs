//! Pinning really happens: a `coraft-node` process started from a config
//! that pins its shards is looked at from outside, through
//! `/proc/<pid>/task/*/comm` (thread names) and `Cpus_allowed_list` in
//! `/proc/<pid>/task/*/status` (what each thread may run on).
//!
//! What the config says, and so what the tests expect (docs/tuning.md,
//! "Which threads run where"): shard `i`'s executor thread
//! (`coraft-<node>-<i>-<n>`) runs only on `shards.cores[i]`, and so do the
//! kernel's io_uring workers of the shard's ring (`iou-wrk-<tid>`); every
//! other thread (each shard's blocking thread `coraft-<node>-<i>-blk` and
//! release thread `coraft-<node>-<i>-free`, the park-bound thread `coraft-<node>-wake`, the metrics server
//! `coraft-metrics`, the main thread `coraft-node`) runs on
//! `[helper_threads] cores`, by default the CPUs no shard is pinned to.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coraft_tuning::{CoreSelection, NodeConfig, Peer, PlacementPolicy};

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address whose port and the next are free (shard `s` listens
/// on the port + `s`).
fn two_free_ports() -> SocketAddr {
    // Ports below the ephemeral range (see `coraft::ports`), handed out in
    // order, so two in a row are usually consecutive.
    for _ in 0..100 {
        let pair = coraft::ports::free_loopback_addresses(2).unwrap();
        if pair[1].port() == pair[0].port() + 1 {
            return pair[0];
        }
    }
    panic!("no two consecutive free ports on loopback");
}

/// The `Cpus_allowed_list` line of a `/proc/.../status` file.
fn cpus_allowed(status_path: &Path) -> Option<String> {
    let status = std::fs::read_to_string(status_path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_owned())
}

/// Every thread of `pid`: its name and the CPUs it may run on.
fn threads(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Some(cpus)) = (
            std::fs::read_to_string(task.join("comm")),
            cpus_allowed(&task.join("status")),
        ) else {
            continue; // the thread ended between the listing and the read
        };
        threads.push((name.trim().to_owned(), cpus));
    }
    threads.sort();
    threads
}

/// Whether this process may run on CPUs 0 and 1 (the node inherits it).
fn may_use_cores_0_and_1() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_ISSET(0, &set)
            && libc::CPU_ISSET(1, &set)
    }
}

/// A running `coraft-node` of one node and two groups per shard, started
/// from `config`, once it said it runs.
fn start(dir: &Path, config: &NodeConfig) -> Running {
    let path = dir.join("node.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    let mut node = Running(
        Command::new(env!("CARGO_BIN_EXE_coraft-node"))
            .args(["--config", path.to_str().unwrap(), "--groups", "4"])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("coraft-node starts"),
    );
    let stderr = node.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("coraft-node exited before it ran: {seen:#?}"))
            .unwrap();
        let running = line.contains(" running ");
        seen.push(line);
        if running {
            break;
        }
    }
    // Drain stderr so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    node
}

/// A one-node config of `shards` shards pinned to `cores`, serving metrics.
fn pinned_config(dir: &Path, cores: Vec<usize>) -> (NodeConfig, SocketAddr) {
    let listen = two_free_ports();
    let metrics = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let mut config = NodeConfig {
        cluster_id: 3,
        node_id: 4,
        listen,
        metrics_listen: Some(metrics),
        peers: vec![Peer { id: 4, address: listen }],
        ..NodeConfig::default()
    };
    config.shards.count = cores.len();
    config.shards.placement = PlacementPolicy::Fixed;
    config.shards.cores = Some(CoreSelection::List(cores));
    config.wal.dir = Some(dir.join("wal"));
    (config, metrics)
}

/// Every thread of `pid` once `expected` (name -> CPUs) holds for all of
/// them but the io_uring workers, or after a generous deadline. A new
/// thread carries its parent's name and CPUs until it sets its own.
fn threads_once_placed(pid: u32, expected: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let threads = threads(pid);
        let placed = threads
            .iter()
            .filter(|(name, _)| !name.starts_with("iou-wrk-"))
            .all(|(name, cpus)| expected(name).as_deref() == Some(cpus.as_str()));
        let metrics_started = threads.iter().any(|(name, _)| name == "coraft-metrics");
        if (placed && metrics_started) || Instant::now() > deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where each kind of thread of node 4 should run: its executor's CPU for
/// `coraft-4-<shard>-<n>`, `helpers` for the others; `None` for a thread
/// the docs do not place.
fn placement(name: &str, shard_cores: &[usize], helpers: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("coraft-4-") {
        if rest == "wake" {
            // The park-bound thread (engine/src/runtime/park_bound.rs).
            return Some(helpers.to_owned());
        }
        let (shard, what) = rest.split_once('-')?;
        let shard: usize = shard.parse().ok()?;
        return match what {
            "blk" | "free" => Some(helpers.to_owned()),
            n if n.parse::<u64>().is_ok() => shard_cores.get(shard).map(ToString::to_string),
            _ => None,
        };
    }
    matches!(name, "coraft-metrics" | "coraft-node").then(|| helpers.to_owned())
}

/// Checks every thread of the node against `placement`, and that each
/// shard has its executor and its named blocking thread.
fn assert_placed(pid: u32, shard_cores: &[usize], helpers: &str) -> Vec<(String, String)> {
    let seen = threads_once_placed(pid, &|name| placement(name, shard_cores, helpers));
    for (name, cpus) in &seen {
        if name.starts_with("iou-wrk-") {
            // The kernel's io_uring workers of a shard's ring come and go;
            // each inherits its shard's CPU.
            assert!(
                shard_cores.iter().any(|core| core.to_string() == *cpus),
                "{name} on {cpus}: {seen:#?}"
            );
            continue;
        }
        let expected = placement(name, shard_cores, helpers)
            .unwrap_or_else(|| panic!("a thread the docs do not place: {name}: {seen:#?}"));
        assert_eq!(*cpus, expected, "{name}: {seen:#?}");
    }
    for shard in 0..shard_cores.len() {
        let prefix = format!("coraft-4-{shard}-");
        let named: Vec<&str> = seen
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(
            named.len(),
            3,
            "shard {shard}: an executor, a blocking thread and a release thread: {seen:#?}"
        );
        for helper in ["blk", "free"] {
            assert!(
                named.contains(&format!("{prefix}{helper}").as_str()),
                "shard {shard}'s {helper} thread is named: {seen:#?}"
            );
        }
    }
    for wanted in ["coraft-metrics", "coraft-node"] {
        assert_eq!(
            seen.iter().filter(|(name, _)| name == wanted).count(),
            1,
            "{wanted}: {seen:#?}"
        );
    }
    seen
}

fn stop(mut node: Running) {
    let pid = node.0.id();
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn shard_threads_run_on_their_cores_and_helper_threads_on_the_listed_ones() {
    if !may_use_cores_0_and_1() {
        eprintln!("skipped: this process may not run on CPUs 0 and 1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The reverse of the order `auto` would pick, so a node that ignored
    // the list and pinned shard i to CPU i would fail.
    let (mut config, metrics) = pinned_config(dir.path(), vec![1, 0]);
    config.helper_threads.cores = Some(CoreSelection::List(vec![1]));
    let node = start(dir.path(), &config);
    assert_placed(node.0.id(), &[1, 0], "1");

    // The node serves while pinned: its metrics endpoint answers.
    let body = http_get_metrics(metrics);
    assert!(body.contains("node=\"4\""), "{body}");
    stop(node);
}

#[test]
fn helper_threads_default_to_the_cpus_no_shard_is_pinned_to() {
    if !may_use_cores_0_and_1() {
        eprintln!("skipped: this process may not run on CPUs 0 and 1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (config, metrics) = pinned_config(dir.path(), vec![1]);
    assert_eq!(config.helper_threads.cores, None);
    let node = start(dir.path(), &config);
    assert_placed(node.0.id(), &[1], "0");
    let body = http_get_metrics(metrics);
    assert!(body.contains("node=\"4\""), "{body}");
    stop(node);
}

#[test]
fn a_helper_cpu_that_does_not_exist_stops_the_node_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = pinned_config(dir.path(), vec![0]);
    config.helper_threads.cores = Some(CoreSelection::List(vec![0, 4096]));
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coraft-node"))
        .args(["--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .expect("coraft-node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("helper_threads.cores[1]: core 4096 does not exist on this"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn http_get_metrics(address: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(10)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}
