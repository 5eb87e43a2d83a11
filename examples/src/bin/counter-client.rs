//! `counter-client`: adds to the replicated counter and reads it
//! (`docs/examples.md`):
//!
//! ```text
//! counter-client --cluster 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 incr 5
//! counter-client --cluster 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 get
//! ```
//!
//! It finds the leader (asking any node, following the node a follower
//! names), and writes through a client session: an increment whose answer
//! was lost is sent again with the same session and sequence, which the
//! cluster applies at most once. `get` is linearizable: it sees every
//! increment acknowledged before it began.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use coraft_examples::counter::{decode_increment_result, decode_value, encode_increment};
use coraft_examples::request::{answered_by, read, write, ClientArgs};

#[derive(Parser, Debug)]
#[command(name = "counter-client", about = "Adds to and reads the replicated counter")]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Request,
}

#[derive(Subcommand, Debug)]
enum Request {
    /// Adds DELTA to the counter and prints the new value.
    #[command(allow_negative_numbers = true)]
    Incr {
        /// The amount to add (may be negative).
        delta: i64,
        /// Add DELTA this many times, one after another, in one session.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        repeat: u64,
    },
    /// Prints the counter's value (a linearizable read).
    Get,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut client = args.client.client();
    match args.command {
        Request::Incr { delta, repeat } => {
            for _ in 0..repeat {
                let result = write(&mut client, &args.client, &encode_increment(delta))
                    .with_context(|| format!("incr {delta}"))?;
                let value =
                    decode_increment_result(&result).map_err(|reason| anyhow::anyhow!("incr {delta}: {reason}"))?;
                println!("incr {delta} -> value {value} (leader: node {})", answered_by(&client));
            }
        }
        Request::Get => {
            let answer = read(&mut client, &args.client, &[]).context("get")?;
            let value = decode_value(&answer).map_err(|reason| anyhow::anyhow!("get: {reason}"))?;
            // Any node may answer: a follower asks the leader for the
            // read index and answers once it has applied that far.
            println!("value {value} (read on node {})", answered_by(&client));
        }
    }
    Ok(())
}
