//! The wire schema: every message that crosses a coraft connection.
//!
//! Sits between the engine and the frame codec: the engine builds these owned
//! types and queues them on an outbound connection; the reader hands back their
//! archived forms (`Archived*`), validated in place, so entry payloads are
//! borrowed slices of the receive buffer that a follower can pass to its WAL
//! without another copy. The schema knows no Raft roles: ids are plain `u64`.
//!
//! Payloads (entry data, snapshot chunks) are [`Bytes`]: a leader hands the
//! same entry to every follower's connection with a reference-count bump
//! instead of a copy per follower. `Bytes` archives exactly as `Vec<u8>` does
//! (rkyv's `bytes-1` impl: an `ArchivedVec<u8>`), so the wire does not depend
//! on which of the two the sender held.
//!
//! Versioning: rkyv archives are not self-describing, so any change to these
//! types (a new field, a new variant, a reordering) changes the layout and
//! must bump [`crate::frame::WIRE_VERSION`]. The handshake refuses a peer whose
//! version differs (see `docs/wire.md`).

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

/// One Raft message between two nodes of one group.
///
/// `group` is ignored by [`RaftBody::CoalescedHeartbeat`] and its response,
/// which cover many groups at once (the engine sets it to 0).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Envelope {
    /// The Raft group this message belongs to.
    pub group: u64,
    /// The sending node.
    pub from: u64,
    /// The receiving node.
    pub to: u64,
    /// The sender's current term.
    pub term: u64,
    /// What the message says.
    pub body: RaftBody,
}

/// The body of a Raft message, one variant per message kind.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RaftBody {
    /// Log replication (Raft §5.3).
    AppendEntries(AppendEntries),
    /// The follower's answer to [`RaftBody::AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// A vote or pre-vote request (Raft §5.2, thesis §9.6).
    RequestVote(RequestVote),
    /// The answer to [`RaftBody::RequestVote`].
    RequestVoteResponse(RequestVoteResponse),
    /// A heartbeat of one group.
    Heartbeat(Heartbeat),
    /// The answer to [`RaftBody::Heartbeat`].
    HeartbeatResponse(HeartbeatResponse),
    /// Heartbeats of many idle groups to the same peer, in one message.
    CoalescedHeartbeat(CoalescedHeartbeat),
    /// The answer to [`RaftBody::CoalescedHeartbeat`].
    CoalescedHeartbeatResponse(CoalescedHeartbeatResponse),
    /// Leadership transfer: start an election now (thesis §3.10).
    TimeoutNow,
    /// A follower asks the leader for a read index (thesis §6.4).
    ReadIndex(ReadIndex),
    /// The leader's answer to [`RaftBody::ReadIndex`].
    ReadIndexResponse(ReadIndexResponse),
    /// One chunk of a snapshot (Raft §7).
    InstallSnapshot(InstallSnapshot),
    /// The answer to one [`RaftBody::InstallSnapshot`] chunk.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// A bounded, checksummed piece of a stored snapshot, streamed by the
    /// runtime beside the core's [`RaftBody::InstallSnapshot`].
    SnapshotChunk(SnapshotChunk),
    /// The receiver's answer to [`RaftBody::SnapshotChunk`]: the offset it
    /// wants next.
    SnapshotChunkAck(SnapshotChunkAck),
}

/// What kind of entry a log entry is.
pub mod entry_kind {
    /// An entry proposed by a client.
    pub const NORMAL: u8 = 0;
    /// A configuration change.
    pub const CONFIG: u8 = 1;
    /// The empty entry a new leader appends (Raft §8).
    pub const NOOP: u8 = 2;
}

/// One log entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// The term in which the entry was created.
    pub term: u64,
    /// The entry's position in the log.
    pub index: u64,
    /// One of [`entry_kind`]; unknown values are passed through, not refused.
    pub kind: u8,
    /// The payload, opaque to the wire; shared, not copied, between the
    /// messages that carry it (archived as `Vec<u8>` would be).
    pub data: Bytes,
}

/// Log replication request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AppendEntries {
    /// Index of the entry just before `entries`.
    pub prev_log_index: u64,
    /// Term of the entry at `prev_log_index`.
    pub prev_log_term: u64,
    /// The leader's commit index.
    pub leader_commit: u64,
    /// The entries to append, possibly none.
    pub entries: Vec<Entry>,
}

/// Answer to [`AppendEntries`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AppendEntriesResponse {
    /// True when the follower's log did not match at `prev_log_index`.
    pub reject: bool,
    /// On success the follower's match index; on rejection its last index.
    pub index: u64,
    /// Where the leader should probe next when rejected.
    pub reject_hint_index: u64,
    /// The term at `reject_hint_index`.
    pub reject_hint_term: u64,
}

