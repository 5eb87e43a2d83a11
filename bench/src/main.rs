//! `coraft-bench`: the benchmark harness.
//!
//! Subcommands measure one layer each against its physical floor, measured in
//! the same run: `wal` (the write-ahead log against raw O_DIRECT + fdatasync)
//! and `net` (frames over TCP against a raw TCP stream and ping-pong);
//! `idle` measures what many idle groups cost three `coraft-node` processes;
//! `reactor` what one executor wake costs (the floor under every wait);
//! `install` InstallSnapshot throughput to a restarted follower against raw
//! TCP; `longrun` whether memory, disk and latency stay flat with
//! snapshots on; `restart` a node's restart time with a long log against a
//! snapshot plus a short tail; `slowapply` whether a state machine that
//! sleeps in every apply batch stalls the other groups of its shard, with
//! apply on the shard and on its own lane.
//! With no subcommand (or `cluster`) it runs an embedded 3-node cluster on
//! loopback, or with `--processes` one `coraft-node` process per node, or
//! with `--target` drives a cluster already running ([`shape`]).

mod args;
mod cluster;
mod floor;
mod idle;
mod install;
mod longrun;
mod longrun_processes;
mod machine;
mod net;
mod reactor;
mod report;
mod restart;
mod shape;
mod slowapply;
mod step_guard;
mod wal;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// coraft's benchmark harness: ops/s and latency of a Raft cluster, and of
/// each layer under it, against the physical floors measured in the same run.
///
/// With no subcommand it runs the cluster benchmark: an embedded 3-node
/// cluster on loopback, real TCP, real WALs with fdatasync in a temp dir,
/// driven by closed-loop clients (the options below); --processes runs each
/// node as a coraft-node process, --target drives a running cluster.
#[derive(Parser, Debug)]
#[command(
    name = "coraft-bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  coraft-bench --clients 256 --duration 8 --warmup 2\n  \
                  coraft-bench --workload mixed --read-ratio 0.9 --keys 10000\n  \
                  coraft-bench --rate 20000 --json\n  \
                  coraft-bench --sweep clients=1,16,64,256 --report out.html\n  \
                  coraft-bench wal --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The embedded cluster (the default when no subcommand is given).
    Cluster(Box<cluster::ClusterArgs>),
    /// The WAL against raw O_DIRECT writes + fdatasync of the same bytes.
    Wal(wal::WalArgs),
    /// coraft-net frames against a raw TCP stream and ping-pong.
    Net(net::NetArgs),
    /// What many idle groups cost three coraft-node processes (CPU, memory).
    Idle(idle::IdleArgs),
    /// What one glommio executor wake costs against a raw nanosleep.
    Reactor(reactor::ReactorArgs),
    /// The replication floor: 3 bare group-committing logs over TCP (or 1), no Raft.
    Floor(floor::FloorArgs),
    /// InstallSnapshot throughput to a restarted follower against raw TCP.
    Install(install::InstallArgs),
    /// A long run with snapshots on: are memory, disk, writes/s and p99 flat?
    Longrun(Box<longrun::LongrunArgs>),
    /// Restart time with a long log against a snapshot plus a short tail.
    Restart(restart::RestartArgs),
    /// A state machine sleeping per apply batch on one group: do the
    /// shard's other groups keep their write latency and heartbeats?
    Slowapply(slowapply::SlowApplyArgs),
}

fn main() -> ExitCode {
    // Bad options: clap prints which one and what it accepts, exit code 2.
    let cli = Cli::parse();
    let result = match cli.command {
        None => cluster::run(cli.cluster),
        Some(Command::Cluster(args)) => cluster::run(*args),
        Some(Command::Wal(args)) => wal::run(args),
        Some(Command::Net(args)) => net::run(args),
        Some(Command::Idle(args)) => idle::run(args),
        Some(Command::Reactor(args)) => reactor::run(args),
        Some(Command::Floor(args)) => floor::run(args),
        Some(Command::Install(args)) => install::run(args),
        Some(Command::Longrun(args)) => longrun::run(*args),
        Some(Command::Restart(args)) => restart::run(args),
        Some(Command::Slowapply(args)) => slowapply::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with its causes; no backtrace.
            eprintln!("coraft-bench: error: {error:#}");
            ExitCode::from(1)
        }
    }
}
