//! The KV example's state machine (issue 15, first step: one Raft group, an
//! in-memory store): put, get, delete, compare-and-set and scan over a key
//! range, with the encoding of its commands, queries and answers.
//!
//! Every command and answer is a tag byte followed by length-prefixed byte
//! strings (`u32` little-endian length, then the bytes). A command that
//! does not decode is refused alike on every replica (apply stays
//! deterministic) and changes nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::sync::Arc;

use coraft::api::{Command, LeaderStopReason, PreparedSnapshot, SnapshotLoader, SnapshotView, StateMachine};
use coraft::raft::{NodeId, Term};

/// Most bytes in a key.
pub const KEY_BYTES_MAX: usize = 4096;
/// Most bytes in a value (well under the engine's `COMMAND_BYTES_MAX`).
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Most pairs one scan returns; a longer range is read in several scans.
pub const SCAN_PAIRS_MAX: usize = 1000;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const COMPARE_AND_SET: u8 = 3;
const GET: u8 = 1;
const SCAN: u8 = 2;
const OK: u8 = 0;
const REFUSED: u8 = 1;

/// A write to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (or removes it when `new` is `None`) only if its
    /// value is `expected` (`None`: absent).
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The value it must have now.
        expected: Option<Vec<u8>>,
        /// The value it gets.
        new: Option<Vec<u8>>,
    },
}

/// A read of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvQuery {
    /// The value of `key`.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Up to `limit` pairs with `start <= key < end` (`end` empty: no end),
    /// in key order.
    Scan {
        /// First key of the range.
        start: Vec<u8>,
        /// Key past the range; empty for none.
        end: Vec<u8>,
        /// Most pairs to return (at most [`SCAN_PAIRS_MAX`]).
        limit: u32,
    },
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The key's value before the write (`None`: it was absent). For a
    /// compare-and-set, `swapped` says whether it wrote.
    Done {
        /// The value before.
        previous: Option<Vec<u8>>,
        /// False only for a compare-and-set whose expectation failed.
        swapped: bool,
    },
    /// Not applied, and why.
    Refused(String),
}

impl KvWrite {
    /// The command's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KvWrite::Put { key, value } => {
                out.push(PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvWrite::Delete { key } => {
                out.push(DELETE);
                put_bytes(&mut out, key);
            }
            KvWrite::CompareAndSet { key, expected, new } => {
                out.push(COMPARE_AND_SET);
                put_bytes(&mut out, key);
                put_optional(&mut out, expected.as_deref());
                put_optional(&mut out, new.as_deref());
            }
        }
        out
    }

    /// Decodes and checks a command.
    pub fn decode(bytes: &[u8]) -> Result<KvWrite, String> {
        let mut reader = Reader(bytes);
        let write = match reader.byte()? {
            PUT => KvWrite::Put {
                key: reader.key()?,
                value: reader.value()?,
            },
            DELETE => KvWrite::Delete { key: reader.key()? },
            COMPARE_AND_SET => KvWrite::CompareAndSet {
                key: reader.key()?,
                expected: reader.optional_value()?,
                new: reader.optional_value()?,
            },
            tag => return Err(format!("unknown write tag {tag}")),
        };
        reader.end()?;
        Ok(write)
    }
}

impl KvQuery {
    /// The query's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KvQuery::Get { key } => {
                out.push(GET);
                put_bytes(&mut out, key);
            }
            KvQuery::Scan { start, end, limit } => {
                out.push(SCAN);
                put_bytes(&mut out, start);
                put_bytes(&mut out, end);
                out.extend_from_slice(&limit.to_le_bytes());
            }
        }
        out
    }

    /// Decodes and checks a query.
    pub fn decode(bytes: &[u8]) -> Result<KvQuery, String> {
        let mut reader = Reader(bytes);
        let query = match reader.byte()? {
            GET => KvQuery::Get { key: reader.key()? },
            SCAN => {
                let start = reader.key()?;
                let end = reader.key()?;
                let limit = reader.u32()?;
                if limit as usize > SCAN_PAIRS_MAX {
                    return Err(format!(
                        "a scan returns at most SCAN_PAIRS_MAX ({SCAN_PAIRS_MAX}) pairs, not {limit}"
                    ));
                }
                KvQuery::Scan { start, end, limit }
            }
            tag => return Err(format!("unknown query tag {tag}")),
        };
        reader.end()?;
        Ok(query)
    }
}

