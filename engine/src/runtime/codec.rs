//! Conversions between the core's types and the wire's and the WAL's: entry
//! payloads (with the leader's time and the client session header), configurations, and Raft
//! messages. Decoding takes untrusted bytes and never panics.

use bytes::{BufMut, Bytes, BytesMut};
use coraft_net::schema::{self as wire, entry_kind};

use std::cell::RefCell;

use super::crc_hints::{session_data_crc, CrcHints};

use crate::raft::{
    AppendOutcome, Configuration, Entry, EntryPayload, GroupId, LogIndex, Message, MessageBody, NodeId, SnapshotMeta,
    Term, READY_VECTOR_KEPT_MAX,
};

/// Bytes of the largest header in front of a command in the log (a session
/// command's: kind, leader time, session, sequence, lowest unanswered).
pub const COMMAND_HEADER_BYTES_MAX: usize = 1 + 8 + 16 + 8 + 8;

/// The first byte of a command in the log: which [`LoggedCommand`] it is.
pub mod command_kind {
    /// [`super::LoggedCommand::Plain`].
    pub const PLAIN: u8 = 0;
    /// [`super::LoggedCommand::Session`].
    pub const SESSION: u8 = 1;
    /// [`super::LoggedCommand::Register`].
    pub const REGISTER: u8 = 2;
    /// An address-book entry (`membership.rs`): applied by the runtime,
    /// never handed to the state machine.
    pub const ADDRESSES: u8 = 3;
}

/// Bound on the members a configuration may list when decoded.
pub const CONFIGURATION_MEMBERS_MAX: usize = 1024;

/// A normal entry's payload as the runtime stores it. Each carries the wall
/// clock of the leader that appended it, in milliseconds: the time by which
/// every replica expires client sessions at the same log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedCommand<'a> {
    /// A command proposed through the embedding API: no session.
    Plain {
        /// The leader's clock when it appended the entry.
        leader_time_ms: u64,
        /// The state machine's command.
        data: &'a [u8],
    },
    /// A client's command under its session (applied at most once).
    Session {
        /// The leader's clock when it appended the entry.
        leader_time_ms: u64,
        /// The client's session.
        session: u128,
        /// The command's sequence within the session.
        sequence: u64,
        /// The lowest sequence the client has had no answer for.
        lowest_unanswered: u64,
        /// The state machine's command.
        data: &'a [u8],
    },
    /// A client registers a session.
    Register {
        /// The leader's clock when it appended the entry.
        leader_time_ms: u64,
        /// The new session.
        session: u128,
        /// How long the session lives without a write (leader time).
        timeout_ms: u64,
    },
}

impl LoggedCommand<'_> {
    /// The leader's clock stamped in the entry.
    pub fn leader_time_ms(&self) -> u64 {
        match *self {
            LoggedCommand::Plain { leader_time_ms, .. }
            | LoggedCommand::Session { leader_time_ms, .. }
            | LoggedCommand::Register { leader_time_ms, .. } => leader_time_ms,
        }
    }

    /// The session it concerns, if any.
    pub fn session(&self) -> Option<u128> {
        match *self {
            LoggedCommand::Plain { .. } => None,
            LoggedCommand::Session { session, .. } | LoggedCommand::Register { session, .. } => Some(session),
        }
    }

    /// The state machine's bytes (none for a registration).
    pub fn data(&self) -> &[u8] {
        match *self {
            LoggedCommand::Plain { data, .. } | LoggedCommand::Session { data, .. } => data,
            LoggedCommand::Register { .. } => &[],
        }
    }
}

/// Encodes a command for the log.
pub fn encode_command(command: &LoggedCommand<'_>) -> Bytes {
    // The vector is exactly full, so this takes it without a copy.
    Bytes::from(encode_command_vec(command))
}

/// Where a logged command keeps its leader time ([`stamp_leader_time`]).
const LEADER_TIME_AT: std::ops::Range<usize> = 1..9;

/// Writes the leader's clock into an encoded command: a client's write is
/// laid out for the log where its frame is read (straight from the
/// archive, one allocation and one copy of its bytes), and stamped when the
/// shard takes it, so the log's times follow the shard's order.
pub fn stamp_leader_time(command: &mut [u8], leader_time_ms: u64) {
    command[LEADER_TIME_AT].copy_from_slice(&leader_time_ms.to_le_bytes());
}

/// Bytes a command takes in the log.
fn encoded_command_bytes(command: &LoggedCommand<'_>) -> usize {
    let header_bytes = match command {
        LoggedCommand::Plain { .. } => 1 + 8,
        LoggedCommand::Session { .. } => COMMAND_HEADER_BYTES_MAX,
        LoggedCommand::Register { .. } => 1 + 8 + 16 + 8,
    };
    header_bytes + command.data().len()
}

/// Appends a command's log encoding to `out`.
fn put_command(command: &LoggedCommand<'_>, out: &mut impl BufMut) {
    match *command {
        LoggedCommand::Plain { leader_time_ms, .. } => {
            out.put_u8(command_kind::PLAIN);
            out.put_u64_le(leader_time_ms);
        }
        LoggedCommand::Session {
            leader_time_ms,
            session,
            sequence,
            lowest_unanswered,
            ..
        } => {
            out.put_u8(command_kind::SESSION);
            out.put_u64_le(leader_time_ms);
            out.put_u128_le(session);
            out.put_u64_le(sequence);
            out.put_u64_le(lowest_unanswered);
        }
        LoggedCommand::Register {
            leader_time_ms,
            session,
            timeout_ms,
        } => {
            out.put_u8(command_kind::REGISTER);
            out.put_u64_le(leader_time_ms);
            out.put_u128_le(session);
            out.put_u64_le(timeout_ms);
        }
    }
    out.put_slice(command.data());
}

