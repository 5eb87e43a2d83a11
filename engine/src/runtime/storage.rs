//! The core's persistence contract on the shard's WAL: a Ready's truncation,
//! entries and hard state become WAL records; on start, each group's
//! persisted state is read back into an [`InitialState`].

use bytes::Bytes;
use coraft_net::schema::entry_kind;
use coraft_wal::{HardState as WalHardState, NewEntry, Wal};

use crate::api::Error;
use crate::raft::{
    Configuration, Entry, EntryPayload, GroupId, HardState, InitialState, LogIndex, NodeId, Ready, SnapshotMeta, Term,
};

use super::codec::{payload_as_stored, payload_from_stored};

/// Bound on the bytes read from the WAL in one call while recovering.
pub const RECOVERY_READ_BYTES_MAX: usize = 64 << 20;

fn storage_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{context}: {error}"))
}

/// Rebuilds a group's initial state from the WAL; `configuration` is the
/// group's bootstrap configuration.
pub fn recover_group(wal: &Wal, group: GroupId, configuration: Configuration) -> Result<InitialState, Error> {
    let mut initial = InitialState {
        configuration,
        ..InitialState::default()
    };
    let Some(state) = wal.group_state(group.0) else {
        return Ok(initial);
    };
    if let Some(hard) = state.hard_state {
        initial.hard_state = HardState {
            term: Term(hard.term),
            vote: (hard.vote != 0).then_some(NodeId(hard.vote)),
            commit_index: LogIndex(hard.commit),
        };
    }
    if let Some((index, term)) = state.snapshot {
        // The group's own purge marker: its log starts after it. The
        // configuration here is a placeholder; `load_snapshot` checks that a
        // snapshot covers the purge point and takes the configuration from it.
        initial.snapshot = Some(SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            configuration: initial.configuration.clone(),
        });
    }
    let reading = std::time::Instant::now();
    let mut bytes = 0usize;
    let mut stored_entries = |stored: coraft_wal::Entry, initial: &mut InitialState| -> Result<(), Error> {
        bytes += stored.payload.len();
        let index = stored.index;
        let payload = match stored.payload {
            // Recovery's copy, allocated exactly full: the core's payload
            // takes it without copying again.
            coraft_wal::Payload::Owned(copy) if stored.entry_type == entry_kind::NORMAL => {
                EntryPayload::Normal(Bytes::from(copy))
            }
            other => payload_from_stored(stored.entry_type, &other)
                .map_err(|e| Error::Storage(format!("group {group} entry {index}: {e}")))?,
        };
        initial.entries.push(Entry {
            index: LogIndex(index),
            term: Term(stored.term),
            payload,
        });
        Ok(())
    };
    initial
        .entries
        .reserve_exact(usize::try_from(state.last_index + 1 - state.first_index).unwrap_or(0));
    if let Some(recovered) = wal.take_recovered_entries(group.0) {
        // Copied by the WAL's recovery while it checked each record: the
        // log's bytes are read once.
        for stored in recovered {
            stored_entries(stored, &mut initial)?;
        }
    } else {
        let mut next = state.first_index;
        while next <= state.last_index {
            let batch = wal
                .entries(group.0, next..state.last_index + 1, RECOVERY_READ_BYTES_MAX)
                .map_err(|e| storage_error("reading the WAL", e))?;
            if batch.is_empty() {
                break;
            }
            for stored in batch {
                next = stored.index + 1;
                stored_entries(stored, &mut initial)?;
            }
            // The payloads are copied: their mapped pages need not stay
            // resident (without this a restart peaked at twice the log's size).
            wal.release_mapped_pages();
        }
    }
    // Entries after a gap would violate the core's contiguity; the WAL's
    // index guarantees none, but check rather than trust.
    let expected_first = initial.snapshot.as_ref().map_or(LogIndex(1), |s| s.index.next());
    if initial.entries.first().is_some_and(|e| e.index != expected_first) {
        return Err(Error::Storage(format!(
            "group {group}: log does not start at index {expected_first}, just after its purge point"
        )));
    }
    log::info!(
        "group {group}: read {} entries ({bytes} bytes) from the WAL in {:.2} s",
        initial.entries.len(),
        reading.elapsed().as_secs_f64()
    );
    Ok(initial)
}

