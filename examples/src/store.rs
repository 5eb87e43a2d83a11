//! The KV example's state machine over a real embedded storage engine,
//! `redb` (`kv-server --store redb`): the same commands, queries and
//! answers as [`crate::kv::KvStore`] (`--store memory`), the pairs kept in a
//! redb file in the node's data directory instead of a `BTreeMap`.
//!
//! - **Apply.** Each batch the engine hands `on_apply` is one redb write
//!   transaction: the writes, and the index of the batch's last command in
//!   a `meta` table, committed together. The commit is not synced
//!   (`Durability::None`): the engine's WAL holds every committed entry, so
//!   a store that loses its unsynced tail in a crash is caught up by replay.
//! - **Snapshot.** [`StateMachine::snapshot_view`] syncs the store (one
//!   durable commit) and hands over a redb read transaction: a consistent
//!   view that later commits do not change, streamed pair by pair into the
//!   snapshot file on the engine's snapshot thread. No copy of the pairs is
//!   made in memory. The sync runs on the shard's thread; a bounded cache
//!   ([`CACHE_BYTES`]) and a flusher thread ([`open_database`]) leave it
//!   little to write.
//! - **Load and restart.** A snapshot records the index of the last command
//!   the store had applied. Loading one whose index equals the store's own
//!   leaves the store as it is (a node restarting from its latest snapshot
//!   reads nothing); any other replaces the whole store, in bounded write
//!   transactions. The rule that keeps a restart from applying a command
//!   twice: the engine replays the log from its snapshot on, so a store
//!   whose applied index is ahead of that snapshot (its unsynced commits
//!   survived) is rebuilt from the snapshot, and a store ahead of a replay
//!   that starts without one is emptied before the first command.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coraft::api::{Command, LeaderStopReason, SnapshotView, StateMachine};
use coraft::raft::{NodeId, Term};
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use redb::{TableDefinition, WriteTransaction};

use crate::kv::{encode_get_answer, encode_query_failure, encode_scan_answer, KvQuery, KvWrite, Pair, WriteOutcome};
use crate::kv::{read_sized, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The pairs.
const PAIRS: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("pairs");
/// The store's own bookkeeping: [`APPLIED_KEY`], [`LOADING_KEY`].
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
/// The log index of the last command whose writes the store holds.
const APPLIED_KEY: &str = "applied_index";
/// Non-zero while a snapshot load is under way: a store found so on
/// opening is half replaced, and is emptied.
const LOADING_KEY: &str = "loading";
/// First bytes of a redb store's snapshot (a memory store's starts with its
/// pair count, which never has this value in practice).
const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"KVREDB01");
/// Bound on pairs one write transaction of a snapshot load holds.
pub const LOAD_BATCH_PAIRS_MAX: usize = 16_384;

/// The file the store lives in, inside a node's data directory.
pub const STORE_FILE: &str = "kv.redb";

/// redb's page cache. At most half of it holds the pages written since the
/// last synced commit; past that redb writes them to the file (the OS's
/// cache), where the flusher syncs them in the background. So the sync a
/// snapshot view makes on the shard's thread writes at most half of this.
pub const CACHE_BYTES: usize = 32 << 20;

/// How often the flusher syncs what redb wrote to the store file.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Opens (or creates) the store file `data/kv.redb`, and starts its
/// flusher: a thread that syncs the file every [`FLUSH_INTERVAL`] while the
/// database is open, so the pages redb writes between synced commits reach
/// the disk off the shard's thread. Syncing early never makes a commit
/// visible after a crash (only a synced commit's header does), it only
/// leaves less for that commit's sync to do.
pub fn open_database(data: &Path) -> anyhow::Result<Arc<Database>> {
    open_database_with(data, CACHE_BYTES, Some(FLUSH_INTERVAL))
}

