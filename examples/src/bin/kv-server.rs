//! `kv-server`: one node of the key-value example (an in-memory store in
//! one Raft group), as its own process; flags as `counter-server`'s
//! (`docs/examples.md`):
//!
//! ```text
//! kv-server --id 1 --listen 127.0.0.1:8091 \
//!   --peers 1=127.0.0.1:8091,2=127.0.0.1:8092,3=127.0.0.1:8093 --data /tmp/kv-1
//! ```

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use coraft::api::StateMachine;
use coraft_examples::kv::KvStore;
use coraft_examples::server::{run, ServerArgs};
use coraft_examples::store::{open_database, RedbKv};

#[derive(Parser, Debug)]
#[command(name = "kv-server", about = "One node of the replicated key-value store example")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Where the pairs live: memory (a BTreeMap; snapshot = a copy of every
    /// pair) or redb (an embedded storage engine, the file kv.redb in
    /// --data; snapshot = a stream from a read transaction).
    #[arg(long, value_enum, default_value_t = Store::Memory)]
    store: Store,
}

/// `--store`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    Memory,
    Redb,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.store {
        Store::Memory => run(&args.server, |node| Box::new(KvStore::new(node))),
        Store::Redb => {
            std::fs::create_dir_all(&args.server.data)
                .with_context(|| format!("creating --data {}", args.server.data.display()))?;
            let database = open_database(&args.server.data)?;
            // Opened here, so a store that cannot be read stops the server
            // with a message rather than inside the engine.
            let store =
                RedbKv::open(coraft::raft::NodeId(args.server.id), database).context("opening the redb store")?;
            let database = store.database();
            let store = std::sync::Mutex::new(Some(store));
            run(&args.server, move |node| -> Box<dyn StateMachine> {
                // One group: the store opened above (a second call opens
                // the same file again).
                let opened = store.lock().expect("not poisoned").take();
                Box::new(opened.unwrap_or_else(|| {
                    RedbKv::open(node, database.clone()).expect("the redb store opened a moment ago")
                }))
            })
        }
    }
}
