//! Applying a group's committed entries on its shard: the parts of a
//! [`Group`] an apply changes, borrowed apart from its core, so that the
//! entries can be lent by the core's log while they apply
//! (`RaftCore::take_ready_lending`) instead of cloned into the Ready.

use std::collections::{BTreeMap, VecDeque};

use crate::api::{Error, StateMachine};
use crate::raft::{Entry, EntryPayload, GroupId, LogIndex, NodeId, RaftCore, Term};

use super::super::apply::{ApplyScratch, Applying};
use super::super::apply_lane::ApplyLane;
use super::super::compaction::SinceSnapshot;
use super::super::crc_hints::CrcHints;
use super::super::membership::decode_addresses;
use super::super::metrics::ShardMetrics;
use super::super::sessions::SessionTable;
use super::{Group, GroupCounters, PendingProposal};

impl Group {
    /// The core, and apart from it every part of the group an apply changes.
    pub(super) fn split_for_apply(&mut self) -> (&RaftCore, Applier<'_>) {
        let applier = Applier {
            hint: self.core.leader(),
            group: self.core.config().group,
            state_machine: self.state_machine.as_mut(),
            sessions: &mut self.sessions,
            proposals: &mut self.proposals,
            lane: &mut self.lane,
            counters: &mut self.counters,
            since_snapshot: &mut self.since_snapshot,
            scratch: &mut self.apply_scratch,
            address_book: &mut self.address_book,
            learned_addresses: &mut self.learned_addresses,
            configuration_applied: &mut self.configuration_applied,
            applied_on_shard: &mut self.applied_on_shard,
        };
        (&self.core, applier)
    }
}

/// Every part of a group an apply changes, borrowed apart from its core:
/// the entries applied may be lent by the core's log while they apply.
pub(super) struct Applier<'a> {
    /// The leader the answers name (the core does not change meanwhile).
    hint: Option<NodeId>,
    group: GroupId,
    state_machine: &'a mut dyn StateMachine,
    sessions: &'a mut SessionTable,
    proposals: &'a mut VecDeque<(LogIndex, PendingProposal)>,
    lane: &'a mut Option<ApplyLane>,
    counters: &'a mut GroupCounters,
    since_snapshot: &'a mut SinceSnapshot,
    scratch: &'a mut ApplyScratch,
    address_book: &'a mut BTreeMap<NodeId, Vec<std::net::SocketAddr>>,
    learned_addresses: &'a mut Vec<BTreeMap<NodeId, Vec<std::net::SocketAddr>>>,
    configuration_applied: &'a mut bool,
    applied_on_shard: &'a mut LogIndex,
}

impl Applier<'_> {
    /// Applies the entries of `parts`, in order (the first part, then the
    /// second), and answers their proposers; with an apply lane, hands
    /// them over. The caller serves the reads.
    pub(super) fn apply(&mut self, parts: [&[Entry]; 2], metrics: &mut ShardMetrics, crc_hints: Option<&CrcHints>) {
        let count = parts.iter().map(|part| part.len()).sum::<usize>() as u64;
        let entries = || parts.iter().flat_map(|part| part.iter());
        self.since_snapshot.entries += count;
        self.since_snapshot.log_bytes += entries().map(Entry::size_bytes).sum::<u64>();
        // Committed now; one clock read serves the whole batch's latencies.
        // Both run in index order: one walk matches them.
        let now = std::time::Instant::now();
        let mut waiting = self.proposals.iter().peekable();
        for entry in entries() {
            while waiting.next_if(|(index, _)| *index < entry.index).is_some() {}
            if let Some((_, pending)) = waiting.next_if(|(index, _)| *index == entry.index) {
                ShardMetrics::record(&mut metrics.commit_us, now.saturating_duration_since(pending.proposed));
            }
        }
        if self.lane.is_some() {
            self.hand_to_lane(parts, count);
            return;
        }
        metrics.entries_applied += count;
        self.counters.entries_applied += count;
        for part in parts {
            if !part.is_empty() {
                self.apply_on_shard(part, metrics, crc_hints);
            }
        }
    }

    /// Applies `entries` to the group's own state machine and answers.
    fn apply_on_shard(&mut self, entries: &[Entry], metrics: &mut ShardMetrics, crc_hints: Option<&CrcHints>) {
        Applying {
            group: self.group,
            state_machine: &mut *self.state_machine,
            sessions: &mut *self.sessions,
            crc_hints,
        }
        .apply_batch(entries, self.scratch);
        for elapsed in self.scratch.apply_durations.drain(..) {
            ShardMetrics::record(&mut metrics.apply_us, elapsed);
        }
        for book in self.scratch.address_books.drain(..) {
            self.address_book.extend(book.iter().map(|(n, a)| (*n, a.clone())));
            self.learned_addresses.push(book);
        }
        *self.configuration_applied |= self.scratch.configuration_applied;
        // The results are answered from here: the latency includes the apply.
        let now = std::time::Instant::now();
        for (position, entry) in entries.iter().enumerate() {
            // Answered straight from the state machine's results buffer.
            let result = self.scratch.result(position);
            answer(self.proposals, self.hint, entry.index, entry.term, result, metrics, now);
        }
        if let Some(last) = entries.last() {
            *self.applied_on_shard = (*self.applied_on_shard).max(last.index);
        }
        self.scratch.clear();
    }

    /// Hands committed entries (`count` of them, in `parts`) to the apply
    /// lane, cloned: its thread owns what it applies. What they mean to
    /// the runtime (address books, configurations) takes effect here and
    /// now, so a snapshot queued after them carries the address book as of
    /// the index the lane will have reached.
    fn hand_to_lane(&mut self, parts: [&[Entry]; 2], count: u64) {
        let Some(lane) = self.lane.as_mut() else {
            return;
        };
        if count == 0 {
            return;
        }
        lane.send_sessions(self.sessions);
        let mut books = Vec::new();
        let mut owned = Vec::with_capacity(count as usize);
        for entry in parts.iter().flat_map(|part| part.iter()) {
            match &entry.payload {
                EntryPayload::Normal(bytes) => {
                    if let Some(Ok(book)) = decode_addresses(bytes) {
                        books.push(book);
                    }
                }
                EntryPayload::Configuration(_) => *self.configuration_applied = true,
                EntryPayload::Noop => {}
            }
            owned.push(entry.clone());
        }
        lane.apply(owned);
        for book in books {
            self.address_book.extend(book.iter().map(|(n, a)| (*n, a.clone())));
            self.learned_addresses.push(book);
        }
    }
}

/// Answers the proposal at `index`: with `result` if it is the entry that
/// was proposed, with `NotLeader` (naming `hint`) if another entry took its
/// place.
pub(super) fn answer(
    proposals: &mut VecDeque<(LogIndex, PendingProposal)>,
    hint: Option<NodeId>,
    index: LogIndex,
    term: Term,
    result: Result<&[u8], Error>,
    metrics: &mut ShardMetrics,
    now: std::time::Instant,
) {
    // Proposals below `index` whose entries never showed up were replaced.
    // At most one proposal is the entry's: it takes `result` itself.
    let mut result = Some(result);
    while let Some(&(first, _)) = proposals.front() {
        if first > index {
            break;
        }
        let pending = proposals.pop_front().expect("non-empty").1;
        if first == index && pending.term == term {
            ShardMetrics::record(
                &mut metrics.proposal_us,
                now.saturating_duration_since(pending.received),
            );
            let result = result.take().expect("one proposal per index");
            pending.reply.send_bytes(result, hint);
        } else {
            pending.reply.send(Err(Error::NotLeader { leader_hint: hint }), hint);
        }
    }
}