impl WriteOutcome {
    /// The result's bytes, as `on_apply` returns them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            WriteOutcome::Done { previous, swapped } => {
                out.push(OK);
                out.push(u8::from(*swapped));
                put_optional(&mut out, previous.as_deref());
            }
            WriteOutcome::Refused(reason) => {
                out.push(REFUSED);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    /// Decodes a write's result.
    pub fn decode(bytes: &[u8]) -> Result<WriteOutcome, String> {
        let mut reader = Reader(bytes);
        match reader.byte()? {
            OK => {
                let swapped = reader.byte()? != 0;
                let previous = reader.optional_value()?;
                reader.end()?;
                Ok(WriteOutcome::Done { previous, swapped })
            }
            REFUSED => Ok(WriteOutcome::Refused(String::from_utf8_lossy(reader.0).into_owned())),
            tag => Err(format!("unknown result tag {tag}")),
        }
    }
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The bytes of a get's answer (what [`decode_get`] reads).
pub fn encode_get_answer(value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    put_optional(&mut out, value);
    out
}

/// The bytes of a scan's answer (what [`decode_scan`] reads).
pub fn encode_scan_answer(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        put_bytes(&mut out, key);
        put_bytes(&mut out, value);
    }
    out
}

/// First bytes of a query's answer when the node could not answer it (its
/// store failed to read, or the query did not decode), followed by why:
/// never the start of a get's answer (a presence byte, 0 or 1) nor of a
/// scan's (a pair count, at most `SCAN_PAIRS_MAX`).
const QUERY_FAILED: [u8; 4] = [0xFF; 4];

/// The answer to a query the node could not answer, and why (what
/// [`decode_get`] and [`decode_scan`] return as their error).
pub fn encode_query_failure(reason: &str) -> Vec<u8> {
    let mut out = QUERY_FAILED.to_vec();
    out.extend_from_slice(reason.as_bytes());
    out
}

/// The error of an answer made by [`encode_query_failure`], if it is one.
fn query_failure(bytes: &[u8]) -> Result<(), String> {
    match bytes.strip_prefix(&QUERY_FAILED[..]) {
        Some(reason) => Err(format!(
            "the node failed to answer: {}",
            String::from_utf8_lossy(reason)
        )),
        None => Ok(()),
    }
}

/// A get's answer: the value, if the key is present.
pub fn decode_get(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    query_failure(bytes)?;
    let mut reader = Reader(bytes);
    let value = reader.optional_value()?;
    reader.end()?;
    Ok(value)
}

/// A scan's answer: its pairs in key order.
pub fn decode_scan(bytes: &[u8]) -> Result<Vec<Pair>, String> {
    query_failure(bytes)?;
    let mut reader = Reader(bytes);
    let count = reader.u32()? as usize;
    if count > SCAN_PAIRS_MAX {
        return Err(format!("a scan answer of {count} pairs exceeds SCAN_PAIRS_MAX"));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        pairs.push((reader.key()?, reader.value()?));
    }
    reader.end()?;
    Ok(pairs)
}

/// The pairs, in key order.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The replicated store: a `BTreeMap` in memory. Its snapshot is a
/// serialised copy (every pair, in key order), written off the shard's
/// loop from a [`KvView`]. It prints leader changes and snapshots on
/// stdout, each line prefixed with `node N:`.
pub struct KvStore {
    node: NodeId,
    /// Shared with a snapshot being written, if any: a write while it is
    /// shared copies the map first (`Arc::make_mut`), so the snapshot keeps
    /// the state as of its index.
    map: Arc<Map>,
}

impl KvStore {
    /// The empty store of `node` (its id only labels the printed lines).
    pub fn new(node: NodeId) -> KvStore {
        KvStore {
            node,
            map: Arc::new(BTreeMap::new()),
        }
    }

    /// Its pairs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no pair.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn apply(&mut self, data: &[u8]) -> WriteOutcome {
        let write = match KvWrite::decode(data) {
            Ok(write) => write,
            Err(reason) => return WriteOutcome::Refused(reason),
        };
        match write {
            KvWrite::Put { key, value } => WriteOutcome::Done {
                previous: Arc::make_mut(&mut self.map).insert(key, value),
                swapped: true,
            },
            KvWrite::Delete { key } => WriteOutcome::Done {
                previous: Arc::make_mut(&mut self.map).remove(&key),
                swapped: true,
            },
            KvWrite::CompareAndSet { key, expected, new } => {
                let previous = self.map.get(&key).cloned();
                if previous != expected {
                    return WriteOutcome::Done {
                        previous,
                        swapped: false,
                    };
                }
                let map = Arc::make_mut(&mut self.map);
                match new {
                    Some(value) => map.insert(key, value),
                    None => map.remove(&key),
                };
                WriteOutcome::Done {
                    previous,
                    swapped: true,
                }
            }
        }
    }

    fn query(&self, query: &KvQuery) -> Vec<u8> {
        let mut out = Vec::new();
        match query {
            KvQuery::Get { key } => put_optional(&mut out, self.map.get(key).map(Vec::as_slice)),
            KvQuery::Scan { start, end, limit } => {
                let upper = if end.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(end.clone())
                };
                let pairs: Vec<_> = if !end.is_empty() && end <= start {
                    Vec::new()
                } else {
                    self.map
                        .range((Bound::Included(start.clone()), upper))
                        .take(*limit as usize)
                        .collect()
                };
                out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
                for (key, value) in pairs {
                    put_bytes(&mut out, key);
                    put_bytes(&mut out, value);
                }
            }
        }
        out
    }
}

