//! A ready-made key-value state machine for the reliability suite
//! (`coraft-chaos`) and for `coraft-node --state-machine kv`: per-key
//! registers (read, write, compare-and-set, fetch-and-increment) and per-key lists (append, read),
//! keys and values `u64`.
//!
//! Commands and queries travel as a compact binary encoding ([`KvOp`]),
//! results as another ([`KvResult`]). Bytes that do not decode, or an op sent
//! the wrong way (a read proposed as a write, a write sent as a query), get a
//! [`KvResult::Error`]: a replica never panics on a client's bytes, and every
//! replica answers a bad command the same way, so the state stays the same
//! everywhere.
//!
//! Registers and lists are separate key spaces. The registers live in a
//! hash map (a read's lookup is the hot path of a read-heavy load: one
//! probe, where a `BTreeMap` of 10,000 keys walks four nodes, each a cache
//! miss), the lists in a `BTreeMap`; a snapshot (`on_snapshot_save`)
//! writes both in ascending key order, so replicas with the same state
//! write the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use super::state_machine::{apply_via_results, ApplyResults, Command, StateMachine};

/// Bound on the values one list holds; an append past it gets
/// [`KvError::ListFull`] (so a read of the list fits one client frame).
pub const LIST_VALUES_MAX: usize = 65_536;
/// Bound on the keys (registers and lists together) the store holds; a
/// write to a new key past it gets [`KvError::TooManyKeys`].
pub const KEYS_MAX: usize = 1_000_000;

/// The first bytes of a snapshot of a [`KvStore`] (format version 1).
const SNAPSHOT_MAGIC: &[u8; 8] = b"coraftK1";

const TAG_READ: u8 = 1;
const TAG_WRITE: u8 = 2;
const TAG_CAS: u8 = 3;
const TAG_APPEND: u8 = 4;
const TAG_READ_LIST: u8 = 5;
const TAG_INCREMENT: u8 = 6;

const RESULT_DONE: u8 = 1;
const RESULT_VALUE: u8 = 2;
const RESULT_CAS_MISMATCH: u8 = 3;
const RESULT_LIST: u8 = 4;
const RESULT_ERROR: u8 = 0xEE;

/// One operation on the store. Reads ([`KvOp::Read`], [`KvOp::ReadList`])
/// are queries (`on_query`, served at a linearizable read index); the rest
/// are commands proposed through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// Read a register.
    Read {
        /// The register.
        key: u64,
    },
    /// Set a register.
    Write {
        /// The register.
        key: u64,
        /// Its new value.
        value: u64,
    },
    /// Set a register to `new` if it holds `expected`.
    Cas {
        /// The register.
        key: u64,
        /// The value it must hold.
        expected: u64,
        /// Its new value.
        new: u64,
    },
    /// Append a value to a list.
    Append {
        /// The list.
        key: u64,
        /// The value appended.
        value: u64,
    },
    /// Read a whole list.
    ReadList {
        /// The list.
        key: u64,
    },
    /// Add one to a register (a counter; never written counts as 0) and
    /// return the count after it: a fetch-and-increment. [`KvOp::Read`]
    /// reads the count.
    Increment {
        /// The register.
        key: u64,
    },
}

/// Why an op was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The bytes are not an op (unknown tag, wrong length).
    Malformed,
    /// A read proposed as a command, or a write sent as a query.
    WrongPath,
    /// The list holds [`LIST_VALUES_MAX`] values.
    ListFull,
    /// The store holds [`KEYS_MAX`] keys.
    TooManyKeys,
}

impl KvError {
    fn code(self) -> u8 {
        match self {
            KvError::Malformed => 1,
            KvError::WrongPath => 2,
            KvError::ListFull => 3,
            KvError::TooManyKeys => 4,
        }
    }

    fn from_code(code: u8) -> Option<KvError> {
        Some(match code {
            1 => KvError::Malformed,
            2 => KvError::WrongPath,
            3 => KvError::ListFull,
            4 => KvError::TooManyKeys,
            _ => return None,
        })
    }
}

/// What an op returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResult {
    /// A write, an append or a compare-and-set that applied.
    Done,
    /// A register read: its value, `None` if never written.
    Value(Option<u64>),
    /// A compare-and-set that did not apply: the register held `current`.
    CasMismatch {
        /// What the register held (`None`: never written).
        current: Option<u64>,
    },
    /// A list read: its values in append order.
    List(Vec<u64>),
    /// The op was refused; nothing changed.
    Error(KvError),
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

