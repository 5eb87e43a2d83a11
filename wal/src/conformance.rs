//! A conformance suite for Raft log storage: the behaviour the engine relies
//! on, written once against the [`LogStorage`] trait so that any
//! implementation (this WAL, an in-memory log for the simulator, a future
//! backend) can run it: `conformance::run_all::<MyStorage>(dir).await`.
//!
//! Each check panics with a message naming the rule it found broken.

use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::HardState;
use crate::fs::LocalBoxFuture;
use crate::index::GroupState;
use crate::wal::Wal;
use crate::Config;

/// An entry as the suite sees it: (index, term, entry type, payload).
pub type PlainEntry = (u64, u64, u8, Vec<u8>);

/// What a Raft log storage must offer the engine.
///
/// # Correctness
/// After `sync()` resolves, everything appended before it survives `close`
/// and `open` on the same directory; `group_state` and `entries` reflect
/// every append at once, durable or not.
pub trait LogStorage: Sized {
    /// Opens (creating if needed) the storage in `dir`.
    fn open(dir: &Path) -> LocalBoxFuture<'_, Result<Self>>;
    /// Appends an entry; its index must follow the group's last index.
    fn append_entry(&self, group: u64, index: u64, term: u64, entry_type: u8, payload: &[u8]) -> Result<()>;
    /// Records the group's hard state; the latest wins.
    fn append_hard_state(&self, group: u64, state: HardState) -> Result<()>;
    /// Drops the group's entries from `from_index` on.
    fn truncate_suffix(&self, group: u64, from_index: u64) -> Result<()>;
    /// Drops the group's entries up to `index`, remembering (`index`, `term`).
    fn purge(&self, group: u64, index: u64, term: u64) -> Result<()>;
    /// Makes every append so far durable.
    fn sync(&self) -> LocalBoxFuture<'_, Result<()>>;
    /// Syncs and closes.
    fn close(self) -> LocalBoxFuture<'static, Result<()>>;
    /// The group's state, if the storage holds anything for it.
    fn group_state(&self, group: u64) -> Option<GroupState>;
    /// Entries in `indexes`, at least one, stopping past `bytes_max` of payload.
    fn entries(&self, group: u64, indexes: Range<u64>, bytes_max: usize) -> Result<Vec<PlainEntry>>;
}

impl LogStorage for Wal {
    fn open(dir: &Path) -> LocalBoxFuture<'_, Result<Self>> {
        Box::pin(async move { Ok(Wal::open(dir, Config::default()).await?.0) })
    }

    fn append_entry(&self, group: u64, index: u64, term: u64, entry_type: u8, payload: &[u8]) -> Result<()> {
        Wal::append_entry(self, group, index, term, entry_type, payload).map(drop)
    }

    fn append_hard_state(&self, group: u64, state: HardState) -> Result<()> {
        Wal::append_hard_state(self, group, state).map(drop)
    }

    fn truncate_suffix(&self, group: u64, from_index: u64) -> Result<()> {
        Wal::truncate_suffix(self, group, from_index).map(drop)
    }

    fn purge(&self, group: u64, index: u64, term: u64) -> Result<()> {
        Wal::purge(self, group, index, term).map(drop)
    }

    fn sync(&self) -> LocalBoxFuture<'_, Result<()>> {
        let durable = Wal::sync(self);
        Box::pin(async move { durable.await.map(drop) })
    }

    fn close(self) -> LocalBoxFuture<'static, Result<()>> {
        Box::pin(async move { Wal::close(self).await.map(drop) })
    }

    fn group_state(&self, group: u64) -> Option<GroupState> {
        Wal::group_state(self, group)
    }

    fn entries(&self, group: u64, indexes: Range<u64>, bytes_max: usize) -> Result<Vec<PlainEntry>> {
        let entries = Wal::entries(self, group, indexes, bytes_max)?;
        Ok(entries
            .into_iter()
            .map(|entry| (entry.index, entry.term, entry.entry_type, entry.payload.to_vec()))
            .collect())
    }
}

fn payload(group: u64, index: u64) -> Vec<u8> {
    format!("group {group} entry {index}").into_bytes()
}

async fn reopen<S: LogStorage>(storage: S, dir: &Path) -> S {
    storage.close().await.expect("close");
    S::open(dir).await.expect("reopen")
}

/// Synced entries of many interleaved groups read back identical after reopen.
pub async fn synced_entries_of_interleaved_groups_survive_reopen<S: LogStorage>(dir: &Path) {
    let storage = S::open(dir).await.expect("open");
    for index in 1..=50 {
        for group in 0..10 {
            storage
                .append_entry(group, index, 1 + index / 20, (group % 3) as u8, &payload(group, index))
                .expect("append");
        }
    }
    storage.sync().await.expect("sync");
    let storage = reopen(storage, dir).await;
    for group in 0..10 {
        let state = storage.group_state(group).expect("group survives");
        assert_eq!((state.first_index, state.last_index), (1, 50), "group {group} range");
        let entries = storage.entries(group, 1..51, usize::MAX).expect("read");
        assert_eq!(entries.len(), 50);
        for (index, term, entry_type, bytes) in entries {
            assert_eq!(term, 1 + index / 20, "term of {group}/{index}");
            assert_eq!(entry_type, (group % 3) as u8, "type of {group}/{index}");
            assert_eq!(bytes, payload(group, index), "payload of {group}/{index}");
        }
    }
    storage.close().await.expect("close");
}

