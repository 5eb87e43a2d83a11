//! The crate's one error type.
//!
//! Every way a connection can fail has a variant with the facts needed to log
//! it; the listener maps decode failures onto its counters (see
//! [`crate::stats::NetStats`]). Matching on variants, never on text.

use std::io;

use crate::frame::FrameKind;
use crate::handshake::Refusal;

/// Errors of `coraft-net`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A frame did not start with the frame magic.
    #[error("bad frame magic {found:#010x}")]
    BadMagic {
        /// The four bytes found, little-endian.
        found: u32,
    },
    /// A frame's header carried a wire version this build does not speak.
    #[error("unsupported wire version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// A frame's kind byte names no known kind.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte found.
        kind: u8,
    },
    /// A frame's reserved flags byte was not zero.
    #[error("reserved frame flags {flags:#04x} are not zero")]
    BadFlags {
        /// The flags byte found.
        flags: u8,
    },
    /// A frame announced a body larger than allowed.
    #[error("frame body of {body_bytes} bytes exceeds the maximum of {max_bytes}")]
    Oversized {
        /// The announced body length.
        body_bytes: usize,
        /// The limit it exceeded.
        max_bytes: usize,
    },
    /// A frame body did not match its CRC32.
    #[error("frame body checksum mismatch: header {expected:#010x}, body {computed:#010x}")]
    BadChecksum {
        /// The CRC32 in the header.
        expected: u32,
        /// The CRC32 of the body received.
        computed: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {buffered} of {needed} bytes received")]
    Truncated {
        /// Bytes of the frame received.
        buffered: usize,
        /// Bytes the frame needed.
        needed: usize,
    },
    /// A body passed its checksum but is not a valid archive of its kind.
    #[error("invalid {kind:?} frame body: {reason}")]
    InvalidArchive {
        /// The frame's kind.
        kind: FrameKind,
        /// What bytecheck found.
        reason: String,
    },
    /// A frame arrived that is not allowed at this point of the protocol.
    #[error("unexpected {kind:?} frame: {context}")]
    UnexpectedFrame {
        /// The frame's kind.
        kind: FrameKind,
        /// Where it arrived.
        context: &'static str,
    },
    /// The handshake body was malformed.
    #[error("malformed handshake: {reason}")]
    BadHandshake {
        /// What was wrong.
        reason: &'static str,
    },
    /// The remote side refused our handshake, or we refused theirs.
    #[error("handshake refused: {refusal}")]
    Refused {
        /// Why.
        refusal: Refusal,
    },
    /// The handshake did not complete in time.
    #[error("handshake timed out after {millis} ms")]
    HandshakeTimeout {
        /// The limit, in milliseconds.
        millis: u64,
    },
    /// An outbound queue has no room for a message (back-pressure).
    #[error("outbound queue full: {queued_bytes} bytes queued, message of {message_bytes} bytes, limit {limit_bytes}")]
    QueueFull {
        /// Bytes already queued.
        queued_bytes: usize,
        /// The message's accounted size.
        message_bytes: usize,
        /// The queue's bound.
        limit_bytes: usize,
    },
    /// A single message is larger than a queue can ever hold.
    #[error("message of {message_bytes} bytes exceeds the queue bound of {limit_bytes}")]
    MessageTooLarge {
        /// The message's accounted size.
        message_bytes: usize,
        /// The queue's bound.
        limit_bytes: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid net config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The connection was closed by this side.
    #[error("connection closed")]
    Closed,
    /// Serialising a message failed (a bug or an allocation failure).
    #[error("encoding a {kind:?} frame failed: {reason}")]
    Encode {
        /// The frame's kind.
        kind: FrameKind,
        /// What rkyv reported.
        reason: String,
    },
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(io::Error) -> NetError {
        move |source| NetError::Io { context, source }
    }
}
