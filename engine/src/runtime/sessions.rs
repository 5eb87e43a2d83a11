//! The client sessions of one group (Raft thesis §6.3): replicated state that
//! lets a retried write apply at most once and answers every request the
//! group cannot vouch for with a typed error instead of a guessed `Ok`.
//!
//! Sits in the apply path: `Group::apply` asks this table about each
//! committed client command before the state machine sees it, and records
//! the state machine's result after. Every replica feeds it the same entries
//! in the same order, and every decision depends only on those entries
//! (time included: the leader stamps its wall clock into each entry), so all
//! replicas keep the same table and expire a session at the same log index.
//! `encode`/`decode` give the table's bytes for a snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// Results one session keeps for retries; a session with more unanswered
/// writes forgets its oldest (their retries get `StaleSequence`).
pub const SESSION_RESULTS_MAX: usize = 64;
/// Sessions one group keeps; registering one more evicts the least recently
/// active (its next write gets `SessionExpired`).
pub const SESSIONS_PER_GROUP_MAX: usize = 16_384;
/// Default of `NodeOptions::session_timeout`, in milliseconds (10 minutes):
/// a session with no write for this long (in leader time) expires.
pub const SESSION_TIMEOUT_DEFAULT_MS: u64 = 10 * 60 * 1000;

/// A session's id: 128 random bits the client made.
pub type SessionId = u128;

/// Why the table refused a client command (it is not applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    /// The session is unknown: never registered, expired or evicted.
    #[error("the session expired or is unknown")]
    Expired,
    /// The sequence is older than the session remembers, or was used for
    /// another command.
    #[error("the session cannot vouch for this sequence")]
    StaleSequence,
}

/// What to do with a client command the table accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Never applied: apply it, then [`SessionTable::record`] its result.
    Fresh,
    /// Already applied: answer with this result, do not apply again.
    Duplicate(Vec<u8>),
}

/// A result kept for retries, with the checksum of the command that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedResult {
    command_crc: u32,
    result: CachedBytes,
}

/// Result bytes a session keeps up to this size in place, without an
/// allocation of their own (most results are a few bytes).
const CACHED_INLINE_BYTES_MAX: usize = 22;

/// A kept result's bytes: short ones in place, longer ones on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CachedBytes {
    /// The first `len` bytes (the rest are zero).
    Inline {
        len: u8,
        bytes: [u8; CACHED_INLINE_BYTES_MAX],
    },
    Heap(Box<[u8]>),
}

impl CachedBytes {
    fn new(result: &[u8]) -> CachedBytes {
        if result.len() <= CACHED_INLINE_BYTES_MAX {
            let mut bytes = [0; CACHED_INLINE_BYTES_MAX];
            bytes[..result.len()].copy_from_slice(result);
            CachedBytes::Inline {
                len: result.len() as u8,
                bytes,
            }
        } else {
            CachedBytes::Heap(result.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            CachedBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            CachedBytes::Heap(bytes) => bytes,
        }
    }
}

/// How the session table hashes session ids: one multiply of the id's
/// halves, each mixed with a key drawn per table (as std's `RandomState`
/// draws its keys), where SipHash took about 60 instructions per lookup and
/// a write makes three lookups. Ids are made by clients, so the keys are
/// secret: a client cannot choose ids that collide in the table. Nothing
/// iterates the table in hash order where order could change a decision
/// (`encode` sorts by id), so replicas may hash differently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionIdHashing {
    keys: [u64; 2],
}

impl Default for SessionIdHashing {
    fn default() -> SessionIdHashing {
        let random = std::collections::hash_map::RandomState::new();
        SessionIdHashing {
            keys: [random.hash_one(0u8), random.hash_one(1u8) | 1],
        }
    }
}

impl BuildHasher for SessionIdHashing {
    type Hasher = SessionIdHasher;

    fn build_hasher(&self) -> SessionIdHasher {
        SessionIdHasher {
            keys: self.keys,
            hash: 0,
        }
    }
}

/// The hasher of [`SessionIdHashing`].
pub(crate) struct SessionIdHasher {
    keys: [u64; 2],
    hash: u64,
}