impl StateMachine for KvStore {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands.map(|command| self.apply(command.data).encode()).collect()
    }

    /// A query that does not decode gets a failure answer saying why (the
    /// client encodes its queries, so only a foreign client sends one).
    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        match KvQuery::decode(query) {
            Ok(query) => self.query(&query),
            Err(reason) => encode_query_failure(&format!("the query does not decode: {reason}")),
        }
    }

    /// The map as of the last applied command, shared rather than copied:
    /// serialising it and making it durable happen on another thread while
    /// the shard goes on applying.
    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        Some(Box::new(KvView {
            node: self.node,
            map: Arc::clone(&self.map),
        }))
    }

    /// Not called while `snapshot_view` offers a view; the same bytes.
    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        KvView {
            node: self.node,
            map: Arc::clone(&self.map),
        }
        .write_to(writer)
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        self.map = Arc::new(read_map_snapshot(reader)?);
        println!("node {}: snapshot loaded: {} keys", self.node, self.map.len());
        Ok(())
    }

    /// The map is read and built on the engine's blocking thread, while the
    /// shard serves its other groups; only the swap runs on the shard's.
    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        Some(Box::new(KvLoader))
    }

    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let map = prepared
            .downcast::<Map>()
            .map_err(|_| std::io::Error::other("a prepared snapshot that is not a KV map"))?;
        self.map = Arc::new(*map);
        println!("node {}: snapshot loaded: {} keys", self.node, self.map.len());
        Ok(())
    }

    fn on_leader_start(&mut self, term: Term) {
        println!(
            "node {}: leader start in term {term}: {} keys",
            self.node,
            self.map.len()
        );
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        println!("node {}: leader stop: {reason:?}", self.node);
    }
}

/// Reads a snapshot the store's view wrote: the pair count, then each
/// key and value.
fn read_map_snapshot(reader: &mut dyn Read) -> std::io::Result<Map> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut word = [0u8; 8];
    reader.read_exact(&mut word)?;
    let count = u64::from_le_bytes(word);
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let key = read_sized(reader, KEY_BYTES_MAX).map_err(|e| invalid(format!("snapshot key: {e}")))?;
        let value = read_sized(reader, VALUE_BYTES_MAX).map_err(|e| invalid(format!("snapshot value: {e}")))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// Reads the store's snapshot on the engine's blocking thread.
struct KvLoader;

impl SnapshotLoader for KvLoader {
    fn prepare(self: Box<Self>, reader: &mut dyn Read) -> std::io::Result<PreparedSnapshot> {
        Ok(Box::new(read_map_snapshot(reader)?))
    }
}

/// A snapshot of the store: the map as it was when the view was taken. It
/// is `Send` (the state machine need not be), so it can cross to the
/// thread that writes it.
pub struct KvView {
    node: NodeId,
    map: Arc<Map>,
}

impl SnapshotView for KvView {
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (key, value) in self.map.iter() {
            writer.write_all(&(key.len() as u32).to_le_bytes())?;
            writer.write_all(key)?;
            writer.write_all(&(value.len() as u32).to_le_bytes())?;
            writer.write_all(value)?;
        }
        println!("node {}: snapshot saved: {} keys", self.node, self.map.len());
        Ok(())
    }
}

/// Reads a `u32` length and that many bytes, refusing more than `bytes_max`.
pub(crate) fn read_sized(reader: &mut dyn Read, bytes_max: usize) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{length} bytes exceed the bound of {bytes_max}"),
        ));
    }
    let mut bytes = vec![0u8; length];
    reader.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Appends a `u32` length and the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a presence byte and, when present, the bytes.
pub(crate) fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        None => out.push(0),
    }
}