/// Encodes a command for the log into a vector exactly its length.
pub fn encode_command_vec(command: &LoggedCommand<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_command_bytes(command));
    put_command(command, &mut out);
    debug_assert_eq!(out.len(), out.capacity());
    out
}

/// Bytes of each buffer a [`CommandArena`] carves commands from.
pub const COMMAND_ARENA_BYTES: usize = 16 * 1024;
/// A command longer than this gets a buffer of its own rather than a piece
/// of the arena's (it would leave too much of a buffer unused).
pub const COMMAND_ARENA_COMMAND_BYTES_MAX: usize = COMMAND_ARENA_BYTES / 8;

/// Where the clients' commands of one shard are laid out for the log, one
/// after another in buffers of [`COMMAND_ARENA_BYTES`]: each command is a
/// piece of a buffer whose reference count the buffer's pieces share. A
/// command in a `Vec` of its own costs two allocations, the vector and,
/// at the first clone of its `Bytes` (the core hands every new entry to
/// the runtime to persist as a clone), a shared header; from the arena, a
/// buffer and a header serve a few hundred small commands. A buffer lives
/// until the last of its commands is dropped: the log frees entries in
/// order, so at most the buffer of the newest entries is held in part.
#[derive(Debug, Default)]
pub struct CommandArena {
    buffer: BytesMut,
}

impl CommandArena {
    /// The command encoded for the log, mutable until it is frozen (the
    /// shard stamps its leader time, [`stamp_leader_time`]).
    pub fn encode(&mut self, command: &LoggedCommand<'_>) -> BytesMut {
        let bytes = encoded_command_bytes(command);
        if bytes > COMMAND_ARENA_COMMAND_BYTES_MAX {
            let mut own = BytesMut::with_capacity(bytes);
            put_command(command, &mut own);
            return own;
        }
        self.make_room(bytes);
        put_command(command, &mut self.buffer);
        self.buffer.split()
    }

    /// A copy of a client's read query, a piece of the same buffers, so a
    /// read read off a connection costs no allocation of its own. The query
    /// keeps its whole buffer ([`COMMAND_ARENA_BYTES`]) alive until the read
    /// is answered: usually one heartbeat round, but a read waiting for its
    /// index to be applied (a follower behind, a snapshot loading) holds it
    /// that long, at most `PENDING_READS_MAX` reads per group and never
    /// past the request timeout.
    pub fn copy(&mut self, query: &[u8]) -> Bytes {
        if query.len() > COMMAND_ARENA_COMMAND_BYTES_MAX {
            return Bytes::copy_from_slice(query);
        }
        if query.is_empty() {
            return Bytes::new();
        }
        self.make_room(query.len());
        self.buffer.extend_from_slice(query);
        self.buffer.split().freeze()
    }

    fn make_room(&mut self, bytes: usize) {
        if self.buffer.capacity() - self.buffer.len() < bytes {
            self.buffer = BytesMut::with_capacity(COMMAND_ARENA_BYTES);
        }
    }
}

/// Reads a stored command; `None` if the bytes are not one (an unknown kind,
/// a short header, or bytes after a registration).
pub fn decode_command(bytes: &[u8]) -> Option<LoggedCommand<'_>> {
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let u128_at = |at: usize| Some(u128::from_le_bytes(bytes.get(at..at + 16)?.try_into().ok()?));
    let leader_time_ms = u64_at(1)?;
    match *bytes.first()? {
        command_kind::PLAIN => Some(LoggedCommand::Plain {
            leader_time_ms,
            data: &bytes[9..],
        }),
        command_kind::SESSION => Some(LoggedCommand::Session {
            leader_time_ms,
            session: u128_at(9)?,
            sequence: u64_at(25)?,
            lowest_unanswered: u64_at(33)?,
            data: &bytes[COMMAND_HEADER_BYTES_MAX..],
        }),
        command_kind::REGISTER if bytes.len() == 33 => Some(LoggedCommand::Register {
            leader_time_ms,
            session: u128_at(9)?,
            timeout_ms: u64_at(25)?,
        }),
        _ => None,
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &std::collections::BTreeSet<NodeId>) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
}

/// Encodes a configuration for a log entry.
pub fn encode_configuration(configuration: &Configuration) -> Vec<u8> {
    let mut out = Vec::new();
    put_ids(&mut out, &configuration.voters);
    put_ids(&mut out, &configuration.outgoing_voters);
    put_ids(&mut out, &configuration.learners);
    put_ids(&mut out, &configuration.learners_next);
    out
}

/// Why stored or received bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A configuration entry is malformed.
    #[error("malformed configuration entry: {0}")]
    Configuration(&'static str),
    /// An entry kind this version does not know.
    #[error("unknown entry kind {0}")]
    EntryKind(u8),
}

