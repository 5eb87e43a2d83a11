//! Where the cluster benchmark's nodes run: in this process (the default),
//! as `coraft-node` processes this harness starts and stops (`--processes`),
//! or a cluster already running (`--target ADDR,...`). The last two are
//! driven the same way: the harness asks each node over the admin protocol
//! for its id, shard addresses and the groups' leaders, then its drivers
//! talk the client protocol to the leaders.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::admin::AdminClient;
use coraft::raft::{GroupId, NodeId};
use coraft_tuning::{CoreSelection, NodeConfig, Peer, PlacementPolicy};
use serde::Serialize;

use crate::workload::{ReadPath, StateMachineKind};

/// How long one admin call to a node may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long started processes get to elect a leader in every group.
const LEADERS_TIMEOUT_PROCESSES: Duration = Duration::from_secs(60);
/// How long a running (`--target`) cluster gets to show a leader per group.
const LEADERS_TIMEOUT_TARGET: Duration = Duration::from_secs(15);
/// Bound on attempts to find a run of free consecutive ports for a node.
const PORT_RUN_ATTEMPTS_MAX: usize = 64;

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Nodes in this process (the zero-setup default).
    Embedded,
    /// One `coraft-node` process per node, started and stopped by the harness.
    Processes,
    /// A cluster already running, named by its addresses.
    Target,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Embedded => "embedded",
            Shape::Processes => "processes",
            Shape::Target => "target",
        }
    }
}

/// A cluster reached over the network: its nodes' shard addresses and each
/// group's leader.
pub struct Remote {
    pub cluster_id: u64,
    pub addresses: BTreeMap<NodeId, Vec<SocketAddr>>,
    pub leaders: BTreeMap<GroupId, NodeId>,
}

impl Remote {
    pub fn shards(&self) -> usize {
        self.addresses.values().map(Vec::len).min().unwrap_or(1)
    }
}

