//! Pinning really happens: a `coraft-node` process started from a config
//! that pins its shards is looked at from outside, through
//! `/proc/<pid>/task/*/comm` (thread names) and `Cpus_allowed_list` in
//! `/proc/<pid>/task/*/status` (what each thread may run on).
//!
//! What the config says, and so what the test expects (docs/tuning.md,
//! "Which threads run where"): shard `i`'s executor thread
//! (`coraft-<node>-<i>-<n>`) runs only on `shards.cores[i]`, and so does the
//! shard's blocking thread (which writes snapshots off the loop and carries
//! its executor's name, as glommio starts it unnamed from that thread), and
//! the kernel's io_uring workers of the shard's ring (`iou-wrk-<tid>`); the metrics server (`coraft-metrics`) and the main
//! thread (`coraft-node`) are not pinned: they may run on every CPU the
//! process may.

use std::collections::BTreeMap;
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

#[test]
fn shard_threads_run_on_their_configured_cores_and_helpers_where_the_config_says() {
    if !may_use_cores_0_and_1() {
        eprintln!("skipped: this process may not run on CPUs 0 and 1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
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
    config.shards.count = 2;
    config.shards.placement = PlacementPolicy::Fixed;
    // The reverse of the order `auto` would pick, so a node that ignored
    // the list and pinned shard i to CPU i would fail.
    config.shards.cores = Some(CoreSelection::List(vec![1, 0]));
    config.wal.dir = Some(dir.path().join("wal"));
    let path = dir.path().join("node.toml");
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
        let running = line.contains(" running 2 shard(s)");
        seen.push(line);
        if running {
            break;
        }
    }
    // Drain stderr so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let pid = node.0.id();
    let process_cpus = cpus_allowed(Path::new("/proc/self/status")).unwrap();
    // A new thread names itself as it starts (until then it carries its
    // parent's name): wait for the metrics server's, generously.
    let deadline = Instant::now() + Duration::from_secs(30);
    let by_name = loop {
        let threads = threads(pid);
        if threads.iter().any(|(name, _)| name == "coraft-metrics") || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Shard -> the CPUs of each thread carrying its name: the executor and
    // its blocking thread.
    let mut executors: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (name, cpus) in &by_name {
        if let Some(rest) = name.strip_prefix("coraft-4-") {
            let (shard, _) = rest.split_once('-').expect("coraft-<node>-<shard>-<n>");
            executors.entry(shard.parse().unwrap()).or_default().push(cpus.clone());
        }
    }
    let cpus_of = |wanted: &str| -> Vec<&str> {
        by_name
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, cpus)| cpus.as_str())
            .collect()
    };
    assert_eq!(
        executors,
        BTreeMap::from([(0, vec!["1".to_owned(); 2]), (1, vec!["0".to_owned(); 2])]),
        "an executor and a blocking thread per shard, on shards.cores[shard]: {by_name:#?}"
    );
    assert_eq!(cpus_of("coraft-metrics"), [process_cpus.as_str()], "{by_name:#?}");
    assert_eq!(
        cpus_of("coraft-node"),
        [process_cpus.as_str()],
        "the main thread: {by_name:#?}"
    );
    // The kernel's io_uring workers (`iou-wrk-<tid>`) of a shard's ring
    // come and go; each inherits its shard's CPU.
    for (name, cpus) in &by_name {
        if name.starts_with("iou-wrk-") {
            assert!(cpus == "0" || cpus == "1", "{name} on {cpus}: {by_name:#?}");
        }
    }
    let known = 2 + 2 + 1 + 1;
    let others = by_name.iter().filter(|(name, _)| !name.starts_with("iou-wrk-")).count();
    assert_eq!(others, known, "a thread the docs do not place: {by_name:#?}");

    // The node serves while pinned: its metrics endpoint answers.
    let body = http_get_metrics(metrics);
    assert!(body.contains("node=\"4\""), "{body}");

    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status}");
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
