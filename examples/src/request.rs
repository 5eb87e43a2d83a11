//! What every example client shares: its flags, and writes and reads that
//! wait out an election. A write whose answer was lost is sent again with
//! the same session and sequence, which the cluster applies at most once.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use coraft::client::{Client, ClientConfig, ClientFailure};

use crate::cli::{parse_cluster, NodeList};
use crate::server::GROUP;

/// How long one attempt on one node waits for its answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The flags of an example client.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The servers: HOST:PORT,... (nodes 1, 2, 3... in that order, as their
    /// --id), or ID=HOST:PORT,... as in the servers' --peers.
    #[arg(long, value_name = "NODES", value_parser = parse_cluster)]
    pub cluster: NodeList,
    /// The servers' --cluster-id.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Keep retrying (same session and sequence for a write) this long
    /// while no node answers, e.g. during an election.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub wait_secs: u64,
}

impl ClientArgs {
    /// A client of the cluster, with a new session.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig {
            cluster_id: self.cluster_id,
            nodes: self
                .cluster
                .0
                .iter()
                .map(|&(id, address)| (id, vec![address]))
                .collect(),
            attempt_timeout: ATTEMPT_TIMEOUT,
        })
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs)
    }
}

/// One write, retried with the same session and sequence until an answer
/// comes or `--wait-secs` pass; returns the state machine's result.
pub fn write(client: &mut Client, args: &ClientArgs, payload: &[u8]) -> Result<Vec<u8>> {
    let wait = args.wait();
    let deadline = Instant::now() + wait;
    let first_sequence = client.next_sequence();
    let mut result = client.write(GROUP, payload);
    loop {
        match result {
            Ok(bytes) => return Ok(bytes),
            Err(ClientFailure::GaveUp { last, .. }) if Instant::now() < deadline => {
                // The client does not take a sequence until its session is
                // registered: until then nothing was sent to apply.
                if client.next_sequence() == first_sequence {
                    eprintln!("no answer yet ({last}); trying again");
                    result = client.write(GROUP, payload);
                } else {
                    eprintln!("no answer yet ({last}); sending the write again with the same session and sequence (applied at most once)");
                    result = client.retry_write();
                }
            }
            Err(ClientFailure::GaveUp { last, .. }) => bail!(
                "no answer from the cluster within {} s (last: {last}); the write may or may not have been applied",
                wait.as_secs()
            ),
            Err(failure) => bail!("{failure}"),
        }
    }
}

/// A linearizable read, retried until an answer comes or `--wait-secs` pass.
pub fn read(client: &mut Client, args: &ClientArgs, query: &[u8]) -> Result<Vec<u8>> {
    let wait = args.wait();
    let deadline = Instant::now() + wait;
    loop {
        match client.read(GROUP, query) {
            Ok(bytes) => return Ok(bytes),
            Err(ClientFailure::GaveUp { last, .. }) if Instant::now() < deadline => {
                eprintln!("no answer yet ({last}); trying again");
            }
            Err(ClientFailure::GaveUp { last, .. }) => {
                bail!("no answer from the cluster within {} s (last: {last})", wait.as_secs())
            }
            Err(failure) => bail!("{failure}"),
        }
    }
}

/// A possibly stale read: answered by the first node of `--cluster` that
/// answers, from what it has applied, without contacting the leader (so it
/// works on a follower cut off from the others, and may miss acknowledged
/// writes). Retried until an answer comes or `--wait-secs` pass.
pub fn read_stale(client: &mut Client, args: &ClientArgs, query: &[u8]) -> Result<Vec<u8>> {
    let wait = args.wait();
    let deadline = Instant::now() + wait;
    loop {
        match client.read_stale(GROUP, query) {
            Ok(bytes) => return Ok(bytes),
            Err(ClientFailure::GaveUp { last, .. }) if Instant::now() < deadline => {
                eprintln!("no answer yet ({last}); trying again");
            }
            Err(ClientFailure::GaveUp { last, .. }) => {
                bail!("no answer from any node within {} s (last: {last})", wait.as_secs())
            }
            Err(failure) => bail!("{failure}"),
        }
    }
}

/// The node that answered the last request (for a write, the leader).
pub fn answered_by(client: &Client) -> String {
    client.leader_of(GROUP).map_or("unknown".into(), |n| n.to_string())
}
