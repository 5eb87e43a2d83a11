//! `kv-region-client`: reads, writes and splits the region-sharded
//! key-value example (`docs/examples.md`, "Regions"). Requests are routed
//! by key through a cached region map, refreshed when a region answers
//! "wrong region"; keys and values are UTF-8 text; reads are linearizable.
//!
//! ```text
//! kv-region-client --cluster 127.0.0.1:8191,127.0.0.1:8192,127.0.0.1:8193 put color blue
//! kv-region-client --cluster ... split m
//! kv-region-client --cluster ... cas color --expected blue --new green
//! kv-region-client --cluster ... regions
//! kv-region-client --cluster ... scan --start a --end z
//! ```

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coraft_examples::kv::{KvWrite, WriteOutcome};
use coraft_examples::region::RegionDescriptor;
use coraft_examples::region_client::RegionClient;
use coraft_examples::request::ClientArgs;

#[derive(Parser, Debug)]
#[command(
    name = "kv-region-client",
    about = "Reads, writes and splits the region-sharded key-value store example"
)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Request,
}

#[derive(Subcommand, Debug)]
enum Request {
    /// Sets KEY to VALUE; prints the value it had and the region.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Prints KEY's value (a linearizable read); exits 1 if it is absent.
    Get {
        /// The key.
        key: String,
    },
    /// Removes KEY; prints the value it had.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets KEY to --new (or removes it with --delete) only if its value is
    /// --expected (or it is absent, without --expected).
    Cas {
        /// The key.
        key: String,
        /// The value KEY must have; without it, KEY must be absent.
        #[arg(long)]
        expected: Option<String>,
        /// The value KEY gets.
        #[arg(long, required_unless_present = "delete", conflicts_with = "delete")]
        new: Option<String>,
        /// Remove KEY instead of setting it.
        #[arg(long)]
        delete: bool,
    },
    /// Prints KEY=VALUE for the keys in [--start, --end), in key order,
    /// across regions.
    Scan {
        /// First key (default: the first).
        #[arg(long, default_value = "")]
        start: String,
        /// Key past the range (default: none, to the last key).
        #[arg(long, default_value = "")]
        end: String,
        /// Most pairs to print.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    /// Splits the region holding KEY at KEY: the keys from KEY on move to a
    /// new region (a new Raft group on the same nodes).
    Split {
        /// The first key of the new region.
        key: String,
    },
    /// Prints the region map: each region's id, range and epoch.
    Regions {
        /// Also print how many keys each region's group holds.
        #[arg(long)]
        keys: bool,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut client = RegionClient::new(args.client.client(), Duration::from_secs(args.client.wait_secs));
    let text = |bytes: &Option<Vec<u8>>| match bytes {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => "(absent)".to_string(),
    };
    match &args.command {
        Request::Put { key, value } => {
            let write = KvWrite::Put {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
            };
            let previous = done(client.write(&write).with_context(|| format!("put {key}"))?)?;
            println!("put {key} = {value} (was {})", text(&previous));
        }
        Request::Delete { key } => {
            let write = KvWrite::Delete {
                key: key.clone().into_bytes(),
            };
            let previous = done(client.write(&write).with_context(|| format!("delete {key}"))?)?;
            println!("delete {key} (was {})", text(&previous));
        }
        Request::Cas {
            key,
            expected,
            new,
            delete,
        } => {
            let write = KvWrite::CompareAndSet {
                key: key.clone().into_bytes(),
                expected: expected.clone().map(String::into_bytes),
                new: if *delete {
                    None
                } else {
                    new.clone().map(String::into_bytes)
                },
            };
            match client.write(&write).with_context(|| format!("cas {key}"))? {
                WriteOutcome::Done {
                    previous,
                    swapped: true,
                } => println!("cas {key}: swapped (was {})", text(&previous)),
                WriteOutcome::Done {
                    previous,
                    swapped: false,
                } => {
                    println!("cas {key}: not swapped, the value is {}", text(&previous));
                    std::process::exit(1);
                }
                WriteOutcome::Refused(reason) => bail!("cas {key}: refused: {reason}"),
            }
        }
        Request::Get { key } => {
            let value = client.get(key.as_bytes()).with_context(|| format!("get {key}"))?;
            println!("{key} = {}", text(&value));
            if value.is_none() {
                std::process::exit(1);
            }
        }
        Request::Scan { start, end, limit } => {
            let pairs = client
                .scan(start.as_bytes(), end.as_bytes(), *limit as usize)
                .context("scan")?;
            for (key, value) in pairs {
                println!("{}={}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
            }
        }
        Request::Split { key } => {
            let (parent, child) = client
                .split(key.as_bytes())
                .with_context(|| format!("split at {key}"))?;
            println!("split: {}", describe(&parent));
            println!("new:   {}", describe(&child));
        }
        Request::Regions { keys } => {
            for region in client.regions().context("reading the region map")? {
                if *keys {
                    let held = client.raw_pairs(region.id)?.len();
                    println!("{} keys={held}", describe(&region));
                } else {
                    println!("{}", describe(&region));
                }
            }
        }
    }
    Ok(())
}

fn done(outcome: WriteOutcome) -> Result<Option<Vec<u8>>> {
    match outcome {
        WriteOutcome::Done { previous, .. } => Ok(previous),
        WriteOutcome::Refused(reason) => bail!("refused: {reason}"),
    }
}

fn describe(region: &RegionDescriptor) -> String {
    let end = if region.end.is_empty() {
        "(end)".to_string()
    } else {
        format!("{:?}", String::from_utf8_lossy(&region.end))
    };
    format!(
        "region {} [{:?}, {end}) epoch {}",
        region.id,
        String::from_utf8_lossy(&region.start),
        region.epoch
    )
}
