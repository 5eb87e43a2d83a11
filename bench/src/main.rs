//! `coraft-bench`: the benchmark harness.
//!
//! Subcommands measure one layer each against its physical floor, measured in
//! the same run: `wal` (the write-ahead log against raw O_DIRECT + fdatasync)
//! and `net` (frames over TCP against a raw TCP stream and ping-pong);
//! `idle` measures what many idle groups cost three `coraft-node` processes;
//! `reactor` what one executor wake costs (the floor under every wait).
//! With no subcommand (or `cluster`) it runs an embedded 3-node cluster on
//! loopback.

mod cluster;
mod floor;
mod idle;
mod net;
mod reactor;
mod wal;

use anyhow::{bail, Result};

/// The number that follows option `name` on the command line.
pub(crate) fn number_after(args: &mut impl Iterator<Item = String>, name: &str) -> Result<u64> {
    let raw = args.next().ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
    anyhow::Context::with_context(raw.parse(), || format!("{name}: `{raw}` is not a number"))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("wal") => wal::run(args.collect()),
        Some("net") => net::run(args.collect()),
        Some("idle") => idle::run(args.collect()),
        Some("reactor") => reactor::run(args.collect()),
        Some("floor") => floor::run(args.collect()),
        Some("-h") | Some("--help") => {
            println!("usage: coraft-bench [cluster|wal|net|idle|reactor|floor] [--json] [options]");
            Ok(())
        }
        None => cluster::run(Vec::new()),
        Some("cluster") => cluster::run(args.collect()),
        Some(flag) if flag.starts_with("--") => {
            let mut all = vec![flag.to_string()];
            all.extend(args);
            cluster::run(all)
        }
        Some(other) => bail!("unknown subcommand `{other}`; try --help"),
    }
}
