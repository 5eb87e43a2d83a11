//! Releasing a compacted log's entries off the shard's thread.
//!
//! A compaction forgets every entry below a group's snapshot at once
//! ([`RaftCore::compact`](crate::raft::RaftCore::compact)), and dropping
//! them is not free: each payload is a reference to a receive buffer or an
//! arena block, often the last one, so the drop walks and frees memory
//! entry by entry, about a microsecond an entry on a loaded 2-core machine.
//! With the shard-wide snapshot trigger a group is snapshotted when it holds
//! about 200 K small entries (64 groups, the default 256 MiB), and dropping
//! them on the shard's thread made turns of 100–350 ms: longer than the
//! election timeout, so every group of the shard risked losing its leader
//! to each snapshot (docs/journal/benchmarks.md, "a 64-group long run").
//!
//! So a shard hands large compactions to a thread of its own, started with
//! the shard and joined when it stops, on the node's helper CPUs: the
//! shard's thread only moves the entries (the smaller side of the log is
//! moved, never an entry dropped there). A small compaction is dropped in
//! place (a thread hop costs more than a few hundred drops); when the
//! thread is behind by [`RELEASE_QUEUE_MAX`] compactions, or could not be
//! started, the entries are dropped in place too, as before, and counted.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crate::raft::Entry;

/// Compactions waiting for the release thread at most; beyond it a shard
/// drops a compaction's entries on its own thread.
pub const RELEASE_QUEUE_MAX: usize = 16;

/// Entries below which a compaction's entries are dropped on the shard's
/// thread: a few hundred microseconds at most, less than a thread hop's
/// worth of bookkeeping is saved below it.
pub const RELEASE_OFF_LOOP_ENTRIES_MIN: usize = 512;

/// How a compaction's forgotten entries were released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Nothing to release.
    Nothing,
    /// Dropped on the calling thread (few entries, or no room / no thread).
    InPlace,
    /// Handed to the release thread.
    OffLoop,
}

/// A shard's release thread: drops what it is sent, in order, and stops
/// once the shard drops this (joined then, after it dropped the rest).
pub(crate) struct Releaser {
    sender: Option<flume::Sender<VecDeque<Entry>>>,
    thread: Option<JoinHandle<()>>,
}

impl Releaser {
    /// Starts the thread `name`, on `cores` if any. If the thread cannot be
    /// started, every release is dropped in place (logged once here).
    pub fn start(name: String, cores: Vec<usize>) -> Releaser {
        let (sender, receiver) = flume::bounded::<VecDeque<Entry>>(RELEASE_QUEUE_MAX);
        let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
            if !cores.is_empty() {
                // As the blocking threads: off the shards' cores.
                let _ = super::affinity::pin_current_thread(&cores);
            }
            while let Ok(entries) = receiver.recv() {
                drop(entries);
            }
        });
        match spawned {
            Ok(thread) => Releaser {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(error) => {
                log::warn!(
                    "cannot start the thread {name} that releases compacted log entries ({error}): they are \
                     dropped on the shard's thread"
                );
                Releaser {
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    /// Releases `entries`: to the thread when there are at least
    /// [`RELEASE_OFF_LOOP_ENTRIES_MIN`] and it has room, otherwise here.
    pub fn release(&self, entries: VecDeque<Entry>) -> Released {
        if entries.is_empty() {
            return Released::Nothing;
        }
        if entries.len() < RELEASE_OFF_LOOP_ENTRIES_MIN {
            return Released::InPlace;
        }
        match &self.sender {
            Some(sender) => match sender.try_send(entries) {
                Ok(()) => Released::OffLoop,
                // Dropped here, at the end of the match.
                Err(_) => Released::InPlace,
            },
            None => Released::InPlace,
        }
    }
}

impl Drop for Releaser {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryPayload, LogIndex, Term};
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};

    /// A payload's owner that records the name of the thread dropping it.
    struct Tracked {
        bytes: [u8; 8],
        dropped_on: Arc<Mutex<Vec<String>>>,
    }

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.dropped_on.lock().unwrap().push(name);
        }
    }

    fn entries(count: usize, dropped_on: &Arc<Mutex<Vec<String>>>) -> VecDeque<Entry> {
        (0..count)
            .map(|i| Entry {
                index: LogIndex(i as u64 + 1),
                term: Term(1),
                payload: EntryPayload::Normal(Bytes::from_owner(Tracked {
                    bytes: (i as u64).to_le_bytes(),
                    dropped_on: dropped_on.clone(),
                })),
            })
            .collect()
    }

    #[test]
    fn many_entries_are_dropped_on_the_release_thread_few_in_place() {
        let dropped_on = Arc::new(Mutex::new(Vec::new()));
        let releaser = Releaser::start("coraft-test-release".to_owned(), Vec::new());
        let many = entries(RELEASE_OFF_LOOP_ENTRIES_MIN, &dropped_on);
        assert_eq!(releaser.release(many), Released::OffLoop);
        let few = entries(RELEASE_OFF_LOOP_ENTRIES_MIN - 1, &dropped_on);
        assert_eq!(releaser.release(few), Released::InPlace);
        assert_eq!(releaser.release(VecDeque::new()), Released::Nothing);
        // Joins the thread once it dropped what it was sent.
        drop(releaser);
        let dropped_on = dropped_on.lock().unwrap();
        let here = std::thread::current().name().unwrap_or("").to_owned();
        let off = dropped_on.iter().filter(|name| *name == "coraft-test-release").count();
        let in_place = dropped_on.iter().filter(|name| **name == here).count();
        assert_eq!(off, RELEASE_OFF_LOOP_ENTRIES_MIN);
        assert_eq!(in_place, RELEASE_OFF_LOOP_ENTRIES_MIN - 1);
    }

    #[test]
    fn a_full_queue_drops_in_place() {
        let dropped_on = Arc::new(Mutex::new(Vec::new()));
        // A releaser whose thread never started (as when spawning fails).
        let releaser = Releaser {
            sender: None,
            thread: None,
        };
        assert_eq!(
            releaser.release(entries(RELEASE_OFF_LOOP_ENTRIES_MIN, &dropped_on)),
            Released::InPlace
        );
        assert_eq!(dropped_on.lock().unwrap().len(), RELEASE_OFF_LOOP_ENTRIES_MIN);
        // A queue with no room: its receiver holds RELEASE_QUEUE_MAX and is
        // never drained.
        let (sender, _receiver) = flume::bounded(RELEASE_QUEUE_MAX);
        for _ in 0..RELEASE_QUEUE_MAX {
            sender.try_send(VecDeque::new()).unwrap();
        }
        let full = Releaser {
            sender: Some(sender),
            thread: None,
        };
        assert_eq!(
            full.release(entries(RELEASE_OFF_LOOP_ENTRIES_MIN, &dropped_on)),
            Released::InPlace
        );
        assert_eq!(dropped_on.lock().unwrap().len(), 2 * RELEASE_OFF_LOOP_ENTRIES_MIN);
    }
}
