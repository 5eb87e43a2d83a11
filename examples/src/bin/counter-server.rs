//! `counter-server`: one node of SOFAJRaft's counter, as its own process.
//! Start it three times, once per node (`docs/examples.md`):
//!
//! ```text
//! counter-server --id 1 --listen 127.0.0.1:8081 \
//!   --peers 1=127.0.0.1:8081,2=127.0.0.1:8082,3=127.0.0.1:8083 --data /tmp/counter-1
//! ```
//!
//! One port serves both the other nodes and clients (the handshake says
//! which is which). The node keeps its log and snapshots under `--data`; a
//! server restarted with the same `--data` comes back with its value. Every
//! `--snapshot-interval-ms` it snapshots the counter if it changed. What the
//! state machine sees (increments applied, leader start and stop,
//! configurations, snapshots) goes to stdout; the engine's own log goes to
//! stderr at `warn` (`RUST_LOG` changes it, e.g. `RUST_LOG=info`). SIGINT or SIGTERM stops it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use coraft::raft::{GroupId, NodeId, ReadMode};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};
use coraft_examples::cli::{parse_peers, NodeList};
use coraft_examples::counter::Counter;

/// The counter lives in this one Raft group.
const GROUP: GroupId = GroupId(1);

#[derive(Parser, Debug)]
#[command(
    name = "counter-server",
    about = "One node of the replicated counter (SOFAJRaft's counter example on coraft)"
)]
struct Args {
    /// This node's id: its entry in --peers.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Address to listen on, for other nodes and clients; must equal this
    /// node's address in --peers.
    #[arg(long, value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// Every node of the cluster, this one included: ID=HOST:PORT,...
    #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = parse_peers)]
    peers: NodeList,
    /// Directory for this node's log and snapshots (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Nodes and clients of another cluster id are refused.
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// How `get` is confirmed: read-index asks a quorum, lease trusts the
    /// leader's lease (faster; relies on bounded clock drift).
    #[arg(long, value_enum, default_value_t = ReadModeArg::ReadIndex)]
    read_mode: ReadModeArg,
    /// Snapshot the counter this often if it changed (0: never).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    snapshot_interval_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReadModeArg {
    ReadIndex,
    Lease,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let options = node_options(&args)?;
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        // glommio logs an error when a file system (tmpfs, overlayfs) cannot
        // poll its I/O, then does without: harmless, and alarming in a demo.
        .filter_module("glommio::reactor", log::LevelFilter::Off)
        .parse_env(env_logger::Env::new().filter("RUST_LOG"))
        .init();
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating --data {}", args.data.display()))?;
    // Block the stop signals before any thread starts, so sigwait gets them.
    let signals = stop_signals();
    let node_id = NodeId(args.id);
    let factory: StateMachineFactory = Arc::new(move |_| Box::new(Counter::new(node_id)));
    let node = Node::start(options, factory).map_err(|e| anyhow::anyhow!("starting node {node_id}: {e}"))?;
    println!(
        "node {node_id}: listening on {}, {} peers, data in {}",
        args.listen,
        args.peers.0.len(),
        args.data.display()
    );
    if args.snapshot_interval_ms > 0 {
        let handle = node.group(GROUP);
        let interval = Duration::from_millis(args.snapshot_interval_ms);
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                // Nothing applied yet (a new cluster electing): nothing to save.
                match futures_lite::future::block_on(handle.status()) {
                    Ok(status) if status.applied_index.0 == 0 => continue,
                    Err(coraft::api::Error::Shutdown) => return,
                    _ => {}
                }
                // Only a counter that changed since the last snapshot is
                // saved again (the engine returns the newest one's index).
                match futures_lite::future::block_on(handle.snapshot()) {
                    Ok(_) => {}
                    Err(coraft::api::Error::Shutdown) => return,
                    Err(error) => log::warn!("snapshot failed: {error}"),
                }
            })
            .context("starting the snapshot thread")?;
    }
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait only writes `signal`.
    unsafe { libc::sigwait(&signals, &mut signal) };
    println!("node {node_id}: signal {signal}: stopping");
    node.shutdown();
    Ok(())
}

/// The engine's options for this node, or an error naming the flag at fault.
fn node_options(args: &Args) -> Result<NodeOptions> {
    let id = NodeId(args.id);
    let peers = &args.peers.0;
    let Some(&(_, own)) = peers.iter().find(|(n, _)| *n == id) else {
        bail!("--peers does not list node {id} (--id {id})");
    };
    if own != args.listen {
        bail!(
            "--listen {} differs from node {id}'s address {own} in --peers: other nodes would look for it there",
            args.listen
        );
    }
    let raft = coraft_tuning::RaftSettings::default();
    Ok(NodeOptions {
        cluster_id: args.cluster_id,
        node_id: id,
        peers: peers
            .iter()
            .map(|&(id, address)| PeerSpec {
                id,
                shard_addresses: vec![address],
            })
            .collect(),
        // One shard, not pinned: three servers share one machine.
        shard_cores: vec![None],
        wal_dir: args.data.clone(),
        shard_wal_dirs: Vec::new(),
        wal_segment_bytes: coraft_wal::config::SEGMENT_BYTES_DEFAULT,
        wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
        wal_polled_io: false,
        groups: vec![GROUP],
        tick: raft.tick(),
        election_timeout_ticks: raft.election_timeout_ticks,
        heartbeat_interval_ticks: raft.heartbeat_interval_ticks,
        read_mode: match args.read_mode {
            ReadModeArg::ReadIndex => ReadMode::Safe,
            ReadModeArg::Lease => ReadMode::Lease,
        },
        protocol: Default::default(),
        limits: Default::default(),
        spin_before_park: None,
        metrics_listen: None,
        quiesce_idle_groups: true,
        request_timeout: coraft::runtime::REQUEST_TIMEOUT,
        session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
    })
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