/// The two halves of the full product of `a` and `b`, folded.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hasher for SessionIdHasher {
    fn write_u128(&mut self, id: u128) {
        let low = (id as u64) ^ self.keys[0];
        let high = ((id >> 64) as u64) ^ self.keys[1];
        self.hash = folded_multiply(low ^ self.hash, high);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for session ids (`write_u128`), but correct for anything.
        for chunk in bytes.chunks(16) {
            let mut word = [0u8; 16];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(word) ^ chunk.len() as u128);
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Room [`CachedResults`] keeps however few results it holds; above it,
/// room beyond four times the results is given back.
const CACHED_RESULTS_RETAINED: usize = 8;

/// A session's kept results in rising sequence order: the newest in the
/// session itself, the older ones in a ring. A client that waits for each
/// answer (one write in flight) holds one result at a time, so its write
/// replaces the result kept in place and never touches the ring's memory:
/// the table's lookup already brought it to the cache, where the ring was
/// another line to fetch (docs/journal/benchmarks.md, "the last 1 % cuts").
/// Sequences are recorded rising and forgotten from the oldest, so the ring
/// is popped at the front and pushed at the back, keeping its room, where a
/// `BTreeMap` walked and rebalanced its nodes at every write (the session
/// table's largest cost in apply; "issue 17: what applying costs").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CachedResults {
    /// All but the newest, in rising sequence order (empty while `newest` is).
    ring: VecDeque<(u64, CachedResult)>,
    /// The result of the highest sequence kept.
    newest: Option<(u64, CachedResult)>,
}

impl CachedResults {
    fn get(&self, sequence: u64) -> Option<&CachedResult> {
        match &self.newest {
            // A fresh command's sequence is past the last one recorded.
            None => None,
            Some((last, _)) if *last < sequence => None,
            Some((last, cached)) if *last == sequence => Some(cached),
            Some(_) => {
                let at = self.ring.binary_search_by_key(&sequence, |(kept, _)| *kept).ok()?;
                Some(&self.ring[at].1)
            }
        }
    }

    fn first_sequence(&self) -> Option<u64> {
        self.ring
            .front()
            .or(self.newest.as_ref())
            .map(|(sequence, _)| *sequence)
    }

    /// Forgets the oldest result, giving back room far beyond what is held.
    fn pop_first(&mut self) -> Option<(u64, CachedResult)> {
        let Some(first) = self.ring.pop_front() else {
            return self.newest.take();
        };
        let capacity = self.ring.capacity();
        if capacity > CACHED_RESULTS_RETAINED && capacity > 4 * self.ring.len() {
            self.ring.shrink_to(CACHED_RESULTS_RETAINED.max(2 * self.ring.len()));
        }
        Some(first)
    }

    /// Keeps `cached` for `sequence` (in its place; replacing one kept for
    /// the same sequence, as a map would).
    fn insert(&mut self, sequence: u64, cached: CachedResult) {
        match &mut self.newest {
            None => self.newest = Some((sequence, cached)),
            Some((last, kept)) if *last == sequence => *kept = cached,
            Some((last, _)) if *last < sequence => {
                let older = self.newest.replace((sequence, cached)).expect("matched");
                self.ring.push_back(older);
            }
            Some(_) => match self.ring.binary_search_by_key(&sequence, |(kept, _)| *kept) {
                Ok(at) => self.ring[at].1 = cached,
                Err(at) => self.ring.insert(at, (sequence, cached)),
            },
        }
    }

    fn len(&self) -> usize {
        self.ring.len() + usize::from(self.newest.is_some())
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, CachedResult)> {
        self.ring.iter().chain(self.newest.iter())
    }
}

/// A set of session ids, hashed as the table hashes them.
pub(crate) type SessionIdSet = HashSet<SessionId, SessionIdHashing>;

/// One session.
#[derive(Debug, Clone)]
struct Session {
    timeout_ms: u64,
    last_active_ms: u64,
    /// Where it is filed in `by_activity`: its activity when it was last
    /// filed, at most `last_active_ms` (see [`SessionTable::least_recently_active`]).
    filed_ms: u64,
    /// Every applied sequence below this is forgotten; every applied one at
    /// or above it is in `results`.
    lowest_unanswered: u64,
    results: CachedResults,
}