impl KvOp {
    /// The op's bytes: a tag byte, then its `u64` fields little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.encode_into(&mut bytes);
        bytes
    }

    /// Appends [`KvOp::encode`]'s bytes to `bytes` (a client that reuses
    /// one buffer per request allocates nothing).
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        let (tag, fields): (u8, &[u64]) = match self {
            KvOp::Read { key } => (TAG_READ, &[*key]),
            KvOp::Write { key, value } => (TAG_WRITE, &[*key, *value]),
            KvOp::Cas { key, expected, new } => (TAG_CAS, &[*key, *expected, *new]),
            KvOp::Append { key, value } => (TAG_APPEND, &[*key, *value]),
            KvOp::ReadList { key } => (TAG_READ_LIST, &[*key]),
            KvOp::Increment { key } => (TAG_INCREMENT, &[*key]),
        };
        bytes.reserve(1 + 8 * fields.len());
        bytes.push(tag);
        for field in fields {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
    }

    /// Decodes [`KvOp::encode`]'s bytes; `None` for anything else (an
    /// unknown tag, a wrong length).
    pub fn decode(bytes: &[u8]) -> Option<KvOp> {
        let (&tag, _) = bytes.split_first()?;
        let fields = match tag {
            TAG_READ | TAG_READ_LIST | TAG_INCREMENT => 1,
            TAG_WRITE | TAG_APPEND => 2,
            TAG_CAS => 3,
            _ => return None,
        };
        if bytes.len() != 1 + 8 * fields {
            return None;
        }
        let key = u64_at(bytes, 1)?;
        Some(match tag {
            TAG_READ => KvOp::Read { key },
            TAG_READ_LIST => KvOp::ReadList { key },
            TAG_INCREMENT => KvOp::Increment { key },
            TAG_WRITE => KvOp::Write {
                key,
                value: u64_at(bytes, 9)?,
            },
            TAG_APPEND => KvOp::Append {
                key,
                value: u64_at(bytes, 9)?,
            },
            _ => KvOp::Cas {
                key,
                expected: u64_at(bytes, 9)?,
                new: u64_at(bytes, 17)?,
            },
        })
    }

    /// Whether the op only reads (a query) rather than changes the state.
    pub fn is_read(&self) -> bool {
        matches!(self, KvOp::Read { .. } | KvOp::ReadList { .. })
    }
}

fn push_option(bytes: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => {
            bytes.push(1);
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        None => bytes.push(0),
    }
}

fn option_at(bytes: &[u8]) -> Option<Option<u64>> {
    match bytes {
        [0] => Some(None),
        [1, rest @ ..] if rest.len() == 8 => Some(Some(u64_at(rest, 0)?)),
        _ => None,
    }
}