/// The hard state a group has written to its WAL, and a newer one held back.
///
/// A hard state that differs from the written one only in its commit index
/// is not written on its own: the commit index need not be durable (Raft
/// Figure 2 lists it as volatile state; a restarted node re-learns it from
/// the leader), and writing it alone would cost every write a second fsync
/// on every node. It rides along with the group's next write of entries,
/// or is written when the shard closes.
#[derive(Default)]
pub struct HardStateWriter {
    written: HardState,
    held_back: Option<HardState>,
}

impl HardStateWriter {
    /// Starts from what the WAL recovered.
    pub fn recovered(written: HardState) -> HardStateWriter {
        HardStateWriter {
            written,
            held_back: None,
        }
    }

    /// The hard state to write with a Ready carrying `hard_state` (and
    /// entries or a truncation when `writes_log`), if any.
    fn next_write(&mut self, hard_state: Option<HardState>, writes_log: bool) -> Option<HardState> {
        let newest = hard_state.or(self.held_back)?;
        let commit_only = newest.term == self.written.term && newest.vote == self.written.vote;
        if commit_only && !writes_log {
            self.held_back = Some(newest);
            return None;
        }
        self.held_back = None;
        self.written = newest;
        Some(newest)
    }

    /// A hard state still held back (to write before closing).
    pub fn take_held_back(&mut self) -> Option<HardState> {
        let held = self.held_back.take()?;
        self.written = held;
        Some(held)
    }
}

/// Appends a hard state record (buffered).
pub fn write_hard_state(wal: &Wal, group: GroupId, hard: HardState) -> Result<(), Error> {
    let state = WalHardState {
        term: hard.term.0,
        vote: hard.vote.map_or(0, |v| v.0),
        commit: hard.commit_index.0,
    };
    wal.append_hard_state(group.0, state)
        .map(|_| ())
        .map_err(|e| storage_error("appending the hard state", e))
}

