//! `kv-client`: reads and writes the key-value example's store
//! (`docs/examples.md`). Keys and values are taken as UTF-8 text; reads are
//! linearizable unless `--stale` (then answered by the first node listed
//! that answers, from what it has applied: possibly stale); a write is
//! retried with the same session and sequence, so it applies at most once.
//!
//! ```text
//! kv-client --cluster 127.0.0.1:8091,127.0.0.1:8092,127.0.0.1:8093 put color blue
//! kv-client --cluster ... get color
//! kv-client --cluster 2=127.0.0.1:8092 get color --stale
//! kv-client --cluster ... cas color --expected blue --new green
//! kv-client --cluster ... scan --start a --end z
//! kv-client --cluster ... delete color
//! ```

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coraft::client::Client;
use coraft_examples::kv::{decode_get, decode_scan, KvQuery, KvWrite, WriteOutcome, SCAN_PAIRS_MAX};
use coraft_examples::request::{read, read_stale, write, ClientArgs};

#[derive(Parser, Debug)]
#[command(
    name = "kv-client",
    about = "Reads and writes the replicated key-value store example"
)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Request,
}

#[derive(Subcommand, Debug)]
enum Request {
    /// Sets KEY to VALUE; prints the value it had.
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
        /// POSSIBLY STALE: answered by the first node of --cluster that
        /// answers, from what it has applied, without asking the leader
        /// (works on a node cut off from the others; may miss acknowledged
        /// writes).
        #[arg(long)]
        stale: bool,
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
    /// Prints KEY=VALUE for the keys in [--start, --end), in key order.
    Scan {
        /// First key (default: the first).
        #[arg(long, default_value = "")]
        start: String,
        /// Key past the range (default: none, to the last key).
        #[arg(long, default_value = "")]
        end: String,
        /// Most pairs to print.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=SCAN_PAIRS_MAX as i64))]
        limit: u32,
        /// POSSIBLY STALE: as `get --stale`.
        #[arg(long)]
        stale: bool,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut client = args.client.client();
    let text = |bytes: &Option<Vec<u8>>| match bytes {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => "(absent)".to_string(),
    };
    let mut apply = |command: KvWrite| -> Result<(Option<Vec<u8>>, bool)> {
        let bytes = command.encode();
        // What every replica would refuse (a key or value over its bound)
        // is refused here, before contacting anyone.
        KvWrite::decode(&bytes).map_err(|reason| anyhow::anyhow!("{reason} (not sent)"))?;
        let result = write(&mut client, &args.client, &bytes)?;
        match WriteOutcome::decode(&result).map_err(|e| anyhow::anyhow!("{e}"))? {
            WriteOutcome::Done { previous, swapped } => Ok((previous, swapped)),
            WriteOutcome::Refused(reason) => bail!("refused: {reason}"),
        }
    };
    match &args.command {
        Request::Put { key, value } => {
            let (previous, _) = apply(KvWrite::Put {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
            })
            .with_context(|| format!("put {key}"))?;
            println!("put {key} = {value} (was {})", text(&previous));
        }
        Request::Delete { key } => {
            let (previous, _) = apply(KvWrite::Delete {
                key: key.clone().into_bytes(),
            })
            .with_context(|| format!("delete {key}"))?;
            println!("delete {key} (was {})", text(&previous));
        }
        Request::Cas {
            key,
            expected,
            new,
            delete,
        } => {
            let new = if *delete {
                None
            } else {
                new.clone().map(String::into_bytes)
            };
            let (previous, swapped) = apply(KvWrite::CompareAndSet {
                key: key.clone().into_bytes(),
                expected: expected.clone().map(String::into_bytes),
                new,
            })
            .with_context(|| format!("cas {key}"))?;
            if swapped {
                println!("cas {key}: swapped (was {})", text(&previous));
            } else {
                println!("cas {key}: not swapped, the value is {}", text(&previous));
                std::process::exit(1);
            }
        }
        Request::Get { key, stale } => {
            let query = KvQuery::Get {
                key: key.clone().into_bytes(),
            };
            let answer =
                checked_read(&mut client, &args.client, &query, *stale).with_context(|| format!("get {key}"))?;
            let value = decode_get(&answer).map_err(|e| anyhow::anyhow!("get {key}: {e}"))?;
            println!("{key} = {}", text(&value));
            if value.is_none() {
                std::process::exit(1);
            }
        }
        Request::Scan {
            start,
            end,
            limit,
            stale,
        } => {
            let query = KvQuery::Scan {
                start: start.clone().into_bytes(),
                end: end.clone().into_bytes(),
                limit: *limit,
            };
            let answer = checked_read(&mut client, &args.client, &query, *stale).context("scan")?;
            for (key, value) in decode_scan(&answer).map_err(|e| anyhow::anyhow!("scan: {e}"))? {
                println!("{}={}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
            }
        }
    }
    Ok(())
}

/// A read (linearizable, or possibly stale with `stale`), refused before
/// contacting anyone if the replicas would not decode it (a key over
/// `KEY_BYTES_MAX`).
fn checked_read(client: &mut Client, args: &ClientArgs, query: &KvQuery, stale: bool) -> Result<Vec<u8>> {
    let bytes = query.encode();
    KvQuery::decode(&bytes).map_err(|reason| anyhow::anyhow!("{reason} (not sent)"))?;
    if stale {
        read_stale(client, args, &bytes)
    } else {
        read(client, args, &bytes)
    }
}
