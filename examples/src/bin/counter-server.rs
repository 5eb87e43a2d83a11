//! `counter-server`: one node of SOFAJRaft's counter, as its own process.
//! Start it three times, once per node (`docs/examples.md`):
//!
//! ```text
//! counter-server --id 1 --listen 127.0.0.1:8081 \
//!   --peers 1=127.0.0.1:8081,2=127.0.0.1:8082,3=127.0.0.1:8083 --data /tmp/counter-1
//! ```
//!
//! One port serves both the other nodes and clients (the handshake says
//! which is which). The node keeps its log and snapshots under `--data`; a
//! server restarted with the same `--data` comes back with its value. Every
//! `--snapshot-interval-ms` it snapshots the counter if it changed. What the
//! state machine sees (increments applied, leader start and stop,
//! configurations, snapshots) goes to stdout; the engine's own log goes to
//! stderr at `warn` (`RUST_LOG` changes it, e.g. `RUST_LOG=info`). SIGINT or
//! SIGTERM stops it.

use anyhow::Result;
use clap::Parser;
use coraft_examples::counter::Counter;
use coraft_examples::server::{run, ServerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "counter-server",
    about = "One node of the replicated counter (SOFAJRaft's counter example on coraft)"
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    run(&args.server, |node| Box::new(Counter::new(node)))
}
