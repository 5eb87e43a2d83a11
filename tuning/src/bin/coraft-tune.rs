//! `coraft-tune`: inspect this machine and check node configs against it.
//!
//! ```text
//! coraft-tune detect                 print CPUs, SMT siblings, NUMA nodes, io_uring
//! coraft-tune suggest [--shards N]   print a [shards] layout and why
//! coraft-tune check CONFIG.toml      validate: exit 0 when it can start here, 1 listing every problem
//! coraft-tune example                print a commented config that passes `check` here
//! ```

use std::process::ExitCode;

use coraft_tuning::{example_config, NodeConfig, Topology, TuningError};

const USAGE: &str = "usage:
  coraft-tune detect                 print this machine's CPUs, SMT siblings, NUMA nodes and io_uring support
  coraft-tune suggest [--shards N]   suggest a [shards] layout (default: one shard per usable physical core)
  coraft-tune check CONFIG.toml      validate a node config against this machine (exit 1 listing every problem)
  coraft-tune example                print a commented example config that passes `check` here";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["detect"] => {
            print!("{}", Topology::detect());
            ExitCode::SUCCESS
        }
        ["suggest"] => suggest(None),
        ["suggest", "--shards", count] | ["suggest", "-n", count] => match count.parse::<usize>() {
            Ok(count) if count > 0 => suggest(Some(count)),
            _ => usage(&format!("--shards takes a positive number, not {count:?}")),
        },
        ["check", path] => check(path),
        ["example"] => {
            print!("{}", example_config(&Topology::detect()));
            ExitCode::SUCCESS
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("unknown command"),
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

fn usage(reason: &str) -> ExitCode {
    eprintln!("coraft-tune: {reason}\n{USAGE}");
    ExitCode::from(2)
}