/// Decodes a configuration entry's bytes.
pub fn decode_configuration(mut bytes: &[u8]) -> Result<Configuration, DecodeError> {
    let take_ids = |bytes: &mut &[u8]| -> Result<std::collections::BTreeSet<NodeId>, DecodeError> {
        if bytes.len() < 4 {
            return Err(DecodeError::Configuration("truncated count"));
        }
        let count = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        *bytes = &bytes[4..];
        if count > CONFIGURATION_MEMBERS_MAX || bytes.len() < count * 8 {
            return Err(DecodeError::Configuration("count exceeds the bytes or the bound"));
        }
        let ids = bytes[..count * 8]
            .chunks_exact(8)
            .map(|c| NodeId(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect();
        *bytes = &bytes[count * 8..];
        Ok(ids)
    };
    let configuration = Configuration {
        voters: take_ids(&mut bytes)?,
        outgoing_voters: take_ids(&mut bytes)?,
        learners: take_ids(&mut bytes)?,
        learners_next: take_ids(&mut bytes)?,
    };
    if !bytes.is_empty() {
        return Err(DecodeError::Configuration("trailing bytes"));
    }
    Ok(configuration)
}

/// The stored kind and bytes of an entry's payload.
pub fn payload_to_stored(payload: &EntryPayload) -> (u8, Bytes) {
    match payload {
        EntryPayload::Noop => (entry_kind::NOOP, Bytes::new()),
        EntryPayload::Normal(data) => (entry_kind::NORMAL, data.clone()),
        EntryPayload::Configuration(c) => (entry_kind::CONFIG, Bytes::from(encode_configuration(c))),
    }
}

/// [`payload_to_stored`] borrowing the payload's bytes (no reference count
/// taken and dropped): what the WAL copies a Ready's entries from. A
/// configuration's bytes are encoded here.
pub fn payload_as_stored(payload: &EntryPayload) -> (u8, std::borrow::Cow<'_, [u8]>) {
    match payload {
        EntryPayload::Noop => (entry_kind::NOOP, std::borrow::Cow::Borrowed(&[])),
        EntryPayload::Normal(data) => (entry_kind::NORMAL, std::borrow::Cow::Borrowed(data)),
        EntryPayload::Configuration(c) => (entry_kind::CONFIG, std::borrow::Cow::Owned(encode_configuration(c))),
    }
}

/// The payload of a stored or received entry.
pub fn payload_from_stored(kind: u8, data: &[u8]) -> Result<EntryPayload, DecodeError> {
    match kind {
        entry_kind::NOOP => Ok(EntryPayload::Noop),
        entry_kind::NORMAL => Ok(EntryPayload::Normal(Bytes::copy_from_slice(data))),
        entry_kind::CONFIG => Ok(EntryPayload::Configuration(Box::new(decode_configuration(data)?))),
        other => Err(DecodeError::EntryKind(other)),
    }
}

fn ids(list: &std::collections::BTreeSet<NodeId>) -> Vec<u64> {
    list.iter().map(|n| n.0).collect()
}

/// A core message as a wire envelope, taking it: an `AppendEntries`'s
/// payloads move into the envelope (no reference count taken and dropped
/// per entry and peer, as [`to_wire`] must).
pub fn into_wire(message: Message) -> wire::Envelope {
    let Message {
        group,
        from,
        to,
        term,
        body,
    } = message;
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
    } = body
    else {
        return to_wire(&Message {
            group,
            from,
            to,
            term,
            body,
        });
    };
    let body = wire::RaftBody::AppendEntries(wire::AppendEntries {
        prev_log_index: prev_log_index.0,
        prev_log_term: prev_log_term.0,
        leader_commit: leader_commit.0,
        entries: entries
            .into_iter()
            .map(|e| wire_entry(e.term, e.index, payload_into_stored(e.payload)))
            .collect(),
    });
    wire::Envelope {
        group: group.0,
        from: from.0,
        to: to.0,
        term: term.0,
        body,
    }
}

/// A log entry on the wire, from its term, index and stored payload.
fn wire_entry(term: Term, index: LogIndex, (kind, data): (u8, Bytes)) -> wire::Entry {
    wire::Entry {
        term: term.0,
        index: index.0,
        kind,
        data,
    }
}

/// [`payload_to_stored`], taking the payload.
fn payload_into_stored(payload: EntryPayload) -> (u8, Bytes) {
    match payload {
        EntryPayload::Normal(data) => (entry_kind::NORMAL, data),
        other => payload_to_stored(&other),
    }
}

/// A core message as a wire envelope.
pub fn to_wire(message: &Message) -> wire::Envelope {
    let body = match &message.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => wire::RaftBody::AppendEntries(wire::AppendEntries {
            prev_log_index: prev_log_index.0,
            prev_log_term: prev_log_term.0,
            leader_commit: leader_commit.0,
            entries: entries
                .iter()
                .map(|e| wire_entry(e.term, e.index, payload_to_stored(&e.payload)))
                .collect(),
        }),
        MessageBody::AppendEntriesResponse(outcome) => wire::RaftBody::AppendEntriesResponse(match *outcome {
            AppendOutcome::Accepted { match_index } => wire::AppendEntriesResponse {
                reject: false,
                index: match_index.0,
                reject_hint_index: 0,
                reject_hint_term: 0,
            },
            AppendOutcome::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => wire::AppendEntriesResponse {
                reject: true,
                index: rejected_index.0,
                reject_hint_index: hint_index.0,
                reject_hint_term: hint_term.0,
            },
        }),
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => wire::RaftBody::RequestVote(wire::RequestVote {
            pre_vote: *pre_vote,
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            leadership_transfer: *leadership_transfer,
        }),
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            wire::RaftBody::RequestVoteResponse(wire::RequestVoteResponse {
                pre_vote: *pre_vote,
                granted: *granted,
            })
        }
        // A quiescing heartbeat travels as a line of a coalesced heartbeat
        // (`transport.rs`); on its own it is an ordinary one.
        MessageBody::Heartbeat {
            commit_index, round, ..
        } => wire::RaftBody::Heartbeat(wire::Heartbeat {
            commit_index: commit_index.0,
            read_context: *round,
        }),
        MessageBody::HeartbeatResponse { round } => {
            wire::RaftBody::HeartbeatResponse(wire::HeartbeatResponse { read_context: *round })
        }
        MessageBody::TimeoutNow => wire::RaftBody::TimeoutNow,
        MessageBody::ReadIndex { context } => wire::RaftBody::ReadIndex(wire::ReadIndex { context: *context }),
        MessageBody::ReadIndexResponse { context, index } => {
            wire::RaftBody::ReadIndexResponse(wire::ReadIndexResponse {
                context: *context,
                index: index.map_or(0, |i| i.0),
            })
        }
        MessageBody::InstallSnapshot { meta } => wire::RaftBody::InstallSnapshot(wire::InstallSnapshot {
            snapshot_index: meta.index.0,
            snapshot_term: meta.term.0,
            configuration: wire::Configuration {
                voters: ids(&meta.configuration.voters),
                learners: ids(&meta.configuration.learners),
                outgoing_voters: ids(&meta.configuration.outgoing_voters),
            },
            offset: 0,
            data: Bytes::new(),
            done: true,
        }),
        MessageBody::InstallSnapshotResponse { last_index } => {
            wire::RaftBody::InstallSnapshotResponse(wire::InstallSnapshotResponse {
                next_offset: last_index.0,
                rejected: false,
            })
        }
    };
    wire::Envelope {
        group: message.group.0,
        from: message.from.0,
        to: message.to.0,
        term: message.term.0,
        body,
    }
}

