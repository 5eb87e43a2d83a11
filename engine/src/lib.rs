//! coraft: a thread-per-core Raft replication engine.
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod raft;
pub mod runtime;
pub mod sim;
