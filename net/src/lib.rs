//! `coraft-net`: the wire between coraft nodes and their clients.
//!
//! Layers, bottom up:
//! - [`schema`]: the versioned rkyv schema of Raft and client messages.
//! - [`frame`]: frame header and [`frame::FrameEncoder`] (many frames, one buffer).
//! - [`decoder`]: [`decoder::FrameDecoder`], which turns untrusted bytes into
//!   validated [`decoder::Frame`]s read in place (zero-copy payloads).
//! - [`handshake`]: the fixed-layout hello exchanged first on every connection.
//!
//! The byte layouts are in `docs/wire.md`.
#![deny(missing_docs)]

pub mod decoder;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod schema;

pub use decoder::{decode_all, Frame, FrameDecoder};
pub use error::NetError;
pub use frame::{FrameEncoder, FrameKind, FRAME_BODY_MAX_BYTES, WIRE_VERSION};
pub use handshake::{Hello, HelloReply, LocalIdentity, PeerIdentity, Refusal, Role};
