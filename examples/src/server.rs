//! What every example server shares: its flags (one node of a static
//! cluster, one Raft group, one shard), starting the node, snapshotting it
//! periodically, and stopping on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use coraft::api::StateMachine;
use coraft::raft::{GroupId, LogIndex, NodeId, ReadMode};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};

use crate::cli::{parse_peers, NodeList};

/// Each example replicates its state machine in this one Raft group.
pub const GROUP: GroupId = GroupId(1);

/// The flags of an example server.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// This node's id: its entry in --peers.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// Address to listen on, for other nodes and clients; must equal this
    /// node's address in --peers.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: SocketAddr,
    /// Every node of the cluster, this one included: ID=HOST:PORT,...
    #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = parse_peers)]
    pub peers: NodeList,
    /// Directory for this node's log and snapshots (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Nodes and clients of another cluster id are refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// How reads are confirmed: read-index asks a quorum, lease trusts the
    /// leader's lease (faster; relies on bounded clock drift).
    #[arg(long, value_enum, default_value_t = ReadModeArg::ReadIndex)]
    pub read_mode: ReadModeArg,
    /// Snapshot the state this often if it changed (0: never).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub snapshot_interval_ms: u64,
}

/// `--read-mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReadModeArg {
    /// ReadIndex: a quorum round per batch of reads.
    ReadIndex,
    /// The leader's lease.
    Lease,
}

/// Runs the node until SIGINT or SIGTERM, each group's state machine made
/// by `make` (given this node's id).
pub fn run<F>(args: &ServerArgs, make: F) -> Result<()>
where
    F: Fn(NodeId) -> Box<dyn StateMachine> + Send + Sync + 'static,
{
    let options = node_options(args)?;
    init_logging();
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating --data {}", args.data.display()))?;
    // Block the stop signals before any thread starts, so sigwait gets them.
    let signals = stop_signals();
    let node_id = NodeId(args.id);
    let factory: StateMachineFactory = Arc::new(move |_| make(node_id));
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
            .spawn(move || {
                let mut durable = LogIndex(0);
                loop {
                    std::thread::sleep(interval);
                    // Nothing applied yet (a new cluster electing): nothing to save.
                    match futures_lite::future::block_on(handle.status()) {
                        Ok(status) if status.applied_index.0 == 0 => continue,
                        Err(coraft::api::Error::Shutdown) => return,
                        _ => {}
                    }
                    // Only a state that changed since the last snapshot is
                    // saved again (the engine returns the newest one's index).
                    match futures_lite::future::block_on(handle.snapshot()) {
                        // `on_snapshot_save` printed "snapshot saved" before
                        // the files were synced; this says they are on disk.
                        Ok(index) if index > durable => {
                            durable = index;
                            println!("node {node_id}: snapshot at index {index} is durable");
                        }
                        Ok(_) => {}
                        Err(coraft::api::Error::Shutdown) => return,
                        Err(error) => log::warn!("snapshot failed: {error}"),
                    }
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
/// Logs warnings and errors on stderr (`RUST_LOG` overrides).
pub fn init_logging() {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        // glommio logs an error when a file system (tmpfs, overlayfs) cannot
        // poll its I/O, then does without: harmless, and alarming in a demo.
        .filter_module("glommio::reactor", log::LevelFilter::Off)
        .parse_env(env_logger::Env::new().filter("RUST_LOG"))
        .init();
}

/// The engine's options for this node, or an error naming the flag at fault.
pub fn node_options(args: &ServerArgs) -> Result<NodeOptions> {
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
    Ok(NodeOptions {
        groups: vec![GROUP],
        read_mode: match args.read_mode {
            ReadModeArg::ReadIndex => ReadMode::Safe,
            ReadModeArg::Lease => ReadMode::Lease,
        },
        // Every other field at its default: one shard, not pinned (three
        // servers share one machine); the tuning config's Raft timeouts and
        // WAL segments; the engine's default log-size snapshot policy, on
        // top of which `--snapshot-interval-ms` asks the group handle.
        ..NodeOptions::new(
            args.cluster_id,
            id,
            peers
                .iter()
                .map(|&(id, address)| PeerSpec {
                    id,
                    shard_addresses: vec![address],
                })
                .collect(),
            args.data.clone(),
        )
    })
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts
/// later), so that `libc::sigwait` on the returned set receives them.
pub fn stop_signals() -> libc::sigset_t {
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
