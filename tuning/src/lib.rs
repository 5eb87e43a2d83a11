//! `coraft-tuning`: the node configuration, the machine's topology, and where
//! each shard runs.
//!
//! A node starts here: the engine reads a TOML [`NodeConfig`], detects the
//! machine ([`Topology::detect`]), validates one against the other
//! ([`NodeConfig::validate`], which reports every problem at once, each naming
//! its field) and gets a [`NodePlan`]: per shard, the CPU to pin the glommio
//! executor to, its WAL directory and its spin-before-park. The crate knows
//! nothing of Raft roles or glommio; the plan is plain data.
//!
//! ```
//! use coraft_tuning::{NodeConfig, Topology};
//!
//! let config = NodeConfig::from_toml_str(
//!     r#"
//!     cluster_id = 42
//!     node_id = 1
//!     listen = "127.0.0.1:7001"
//!     peers = [
//!         { id = 1, address = "127.0.0.1:7001" },
//!         { id = 2, address = "127.0.0.1:7002" },
//!         { id = 3, address = "127.0.0.1:7003" },
//!     ]
//!     [shards]
//!     count = 2
//!     cores = "auto"
//!     [wal]
//!     dir = "/var/lib/coraft/wal"
//!     "#,
//! )?;
//! // A 4-CPU machine without SMT (tests use `Topology::detect()` or a fake sysfs).
//! let plan = config.validate(&Topology::flat(4))?;
//! for shard in plan.shards() {
//!     // The engine: LocalExecutorBuilder::new(shard.core.map_or(Placement::Unbound, Placement::Fixed)) ...
//!     println!("shard {} on {:?}, WAL in {}", shard.shard, shard.core, shard.wal_dir.display());
//! }
//! assert_eq!(plan.shards()[1].wal_dir, std::path::Path::new("/var/lib/coraft/wal/shard-1"));
//!
//! // Two shards on one core are refused, naming the field.
//! let mut bad = config.clone();
//! bad.shards.cores = Some(coraft_tuning::CoreSelection::List(vec![0, 0]));
//! let review = bad.review(&Topology::flat(4));
//! assert_eq!(review.problem_fields(), ["shards.cores[1]"]);
//! # Ok::<(), coraft_tuning::TuningError>(())
//! ```
#![deny(missing_docs)]

mod config;
mod cpulist;
mod error;
mod example;
pub mod limits;
mod placement;
mod suggest;
mod topology;
mod validate;

pub use config::*;
pub use error::{Problem, ProblemKind, TextLocation, TuningError, Warning, WarningKind};
pub use example::example_config;
pub use placement::{shard_wal_dir, NodePlan, ShardPlacement, SHARD_WAL_DIR_PREFIX};
pub use suggest::Suggestion;
pub use topology::{probe_io_uring, Cpu, Detector, IoUring, MemlockLimit, NumaNode, PhysicalCore, Topology};
pub use validate::Review;

/// Formats CPU ids as a Linux cpulist (`0-3,8`), as messages print them.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    cpulist::format(cpus)
}

/// Parses a Linux cpulist (`0-3,8`) into sorted, distinct CPU ids; the
/// error says what is wrong with it.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    cpulist::parse(text)
}
