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
//! evicted or dropped (`forget_group`, the bound).
//!
//! Nothing here is replicated or stored: a hint missing (evicted, another
//! shard's connection, a restart, an apply lane) only costs the CRC at
//! apply.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::raft::{GroupId, LogIndex, Term};

use super::codec::{command_kind, COMMAND_HEADER_BYTES_MAX};
use super::sessions::SessionIdHashing;

/// Bound on the hints one shard keeps (all its groups together): past
/// it the oldest noted goes. A hint lives from a write's arrival to its
/// apply, about one replication round: a few hundred writes per group at
/// the benchmark's 256 clients. About 48 bytes each with the map's room.
pub const CRC_HINTS_PER_SHARD_MAX: usize = 1 << 13;

/// The CRC of a stored command's state-machine data if it is a session
/// command (the only kind apply checks by CRC), `None` otherwise.
pub fn session_data_crc(command: &[u8]) -> Option<u32> {
    if command.first() == Some(&command_kind::SESSION) && command.len() >= COMMAND_HEADER_BYTES_MAX {
        Some(crc32fast::hash(&command[COMMAND_HEADER_BYTES_MAX..]))
    } else {
        None
    }
}

/// The key of an entry in a group: the group in the high half.
fn key(group: GroupId, index: LogIndex) -> u128 {
    (u128::from(group.0) << 64) | u128::from(index.0)
}

#[derive(Default)]
struct Hints {
    /// `(group, index)` → `(term, crc)`.
    by_entry: HashMap<u128, (Term, u32), SessionIdHashing>,
    /// The keys in the order noted, for eviction; a key taken by apply
    /// stays here until evicted (its removal then finds nothing, or a
    /// later hint for the same entry, which only costs a CRC).
    order: VecDeque<u128>,
}

/// One shard's hints, shared by its connection readers and its loop (one
/// thread), at most [`CRC_HINTS_PER_SHARD_MAX`].
#[derive(Default)]
pub(crate) struct CrcHints {
    hints: RefCell<Hints>,
}

impl CrcHints {
    /// Notes that the session command at `(group, index, term)` has data
    /// whose CRC is `crc`. The caller computed it from the bytes logged at
    /// exactly that index in that term (see the module's comment).
    pub fn note(&self, group: GroupId, index: LogIndex, term: Term, crc: u32) {
        let mut hints = self.hints.borrow_mut();
        let Hints { by_entry, order } = &mut *hints;
        if order.len() >= CRC_HINTS_PER_SHARD_MAX {
            if let Some(oldest) = order.pop_front() {
                by_entry.remove(&oldest);
            }
        }
        let key = key(group, index);
        by_entry.insert(key, (term, crc));
        order.push_back(key);
    }

    /// The CRC noted for the entry at `(group, index, term)`, taken out
    /// (apply asks once per entry). A hint at that index of another term
    /// belongs to an entry replaced since: it is dropped, `None`.
    pub fn take(&self, group: GroupId, index: LogIndex, term: Term) -> Option<u32> {
        let mut hints = self.hints.borrow_mut();
        match hints.by_entry.remove(&key(group, index)) {
            Some((noted, crc)) if noted == term => Some(crc),
            _ => None,
        }
    }

    /// Drops a group's hints (removed from the shard, or its log replaced
    /// by an installed snapshot: apply will ask for none of them).
    pub fn forget_group(&self, group: GroupId) {
        let mut hints = self.hints.borrow_mut();
        let Hints { by_entry, order } = &mut *hints;
        let high = u128::from(group.0);
        by_entry.retain(|key, _| key >> 64 != high);
        order.retain(|key| key >> 64 != high);
    }

    /// Hints held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.hints.borrow().by_entry.len()
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
        assert_eq!(hints.take(GroupId(1), LogIndex(6), Term(2)), None, "another index");
        assert_eq!(hints.take(GroupId(1), LogIndex(5), Term(2)), Some(0xabcd));
        assert_eq!(hints.take(GroupId(1), LogIndex(5), Term(2)), None, "taken");
    }

    #[test]
    fn a_replaced_entry_s_hint_is_replaced_too() {
        // A follower's suffix truncated and rewritten by a newer leader:
        // the new entry at the same index has a newer term.
        let hints = CrcHints::default();
        hints.note(GroupId(1), LogIndex(9), Term(2), 1);
        hints.note(GroupId(1), LogIndex(9), Term(3), 2);
        assert_eq!(hints.take(GroupId(1), LogIndex(9), Term(3)), Some(2));
    }

    #[test]
    fn the_oldest_hint_goes_past_the_bound() {
        let hints = CrcHints::default();
        for index in 1..=CRC_HINTS_PER_SHARD_MAX as u64 + 10 {
            hints.note(GroupId(7), LogIndex(index), Term(1), index as u32);
        }
        assert_eq!(hints.len(), CRC_HINTS_PER_SHARD_MAX);
        for index in 1..=10 {
            assert_eq!(hints.take(GroupId(7), LogIndex(index), Term(1)), None, "evicted");
        }
        let last = CRC_HINTS_PER_SHARD_MAX as u64 + 10;
        assert_eq!(hints.take(GroupId(7), LogIndex(last), Term(1)), Some(last as u32));
        assert_eq!(hints.take(GroupId(7), LogIndex(11), Term(1)), Some(11));
        // Taken hints leave their keys in the eviction order: noting more
        // still holds the map and the order within the bound.
        for index in 1..=2 * CRC_HINTS_PER_SHARD_MAX as u64 {
            hints.note(GroupId(8), LogIndex(index), Term(1), 0);
            assert!(hints.hints.borrow().order.len() <= CRC_HINTS_PER_SHARD_MAX);
        }
        assert_eq!(hints.len(), CRC_HINTS_PER_SHARD_MAX);
    }

    #[test]
    fn forgetting_a_group_keeps_the_others() {
        let hints = CrcHints::default();
        hints.note(GroupId(1), LogIndex(1), Term(1), 10);
        hints.note(GroupId(2), LogIndex(1), Term(1), 20);
        hints.note(GroupId(1), LogIndex(2), Term(1), 11);
        hints.forget_group(GroupId(1));
        assert_eq!(hints.len(), 1);
        assert_eq!(hints.hints.borrow().order.len(), 1);
        assert_eq!(hints.take(GroupId(1), LogIndex(1), Term(1)), None);
        assert_eq!(hints.take(GroupId(2), LogIndex(1), Term(1)), Some(20));
    }

    #[test]
    fn only_a_session_command_s_data_is_hashed() {
        let session = encode_command(&LoggedCommand::Session {
            leader_time_ms: 3,
            session: 4,
            sequence: 5,
            lowest_unanswered: 5,
            data: b"the data",
        });
        assert_eq!(session_data_crc(&session), Some(crc32fast::hash(b"the data")));
        let plain = encode_command(&LoggedCommand::Plain {
            leader_time_ms: 3,
            data: b"the data",
        });
        assert_eq!(session_data_crc(&plain), None);
        assert_eq!(
            session_data_crc(&session[..COMMAND_HEADER_BYTES_MAX - 1]),
            None,
            "short"
        );
        assert_eq!(session_data_crc(&[]), None);
    }
}
