//! Settings of a shard's connections, with their named defaults.

use std::time::Duration;

use crate::error::NetError;
use crate::frame::FRAME_BODY_MAX_BYTES;
use crate::handshake::LocalIdentity;

/// Default bound on the bytes an outbound connection may hold queued and in
/// flight; past it senders get back-pressure.
pub const OUTBOUND_QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Default time allowed for a handshake (connect included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default first reconnect delay.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Default longest reconnect delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default time after which a silent or unacknowledging peer is declared dead.
pub const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(6);

/// Settings of a shard's listener and outbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Who this shard is.
    pub identity: LocalIdentity,
    /// Bytes an outbound connection may hold (queued and in flight).
    pub outbound_queue_bytes_max: usize,
    /// Time allowed for connect plus handshake.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Keepalive and unacknowledged-data limit (see [`crate::socket`]).
    pub dead_peer_timeout: Duration,
}

impl NetConfig {
    /// The defaults for `identity`.
    pub fn new(identity: LocalIdentity) -> NetConfig {
        NetConfig {
            identity,
            outbound_queue_bytes_max: OUTBOUND_QUEUE_BYTES_MAX,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            reconnect_backoff_min: RECONNECT_BACKOFF_MIN,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX,
            dead_peer_timeout: DEAD_PEER_TIMEOUT,
        }
    }

    /// Checks the values against each other and the frame limit.
    pub fn validate(&self) -> Result<(), NetError> {
        if self.outbound_queue_bytes_max == 0 || self.outbound_queue_bytes_max > FRAME_BODY_MAX_BYTES / 2 {
            return Err(NetError::InvalidConfig {
                reason: "outbound_queue_bytes_max must be in 1..=FRAME_BODY_MAX_BYTES/2",
            });
        }
        if self.handshake_timeout.is_zero() || self.dead_peer_timeout.is_zero() {
            return Err(NetError::InvalidConfig {
                reason: "timeouts must be positive",
            });
        }
        if self.reconnect_backoff_min.is_zero() || self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(NetError::InvalidConfig {
                reason: "reconnect backoff needs 0 < min <= max",
            });
        }
        Ok(())
    }
}
