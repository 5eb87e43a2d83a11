//! The core's view of its log: entries above the last snapshot, with four
//! cursors that only the core moves.
//!
//! ```text
//!  snapshot_index  applied <= committed        persisted <= handed_out <= last
//!  ──────┤ compacted │ entries in memory ─────────────────────────────────┤
//! ```
//! `handed_out` is the last entry given to the runtime to persist;
//! `persisted` the last the runtime reported durable. A conflicting suffix
//! that was already handed out is dropped with a truncation the runtime
//! applies before the next entries.

use std::collections::VecDeque;

use super::ready::CommittedRange;
use super::types::{Entry, LogIndex, SnapshotMeta, Term};

/// The log of one core.
#[derive(Debug)]
pub struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    committed: LogIndex,
    applied: LogIndex,
    persisted: LogIndex,
    handed_out: LogIndex,
    pending_truncation: Option<LogIndex>,
}

impl RaftLog {
    /// A log recovered from storage: a snapshot point and the entries after it.
    pub fn recovered(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> RaftLog {
        let mut expected = snapshot_index.next();
        for entry in &entries {
            assert_eq!(
                entry.index, expected,
                "recovered entries must be contiguous after the snapshot"
            );
            expected = expected.next();
        }
        let last = snapshot_index.plus(entries.len() as u64);
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            committed: snapshot_index,
            applied: snapshot_index,
            persisted: last,
            handed_out: last,
            pending_truncation: None,
        }
    }

