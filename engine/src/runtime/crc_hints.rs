//! The CRCs of session commands' data, computed where the bytes are hot
//! and kept for apply. Every replica's apply checks a session command's
//! data against the session table by its CRC (`SessionTable::admit`: a
//! retry of a sequence with other bytes is refused); computed there, it
//! reads 4 KiB writes that went cold since they arrived. So the leader
//! computes it when the command is laid out from the client's frame
//! (`transport.rs`), a follower when an `AppendEntries` payload is copied
//! into its connection's arena (`codec::append_from_archived`), and each
//! keeps it here under the entry's `(group, index, term)`; apply takes it
//! if present and computes it otherwise.
//!
//! Why a hint can never belong to other bytes: Raft's Log Matching
//! property. A leader creates at most one entry at a given index in its
//! term and never changes it, and no other node creates entries in that
//! term, so two entries with the same index and term, on any node, are the
//! same entry, with the same bytes (a removed group's id is retired,
//! `created_groups.rs`, so the group names one log). A hint is noted only under the index
//! and term its bytes were logged (the leader: the index the core gave
//! the proposal in its term; a follower: the index and term the entry
//! carried in the leader's `AppendEntries`). An entry replaced since (a
//! follower's conflicting suffix truncated, a log overtaken by a snapshot)
//! has another term at that index or is never applied, so a hint left
//! from it is never taken for the wrong bytes: it only costs room, and is
//! evicted or dropped (`forget_group`, the bounds).
//!
//! Nothing here is replicated or stored: a hint missing (evicted, another
//! shard's connection, a restart, an apply lane, data shorter than
//! [`CRC_HINT_DATA_BYTES_MIN`]) only costs the CRC at apply.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::raft::{GroupId, LogIndex, Term};

use super::codec::{command_kind, COMMAND_HEADER_BYTES_MAX};
use super::sessions::SessionIdHashing;

/// Bound on the hints one group keeps on a shard: past it the oldest
/// goes. A hint lives from a write's arrival to its apply, about one
/// replication round: a few hundred writes at the benchmark's 256
/// clients. 24 bytes each.
pub const CRC_HINTS_PER_GROUP_MAX: usize = 1 << 10;

/// Bound on the groups a shard keeps hints for at once; a further group's
/// are not noted (its CRCs are computed at apply) until one is forgotten.
/// With [`CRC_HINTS_PER_GROUP_MAX`], at most 6 MiB per shard.
pub const CRC_HINT_GROUPS_MAX: usize = 256;

/// Data shorter than this is not hinted: its CRC at apply costs less
/// than noting and taking a hint (at 16 bytes, hints in a hash map cost
/// 0.1-0.3 µs of CPU per write more than they saved).
pub const CRC_HINT_DATA_BYTES_MIN: usize = 256;

/// The CRC of a session command's state-machine `data` if it is worth a
/// hint (at least [`CRC_HINT_DATA_BYTES_MIN`] bytes), `None` otherwise.
pub fn data_crc(data: &[u8]) -> Option<u32> {
    (data.len() >= CRC_HINT_DATA_BYTES_MIN).then(|| crc32fast::hash(data))
}

/// [`data_crc`] of a stored command's data if it is a session command (the
/// only kind apply checks by CRC), `None` otherwise.
pub fn session_data_crc(command: &[u8]) -> Option<u32> {
    if command.first() != Some(&command_kind::SESSION) {
        return None;
    }
    data_crc(command.get(COMMAND_HEADER_BYTES_MAX..)?)
}

struct Hint {
    index: LogIndex,
    term: Term,
    crc: u32,
}

/// One shard's hints, shared by its connection readers and its loop (one
/// thread): per group, in rising index order (a leader proposes, and a
/// connection delivers a leader's appends, in index order; apply asks in
/// index order), so noting and taking touch only the ends of a ring.
#[derive(Default)]
pub(crate) struct CrcHints {
    groups: RefCell<HashMap<GroupId, VecDeque<Hint>, SessionIdHashing>>,
}

impl CrcHints {
    /// Notes that the session command at `(group, index, term)` has data
    /// whose CRC is `crc`. The caller computed it from the bytes logged at
    /// exactly that index in that term (see the module's comment). Hints
    /// at `index` or above go first (an append that starts again there
    /// replaces them, or carries the same entries again).
    pub fn note(&self, group: GroupId, index: LogIndex, term: Term, crc: u32) {
        let mut groups = self.groups.borrow_mut();
        if groups.len() >= CRC_HINT_GROUPS_MAX && !groups.contains_key(&group) {
            return;
        }
        let hints = groups.entry(group).or_default();
        while hints.back().is_some_and(|h| h.index >= index) {
            hints.pop_back();
        }
        if hints.len() >= CRC_HINTS_PER_GROUP_MAX {
            hints.pop_front();
        }
        hints.push_back(Hint { index, term, crc });
    }

    /// The CRC noted for the entry at `(group, index, term)`, taken out
    /// with every hint below `index` (apply asks in index order). A hint
    /// at that index of another term belongs to an entry replaced since:
    /// dropped, `None`.
    pub fn take(&self, group: GroupId, index: LogIndex, term: Term) -> Option<u32> {
        let mut groups = self.groups.borrow_mut();
        let hints = groups.get_mut(&group)?;
        while hints.front().is_some_and(|h| h.index < index) {
            hints.pop_front();
        }
        if hints.front()?.index != index {
            return None;
        }
        let hint = hints.pop_front()?;
        (hint.term == term).then_some(hint.crc)
    }

