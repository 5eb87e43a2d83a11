//! coraft: a thread-per-core Raft replication engine.
#![deny(missing_docs)]

pub mod raft;
pub mod sim;
