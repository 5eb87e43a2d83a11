//! `coraft-tuning`: configuration, machine topology and core pinning.
//!
//! This crate will hold a TOML config schema (node, peers, shard cores, WAL
//! directories, fsync policy, batch limits, timeouts), detection of the
//! machine's cores, SMT siblings and NUMA nodes, validation of a config against
//! it and a suggested layout. Nothing is implemented yet.
#![deny(missing_docs)]