impl KvResult {
    /// The result's bytes: a tag byte, then its fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.encode_into(&mut bytes);
        bytes
    }

    /// Appends [`KvResult::encode`]'s bytes to `bytes`.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        match self {
            KvResult::Done => bytes.push(RESULT_DONE),
            KvResult::Value(value) => {
                bytes.push(RESULT_VALUE);
                push_option(bytes, *value);
            }
            KvResult::CasMismatch { current } => {
                bytes.push(RESULT_CAS_MISMATCH);
                push_option(bytes, *current);
            }
            KvResult::List(values) => {
                bytes.reserve(1 + 8 * values.len());
                bytes.push(RESULT_LIST);
                for value in values {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            }
            KvResult::Error(error) => {
                bytes.push(RESULT_ERROR);
                bytes.push(error.code());
            }
        }
    }

    /// Decodes [`KvResult::encode`]'s bytes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<KvResult> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            RESULT_DONE if rest.is_empty() => Some(KvResult::Done),
            RESULT_VALUE => Some(KvResult::Value(option_at(rest)?)),
            RESULT_CAS_MISMATCH => Some(KvResult::CasMismatch {
                current: option_at(rest)?,
            }),
            RESULT_LIST if rest.len() % 8 == 0 => Some(KvResult::List(
                rest.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
                    .collect(),
            )),
            RESULT_ERROR => match rest {
                [code] => KvError::from_code(*code).map(KvResult::Error),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The replicated key-value store: registers and lists keyed by `u64`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvStore {
    registers: HashMap<u64, u64>,
    lists: BTreeMap<u64, Vec<u64>>,
}

impl KvStore {
    /// Applies one command's bytes and returns its result (never panics).
    pub fn apply(&mut self, command: &[u8]) -> KvResult {
        let Some(op) = KvOp::decode(command) else {
            return KvResult::Error(KvError::Malformed);
        };
        let keys = self.registers.len() + self.lists.len();
        match op {
            KvOp::Read { .. } | KvOp::ReadList { .. } => KvResult::Error(KvError::WrongPath),
            KvOp::Write { key, value } => {
                if keys >= KEYS_MAX && !self.registers.contains_key(&key) {
                    return KvResult::Error(KvError::TooManyKeys);
                }
                self.registers.insert(key, value);
                KvResult::Done
            }
            KvOp::Increment { key } => {
                if keys >= KEYS_MAX && !self.registers.contains_key(&key) {
                    return KvResult::Error(KvError::TooManyKeys);
                }
                let count = self.registers.entry(key).or_insert(0);
                *count = count.wrapping_add(1);
                KvResult::Value(Some(*count))
            }
            KvOp::Cas { key, expected, new } => {
                let current = self.registers.get(&key).copied();
                if current != Some(expected) {
                    return KvResult::CasMismatch { current };
                }
                self.registers.insert(key, new);
                KvResult::Done
            }
            KvOp::Append { key, value } => {
                if keys >= KEYS_MAX && !self.lists.contains_key(&key) {
                    return KvResult::Error(KvError::TooManyKeys);
                }
                let list = self.lists.entry(key).or_default();
                if list.len() >= LIST_VALUES_MAX {
                    return KvResult::Error(KvError::ListFull);
                }
                list.push(value);
                KvResult::Done
            }
        }
    }

    /// Answers one query's bytes (never panics).
    pub fn query(&self, query: &[u8]) -> KvResult {
        match KvOp::decode(query) {
            None => KvResult::Error(KvError::Malformed),
            Some(KvOp::Read { key }) => KvResult::Value(self.registers.get(&key).copied()),
            Some(KvOp::ReadList { key }) => KvResult::List(self.lists.get(&key).cloned().unwrap_or_default()),
            Some(_) => KvResult::Error(KvError::WrongPath),
        }
    }

    /// Writes the whole state: magic, then the registers (count, then key
    /// and value each, in ascending key order), then the lists (count, then
    /// key, length, values, in ascending key order).
    pub fn save(&self, writer: &mut dyn Write) -> std::io::Result<()> {
        let mut registers: Vec<(u64, u64)> = self.registers.iter().map(|(&k, &v)| (k, v)).collect();
        registers.sort_unstable_by_key(|&(key, _)| key);
        let mut bytes = Vec::with_capacity(
            32 + 16 * self.registers.len() + self.lists.values().map(|l| 16 + 8 * l.len()).sum::<usize>(),
        );
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&(self.registers.len() as u64).to_le_bytes());
        for (key, value) in &registers {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&(self.lists.len() as u64).to_le_bytes());
        for (key, values) in &self.lists {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for value in values {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        writer.write_all(&bytes)
    }

    /// Replaces the state with one [`KvStore::save`] wrote; a snapshot that
    /// is not one (bad magic, counts past the bounds, trailing bytes) is an
    /// `InvalidData` error and leaves the state as it was.
    pub fn load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("kv snapshot: {what}"));
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(invalid("bad magic"));
        }
        let mut next = || -> std::io::Result<u64> {
            let mut word = [0u8; 8];
            reader.read_exact(&mut word)?;
            Ok(u64::from_le_bytes(word))
        };
        let mut registers = HashMap::new();
        let register_count = next()?;
        if register_count > KEYS_MAX as u64 {
            return Err(invalid("more registers than KEYS_MAX"));
        }
        for _ in 0..register_count {
            let key = next()?;
            registers.insert(key, next()?);
        }
        let mut lists = BTreeMap::new();
        let list_count = next()?;
        if register_count + list_count > KEYS_MAX as u64 {
            return Err(invalid("more keys than KEYS_MAX"));
        }
        for _ in 0..list_count {
            let key = next()?;
            let length = next()?;
            if length > LIST_VALUES_MAX as u64 {
                return Err(invalid("a list longer than LIST_VALUES_MAX"));
            }
            let values = (0..length).map(|_| next()).collect::<std::io::Result<Vec<u64>>>()?;
            lists.insert(key, values);
        }
        let mut trailing = [0u8; 1];
        if reader.read(&mut trailing)? != 0 {
            return Err(invalid("trailing bytes"));
        }
        self.registers = registers;
        self.lists = lists;
        Ok(())
    }
}