/// [`open_database`] with another cache size and flush interval (`None`:
/// no flusher), to measure what they change (`kv-store-bench`).
pub fn open_database_with(
    data: &Path,
    cache_bytes: usize,
    flush_interval: Option<Duration>,
) -> anyhow::Result<Arc<Database>> {
    let path = data.join(STORE_FILE);
    let database = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(&path)
        .map_err(|e| anyhow::anyhow!("opening the store {}: {e}", path.display()))?;
    let database = Arc::new(database);
    let Some(flush_interval) = flush_interval else {
        return Ok(database);
    };
    let file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("opening the store {}: {e}", path.display()))?;
    let open = Arc::downgrade(&database);
    std::thread::Builder::new()
        .name("redb-flusher".into())
        .spawn(move || {
            // Ends within an interval of the database's closing.
            while open.strong_count() > 0 {
                std::thread::sleep(flush_interval);
                if let Err(error) = file.sync_data() {
                    // The next synced commit syncs the same pages and
                    // fails the store if the disk really fails.
                    log::warn!("syncing the store {} in the background: {error}", path.display());
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the store's flusher: {e}"))?;
    Ok(database)
}

/// A failure of the store: the node cannot go on applying (as an fsync
/// failure of the WAL, it is fatal).
fn fatal(what: &str, error: impl std::fmt::Display) -> ! {
    panic!("the redb store failed to {what}: {error}")
}

fn io_error(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

/// The KV state machine over redb. It prints leader changes and snapshots
/// as [`crate::kv::KvStore`] does.
pub struct RedbKv {
    node: NodeId,
    database: Arc<Database>,
    /// The log index of the last command the store holds (as in `META`).
    applied: u64,
}

impl RedbKv {
    /// The state machine of `node` over `database`; a store left half
    /// loaded by a crash is emptied.
    pub fn open(node: NodeId, database: Arc<Database>) -> std::io::Result<RedbKv> {
        let transaction = database.begin_write().map_err(io_error)?;
        let applied = {
            let mut meta = transaction.open_table(META).map_err(io_error)?;
            let loading = meta.get(LOADING_KEY).map_err(io_error)?.map_or(0, |v| v.value());
            let applied = meta.get(APPLIED_KEY).map_err(io_error)?.map_or(0, |v| v.value());
            if loading != 0 {
                meta.insert(LOADING_KEY, 0).map_err(io_error)?;
                meta.insert(APPLIED_KEY, 0).map_err(io_error)?;
                0
            } else {
                applied
            }
        };
        if applied == 0 {
            transaction.delete_table(PAIRS).map_err(io_error)?;
        }
        transaction.open_table(PAIRS).map_err(io_error)?;
        transaction.commit().map_err(io_error)?;
        let store = RedbKv {
            node,
            database,
            applied,
        };
        println!(
            "node {node}: redb store opened: {} keys, applied up to index {applied}",
            store.len()
        );
        Ok(store)
    }

    /// Its pairs.
    pub fn len(&self) -> u64 {
        self.read_table().and_then(|t| t.len().map_err(io_error)).unwrap_or(0)
    }

    /// Whether it holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The database it lives in.
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.database)
    }

    /// The log index of the last command the store holds.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    fn read_table(&self) -> std::io::Result<ReadOnlyTable<&'static [u8], &'static [u8]>> {
        let transaction = self.database.begin_read().map_err(io_error)?;
        transaction.open_table(PAIRS).map_err(io_error)
    }

    fn write_transaction(&self) -> WriteTransaction {
        let mut transaction = self
            .database
            .begin_write()
            .unwrap_or_else(|e| fatal("begin a write", e));
        // The WAL holds every committed entry: the store need not sync.
        transaction
            .set_durability(Durability::None)
            .unwrap_or_else(|e| fatal("set durability", e));
        transaction
    }

    fn query(&self, query: &KvQuery) -> std::io::Result<Vec<u8>> {
        let table = self.read_table()?;
        match query {
            KvQuery::Get { key } => {
                let value = table.get(key.as_slice()).map_err(io_error)?;
                Ok(encode_get_answer(value.as_ref().map(|v| v.value())))
            }
            KvQuery::Scan { start, end, limit } => {
                let mut pairs: Vec<Pair> = Vec::new();
                if end.is_empty() || end > start {
                    let range = if end.is_empty() {
                        table.range(start.as_slice()..)
                    } else {
                        table.range(start.as_slice()..end.as_slice())
                    }
                    .map_err(io_error)?;
                    for pair in range.take(*limit as usize) {
                        let (key, value) = pair.map_err(io_error)?;
                        pairs.push((key.value().to_vec(), value.value().to_vec()));
                    }
                }
                Ok(encode_scan_answer(&pairs))
            }
        }
    }
}

/// Applies one command to the open table, as `KvStore` applies it to its map.
fn apply_one(table: &mut redb::Table<'_, &'static [u8], &'static [u8]>, data: &[u8]) -> WriteOutcome {
    let write = match KvWrite::decode(data) {
        Ok(write) => write,
        Err(reason) => return WriteOutcome::Refused(reason),
    };
    let owned = |guard: Option<redb::AccessGuard<'_, &[u8]>>| guard.map(|v| v.value().to_vec());
    let result: Result<WriteOutcome, redb::StorageError> = (|| match write {
        KvWrite::Put { key, value } => Ok(WriteOutcome::Done {
            previous: owned(table.insert(key.as_slice(), value.as_slice())?),
            swapped: true,
        }),
        KvWrite::Delete { key } => Ok(WriteOutcome::Done {
            previous: owned(table.remove(key.as_slice())?),
            swapped: true,
        }),
        KvWrite::CompareAndSet { key, expected, new } => {
            let previous = owned(table.get(key.as_slice())?);
            if previous != expected {
                return Ok(WriteOutcome::Done {
                    previous,
                    swapped: false,
                });
            }
            match new {
                Some(value) => drop(table.insert(key.as_slice(), value.as_slice())?),
                None => drop(table.remove(key.as_slice())?),
            }
            Ok(WriteOutcome::Done {
                previous,
                swapped: true,
            })
        }
    })();
    result.unwrap_or_else(|e| fatal("apply a write", e))
}

impl StateMachine for RedbKv {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        let mut commands = commands.peekable();
        let Some(first) = commands.peek() else {
            return Vec::new();
        };
        let transaction = self.write_transaction();
        if first.index.0 <= self.applied {
            // A replay from before what the store holds (no snapshot to
            // start from): start the store over rather than apply twice.
            transaction
                .delete_table(PAIRS)
                .unwrap_or_else(|e| fatal("empty the store", e));
        }
        let mut results = Vec::new();
        let mut last = self.applied;
        {
            let mut table = transaction
                .open_table(PAIRS)
                .unwrap_or_else(|e| fatal("open the pairs", e));
            for command in commands {
                results.push(apply_one(&mut table, command.data).encode());
                last = command.index.0;
            }
            let mut meta = transaction.open_table(META).unwrap_or_else(|e| fatal("open meta", e));
            meta.insert(APPLIED_KEY, last)
                .unwrap_or_else(|e| fatal("record the applied index", e));
        }
        transaction.commit().unwrap_or_else(|e| fatal("commit", e));
        self.applied = last;
        results
    }

    /// A query that does not decode, or that redb fails to read, gets a
    /// failure answer saying why (the client prints it and exits 1): a
    /// read changes nothing, so the node goes on.
    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        let query = match KvQuery::decode(query) {
            Ok(query) => query,
            Err(reason) => return encode_query_failure(&format!("the query does not decode: {reason}")),
        };
        self.query(&query).unwrap_or_else(|error| {
            log::error!("node {}: the redb store failed to read: {error}", self.node);
            encode_query_failure(&format!("node {}: the redb store failed to read: {error}", self.node))
        })
    }

    /// Syncs the store, then hands over a read transaction's view of it:
    /// the snapshot streams from redb's pages, not from a copy.
    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        let mut transaction = self
            .database
            .begin_write()
            .unwrap_or_else(|e| fatal("begin a write", e));
        transaction
            .set_durability(Durability::Immediate)
            .unwrap_or_else(|e| fatal("set durability", e));
        transaction.commit().unwrap_or_else(|e| fatal("sync", e));
        let table = self.read_table().unwrap_or_else(|e| fatal("open a read view", e));
        Some(Box::new(RedbView {
            node: self.node,
            applied: self.applied,
            table,
        }))
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        RedbView {
            node: self.node,
            applied: self.applied,
            table: self.read_table()?,
        }
        .write_to(writer)
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let magic = read_u64(reader)?;
        if magic != SNAPSHOT_MAGIC {
            return Err(invalid(
                "the snapshot is not a redb store's (was this node run with another --store?)".into(),
            ));
        }
        let applied = read_u64(reader)?;
        let count = read_u64(reader)?;
        if applied == self.applied && applied > 0 {
            println!(
                "node {}: snapshot at command index {applied} is already in the store: {} keys",
                self.node,
                self.len()
            );
            return Ok(());
        }
        // Marked loading first: a crash half way leaves a store that is
        // emptied on opening, never one taken for whole.
        let transaction = self.write_transaction();
        transaction.delete_table(PAIRS).map_err(io_error)?;
        // Created again at once, empty: a snapshot of no pairs must leave a
        // table that queries can open (a stale read on a fresh node found
        // none and failed the shard).
        transaction.open_table(PAIRS).map_err(io_error)?;
        {
            let mut meta = transaction.open_table(META).map_err(io_error)?;
            meta.insert(LOADING_KEY, 1).map_err(io_error)?;
            meta.insert(APPLIED_KEY, 0).map_err(io_error)?;
        }
        transaction.commit().map_err(io_error)?;
        self.applied = 0;
        let mut left = count;
        while left > 0 {
            let transaction = self.write_transaction();
            {
                let mut table = transaction.open_table(PAIRS).map_err(io_error)?;
                for _ in 0..left.min(LOAD_BATCH_PAIRS_MAX as u64) {
                    let key = read_sized(reader, KEY_BYTES_MAX).map_err(|e| invalid(format!("snapshot key: {e}")))?;
                    let value =
                        read_sized(reader, VALUE_BYTES_MAX).map_err(|e| invalid(format!("snapshot value: {e}")))?;
                    table.insert(key.as_slice(), value.as_slice()).map_err(io_error)?;
                    left -= 1;
                }
            }
            transaction.commit().map_err(io_error)?;
        }
        let mut transaction = self.database.begin_write().map_err(io_error)?;
        transaction.set_durability(Durability::Immediate).map_err(io_error)?;
        {
            let mut meta = transaction.open_table(META).map_err(io_error)?;
            meta.insert(LOADING_KEY, 0).map_err(io_error)?;
            meta.insert(APPLIED_KEY, applied).map_err(io_error)?;
        }
        transaction.commit().map_err(io_error)?;
        self.applied = applied;
        println!("node {}: snapshot loaded: {count} keys", self.node);
        Ok(())
    }

    fn on_leader_start(&mut self, term: Term) {
        println!("node {}: leader start in term {term}: {} keys", self.node, self.len());
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        println!("node {}: leader stop: {reason:?}", self.node);
    }
}

