//! Placement: what the runtime needs to start each shard, derived from a
//! validated config.
//!
//! Like glommio's `Placement`, this is plain data: the engine turns
//! [`ShardPlacement::core`] into `Placement::Fixed(cpu)` or
//! `Placement::Unbound`, [`ShardPlacement::spin_before_park`] into
//! `LocalExecutorBuilder::spin_before_park`, and opens the shard's WAL in
//! [`ShardPlacement::wal_dir`]. This crate does not depend on glommio.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{NodeConfig, WalSettings};
use crate::error::Warning;

/// Name prefix of a shard's WAL directory under `wal.dir`: `shard-0`, `shard-1`, ...
pub const SHARD_WAL_DIR_PREFIX: &str = "shard-";

/// Where and how one shard runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlacement {
    /// Shard index, `0..shards.count`.
    pub shard: usize,
    /// The CPU to pin to (`Placement::Fixed`), or `None` for `Placement::Unbound`.
    pub core: Option<usize>,
    /// The shard's own WAL directory (created by the engine if missing).
    pub wal_dir: PathBuf,
    /// Spin before parking, for `LocalExecutorBuilder::spin_before_park`;
    /// `None` parks at once.
    pub spin_before_park: Option<Duration>,
}

/// A config that passed [`NodeConfig::validate`] on a machine, with every
/// shard placed. Only validation builds one, so holding a `NodePlan` means
/// the config was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    config: NodeConfig,
    shards: Vec<ShardPlacement>,
    helper_cores: Vec<usize>,
    warnings: Vec<Warning>,
}

impl NodePlan {
    /// The validated config.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// One placement per shard, in shard order.
    pub fn shards(&self) -> &[ShardPlacement] {
        &self.shards
    }

    /// The CPUs of the node's threads that are not shard executors
    /// (`[helper_threads]`, resolved: `"auto"` became a list), sorted. The
    /// engine pins each shard's blocking thread, the metrics thread and
    /// `coraft-node`'s main thread to this set.
    pub fn helper_cores(&self) -> &[usize] {
        &self.helper_cores
    }

    /// What validation warned about; the engine should log these at start.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The parts, by value.
    pub fn into_parts(self) -> (NodeConfig, Vec<ShardPlacement>, Vec<Warning>) {
        (self.config, self.shards, self.warnings)
    }
}

/// Shard `shard`'s WAL directory: `wal.dirs[shard]`, or `wal.dir/shard-N`.
/// `None` when the section names no directory for it.
pub fn shard_wal_dir(wal: &WalSettings, shard: usize) -> Option<PathBuf> {
    match (&wal.dirs, &wal.dir) {
        (Some(dirs), _) => dirs.get(shard).cloned(),
        (None, Some(dir)) => Some(dir.join(format!("{SHARD_WAL_DIR_PREFIX}{shard}"))),
        (None, None) => None,
    }
}

/// Builds the plan of a config validation found sound; `cores[i]` is shard
/// `i`'s CPU, `helper_cores` the helper threads' CPUs.
pub(crate) fn plan(
    config: NodeConfig,
    cores: &[Option<usize>],
    helper_cores: Vec<usize>,
    warnings: Vec<Warning>,
) -> NodePlan {
    let spin_before_park = config.shards.spin_before_park();
    let shards = cores
        .iter()
        .enumerate()
        .map(|(shard, &core)| ShardPlacement {
            shard,
            core,
            wal_dir: shard_wal_dir(&config.wal, shard).expect("validation checked every shard has a WAL dir"),
            spin_before_park,
        })
        .collect();
    NodePlan {
        config,
        shards,
        helper_cores,
        warnings,
    }
}
