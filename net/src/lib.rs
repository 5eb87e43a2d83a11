//! `coraft-net`: the wire between coraft nodes and their clients.
//!
//! This crate will hold (issue 4): a versioned rkyv schema for Raft and client
//! messages, frames (header with magic, version, kind, length and CRC32, then
//! an rkyv body of many messages), validated zero-copy decoding, TCP
//! connections with a cluster handshake, bounded outbound queues and
//! reconnect with backoff. Nothing is implemented yet.
#![deny(missing_docs)]
