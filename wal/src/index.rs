//! The in-memory index: per group, log index -> (LSN, offset) and term,
//! plus the latest hard state and purge marker.
//!
//! Appends and recovery go through the same [`Groups::apply`], so the state
//! rebuilt on open is by construction the state the appends produced.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::format::{HardState, Record};

/// Where an entry lives on disk, and its term. 24 bytes per entry: the
/// segment follows from the LSN (segments are listed by first LSN) and the
/// record's length from its own prefix, so neither is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLocation {
    /// The record's LSN.
    pub lsn: u64,
    /// The entry's term.
    pub term: u64,
    /// Byte offset of the record in its segment.
    pub offset: u64,
}

/// One group's log as the WAL knows it.
#[derive(Debug, Clone, Default)]
pub struct GroupLog {
    /// Index of `entries[0]`; when empty, the index the next entry must have.
    first_index: u64,
    /// False until the group's first record fixes `first_index`.
    started: bool,
    entries: VecDeque<EntryLocation>,
    hard_state: Option<(HardState, u64)>,
    /// The latest purge marker: (index, term, lsn).
    snapshot: Option<(u64, u64, u64)>,
    /// Payloads copied by recovery ([`Groups::replay_keeping`]) for the
    /// first `copies.len()` entries, in order: empty, or as many as there
    /// are entries. Truncations and purges cut them with the entries;
    /// appends after recovery do not add to them.
    copies: VecDeque<RecoveredPayload>,
}

/// An entry's type and payload, copied out of its segment by recovery while
/// its record was checked: the engine builds its in-memory log from these
/// without reading the log a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredPayload {
    /// The entry's type, as appended.
    pub entry_type: u8,
    /// Its payload (allocated exactly full).
    pub payload: Vec<u8>,
}

/// A group's recovered (or current) state, as the engine needs it on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// The first index still in the log (after purges).
    pub first_index: u64,
    /// The last index in the log; `first_index - 1` when the log is empty.
    pub last_index: u64,
    /// The latest hard state, if one was written.
    pub hard_state: Option<HardState>,
    /// The latest purge marker as (index, term), if any.
    pub snapshot: Option<(u64, u64)>,
}

/// The record a group still needs that keeps a segment from being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its first live entry, at `index`: the lowest index it needs.
    Entry {
        /// The entry's index.
        index: u64,
    },
    /// Its latest hard state (an idle group: `Wal::rewrite_group_metadata`
    /// re-appends it and releases the segment).
    HardState,
    /// Its latest purge marker, at `index` (released the same way).
    PurgeMarker {
        /// The purge point.
        index: u64,
    },
}

/// How many holders [`Groups::segment_holders`] names per segment; the rest
/// are only counted.
pub const SEGMENT_HOLDERS_MAX: usize = 8;

/// A group whose oldest needed record lies in a segment: while it needs
/// that record, neither that segment nor any later one can be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHolder {
    /// The group.
    pub group: u64,
    /// The LSN of its oldest needed record.
    pub lsn: u64,
    /// What that record is (for an entry, the lowest index it needs).
    pub need: Need,
    /// Its latest purge point, if it ever purged.
    pub purged_through: Option<u64>,
    /// Records between its oldest needed one and the newest purge marker of
    /// any group (0 if that marker is older); `None` when no group purged.
    pub lsns_behind_newest_purge: Option<u64>,
}

/// The groups holding one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHolders {
    /// The segment (its first LSN).
    pub segment: u64,
    /// Groups whose oldest needed record is in it, oldest need first; at
    /// most [`SEGMENT_HOLDERS_MAX`]. Empty: it is held only by the holders of
    /// the segments before it (deletion takes the oldest segments first).
    pub holders: Vec<SegmentHolder>,
    /// Further holders, counted and not listed.
    pub more_holders: usize,
}

/// Why a record cannot apply to a group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotContiguous {
    /// The only index that could be appended.
    pub expected: u64,
}

impl GroupLog {
    /// The index the next entry must have, if the group has started.
    pub fn next_index(&self) -> Option<u64> {
        self.started.then(|| self.first_index + self.entries.len() as u64)
    }