/// The per-group messages a coalesced heartbeat (or its response) stands for:
/// each line is a quiescing heartbeat (`raft/quiesce.rs`) of one group, or
/// its answer, with round 0 (a quiet leader confirms no read with it).
pub fn expand_coalesced(envelope: &wire::Envelope) -> Vec<Message> {
    let line = |group: u64, term: u64, body: MessageBody| Message {
        group: GroupId(group),
        from: NodeId(envelope.from),
        to: NodeId(envelope.to),
        term: Term(term),
        body,
    };
    match &envelope.body {
        wire::RaftBody::CoalescedHeartbeat(beat) => beat
            .groups
            .iter()
            .map(|l| {
                let body = MessageBody::Heartbeat {
                    commit_index: LogIndex(l.commit_index),
                    round: 0,
                    quiesce: true,
                };
                line(l.group, l.term, body)
            })
            .collect(),
        wire::RaftBody::CoalescedHeartbeatResponse(ack) => ack
            .groups
            .iter()
            .map(|l| line(l.group, l.term, MessageBody::HeartbeatResponse { round: 0 }))
            .collect(),
        _ => Vec::new(),
    }
}

/// Bound on the payload bytes of one received `AppendEntries` gathered into
/// one shared buffer ([`append_from_archived`]); a message with more gets
/// another buffer for the rest (a frame's body is bounded anyway, this keeps
/// one buffer's lifetime from spanning a whole large frame's entries).
pub const RECEIVED_ENTRIES_BUFFER_BYTES_MAX: usize = 1 << 20;

/// Least bytes of a buffer that a peer connection copies received entries
/// into ([`append_from_archived`]): with many groups each append carries one
/// or two small entries, and the appends of a frame (and of the next ones)
/// then share one buffer and its reference count instead of taking a buffer
/// and a shared header each. A buffer lives until the last entry sliced from
/// it is dropped; the log frees entries in order, so at most the newest
/// buffer is held in part.
pub const RECEIVED_ENTRIES_ARENA_BYTES: usize = 16 * 1024;

/// Bound on the emptied entry vectors a shard keeps for the appends its
/// peer connections read ([`ReceivedEntryVectors`]): the appends of a few
/// frames at 64 groups per peer.
pub const RECEIVED_ENTRY_VECTORS_KEPT_MAX: usize = 256;

/// Emptied entry vectors of received appends, handed back by the cores
/// that took their entries (`RaftCore::take_received_entries_vector`), for
/// [`append_from_archived`] to fill with the next appends instead of
/// allocating one per message. Holds at most
/// [`RECEIVED_ENTRY_VECTORS_KEPT_MAX`] vectors of at most
/// `raft::READY_VECTOR_KEPT_MAX` elements each. One per shard, shared by
/// its connection readers and its loop (one thread).
#[derive(Debug, Default)]
pub struct ReceivedEntryVectors {
    spare: RefCell<Vec<Vec<Entry>>>,
}

impl ReceivedEntryVectors {
    /// An empty vector with room for `count` entries: a kept one if any.
    pub fn take(&self, count: usize) -> Vec<Entry> {
        match self.spare.borrow_mut().pop() {
            Some(mut kept) => {
                kept.reserve_exact(count);
                kept
            }
            None => Vec::with_capacity(count),
        }
    }

    /// Keeps `entries`, emptied, for a later [`take`](Self::take), unless
    /// the bounds say drop it.
    pub fn give_back(&self, mut entries: Vec<Entry>) {
        let mut spare = self.spare.borrow_mut();
        if entries.capacity() == 0
            || entries.capacity() > READY_VECTOR_KEPT_MAX
            || spare.len() >= RECEIVED_ENTRY_VECTORS_KEPT_MAX
        {
            return;
        }
        entries.clear();
        spare.push(entries);
    }

    /// Vectors kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.spare.borrow().len()
    }
}