/// Appends a Ready's records to the WAL (buffered; the caller syncs).
/// Returns the last entry written, for `on_persisted`. The WAL copies each
/// entry's payload from the Ready's entry (borrowed: no reference count
/// taken and dropped per entry).
pub fn write_ready(
    wal: &Wal,
    group: GroupId,
    ready: &Ready,
    hard_states: &mut HardStateWriter,
) -> Result<Option<(LogIndex, Term)>, Error> {
    if let Some(meta) = &ready.snapshot {
        // A snapshot from the leader replaces the whole log (the core
        // installs one only when its log does not hold the snapshot's last
        // entry): entries after it go with a truncation, entries up to it
        // with the purge marker, which also records the snapshot point that
        // recovery starts the log after. The snapshot itself must already be
        // durable in the group's snapshot store (`snapshot_stream.rs`).
        wal.truncate_suffix(group.0, meta.index.0 + 1)
            .map_err(|e| storage_error("truncating before an installed snapshot", e))?;
        wal.purge(group.0, meta.index.0, meta.term.0)
            .map_err(|e| storage_error("purging to an installed snapshot", e))?;
    }
    if let Some(from) = ready.truncate_from {
        wal.truncate_suffix(group.0, from.0)
            .map_err(|e| storage_error("truncating", e))?;
    }
    if let Some(first) = ready.entries.first() {
        // One WAL call for the Ready's entries (the group lookup and checks
        // paid once); the WAL numbers them from the first index on.
        for (entry, index) in ready.entries.iter().zip(first.index.0..) {
            if entry.index.0 != index {
                return Err(Error::Storage(format!(
                    "group {group}: a Ready's entries skip from index {} to {}",
                    index - 1,
                    entry.index
                )));
            }
        }
        let stored = ready.entries.iter().map(|entry| {
            let (entry_type, payload) = payload_as_stored(&entry.payload);
            NewEntry {
                term: entry.term.0,
                entry_type,
                payload,
            }
        });
        wal.append_entries_from(group.0, first.index.0, stored)
            .map_err(|e| storage_error("appending entries", e))?;
    }
    let writes_log = ready.snapshot.is_some() || ready.truncate_from.is_some() || !ready.entries.is_empty();
    if let Some(hard) = hard_states.next_write(ready.hard_state, writes_log) {
        write_hard_state(wal, group, hard)?;
    }
    Ok(ready.entries.last().map(|e| (e.index, e.term)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: (vote != 0).then_some(NodeId(vote)),
            commit_index: LogIndex(commit),
        }
    }

    #[test]
    fn a_commit_only_change_waits_for_the_next_log_write() {
        let mut writer = HardStateWriter::recovered(hard(2, 1, 5));
        assert_eq!(writer.next_write(Some(hard(2, 1, 6)), false), None, "held back");
        assert_eq!(writer.next_write(None, false), None, "still held back");
        assert_eq!(
            writer.next_write(None, true),
            Some(hard(2, 1, 6)),
            "rides with the next entries"
        );
        assert_eq!(writer.next_write(None, true), None, "written once");
    }

    #[test]
    fn a_new_term_or_vote_is_written_at_once() {
        // Raft Figure 2: currentTerm and votedFor are persisted before answering.
        let mut writer = HardStateWriter::recovered(hard(2, 1, 5));
        assert_eq!(writer.next_write(Some(hard(3, 0, 5)), false), Some(hard(3, 0, 5)));
        assert_eq!(writer.next_write(Some(hard(3, 2, 5)), false), Some(hard(3, 2, 5)));
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: crate::raft::EntryPayload::Normal(vec![index as u8; 3].into()),
        }
    }

    #[test]
    fn an_installed_snapshot_replaces_the_group_log_in_the_wal_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let group = GroupId(4);
        let configuration = Configuration::default();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let config = coraft_wal::Config::default();
                let (wal, _) = Wal::open(dir.path(), config.clone()).await.unwrap();
                let mut writer = HardStateWriter::default();
                // A follower's log: entries 1..=5 of term 1, some never
                // committed, and another group's beside them.
                let ready = Ready {
                    entries: (1..=5).map(|i| entry(i, 1)).collect(),
                    hard_state: Some(hard(1, 1, 2)),
                    ..Ready::default()
                };
                write_ready(&wal, group, &ready, &mut writer).unwrap();
                write_ready(&wal, GroupId(5), &ready, &mut HardStateWriter::default()).unwrap();
                // The leader's snapshot at (40, 3), then entries after it.
                let snapshot = SnapshotMeta {
                    index: LogIndex(40),
                    term: Term(3),
                    configuration: configuration.clone(),
                };
                let install = Ready {
                    snapshot: Some(snapshot.clone()),
                    hard_state: Some(hard(3, 0, 40)),
                    ..Ready::default()
                };
                write_ready(&wal, group, &install, &mut writer).unwrap();
                let state = wal.group_state(group.0).unwrap();
                assert_eq!((state.first_index, state.last_index), (41, 40), "the old log is gone");
                let after = Ready {
                    entries: vec![entry(41, 3), entry(42, 3)],
                    ..Ready::default()
                };
                write_ready(&wal, group, &after, &mut writer).unwrap();
                wal.sync().await.unwrap();
                drop(wal);

                let (wal, _) = Wal::open(dir.path(), config).await.unwrap();
                let initial = recover_group(&wal, group, configuration.clone()).unwrap();
                let recovered = initial.snapshot.expect("the snapshot point is recovered");
                assert_eq!((recovered.index, recovered.term), (LogIndex(40), Term(3)));
                let indexes: Vec<u64> = initial.entries.iter().map(|e| e.index.0).collect();
                assert_eq!(indexes, vec![41, 42], "only the entries after the snapshot");
                assert_eq!(initial.hard_state, hard(3, 0, 40));
                let other = recover_group(&wal, GroupId(5), configuration).unwrap();
                assert_eq!(other.entries.len(), 5, "another group's log is untouched");
                wal.close().await.unwrap();
            });
    }

    #[test]
    fn a_held_back_commit_is_handed_over_at_close() {
        let mut writer = HardStateWriter::recovered(hard(1, 1, 1));
        assert_eq!(writer.next_write(Some(hard(1, 1, 9)), false), None);
        assert_eq!(writer.take_held_back(), Some(hard(1, 1, 9)));
        assert_eq!(writer.take_held_back(), None);
    }
}