    /// Index of the first entry held (one past the snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }
    /// Index of the last entry (the snapshot index when empty).
    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index.plus(self.entries.len() as u64)
    }
    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }
    /// The snapshot point.
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }
    /// Highest index known committed.
    pub fn committed(&self) -> LogIndex {
        self.committed
    }
    /// Highest index handed to the state machine.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }
    /// Highest index known durable on this node.
    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// Term of the entry at `index`, if known (the snapshot point counts;
    /// index 0 has term 0).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index.0 - self.snapshot_index.0 - 1) as usize].term)
    }

    /// The entry at `index`, if held in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        self.entries.get((index.0 - self.snapshot_index.0 - 1) as usize)
    }

    /// True if the log holds an entry at `index` with `term`.
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date
    /// as this one? (Raft §5.4.1)
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `from` on, at most `bytes_max` bytes but at least one.
    #[cfg(test)]
    pub fn entries_from(&self, from: LogIndex, bytes_max: u64) -> Vec<Entry> {
        self.entries_through(from, self.last_index(), bytes_max)
    }

    /// [`entries_from`](Self::entries_from) into `entries` (empty; a vector
    /// of an earlier append, so that it keeps its capacity).
    pub fn entries_from_into(&self, from: LogIndex, bytes_max: u64, entries: &mut Vec<Entry>) {
        debug_assert!(entries.is_empty());
        self.entries_through_into(from, self.last_index(), bytes_max, entries);
    }

    /// Entries from `from` through `last` at most, up to `bytes_max` (at
    /// least one if any), in a vector allocated once at their count: the
    /// leader calls this for every append it sends and every batch it
    /// applies, and a vector grown by pushing reallocated at 4, 8, 16, ...
    #[cfg(test)]
    fn entries_through(&self, from: LogIndex, last: LogIndex, bytes_max: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        self.entries_through_into(from, last, bytes_max, &mut out);
        out
    }

    /// [`entries_through`](Self::entries_through) appended to `out`, which
    /// grows once at most (to the entries' count).
    fn entries_through_into(&self, from: LogIndex, last: LogIndex, bytes_max: u64, out: &mut Vec<Entry>) {
        let Some(held) = self.held_range(from, last) else {
            return;
        };
        let start = held.start;
        let count = self.count_within(held, bytes_max);
        out.reserve_exact(count);
        out.extend(self.entries.range(start..start + count).cloned());
    }

    /// Positions in `entries` of the entries from `from` through `last` (or
    /// the last held); `None` if `from` is not held or is past `last`.
    fn held_range(&self, from: LogIndex, last: LogIndex) -> Option<std::ops::Range<usize>> {
        let last = last.min(self.last_index());
        if from < self.first_index() || from > last {
            return None;
        }
        let base = self.snapshot_index.0 + 1;
        Some((from.0 - base) as usize..(last.0 - base + 1) as usize)
    }

    /// Appends entries that directly follow the last one.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "appended entries must be contiguous"
            );
            self.entries.push_back(entry);
        }
    }

    /// Drops every entry from `from` on. Entries already handed out for
    /// persistence are truncated on disk too, before later entries.
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.committed,
            "truncating committed entry {from} (commit {})",
            self.committed
        );
        if from > self.last_index() {
            return;
        }
        let keep = (from.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        if self.persisted >= from {
            self.persisted = from.prev();
        }
        if self.handed_out >= from {
            self.handed_out = from.prev();
            self.pending_truncation = Some(self.pending_truncation.map_or(from, |t| t.min(from)));
        }
    }

    /// Where a follower's log conflicts with `entries` (first index whose
    /// term differs, or the first index beyond its log), or `None` if every
    /// entry is already present.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries.iter().find(|e| !self.matches(e.index, e.term)).map(|e| e.index)
    }

    /// The last index at or below `index` whose term is at most `term`
    /// (fast backtracking of a rejected append).
    pub fn last_index_with_term_at_most(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut candidate = index.min(self.last_index());
        loop {
            match self.term_at(candidate) {
                Some(t) if t <= term => return (candidate, t),
                Some(_) if candidate > self.snapshot_index => candidate = candidate.prev(),
                _ => return (self.snapshot_index, self.snapshot_term),
            }
        }
    }

    /// Moves the commit index forward (never back).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Records that entries up to (`index`, `term`) are durable. Ignored when
    /// the entry was since replaced (its term differs) or never handed out.
    pub fn persisted_to(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.persisted && index <= self.handed_out && self.matches(index, term) {
            self.persisted = index;
            true
        } else {
            false
        }
    }

    /// True if entries or a truncation wait to be handed out for persistence.
    pub fn has_unhanded_entries(&self) -> bool {
        self.handed_out < self.last_index() || self.pending_truncation.is_some()
    }

    /// Takes the truncation and the entries that the runtime has not yet
    /// been asked to persist, the entries into `entries` (empty; a vector
    /// kept from an earlier Ready, so that it keeps its capacity).
    pub fn take_unpersisted_into(&mut self, entries: &mut Vec<Entry>) -> Option<LogIndex> {
        debug_assert!(entries.is_empty());
        let truncation = self.pending_truncation.take();
        let from = self.handed_out.next().max(self.first_index());
        if let Some(held) = self.held_range(from, self.last_index()) {
            entries.reserve_exact(held.len());
            entries.extend(self.entries.range(held).cloned());
        }
        self.handed_out = self.last_index();
        truncation
    }

    /// Records that the state machine already holds entries up to `index`
    /// (a loaded snapshot): they are not handed out to apply. Never past the
    /// commit index, never back.
    pub fn applied_to(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index.min(self.committed));
    }

    /// Takes committed entries not yet handed to the state machine, up to
    /// `bytes_max` (at least one).
    #[cfg(test)]
    pub fn take_committed(&mut self, bytes_max: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        if let Some(range) = self.take_committed_range(bytes_max) {
            let (front, back) = self.committed_entries(range);
            entries.extend(front.iter().chain(back).cloned());
        }
        entries
    }

    /// How many of the entries at `held` (positions in the ring) from its
    /// start fit in `bytes_max` (at least one, if any).
    fn count_within(&self, held: std::ops::Range<usize>, bytes_max: u64) -> usize {
        let mut count = 0;
        let mut bytes = 0;
        for entry in self.entries.range(held) {
            bytes += entry.size_bytes();
            if count > 0 && bytes > bytes_max {
                break;
            }
            count += 1;
        }
        count
    }

    /// Hands the committed entries not yet handed to the state machine, up
    /// to `bytes_max` (at least one), out by index: the caller reads them
    /// with [`committed_entries`](Self::committed_entries). Through the
    /// commit index only.
    pub fn take_committed_range(&mut self, bytes_max: u64) -> Option<CommittedRange> {
        if self.committed <= self.applied {
            return None;
        }
        let first = self.applied.next();
        let held = self.held_range(first, self.committed)?;
        let count = self.count_within(held, bytes_max);
        let last = first.plus(count as u64 - 1);
        self.applied = last;
        Some(CommittedRange { first, last })
    }

    /// The entries of `range`, in order, as the two slices the log's ring
    /// holds them in (the second is empty unless the range wraps).
    ///
    /// Panics unless the log holds every one: the runtime must apply a
    /// range before anything can drop it (compaction stops at a snapshot
    /// of applied state; a snapshot installed or a truncation comes from a
    /// step, and committed entries are never truncated).
    pub fn committed_entries(&self, range: CommittedRange) -> (&[Entry], &[Entry]) {
        let held = self
            .held_range(range.first, range.last)
            .filter(|held| held.len() as u64 == range.count());
        let Some(held) = held else {
            panic!(
                "committed entries {}..={} lent after the log dropped them (held {}..={})",
                range.first,
                range.last,
                self.first_index(),
                self.last_index()
            );
        };
        let (front, back) = self.entries.as_slices();
        if held.end <= front.len() {
            (&front[held], &[])
        } else if held.start >= front.len() {
            (&back[held.start - front.len()..held.end - front.len()], &[])
        } else {
            (&front[held.start..], &back[..held.end - front.len()])
        }
    }

    /// Forgets entries up to `index` (a snapshot covers them). Keeps
    /// `index` itself as the new snapshot point.
    ///
    /// Returns the entries it forgot, for the caller to drop where it
    /// likes: dropping a log's worth of entries (each payload's last
    /// reference to a receive buffer or an arena block) takes about a
    /// microsecond an entry, and a compaction can forget hundreds of
    /// thousands. Handing them back costs only moves: the smaller side is
    /// moved out (the forgotten entries, or the kept ones into a new
    /// deque), never an entry dropped.
    pub fn compact_to(&mut self, index: LogIndex) -> VecDeque<Entry> {
        if index <= self.snapshot_index {
            return VecDeque::new();
        }
        assert!(
            index <= self.applied,
            "compacting beyond applied ({index} > {})",
            self.applied
        );
        let term = self.term_at(index).expect("compaction point is in the log");
        let drop = (index.0 - self.snapshot_index.0) as usize;
        let forgotten = if drop <= self.entries.len() - drop {
            self.entries.drain(..drop).collect()
        } else {
            let kept = self.entries.split_off(drop);
            std::mem::replace(&mut self.entries, kept)
        };
        self.snapshot_index = index;
        self.snapshot_term = term;
        forgotten
    }

    /// Replaces everything with a snapshot received from the leader.
    pub fn restore(&mut self, meta: &SnapshotMeta) {
        self.entries.clear();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        self.committed = meta.index;
        self.applied = meta.index;
        self.persisted = meta.index;
        self.handed_out = meta.index;
        self.pending_truncation = None;
    }

    /// Iterates over the held entries.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{EntryPayload, ENTRY_OVERHEAD_BYTES};

    /// Ten entries of term 1 with 8-byte payloads, after a snapshot at 0.
    fn ten() -> RaftLog {
        let entries = (1..=10)
            .map(|i| Entry {
                index: LogIndex(i),
                term: Term(1),
                payload: EntryPayload::Normal(bytes::Bytes::from(vec![i as u8; 8])),
            })
            .collect();
        RaftLog::recovered(LogIndex(0), Term(0), entries)
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index.0).collect()
    }

    #[test]
    fn entries_from_stops_at_the_byte_bound_but_takes_at_least_one() {
        let log = ten();
        let each = 8 + ENTRY_OVERHEAD_BYTES;
        assert_eq!(indexes(&log.entries_from(LogIndex(3), 3 * each)), vec![3, 4, 5]);
        assert_eq!(indexes(&log.entries_from(LogIndex(3), 3 * each - 1)), vec![3, 4]);
        assert_eq!(indexes(&log.entries_from(LogIndex(9), 0)), vec![9]);
        assert_eq!(
            indexes(&log.entries_from(LogIndex(4), u64::MAX)),
            (4..=10).collect::<Vec<_>>()
        );
        assert!(log.entries_from(LogIndex(11), u64::MAX).is_empty());
    }

    #[test]
    fn compact_to_hands_back_exactly_the_entries_it_forgets() {
        // Forgetting fewer than it keeps (moved out) and more (the kept
        // ones moved into a new deque): the same log either way.
        for point in [3, 8] {
            let mut log = ten();
            log.commit_to(LogIndex(10));
            log.take_committed(u64::MAX);
            let forgotten = log.compact_to(LogIndex(point));
            let forgotten: Vec<Entry> = forgotten.into_iter().collect();
            assert_eq!(indexes(&forgotten), (1..=point).collect::<Vec<_>>());
            assert_eq!(
                forgotten[0].payload,
                EntryPayload::Normal(bytes::Bytes::from(vec![1; 8]))
            );
            assert_eq!(log.snapshot_index(), LogIndex(point));
            assert_eq!(log.term_at(LogIndex(point)), Some(Term(1)));
            assert_eq!(
                indexes(&log.iter().cloned().collect::<Vec<_>>()),
                (point + 1..=10).collect::<Vec<_>>()
            );
            assert_eq!(log.last_index(), LogIndex(10));
            assert!(
                log.compact_to(LogIndex(point)).is_empty(),
                "nothing left to forget at {point}"
            );
        }
    }

    #[test]
    fn take_committed_hands_out_committed_entries_only_within_the_bound() {
        let mut log = ten();
        let each = 8 + ENTRY_OVERHEAD_BYTES;
        assert!(log.take_committed(u64::MAX).is_empty());
        log.commit_to(LogIndex(6));
        // The bound counts committed entries only; those after the commit
        // index are never handed out.
        assert_eq!(indexes(&log.take_committed(4 * each)), vec![1, 2, 3, 4]);
        assert_eq!(indexes(&log.take_committed(4 * each)), vec![5, 6]);
        assert!(log.take_committed(u64::MAX).is_empty());
        log.commit_to(LogIndex(10));
        assert_eq!(indexes(&log.take_committed(0)), vec![7]);
        assert_eq!(indexes(&log.take_committed(u64::MAX)), vec![8, 9, 10]);
    }

    #[test]
    fn committed_entries_lends_each_range_in_order_where_the_ring_wraps_too() {
        // Ten entries in a ring of sixteen; three compacted from its front,
        // eight appended at its back: the last ones wrap to the front.
        let mut entries = Vec::with_capacity(16);
        entries.extend(ten().iter().cloned());
        let mut log = RaftLog::recovered(LogIndex(0), Term(0), entries);
        log.commit_to(LogIndex(10));
        log.take_committed(u64::MAX);
        log.compact_to(LogIndex(3));
        log.append((11..=18).map(|i| Entry {
            index: LogIndex(i),
            term: Term(2),
            payload: EntryPayload::Normal(bytes::Bytes::from(vec![i as u8; 8])),
        }));
        log.commit_to(LogIndex(18));
        let mut wrapped = 0;
        for first in 4..=18 {
            for last in first..=18 {
                let range = CommittedRange {
                    first: LogIndex(first),
                    last: LogIndex(last),
                };
                let (front, back) = log.committed_entries(range);
                wrapped += usize::from(!front.is_empty() && !back.is_empty());
                let lent: Vec<Entry> = front.iter().chain(back).cloned().collect();
                let looked_up: Vec<Entry> = (first..=last)
                    .map(|i| log.entry(LogIndex(i)).unwrap().clone())
                    .collect();
                assert_eq!(lent, looked_up, "{first}..={last}");
            }
        }
        assert!(wrapped > 0, "some range spans both slices of the ring");
    }

    #[test]
    fn take_committed_range_hands_out_what_take_committed_cloned() {
        let mut log = ten();
        let each = 8 + ENTRY_OVERHEAD_BYTES;
        assert_eq!(log.take_committed_range(u64::MAX), None);
        log.commit_to(LogIndex(6));
        let range = |first, last| {
            Some(CommittedRange {
                first: LogIndex(first),
                last: LogIndex(last),
            })
        };
        assert_eq!(log.take_committed_range(4 * each), range(1, 4));
        assert_eq!(log.applied(), LogIndex(4));
        assert_eq!(log.take_committed_range(0), range(5, 5));
        assert_eq!(log.take_committed_range(u64::MAX), range(6, 6));
        assert_eq!(log.take_committed_range(u64::MAX), None);
    }

    #[test]
    #[should_panic(expected = "lent after the log dropped them")]
    fn committed_entries_compacted_away_are_never_lent() {
        let mut log = ten();
        log.commit_to(LogIndex(10));
        let range = log.take_committed_range(u64::MAX).unwrap();
        log.compact_to(LogIndex(5));
        let _ = log.committed_entries(range);
    }

    #[test]
    fn entries_through_is_the_entries_one_by_one_wherever_the_log_starts() {
        // Entries of varied sizes after a snapshot at 5: every range, held
        // or not, and every bound against a walk that looks each index up.
        let entries: Vec<Entry> = (6..=14)
            .map(|i| Entry {
                index: LogIndex(i),
                term: Term(1 + i / 4),
                payload: EntryPayload::Normal(bytes::Bytes::from(vec![0; (i % 3 * 5) as usize])),
            })
            .collect();
        let log = RaftLog::recovered(LogIndex(5), Term(1), entries);
        for from in 0..=16 {
            for last in 0..=16 {
                for bytes_max in [0, 24, 30, 50, 60, 100, u64::MAX] {
                    let mut expected = Vec::new();
                    let mut bytes = 0;
                    for i in from..=last {
                        let Some(entry) = log.entry(LogIndex(i)) else {
                            break;
                        };
                        bytes += entry.size_bytes();
                        if !expected.is_empty() && bytes > bytes_max {
                            break;
                        }
                        expected.push(entry.clone());
                    }
                    let got = log.entries_through(LogIndex(from), LogIndex(last), bytes_max);
                    assert_eq!(got, expected, "from {from} through {last}, {bytes_max} bytes");
                }
            }
        }
    }

    #[test]
    fn take_unpersisted_hands_out_what_follows_the_last_handed_out_once() {
        let mut log = ten();
        let mut out = Vec::new();
        assert_eq!(log.take_unpersisted_into(&mut out), None);
        assert!(out.is_empty(), "recovered entries are on disk already");
        log.append((11..=13).map(|i| Entry {
            index: LogIndex(i),
            term: Term(2),
            payload: EntryPayload::Noop,
        }));
        log.take_unpersisted_into(&mut out);
        assert_eq!(indexes(&out), vec![11, 12, 13]);
        out.clear();
        log.truncate_from(LogIndex(12));
        log.append([Entry {
            index: LogIndex(12),
            term: Term(3),
            payload: EntryPayload::Noop,
        }]);
        assert_eq!(log.take_unpersisted_into(&mut out), Some(LogIndex(12)));
        assert_eq!(indexes(&out), vec![12]);
        assert_eq!(out[0].term, Term(3));
        out.clear();
        assert_eq!(log.take_unpersisted_into(&mut out), None);
        assert!(out.is_empty());
    }
}
