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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use coraft::client::{Client, ClientConfig, ClientFailure};
use coraft::raft::GroupId;
use coraft_examples::cli::{parse_cluster, NodeList};
use coraft_examples::counter::{decode_increment_result, decode_value, encode_increment};

/// The counter lives in this one Raft group (as in `counter-server`).
const GROUP: GroupId = GroupId(1);

/// How long one attempt on one node waits for its answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(name = "counter-client", about = "Adds to and reads the replicated counter")]
struct Args {
    /// The servers: HOST:PORT,... (nodes 1, 2, 3... in that order, as their
    /// --id), or ID=HOST:PORT,... as in counter-server's --peers.
    #[arg(long, value_name = "NODES", value_parser = parse_cluster)]
    cluster: NodeList,
    /// The servers' --cluster-id.
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// Keep retrying (same session and sequence for an increment) this
    /// long while no node answers, e.g. during an election.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    wait_secs: u64,
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
    let wait = Duration::from_secs(args.wait_secs);
    let mut client = Client::new(ClientConfig {
        cluster_id: args.cluster_id,
        nodes: args
            .cluster
            .0
            .iter()
            .map(|&(id, a): &(_, SocketAddr)| (id, vec![a]))
            .collect(),
        attempt_timeout: ATTEMPT_TIMEOUT,
    });
    match args.command {
        Request::Incr { delta, repeat } => {
            for _ in 0..repeat {
                let value = increment(&mut client, delta, wait)?;
                println!("incr {delta} -> value {value} (leader: node {})", leader(&client));
            }
        }
        Request::Get => {
            let value = get(&mut client, wait)?;
            // Any node may answer: a follower asks the leader for the
            // read index and answers once it has applied that far.
            println!("value {value} (read on node {})", leader(&client));
        }
    }
    Ok(())
}

/// One increment, retried with the same session and sequence until an
/// answer comes or `wait` passes.
fn increment(client: &mut Client, delta: i64, wait: Duration) -> Result<i64> {
    let deadline = Instant::now() + wait;
    let payload = encode_increment(delta);
    let first_sequence = client.next_sequence();
    let mut result = client.write(GROUP, &payload);
    loop {
        match result {
            Ok(bytes) => return decode_increment_result(&bytes).map_err(|reason| anyhow::anyhow!("{reason}")),
            Err(ClientFailure::GaveUp { last, .. }) if Instant::now() < deadline => {
                // The client does not take a sequence until its session is
                // registered: until then nothing was sent to apply.
                if client.next_sequence() == first_sequence {
                    eprintln!("no answer yet ({last}); trying again");
                    result = client.write(GROUP, &payload);
                } else {
                    eprintln!("no answer yet ({last}); sending the increment again with the same session and sequence (applied at most once)");
                    result = client.retry_write();
                }
            }
            Err(ClientFailure::GaveUp { last, .. }) => bail!(
                "no answer from the cluster within {} s (last: {last}); the increment may or may not have been applied",
                wait.as_secs()
            ),
            Err(failure) => bail!("incr {delta}: {failure}"),
        }
    }
}

/// A linearizable read, retried until an answer comes or `wait` passes.
fn get(client: &mut Client, wait: Duration) -> Result<i64> {
    let deadline = Instant::now() + wait;
    loop {
        match client.read(GROUP, &[]) {
            Ok(bytes) => return decode_value(&bytes).map_err(|reason| anyhow::anyhow!("{reason}")),
            Err(ClientFailure::GaveUp { last, .. }) if Instant::now() < deadline => {
                eprintln!("no answer yet ({last}); trying again");
            }
            Err(ClientFailure::GaveUp { last, .. }) => {
                bail!("no answer from the cluster within {} s (last: {last})", wait.as_secs())
            }
            Err(failure) => bail!("get: {failure}"),
        }
    }
}

/// The node that answered the last request (for a write, the leader).
fn leader(client: &Client) -> String {
    client.leader_of(GROUP).map_or("unknown".into(), |n| n.to_string())
}
