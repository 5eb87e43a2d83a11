//! Where the runtime counts and logs a peer's message that breaks the
//! protocol (`raft::ProtocolViolation`): the connection reader checks the
//! sender a message names against the node its handshake authenticated, the
//! shard checks each message with `RaftCore::step_checked` and drops the
//! snapshots it cannot install. Each such message is dropped, counted in
//! `coraft_protocol_violations_total` and logged with its sender, at most
//! once per [`VIOLATION_LOG_INTERVAL`] per shard so that a flood of bad
//! messages cannot flood the log; the node keeps serving.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::raft::{NodeId, ProtocolViolation};

/// At most one violation is logged per interval and shard; the others are
/// counted, and their number is logged with the next one.
pub const VIOLATION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The violations one shard saw.
#[derive(Debug, Default)]
pub(crate) struct PeerViolations {
    count: Cell<u64>,
    last_logged: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

impl PeerViolations {
    /// Counts a violation that arrived over `connection`'s connection and
    /// logs it unless one was logged within the interval.
    pub fn record(&self, connection: NodeId, violation: &ProtocolViolation) {
        self.count.set(self.count.get() + 1);
        let now = Instant::now();
        if self
            .last_logged
            .get()
            .is_some_and(|last| now.duration_since(last) < VIOLATION_LOG_INTERVAL)
        {
            self.unlogged.set(self.unlogged.get() + 1);
            return;
        }
        self.last_logged.set(Some(now));
        let unlogged = self.unlogged.replace(0);
        let _group = crate::logging::group_span(violation.group).entered();
        log::warn!(
            "dropped a message from peer {connection} that breaks the protocol: {violation} \
             ({unlogged} more dropped since the last report)"
        );
    }

    /// Violations counted so far.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}
