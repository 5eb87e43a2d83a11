//! `kv-server`: one node of the key-value example (an in-memory store in
//! one Raft group), as its own process; flags as `counter-server`'s
//! (`docs/examples.md`):
//!
//! ```text
//! kv-server --id 1 --listen 127.0.0.1:8091 \
//!   --peers 1=127.0.0.1:8091,2=127.0.0.1:8092,3=127.0.0.1:8093 --data /tmp/kv-1
//! ```

use anyhow::Result;
use clap::Parser;
use coraft_examples::kv::KvStore;
use coraft_examples::server::{run, ServerArgs};

#[derive(Parser, Debug)]
#[command(name = "kv-server", about = "One node of the replicated key-value store example")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    run(&args.server, |node| Box::new(KvStore::new(node)))
}