/// Vote or pre-vote request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestVote {
    /// True for a pre-vote, which changes no state on the voter.
    pub pre_vote: bool,
    /// The candidate's last log index.
    pub last_log_index: u64,
    /// The candidate's last log term.
    pub last_log_term: u64,
    /// True when the election follows a TimeoutNow: voters ignore their lease.
    pub leadership_transfer: bool,
}

/// Answer to [`RequestVote`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestVoteResponse {
    /// Echoes the request's `pre_vote`.
    pub pre_vote: bool,
    /// Whether the vote was granted.
    pub granted: bool,
}

/// Heartbeat of one group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Heartbeat {
    /// The leader's commit index, capped at what the follower holds.
    pub commit_index: u64,
    /// Opaque context of a pending ReadIndex round, 0 if none.
    pub read_context: u64,
}

/// Answer to [`Heartbeat`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponse {
    /// Echoes the heartbeat's `read_context`.
    pub read_context: u64,
}

/// One group's line of a coalesced heartbeat.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupHeartbeat {
    /// The group.
    pub group: u64,
    /// The leader's term in that group.
    pub term: u64,
    /// The leader's commit index in that group.
    pub commit_index: u64,
}

/// Heartbeats of many groups led by the sender, for one peer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CoalescedHeartbeat {
    /// One line per group.
    pub groups: Vec<GroupHeartbeat>,
}

/// One group's line of a coalesced heartbeat response.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupHeartbeatAck {
    /// The group.
    pub group: u64,
    /// The follower's term in that group.
    pub term: u64,
}

/// Answer to [`CoalescedHeartbeat`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CoalescedHeartbeatResponse {
    /// One line per group.
    pub groups: Vec<GroupHeartbeatAck>,
}

/// A read index request (forwarded by a follower or sent by a client shard).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReadIndex {
    /// Opaque context echoed in the response.
    pub context: u64,
}

/// Answer to [`ReadIndex`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReadIndexResponse {
    /// Echoes the request's context.
    pub context: u64,
    /// The commit index the read must wait for.
    pub index: u64,
}

/// A cluster configuration (joint when `outgoing_voters` is non-empty).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Configuration {
    /// Voters of the (incoming) configuration.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration during a joint change.
    pub outgoing_voters: Vec<u64>,
}

/// One chunk of a snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InstallSnapshot {
    /// Last index covered by the snapshot.
    pub snapshot_index: u64,
    /// Term of `snapshot_index`.
    pub snapshot_term: u64,
    /// The configuration as of `snapshot_index`.
    pub configuration: Configuration,
    /// Byte offset of `data` in the snapshot.
    pub offset: u64,
    /// This chunk's bytes, shared like [`Entry::data`] (a slice of the
    /// snapshot can be sent to several followers without a copy).
    pub data: Bytes,
    /// True for the last chunk.
    pub done: bool,
}

/// Answer to one [`InstallSnapshot`] chunk.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InstallSnapshotResponse {
    /// The offset the follower expects next (the sum of accepted chunks).
    pub next_offset: u64,
    /// True when the chunk was refused (stale term, offset mismatch).
    pub rejected: bool,
}

/// One piece of a snapshot stream. The stream is the snapshot's encoded
/// metadata file (`metadata_bytes` long: configuration, session table, data
/// length and checksum, its own checksum) followed by its data file; the
/// envelope's `term` is the sender's term as leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotChunk {
    /// Last index covered by the snapshot.
    pub snapshot_index: u64,
    /// Term of `snapshot_index`.
    pub snapshot_term: u64,
    /// Length of the metadata prefix of the stream.
    pub metadata_bytes: u64,
    /// Length of the whole stream (metadata then data).
    pub total_bytes: u64,
    /// Byte offset of `data` in the stream.
    pub offset: u64,
    /// The chunk's bytes, at most the engine's chunk bound.
    pub data: Bytes,
    /// CRC32 of `data`.
    pub crc: u32,
    /// True for the chunk that ends the stream.
    pub last: bool,
}

/// Answer to a [`SnapshotChunk`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotChunkAck {
    /// The snapshot this answers for.
    pub snapshot_index: u64,
    /// Its term.
    pub snapshot_term: u64,
    /// The offset of the chunk this answers.
    pub chunk_offset: u64,
    /// The stream offset the receiver wants next (everything before it is
    /// written); after the last chunk, the stream's length.
    pub next_offset: u64,
    /// True when the chunk was refused (out of order, bad checksum, wrong
    /// snapshot): the sender goes back to `next_offset`.
    pub refused: bool,
    /// True once the whole snapshot is durable on the receiver.
    pub complete: bool,
}

/// The body of a [`crate::frame::FrameKind::Raft`] frame: many messages, for
/// many groups, bound for the same peer shard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct RaftBatch {
    /// The messages, in the order they were queued.
    pub messages: Vec<Envelope>,
}

