//! The output bundle: everything the runtime must do after feeding inputs.

use super::message::Message;
use super::types::{Entry, HardState, LogIndex, ReadState, SnapshotMeta, SoftState};

/// What the core asks the runtime to do, in this order:
///
/// 1. Persist, as one ordered write: `snapshot` (which replaces the whole
///    log), then the truncation `truncate_from`, then `entries`, then
///    `hard_state`.
/// 2. Send `messages` at once — even before step 1 completes (the leader
///    replicates in parallel with its own fsync).
/// 3. When the write of step 1 and every earlier write are durable, send
///    `persisted_messages` (votes and acknowledgements depend on what was
///    written) and call [`RaftCore::on_persisted`](super::RaftCore::on_persisted)
///    with the last entry written.
/// 4. Apply the entries of `committed` to the state machine, in order
///    (`committed_entries`, or lent by
///    [`RaftCore::committed_entries`](super::RaftCore::committed_entries));
///    serve the reads of `read_states` once applied up to their index; fail
///    the reads of `dropped_reads`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Role, term or leader changed.
    pub soft_state: Option<SoftState>,
    /// New term, vote or commit index to persist.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install and persist; the log is empty
    /// after it.
    pub snapshot: Option<SnapshotMeta>,
    /// Drop persisted entries from this index on, before writing `entries`.
    pub truncate_from: Option<LogIndex>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send once step 1 is durable.
    pub persisted_messages: Vec<Message>,
    /// The committed entries to apply, by index.
    pub committed: Option<CommittedRange>,
    /// The entries of `committed`, cloned from the log by
    /// [`RaftCore::take_ready`](super::RaftCore::take_ready); empty from
    /// [`RaftCore::take_ready_lending`](super::RaftCore::take_ready_lending).
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be confirmed (leadership lost); fail them.
    pub dropped_reads: Vec<u64>,
}

impl Ready {
    /// True if this bundle needs a write to storage.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || self.truncate_from.is_some() || !self.entries.is_empty()
    }
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.must_persist()
            && self.soft_state.is_none()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed.is_none()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}

/// Committed entries a [`Ready`] hands out to apply: `first` through `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedRange {
    /// The first entry to apply.
    pub first: LogIndex,
    /// The last entry to apply (at or after `first`).
    pub last: LogIndex,
}

impl CommittedRange {
    /// How many entries it holds (at least one).
    pub fn count(&self) -> u64 {
        self.last.0 - self.first.0 + 1
    }
}