    /// The public view of the group's state.
    pub fn state(&self) -> GroupState {
        // A group with no entry, truncation or purge yet has an empty log at 1.
        let first_index = if self.started { self.first_index } else { 1 };
        GroupState {
            first_index,
            last_index: first_index + self.entries.len() as u64 - 1,
            hard_state: self.hard_state.map(|(state, _)| state),
            snapshot: self.snapshot.map(|(index, term, _)| (index, term)),
        }
    }

    /// The location of the entry at `index`, if it is in the log.
    pub fn entry(&self, index: u64) -> Option<&EntryLocation> {
        let offset = index.checked_sub(self.first_index)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The term of `index`: from the log, or from the purge marker.
    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some(location) = self.entry(index) {
            return Some(location.term);
        }
        match self.snapshot {
            Some((snapshot_index, term, _)) if snapshot_index == index => Some(term),
            _ => None,
        }
    }

    /// The smallest LSN this group still needs on disk, if any.
    pub fn oldest_needed_lsn(&self) -> Option<u64> {
        self.oldest_need().map(|(lsn, _)| lsn)
    }

    /// The oldest record this group still needs on disk, and its LSN.
    pub fn oldest_need(&self) -> Option<(u64, Need)> {
        let entry = self.entries.front().map(|location| {
            (
                location.lsn,
                Need::Entry {
                    index: self.first_index,
                },
            )
        });
        let hard_state = self.hard_state.map(|(_, lsn)| (lsn, Need::HardState));
        let snapshot = self.snapshot.map(|(index, _, lsn)| (lsn, Need::PurgeMarker { index }));
        [entry, hard_state, snapshot]
            .into_iter()
            .flatten()
            .min_by_key(|(lsn, _)| *lsn)
    }

    /// Takes the payloads recovery copied, if it copied one for every entry
    /// in the log (in index order, from the first); otherwise drops what it
    /// copied and returns `None`.
    pub fn take_copies(&mut self) -> Option<VecDeque<RecoveredPayload>> {
        let copies = std::mem::take(&mut self.copies);
        (copies.len() == self.entries.len()).then_some(copies)
    }

    /// True when the group holds nothing (no entries, hard state or marker).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.hard_state.is_none() && self.snapshot.is_none()
    }
}

/// All groups of one WAL, ordered by id (iteration order never varies).
///
/// Every append looks its group up, so the lookup is a hash probe (a
/// `BTreeMap` walk over 64 groups cost ~20 ns per entry, twice per append);
/// the logs themselves sit in a vector sorted by id, which is what iteration
/// walks, so no order ever comes from the hash map.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    /// The logs, sorted by group id.
    logs: Vec<(u64, GroupLog)>,
    /// Group id -> position in `logs`; rebuilt from the insertion or
    /// removal point on when a group arrives or is forgotten (both rare).
    positions: HashMap<u64, usize, BuildHasherDefault<GroupIdHasher>>,
    /// Groups forgotten by a [`Record::ForgetGroup`] still in the log: group
    /// -> the LSN of its latest such record. Bounded by the records in the
    /// log: [`Groups::forget_older_than`] drops those whose segment went.
    forgotten: std::collections::BTreeMap<u64, u64>,
}

/// A hasher for group ids: one multiply. Group ids come from the node's own
/// configuration, not from clients, so there is nothing to defend against.
#[derive(Debug, Clone, Copy, Default)]
struct GroupIdHasher(u64);

impl Hasher for GroupIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        // Fibonacci hashing; fold the high half down so that both the low
        // bits (bucket) and the high bits (control byte) vary.
        let mixed = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mixed ^ (mixed >> 29)
    }
}

impl Groups {
    /// The group's log, if the WAL has seen it.
    #[inline]
    pub fn get(&self, group: u64) -> Option<&GroupLog> {
        let &position = self.positions.get(&group)?;
        Some(&self.logs[position].1)
    }

