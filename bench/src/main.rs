//! `coraft-bench`: the benchmark harness.
//!
//! Subcommands measure one layer each against its physical floor, measured in
//! the same run: `wal` (the write-ahead log against raw O_DIRECT + fdatasync)
//! and `net` (frames over TCP against a raw TCP stream and ping-pong). With no
//! subcommand it will run the embedded 3-node cluster benchmark (issue 5).

mod net;
mod wal;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("wal") => wal::run(args.collect()),
        Some("net") => net::run(args.collect()),
        Some("-h") | Some("--help") => {
            println!("usage: coraft-bench [wal|net] [--json] [options]");
            Ok(())
        }
        None => bail!(
            "the cluster benchmark is not built yet (issue 5); \
             run `coraft-bench wal` or `coraft-bench net`"
        ),
        Some(other) => bail!("unknown subcommand `{other}`; try --help"),
    }
}
