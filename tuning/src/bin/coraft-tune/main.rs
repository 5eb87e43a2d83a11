//! `coraft-tune`: inspect this machine and check node configs against it.
//!
//! ```text
//! coraft-tune detect                 print CPUs, SMT siblings, NUMA nodes, io_uring
//! coraft-tune suggest [--shards N]   print a [shards] layout and why
//! coraft-tune check CONFIG.toml      validate: exit 0 when it can start here, 1 listing every problem
//! coraft-tune example                print a commented config that passes `check` here
//! coraft-tune sweep [OPTIONS]        measure candidate layouts with coraft-bench, compare with `suggest`
//! ```
//! `coraft-tune help COMMAND` lists each command's options with their
//! meaning and default.

mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coraft_tuning::{example_config, NodeConfig, Topology, TuningError};

/// Inspects this machine and checks coraft node configs against it
/// (docs/tuning.md).
#[derive(Parser, Debug)]
#[command(name = "coraft-tune", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints this machine's CPUs, SMT siblings, NUMA nodes, io_uring
    /// support, kernel and locked-memory limit.
    Detect,
    /// Prints a [shards] layout for this machine and the rules behind it;
    /// exits 1 when the shards cannot be pinned.
    Suggest {
        /// How many shards. Default: one per usable physical core.
        #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        shards: Option<u64>,
    },
    /// Validates a node config against this machine: exit 0 when a node
    /// could start with it here, 1 listing every problem.
    Check {
        /// The node's TOML config.
        #[arg(value_name = "CONFIG.toml")]
        config: PathBuf,
    },
    /// Prints a commented example config that passes `check` here.
    Example,
    /// Measures candidate layouts (shards per node, CPUs, spin before
    /// parking) with the cluster benchmark, coraft-bench, in rounds, and
    /// judges suggest's layout against each other one round by round: exit 0
    /// when it is within 5% of every one, 1 when it is slower by more (with
    /// 95% confidence), 3 when the runs cannot tell.
    Sweep(sweep::SweepArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Detect => {
            print!("{}", Topology::detect());
            ExitCode::SUCCESS
        }
        Command::Suggest { shards } => suggest(shards.map(|n| n as usize)),
        Command::Check { config } => check(&config.display().to_string()),
        Command::Example => {
            print!("{}", example_config(&Topology::detect()));
            ExitCode::SUCCESS
        }
        Command::Sweep(args) => sweep::sweep(args),
    }
}

fn suggest(shards: Option<usize>) -> ExitCode {
    let suggestion = Topology::detect().suggest(shards);
    print!("{suggestion}");
    if suggestion.cores.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(path: &str) -> ExitCode {
    let config = match NodeConfig::from_file(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let topology = Topology::detect();
    let review = config.review(&topology);
    for warning in &review.warnings {
        println!("warning: {warning}");
    }
    for problem in &review.problems {
        println!("error: {problem}");
    }
    match config.validate(&topology) {
        Ok(plan) => {
            println!("{path}: ok, {} shard(s):", plan.shards().len());
            for shard in plan.shards() {
                let core = shard
                    .core
                    .map_or_else(|| "unbound".to_owned(), |core| format!("core {core}"));
                let spin = shard.spin_before_park.map_or_else(String::new, |spin| {
                    format!(", spins {} µs before parking", spin.as_micros())
                });
                println!("  shard {}: {core}, WAL {}{spin}", shard.shard, shard.wal_dir.display());
            }
            println!(
                "  helper threads (blocking, free, wake, metrics, main): CPUs {}",
                coraft_tuning::format_cpu_list(plan.helper_cores())
            );
            ExitCode::SUCCESS
        }
        Err(TuningError::Invalid { problems }) => {
            println!("{path}: {} problem(s); the node would not start", problems.len());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