    /// Drops a group's hints (removed from the shard, or its log replaced
    /// by an installed snapshot: apply will ask for none of them).
    pub fn forget_group(&self, group: GroupId) {
        self.groups.borrow_mut().remove(&group);
    }

    /// Hints held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.borrow().values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::codec::{encode_command, LoggedCommand};

    #[test]
    fn a_hint_is_taken_once_and_only_for_its_term() {
        let hints = CrcHints::default();
        hints.note(GroupId(1), LogIndex(5), Term(2), 0xabcd);
        assert_eq!(
            hints.take(GroupId(1), LogIndex(5), Term(3)),
            None,
            "another term's entry"
        );
        assert_eq!(
            hints.take(GroupId(1), LogIndex(5), Term(2)),
            None,
            "dropped by the miss"
        );
        hints.note(GroupId(1), LogIndex(5), Term(2), 0xabcd);
        assert_eq!(hints.take(GroupId(2), LogIndex(5), Term(2)), None, "another group");
        assert_eq!(hints.take(GroupId(1), LogIndex(4), Term(2)), None, "a lower index");
        assert_eq!(
            hints.take(GroupId(1), LogIndex(5), Term(2)),
            Some(0xabcd),
            "kept by those"
        );
        assert_eq!(hints.take(GroupId(1), LogIndex(5), Term(2)), None, "taken");
    }

    #[test]
    fn taking_an_index_drops_the_hints_below_it() {
        let hints = CrcHints::default();
        for index in 1..=5 {
            hints.note(GroupId(1), LogIndex(index), Term(1), index as u32);
        }
        assert_eq!(hints.take(GroupId(1), LogIndex(3), Term(1)), Some(3));
        assert_eq!(hints.take(GroupId(1), LogIndex(1), Term(1)), None, "below: gone");
        assert_eq!(hints.take(GroupId(1), LogIndex(5), Term(1)), Some(5));
        assert_eq!(hints.len(), 0);
    }

    #[test]
    fn a_replaced_entry_s_hint_is_replaced_too() {
        // A follower's suffix truncated and rewritten by a newer leader:
        // the new entries from 9 on have a newer term.
        let hints = CrcHints::default();
        for index in 8..=10 {
            hints.note(GroupId(1), LogIndex(index), Term(2), 1);
        }
        hints.note(GroupId(1), LogIndex(9), Term(3), 2);
        assert_eq!(hints.len(), 2, "9 and 10 of term 2 went");
        assert_eq!(hints.take(GroupId(1), LogIndex(8), Term(2)), Some(1));
        assert_eq!(hints.take(GroupId(1), LogIndex(9), Term(3)), Some(2));
        assert_eq!(hints.take(GroupId(1), LogIndex(10), Term(2)), None);
    }

    #[test]
    fn the_oldest_hint_goes_past_the_bounds() {
        let hints = CrcHints::default();
        let last = CRC_HINTS_PER_GROUP_MAX as u64 + 10;
        for index in 1..=last {
            hints.note(GroupId(7), LogIndex(index), Term(1), index as u32);
        }
        assert_eq!(hints.len(), CRC_HINTS_PER_GROUP_MAX);
        assert_eq!(hints.take(GroupId(7), LogIndex(10), Term(1)), None, "evicted");
        assert_eq!(hints.take(GroupId(7), LogIndex(11), Term(1)), Some(11));
        assert_eq!(hints.take(GroupId(7), LogIndex(last), Term(1)), Some(last as u32));
        // Groups: one more than the bound gets no hints until one goes.
        for group in 1..CRC_HINT_GROUPS_MAX as u64 {
            hints.note(GroupId(100 + group), LogIndex(1), Term(1), 0);
        }
        hints.note(GroupId(99), LogIndex(1), Term(1), 9);
        assert_eq!(
            hints.take(GroupId(99), LogIndex(1), Term(1)),
            None,
            "past the groups' bound"
        );
        hints.forget_group(GroupId(7));
        hints.note(GroupId(99), LogIndex(1), Term(1), 9);
        assert_eq!(hints.take(GroupId(99), LogIndex(1), Term(1)), Some(9));
    }

    #[test]
    fn forgetting_a_group_keeps_the_others() {
        let hints = CrcHints::default();
        hints.note(GroupId(1), LogIndex(1), Term(1), 10);
        hints.note(GroupId(2), LogIndex(1), Term(1), 20);
        hints.note(GroupId(1), LogIndex(2), Term(1), 11);
        hints.forget_group(GroupId(1));
        assert_eq!(hints.len(), 1);
        assert_eq!(hints.take(GroupId(1), LogIndex(1), Term(1)), None);
        assert_eq!(hints.take(GroupId(2), LogIndex(1), Term(1)), Some(20));
    }

    #[test]
    fn only_a_session_command_s_data_of_the_least_length_is_hashed() {
        let data = vec![5u8; CRC_HINT_DATA_BYTES_MIN];
        let session = encode_command(&LoggedCommand::Session {
            leader_time_ms: 3,
            session: 4,
            sequence: 5,
            lowest_unanswered: 5,
            data: &data,
        });
        assert_eq!(session_data_crc(&session), Some(crc32fast::hash(&data)));
        let plain = encode_command(&LoggedCommand::Plain {
            leader_time_ms: 3,
            data: &data,
        });
        assert_eq!(session_data_crc(&plain), None);
        assert_eq!(session_data_crc(&session[..session.len() - 1]), None, "short data");
        assert_eq!(session_data_crc(&[]), None);
    }
}