/// A borrowed [`RaftBatch`]: archives to exactly the same bytes
/// ([`ArchivedRaftBatch`]), so a writer can encode a run of queued messages
/// in place instead of moving them into a batch first.
#[derive(Debug, Clone, Copy)]
pub struct RaftBatchRef<'a> {
    /// The messages, in order.
    pub messages: &'a [Envelope],
}

impl rkyv::Archive for RaftBatchRef<'_> {
    type Archived = ArchivedRaftBatch;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        // As `#[derive(Archive)]` resolves the field of `RaftBatch`.
        // SAFETY: `messages` is a field of the archived struct `out` points to.
        let field = unsafe { core::ptr::addr_of_mut!((*out.ptr()).messages) };
        // SAFETY: `field` points into `out`'s place, as this requires.
        let field_out = unsafe { rkyv::Place::from_field_unchecked(out, field) };
        rkyv::vec::ArchivedVec::resolve_from_len(self.messages.len(), resolver, field_out);
    }
}

impl<S> rkyv::Serialize<S> for RaftBatchRef<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    Envelope: rkyv::Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::<ArchivedEnvelope>::serialize_from_slice(self.messages, serializer)
    }
}

pub use client_enums::*;

/// rkyv derives helper types for the fields of struct-like enum variants
/// that carry no docs; this module only exists to allow that.
#[allow(missing_docs)]
mod client_enums {
    use rkyv::{Archive, Deserialize, Serialize};

    /// A client request.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum ClientRequest {
        /// Propose a command to a group under a registered session;
        /// `(session, sequence)` makes a retry apply at most once.
        Propose {
            /// A tag the client picks, echoed in the response (the cluster
            /// never deduplicates by it).
            client_id: u64,
            /// The session the group registered for this client
            /// ([`ClientRequest::RegisterSession`]).
            session: u128,
            /// The client's sequence number within the session.
            sequence: u64,
            /// The lowest sequence the client has not yet had an answer for:
            /// the group forgets the cached results of the ones below it.
            lowest_unanswered: u64,
            /// The target group.
            group: u64,
            /// The command, opaque to the wire.
            payload: Vec<u8>,
        },
        /// Register a session (a 128-bit random id the client made) with a
        /// group, through its log; retrying it is harmless.
        RegisterSession {
            /// A tag the client picks, echoed in the response.
            client_id: u64,
            /// Echoed in the response.
            request_id: u64,
            /// The target group.
            group: u64,
            /// The new session's id.
            session: u128,
        },
        /// A read of a group, linearizable or stale as `consistency` says.
        Read {
            /// The client's id.
            client_id: u64,
            /// Echoed in the response.
            request_id: u64,
            /// The target group.
            group: u64,
            /// The query, opaque to the wire.
            payload: Vec<u8>,
            /// Whether the read must be linearizable (wire version 4).
            consistency: ReadConsistency,
        },
    }

    /// How fresh a [`ClientRequest::Read`] must be. An archived value
    /// outside these variants fails validation: the frame is refused and
    /// the connection closed (`ClosedInvalidArchive`), never guessed at.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
    #[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
    pub enum ReadConsistency {
        /// Reflects every write acknowledged before the read was sent: the
        /// leader confirms its leadership (ReadIndex or lease) and the
        /// answering node waits until it has applied that index.
        #[default]
        Linearizable,
        /// Answered at once by whichever node receives it, from what that
        /// node has applied, without contacting the leader: possibly stale
        /// (it may miss acknowledged writes), never ahead of that node's log.
        Stale,
    }

    /// Why a client request failed.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum ClientError {
        /// This node does not lead the group; `leader_hint` is the leader if known.
        NotLeader {
            /// The node believed to lead the group.
            leader_hint: Option<u64>,
        },
        /// Too many requests in flight; retry later.
        Busy,
        /// The request did not complete in time; its outcome is unknown.
        Timeout,
        /// The node is shutting down.
        Shutdown,
        /// The node's storage failed.
        Storage,
        /// No such group on this node.
        UnknownGroup,
        /// The group does not know the write's session (never registered,
        /// expired or evicted): not applied; the client needs a new session.
        SessionExpired,
        /// The session cannot vouch for this sequence (older than it
        /// remembers, or reused for another command): not applied.
        StaleSequence,
        /// The write was applied, but the state machine's result was
        /// refused by a bound (one result over 4 MiB, or one apply call's
        /// results over 64 MiB): there is no result to answer with, and a
        /// retry of the same sequence gets an empty one. Appended last, so
        /// every other variant keeps its tag; sent only on a connection
        /// whose hello announced client protocol
        /// [`crate::CLIENT_RESULT_TOO_LARGE_VERSION_MIN`] or later (an
        /// older client gets `Storage`, as before).
        ResultTooLarge,
    }
}