/// Where a session is filed is bookkeeping, not its state.
impl PartialEq for Session {
    fn eq(&self, other: &Session) -> bool {
        self.timeout_ms == other.timeout_ms
            && self.last_active_ms == other.last_active_ms
            && self.lowest_unanswered == other.lowest_unanswered
            && self.results == other.results
    }
}

impl Eq for Session {}

/// The sessions of one group.
#[derive(Debug, Clone)]
pub struct SessionTable {
    sessions: HashMap<SessionId, Session, SessionIdHashing>,
    /// `(filed_ms, id)` of every session. A write only moves its session's
    /// `last_active_ms`; the session is filed again where it belongs when
    /// it reaches the front (`least_recently_active`), so the front is
    /// always found in `(last_active_ms, id)` order, as if every write had
    /// filed it again, without a remove and an insert per write.
    by_activity: BTreeSet<(u64, SessionId)>,
    /// The latest leader time seen in the log (never goes back).
    clock_ms: u64,
    /// At or below every filing in `by_activity` (lowered at each filing,
    /// set to the front's filing when `advance_clock` looks there): while
    /// the clock is within the shortest timeout of it, `advance_clock` need
    /// not look at `by_activity` at all.
    filed_floor_ms: u64,
    /// No session held has a timeout shorter than this (the shortest ever
    /// registered here): while the oldest filing is younger than it, no
    /// session can have expired and `advance_clock` looks no further.
    timeout_floor_ms: u64,
}

impl Default for SessionTable {
    fn default() -> SessionTable {
        SessionTable {
            sessions: HashMap::default(),
            by_activity: BTreeSet::new(),
            clock_ms: 0,
            filed_floor_ms: u64::MAX,
            timeout_floor_ms: u64::MAX,
        }
    }
}

/// Two tables are equal when they hold the same sessions at the same clock
/// (how their index is filed is bookkeeping).
impl PartialEq for SessionTable {
    fn eq(&self, other: &SessionTable) -> bool {
        self.clock_ms == other.clock_ms && self.sessions == other.sessions
    }
}

impl Eq for SessionTable {}

impl SessionTable {
    /// The group's clock: the latest leader time its log carried.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Moves the clock to the leader time stamped in the next entry (never
    /// back: a new leader's clock may be behind) and drops the sessions idle
    /// longer than their timeout, least recently active first.
    pub fn advance_clock(&mut self, leader_time_ms: u64) {
        self.clock_ms = self.clock_ms.max(leader_time_ms);
        // Every filing is at or after the floor: within the shortest
        // timeout of it, none has expired (the check below would say so).
        if self.clock_ms.saturating_sub(self.filed_floor_ms) <= self.timeout_floor_ms {
            return;
        }
        // Every session was active at or after the oldest filing: while
        // that is within the shortest timeout, none has expired (the loop
        // below would stop at its first session).
        let oldest_filed = self.by_activity.first().map(|&(filed, _)| filed);
        self.filed_floor_ms = oldest_filed.unwrap_or(u64::MAX);
        if oldest_filed.is_none_or(|filed| self.clock_ms.saturating_sub(filed) <= self.timeout_floor_ms) {
            return;
        }
        while let Some(id) = self.least_recently_active() {
            if !is_expired(self.clock_ms, &self.sessions[&id]) {
                break;
            }
            self.remove(id);
        }
    }

    /// The least recently active session, ties by id: files again the
    /// sessions at the front whose filing is older than their activity
    /// until the front one's is not. Then every other session's activity is
    /// at or after its filing, which is at or after the front's.
    fn least_recently_active(&mut self) -> Option<SessionId> {
        loop {
            let &(filed_ms, id) = self.by_activity.first()?;
            let session = self.sessions.get_mut(&id).expect("indexed sessions are held");
            if filed_ms == session.last_active_ms {
                return Some(id);
            }
            self.by_activity.pop_first();
            session.filed_ms = session.last_active_ms;
            self.filed_floor_ms = self.filed_floor_ms.min(session.last_active_ms);
            self.by_activity.insert((session.last_active_ms, id));
        }
    }

