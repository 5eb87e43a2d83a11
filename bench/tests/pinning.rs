//! `coraft-bench --shard-cores` pins each shard's executor (every node's)
//! to its CPU, as read back from `/proc/<pid>/task/*/status` while the run
//! goes on; the shards' blocking threads (`coraft-<node>-<shard>-blk`) go
//! to the process's CPUs no shard uses, and the other threads keep the
//! process's CPUs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let task = task.path();
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

/// coraft-<node>-<shard>-<n>: a shard's executor.
fn is_shard_thread(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 4 && parts[0] == "coraft" && parts[1..].iter().all(|p| p.parse::<u64>().is_ok())
}

#[test]
fn shard_cores_pins_every_nodes_shard_threads_to_their_cpu() {
    let process_cpus = cpus_allowed(Path::new("/proc/self/status")).unwrap();
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
    let may_use_0 = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 && libc::CPU_ISSET(0, &set)
    };
    if !may_use_0 {
        eprintln!("skipped: this process may not run on CPU 0");
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_coraft-bench"))
        .args([
            "--shard-cores",
            "0",
            "--clients",
            "4",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--no-floor",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coraft-bench starts");
    let pid = child.id();
    // Wait for the three nodes' executors (coraft-<node>-<shard>-<n>), pinned.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = threads(pid);
        let nodes: std::collections::BTreeSet<&str> = seen
            .iter()
            .filter(|(name, _)| is_shard_thread(name))
            .filter_map(|(name, _)| name.split('-').nth(1))
            .collect();
        // A new thread pins itself once it runs: poll until every one did.
        let pinned = seen
            .iter()
            .filter(|(name, _)| is_shard_thread(name))
            .all(|(_, cpus)| cpus == "0");
        let blocking: Vec<&str> = seen
            .iter()
            .filter(|(name, _)| name.ends_with("-blk"))
            .map(|(_, cpus)| cpus.as_str())
            .collect();
        let helpers_placed = blocking.len() >= 3 && (process_cpus != "0-1" || blocking.iter().all(|&cpus| cpus == "1"));
        if (nodes.len() >= 3 && pinned && helpers_placed) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("coraft-bench ends");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let shard_threads: Vec<&(String, String)> = seen.iter().filter(|(name, _)| is_shard_thread(name)).collect();
    assert!(shard_threads.len() >= 3, "one executor per node: {seen:#?}");
    for (name, cpus) in &shard_threads {
        assert_eq!(cpus, "0", "{name} is pinned to --shard-cores 0: {seen:#?}");
    }
    // With CPUs 0 and 1, the blocking threads take the one no shard uses.
    let blocking: Vec<&(String, String)> = seen.iter().filter(|(name, _)| name.ends_with("-blk")).collect();
    assert!(blocking.len() >= 3, "one blocking thread per node: {seen:#?}");
    if process_cpus == "0-1" {
        for (name, cpus) in &blocking {
            assert_eq!(cpus, "1", "{name} runs on the CPU no shard uses: {seen:#?}");
        }
    }
    // The client drivers and the main thread are not pinned.
    assert!(
        seen.iter()
            .any(|(name, cpus)| name == "coraft-bench" && *cpus == process_cpus),
        "the main thread keeps the process's CPUs ({process_cpus}): {seen:#?}"
    );
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(
        line.contains("\"shard_cores\":[0]"),
        "the JSON's config says it: {line}"
    );
}
