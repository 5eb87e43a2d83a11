//! `coraft-net`: the wire between coraft nodes and their clients.
//!
//! Layers, bottom up:
//! - [`schema`]: the versioned rkyv schema of Raft and client messages;
//!   [`admin`]: the admin protocol's requests and typed answers.
//! - [`frame`]: frame header, [`frame::FrameEncoder`] (many frames, one buffer)
//!   and [`frame::ScatterEncoder`] (one frame as slices: large payloads left in
//!   place, smaller ones copied by the pass that computes the CRC, `checksum.rs`).
//! - [`decoder`]: [`decoder::FrameDecoder`], which turns untrusted bytes into
//!   validated [`decoder::Frame`]s read in place (zero-copy payloads).
//! - [`handshake`]: the fixed-layout hello exchanged first on every connection.
//! - [`listener`] and [`outbound`]: glommio connections of one shard — accept,
//!   handshake and read validated frames; queue (byte-bounded), batch and
//!   write, reconnecting with backoff ([`socket`]). Counters in [`stats`].
//! - [`blocking`]: a small `std::net` client for tools, examples and tests.
//!
//! The byte layouts are in `docs/wire.md`.
//!
//! # A shard's loop, in short
//!
//! ```no_run
//! use coraft_net::schema::{ArchivedRaftBody, Envelope, Heartbeat, RaftBody};
//! use coraft_net::{Listener, LocalIdentity, NetConfig, NetError, OutboundConnection, PeerAddress};
//!
//! # fn main() -> Result<(), NetError> {
//! # let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap();
//! # executor.run(async {
//! let config = NetConfig::new(LocalIdentity { cluster_id: 7, node_id: 1, shard_id: 0 });
//! let listener = Listener::bind("127.0.0.1:7000".parse().unwrap(), config)?;
//! // Accept on one task, handshake and read on one task per connection.
//! glommio::spawn_local(async move {
//!     while let Ok(handshaking) = listener.accept().await {
//!         glommio::spawn_local(async move {
//!             let Ok(mut connection) = handshaking.handshake().await else { return };
//!             while let Ok(Some(frame)) = connection.recv().await {
//!                 for message in frame.raft().into_iter().flat_map(|batch| batch.messages.iter()) {
//!                     if let ArchivedRaftBody::AppendEntries(append) = &message.body {
//!                         for entry in append.entries.iter() {
//!                             let _payload: &[u8] = entry.data.as_slice(); // no copy
//!                         }
//!                     }
//!                 }
//!             }
//!         })
//!         .detach();
//!     }
//! })
//! .detach();
//! // One outbound connection per remote shard; queue, never block.
//! let peer = PeerAddress { node_id: 2, shard_id: 0, address: "127.0.0.1:7001".parse().unwrap() };
//! let outbound = OutboundConnection::spawn(config, peer)?;
//! let beat = Envelope {
//!     group: 1, from: 1, to: 2, term: 3,
//!     body: RaftBody::Heartbeat(Heartbeat { commit_index: 10, read_context: 0 }),
//! };
//! match outbound.try_send(beat) {
//!     Ok(()) | Err(NetError::QueueFull { .. }) => {} // full: the peer is slow; Raft retries
//!     Err(other) => return Err(other),
//! }
//! # Ok(())
//! # })
//! # }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod blocking;
mod checksum;
pub mod config;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod listener;
pub mod outbound;
pub mod ports;
pub mod schema;
pub mod socket;
pub mod stats;

pub use blocking::BlockingConnection;
pub use config::NetConfig;
pub use decoder::{decode_all, Frame, FrameDecoder};
pub use error::NetError;
pub use frame::{FrameEncoder, FrameKind, FRAME_BODY_MAX_BYTES, WIRE_VERSION};
pub use handshake::{
    Hello, HelloReply, LocalIdentity, PeerIdentity, Refusal, Role, CLIENT_PROTOCOL_VERSION,
    CLIENT_RESULT_TOO_LARGE_VERSION_MIN,
};
pub use listener::{Handshaking, InboundConnection, Listener, ResponseWriter, INBOUND_CONNECTIONS_MAX};
pub use outbound::{ConnectionState, OutboundConnection, OutboundStats, PeerAddress};
pub use stats::{Counter, NetStats};

/// The async I/O traits (`AsyncReadExt`, `AsyncWriteExt`, `future::or`) that
/// glommio streams implement, re-exported so that users of this crate (the
/// engine, the bench harness) use the same version without declaring it.
pub use futures_lite;

/// The shared byte buffers of entry and snapshot payloads
/// ([`schema::Entry::data`]), re-exported so that callers build them with the
/// same version.
pub use bytes;
