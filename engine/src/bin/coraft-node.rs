//! `coraft-node`: runs one node of a cluster as its own process, from a TOML
//! config (`docs/tuning.md`), hosting groups whose state machine counts the
//! commands it applied (enough for the client, the benchmark and tests), or
//! with `--state-machine kv` the replicated KV store (`coraft::api::KvStore`,
//! registers and lists, which the reliability suite drives).
//!
//! ```text
//! coraft-node --config node.toml [--groups N] [--join] [--state-machine counter|kv] [--no-quiesce] [--session-timeout-ms MS] [--log-format text|json]
//! ```
//! `coraft-node --help` lists every option with its meaning and default.
//! `--join` starts a node that joins a running cluster: its groups start
//! with no configuration (it neither campaigns nor votes) until a member's
//! leader adds it (`coraft-admin add-learner` or `add-voter`); its config's
//! `peers` lists the cluster's members and itself, for their addresses. A
//! node whose WAL already holds its groups recovers as without `--join`.
//! It logs to stderr at the config's `[log] level` (default `info`), or as
//! `RUST_LOG` says when set, as text or (`--log-format json`) one JSON
//! object per line; every line carries the node id, a shard's lines the
//! shard, and a group's the group (`coraft::logging`, docs/operations.md).
//! `--no-quiesce` keeps idle groups ticking and heartbeating (to measure what
//! quiescence saves). `--session-timeout-ms` is how long a client session
//! this node registers lives without a write (default 600000, 10 minutes).
//! It checks the config against this machine first and refuses to start,
//! listing every problem, if it does not fit (the same check as
//! `coraft-tune check`), or if `--groups` exceeds `limits.groups_max`. SIGINT or SIGTERM stops it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use coraft::api::{CommandCounter, KvStore};
use coraft::logging::LogFormat;
use coraft::raft::{GroupId, NodeId};
use coraft::runtime::{Node, NodeOptions, StateMachineFactory};
use coraft_tuning::{NodeConfig, Topology};

/// Runs one node of a coraft cluster from a TOML config (docs/tuning.md)
/// until SIGINT or SIGTERM. It checks the config against this machine first
/// and refuses to start, listing every problem, if it does not fit.
#[derive(Parser, Debug)]
#[command(name = "coraft-node", version)]
struct Cli {
    /// The node's TOML config: ids, addresses, peers, shards and cores, WAL,
    /// Raft timing, limits (`coraft-tune example` prints one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How many Raft groups this node hosts (ids 1..=N; group g lives on
    /// shard g % shards). At most the config's limits.groups_max.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    groups: u64,
    /// Join a running cluster: the groups start with no configuration
    /// (neither campaigning nor voting) until a member's leader adds this
    /// node (`coraft-admin add-learner` or `add-voter`). A node whose WAL
    /// already holds its groups recovers as without it.
    #[arg(long)]
    join: bool,
    /// The replicated state machine of every group: `counter` counts the
    /// commands it applied; `kv` is the KV store of registers and lists;
    /// `counter-off-shard` is `counter` applied on its own thread.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = StateMachineKind::Counter)]
    state_machine: StateMachineKind,
    /// Keep idle groups ticking and heartbeating (to measure what
    /// quiescence saves). Default: idle groups go quiet.
    #[arg(long)]
    no_quiesce: bool,
    /// How long a client session this node registers lives without a
    /// write, in milliseconds (600000 is 10 minutes).
    #[arg(long, value_name = "MS", default_value_t = coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS)]
    session_timeout_ms: u64,
    /// How log lines on stderr look: `text` (time, level, the node's,
    /// shard's and group's spans, module, message) or `json` (one object
    /// per line, the spans under `spans`). RUST_LOG sets the levels.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
}

/// The log line format `--log-format` selects.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormatArg {
    /// One line of text per record.
    Text,
    /// One JSON object per record.
    Json,
}

/// The state machine `--state-machine` selects.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StateMachineKind {
    /// Counts the commands it applied.
    Counter,
    /// The replicated KV store (registers and lists).
    Kv,
    /// `counter` applied on its own thread, off the shard (`OffShard`).
    CounterOffShard,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // TuningError's text already includes its cause: no chain.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let path = cli.config.display().to_string();
    let groups = cli.groups;
    let join = cli.join;
    let config = NodeConfig::from_file(&cli.config)?;
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    coraft::logging::install(config.log.level, format)?;
    // Every line this thread writes names the node; the shards' threads
    // enter their own span, which names it too.
    let _node = coraft::logging::node_span(NodeId(config.node_id)).entered();
    log::debug!(
        "effective config of {path}:\n{}",
        config.to_toml_string().unwrap_or_else(|e| e.to_string())
    );
    let plan = config.validate(&Topology::detect())?;
    for warning in plan.warnings() {
        log::warn!("{warning}");
    }
    let groups_max = config.limits.groups_max;
    if groups > groups_max as u64 {
        bail!("--groups {groups} exceeds limits.groups_max ({groups_max}) of {path}: raise the limit or host fewer groups");
    }
    // Block the stop signals before any thread starts, so sigwait gets them.
    let signals = stop_signals();
    let mut options = NodeOptions::from_plan(&plan, (1..=groups).map(GroupId).collect());
    options.quiesce_idle_groups = !cli.no_quiesce;
    options.session_timeout = std::time::Duration::from_millis(cli.session_timeout_ms);
    let factory: StateMachineFactory = match cli.state_machine {
        StateMachineKind::Kv => Arc::new(|_| Box::new(KvStore::default())),
        StateMachineKind::Counter => Arc::new(|_| Box::new(CommandCounter::default())),
        StateMachineKind::CounterOffShard => {
            Arc::new(|_| Box::new(coraft::api::OffShard::new(CommandCounter::default())))
        }
    };
    let started = if join {
        Node::start_joining(options, factory)
    } else {
        Node::start(options, factory)
    };
    let node = started.map_err(|e| anyhow::anyhow!("starting node {}: {e}", config.node_id))?;
    // This thread only waits for a signal from now on: it runs with the
    // other helper threads, off the shards' CPUs (docs/tuning.md).
    if let Err(error) = coraft::runtime::pin_current_thread(node.helper_cores()) {
        log::warn!("cannot pin the main thread to the helper CPUs: {error}");
    }
    log::info!(
        "node {} of cluster {} running {} shard(s), {groups} group(s), listening on {}{}",
        config.node_id,
        config.cluster_id,
        plan.shards().len(),
        config.listen,
        if join { ", waiting to be added (--join)" } else { "" }
    );
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait only writes `signal`.
    unsafe { libc::sigwait(&signals, &mut signal) };
    log::info!("signal {signal}: stopping");
    node.shutdown();
    Ok(())
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
