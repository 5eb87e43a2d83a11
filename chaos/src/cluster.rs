//! A cluster of real `coraft-node --state-machine kv` processes on this
//! machine: their configs, WALs and logs in one folder, each node started,
//! killed (SIGKILL), paused (SIGSTOP) and resumed (SIGCONT) by the nemesis,
//! and every process killed when the [`Cluster`] is dropped, however the run
//! ends.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coraft::client::ClientConfig;
use coraft::raft::NodeId;
use coraft_tuning::{NodeConfig, Peer, PlacementPolicy, SnapshotSettings};

use crate::netns::Network;
use crate::proxy::Links;
use crate::RunError;

/// The cluster id the harness's nodes and clients use.
pub const CLUSTER_ID: u64 = 0xC4A05;
/// WAL segment size of the harness's nodes: small, so a run's folder stays
/// small (the default preallocates 64 MiB a segment).
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// How far an idle node's WAL zeroes ahead.
const ZERO_AHEAD_BYTES: u64 = 1 << 20;
/// A node's Raft port inside its own network namespace.
const NAMESPACE_RAFT_PORT: u16 = 7_000;
/// A node's metrics port inside its own network namespace.
const NAMESPACE_METRICS_PORT: u16 = 7_001;
/// How long a metrics scrape waits for a node.
const METRICS_TIMEOUT: Duration = Duration::from_millis(500);

/// One node: its config and, while it runs, its process.
struct NodeProcess {
    config_path: PathBuf,
    /// Its WAL directory (one `shard-N` folder in it per shard).
    wal_dir: PathBuf,
    log_path: PathBuf,
    metrics: SocketAddr,
    /// The network namespace it runs in, if the run has partitions.
    namespace: Option<String>,
    child: Option<Child>,
    paused: bool,
}

/// The processes of one cluster.
pub struct Cluster {
    node_bin: PathBuf,
    nodes: Vec<NodeProcess>,
    raft_addresses: Vec<SocketAddr>,
    /// The proxies between the nodes, if the run has proxy faults (dropped
    /// after the nodes are killed).
    links: Option<Links>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// `count` free local ports below the ephemeral range (see `coraft::ports`).
fn free_ports(count: usize) -> Result<Vec<SocketAddr>, RunError> {
    coraft::ports::free_loopback_addresses(count).map_err(io_error("finding free local ports".into()))
}

impl Cluster {
    /// Writes the configs of `count` nodes under `dir` (one shard each,
    /// unbound, WAL in `dir/data`), Raft and metrics on free local ports,
    /// or, given a `network`, each node in its namespace on its address.
    /// Nothing runs until [`Cluster::start_all`].
    pub fn create(node_bin: &Path, dir: &Path, count: usize, network: Option<&Network>) -> Result<Cluster, RunError> {
        Cluster::create_with_segments(node_bin, dir, count, network, SEGMENT_BYTES)
    }

    /// [`Cluster::create`] with WAL segments of `segment_bytes` (the storage
    /// fault tests use the smallest, so that a few hundred writes fill
    /// several segments).
    pub fn create_with_segments(
        node_bin: &Path,
        dir: &Path,
        count: usize,
        network: Option<&Network>,
        segment_bytes: u64,
    ) -> Result<Cluster, RunError> {
        Cluster::create_configured(node_bin, dir, count, network, segment_bytes, None)
    }

    /// [`Cluster::create_with_segments`] with each node's `[snapshot]`
    /// policy set to `snapshot` (the `snapshot-install` fault uses a small
    /// one, so that the leader compacts past a stopped follower quickly);
    /// `None` keeps the defaults.
    pub fn create_configured(
        node_bin: &Path,
        dir: &Path,
        count: usize,
        network: Option<&Network>,
        segment_bytes: u64,
        snapshot: Option<SnapshotSettings>,
    ) -> Result<Cluster, RunError> {
        Cluster::create_full(node_bin, dir, count, network, segment_bytes, snapshot, None)
    }

