//! Examples to learn coraft from, each run as real processes in separate
//! terminals (`docs/examples.md`):
//!
//! - [`counter`]: SOFAJRaft's counter — a replicated `i64` that clients add
//!   to and read linearizably — as `counter-server` (one per node) and
//!   `counter-client`.
//! - [`kv`]: the state machine of a key-value store (put, get, delete,
//!   compare-and-set, scan) in memory, in one Raft group, as `kv-server`
//!   and `kv-client`.
//!
//! - [`region`]: the KV split by key range into regions, each its own
//!   Raft group, split at run time, as `kv-region-server` and
//!   `kv-region-client`; [`region_client`] routes by key.
//! - [`store`]: the same KV state machine over an embedded storage engine,
//!   redb (`kv-server --store redb`).
//!
//! [`server`] and [`request`] hold what the servers and clients share.
#![deny(missing_docs)]

pub mod cli;
pub mod counter;
pub mod kv;
pub mod region;
pub mod region_client;
pub mod request;
pub mod server;
pub mod store;
