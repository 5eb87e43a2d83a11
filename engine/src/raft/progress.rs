//! What a leader knows of each follower's log, and how fast it may send.
//!
//! A follower is probed (one append at a time) until an append succeeds, then
//! replicated to optimistically through a window bounded in messages and
//! bytes; a follower that needs compacted entries is sent a snapshot.

use std::collections::VecDeque;

use super::types::LogIndex;

/// Bound on the entry bytes of one append to a follower in Probe (at least
/// one entry still goes, however large). A probe only has to find where the
/// logs match; full batches (`append_bytes_max`) flow once the follower is
/// in Replicate. Every heartbeat answer from a probing follower lets a probe
/// go again, and one shard turn may step thousands of such answers (reads
/// start a round each turn): with full batches, each built up to 1 MiB of cloned
/// entries that a full outbound queue then dropped, and a turn took seconds
/// (`coraft-chaos --seed 1034097185650778836 --nemesis partition-leader`).
/// At least the simulator's largest drawn `append_bytes_max`, so its runs
/// are unchanged by this bound.
pub const PROBE_APPEND_BYTES_MAX: u64 = 4 << 10;

/// How the leader sends to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the logs diverge is unknown: one append in flight at a time.
    Probe,
    /// Streaming appends, pipelined within the in-flight window.
    Replicate,
    /// Waiting for a snapshot at `pending_index` to be installed.
    Snapshot {
        /// The snapshot's index.
        pending_index: LogIndex,
    },
}

/// The in-flight window: (last index, bytes) of each append not yet answered.
#[derive(Clone, Debug, Default)]
pub struct Inflights {
    queue: VecDeque<(LogIndex, u64)>,
    bytes: u64,
}

impl Inflights {
    fn add(&mut self, last_index: LogIndex, bytes: u64) {
        self.queue.push_back((last_index, bytes));
        self.bytes += bytes;
    }
    fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= bytes;
        }
    }
    fn free_first(&mut self) {
        if let Some((_, bytes)) = self.queue.pop_front() {
            self.bytes -= bytes;
        }
    }
    fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
    /// Appends in flight.
    pub fn count(&self) -> usize {
        self.queue.len()
    }
    /// Entry bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The leader's record of one peer.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known replicated (and persisted) on the peer.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// How to send.
    pub state: ProgressState,
    /// In Probe: an append is out and unanswered.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest heartbeat round the peer acknowledged.
    pub acked_round: u64,
    /// Ticks spent in Snapshot state.
    pub snapshot_elapsed_ticks: u64,
    /// The window.
    pub inflights: Inflights,
}

impl Progress {
    /// A peer of a fresh leader: assume it has everything, probe to find out.
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            acked_round: 0,
            snapshot_elapsed_ticks: 0,
            inflights: Inflights::default(),
        }
    }

    /// Bound on the entry bytes of the next append, given the configured
    /// `append_bytes_max`: a probe carries at most [`PROBE_APPEND_BYTES_MAX`].
    pub fn append_bytes_max(&self, configured: u64) -> u64 {
        match self.state {
            ProgressState::Probe => configured.min(PROBE_APPEND_BYTES_MAX),
            _ => configured,
        }
    }

    /// True if nothing more may be sent now.
    pub fn is_paused(&self, messages_max: usize, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.count() >= messages_max || self.inflights.bytes() >= bytes_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records an append of entries up to `last_index` (`bytes` of them).
    pub fn sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index.next();
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Records an acknowledgement up to `index`; false if it says nothing new.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        self.inflights.free_to(index);
        updated
    }

    /// Handles a rejection of the append after `rejected_index`, moving
    /// `next_index` back to just after `new_match_hint` (the leader's last
    /// entry that may match). False if the rejection is stale.
    pub fn reject(&mut self, rejected_index: LogIndex, new_match_hint: LogIndex) -> bool {
        // A follower that rejects the very entry it last acknowledged, and
        // hints at an earlier one, no longer holds what it acknowledged: its
        // disk lost writes it had reported synced (a disk that lied about a
        // flush, a node restored from an old copy). Probing no lower than
        // the old match would ask it forever for an entry it lacks (seen as
        // a node that never caught up after `coraft-chaos --nemesis
        // storage` tore its last synced flush); probe from what it still
        // holds instead. The commit index never moves back; at worst, a
        // late rejection makes the leader send entries again.
        let lost = rejected_index == self.match_index && new_match_hint < self.match_index;
        match self.state {
            ProgressState::Replicate => {
                // Otherwise only a rejection of something after what matched
                // is news.
                if rejected_index < self.match_index || (rejected_index == self.match_index && !lost) {
                    return false;
                }
                self.become_probe();
            }
            ProgressState::Probe => {
                if self.next_index.prev() != rejected_index {
                    return false;
                }
            }
            ProgressState::Snapshot { .. } => return false,
        }
        if lost {
            self.match_index = new_match_hint;
        }
        self.next_index = new_match_hint.next().min(rejected_index).max(self.match_index.next());
        self.probe_sent = false;
        true
    }

    /// Back to probing from just after what matched (or after the snapshot
    /// that was being installed).
    pub fn become_probe(&mut self) {
        self.next_index = match self.state {
            ProgressState::Snapshot { pending_index } => self.match_index.max(pending_index).next(),
            _ => self.match_index.next(),
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// The peer answered a heartbeat, so it is reachable: let a probe go
    /// again, and free one window slot so a window whose appends were lost
    /// cannot stall the peer forever.
    pub fn heard_from(&mut self) {
        self.recent_active = true;
        match self.state {
            ProgressState::Probe => self.probe_sent = false,
            ProgressState::Replicate => self.inflights.free_first(),
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Start streaming.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Wait for a snapshot at `pending_index`.
    pub fn become_snapshot(&mut self, pending_index: LogIndex) {
        self.state = ProgressState::Snapshot { pending_index };
        self.snapshot_elapsed_ticks = 0;
        self.probe_sent = false;
        self.inflights.clear();
    }
}