    /// [`Cluster::create_configured`], and given `proxy_seed`, node-to-node
    /// traffic through a fault-injecting proxy per link ([`Links`], seeded
    /// with it): node `i` is configured to reach node `j` at the proxy of
    /// the link `i → j` (on loopback), clients still reach every node
    /// directly. Proxies and network namespaces do not mix (the proxies
    /// would bypass the partitions).
    pub fn create_full(
        node_bin: &Path,
        dir: &Path,
        count: usize,
        network: Option<&Network>,
        segment_bytes: u64,
        snapshot: Option<SnapshotSettings>,
        proxy_seed: Option<u64>,
    ) -> Result<Cluster, RunError> {
        if network.is_some() && proxy_seed.is_some() {
            return Err(RunError::Setup(
                "proxied links and network namespaces do not mix: the proxies would carry traffic around the partitions"
                    .into(),
            ));
        }
        let addresses = match network {
            None => free_ports(2 * count)?,
            Some(network) => [NAMESPACE_RAFT_PORT, NAMESPACE_METRICS_PORT]
                .iter()
                .flat_map(|&port| (0..count).map(move |i| SocketAddr::from((network.node_address(i), port))))
                .collect(),
        };
        let (raft, metrics) = addresses.split_at(count);
        let peers: Vec<Peer> = raft
            .iter()
            .enumerate()
            .map(|(i, &address)| Peer {
                id: i as u64 + 1,
                address,
            })
            .collect();
        let links = match proxy_seed {
            Some(seed) => Some(Links::start(raft, std::net::Ipv4Addr::LOCALHOST.into(), seed)?),
            None => None,
        };
        let mut nodes = Vec::new();
        for i in 0..count {
            // Through the proxies, node i reaches node j at the link i → j.
            let peers: Vec<Peer> = match &links {
                Some(links) => peers
                    .iter()
                    .enumerate()
                    .map(|(j, peer)| Peer {
                        id: peer.id,
                        address: if j == i {
                            peer.address
                        } else {
                            links.link(i, j).listen_address()
                        },
                    })
                    .collect(),
                None => peers.clone(),
            };
            let mut config = NodeConfig {
                cluster_id: CLUSTER_ID,
                node_id: i as u64 + 1,
                listen: raft[i],
                metrics_listen: Some(metrics[i]),
                peers,
                ..NodeConfig::default()
            };
            config.shards.count = 1;
            config.shards.placement = PlacementPolicy::Unbound;
            config.shards.spin_before_park_us = 0;
            config.wal.dir = Some(dir.join("data").join(format!("node-{}", i + 1)));
            config.wal.segment_bytes = segment_bytes;
            config.wal.zero_ahead_bytes = ZERO_AHEAD_BYTES.min(segment_bytes);
            if let Some(snapshot) = &snapshot {
                config.snapshot = snapshot.clone();
            }
            let text = config
                .to_toml_string()
                .map_err(|e| RunError::Setup(format!("node {} config: {e}", i + 1)))?;
            let config_path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&config_path, text).map_err(io_error(format!("writing {}", config_path.display())))?;
            nodes.push(NodeProcess {
                wal_dir: dir.join("data").join(format!("node-{}", i + 1)),
                config_path,
                log_path: dir.join(format!("node-{}.log", i + 1)),
                metrics: metrics[i],
                namespace: network.map(|n| n.namespace(i).to_string()),
                child: None,
                paused: false,
            });
        }
        Ok(Cluster {
            node_bin: node_bin.to_path_buf(),
            nodes,
            raft_addresses: raft.to_vec(),
            links,
        })
    }

    /// Node `index`'s (0-based) Raft address, where clients and admin
    /// tools reach it.
    pub fn raft_address(&self, index: usize) -> SocketAddr {
        self.raft_addresses[index]
    }

