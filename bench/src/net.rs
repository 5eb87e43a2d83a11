//! `coraft-bench net`: frames over TCP against a raw TCP stream and ping-pong.

use anyhow::{bail, Result};

/// Runs the network benchmark with the given command-line arguments.
pub fn run(_args: Vec<String>) -> Result<()> {
    bail!("the network benchmark is not built yet (issue 4)")
}