/// An `AppendEntries` read in place from a received frame, as a core
/// message. The normal entries' payloads are copied once into `arena`, a
/// buffer the connection keeps, and each entry's `Bytes` is a slice of it;
/// when the arena's room runs out it takes a new buffer of
/// [`RECEIVED_ENTRIES_ARENA_BYTES`], or of the rest of this message's
/// payloads if larger (at most [`RECEIVED_ENTRIES_BUFFER_BYTES_MAX`]),
/// unless every entry sliced from its buffer has been dropped: then it
/// writes over that buffer again from its start. A buffer that large is
/// mapped afresh by the allocator and faulted in page by page on its first
/// copy (issue 17: 0.33 page faults per 4 KiB write), so reusing the one
/// the connection already holds saves those; the arena holds no more than
/// before (one buffer, idle too). So
/// small appends cost no allocation for their payloads, and the slices are
/// already shared, so the core's clones of them allocate nothing either.
/// The entries vector is one of `vectors` if it keeps any. With `hints`,
/// each session command's data CRC is noted there under its entry's
/// group, index and term, computed on the copy just made
/// (`crc_hints.rs`). `None` if the envelope is another kind (deserialize
/// it and use [`from_wire`]).
pub fn append_from_archived(
    envelope: &wire::ArchivedEnvelope,
    arena: &mut bytes::BytesMut,
    vectors: &ReceivedEntryVectors,
    hints: Option<&CrcHints>,
) -> Option<Result<Message, DecodeError>> {
    let wire::ArchivedRaftBody::AppendEntries(append) = &envelope.body else {
        return None;
    };
    Some(archived_append(envelope, append, arena, vectors, hints))
}

fn archived_append(
    envelope: &wire::ArchivedEnvelope,
    append: &wire::ArchivedAppendEntries,
    buffer: &mut bytes::BytesMut,
    vectors: &ReceivedEntryVectors,
    hints: Option<&CrcHints>,
) -> Result<Message, DecodeError> {
    let group = GroupId(envelope.group.to_native());
    let mut entries = vectors.take(append.entries.len());
    for e in append.entries.iter() {
        let index = LogIndex(e.index.to_native());
        let term = Term(e.term.to_native());
        let data = e.data.as_slice();
        let payload = match e.kind {
            entry_kind::NORMAL if data.is_empty() => EntryPayload::Normal(Bytes::new()),
            entry_kind::NORMAL => {
                // `try_reclaim`: the whole buffer again if no slice of it is left.
                if buffer.capacity() - buffer.len() < data.len() && !buffer.try_reclaim(data.len()) {
                    // What is left of this message's normal payloads, bounded.
                    let rest: usize = append
                        .entries
                        .iter()
                        .skip(entries.len())
                        .filter(|e| e.kind == entry_kind::NORMAL)
                        .map(|e| e.data.len())
                        .sum();
                    *buffer = bytes::BytesMut::with_capacity(
                        rest.clamp(RECEIVED_ENTRIES_ARENA_BYTES, RECEIVED_ENTRIES_BUFFER_BYTES_MAX)
                            .max(data.len()),
                    );
                }
                buffer.extend_from_slice(data);
                let copied = buffer.split().freeze();
                // The copy is hot now; at apply it would be cold.
                if let Some((hints, crc)) = hints.zip(session_data_crc(&copied)) {
                    hints.note(group, index, term, crc);
                }
                EntryPayload::Normal(copied)
            }
            kind => payload_from_stored(kind, data)?,
        };
        entries.push(Entry { index, term, payload });
    }
    Ok(Message {
        group,
        from: NodeId(envelope.from.to_native()),
        to: NodeId(envelope.to.to_native()),
        term: Term(envelope.term.to_native()),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(append.prev_log_index.to_native()),
            prev_log_term: Term(append.prev_log_term.to_native()),
            entries,
            leader_commit: LogIndex(append.leader_commit.to_native()),
        },
    })
}

