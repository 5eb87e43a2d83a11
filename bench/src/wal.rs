//! `coraft-bench wal`: the WAL against raw O_DIRECT writes + fdatasync.

use anyhow::{bail, Result};

/// Runs the WAL benchmark with the given command-line arguments.
pub fn run(_args: Vec<String>) -> Result<()> {
    bail!("the WAL benchmark is not built yet (issue 3)")
}
