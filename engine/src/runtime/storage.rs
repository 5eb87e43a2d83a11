//! The core's persistence contract on the shard's WAL: a Ready's truncation,
//! entries and hard state become WAL records; on start, each group's
//! persisted state is read back into an [`InitialState`].

use coraft_wal::{HardState as WalHardState, Wal};

use crate::api::Error;
use crate::raft::{Configuration, Entry, GroupId, HardState, InitialState, LogIndex, NodeId, Ready, Term};

use super::codec::{payload_from_stored, payload_to_stored};

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
    if state.snapshot.is_some() {
        // Snapshots on live clusters are not wired into the runtime yet; a
        // purged log cannot be rebuilt without one.
        return Err(Error::Storage(format!(
            "group {group}: the WAL holds a purge marker, but snapshot recovery is not supported yet"
        )));
    }
    let mut next = state.first_index;
    while next <= state.last_index {
        let batch = wal
            .entries(group.0, next..state.last_index + 1, RECOVERY_READ_BYTES_MAX)
            .map_err(|e| storage_error("reading the WAL", e))?;
        if batch.is_empty() {
            break;
        }
        for stored in batch {
            let payload = payload_from_stored(stored.entry_type, &stored.payload)
                .map_err(|e| Error::Storage(format!("group {group} entry {}: {e}", stored.index)))?;
            initial.entries.push(Entry {
                index: LogIndex(stored.index),
                term: Term(stored.term),
                payload,
            });
            next = stored.index + 1;
        }
    }
    // Entries after a gap would violate the core's contiguity; the WAL's
    // index guarantees none, but check rather than trust.
    if initial.entries.first().is_some_and(|e| e.index != LogIndex(1)) {
        return Err(Error::Storage(format!("group {group}: log does not start at index 1")));
    }
    Ok(initial)
}

/// Appends a Ready's records to the WAL (buffered; the caller syncs).
/// Returns the last entry written, for `on_persisted`.
pub fn write_ready(wal: &Wal, group: GroupId, ready: &Ready) -> Result<Option<(LogIndex, Term)>, Error> {
    if ready.snapshot.is_some() {
        return Err(Error::Storage(format!(
            "group {group}: installing a snapshot is not supported by the runtime yet"
        )));
    }
    if let Some(from) = ready.truncate_from {
        wal.truncate_suffix(group.0, from.0)
            .map_err(|e| storage_error("truncating", e))?;
    }
    for entry in &ready.entries {
        let (kind, data) = payload_to_stored(&entry.payload);
        wal.append_entry(group.0, entry.index.0, entry.term.0, kind, &data)
            .map_err(|e| storage_error("appending an entry", e))?;
    }
    if let Some(hard) = ready.hard_state {
        let state = WalHardState {
            term: hard.term.0,
            vote: hard.vote.map_or(0, |v| v.0),
            commit: hard.commit_index.0,
        };
        wal.append_hard_state(group.0, state)
            .map_err(|e| storage_error("appending the hard state", e))?;
    }
    Ok(ready.entries.last().map(|e| (e.index, e.term)))
}