    /// Registers a session (again: a retried registration only refreshes
    /// it), evicting the least recently active one beyond
    /// [`SESSIONS_PER_GROUP_MAX`].
    pub fn register(&mut self, id: SessionId, timeout_ms: u64) {
        let clock_ms = self.clock_ms;
        self.timeout_floor_ms = self.timeout_floor_ms.min(timeout_ms);
        if self
            .sessions
            .get(&id)
            .is_some_and(|session| is_expired(clock_ms, session))
        {
            self.remove(id);
        }
        if let Some(session) = self.sessions.get_mut(&id) {
            session.timeout_ms = timeout_ms;
            session.last_active_ms = clock_ms;
            return;
        }
        while self.sessions.len() >= SESSIONS_PER_GROUP_MAX {
            let oldest = self.least_recently_active().expect("sessions are indexed");
            self.remove(oldest);
        }
        let session = Session {
            timeout_ms,
            last_active_ms: self.clock_ms,
            filed_ms: self.clock_ms,
            lowest_unanswered: 0,
            results: CachedResults::default(),
        };
        self.sessions.insert(id, session);
        self.filed_floor_ms = self.filed_floor_ms.min(self.clock_ms);
        self.by_activity.insert((self.clock_ms, id));
    }

    /// Decides about command `sequence` of session `id`, whose bytes have
    /// the CRC32 `command_crc`.
    pub fn admit(&mut self, id: SessionId, sequence: u64, command_crc: u32) -> Result<Admission, SessionRefusal> {
        let clock_ms = self.clock_ms;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(SessionRefusal::Expired);
        };
        if is_expired(clock_ms, session) {
            self.remove(id);
            return Err(SessionRefusal::Expired);
        }
        let decision = match session.results.get(sequence) {
            // The same command again: its original result.
            Some(cached) if cached.command_crc == command_crc => {
                Ok(Admission::Duplicate(cached.result.as_slice().to_vec()))
            }
            // Another command under a sequence already used: not ours to answer.
            Some(_) => Err(SessionRefusal::StaleSequence),
            // Applied once and forgotten, or never applied: we cannot tell.
            None if sequence < session.lowest_unanswered => Err(SessionRefusal::StaleSequence),
            None => Ok(Admission::Fresh),
        };
        // Filed again only when it reaches the front of `by_activity`.
        session.last_active_ms = clock_ms;
        decision
    }

    /// Keeps the result of a fresh command for its retries and forgets the
    /// results below `lowest_unanswered` (the client has them).
    pub fn record(&mut self, id: SessionId, sequence: u64, lowest_unanswered: u64, command_crc: u32, result: &[u8]) {
        // Expired or evicted since it was admitted: nobody can retry it.
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        // The command itself is unanswered, whatever the client claims.
        let forget_below = lowest_unanswered.min(sequence);
        if forget_below > session.lowest_unanswered {
            // Usually one or two results go, from the front.
            while session.results.first_sequence().is_some_and(|kept| kept < forget_below) {
                session.results.pop_first();
            }
            session.lowest_unanswered = forget_below;
        }
        let cached = CachedResult {
            command_crc,
            result: CachedBytes::new(result),
        };
        session.results.insert(sequence, cached);
        while session.results.len() > SESSION_RESULTS_MAX {
            let (oldest, _) = session.results.pop_first().expect("over the bound");
            session.lowest_unanswered = session.lowest_unanswered.max(oldest + 1);
        }
    }

    fn remove(&mut self, id: SessionId) {
        if let Some(session) = self.sessions.remove(&id) {
            self.by_activity.remove(&(session.filed_ms, id));
        }
    }

    /// The table as bytes (for a snapshot): the same table gives the same
    /// bytes on every replica (sessions in id order).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(TABLE_FORMAT);
        out.extend_from_slice(&self.clock_ms.to_le_bytes());
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        let ordered: BTreeMap<&SessionId, &Session> = self.sessions.iter().collect();
        for (id, session) in ordered {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&session.timeout_ms.to_le_bytes());
            out.extend_from_slice(&session.last_active_ms.to_le_bytes());
            out.extend_from_slice(&session.lowest_unanswered.to_le_bytes());
            out.extend_from_slice(&(session.results.len() as u32).to_le_bytes());
            for (sequence, cached) in session.results.iter() {
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&cached.command_crc.to_le_bytes());
                let result = cached.result.as_slice();
                out.extend_from_slice(&(result.len() as u32).to_le_bytes());
                out.extend_from_slice(result);
            }
        }
        out
    }

    /// Reads a table written by [`SessionTable::encode`]; untrusted bytes
    /// give an error naming what is wrong and where, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<SessionTable, SessionTableError> {
        let mut reader = Reader { bytes, offset: 0 };
        let format = reader.take::<1>("format")?[0];
        if format != TABLE_FORMAT {
            return Err(SessionTableError::Format(format));
        }
        let clock_ms = reader.u64("clock")?;
        let count = reader.u32("session count")? as usize;
        if count > SESSIONS_PER_GROUP_MAX {
            return Err(SessionTableError::TooMany {
                what: "sessions",
                count,
                bound: SESSIONS_PER_GROUP_MAX,
            });
        }
        let mut table = SessionTable {
            clock_ms,
            ..SessionTable::default()
        };
        for _ in 0..count {
            let id = u128::from_le_bytes(reader.take::<16>("session id")?);
            let timeout_ms = reader.u64("session timeout")?;
            let last_active_ms = reader.u64("last activity")?;
            let lowest_unanswered = reader.u64("lowest unanswered")?;
            let result_count = reader.u32("result count")? as usize;
            if result_count > SESSION_RESULTS_MAX {
                return Err(SessionTableError::TooMany {
                    what: "results of a session",
                    count: result_count,
                    bound: SESSION_RESULTS_MAX,
                });
            }
            let mut results = CachedResults::default();
            for _ in 0..result_count {
                let sequence = reader.u64("sequence")?;
                let command_crc = reader.u32("command checksum")?;
                let length = reader.u32("result length")? as usize;
                let result = CachedBytes::new(reader.slice(length, "result")?);
                results.insert(sequence, CachedResult { command_crc, result });
            }
            let session = Session {
                timeout_ms,
                last_active_ms,
                filed_ms: last_active_ms,
                lowest_unanswered,
                results,
            };
            if table.sessions.insert(id, session).is_some() {
                return Err(SessionTableError::DuplicateSession { offset: reader.offset });
            }
            table.timeout_floor_ms = table.timeout_floor_ms.min(timeout_ms);
            table.filed_floor_ms = table.filed_floor_ms.min(last_active_ms);
            table.by_activity.insert((last_active_ms, id));
        }
        if reader.offset != bytes.len() {
            return Err(SessionTableError::TrailingBytes { offset: reader.offset });
        }
        Ok(table)
    }
}

