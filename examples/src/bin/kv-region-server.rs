//! `kv-region-server`: one node of the region-sharded key-value example
//! (`docs/examples.md`, "Regions"): the keyspace split by key range into
//! regions, each its own Raft group; region 1 holds everything until
//! `kv-region-client split KEY` splits it. Flags as `kv-server`'s:
//!
//! ```text
//! kv-region-server --id 1 --listen 127.0.0.1:8191 \
//!   --peers 1=127.0.0.1:8191,2=127.0.0.1:8192,3=127.0.0.1:8193 --data /tmp/region-1
//! ```

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{Node, StateMachineFactory};
use coraft_examples::region::{RegionHost, ROOT_REGION};
use coraft_examples::server::{init_logging, node_options, stop_signals, ServerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "kv-region-server",
    about = "One node of the region-sharded replicated key-value store example"
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Log entries each region keeps below its newest snapshot, for
    /// followers that lag (0: none; a follower behind the snapshot is sent
    /// the snapshot).
    #[arg(long, value_name = "ENTRIES", default_value_t = coraft::runtime::SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT)]
    log_tail_entries: u64,
}

fn main() -> Result<()> {
    let Args {
        server: args,
        log_tail_entries,
    } = Args::parse();
    let mut options = node_options(&args)?;
    options.snapshot.log_tail_entries = log_tail_entries;
    // Region 1 is configured; the others are created by splits and come
    // back on restart from the engine's list of created groups.
    options.groups = vec![GroupId(ROOT_REGION)];
    if args.snapshot_interval_ms != 30_000 {
        eprintln!("kv-region-server: --snapshot-interval-ms is not used here; the engine's log-size policy snapshots each region");
    }
    init_logging();
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating --data {}", args.data.display()))?;
    let signals = stop_signals();
    let node_id = NodeId(args.id);
    let members = args.peers.0.iter().map(|&(id, _)| id).collect();
    let host = RegionHost::new(node_id, &args.data, members)
        .with_context(|| format!("creating the seed directory in --data {}", args.data.display()))?;
    let factory_host = host.clone();
    let factory: StateMachineFactory = Arc::new(move |group| factory_host.state_machine(group));
    let node = Node::start(options, factory).map_err(|e| anyhow!("starting node {node_id}: {e}"))?;
    host.started(node.group_creator());
    println!(
        "node {node_id}: listening on {}, {} peers, regions in {}",
        args.listen,
        args.peers.0.len(),
        args.data.display()
    );
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait only writes `signal`.
    unsafe { libc::sigwait(&signals, &mut signal) };
    println!("node {node_id}: signal {signal}: stopping");
    node.shutdown();
    Ok(())
}