/// The latest hard state wins, across reopen.
pub async fn the_latest_hard_state_wins<S: LogStorage>(dir: &Path) {
    let storage = S::open(dir).await.expect("open");
    for term in 1..=5 {
        let state = HardState {
            term,
            vote: term % 2,
            commit: term * 3,
        };
        storage.append_hard_state(7, state).expect("hard state");
    }
    let storage = reopen(storage, dir).await;
    let expected = HardState {
        term: 5,
        vote: 1,
        commit: 15,
    };
    assert_eq!(
        storage.group_state(7).and_then(|state| state.hard_state),
        Some(expected)
    );
    storage.close().await.expect("close");
}

/// A truncated suffix is gone and its indexes can be rewritten with a new term
/// (Raft §5.3).
pub async fn a_truncated_suffix_is_replaced_by_new_entries<S: LogStorage>(dir: &Path) {
    let storage = S::open(dir).await.expect("open");
    for index in 1..=10 {
        storage.append_entry(1, index, 1, 0, b"old").expect("append");
    }
    storage.truncate_suffix(1, 6).expect("truncate");
    assert_eq!(storage.group_state(1).expect("group").last_index, 5);
    assert!(matches!(
        storage.append_entry(1, 8, 2, 0, b"gap"),
        Err(Error::NonContiguousIndex { expected: 6, .. })
    ));
    for index in 6..=7 {
        storage.append_entry(1, index, 2, 0, b"new").expect("append");
    }
    let storage = reopen(storage, dir).await;
    let entries = storage.entries(1, 1..8, usize::MAX).expect("read");
    let terms: Vec<u64> = entries.iter().map(|entry| entry.1).collect();
    assert_eq!(terms, [1, 1, 1, 1, 1, 2, 2]);
    assert_eq!(entries[6].3, b"new");
    storage.close().await.expect("close");
}

/// A purge drops the prefix, keeps the snapshot's term, and reads below it
/// report `Compacted`.
pub async fn a_purged_prefix_is_compacted_and_keeps_its_term<S: LogStorage>(dir: &Path) {
    let storage = S::open(dir).await.expect("open");
    for index in 1..=10 {
        storage.append_entry(3, index, index, 0, b"x").expect("append");
    }
    storage.purge(3, 4, 4).expect("purge");
    let storage = reopen(storage, dir).await;
    let state = storage.group_state(3).expect("group");
    assert_eq!(
        (state.first_index, state.last_index, state.snapshot),
        (5, 10, Some((4, 4)))
    );
    assert!(matches!(
        storage.entries(3, 4..6, usize::MAX),
        Err(Error::Compacted { first_index: 5, .. })
    ));
    assert!(matches!(
        storage.entries(3, 5..12, usize::MAX),
        Err(Error::Unavailable { last_index: 10, .. })
    ));
    storage.purge(3, 20, 9).expect("purge past the end");
    let state = storage.group_state(3).expect("group");
    assert_eq!((state.first_index, state.last_index), (21, 20));
    storage
        .append_entry(3, 21, 9, 0, b"after snapshot")
        .expect("append after snapshot");
    storage.close().await.expect("close");
}

/// Reads stop at the byte limit but always return at least one entry.
pub async fn reads_honour_the_byte_limit<S: LogStorage>(dir: &Path) {
    let storage = S::open(dir).await.expect("open");
    for index in 1..=10 {
        storage
            .append_entry(2, index, 1, 0, &[index as u8; 100])
            .expect("append");
    }
    assert_eq!(storage.entries(2, 1..11, 350).expect("read").len(), 3);
    assert_eq!(storage.entries(2, 1..11, 1).expect("read").len(), 1);
    assert_eq!(storage.entries(2, 3..3, 1000).expect("read").len(), 0);
    storage.close().await.expect("close");
}

/// Runs every check, each in its own subdirectory of `dir`.
pub async fn run_all<S: LogStorage>(dir: &Path) {
    synced_entries_of_interleaved_groups_survive_reopen::<S>(&dir.join("interleaved")).await;
    the_latest_hard_state_wins::<S>(&dir.join("hard-state")).await;
    a_truncated_suffix_is_replaced_by_new_entries::<S>(&dir.join("truncate")).await;
    a_purged_prefix_is_compacted_and_keeps_its_term::<S>(&dir.join("purge")).await;
    reads_honour_the_byte_limit::<S>(&dir.join("byte-limit")).await;
}