impl StateMachine for KvStore {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        apply_via_results(self, commands)
    }

    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        for command in commands {
            let result = self.apply(command.data);
            if let Err(refused) = out.push_with(|bytes| result.encode_into(bytes)) {
                // A list is bounded by LIST_VALUES_MAX, far below the bound.
                log::warn!("kv: the result at index {} was refused: {refused}", command.index);
            }
        }
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.query(query).encode()
    }

    fn on_query_into(&self, query: &[u8], out: &mut Vec<u8>) {
        self.query(query).encode_into(out)
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        self.save(writer)
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        self.load(reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(store: &mut KvStore, op: KvOp) -> KvResult {
        store.apply(&op.encode())
    }

    fn read(store: &KvStore, key: u64) -> KvResult {
        store.query(&KvOp::Read { key }.encode())
    }

    #[test]
    fn an_increment_returns_the_count_after_it_and_a_read_sees_it() {
        let mut store = KvStore::default();
        let increment = KvOp::Increment { key: 3 };
        assert_eq!(KvOp::decode(&increment.encode()), Some(increment));
        assert_eq!(apply(&mut store, increment), KvResult::Value(Some(1)));
        assert_eq!(apply(&mut store, increment), KvResult::Value(Some(2)));
        assert_eq!(read(&store, 3), KvResult::Value(Some(2)));
        assert_eq!(store.query(&increment.encode()), KvResult::Error(KvError::WrongPath));
    }

    #[test]
    fn registers_read_write_and_compare_and_set() {
        let mut store = KvStore::default();
        assert_eq!(read(&store, 7), KvResult::Value(None));
        assert_eq!(apply(&mut store, KvOp::Write { key: 7, value: 1 }), KvResult::Done);
        assert_eq!(read(&store, 7), KvResult::Value(Some(1)));
        let cas = KvOp::Cas {
            key: 7,
            expected: 2,
            new: 3,
        };
        assert_eq!(apply(&mut store, cas), KvResult::CasMismatch { current: Some(1) });
        assert_eq!(read(&store, 7), KvResult::Value(Some(1)));
        let cas = KvOp::Cas {
            key: 7,
            expected: 1,
            new: 3,
        };
        assert_eq!(apply(&mut store, cas), KvResult::Done);
        assert_eq!(read(&store, 7), KvResult::Value(Some(3)));
        let never_written = KvOp::Cas {
            key: 8,
            expected: 0,
            new: 1,
        };
        assert_eq!(
            apply(&mut store, never_written),
            KvResult::CasMismatch { current: None }
        );
        assert_eq!(read(&store, 8), KvResult::Value(None));
    }

    #[test]
    fn lists_keep_appends_in_order_apart_from_registers() {
        let mut store = KvStore::default();
        for value in [5, 3, 9] {
            assert_eq!(apply(&mut store, KvOp::Append { key: 1, value }), KvResult::Done);
        }
        assert_eq!(
            store.query(&KvOp::ReadList { key: 1 }.encode()),
            KvResult::List(vec![5, 3, 9])
        );
        assert_eq!(store.query(&KvOp::ReadList { key: 2 }.encode()), KvResult::List(vec![]));
        assert_eq!(read(&store, 1), KvResult::Value(None));
    }

    #[test]
    fn a_full_list_refuses_appends() {
        let mut store = KvStore::default();
        store.lists.insert(1, vec![0; LIST_VALUES_MAX]);
        assert_eq!(
            apply(&mut store, KvOp::Append { key: 1, value: 1 }),
            KvResult::Error(KvError::ListFull)
        );
        assert_eq!(store.lists[&1].len(), LIST_VALUES_MAX);
    }

    #[test]
    fn malformed_or_misrouted_bytes_get_an_error_and_change_nothing() {
        let mut store = KvStore::default();
        apply(&mut store, KvOp::Write { key: 1, value: 1 });
        let before = store.clone();
        let write = KvOp::Write { key: 1, value: 2 }.encode();
        for bad in [&[][..], &[0xFF][..], &write[..write.len() - 1], &[TAG_READ, 1, 2]] {
            assert_eq!(store.apply(bad), KvResult::Error(KvError::Malformed), "{bad:?}");
            assert_eq!(store.query(bad), KvResult::Error(KvError::Malformed), "{bad:?}");
        }
        let mut long = write.clone();
        long.push(0);
        assert_eq!(store.apply(&long), KvResult::Error(KvError::Malformed));
        assert_eq!(
            apply(&mut store, KvOp::Read { key: 1 }),
            KvResult::Error(KvError::WrongPath)
        );
        assert_eq!(store.query(&write), KvResult::Error(KvError::WrongPath));
        assert_eq!(store, before);
    }

    #[test]
    fn ops_and_results_round_trip_and_garbage_does_not_decode() {
        let ops = [
            KvOp::Read { key: u64::MAX },
            KvOp::Write { key: 1, value: 2 },
            KvOp::Cas {
                key: 3,
                expected: 4,
                new: 5,
            },
            KvOp::Append { key: 6, value: 7 },
            KvOp::ReadList { key: 8 },
        ];
        for op in ops {
            assert_eq!(KvOp::decode(&op.encode()), Some(op));
        }
        let results = [
            KvResult::Done,
            KvResult::Value(None),
            KvResult::Value(Some(9)),
            KvResult::CasMismatch { current: Some(1) },
            KvResult::CasMismatch { current: None },
            KvResult::List(vec![]),
            KvResult::List(vec![1, 2, 3]),
            KvResult::Error(KvError::Malformed),
            KvResult::Error(KvError::TooManyKeys),
        ];
        for result in results {
            assert_eq!(KvResult::decode(&result.encode()), Some(result));
        }
        for garbage in [
            &[][..],
            &[RESULT_VALUE, 2][..],
            &[RESULT_LIST, 1, 2][..],
            &[RESULT_ERROR, 99][..],
        ] {
            assert_eq!(KvResult::decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn snapshot_save_then_load_restores_the_whole_state() {
        let mut store = KvStore::default();
        apply(&mut store, KvOp::Write { key: 1, value: 10 });
        apply(&mut store, KvOp::Write { key: 2, value: 20 });
        apply(&mut store, KvOp::Append { key: 1, value: 5 });
        apply(&mut store, KvOp::Append { key: 1, value: 6 });
        let mut bytes = Vec::new();
        store.save(&mut bytes).unwrap();
        let mut restored = KvStore::default();
        apply(&mut restored, KvOp::Write { key: 99, value: 1 });
        restored.load(&mut &bytes[..]).unwrap();
        assert_eq!(restored, store);
    }

    #[test]
    fn a_snapshot_writes_the_registers_in_key_order_whatever_the_order_of_the_writes() {
        let keys: Vec<u64> = (0..1000).map(|i| (i * 7919) % 1009).collect();
        let mut forward = KvStore::default();
        for &key in &keys {
            apply(&mut forward, KvOp::Write { key, value: key + 1 });
        }
        let mut backward = KvStore::default();
        for &key in keys.iter().rev() {
            apply(&mut backward, KvOp::Write { key, value: key + 1 });
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        forward.save(&mut a).unwrap();
        backward.save(&mut b).unwrap();
        assert_eq!(a, b, "the same state writes the same bytes");
        let mut expected = SNAPSHOT_MAGIC.to_vec();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
        for key in sorted {
            expected.extend_from_slice(&key.to_le_bytes());
            expected.extend_from_slice(&(key + 1).to_le_bytes());
        }
        expected.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(a, expected, "registers in ascending key order, then no lists");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_leaves_the_state() {
        let mut store = KvStore::default();
        apply(&mut store, KvOp::Write { key: 1, value: 10 });
        let mut bytes = Vec::new();
        store.save(&mut bytes).unwrap();
        let mut target = KvStore::default();
        apply(&mut target, KvOp::Write { key: 5, value: 5 });
        let before = target.clone();
        let mut bad_magic = bytes.clone();
        bad_magic[0] ^= 1;
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut huge_count = bytes.clone();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        for bad in [bad_magic, trailing, huge_count, bytes[..bytes.len() - 1].to_vec()] {
            assert!(target.load(&mut &bad[..]).is_err());
            assert_eq!(target, before);
        }
    }
}