/// The answer to one [`ClientRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClientResponse {
    /// Echoes the request's client id.
    pub client_id: u64,
    /// Echoes the `sequence` of a propose or the `request_id` of a read or
    /// a session registration.
    pub request_id: u64,
    /// The group the request addressed.
    pub group: u64,
    /// The node believed to lead the group, when known.
    pub leader_hint: Option<u64>,
    /// What the state machine returned, or why the request failed.
    pub result: Result<Vec<u8>, ClientError>,
}

/// Borrowed bytes that archive as the `Vec<u8>` of an owned type: for
/// encoding a result straight from the buffer that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesRef<'a>(pub &'a [u8]);

impl rkyv::Archive for BytesRef<'_> {
    type Archived = rkyv::vec::ArchivedVec<u8>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S> rkyv::Serialize<S> for BytesRef<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::<u8>::serialize_from_slice(self.0, serializer)
    }
}

/// A [`ClientResponse`] whose result bytes are borrowed: it archives
/// exactly as the owned one does, so a node answers from the buffer its
/// state machine wrote the result into, without a vector per result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponseRef<'a> {
    /// As [`ClientResponse::client_id`].
    pub client_id: u64,
    /// As [`ClientResponse::request_id`].
    pub request_id: u64,
    /// As [`ClientResponse::group`].
    pub group: u64,
    /// As [`ClientResponse::leader_hint`].
    pub leader_hint: Option<u64>,
    /// As [`ClientResponse::result`].
    pub result: Result<BytesRef<'a>, ClientError>,
}

/// What [`ClientResponseRef`]'s fields resolve with.
pub struct ClientResponseRefResolver {
    leader_hint: <Option<u64> as Archive>::Resolver,
    result: Result<rkyv::vec::VecResolver, <ClientError as Archive>::Resolver>,
}

impl Archive for ClientResponseRef<'_> {
    type Archived = ArchivedClientResponse;
    type Resolver = ClientResponseRefResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        // Field by field, as `#[derive(Archive)]` resolves `ClientResponse`.
        rkyv::munge::munge!(let ArchivedClientResponse { client_id, request_id, group, leader_hint, result } = out);
        self.client_id.resolve((), client_id);
        self.request_id.resolve((), request_id);
        self.group.resolve((), group);
        self.leader_hint.resolve(resolver.leader_hint, leader_hint);
        let result_out: rkyv::Place<rkyv::result::ArchivedResult<rkyv::vec::ArchivedVec<u8>, ArchivedClientError>> =
            result;
        self.result.resolve(resolver.result, result_out);
    }
}

impl<S> Serialize<S> for ClientResponseRef<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    ClientError: Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok(ClientResponseRefResolver {
            leader_hint: self.leader_hint.serialize(serializer)?,
            result: self.result.serialize(serializer)?,
        })
    }
}

/// The body of a [`crate::frame::FrameKind::ClientRequests`] frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ClientRequestBatch {
    /// The requests, in order.
    pub requests: Vec<ClientRequest>,
}

/// The body of a [`crate::frame::FrameKind::ClientResponses`] frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ClientResponseBatch {
    /// The responses, in order of completion.
    pub responses: Vec<ClientResponse>,
}

/// Fixed bytes counted per message on top of its variable parts by
/// [`Envelope::encoded_bytes_max`]: a conservative bound on the archived
/// envelope, body and vector headers.
pub const ENVELOPE_FIXED_BYTES_MAX: usize = 128;
/// Archived bytes per entry on top of its payload (a conservative bound).
pub const ENTRY_FIXED_BYTES_MAX: usize = 48;

impl Envelope {
    /// An upper bound on the bytes this message takes inside a frame body.
    ///
    /// Outbound queues count this against their byte bound, so the frame that
    /// carries a full queue never exceeds the frame size limit.
    pub fn encoded_bytes_max(&self) -> usize {
        // Each variable part may need up to 15 bytes of alignment padding.
        const PAD: usize = 16;
        let variable = match &self.body {
            RaftBody::AppendEntries(append) => append
                .entries
                .iter()
                .map(|entry| ENTRY_FIXED_BYTES_MAX + entry.data.len() + PAD)
                .sum(),
            RaftBody::CoalescedHeartbeat(beat) => beat.groups.len() * 24 + PAD,
            RaftBody::CoalescedHeartbeatResponse(ack) => ack.groups.len() * 16 + PAD,
            RaftBody::InstallSnapshot(chunk) => {
                let configuration = &chunk.configuration;
                let ids =
                    configuration.voters.len() + configuration.learners.len() + configuration.outgoing_voters.len();
                ids * 8 + chunk.data.len() + 4 * PAD
            }
            RaftBody::SnapshotChunk(chunk) => chunk.data.len() + PAD,
            _ => 0,
        };
        ENVELOPE_FIXED_BYTES_MAX + variable
    }
}
