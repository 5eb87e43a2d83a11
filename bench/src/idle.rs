//! `coraft-bench idle`: what many idle groups cost. Three `coraft-node`
//! processes (built next to this binary) each host the same `--groups` on
//! loopback with real WALs; once every group has elected a leader and gone
//! quiet, the harness reads each process's CPU time (`/proc/PID/stat`),
//! resident memory (`VmRSS`) and Raft messages sent (its `/metrics`) over
//! `--duration` seconds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};

const NODES: usize = 3;

/// `coraft-bench idle`: needs `coraft-node` beside `coraft-bench`
/// (`cargo build --release -p coraft --bin coraft-node`, same profile).
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Groups every node hosts.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = crate::args::at_least_one_u64)]
    pub groups: u64,
    /// Seconds of measurement once every group is quiet.
    #[arg(long, default_value_t = 30.0, value_name = "S", value_parser = crate::args::positive_seconds)]
    pub duration: f64,
    /// Seconds to wait for every group to elect a leader and go quiet.
    #[arg(long, default_value_t = 180.0, value_name = "S", value_parser = crate::args::positive_seconds)]
    pub settle_timeout: f64,
    /// Keep idle groups heartbeating (the nodes' --no-quiesce).
    #[arg(long)]
    pub no_quiesce: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Options {
    groups: u64,
    duration: Duration,
    settle_timeout: Duration,
    quiesce: bool,
    json: bool,
}

fn options(args: IdleArgs) -> Options {
    Options {
        groups: args.groups,
        duration: Duration::from_secs_f64(args.duration),
        settle_timeout: Duration::from_secs_f64(args.settle_timeout),
        quiesce: !args.no_quiesce,
        json: args.json,
    }
}

/// Kills the process when dropped, however the run ends.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: sending SIGTERM to our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addresses(count: usize) -> Result<Vec<SocketAddr>> {
    Ok(coraft::ports::free_loopback_addresses(count)?)
}

fn write_configs(dir: &Path, raft: &[SocketAddr], metrics: &[SocketAddr]) -> Result<Vec<PathBuf>> {
    let peers: Vec<Peer> = raft
        .iter()
        .enumerate()
        .map(|(i, &address)| Peer {
            id: i as u64 + 1,
            address,
        })
        .collect();
    let mut paths = Vec::new();
    for i in 0..raft.len() {
        let mut config = NodeConfig {
            cluster_id: 77,
            node_id: i as u64 + 1,
            listen: raft[i],
            metrics_listen: Some(metrics[i]),
            peers: peers.clone(),
            ..NodeConfig::default()
        };
        config.shards.count = 1;
        config.shards.placement = PlacementPolicy::Unbound;
        config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
        let path = dir.join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, config.to_toml_string()?)?;
        paths.push(path);
    }
    Ok(paths)
}

