//! Counters of what connections did, and above all why they were closed.
//!
//! A listener owns one [`NetStats`] shared by all its connections; each
//! refused handshake and each connection closed for bad input bumps exactly
//! one counter, next to the log line that names the reason.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::NetError;
use crate::handshake::Refusal;

/// Counters of one listener. Relaxed atomics: cheap, and readable from tests.
#[derive(Debug, Default)]
pub struct NetStats {
    counters: [AtomicU64; COUNTERS],
}

/// One counter of [`NetStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// TCP connections accepted.
    ConnectionsAccepted,
    /// Handshakes that succeeded.
    HandshakesAccepted,
    /// Handshakes refused: another cluster.
    RefusedForeignCluster,
    /// Handshakes refused: another wire version.
    RefusedIncompatibleVersion,
    /// Handshakes refused: addressed to another node or shard.
    RefusedMisaddressed,
    /// Handshakes that failed: malformed, timed out, or the socket failed.
    HandshakesFailed,
    /// Connections closed as soon as accepted: the listener held its bound
    /// of open connections (`listener::INBOUND_CONNECTIONS_MAX`).
    RefusedOverLimit,
    /// Valid frames received.
    FramesReceived,
    /// Bytes of valid frames received.
    BytesReceived,
    /// Connections closed: bad magic.
    ClosedBadMagic,
    /// Connections closed: bad version, kind or flags in a header.
    ClosedBadHeader,
    /// Connections closed: announced body over the limit.
    ClosedOversized,
    /// Connections closed: CRC mismatch.
    ClosedBadChecksum,
    /// Connections closed: stream ended inside a frame.
    ClosedTruncated,
    /// Connections closed: body not a valid archive.
    ClosedInvalidArchive,
    /// Connections closed: a frame kind not allowed there.
    ClosedUnexpectedFrame,
    /// Connections closed by a socket error (reset, dead peer).
    ClosedIo,
    /// Connections that ended cleanly.
    ClosedCleanly,
}

const COUNTERS: usize = Counter::ClosedCleanly as usize + 1;

impl NetStats {
    /// All counters at zero.
    pub fn new() -> NetStats {
        NetStats::default()
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].load(Ordering::Relaxed)
    }

    /// Counts a refused handshake.
    pub fn record_refusal(&self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::ForeignCluster { .. } => Counter::RefusedForeignCluster,
            Refusal::IncompatibleVersion { .. } => Counter::RefusedIncompatibleVersion,
            Refusal::WrongNode { .. } | Refusal::WrongShard { .. } => Counter::RefusedMisaddressed,
        };
        self.add(counter, 1);
    }

    /// Counts a connection closed because of `error`.
    pub fn record_close(&self, error: &NetError) {
        self.add(close_counter(error), 1);
    }
}

/// The counter a connection closed by `error` bumps.
pub fn close_counter(error: &NetError) -> Counter {
    match error {
        NetError::BadMagic { .. } => Counter::ClosedBadMagic,
        NetError::UnsupportedVersion { .. } | NetError::UnknownKind { .. } | NetError::BadFlags { .. } => {
            Counter::ClosedBadHeader
        }
        NetError::Oversized { .. } => Counter::ClosedOversized,
        NetError::BadChecksum { .. } => Counter::ClosedBadChecksum,
        NetError::Truncated { .. } => Counter::ClosedTruncated,
        NetError::InvalidArchive { .. } => Counter::ClosedInvalidArchive,
        NetError::UnexpectedFrame { .. } | NetError::BadHandshake { .. } => Counter::ClosedUnexpectedFrame,
        NetError::Closed => Counter::ClosedCleanly,
        _ => Counter::ClosedIo,
    }
}