/// Asks each node at `targets` who it is and where its shards listen, then
/// waits (up to `timeout`) until every group of `groups` has a leader.
pub fn discover(targets: &[SocketAddr], cluster_id: u64, groups: &[GroupId], timeout: Duration) -> Result<Remote> {
    let mut admins = Vec::new();
    let mut addresses = BTreeMap::new();
    for &target in targets {
        let mut admin =
            AdminClient::connect(target, cluster_id, ADMIN_TIMEOUT).with_context(|| format!("--target {target}"))?;
        let node = admin.node();
        let report = admin
            .status(&groups[..1])
            .with_context(|| format!("--target {target}: node {node}"))?;
        let known = match admin.call(coraft::admin::AdminRequest::Addresses) {
            Ok(coraft_net::admin::AdminReply::Addresses(known)) => known,
            Ok(other) => bail!("--target {target}: node {node} answered the address query with {other:?}"),
            Err(error) => return Err(anyhow!(error).context(format!("--target {target}: node {node}"))),
        };
        let mine = known
            .iter()
            .find(|n| n.node == node.0)
            .map(|n| {
                n.shard_addresses
                    .iter()
                    .map(|a| a.parse::<SocketAddr>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .with_context(|| format!("--target {target}: node {node}'s shard addresses"))?
            .unwrap_or_else(|| {
                // The node does not list itself: its shards listen from the
                // address dialled up.
                (0..report.shards.max(1) as u16)
                    .map(|s| SocketAddr::new(target.ip(), target.port().saturating_add(s)))
                    .collect()
            });
        if addresses.insert(node, mine).is_some() {
            bail!("--target names node {node} twice ({target} is one of its addresses)");
        }
        admins.push(admin);
    }
    let deadline = Instant::now() + timeout;
    let mut leaders = BTreeMap::new();
    loop {
        for admin in &mut admins {
            for chunk in groups.chunks(coraft::admin::ADMIN_STATUS_GROUPS_MAX) {
                let report = admin
                    .status(chunk)
                    .with_context(|| format!("asking node {} at {} for its groups", admin.node(), admin.address()))?;
                for group in report.groups {
                    if let Some(leader) = group.leader {
                        if addresses.contains_key(&NodeId(leader)) {
                            leaders.insert(GroupId(group.group), NodeId(leader));
                        }
                    }
                }
            }
        }
        if leaders.len() == groups.len() {
            return Ok(Remote {
                cluster_id,
                addresses,
                leaders,
            });
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} groups have a leader among the nodes named after {timeout:?} (a leader outside \
                 --target counts as none: name every node)",
                leaders.len(),
                groups.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `coraft-node` beside this binary, or `override_path`; a clear error
/// saying how to build it when it is missing.
pub fn node_binary(override_path: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = override_path {
        if !path.is_file() {
            bail!("--node-binary {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let dir = std::env::current_exe()?
        .parent()
        .context("the directory of coraft-bench")?
        .to_path_buf();
    let binary = dir.join("coraft-node");
    if !binary.is_file() {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => String::new(),
            Some("release") => " --release".into(),
            Some(other) => format!(" --profile {other}"),
            None => String::new(),
        };
        bail!(
            "{} not found: build it first with `cargo build{profile} -p coraft --bin coraft-node` (the same \
             profile as coraft-bench), or name one with --node-binary",
            binary.display()
        );
    }
    Ok(binary)
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped, however
/// the run ends; it also gets SIGTERM should this process die first.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn spawn(command: &mut Command) -> std::io::Result<Process> {
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        Ok(Process {
            child: command.spawn()?,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: sending SIGTERM to our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(") ").context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .context("short /proc/PID/stat")
        .and_then(|(u, s)| Ok(u.parse::<u64>()? + s.parse::<u64>()?))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// What `--processes` needs to start one cluster.
pub struct ProcessesSpec<'a> {
    pub binary: &'a Path,
    /// `--config`: the base of every node's config.
    pub base: Option<&'a NodeConfig>,
    pub cluster_id: u64,
    pub nodes: usize,
    pub shards: usize,
    pub groups: u64,
    pub state_machine: StateMachineKind,
    pub read_mode: ReadPath,
    pub spin_before_park_us: Option<u64>,
    /// `--shard-cores`: shard s of every node on the s-th (cycling).
    pub shard_cores: Option<Vec<usize>>,
    pub wal_zero_ahead_bytes: u64,
    pub wal_dsync_small_flush_bytes: usize,
    pub wal_segment_bytes: u64,
}

/// A per-node cores split: when the base config's `shards.cores` lists
/// `nodes x shards.count` CPUs, node `i` (from 0) gets the `i`-th run of
/// `shards.count` of them, so that each node has its own cores; any other
/// list is every node's as written (they share those cores).
pub fn node_cores(config: &NodeConfig, nodes: usize, node: usize) -> Option<Vec<usize>> {
    let count = config.shards.count;
    match &config.shards.cores {
        Some(CoreSelection::List(cores)) if count > 0 && nodes > 1 && cores.len() == nodes * count => {
            Some(cores[node * count..(node + 1) * count].to_vec())
        }
        _ => None,
    }
}

/// `coraft-node` processes, stopped when dropped.
pub struct Processes {
    pub processes: Vec<Process>,
    pub addresses: Vec<SocketAddr>,
    dir: PathBuf,
}

impl Processes {
    /// Starts one process per node, with its config, WAL and log in `dir`.
    pub fn start(spec: &ProcessesSpec<'_>, dir: &Path) -> Result<Processes> {
        let listen = port_runs(spec.nodes, spec.shards)?;
        let peers: Vec<Peer> = listen
            .iter()
            .enumerate()
            .map(|(i, &address)| Peer {
                id: i as u64 + 1,
                address,
            })
            .collect();
        let mut started = Processes {
            processes: Vec::new(),
            addresses: listen.clone(),
            dir: dir.to_path_buf(),
        };
        for (i, &address) in listen.iter().enumerate() {
            let mut config = match spec.base {
                Some(base) => base.clone(),
                None => {
                    let mut config = NodeConfig::default();
                    config.shards.count = spec.shards;
                    match &spec.shard_cores {
                        Some(cores) if !cores.is_empty() => {
                            config.shards.placement = PlacementPolicy::Fixed;
                            config.shards.cores = Some(CoreSelection::List(
                                (0..spec.shards).map(|s| cores[s % cores.len()]).collect(),
                            ));
                        }
                        _ => config.shards.placement = PlacementPolicy::Unbound,
                    }
                    config.shards.spin_before_park_us = spec.spin_before_park_us.unwrap_or(0);
                    config.wal.zero_ahead_bytes = spec.wal_zero_ahead_bytes;
                    config.wal.dsync_small_flush_bytes = spec.wal_dsync_small_flush_bytes;
                    config.wal.segment_bytes = spec.wal_segment_bytes;
                    // As the embedded cluster: a loaded machine must not
                    // see elections mid-run.
                    config.raft.election_timeout_ticks = 30;
                    config.raft.heartbeat_interval_ticks = 3;
                    config
                }
            };
            if let Some(cores) = node_cores(&config, spec.nodes, i) {
                config.shards.cores = Some(CoreSelection::List(cores));
            }
            config.cluster_id = spec.cluster_id;
            config.node_id = i as u64 + 1;
            config.listen = address;
            config.metrics_listen = None;
            config.peers = peers.clone();
            config.wal.dir = Some(dir.join(format!("node-{}", i + 1)));
            config.wal.dirs = None;
            if spec.read_mode == ReadPath::Lease {
                config.raft.read_mode = coraft_tuning::ReadMode::Lease;
                config.raft.check_quorum = true;
            } else {
                config.raft.read_mode = coraft_tuning::ReadMode::ReadIndex;
            }
            let path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&path, config.to_toml_string()?).with_context(|| format!("writing {}", path.display()))?;
            let log = std::fs::File::create(dir.join(format!("node-{}.log", i + 1)))?;
            let mut command = Command::new(spec.binary);
            command
                .arg("--config")
                .arg(&path)
                .args(["--groups", &spec.groups.to_string()])
                .args(["--state-machine", spec.state_machine.name()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let process = Process::spawn(&mut command)
                .with_context(|| format!("starting {} for node {}", spec.binary.display(), i + 1))?;
            started.processes.push(process);
        }
        Ok(started)
    }

    /// An error naming a node that exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        for (i, process) in self.processes.iter_mut().enumerate() {
            if let Some(status) = process.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(format!("node-{}.log", i + 1))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "coraft-node {} exited ({status}); the end of its log:\n  {}",
                    i + 1,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
                );
            }
        }
        Ok(())
    }

    /// Waits until every group has a leader; the nodes' shard addresses.
    pub fn discover(&mut self, cluster_id: u64, groups: &[GroupId]) -> Result<Remote> {
        let deadline = Instant::now() + LEADERS_TIMEOUT_PROCESSES;
        // Until the nodes listen, the admin connection is refused: retry.
        loop {
            self.check_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match discover(&self.addresses, cluster_id, groups, left.min(Duration::from_secs(5))) {
                Ok(remote) => return Ok(remote),
                Err(error) if left.is_zero() => {
                    return Err(error.context(format!(
                        "the coraft-node processes did not elect leaders within {LEADERS_TIMEOUT_PROCESSES:?}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// User + system CPU time of every node process so far.
    pub fn cpu(&self) -> Duration {
        self.processes.iter().filter_map(|p| cpu_time(p.child.id()).ok()).sum()
    }
}

/// The timeout `--target` discovery uses.
pub fn target_timeout() -> Duration {
    LEADERS_TIMEOUT_TARGET
}

/// `count` loopback listen addresses, each the first of `run` consecutive
/// free ports (a node's shard s listens on port + s).
fn port_runs(count: usize, run: usize) -> Result<Vec<SocketAddr>> {
    if run <= 1 {
        return Ok(coraft::ports::free_loopback_addresses(count)?);
    }
    let mut found: Vec<SocketAddr> = Vec::new();
    for _ in 0..PORT_RUN_ATTEMPTS_MAX * count {
        if found.len() == count {
            break;
        }
        let first = coraft::ports::free_loopback_addresses(1)?[0];
        let ports = first.port()..first.port().saturating_add(run as u16);
        let overlaps = found
            .iter()
            .any(|a| ports.contains(&a.port()) || (a.port()..a.port() + run as u16).contains(&first.port()));
        let free = ports.len() == run
            && ports
                .clone()
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free && !overlaps {
            found.push(first);
        }
    }
    if found.len() < count {
        bail!("found no {run} consecutive free loopback ports for each of {count} nodes");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cores_list_of_nodes_times_shards_gives_each_node_its_own_run() {
        let mut config = NodeConfig::default();
        config.shards.count = 2;
        config.shards.cores = Some(CoreSelection::List(vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(node_cores(&config, 3, 0), Some(vec![0, 1]));
        assert_eq!(node_cores(&config, 3, 2), Some(vec![4, 5]));
        // A list of one node's shards is every node's, as written.
        config.shards.cores = Some(CoreSelection::List(vec![0, 1]));
        assert_eq!(node_cores(&config, 3, 1), None);
        config.shards.cores = Some(CoreSelection::Auto);
        assert_eq!(node_cores(&config, 3, 1), None);
    }
}