/// A wire envelope as a core message; `None` for kinds the core does not
/// take directly (coalesced heartbeats are expanded by the caller).
pub fn from_wire(envelope: wire::Envelope) -> Result<Option<Message>, DecodeError> {
    let body = match envelope.body {
        wire::RaftBody::AppendEntries(append) => {
            let mut entries = Vec::with_capacity(append.entries.len());
            for e in append.entries {
                // A normal entry keeps the bytes it arrived in (no copy).
                let payload = match e.kind {
                    entry_kind::NORMAL => EntryPayload::Normal(e.data),
                    kind => payload_from_stored(kind, &e.data)?,
                };
                entries.push(Entry {
                    index: LogIndex(e.index),
                    term: Term(e.term),
                    payload,
                });
            }
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(append.prev_log_index),
                prev_log_term: Term(append.prev_log_term),
                entries,
                leader_commit: LogIndex(append.leader_commit),
            }
        }
        wire::RaftBody::AppendEntriesResponse(r) => MessageBody::AppendEntriesResponse(if r.reject {
            AppendOutcome::Rejected {
                rejected_index: LogIndex(r.index),
                hint_index: LogIndex(r.reject_hint_index),
                hint_term: Term(r.reject_hint_term),
            }
        } else {
            AppendOutcome::Accepted {
                match_index: LogIndex(r.index),
            }
        }),
        wire::RaftBody::RequestVote(v) => MessageBody::RequestVote {
            pre_vote: v.pre_vote,
            last_log_index: LogIndex(v.last_log_index),
            last_log_term: Term(v.last_log_term),
            leadership_transfer: v.leadership_transfer,
        },
        wire::RaftBody::RequestVoteResponse(v) => MessageBody::RequestVoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
        },
        wire::RaftBody::Heartbeat(h) => MessageBody::Heartbeat {
            commit_index: LogIndex(h.commit_index),
            round: h.read_context,
            quiesce: false,
        },
        wire::RaftBody::HeartbeatResponse(h) => MessageBody::HeartbeatResponse { round: h.read_context },
        wire::RaftBody::TimeoutNow => MessageBody::TimeoutNow,
        wire::RaftBody::ReadIndex(r) => MessageBody::ReadIndex { context: r.context },
        wire::RaftBody::ReadIndexResponse(r) => MessageBody::ReadIndexResponse {
            context: r.context,
            index: (r.index > 0).then_some(LogIndex(r.index)),
        },
        wire::RaftBody::InstallSnapshot(s) => {
            let set = |v: &[u64]| v.iter().map(|&n| NodeId(n)).collect();
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: LogIndex(s.snapshot_index),
                    term: Term(s.snapshot_term),
                    configuration: Configuration {
                        voters: set(&s.configuration.voters),
                        outgoing_voters: set(&s.configuration.outgoing_voters),
                        learners: set(&s.configuration.learners),
                        learners_next: Default::default(),
                    },
                },
            }
        }
        wire::RaftBody::InstallSnapshotResponse(r) => MessageBody::InstallSnapshotResponse {
            last_index: LogIndex(r.next_offset),
        },
        // Coalesced heartbeats are expanded by the caller; snapshot chunks
        // go to the snapshot stream (`snapshot_stream.rs`), not the core.
        wire::RaftBody::CoalescedHeartbeat(_)
        | wire::RaftBody::CoalescedHeartbeatResponse(_)
        | wire::RaftBody::SnapshotChunk(_)
        | wire::RaftBody::SnapshotChunkAck(_) => return Ok(None),
    };
    Ok(Some(Message {
        group: GroupId(envelope.group),
        from: NodeId(envelope.from),
        to: NodeId(envelope.to),
        term: Term(envelope.term),
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_stamped_with_its_leader_time_is_the_command_encoded_with_it() {
        let unstamped = LoggedCommand::Session {
            leader_time_ms: 0,
            session: 7 << 100,
            sequence: 9,
            lowest_unanswered: 8,
            data: b"payload",
        };
        let mut command = encode_command_vec(&unstamped);
        assert_eq!(command.len(), command.capacity());
        stamp_leader_time(&mut command, 1_234_567);
        let stamped = LoggedCommand::Session {
            leader_time_ms: 1_234_567,
            session: 7 << 100,
            sequence: 9,
            lowest_unanswered: 8,
            data: b"payload",
        };
        assert_eq!(decode_command(&command), Some(stamped));
        assert_eq!(Bytes::from(command), encode_command(&stamped));
    }

    #[test]
    fn commands_from_the_arena_are_the_commands_encoded_and_share_their_buffer() {
        let mut arena = CommandArena::default();
        let session = |sequence: u64, data: &'static [u8]| LoggedCommand::Session {
            leader_time_ms: 0,
            session: 11,
            sequence,
            lowest_unanswered: sequence,
            data,
        };
        let mut pieces = Vec::new();
        let count = COMMAND_ARENA_BYTES / (COMMAND_HEADER_BYTES_MAX + 16) + 3;
        for sequence in 1..=count as u64 {
            pieces.push(arena.encode(&session(sequence, b"sixteen bytes...")).freeze());
        }
        for (sequence, piece) in (1..).zip(&pieces) {
            assert_eq!(decode_command(piece), Some(session(sequence, b"sixteen bytes...")));
        }
        // The first buffer's commands lie one after another; the command
        // that did not fit starts a new buffer.
        let first_buffer = pieces
            .windows(2)
            .take_while(|pair| pair[0].as_ptr().wrapping_add(pair[0].len()) == pair[1].as_ptr())
            .count()
            + 1;
        assert_eq!(first_buffer, COMMAND_ARENA_BYTES / (COMMAND_HEADER_BYTES_MAX + 16));
        // Stamped in place, then frozen: the stamped command.
        let mut command = arena.encode(&session(7, b"x"));
        stamp_leader_time(&mut command, 99);
        let stamped = LoggedCommand::Session {
            leader_time_ms: 99,
            session: 11,
            sequence: 7,
            lowest_unanswered: 7,
            data: b"x",
        };
        assert_eq!(command.freeze(), encode_command(&stamped));
        // A long command has a buffer of its own, exactly its length.
        let long = vec![3u8; COMMAND_ARENA_COMMAND_BYTES_MAX];
        let own = arena.encode(&LoggedCommand::Plain {
            leader_time_ms: 1,
            data: &long,
        });
        assert_eq!(own.len(), own.capacity());
        assert_eq!(decode_command(&own).map(|c| c.data().len()), Some(long.len()));
    }

    #[test]
    fn read_queries_from_the_arena_are_their_bytes_one_after_another() {
        let mut arena = CommandArena::default();
        let queries: Vec<Bytes> = (0..100u8).map(|i| arena.copy(&[i; 9])).collect();
        for (i, query) in (0..100u8).zip(&queries) {
            assert_eq!(&query[..], &[i; 9]);
        }
        assert!(queries
            .windows(2)
            .all(|pair| pair[0].as_ptr().wrapping_add(9) == pair[1].as_ptr()));
        assert!(arena.copy(&[]).is_empty());
        let long = vec![5u8; COMMAND_ARENA_COMMAND_BYTES_MAX + 1];
        assert_eq!(arena.copy(&long), long);
    }

    #[test]
    fn every_logged_command_kind_round_trips_and_malformed_bytes_are_none() {
        let commands = [
            LoggedCommand::Plain {
                leader_time_ms: 1,
                data: b"plain",
            },
            LoggedCommand::Session {
                leader_time_ms: 2,
                session: u128::MAX - 3,
                sequence: 4,
                lowest_unanswered: 3,
                data: b"write",
            },
            LoggedCommand::Register {
                leader_time_ms: 3,
                session: 1 << 127,
                timeout_ms: 600_000,
            },
        ];
        for command in commands {
            let bytes = encode_command(&command);
            assert_eq!(decode_command(&bytes), Some(command));
            for cut in 0..9 {
                assert_eq!(decode_command(&bytes[..cut]), None);
            }
        }
        let register = encode_command(&commands[2]);
        assert_eq!(decode_command(&[&register[..], b"x"].concat()), None);
        assert_eq!(decode_command(&register[..32]), None);
        assert_eq!(decode_command(&[9; 40]), None);
    }

    #[test]
    fn configuration_round_trips_and_garbage_is_an_error() {
        let c = Configuration {
            voters: [1, 2, 3].map(NodeId).into(),
            outgoing_voters: [1, 2, 4].map(NodeId).into(),
            learners: [5].map(NodeId).into(),
            learners_next: [4].map(NodeId).into(),
        };
        assert_eq!(decode_configuration(&encode_configuration(&c)), Ok(c));
        assert!(decode_configuration(&[0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(decode_configuration(&[1, 0]).is_err());
    }

    #[test]
    fn coalesced_heartbeat_lines_become_quiescing_heartbeats_and_their_answers() {
        let envelope = |body| wire::Envelope {
            group: 0,
            from: 1,
            to: 2,
            term: 0,
            body,
        };
        let beat = envelope(wire::RaftBody::CoalescedHeartbeat(wire::CoalescedHeartbeat {
            groups: vec![
                wire::GroupHeartbeat {
                    group: 7,
                    term: 3,
                    commit_index: 40,
                },
                wire::GroupHeartbeat {
                    group: 9,
                    term: 5,
                    commit_index: 2,
                },
            ],
        }));
        let messages = expand_coalesced(&beat);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[1],
            Message {
                group: GroupId(9),
                from: NodeId(1),
                to: NodeId(2),
                term: Term(5),
                body: MessageBody::Heartbeat {
                    commit_index: LogIndex(2),
                    round: 0,
                    quiesce: true,
                },
            }
        );
        let ack = envelope(wire::RaftBody::CoalescedHeartbeatResponse(
            wire::CoalescedHeartbeatResponse {
                groups: vec![wire::GroupHeartbeatAck { group: 7, term: 3 }],
            },
        ));
        let messages = expand_coalesced(&ack);
        assert_eq!(
            messages
                .iter()
                .map(|m| (m.group, m.term, m.body.clone()))
                .collect::<Vec<_>>(),
            vec![(GroupId(7), Term(3), MessageBody::HeartbeatResponse { round: 0 })]
        );
        assert!(expand_coalesced(&envelope(wire::RaftBody::TimeoutNow)).is_empty());
        // The empty beat is the node-level liveness message: no group's.
        let empty = envelope(wire::RaftBody::CoalescedHeartbeat(wire::CoalescedHeartbeat {
            groups: Vec::new(),
        }));
        assert!(expand_coalesced(&empty).is_empty());
    }

    #[test]
    fn a_full_arena_is_written_over_again_once_its_entries_are_dropped() {
        let sent = Message {
            group: GroupId(1),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![Entry {
                    index: LogIndex(1),
                    term: Term(3),
                    payload: EntryPayload::Normal(Bytes::from(vec![7u8; RECEIVED_ENTRIES_ARENA_BYTES])),
                }],
                leader_commit: LogIndex(0),
            },
        };
        let batch = wire::RaftBatch {
            messages: vec![to_wire(&sent)],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch).unwrap();
        let archived = rkyv::access::<wire::ArchivedRaftBatch, rkyv::rancor::Error>(&bytes).unwrap();
        let mut arena = bytes::BytesMut::new();
        let vectors = ReceivedEntryVectors::default();
        let mut read = || {
            let received = append_from_archived(&archived.messages[0], &mut arena, &vectors, None)
                .expect("an append")
                .unwrap();
            assert_eq!(received, sent);
            let MessageBody::AppendEntries { entries, .. } = received.body else {
                unreachable!()
            };
            let EntryPayload::Normal(data) = &entries[0].payload else {
                unreachable!()
            };
            data.clone()
        };
        let first = read();
        let at = first.as_ptr();
        // While the first entry lives its buffer is not written over.
        let second = read();
        assert_ne!(second.as_ptr(), at);
        assert_eq!(first[..], vec![7u8; RECEIVED_ENTRIES_ARENA_BYTES][..]);
        // Once the entries of the arena's buffer are dropped, the next append
        // is copied into that buffer again, not into a new one.
        let second_at = second.as_ptr();
        drop(first);
        drop(second);
        let third = read();
        assert_eq!(third.as_ptr(), second_at, "the arena's buffer was reused");
    }

    #[test]
    fn an_append_read_in_place_is_the_message_sent_and_its_entries_share_one_buffer() {
        let normal = |index: u64, data: &[u8]| Entry {
            index: LogIndex(index),
            term: Term(2),
            payload: EntryPayload::Normal(Bytes::copy_from_slice(data)),
        };
        let sent = Message {
            group: GroupId(4),
            from: NodeId(1),
            to: NodeId(3),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(6),
                prev_log_term: Term(1),
                entries: vec![
                    normal(7, b"first"),
                    Entry {
                        index: LogIndex(8),
                        term: Term(2),
                        payload: EntryPayload::Configuration(Box::new(Configuration::with_voters(
                            [1, 2, 3].map(NodeId),
                        ))),
                    },
                    normal(9, b"second"),
                    normal(10, b""),
                    Entry {
                        index: LogIndex(11),
                        term: Term(2),
                        payload: EntryPayload::Noop,
                    },
                    normal(12, b"third"),
                ],
                leader_commit: LogIndex(5),
            },
        };
        let batch = wire::RaftBatch {
            messages: vec![
                to_wire(&sent),
                to_wire(&Message {
                    body: MessageBody::TimeoutNow,
                    ..sent.clone()
                }),
            ],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch).unwrap();
        let archived = rkyv::access::<wire::ArchivedRaftBatch, rkyv::rancor::Error>(&bytes).unwrap();
        let mut arena = bytes::BytesMut::new();
        let vectors = ReceivedEntryVectors::default();
        let received = append_from_archived(&archived.messages[0], &mut arena, &vectors, None)
            .expect("an append")
            .unwrap();
        assert_eq!(received, sent);
        assert!(
            append_from_archived(&archived.messages[1], &mut arena, &vectors, None).is_none(),
            "not an append"
        );
        // The normal payloads are consecutive slices of one buffer.
        let MessageBody::AppendEntries { entries, .. } = &received.body else {
            unreachable!()
        };
        let data: Vec<&Bytes> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(data) if !data.is_empty() => Some(data),
                _ => None,
            })
            .collect();
        for pair in data.windows(2) {
            assert_eq!(pair[0].as_ptr().wrapping_add(pair[0].len()), pair[1].as_ptr());
        }
        // The next append through the same arena continues that buffer
        // (no new one for a few small entries).
        let again = append_from_archived(&archived.messages[0], &mut arena, &vectors, None)
            .expect("an append")
            .unwrap();
        assert_eq!(again, sent);
        let MessageBody::AppendEntries { entries: more, .. } = &again.body else {
            unreachable!()
        };
        let EntryPayload::Normal(next) = &more[0].payload else {
            unreachable!()
        };
        let last = data.last().expect("normal payloads");
        assert_eq!(last.as_ptr().wrapping_add(last.len()), next.as_ptr());
        // A vector given back (as a core hands it on once it took the
        // entries) carries the next append: no allocation of its own.
        let MessageBody::AppendEntries { entries: mut given, .. } = again.body else {
            unreachable!()
        };
        given.clear();
        let given_at = given.as_ptr();
        vectors.give_back(given);
        assert_eq!(vectors.kept(), 1);
        let third = append_from_archived(&archived.messages[0], &mut arena, &vectors, None)
            .expect("an append")
            .unwrap();
        assert_eq!(third, sent);
        let MessageBody::AppendEntries { entries: refilled, .. } = &third.body else {
            unreachable!()
        };
        assert_eq!(refilled.as_ptr(), given_at, "the given-back vector was refilled");
        assert_eq!(vectors.kept(), 0);
        // Vectors past the bounds are dropped, not kept.
        vectors.give_back(Vec::with_capacity(READY_VECTOR_KEPT_MAX + 1));
        vectors.give_back(Vec::new());
        assert_eq!(vectors.kept(), 0);
        for _ in 0..RECEIVED_ENTRY_VECTORS_KEPT_MAX + 3 {
            vectors.give_back(Vec::with_capacity(1));
        }
        assert_eq!(vectors.kept(), RECEIVED_ENTRY_VECTORS_KEPT_MAX);
        // A bad configuration entry is an error, not a panic.
        let mut bad = batch.messages[0].clone();
        if let wire::RaftBody::AppendEntries(append) = &mut bad.body {
            append.entries[1].data = Bytes::from_static(&[1, 0]);
        }
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&wire::RaftBatch { messages: vec![bad] }).unwrap();
        let archived = rkyv::access::<wire::ArchivedRaftBatch, rkyv::rancor::Error>(&bytes).unwrap();
        assert!(matches!(
            append_from_archived(&archived.messages[0], &mut arena, &vectors, None),
            Some(Err(DecodeError::Configuration(_)))
        ));
    }

    #[test]
    fn every_message_kind_round_trips_through_the_wire_schema() {
        let entry = Entry {
            index: LogIndex(3),
            term: Term(2),
            payload: EntryPayload::Normal(encode_command(&LoggedCommand::Session {
                leader_time_ms: 5,
                session: 7,
                sequence: 9,
                lowest_unanswered: 9,
                data: b"x",
            })),
        };
        let bodies = vec![
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(2),
                prev_log_term: Term(1),
                entries: vec![
                    entry,
                    Entry {
                        index: LogIndex(4),
                        term: Term(2),
                        payload: EntryPayload::Noop,
                    },
                ],
                leader_commit: LogIndex(1),
            },
            MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
                match_index: LogIndex(4),
            }),
            MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
                rejected_index: LogIndex(9),
                hint_index: LogIndex(3),
                hint_term: Term(1),
            }),
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: LogIndex(4),
                last_log_term: Term(2),
                leadership_transfer: false,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::Heartbeat {
                commit_index: LogIndex(3),
                round: 11,
                quiesce: false,
            },
            MessageBody::HeartbeatResponse { round: 11 },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { context: 5 },
            MessageBody::ReadIndexResponse {
                context: 5,
                index: Some(LogIndex(4)),
            },
            MessageBody::ReadIndexResponse {
                context: 6,
                index: None,
            },
        ];
        for body in bodies {
            let message = Message {
                group: GroupId(1),
                from: NodeId(1),
                to: NodeId(2),
                term: Term(2),
                body,
            };
            assert_eq!(from_wire(to_wire(&message)), Ok(Some(message.clone())));
            assert_eq!(into_wire(message.clone()), to_wire(&message));
        }
    }
}