/// A redb read transaction's view of the pairs: what the store held when
/// the view was taken, whatever is applied after. `Send`: it is written on
/// the engine's snapshot thread.
pub struct RedbView {
    node: NodeId,
    applied: u64,
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl SnapshotView for RedbView {
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        let count = self.table.len().map_err(io_error)?;
        writer.write_all(&SNAPSHOT_MAGIC.to_le_bytes())?;
        writer.write_all(&self.applied.to_le_bytes())?;
        writer.write_all(&count.to_le_bytes())?;
        for pair in self.table.iter().map_err(io_error)? {
            let (key, value) = pair.map_err(io_error)?;
            let (key, value) = (key.value(), value.value());
            writer.write_all(&(key.len() as u32).to_le_bytes())?;
            writer.write_all(key)?;
            writer.write_all(&(value.len() as u32).to_le_bytes())?;
            writer.write_all(value)?;
        }
        println!("node {}: snapshot saved: {count} keys", self.node);
        Ok(())
    }
}

fn read_u64(reader: &mut dyn Read) -> std::io::Result<u64> {
    let mut word = [0u8; 8];
    reader.read_exact(&mut word)?;
    Ok(u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coraft::raft::LogIndex;

    fn apply(store: &mut RedbKv, index: u64, write: KvWrite) -> WriteOutcome {
        let data = write.encode();
        let command = Command {
            index: LogIndex(index),
            term: Term(1),
            data: &data,
        };
        WriteOutcome::decode(&store.on_apply(&mut std::iter::once(command)).remove(0)).unwrap()
    }

    fn put(store: &mut RedbKv, index: u64, key: &str, value: &str) -> WriteOutcome {
        apply(
            store,
            index,
            KvWrite::Put {
                key: key.into(),
                value: value.into(),
            },
        )
    }

    fn get(store: &RedbKv, key: &str) -> Option<Vec<u8>> {
        crate::kv::decode_get(&store.on_query(&KvQuery::Get { key: key.into() }.encode())).unwrap()
    }

    fn open(dir: &Path) -> RedbKv {
        RedbKv::open(NodeId(1), open_database(dir).unwrap()).unwrap()
    }

    #[test]
    fn writes_and_the_applied_index_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        assert_eq!(
            put(&mut store, 3, "a", "1"),
            WriteOutcome::Done {
                previous: None,
                swapped: true
            }
        );
        put(&mut store, 4, "b", "2");
        apply(&mut store, 5, KvWrite::Delete { key: "b".into() });
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.applied_index(), 5);
        assert_eq!(get(&store, "a"), Some(b"1".to_vec()));
        assert_eq!(get(&store, "b"), None);
    }

    #[test]
    fn a_replay_from_before_the_store_starts_it_over_instead_of_applying_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        put(&mut store, 1, "a", "1");
        put(&mut store, 2, "stale", "x");
        // The engine replays from index 1 (no snapshot): index 1 again.
        assert_eq!(
            put(&mut store, 1, "a", "1"),
            WriteOutcome::Done {
                previous: None,
                swapped: true
            },
            "the replayed put sees the state before index 1, as the first time"
        );
        assert_eq!(get(&store, "stale"), None);
    }

    #[test]
    fn a_query_redb_fails_to_read_is_answered_with_the_error_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        put(&mut store, 1, "k", "v");
        // The pairs table gone (as a load once left it): redb fails the read.
        let transaction = store.database().begin_write().unwrap();
        transaction.delete_table(PAIRS).unwrap();
        transaction.commit().unwrap();
        let answer = store.on_query(&KvQuery::Get { key: "k".into() }.encode());
        let error = crate::kv::decode_get(&answer).unwrap_err();
        assert!(
            error.contains("the redb store failed to read") && error.contains("pairs"),
            "{error}"
        );
        let scan = KvQuery::Scan {
            start: Vec::new(),
            end: Vec::new(),
            limit: 10,
        };
        let error = crate::kv::decode_scan(&store.on_query(&scan.encode())).unwrap_err();
        assert!(error.contains("the redb store failed to read"), "{error}");
        // A query that does not decode says why.
        let error = crate::kv::decode_get(&store.on_query(&[9])).unwrap_err();
        assert!(error.contains("does not decode"), "{error}");
        // The node went on: the next write makes the table again.
        put(&mut store, 2, "k", "w");
        assert_eq!(get(&store, "k"), Some(b"w".to_vec()));
    }

    #[test]
    fn a_store_loaded_from_a_snapshot_of_no_pairs_still_answers_queries() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        put(&mut store, 1, "k", "v");
        apply(&mut store, 2, KvWrite::Delete { key: "k".into() });
        let mut bytes = Vec::new();
        store.on_snapshot_save(&mut bytes).unwrap();

        let other = tempfile::tempdir().unwrap();
        let mut fresh = open(other.path());
        fresh.on_snapshot_load(&mut bytes.as_slice()).unwrap();
        assert_eq!(get(&fresh, "k"), None, "an empty store, not a failed read");
        assert_eq!(fresh.len(), 0);
        assert_eq!(fresh.applied_index(), 2);
    }

    #[test]
    fn a_snapshot_streams_a_consistent_view_and_loading_replaces_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        for i in 0..100u64 {
            put(&mut store, i + 1, &format!("k{i:03}"), &format!("v{i}"));
        }
        let mut view = store.snapshot_view().expect("a view");
        put(&mut store, 101, "k000", "changed");
        put(&mut store, 102, "later", "x");
        let mut bytes = Vec::new();
        view.write_to(&mut bytes).unwrap();

        let other = tempfile::tempdir().unwrap();
        let mut fresh = open(other.path());
        put(&mut fresh, 1, "gone", "x");
        fresh.on_snapshot_load(&mut bytes.as_slice()).unwrap();
        assert_eq!(fresh.len(), 100, "the writes after the view are not in it");
        assert_eq!(get(&fresh, "k000"), Some(b"v0".to_vec()));
        assert_eq!(get(&fresh, "gone"), None);
        assert_eq!(fresh.applied_index(), 100);
        drop(fresh);
        assert_eq!(open(other.path()).applied_index(), 100, "the load is durable");

        // The store's own snapshot at its own index: nothing to load.
        let mut at_index = Vec::new();
        store.on_snapshot_save(&mut at_index).unwrap();
        store.on_snapshot_load(&mut &at_index[..24]).unwrap();
        assert_eq!(get(&store, "k000"), Some(b"changed".to_vec()));

        // Truncated or foreign bytes are an error, not a panic.
        let broken_dir = tempfile::tempdir().unwrap();
        let mut broken = open(broken_dir.path());
        assert!(broken.on_snapshot_load(&mut &bytes[..bytes.len() - 1]).is_err());
        assert!(broken.on_snapshot_load(&mut &[0u8; 24][..]).is_err());
    }
}