fn get_metrics(address: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Sum of a metric over the node's shards.
fn metric_sum(text: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(") ").context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

pub fn run(args: IdleArgs) -> Result<()> {
    let options = options(args);
    let node_binary = std::env::current_exe()?
        .parent()
        .context("the directory of coraft-bench")?
        .join("coraft-node");
    if !node_binary.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p coraft --bin coraft-node` \
             (the same profile as coraft-bench)",
            node_binary.display()
        );
    }
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let raft = free_addresses(NODES)?;
    let metrics = free_addresses(NODES)?;
    let configs = write_configs(dir.path(), &raft, &metrics)?;
    let mut processes = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let log = std::fs::File::create(dir.path().join(format!("node-{}.log", i + 1)))?;
        let mut command = Command::new(&node_binary);
        command
            .arg("--config")
            .arg(config)
            .args(["--groups", &options.groups.to_string()])
            .stdout(Stdio::null())
            .stderr(log);
        if !options.quiesce {
            command.arg("--no-quiesce");
        }
        processes.push(Process {
            child: command.spawn().context("starting coraft-node")?,
        });
    }
    eprintln!(
        "idle: 3 coraft-node processes, {} groups each, quiescence {}; waiting for leaders{}",
        options.groups,
        if options.quiesce { "on" } else { "off" },
        if options.quiesce { " and quiet groups" } else { "" }
    );
    let started = Instant::now();
    loop {
        let texts: Vec<String> = metrics.iter().map(|&m| get_metrics(m).unwrap_or_default()).collect();
        let led: u64 = texts.iter().map(|t| metric_sum(t, "coraft_groups_led")).sum();
        let quiet: Vec<u64> = texts.iter().map(|t| metric_sum(t, "coraft_groups_quiesced")).collect();
        let settled = led == options.groups && (!options.quiesce || quiet.iter().all(|&q| q == options.groups));
        eprintln!(
            "  {:>5.1} s: groups with a leader {led}/{}, quiet per node {quiet:?}",
            started.elapsed().as_secs_f64(),
            options.groups
        );
        if settled {
            break;
        }
        if started.elapsed() > options.settle_timeout {
            eprintln!("  not settled after {:?}; measuring anyway", options.settle_timeout);
            break;
        }
        for process in &mut processes {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "a coraft-node exited early ({status}); its log is in {}",
                    dir.path().display()
                );
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let settle_s = started.elapsed().as_secs_f64();
    let pids: Vec<u32> = processes.iter().map(|p| p.child.id()).collect();
    let sent = |texts: &[String]| -> Vec<u64> {
        texts
            .iter()
            .map(|t| metric_sum(t, "coraft_raft_messages_sent_total"))
            .collect()
    };
    let texts_before: Vec<String> = metrics.iter().map(|&m| get_metrics(m).unwrap_or_default()).collect();
    let cpu_before = pids.iter().map(|&p| cpu_time(p)).collect::<Result<Vec<_>>>()?;
    let window = Instant::now();
    std::thread::sleep(options.duration);
    let cpu_after = pids.iter().map(|&p| cpu_time(p)).collect::<Result<Vec<_>>>()?;
    let elapsed = window.elapsed().as_secs_f64();
    let texts_after: Vec<String> = metrics.iter().map(|&m| get_metrics(m).unwrap_or_default()).collect();
    let (sent_before, sent_after) = (sent(&texts_before), sent(&texts_after));
    let cpu_percent: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| (*a - *b).as_secs_f64() / elapsed * 100.0)
        .collect();
    let rss: Vec<f64> = pids.iter().map(|&p| resident_mib(p)).collect();
    let messages_per_s: Vec<f64> = sent_before
        .iter()
        .zip(&sent_after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / elapsed)
        .collect();
    let quiet: Vec<u64> = texts_after
        .iter()
        .map(|t| metric_sum(t, "coraft_groups_quiesced"))
        .collect();
    let led: Vec<u64> = texts_after.iter().map(|t| metric_sum(t, "coraft_groups_led")).collect();
    println!(
        "idle: {} groups per node, quiescence {}, settled in {settle_s:.1} s, measured over {elapsed:.1} s",
        options.groups,
        if options.quiesce { "on" } else { "off" }
    );
    println!("node   led   quiet   cpu % of one core   RSS MiB   Raft messages sent/s");
    for i in 0..NODES {
        println!(
            "{:>4} {:>5} {:>7} {:>19.2} {:>9.1} {:>22.0}",
            i + 1,
            led[i],
            quiet[i],
            cpu_percent[i],
            rss[i],
            messages_per_s[i]
        );
    }
    if options.json {
        let line = serde_json::json!({
            "system": "coraft",
            "workload": "idle",
            "nodes": NODES,
            "groups": options.groups,
            "quiesce": options.quiesce,
            "duration_s": (elapsed * 10.0).round() / 10.0,
            "settle_s": (settle_s * 10.0).round() / 10.0,
            "groups_led": led,
            "groups_quiet": quiet,
            "cpu_percent": cpu_percent.iter().map(|c| (c * 100.0).round() / 100.0).collect::<Vec<_>>(),
            "rss_mib": rss.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "raft_messages_per_s": messages_per_s.iter().map(|m| m.round()).collect::<Vec<_>>(),
        });
        println!("{line}");
    }
    drop(processes);
    Ok(())
}