    /// Every group and its log, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &GroupLog)> {
        self.logs.iter().map(|(group, log)| (*group, log))
    }

    /// The group's slot (its position among the logs), creating an empty log
    /// if the WAL has not seen the group. A slot stays valid until the next
    /// group is created.
    #[inline]
    pub fn slot(&mut self, group: u64) -> usize {
        match self.positions.get(&group) {
            Some(&position) => position,
            None => self.insert(group),
        }
    }

    /// The log in `slot`.
    #[inline]
    pub fn log_at(&self, slot: usize) -> &GroupLog {
        &self.logs[slot].1
    }

    #[cold]
    fn insert(&mut self, group: u64) -> usize {
        let position = self
            .logs
            .binary_search_by_key(&group, |(id, _)| *id)
            .expect_err("a new group");
        self.logs.insert(position, (group, GroupLog::default()));
        for (moved, (id, _)) in self.logs.iter().enumerate().skip(position) {
            self.positions.insert(*id, moved);
        }
        position
    }

    /// Forgets `group`'s log (a [`Record::ForgetGroup`] at `lsn`): its
    /// entries, hard state and purge marker are no longer needed, and its
    /// next record starts a new log.
    pub fn forget(&mut self, group: u64, lsn: u64) {
        self.forgotten.insert(group, lsn);
        let Some(position) = self.positions.remove(&group) else {
            return;
        };
        self.logs.remove(position);
        for (moved, (id, _)) in self.logs.iter().enumerate().skip(position) {
            self.positions.insert(*id, moved);
        }
    }

    /// The groups forgotten by a record still in the log, by id, with the
    /// LSN of the latest such record.
    pub fn forgotten(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.forgotten.iter().map(|(&group, &lsn)| (group, lsn))
    }

    /// Drops the forget records below `lsn` from [`Groups::forgotten`]:
    /// their segments were deleted.
    pub fn forget_older_than(&mut self, lsn: u64) {
        self.forgotten.retain(|_, forgot_at| *forgot_at >= lsn);
    }

    /// Checks that `record` may be appended, without changing anything.
    pub fn check(&self, record: &Record<'_>) -> Result<(), NotContiguous> {
        if let Record::Entry { group, index, .. } = *record {
            let next = self.get(group).and_then(GroupLog::next_index);
            if let Some(expected) = next {
                if index != expected {
                    return Err(NotContiguous { expected });
                }
            }
        }
        Ok(())
    }

    /// Replays a record during recovery. When older segments were deleted
    /// (`log_is_suffix`), a group's first records in what remains can be
    /// stale entries whose predecessors were deleted with their segment; an
    /// entry that does not follow then restarts the group's log at its index.
    /// This is sound because deletion keeps every segment holding a live
    /// entry, the latest hard state or the latest purge marker of any group,
    /// so the live entries replay in order after any such restart.
    pub fn replay(
        &mut self,
        record: &Record<'_>,
        lsn: u64,
        offset: u64,
        log_is_suffix: bool,
    ) -> Result<(), NotContiguous> {
        if let (true, Record::Entry { group, index, .. }) = (log_is_suffix, record) {
            if self.check(record).is_err() {
                let slot = self.slot(*group);
                let log = &mut self.logs[slot].1;
                log.entries.clear();
                log.copies.clear();
                log.first_index = *index;
            }
        }
        self.apply(record, lsn, offset)
    }

    /// [`Groups::replay`], also keeping a copy of an entry's payload (see
    /// [`GroupLog::take_copies`]).
    pub fn replay_keeping(
        &mut self,
        record: &Record<'_>,
        lsn: u64,
        offset: u64,
        log_is_suffix: bool,
    ) -> Result<(), NotContiguous> {
        self.replay(record, lsn, offset, log_is_suffix)?;
        if let Record::Entry {
            group,
            entry_type,
            payload,
            ..
        } = *record
        {
            let slot = self.slot(group);
            let log = &mut self.logs[slot].1;
            // Copies follow the entries from the first: a group whose log
            // was not copied from its start gets none.
            if log.copies.len() + 1 == log.entries.len() {
                log.copies.push_back(RecoveredPayload {
                    entry_type,
                    payload: payload.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Takes `group`'s recovered payloads ([`GroupLog::take_copies`]).
    pub fn take_copies(&mut self, group: u64) -> Option<VecDeque<RecoveredPayload>> {
        let &position = self.positions.get(&group)?;
        self.logs[position].1.take_copies()
    }

    /// Drops every payload recovery copied and no one took.
    pub fn drop_copies(&mut self) {
        for (_, log) in &mut self.logs {
            log.copies = VecDeque::new();
        }
    }

    /// Adds an entry to the log in `slot`, whose index the caller has checked
    /// against [`GroupLog::next_index`]: the append path's share of
    /// [`Groups::apply_at`], without checking again.
    #[inline]
    pub fn push_entry_at(&mut self, slot: usize, index: u64, location: EntryLocation) {
        let log = &mut self.logs[slot].1;
        debug_assert!(log.next_index().is_none_or(|expected| expected == index));
        if !log.started {
            log.first_index = index;
            log.started = true;
        }
        log.entries.push_back(location);
    }

    /// Makes room in the log in `slot` for `additional` more entries at
    /// once, so that a run of appends grows it at most once.
    #[inline]
    pub fn reserve_at(&mut self, slot: usize, additional: usize) {
        self.logs[slot].1.entries.reserve(additional);
    }

    /// Applies a record written at `offset` (of the segment holding `lsn`) with `lsn`.
    #[inline]
    pub fn apply(&mut self, record: &Record<'_>, lsn: u64, offset: u64) -> Result<(), NotContiguous> {
        if let Record::ForgetGroup { group } = *record {
            self.forget(group, lsn);
            return Ok(());
        }
        let slot = self.slot(record.group());
        self.apply_at(slot, record, lsn, offset)
    }

    /// [`Groups::apply`] for a record of the group in `slot` (from [`Groups::slot`]).
    #[inline]
    pub fn apply_at(&mut self, slot: usize, record: &Record<'_>, lsn: u64, offset: u64) -> Result<(), NotContiguous> {
        let (group, log) = &mut self.logs[slot];
        debug_assert_eq!(*group, record.group(), "a record applied to another group's slot");
        if let (Record::Entry { index, .. }, Some(expected)) = (record, log.next_index()) {
            if *index != expected {
                return Err(NotContiguous { expected });
            }
        }
        match *record {
            Record::Entry { term, index, .. } => {
                if !log.started {
                    log.first_index = index;
                    log.started = true;
                }
                log.entries.push_back(EntryLocation { lsn, term, offset });
            }
            Record::HardState { state, .. } => log.hard_state = Some((state, lsn)),
            Record::TruncateSuffix { from_index, .. } => {
                if !log.started || from_index <= log.first_index {
                    log.entries.clear();
                    log.copies.clear();
                    log.first_index = from_index;
                    log.started = true;
                } else {
                    let keep = (from_index - log.first_index) as usize;
                    log.entries.truncate(keep);
                    log.copies.truncate(keep);
                }
            }
            Record::Purge { index, term, .. } => {
                log.snapshot = Some((index, term, lsn));
                let last = log.first_index + log.entries.len() as u64;
                if !log.started || index + 1 >= last {
                    log.entries.clear();
                    log.copies.clear();
                    log.first_index = index + 1;
                } else if index >= log.first_index {
                    let drop = (index + 1 - log.first_index) as usize;
                    log.entries.drain(..drop);
                    log.copies.drain(..drop.min(log.copies.len()));
                    log.first_index = index + 1;
                }
                log.started = true;
            }
            // [`Groups::apply`] removes the log instead; here the slot
            // stays valid and empty.
            Record::ForgetGroup { .. } => *log = GroupLog::default(),
        }
        Ok(())
    }

    /// For each of the oldest `segments_max` segments (`segments` lists every
    /// segment's first LSN, oldest first), the groups whose oldest needed
    /// record lies in it: the oldest segment's holders are what holds
    /// deletion back. At most [`SEGMENT_HOLDERS_MAX`] holders are named per
    /// segment, the rest counted; the work is one pass over the groups.
    pub fn segment_holders(&self, segments: &[u64], segments_max: usize) -> Vec<SegmentHolders> {
        let shown = &segments[..segments.len().min(segments_max)];
        let mut report: Vec<SegmentHolders> = shown
            .iter()
            .map(|&segment| SegmentHolders {
                segment,
                holders: Vec::new(),
                more_holders: 0,
            })
            .collect();
        let newest_purge = self
            .logs
            .iter()
            .filter_map(|(_, log)| log.snapshot.map(|(_, _, lsn)| lsn))
            .max();
        for (group, log) in &self.logs {
            let Some((lsn, need)) = log.oldest_need() else {
                continue;
            };
            // The segment holding `lsn`: the last one starting at or before it.
            let position = segments.partition_point(|&first| first <= lsn);
            let Some(entry) = position.checked_sub(1).and_then(|at| report.get_mut(at)) else {
                continue;
            };
            let holder = SegmentHolder {
                group: *group,
                lsn,
                need,
                purged_through: log.snapshot.map(|(index, _, _)| index),
                lsns_behind_newest_purge: newest_purge.map(|newest| newest.saturating_sub(lsn)),
            };
            entry.holders.push(holder);
            entry.holders.sort_by_key(|holder| (holder.lsn, holder.group));
            if entry.holders.len() > SEGMENT_HOLDERS_MAX {
                entry.holders.pop();
                entry.more_holders += 1;
            }
        }
        report
    }

    /// The group holding the oldest needed LSN, and that LSN.
    pub fn oldest_needed(&self) -> Option<(u64, u64)> {
        self.logs
            .iter()
            .filter_map(|&(group, ref log)| log.oldest_needed_lsn().map(|lsn| (lsn, group)))
            .min()
            .map(|(lsn, group)| (group, lsn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(group: u64, index: u64, term: u64) -> Record<'static> {
        Record::Entry {
            group,
            term,
            index,
            entry_type: 0,
            payload: b"x",
        }
    }

    fn apply_all(records: &[Record<'_>]) -> Groups {
        let mut groups = Groups::default();
        for (lsn, record) in records.iter().enumerate() {
            groups.apply(record, lsn as u64 + 1, 0).unwrap();
        }
        groups
    }

    #[test]
    fn truncate_suffix_drops_conflicting_entries_and_allows_rewrite() {
        let groups = apply_all(&[
            entry(1, 5, 1),
            entry(1, 6, 1),
            entry(1, 7, 1),
            Record::TruncateSuffix {
                group: 1,
                from_index: 6,
            },
            entry(1, 6, 2),
        ]);
        let log = groups.get(1).unwrap();
        assert_eq!(log.state().first_index, 5);
        assert_eq!(log.state().last_index, 6);
        assert_eq!(log.term(6), Some(2));
    }

    #[test]
    fn purge_moves_first_index_and_keeps_the_marker_term() {
        let groups = apply_all(&[
            entry(1, 1, 1),
            entry(1, 2, 1),
            entry(1, 3, 2),
            Record::Purge {
                group: 1,
                index: 2,
                term: 1,
            },
        ]);
        let log = groups.get(1).unwrap();
        assert_eq!((log.state().first_index, log.state().last_index), (3, 3));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
    }

    #[test]
    fn purge_past_the_last_index_empties_the_log_and_sets_the_next_index() {
        let groups = apply_all(&[
            entry(1, 1, 1),
            Record::Purge {
                group: 1,
                index: 10,
                term: 3,
            },
        ]);
        let log = groups.get(1).unwrap();
        assert_eq!((log.state().first_index, log.state().last_index), (11, 10));
        assert_eq!(log.next_index(), Some(11));
    }

    #[test]
    fn an_entry_that_skips_an_index_is_refused() {
        let mut groups = apply_all(&[entry(1, 1, 1)]);
        assert_eq!(groups.apply(&entry(1, 3, 1), 9, 0), Err(NotContiguous { expected: 2 }));
    }

    #[test]
    fn the_oldest_needed_lsn_names_the_holding_group() {
        let groups = apply_all(&[
            entry(1, 1, 1),
            entry(2, 1, 1),
            Record::Purge {
                group: 1,
                index: 1,
                term: 1,
            },
        ]);
        assert_eq!(groups.oldest_needed(), Some((2, 2)));
    }

    #[test]
    fn segment_holders_name_each_groups_oldest_need_in_its_segment_oldest_first() {
        // LSNs 1..=4 in segment 1, 5..=8 in segment 5, 9.. in segment 9.
        let groups = apply_all(&[
            entry(1, 1, 1),
            entry(2, 1, 1),
            Record::HardState {
                group: 3,
                state: HardState {
                    term: 1,
                    vote: 0,
                    commit: 0,
                },
            },
            entry(1, 2, 1),
            entry(2, 2, 1),
            Record::Purge {
                group: 1,
                index: 1,
                term: 1,
            },
            entry(1, 3, 1),
            Record::Purge {
                group: 2,
                index: 2,
                term: 1,
            },
            entry(2, 3, 1),
        ]);
        let report = groups.segment_holders(&[1, 5, 9], 8);
        assert_eq!(report.len(), 3);
        // Group 3's hard state (LSN 3) and group 1's entry 2 (LSN 4).
        assert_eq!(report[0].segment, 1);
        let holders: Vec<(u64, u64, Need)> = report[0]
            .holders
            .iter()
            .map(|holder| (holder.group, holder.lsn, holder.need))
            .collect();
        assert_eq!(holders, [(3, 3, Need::HardState), (1, 4, Need::Entry { index: 2 })]);
        assert_eq!(report[0].holders[0].purged_through, None);
        assert_eq!(report[0].holders[1].purged_through, Some(1));
        // The newest purge marker is group 2's, LSN 8.
        assert_eq!(report[0].holders[0].lsns_behind_newest_purge, Some(5));
        // Group 2 needs its purge marker (LSN 8) before its entry 3 (LSN 9).
        assert_eq!(report[1].holders.len(), 1);
        assert_eq!(report[1].holders[0].need, Need::PurgeMarker { index: 2 });
        assert_eq!(report[1].holders[0].lsns_behind_newest_purge, Some(0));
        assert!(report[2].holders.is_empty());
        // Only the oldest segments asked for are reported.
        assert_eq!(groups.segment_holders(&[1, 5, 9], 1).len(), 1);
    }

    #[test]
    fn segment_holders_name_at_most_the_bound_and_count_the_rest() {
        let records: Vec<Record<'static>> = (0..SEGMENT_HOLDERS_MAX as u64 + 5)
            .rev()
            .map(|group| entry(group, 1, 1))
            .collect();
        let groups = apply_all(&records);
        let report = groups.segment_holders(&[1], usize::MAX);
        assert_eq!(report[0].holders.len(), SEGMENT_HOLDERS_MAX);
        assert_eq!(report[0].more_holders, 5);
        // The oldest needs are the ones named: the groups appended first.
        let lsns: Vec<u64> = report[0].holders.iter().map(|holder| holder.lsn).collect();
        assert_eq!(lsns, (1..=SEGMENT_HOLDERS_MAX as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_forgotten_group_holds_nothing_and_starts_a_new_log_after() {
        let mut groups = apply_all(&[
            entry(1, 1, 1),
            entry(2, 1, 1),
            entry(3, 1, 1),
            entry(2, 2, 1),
            Record::ForgetGroup { group: 1 },
        ]);
        assert!(groups.get(1).is_none());
        assert_eq!(groups.forgotten().collect::<Vec<_>>(), [(1, 5)]);
        // Group 1's entry (LSN 1) no longer holds the oldest segment back.
        assert_eq!(groups.oldest_needed(), Some((2, 2)));
        // The groups after it moved down and are still found.
        assert_eq!(groups.get(3).unwrap().state().last_index, 1);
        assert_eq!(groups.iter().map(|(group, _)| group).collect::<Vec<_>>(), [2, 3]);
        groups.apply(&entry(3, 2, 1), 6, 0).unwrap();
        assert_eq!(groups.get(3).unwrap().state().last_index, 2);
        // Any index starts the group's new log.
        groups.apply(&entry(1, 7, 2), 7, 0).unwrap();
        let state = groups.get(1).unwrap().state();
        assert_eq!((state.first_index, state.last_index, state.hard_state), (7, 7, None));
        groups.forget_older_than(6);
        assert_eq!(groups.forgotten().count(), 0);
    }

    #[test]
    fn groups_iterate_by_id_whatever_the_order_they_arrived_in() {
        let arrivals = [40u64, 7, 1000, 3, 41, 0, 999, 12];
        let records: Vec<Record<'static>> = arrivals.iter().map(|&group| entry(group, 1, 1)).collect();
        let mut groups = apply_all(&records);
        let mut sorted = arrivals.to_vec();
        sorted.sort_unstable();
        assert_eq!(groups.iter().map(|(group, _)| group).collect::<Vec<_>>(), sorted);
        // Every group is still found at its new position, and appends to it.
        for (lsn, &group) in arrivals.iter().enumerate() {
            groups.apply(&entry(group, 2, 1), 100 + lsn as u64, 0).unwrap();
            assert_eq!(groups.get(group).unwrap().state().last_index, 2, "group {group}");
        }
        assert!(groups.get(5).is_none());
    }
}