/// Reads the encoding, refusing what is short, oversized or left over
/// (the KV's and the regions' messages).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        if self.0.len() < count {
            return Err(format!("truncated: {count} bytes needed, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Ok(head)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn sized(&mut self, what: &str, bytes_max: usize) -> Result<Vec<u8>, String> {
        let length = self.u32()? as usize;
        if length > bytes_max {
            return Err(format!("a {what} of {length} bytes exceeds {bytes_max} bytes"));
        }
        Ok(self.take(length)?.to_vec())
    }

    pub(crate) fn key(&mut self) -> Result<Vec<u8>, String> {
        self.sized("key", KEY_BYTES_MAX)
    }

    pub(crate) fn value(&mut self) -> Result<Vec<u8>, String> {
        self.sized("value", VALUE_BYTES_MAX)
    }

    pub(crate) fn optional_value(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.value()?)),
            flag => Err(format!("bad presence flag {flag}")),
        }
    }

    pub(crate) fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes left over", self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coraft::raft::LogIndex;

    fn write(store: &mut KvStore, write: KvWrite) -> WriteOutcome {
        let data = write.encode();
        let command = Command {
            index: LogIndex(1),
            term: Term(1),
            data: &data,
        };
        WriteOutcome::decode(&store.on_apply(&mut std::iter::once(command)).remove(0)).unwrap()
    }

    fn put(store: &mut KvStore, key: &str, value: &str) -> WriteOutcome {
        write(
            store,
            KvWrite::Put {
                key: key.into(),
                value: value.into(),
            },
        )
    }

    fn get(store: &KvStore, key: &str) -> Option<Vec<u8>> {
        decode_get(&store.on_query(&KvQuery::Get { key: key.into() }.encode())).unwrap()
    }

    fn done(previous: Option<&str>, swapped: bool) -> WriteOutcome {
        WriteOutcome::Done {
            previous: previous.map(Into::into),
            swapped,
        }
    }

    #[test]
    fn put_get_delete_return_the_previous_value() {
        let mut store = KvStore::new(NodeId(1));
        assert_eq!(put(&mut store, "a", "1"), done(None, true));
        assert_eq!(put(&mut store, "a", "2"), done(Some("1"), true));
        assert_eq!(get(&store, "a"), Some(b"2".to_vec()));
        assert_eq!(
            write(&mut store, KvWrite::Delete { key: "a".into() }),
            done(Some("2"), true)
        );
        assert_eq!(get(&store, "a"), None);
        assert_eq!(write(&mut store, KvWrite::Delete { key: "a".into() }), done(None, true));
    }

    #[test]
    fn compare_and_set_writes_only_when_the_value_is_as_expected() {
        let mut store = KvStore::new(NodeId(1));
        let cas = |expected: Option<&str>, new: Option<&str>| KvWrite::CompareAndSet {
            key: "k".into(),
            expected: expected.map(Into::into),
            new: new.map(Into::into),
        };
        assert_eq!(write(&mut store, cas(None, Some("1"))), done(None, true));
        assert_eq!(write(&mut store, cas(None, Some("2"))), done(Some("1"), false));
        assert_eq!(get(&store, "k"), Some(b"1".to_vec()));
        assert_eq!(write(&mut store, cas(Some("1"), Some("3"))), done(Some("1"), true));
        assert_eq!(write(&mut store, cas(Some("3"), None)), done(Some("3"), true));
        assert_eq!(get(&store, "k"), None);
    }

    #[test]
    fn scan_returns_the_range_in_key_order_up_to_the_limit() {
        let mut store = KvStore::new(NodeId(1));
        for key in ["d", "a", "c", "b", "e"] {
            put(&mut store, key, &key.to_uppercase());
        }
        let scan = |start: &str, end: &str, limit: u32| {
            let answer = store.on_query(
                &KvQuery::Scan {
                    start: start.into(),
                    end: end.into(),
                    limit,
                }
                .encode(),
            );
            decode_scan(&answer)
                .unwrap()
                .into_iter()
                .map(|(k, v)| format!("{}={}", String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(scan("b", "d", 10), ["b=B", "c=C"]);
        assert_eq!(scan("b", "", 2), ["b=B", "c=C"]);
        assert_eq!(scan("", "", 10).len(), 5);
        assert!(scan("d", "b", 10).is_empty(), "an empty range");
    }

    #[test]
    fn malformed_or_oversized_commands_are_refused_and_change_nothing() {
        let mut store = KvStore::new(NodeId(1));
        let mut command = |data: &[u8]| {
            let command = Command {
                index: LogIndex(1),
                term: Term(1),
                data,
            };
            WriteOutcome::decode(&store.on_apply(&mut std::iter::once(command)).remove(0)).unwrap()
        };
        assert!(matches!(command(&[9]), WriteOutcome::Refused(r) if r.contains("unknown write tag 9")));
        assert!(matches!(command(&[PUT, 3, 0]), WriteOutcome::Refused(r) if r.contains("truncated")));
        let huge = KvWrite::Put {
            key: vec![b'k'; KEY_BYTES_MAX + 1],
            value: Vec::new(),
        };
        assert!(matches!(command(&huge.encode()), WriteOutcome::Refused(r) if r.contains("key of 4097 bytes")));
        let mut trailing = KvWrite::Delete { key: "a".into() }.encode();
        trailing.push(0);
        assert!(matches!(command(&trailing), WriteOutcome::Refused(r) if r.contains("left over")));
        assert!(store.is_empty(), "a refused command changed the store");
        put(&mut store, "a", "1");
        let too_many = KvQuery::Scan {
            start: Vec::new(),
            end: Vec::new(),
            limit: SCAN_PAIRS_MAX as u32 + 1,
        };
        assert!(KvQuery::decode(&too_many.encode())
            .unwrap_err()
            .contains("SCAN_PAIRS_MAX"));
        let error = decode_scan(&store.on_query(&too_many.encode())).unwrap_err();
        assert!(
            error.contains("does not decode") && error.contains("SCAN_PAIRS_MAX"),
            "{error}"
        );
    }

    #[test]
    fn a_snapshot_copies_every_pair_into_a_fresh_store() {
        let mut store = KvStore::new(NodeId(1));
        put(&mut store, "x", "1");
        put(&mut store, "y", "2");
        let mut bytes = Vec::new();
        store.on_snapshot_save(&mut bytes).unwrap();
        let mut fresh = KvStore::new(NodeId(1));
        put(&mut fresh, "stale", "gone");
        fresh.on_snapshot_load(&mut bytes.as_slice()).unwrap();
        assert_eq!(fresh.len(), 2);
        assert_eq!(get(&fresh, "y"), Some(b"2".to_vec()));
        assert_eq!(get(&fresh, "stale"), None);
        assert!(fresh.on_snapshot_load(&mut &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_snapshot_prepared_by_the_loader_replaces_the_whole_map() {
        let mut store = KvStore::new(NodeId(1));
        put(&mut store, "x", "1");
        put(&mut store, "y", "2");
        let mut bytes = Vec::new();
        store.on_snapshot_save(&mut bytes).unwrap();
        let mut fresh = KvStore::new(NodeId(2));
        put(&mut fresh, "stale", "gone");
        let loader = fresh.snapshot_loader().expect("the store offers a loader");
        let prepared = loader.prepare(&mut bytes.as_slice()).unwrap();
        // Preparing leaves the store as it was until the swap.
        assert_eq!(get(&fresh, "stale"), Some(b"gone".to_vec()));
        fresh.on_snapshot_prepared(prepared).unwrap();
        assert_eq!(fresh.len(), 2);
        assert_eq!(get(&fresh, "x"), Some(b"1".to_vec()));
        assert_eq!(get(&fresh, "stale"), None);
        let torn = fresh.snapshot_loader().unwrap().prepare(&mut &bytes[..bytes.len() - 1]);
        assert!(torn.is_err(), "a torn snapshot is an error");
        assert!(
            fresh.on_snapshot_prepared(Box::new(7u32)).is_err(),
            "not a map: refused"
        );
        assert_eq!(fresh.len(), 2);
    }

    #[test]
    fn a_snapshot_view_keeps_the_state_of_its_index_while_writes_go_on() {
        let mut store = KvStore::new(NodeId(1));
        put(&mut store, "x", "1");
        let mut view = store.snapshot_view().expect("the store offers a view");
        put(&mut store, "x", "2");
        put(&mut store, "y", "3");
        let mut bytes = Vec::new();
        view.write_to(&mut bytes).unwrap();
        let mut fresh = KvStore::new(NodeId(2));
        fresh.on_snapshot_load(&mut bytes.as_slice()).unwrap();
        assert_eq!(fresh.len(), 1, "the writes after the view are not in it");
        assert_eq!(get(&fresh, "x"), Some(b"1".to_vec()));
        assert_eq!(get(&store, "x"), Some(b"2".to_vec()), "the store went on");
        let mut saved = Vec::new();
        store.on_snapshot_save(&mut saved).unwrap();
        let mut current = Vec::new();
        store.snapshot_view().unwrap().write_to(&mut current).unwrap();
        assert_eq!(saved, current, "save and a view write the same bytes");
    }
}