/// Whether `session` has been idle longer than its timeout at `clock_ms`.
fn is_expired(clock_ms: u64, session: &Session) -> bool {
    clock_ms.saturating_sub(session.last_active_ms) > session.timeout_ms
}

/// The first byte of an encoded table.
const TABLE_FORMAT: u8 = 1;

/// Why bytes are not a session table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTableError {
    /// The bytes end inside a field.
    #[error("session table truncated in the {field} at byte {offset}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// A format this version does not read.
    #[error("unknown session table format {0}")]
    Format(u8),
    /// More items than the bound allows.
    #[error("{count} {what} exceed the bound of {bound}")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// How many the bytes claim.
        count: usize,
        /// The bound.
        bound: usize,
    },
    /// A session id appears twice.
    #[error("a session appears twice (ending at byte {offset})")]
    DuplicateSession {
        /// Where the second copy ends.
        offset: usize,
    },
    /// Bytes after the last session.
    #[error("unexpected bytes after the table at byte {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, length: usize, field: &'static str) -> Result<&'a [u8], SessionTableError> {
        let truncated = SessionTableError::Truncated {
            field,
            offset: self.offset,
        };
        let end = self.offset.checked_add(length).ok_or(truncated.clone())?;
        let slice = self.bytes.get(self.offset..end).ok_or(truncated)?;
        self.offset = end;
        Ok(slice)
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SessionTableError> {
        Ok(self.slice(N, field)?.try_into().expect("N bytes"))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SessionTableError> {
        Ok(u64::from_le_bytes(self.take::<8>(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SessionTableError> {
        Ok(u32::from_le_bytes(self.take::<4>(field)?))
    }
}

/// This node's wall clock in milliseconds since the Unix epoch: what a leader
/// stamps into the entries it appends (0 if the clock is before 1970).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_MS: u64 = 60_000;

    fn applied(table: &mut SessionTable, id: SessionId, sequence: u64, lowest: u64, command: &[u8]) -> Vec<u8> {
        let crc = crc32fast::hash(command);
        assert_eq!(table.admit(id, sequence, crc), Ok(Admission::Fresh));
        let result = [command, &sequence.to_le_bytes()].concat();
        table.record(id, sequence, lowest, crc, &result);
        result
    }

    #[test]
    fn kept_results_answer_as_a_map_by_sequence_would_whatever_the_order() {
        // Sequences mostly rising, some out of order and some repeated (a
        // retry of a later write committed first); the ring must keep
        // them sorted and answer each lookup as an ordered map does.
        let mut ring = CachedResults::default();
        let mut model = BTreeMap::new();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for step in 0..20_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let sequence = (step / 2).saturating_sub(state % 6);
            let cached = CachedResult {
                command_crc: state as u32,
                result: CachedBytes::new(&state.to_le_bytes()[..(state % 9) as usize]),
            };
            ring.insert(sequence, cached.clone());
            model.insert(sequence, cached);
            while model.len() > 1 + (state % 5) as usize {
                assert_eq!(ring.pop_first(), model.pop_first());
            }
            assert_eq!(ring.len(), model.len());
            assert_eq!(ring.first_sequence(), model.keys().next().copied());
            for probe in sequence.saturating_sub(4)..sequence + 2 {
                assert_eq!(ring.get(probe), model.get(&probe), "sequence {probe} at step {step}");
            }
            let kept: Vec<_> = ring
                .iter()
                .map(|(sequence, cached)| (*sequence, cached.clone()))
                .collect();
            assert_eq!(kept, model.iter().map(|(s, c)| (*s, c.clone())).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_session_gives_back_the_room_of_results_it_forgot() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        for sequence in 1..=SESSION_RESULTS_MAX as u64 {
            applied(&mut table, 7, sequence, 1, b"x");
        }
        let grown = table.sessions[&7].results.ring.capacity();
        assert!(grown >= SESSION_RESULTS_MAX, "{grown}");
        // The client catches up: one result kept from now on.
        for sequence in SESSION_RESULTS_MAX as u64 + 1..SESSION_RESULTS_MAX as u64 + 8 {
            applied(&mut table, 7, sequence, sequence, b"x");
        }
        assert_eq!(table.sessions[&7].results.len(), 1);
        assert!(table.sessions[&7].results.ring.capacity() <= CACHED_RESULTS_RETAINED * 2);
    }

    #[test]
    fn unknown_session_is_refused_as_expired() {
        let mut table = SessionTable::default();
        assert_eq!(table.admit(7, 1, 0), Err(SessionRefusal::Expired));
    }

    #[test]
    fn retried_command_gets_its_original_result_and_is_not_applied_again() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        let result = applied(&mut table, 7, 1, 1, b"add");
        assert_eq!(
            table.admit(7, 1, crc32fast::hash(b"add")),
            Ok(Admission::Duplicate(result))
        );
    }

    #[test]
    fn another_command_under_a_used_sequence_is_stale_not_answered_with_its_result() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        applied(&mut table, 7, 1, 1, b"first client's write");
        assert_eq!(
            table.admit(7, 1, crc32fast::hash(b"second client's write")),
            Err(SessionRefusal::StaleSequence)
        );
    }

    #[test]
    fn results_below_lowest_unanswered_are_forgotten_and_their_retries_are_stale() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        applied(&mut table, 7, 1, 1, b"a");
        applied(&mut table, 7, 2, 2, b"b");
        assert_eq!(
            table.admit(7, 1, crc32fast::hash(b"a")),
            Err(SessionRefusal::StaleSequence)
        );
        assert!(matches!(
            table.admit(7, 2, crc32fast::hash(b"b")),
            Ok(Admission::Duplicate(_))
        ));
    }

    #[test]
    fn a_session_keeps_at_most_its_bound_of_results() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        let total = SESSION_RESULTS_MAX as u64 + 5;
        for sequence in 1..=total {
            // The client claims nothing answered: only the bound forgets.
            applied(&mut table, 7, sequence, 1, b"x");
        }
        assert_eq!(table.sessions[&7].results.len(), SESSION_RESULTS_MAX);
        assert_eq!(
            table.admit(7, 5, crc32fast::hash(b"x")),
            Err(SessionRefusal::StaleSequence)
        );
        assert!(matches!(
            table.admit(7, 6, crc32fast::hash(b"x")),
            Ok(Admission::Duplicate(_))
        ));
    }

    #[test]
    fn a_session_idle_past_its_timeout_in_leader_time_expires() {
        let mut table = SessionTable::default();
        table.advance_clock(1_000);
        table.register(7, MINUTE_MS);
        table.register(8, MINUTE_MS);
        table.advance_clock(1_000 + MINUTE_MS / 2);
        applied(&mut table, 8, 1, 1, b"keeps 8 alive");
        table.advance_clock(1_000 + MINUTE_MS + 1);
        assert_eq!(table.admit(7, 1, 0), Err(SessionRefusal::Expired));
        assert_eq!(table.admit(8, 2, 0), Ok(Admission::Fresh));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn each_session_expires_at_the_first_clock_past_its_timeout_after_refiling_and_decoding() {
        // The clock check skips `by_activity` while within the shortest
        // timeout of a floor under every filing; the floor must never let
        // an expiry through late, nor make one early.
        let second = 1_000;
        let mut table = SessionTable::default();
        table.register(1, MINUTE_MS);
        table.advance_clock(30 * second);
        table.register(2, MINUTE_MS);
        table.advance_clock(50 * second);
        assert_eq!(table.admit(1, 1, 0), Ok(Admission::Fresh));
        for clock in [61 * second, 90 * second] {
            table.advance_clock(clock);
            assert_eq!(table.len(), 2, "at {clock} ms");
        }
        let mut copy = SessionTable::decode(&table.encode()).expect("decodes");
        for table in [&mut table, &mut copy] {
            table.advance_clock(90 * second + 1);
            assert_eq!(table.len(), 1, "2 idle past its minute");
            assert_eq!(table.admit(2, 1, 0), Err(SessionRefusal::Expired));
            table.advance_clock(110 * second);
            assert_eq!(table.len(), 1, "1 was active at 50 s");
            table.advance_clock(110 * second + 1);
            assert!(table.is_empty(), "1 idle past its minute");
            // A session registered later with a shorter timeout.
            table.register(3, 10 * second);
            table.advance_clock(120 * second + 1);
            assert_eq!(table.len(), 1, "3 at exactly its timeout");
            table.advance_clock(120 * second + 2);
            assert!(table.is_empty(), "3 idle past its 10 s");
        }
    }

    #[test]
    fn the_clock_never_goes_back_when_a_new_leader_is_behind() {
        let mut table = SessionTable::default();
        table.advance_clock(5 * MINUTE_MS);
        table.register(7, MINUTE_MS);
        table.advance_clock(MINUTE_MS);
        assert_eq!(table.clock_ms(), 5 * MINUTE_MS);
        table.advance_clock(6 * MINUTE_MS + 1);
        assert_eq!(table.admit(7, 1, 0), Err(SessionRefusal::Expired));
    }

    #[test]
    fn registering_beyond_the_bound_evicts_the_least_recently_active() {
        let mut table = SessionTable::default();
        for id in 0..SESSIONS_PER_GROUP_MAX as u128 {
            table.advance_clock(id as u64);
            table.register(id, u64::MAX);
        }
        table.advance_clock(SESSIONS_PER_GROUP_MAX as u64);
        // Session 0 is the oldest registration but the most recently active.
        assert_eq!(table.admit(0, 1, 0), Ok(Admission::Fresh));
        table.register(u128::MAX, u64::MAX);
        assert_eq!(table.len(), SESSIONS_PER_GROUP_MAX);
        assert_eq!(table.admit(1, 1, 0), Err(SessionRefusal::Expired));
        assert_eq!(table.admit(0, 1, 0), Ok(Admission::Fresh));
        assert_eq!(table.admit(u128::MAX, 1, 0), Ok(Admission::Fresh));
    }

    #[test]
    fn a_table_and_its_decoded_copy_evict_the_same_sessions() {
        // The table files its activity index lazily, the copy files it
        // from the decoded activity: both must take the same least
        // recently active session when a registration needs room.
        let mut table = SessionTable::default();
        let count = SESSIONS_PER_GROUP_MAX as u128;
        for id in 0..count {
            table.advance_clock(id as u64 / 4);
            table.register(id, u64::MAX);
        }
        // Writes in falling id order, several in a millisecond.
        for id in (0..count).rev().step_by(3) {
            table.advance_clock(count as u64 + (count - id) as u64 / 8);
            assert_eq!(table.admit(id, 1, 0), Ok(Admission::Fresh));
        }
        let mut copy = SessionTable::decode(&table.encode()).expect("decodes");
        for new in 0..count / 2 {
            table.register(count + new, u64::MAX);
            copy.register(count + new, u64::MAX);
        }
        assert_eq!(table, copy);
        // The written sessions outlived the unwritten ones that were older.
        assert_eq!(table.admit(count - 1, 2, 0), Ok(Admission::Fresh));
        assert_eq!(table.admit(1, 1, 0), Err(SessionRefusal::Expired));
    }

    #[test]
    fn registering_again_keeps_the_session_and_its_results() {
        let mut table = SessionTable::default();
        table.register(7, MINUTE_MS);
        let result = applied(&mut table, 7, 1, 1, b"a");
        table.register(7, MINUTE_MS);
        assert_eq!(
            table.admit(7, 1, crc32fast::hash(b"a")),
            Ok(Admission::Duplicate(result))
        );
    }

    #[test]
    fn encoded_table_decodes_to_the_same_table() {
        let mut table = SessionTable::default();
        table.advance_clock(42);
        for id in [3u128, 1 << 100, 9] {
            table.register(id, MINUTE_MS);
            applied(&mut table, id, 1, 1, b"a");
            applied(&mut table, id, 2, 1, b"bb");
        }
        let bytes = table.encode();
        assert_eq!(SessionTable::decode(&bytes), Ok(table.clone()));
        // Same table, same bytes (replicas snapshot identically).
        assert_eq!(SessionTable::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn a_table_encodes_to_the_bytes_of_format_1_field_by_field() {
        // Snapshots written before the newest result moved into the
        // session read the same, and replicas of either version agree:
        // the layout, written out here, did not change.
        let mut table = SessionTable::default();
        table.advance_clock(42);
        table.register(9, MINUTE_MS);
        applied(&mut table, 9, 1, 1, b"a");
        applied(&mut table, 9, 2, 1, b"bb");
        applied(&mut table, 9, 3, 2, b"c");
        table.register(3, MINUTE_MS);
        let mut expected = vec![TABLE_FORMAT];
        expected.extend_from_slice(&42u64.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        // Session 3: no results.
        expected.extend_from_slice(&3u128.to_le_bytes());
        expected.extend_from_slice(&MINUTE_MS.to_le_bytes());
        expected.extend_from_slice(&42u64.to_le_bytes());
        expected.extend_from_slice(&0u64.to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes());
        // Session 9: sequences 2 and 3 kept (1 forgotten), oldest first.
        expected.extend_from_slice(&9u128.to_le_bytes());
        expected.extend_from_slice(&MINUTE_MS.to_le_bytes());
        expected.extend_from_slice(&42u64.to_le_bytes());
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        for (sequence, command) in [(2u64, &b"bb"[..]), (3, b"c")] {
            let result = [command, &sequence.to_le_bytes()].concat();
            expected.extend_from_slice(&sequence.to_le_bytes());
            expected.extend_from_slice(&crc32fast::hash(command).to_le_bytes());
            expected.extend_from_slice(&(result.len() as u32).to_le_bytes());
            expected.extend_from_slice(&result);
        }
        assert_eq!(table.encode(), expected);
        assert_eq!(SessionTable::decode(&expected), Ok(table));
    }

    #[test]
    fn every_truncation_of_an_encoded_table_is_an_error_naming_the_field() {
        let mut table = SessionTable::default();
        table.register(3, MINUTE_MS);
        applied(&mut table, 3, 1, 1, b"abc");
        let bytes = table.encode();
        for cut in 0..bytes.len() {
            let error = SessionTable::decode(&bytes[..cut]).unwrap_err();
            assert!(matches!(error, SessionTableError::Truncated { .. }), "{error}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SessionTable::decode(&long),
            Err(SessionTableError::TrailingBytes { offset: bytes.len() })
        );
        let mut huge = bytes;
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SessionTable::decode(&huge),
            Err(SessionTableError::TooMany { .. })
        ));
    }
}
