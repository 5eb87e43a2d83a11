//! `coraft-net`: the wire between coraft nodes and their clients.
//!
//! Layers, bottom up:
//! - [`schema`]: the versioned rkyv schema of Raft and client messages.
//! - [`frame`]: frame header and [`frame::FrameEncoder`] (many frames, one buffer).
//! - [`decoder`]: [`decoder::FrameDecoder`], which turns untrusted bytes into
//!   validated [`decoder::Frame`]s read in place (zero-copy payloads).
//! - [`handshake`]: the fixed-layout hello exchanged first on every connection.
//! - [`listener`] and [`outbound`]: glommio connections of one shard — accept,
//!   handshake and read validated frames; queue (byte-bounded), batch and
//!   write, reconnecting with backoff ([`socket`]). Counters in [`stats`].
//! - [`blocking`]: a small `std::net` client for tools, examples and tests.
//!
//! The byte layouts are in `docs/wire.md`.
#![deny(missing_docs)]

pub mod blocking;
pub mod config;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod listener;
pub mod outbound;
pub mod schema;
pub mod socket;
pub mod stats;

pub use blocking::BlockingConnection;
pub use config::NetConfig;
pub use decoder::{decode_all, Frame, FrameDecoder};
pub use error::NetError;
pub use frame::{FrameEncoder, FrameKind, FRAME_BODY_MAX_BYTES, WIRE_VERSION};
pub use handshake::{Hello, HelloReply, LocalIdentity, PeerIdentity, Refusal, Role};
pub use listener::{Handshaking, InboundConnection, Listener, ResponseWriter};
pub use outbound::{ConnectionState, OutboundConnection, OutboundStats, PeerAddress};
pub use stats::{Counter, NetStats};

/// The async I/O traits (`AsyncReadExt`, `AsyncWriteExt`, `future::or`) that
/// glommio streams implement, re-exported so that users of this crate (the
/// engine, the bench harness) use the same version without declaring it.
pub use futures_lite;