    /// The proxies between the nodes, if the cluster was made with them.
    pub fn links(&self) -> Option<&Links> {
        self.links.as_ref()
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What a client needs to reach the cluster.
    pub fn client_config(&self, attempt_timeout: Duration) -> ClientConfig {
        ClientConfig {
            cluster_id: CLUSTER_ID,
            nodes: self
                .raft_addresses
                .iter()
                .enumerate()
                .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
                .collect(),
            attempt_timeout,
        }
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) -> Result<(), RunError> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    /// Starts node `index` (0-based) if it is not running; its stderr goes
    /// to its log file, appended across restarts.
    pub fn start(&mut self, index: usize) -> Result<(), RunError> {
        self.start_with(index, false)
    }

    /// [`Cluster::start`] with `--join`: for a node whose WAL was wiped
    /// after it was removed from the group, which must wait, neither
    /// campaigning nor voting, until a leader adds it back.
    pub fn start_joining(&mut self, index: usize) -> Result<(), RunError> {
        self.start_with(index, true)
    }

    fn start_with(&mut self, index: usize, join: bool) -> Result<(), RunError> {
        let node = &mut self.nodes[index];
        if node.child.is_some() {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(io_error(format!("opening {}", node.log_path.display())))?;
        let _ = writeln!(
            log,
            "--- coraft-chaos: starting node {}{}",
            index + 1,
            if join { " (--join)" } else { "" }
        );
        let mut command = match &node.namespace {
            // `ip netns exec` enters the namespace and execs the node: the
            // child's pid is the node's.
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&self.node_bin);
                command
            }
            None => Command::new(&self.node_bin),
        };
        // Its own process group: a Ctrl-C meant for the harness (which
        // ends the run normally) does not stop the nodes under it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg("--config")
            .arg(&node.config_path)
            .args(["--state-machine", "kv"])
            .args(join.then_some("--join"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io_error(format!("starting {}", self.node_bin.display())))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Node `index`'s WAL directory (a `shard-0` folder in it holds its
    /// segments and snapshots).
    pub fn wal_dir(&self, index: usize) -> &Path {
        &self.nodes[index].wal_dir
    }

    /// What node `index` logged since it was last started.
    pub fn log_since_start(&self, index: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index].log_path).unwrap_or_default();
        let start = text.rfind("--- coraft-chaos: starting node").unwrap_or(0);
        text[start..].to_string()
    }

    /// Node `index`'s log file (its stderr, appended across restarts).
    pub fn log_path(&self, index: usize) -> &Path {
        &self.nodes[index].log_path
    }

    /// If node `index` was started and its process has exited on its own
    /// (it refused to start, or failed), reaps it and returns its status.
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[index];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    /// Whether node `index` runs (started, not killed; it may be paused).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// Kills node `index` with SIGKILL and reaps it; false if it was not running.
    pub fn kill(&mut self, index: usize) -> bool {
        let node = &mut self.nodes[index];
        let Some(mut child) = node.child.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        node.paused = false;
        true
    }

    /// Sends SIGSTOP (`pause`) or SIGCONT to node `index`; false if it is
    /// not running.
    pub fn pause(&mut self, index: usize, pause: bool) -> bool {
        let node = &mut self.nodes[index];
        let Some(child) = &node.child else {
            return false;
        };
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        node.paused = pause;
        true
    }

    /// Resumes every paused node, starts every stopped one, and sets
    /// every proxied link back to plain forwarding.
    pub fn heal(&mut self) -> Result<(), RunError> {
        if let Some(links) = &self.links {
            links.heal();
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.pause(index, false);
            }
        }
        self.start_all()
    }

    /// A node (0-based) running, not paused, whose metrics say it leads the
    /// group; `None` if no such node answers.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].paused)
            .find(|&i| scrape(self.nodes[i].metrics, "coraft_groups_led").unwrap_or(0) > 0)
    }

    /// Metric `name` (summed over its lines) of node `index`, if it runs,
    /// is not paused and answers.
    pub fn metric(&self, index: usize, name: &str) -> Option<u64> {
        let node = &self.nodes[index];
        if node.child.is_none() || node.paused {
            return None;
        }
        scrape(node.metrics, name)
    }

    /// Nodes not paused and running.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].paused)
            .collect()
    }

    /// Stops every node: resumes the paused, then SIGKILLs and reaps all.
    pub fn stop_all(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.pause(index, false);
            }
            self.kill(index);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The sum of metric `name` over the lines of a node's `/metrics`.
fn scrape(address: SocketAddr, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect_timeout(&address, METRICS_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(METRICS_TIMEOUT)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let values: Vec<u64> = text
        .lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
