//! The admin protocol: what `coraft-admin` (or any operator tool) asks a node
//! and what the node answers, as rkyv bodies of the
//! [`FrameKind::AdminRequest`](crate::frame::FrameKind::AdminRequest) and
//! [`FrameKind::AdminResponse`](crate::frame::FrameKind::AdminResponse) frames.
//!
//! Admin frames travel on a client connection (handshake role
//! [`Role::Client`](crate::handshake::Role::Client)), next to client requests,
//! on any shard's listener of the node: every node serves every admin request
//! for every group it hosts. Each request carries [`ADMIN_PROTOCOL_VERSION`],
//! which evolves apart from the frame layout ([`crate::WIRE_VERSION`]), and the
//! cluster id the tool believes it talks to; the answer echoes the request's
//! id. Failures are typed ([`AdminError`]), never free text to match on.
//!
//! Admin requests are input from outside like any peer's bytes: a node does
//! not validate an admin request's archive in the decoder but when it reads
//! it ([`crate::Frame::admin_request`]), so that a body it cannot read is
//! answered with [`AdminError::BadRequest`] instead of a closed connection.

use rkyv::{Archive, Deserialize, Serialize};

/// The admin protocol version this build speaks. A request of another
/// version is answered with [`AdminError::UnsupportedVersion`].
///
/// Version 2 added [`NodeReport::election_priority`]. The field sits in what
/// was the padding at the end of version 1's archived `NodeReport`, so the
/// archived size of every response is unchanged and each side still reads
/// the other's `UnsupportedVersion` answer (the `Err` side of the result
/// keeps its layout): a tool and a node of versions 1 and 2 get that error,
/// never an unreadable frame.
///
/// Version 3 added [`AdminRequest::StatusPage`] (a node's status in pages,
/// so a node of any number of groups can answer) and
/// [`AdminError::AnswerTooLarge`]. Both are appended (the last variant of
/// their enum) and no larger than the largest one before, so the archived
/// size of every request and response is again unchanged: versions 2 and 3
/// read each other's `UnsupportedVersion` answer, and a version 2 node
/// answers a `StatusPage` it cannot read with `BadRequest`.
///
/// Version 4 added [`AdminRequest::Installs`] and [`AdminReply::Installs`]
/// (the snapshot streams in flight on the node), again appended and no
/// larger than the largest variant before, so the archived size of every
/// request and response is unchanged. Every request of version 3 reads and
/// is answered alike in version 4, so a version 4 node serves a version 3
/// tool ([`ADMIN_SERVED_VERSION_MIN`]); a version 4 tool that a version 3
/// node answers `UnsupportedVersion` asks again at 3
/// (`coraft::admin::AdminClient`), without install progress.
///
/// Version 5 added [`AdminRequest::Shards`] and [`AdminReply::Shards`]
/// (each shard's state: serving, failed with its reason, or stopped), again
/// appended and no larger than the largest variant before. Every request
/// of versions 3 and 4 reads and is answered alike in version 5, so a
/// version 5 node serves both; a version 5 tool that a version 3 or 4 node
/// answers `UnsupportedVersion` asks again at that version, without shard
/// states.
///
/// Version 6 added [`AdminRequest::CreateGroup`] and
/// [`AdminRequest::RemoveGroup`] (a group created or removed at run time,
/// `Node::create_group` and `Node::remove_group`), answered with
/// [`AdminReply::GroupCreated`] and [`AdminReply::GroupRemoved`]: appended
/// again and no larger than the largest variant before, so the archived
/// size of every request and response is unchanged. Every request of
/// versions 3 to 5 reads and is answered alike in version 6, so a version 6
/// node serves them all. A version 5 node cannot read the new requests: it
/// answers them `BadRequest` (request id 0) in a frame that names its
/// version 5, and a version 6 tool says the node is too old for them
/// (`coraft::admin::AdminCallError::OlderProtocol`).
///
/// [`AdminRequest::Addresses`] came late in version 1 (a version 1 node
/// may not know it: it answers `BadRequest`); every node of version 2 and
/// up serves it. Its request and answer are laid out alike in every version
/// that has it, so a node serves it to a tool of any version from
/// [`ADMIN_ADDRESSES_VERSION_MIN`] up, and a joining node asks an older seed
/// again at the seed's version (`coraft::admin::seed_addresses`).
pub const ADMIN_PROTOCOL_VERSION: u16 = 6;

/// The oldest admin protocol version whose every request a node of this
/// version serves: version 3's requests and answers are laid out alike in
/// versions 4 to 6 (see [`ADMIN_PROTOCOL_VERSION`]).
pub const ADMIN_SERVED_VERSION_MIN: u16 = 3;

/// The oldest admin protocol version that has [`AdminRequest::Installs`].
pub const ADMIN_INSTALLS_VERSION_MIN: u16 = 4;

/// The oldest admin protocol version that has [`AdminRequest::Shards`].
pub const ADMIN_SHARDS_VERSION_MIN: u16 = 5;

/// The oldest admin protocol version that has [`AdminRequest::CreateGroup`]
/// and [`AdminRequest::RemoveGroup`].
pub const ADMIN_GROUPS_VERSION_MIN: u16 = 6;

/// Bound on the streams one [`AdminReply::Installs`] answer lists (the
/// answer's `total` counts them all).
pub const ADMIN_INSTALLS_MAX: usize = 4096;

/// The oldest admin protocol version whose every node serves
/// [`AdminRequest::Addresses`] (see [`ADMIN_PROTOCOL_VERSION`]).
pub const ADMIN_ADDRESSES_VERSION_MIN: u16 = 2;

/// Bound on the groups one [`AdminRequest::StatusPage`] answer holds.
pub const ADMIN_STATUS_PAGE_GROUPS_MAX: u32 = 1024;

/// Bound on the bytes one status answer may take, as
/// [`group_report_bytes_max`] counts them: a quarter of a frame's body
/// ([`crate::FRAME_BODY_MAX_BYTES`]), so that fields added to the reports
/// later still fit. A [`AdminRequest::Status`] whose answer would be larger
/// is answered [`AdminError::AnswerTooLarge`]; a
/// [`AdminRequest::StatusPage`] ends its page before it.
pub const ADMIN_ANSWER_BYTES_MAX: usize = crate::frame::FRAME_BODY_MAX_BYTES / 4;

/// What [`group_report_bytes_max`] counts for a group's fixed fields (its
/// archived size is about half of it).
pub const GROUP_REPORT_FIXED_BYTES: usize = 256;

/// What [`group_report_bytes_max`] counts per [`PeerReport`] (archived: 32).
pub const PEER_REPORT_BYTES: usize = 64;

/// At least the bytes `report` takes in an archived answer (its fixed
/// fields, 8 per listed node, [`PEER_REPORT_BYTES`] per peer): what
/// [`ADMIN_ANSWER_BYTES_MAX`] bounds.
pub fn group_report_bytes_max(report: &GroupReport) -> usize {
    let nodes = report.voters.len() + report.outgoing_voters.len() + report.learners.len();
    GROUP_REPORT_FIXED_BYTES + 8 * nodes + PEER_REPORT_BYTES * report.peers.len()
}

/// Bound on the groups one [`AdminRequest::Status`] may name.
pub const ADMIN_STATUS_GROUPS_MAX: usize = 1 << 16;

/// Bound on the members one membership request may name.
pub const ADMIN_MEMBERS_MAX: usize = 1024;

/// Bound on the bytes of the free-text reason of an [`AdminError`].
pub const ADMIN_REASON_BYTES_MAX: usize = 4096;

/// The body of an [`AdminRequest`](crate::frame::FrameKind::AdminRequest) frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AdminRequestFrame {
    /// The admin protocol version of the sender ([`ADMIN_PROTOCOL_VERSION`]).
    pub version: u16,
    /// The cluster the sender means to talk to; another cluster's node
    /// answers [`AdminError::WrongCluster`] (the handshake refuses it first).
    pub cluster_id: u64,
    /// Echoed in the response.
    pub request_id: u64,
    /// What to do.
    pub request: AdminRequest,
}

/// The body of an [`AdminResponse`](crate::frame::FrameKind::AdminResponse) frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AdminResponseFrame {
    /// The admin protocol version of the node ([`ADMIN_PROTOCOL_VERSION`]).
    pub version: u16,
    /// The request's id (0 when the request could not be read at all).
    pub request_id: u64,
    /// The node answering.
    pub node_id: u64,
    /// What happened.
    pub result: Result<AdminReply, AdminError>,
}

/// A group's state on the node answering, for [`AdminReply::Status`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupReport {
    /// The group.
    pub group: u64,
    /// The node's role in it.
    pub role: AdminRole,
    /// The node's term in it.
    pub term: u64,
    /// The leader the node knows.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Index of the newest snapshot on this node (0: none).
    pub snapshot_index: u64,
    /// The group is idle and quiet here.
    pub quiesced: bool,
    /// Voters of the group's configuration, as this node knows it.
    pub voters: Vec<u64>,
    /// Voters of the outgoing configuration while a joint change is in
    /// flight (empty otherwise).
    pub outgoing_voters: Vec<u64>,
    /// Learners of the group's configuration, as this node knows it.
    pub learners: Vec<u64>,
    /// Per-peer replication (only a leader reports it).
    pub peers: Vec<PeerReport>,
}

/// One peer as the leader sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerReport {
    /// The peer.
    pub node: u64,
    /// Highest index known replicated on it.
    pub match_index: u64,
    /// Next index to send it.
    pub next_index: u64,
    /// Entries it is behind the leader's last index.
    pub lag: u64,
}

/// A node's answer to [`AdminRequest::Status`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NodeReport {
    /// The node.
    pub node: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// Its shard count.
    pub shards: u32,
    /// The groups asked about (all it hosts when none were named).
    pub groups: Vec<GroupReport>,
    /// Its election priority (the config's `raft.election_priority`,
    /// 0..=10; 0: no preference), which `rebalance` honours. Since admin
    /// protocol version 2.
    pub election_priority: u8,
}

/// One snapshot stream in flight on the node answering, for
/// [`AdminReply::Installs`]. Since admin protocol version 4.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InstallReport {
    /// The group.
    pub group: u64,
    /// True on the leader sending it, false on the follower receiving it.
    pub sending: bool,
    /// The follower it goes to (sending) or the leader it comes from.
    pub peer: u64,
    /// The last index the snapshot covers.
    pub snapshot_index: u64,
    /// That entry's term.
    pub snapshot_term: u64,
    /// The stream's length in bytes (the metadata, then the data).
    pub total_bytes: u64,
    /// Sending: the furthest stream offset sent. Receiving: the bytes
    /// received and written.
    pub sent_bytes: u64,
    /// Bytes the follower wrote and acknowledged (receiving: the same as
    /// `sent_bytes`, each chunk is acknowledged once written).
    pub acknowledged_bytes: u64,
    /// Milliseconds since the stream started (receiving: its first chunk).
    pub elapsed_ms: u64,
}

/// One shard of the node answering, for [`AdminReply::Shards`]. Since
/// admin protocol version 5.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardReport {
    /// The shard's index on the node (group `g` lives on shard
    /// `g % shards`).
    pub shard: u32,
    /// Whether it serves.
    pub state: ShardState,
    /// The groups it hosts (0 when it stopped: it cannot say).
    pub groups: u64,
    /// Why it does not serve (empty when it serves), at most
    /// [`ADMIN_REASON_BYTES_MAX`] bytes.
    pub reason: String,
}

/// A shard's state, for [`ShardReport`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ShardState {
    /// It serves its groups.
    Serving,
    /// Its WAL failed (a failed fdatasync, a full disk): it has stopped
    /// acting as a replica of its groups until the node is restarted
    /// (fail-stop; `coraft_wal_failed` is 1). It still answers status.
    Failed,
    /// Its executor is gone: it answers nothing, its groups' status is
    /// not reported.
    Stopped,
}

pub use admin_enums::*;

/// rkyv derives helper types for the fields of struct-like enum variants
/// that carry no docs; this module only exists to allow that.
#[allow(missing_docs)]
mod admin_enums {
    use rkyv::{Archive, Deserialize, Serialize};

    use super::{InstallReport, NodeReport, ShardReport};

    /// What an operator asks a node.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum AdminRequest {
        /// The state of the named groups on this node (every hosted group
        /// when `groups` is empty), at most [`super::ADMIN_STATUS_GROUPS_MAX`].
        Status { groups: Vec<u64> },
        /// Hand leadership of `group` to node `to` (sent to the leader; a
        /// follower answers [`AdminError::NotLeader`] with its hint). The
        /// answer says the transfer started; the new leader's status shows
        /// when it ended.
        TransferLeader { group: u64, to: u64 },
        /// Take a snapshot of `group` on this node; answered with its index
        /// once it is durable.
        Snapshot { group: u64 },
        /// Add `member` (its address required) to `group` as a learner (to
        /// the leader); answered once committed.
        AddLearner { group: u64, member: MemberSpec },
        /// Make the learner `node` a voter of `group` (to the leader).
        Promote { group: u64, node: u64 },
        /// Add `member` (its address required) as a learner, catch it up,
        /// then promote it (to the leader); answered once promoted.
        AddVoter { group: u64, member: MemberSpec },
        /// Remove `node`, voter or learner, from `group` (to the leader).
        Remove { group: u64, node: u64 },
        /// Make `voters` the voters of `group`, through joint consensus
        /// when more than one changes (to the leader); a node new to the
        /// group needs its address. Answered once the joint configuration
        /// is left.
        Change { group: u64, voters: Vec<MemberSpec> },
        /// UNSAFE: this node adopts `voters` as the configuration of
        /// `group` without consensus, for a group whose majority is gone
        /// for good. It can lose acknowledged writes; the node refuses it
        /// unless `confirm_data_loss` is true.
        ResetPeers {
            group: u64,
            voters: Vec<u64>,
            confirm_data_loss: bool,
        },
        /// The shard addresses of every node this node knows (its peers and
        /// the nodes the address books it applied name): a node started
        /// to join asks its seed, so that it can answer a leader that is
        /// not its seed.
        Addresses,
        /// The state of the groups this node hosts whose ids are above
        /// `after`, in ascending order: at most `groups_max` of them (at
        /// most [`super::ADMIN_STATUS_PAGE_GROUPS_MAX`]), fewer when the
        /// answer would exceed [`super::ADMIN_ANSWER_BYTES_MAX`] bytes.
        /// Answered with [`AdminReply::Status`]; an empty page means there
        /// are no more. Since admin protocol version 3.
        StatusPage { after: u64, groups_max: u32 },
        /// The snapshot streams (InstallSnapshot) in flight on this node,
        /// both ways, for every group it hosts. Answered with
        /// [`AdminReply::Installs`]. Since admin protocol version 4.
        Installs,
        /// The state of each of the node's shards. Answered with
        /// [`AdminReply::Shards`]. Since admin protocol version 5.
        Shards,
        /// Create `group` on this node with `voters` (this node among
        /// them, at most [`super::ADMIN_MEMBERS_MAX`]) as its first
        /// configuration (`Node::create_group`): durable before the
        /// answer, back after a restart. Ask every voter. Answered with
        /// [`AdminReply::GroupCreated`], also when it exists already with
        /// these voters. Since admin protocol version 6.
        CreateGroup { group: u64, voters: Vec<u64> },
        /// Remove `group`, a group created at run time, from this node
        /// (`Node::remove_group`): its state machine, snapshots and WAL
        /// records go, its id is retired here, a restart does not bring it
        /// back. Its configuration does not change: to retire the group,
        /// remove it on every member. Answered with
        /// [`AdminReply::GroupRemoved`], also when it was removed already.
        /// Since admin protocol version 6.
        RemoveGroup { group: u64 },
    }

    /// One node's shard addresses, by shard index (`ip:port` each).
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct NodeAddresses {
        /// The node's id.
        pub node: u64,
        /// Its shards' listen addresses.
        pub shard_addresses: Vec<String>,
    }

    /// A node named by a membership request.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub struct MemberSpec {
        /// The node's id.
        pub node: u64,
        /// The `ip:port` its shard 0 listens on (shard `s` on port + `s`,
        /// as `coraft-node` binds); needed for a node new to the group.
        pub address: Option<String>,
    }

    /// A node's role in a group.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum AdminRole {
        Follower,
        PreCandidate,
        Candidate,
        Leader,
    }

    /// What a node did.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum AdminReply {
        /// The answer to [`AdminRequest::Status`].
        Status(NodeReport),
        /// The leader started handing leadership over.
        TransferStarted,
        /// The snapshot is durable at this index.
        Snapshot { index: u64 },
        /// The membership change is committed (and, for a joint change,
        /// the joint configuration left); for a reset, adopted here.
        MembershipChanged,
        /// The answer to [`AdminRequest::Addresses`], at most
        /// `CONFIGURATION_MEMBERS_MAX` nodes.
        Addresses(Vec<NodeAddresses>),
        /// The answer to [`AdminRequest::Installs`]: at most
        /// [`super::ADMIN_INSTALLS_MAX`] streams, by group, and how many
        /// there are in all. Since admin protocol version 4.
        Installs { installs: Vec<InstallReport>, total: u64 },
        /// The answer to [`AdminRequest::Shards`]: one report per shard, by
        /// index (as many as the node runs: at most the config's
        /// `SHARD_COUNT_LIMIT`). Since
        /// admin protocol version 5.
        Shards(Vec<ShardReport>),
        /// The answer to [`AdminRequest::CreateGroup`]: the group exists
        /// here (durably). Since admin protocol version 6.
        GroupCreated { group: u64 },
        /// The answer to [`AdminRequest::RemoveGroup`]: the group is gone
        /// from this node (durably). Since admin protocol version 6.
        GroupRemoved { group: u64 },
    }

    /// Why an admin request failed.
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[rkyv(derive(Debug))]
    pub enum AdminError {
        /// The node does not host this group.
        UnknownGroup { group: u64 },
        /// The request needs the group's leader; this node is not it.
        NotLeader { group: u64, leader_hint: Option<u64> },
        /// Another membership change of the group is still in flight.
        ChangeInProgress { group: u64 },
        /// The request names another cluster than the node's.
        WrongCluster { expected: u64, found: u64 },
        /// The node speaks another admin protocol version.
        UnsupportedVersion { found: u16, supported: u16 },
        /// The request is malformed or asks for something impossible; the
        /// reason says what (at most [`super::ADMIN_REASON_BYTES_MAX`] bytes).
        BadRequest { reason: String },
        /// A named bound of the node was reached; retry later.
        Busy { bound: String },
        /// The request did not complete in time; its outcome is unknown.
        Timeout,
        /// The node is shutting down.
        Shutdown,
        /// The node tried and failed (storage, snapshot); the reason says why.
        Failed { reason: String },
        /// The answer would take `bytes` bytes, more than `bytes_max`
        /// ([`super::ADMIN_ANSWER_BYTES_MAX`]): ask for the status in pages
        /// ([`AdminRequest::StatusPage`]) or about fewer groups. Since admin
        /// protocol version 3.
        AnswerTooLarge { bytes: u64, bytes_max: u64 },
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::UnknownGroup { group } => write!(f, "unknown group {group}: the node does not host it"),
            AdminError::NotLeader { group, leader_hint } => match leader_hint {
                Some(leader) => write!(f, "not the leader of group {group} (node {leader} leads it)"),
                None => write!(f, "not the leader of group {group} (no leader known)"),
            },
            AdminError::ChangeInProgress { group } => {
                write!(
                    f,
                    "group {group} has a membership change in progress: retry once it ends"
                )
            }
            AdminError::WrongCluster { expected, found } => {
                write!(
                    f,
                    "this node belongs to cluster {expected}, the request names cluster {found}"
                )
            }
            AdminError::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "admin protocol version {found} is not supported (the node speaks {supported})"
                )
            }
            AdminError::BadRequest { reason } => write!(f, "bad request: {reason}"),
            AdminError::Busy { bound } => write!(f, "busy: {bound} reached, retry later"),
            AdminError::Timeout => write!(f, "timed out (the outcome is unknown)"),
            AdminError::Shutdown => write!(f, "the node is shutting down"),
            AdminError::Failed { reason } => write!(f, "failed: {reason}"),
            AdminError::AnswerTooLarge { bytes, bytes_max } => write!(
                f,
                "the answer would take {bytes} bytes, more than ADMIN_ANSWER_BYTES_MAX ({bytes_max}): \
                 ask for the status in pages (StatusPage, as coraft-admin does) or about fewer groups"
            ),
        }
    }
}

/// `reason` cut to at most [`ADMIN_REASON_BYTES_MAX`] bytes, on a character
/// boundary, so an error's text cannot grow a response without bound.
pub fn bounded_reason(reason: impl Into<String>) -> String {
    let mut reason = reason.into();
    if reason.len() > ADMIN_REASON_BYTES_MAX {
        let mut end = ADMIN_REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    //! Versions 1 to 6 of the admin protocol must read each other's
    //! `UnsupportedVersion` answer: version 1's response layout (version 2's
    //! is the same size) and version 2's request layout, copied here,
    //! against this build's.

    use rkyv::{Archive, Deserialize, Serialize};

    use super::*;

    #[derive(Archive, Serialize, Deserialize)]
    struct NodeReportV1 {
        node: u64,
        cluster_id: u64,
        shards: u32,
        groups: Vec<GroupReport>,
    }

    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminReplyV1 {
        Status(NodeReportV1),
        TransferStarted,
        Snapshot { index: u64 },
        MembershipChanged,
        Addresses(Vec<NodeAddresses>),
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminResponseFrameV1 {
        version: u16,
        request_id: u64,
        node_id: u64,
        result: Result<AdminReplyV1, AdminError>,
    }

    /// Version 2's requests: this build's without `StatusPage`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminRequestV2 {
        Status {
            groups: Vec<u64>,
        },
        TransferLeader {
            group: u64,
            to: u64,
        },
        Snapshot {
            group: u64,
        },
        AddLearner {
            group: u64,
            member: MemberSpec,
        },
        Promote {
            group: u64,
            node: u64,
        },
        AddVoter {
            group: u64,
            member: MemberSpec,
        },
        Remove {
            group: u64,
            node: u64,
        },
        Change {
            group: u64,
            voters: Vec<MemberSpec>,
        },
        ResetPeers {
            group: u64,
            voters: Vec<u64>,
            confirm_data_loss: bool,
        },
        Addresses,
    }

    /// Version 3's requests: this build's without `Installs`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminRequestV3 {
        Status {
            groups: Vec<u64>,
        },
        TransferLeader {
            group: u64,
            to: u64,
        },
        Snapshot {
            group: u64,
        },
        AddLearner {
            group: u64,
            member: MemberSpec,
        },
        Promote {
            group: u64,
            node: u64,
        },
        AddVoter {
            group: u64,
            member: MemberSpec,
        },
        Remove {
            group: u64,
            node: u64,
        },
        Change {
            group: u64,
            voters: Vec<MemberSpec>,
        },
        ResetPeers {
            group: u64,
            voters: Vec<u64>,
            confirm_data_loss: bool,
        },
        Addresses,
        StatusPage {
            after: u64,
            groups_max: u32,
        },
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminRequestFrameV3 {
        version: u16,
        cluster_id: u64,
        request_id: u64,
        request: AdminRequestV3,
    }

    /// Version 3's answers: this build's without `Installs`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminReplyV3 {
        Status(NodeReport),
        TransferStarted,
        Snapshot { index: u64 },
        MembershipChanged,
        Addresses(Vec<NodeAddresses>),
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminResponseFrameV3 {
        version: u16,
        request_id: u64,
        node_id: u64,
        result: Result<AdminReplyV3, AdminError>,
    }

    #[test]
    fn version_3_requests_read_as_version_4_and_version_4_status_answers_read_as_version_3() {
        assert_eq!(
            std::mem::size_of::<ArchivedAdminRequestFrame>(),
            std::mem::size_of::<ArchivedAdminRequestFrameV3>()
        );
        assert_eq!(
            std::mem::size_of::<ArchivedAdminResponseFrame>(),
            std::mem::size_of::<ArchivedAdminResponseFrameV3>()
        );
        let old = AdminRequestFrameV3 {
            version: 3,
            cluster_id: 7,
            request_id: 9,
            request: AdminRequestV3::StatusPage {
                after: 5,
                groups_max: 10,
            },
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let read = rkyv::from_bytes::<AdminRequestFrame, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(
            read.request,
            AdminRequest::StatusPage {
                after: 5,
                groups_max: 10
            }
        );
        // A version 4 node's status answer, as a version 3 tool reads it.
        let answer = AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id: 9,
            node_id: 2,
            result: Ok(AdminReply::Status(NodeReport {
                node: 2,
                cluster_id: 7,
                shards: 1,
                groups: vec![report(1, 3, 2)],
                election_priority: 4,
            })),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&answer).unwrap();
        let read = rkyv::from_bytes::<AdminResponseFrameV3, rkyv::rancor::Error>(&bytes).unwrap();
        match read.result {
            Ok(AdminReplyV3::Status(report)) => assert_eq!(report.groups, vec![self::report(1, 3, 2)]),
            _ => panic!("a version 3 tool reads a version 4 status answer"),
        }
        // The new request does not read as version 3 (a version 3 node
        // answers it BadRequest, if its version check let it through).
        let new = AdminRequestFrame {
            version: ADMIN_PROTOCOL_VERSION,
            cluster_id: 7,
            request_id: 10,
            request: AdminRequest::Installs,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&new).unwrap();
        assert!(rkyv::from_bytes::<AdminRequestFrameV3, rkyv::rancor::Error>(&bytes).is_err());
    }

    /// Version 4's requests: this build's without `Shards`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminRequestV4 {
        Status {
            groups: Vec<u64>,
        },
        TransferLeader {
            group: u64,
            to: u64,
        },
        Snapshot {
            group: u64,
        },
        AddLearner {
            group: u64,
            member: MemberSpec,
        },
        Promote {
            group: u64,
            node: u64,
        },
        AddVoter {
            group: u64,
            member: MemberSpec,
        },
        Remove {
            group: u64,
            node: u64,
        },
        Change {
            group: u64,
            voters: Vec<MemberSpec>,
        },
        ResetPeers {
            group: u64,
            voters: Vec<u64>,
            confirm_data_loss: bool,
        },
        Addresses,
        StatusPage {
            after: u64,
            groups_max: u32,
        },
        Installs,
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminRequestFrameV4 {
        version: u16,
        cluster_id: u64,
        request_id: u64,
        request: AdminRequestV4,
    }

    /// Version 4's answers: this build's without `Shards`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminReplyV4 {
        Status(NodeReport),
        TransferStarted,
        Snapshot { index: u64 },
        MembershipChanged,
        Addresses(Vec<NodeAddresses>),
        Installs { installs: Vec<InstallReport>, total: u64 },
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminResponseFrameV4 {
        version: u16,
        request_id: u64,
        node_id: u64,
        result: Result<AdminReplyV4, AdminError>,
    }

    #[test]
    fn version_4_requests_read_as_version_5_and_version_5_answers_of_version_4_kinds_read_as_version_4() {
        assert_eq!(
            std::mem::size_of::<ArchivedAdminRequestFrame>(),
            std::mem::size_of::<ArchivedAdminRequestFrameV4>()
        );
        assert_eq!(
            std::mem::size_of::<ArchivedAdminResponseFrame>(),
            std::mem::size_of::<ArchivedAdminResponseFrameV4>()
        );
        let old = AdminRequestFrameV4 {
            version: 4,
            cluster_id: 7,
            request_id: 9,
            request: AdminRequestV4::Installs,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let read = rkyv::from_bytes::<AdminRequestFrame, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(read.request, AdminRequest::Installs);
        // A version 5 node's status answer, as a version 4 tool reads it.
        let answer = AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id: 9,
            node_id: 2,
            result: Ok(AdminReply::Status(NodeReport {
                node: 2,
                cluster_id: 7,
                shards: 1,
                groups: vec![report(1, 3, 2)],
                election_priority: 4,
            })),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&answer).unwrap();
        let read = rkyv::from_bytes::<AdminResponseFrameV4, rkyv::rancor::Error>(&bytes).unwrap();
        match read.result {
            Ok(AdminReplyV4::Status(report)) => assert_eq!(report.groups, vec![self::report(1, 3, 2)]),
            _ => panic!("a version 4 tool reads a version 5 status answer"),
        }
        // The new request does not read as version 4 (a version 4 node
        // answers it UnsupportedVersion, or BadRequest past that check).
        let new = AdminRequestFrame {
            version: ADMIN_PROTOCOL_VERSION,
            cluster_id: 7,
            request_id: 10,
            request: AdminRequest::Shards,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&new).unwrap();
        assert!(rkyv::from_bytes::<AdminRequestFrameV4, rkyv::rancor::Error>(&bytes).is_err());
        // The new answer reads back, reason and all.
        let shards = AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id: 10,
            node_id: 2,
            result: Ok(AdminReply::Shards(vec![
                ShardReport {
                    shard: 0,
                    state: ShardState::Failed,
                    groups: 3,
                    reason: "no space left on device".into(),
                },
                ShardReport {
                    shard: 1,
                    state: ShardState::Stopped,
                    groups: 0,
                    reason: String::new(),
                },
            ])),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&shards).unwrap();
        assert_eq!(
            rkyv::from_bytes::<AdminResponseFrame, rkyv::rancor::Error>(&bytes).unwrap(),
            shards
        );
    }

    /// Version 5's requests: this build's without `CreateGroup` and
    /// `RemoveGroup`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminRequestV5 {
        Status {
            groups: Vec<u64>,
        },
        TransferLeader {
            group: u64,
            to: u64,
        },
        Snapshot {
            group: u64,
        },
        AddLearner {
            group: u64,
            member: MemberSpec,
        },
        Promote {
            group: u64,
            node: u64,
        },
        AddVoter {
            group: u64,
            member: MemberSpec,
        },
        Remove {
            group: u64,
            node: u64,
        },
        Change {
            group: u64,
            voters: Vec<MemberSpec>,
        },
        ResetPeers {
            group: u64,
            voters: Vec<u64>,
            confirm_data_loss: bool,
        },
        Addresses,
        StatusPage {
            after: u64,
            groups_max: u32,
        },
        Installs,
        Shards,
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminRequestFrameV5 {
        version: u16,
        cluster_id: u64,
        request_id: u64,
        request: AdminRequestV5,
    }

    /// Version 5's answers: this build's without `GroupCreated` and
    /// `GroupRemoved`.
    #[derive(Archive, Serialize, Deserialize)]
    #[allow(dead_code)]
    enum AdminReplyV5 {
        Status(NodeReport),
        TransferStarted,
        Snapshot { index: u64 },
        MembershipChanged,
        Addresses(Vec<NodeAddresses>),
        Installs { installs: Vec<InstallReport>, total: u64 },
        Shards(Vec<ShardReport>),
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminResponseFrameV5 {
        version: u16,
        request_id: u64,
        node_id: u64,
        result: Result<AdminReplyV5, AdminError>,
    }

    #[test]
    fn version_5_requests_read_as_version_6_and_version_6_answers_of_version_5_kinds_read_as_version_5() {
        assert_eq!(
            std::mem::size_of::<ArchivedAdminRequestFrame>(),
            std::mem::size_of::<ArchivedAdminRequestFrameV5>()
        );
        assert_eq!(
            std::mem::size_of::<ArchivedAdminResponseFrame>(),
            std::mem::size_of::<ArchivedAdminResponseFrameV5>()
        );
        let old = AdminRequestFrameV5 {
            version: 5,
            cluster_id: 7,
            request_id: 9,
            request: AdminRequestV5::Shards,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let read = rkyv::from_bytes::<AdminRequestFrame, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(read.request, AdminRequest::Shards);
        // A version 6 node's shard states, as a version 5 tool reads them.
        let answer = AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id: 9,
            node_id: 2,
            result: Ok(AdminReply::Shards(vec![ShardReport {
                shard: 0,
                state: ShardState::Serving,
                groups: 3,
                reason: String::new(),
            }])),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&answer).unwrap();
        let read = rkyv::from_bytes::<AdminResponseFrameV5, rkyv::rancor::Error>(&bytes).unwrap();
        match read.result {
            Ok(AdminReplyV5::Shards(shards)) => assert_eq!(shards[0].groups, 3),
            _ => panic!("a version 5 tool reads a version 6 shards answer"),
        }
        // The new requests do not read as version 5 (a version 5 node
        // answers them BadRequest, in a frame of its version).
        for request in [
            AdminRequest::CreateGroup {
                group: 100,
                voters: vec![1, 2, 3],
            },
            AdminRequest::RemoveGroup { group: 100 },
        ] {
            let new = AdminRequestFrame {
                version: ADMIN_PROTOCOL_VERSION,
                cluster_id: 7,
                request_id: 10,
                request,
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&new).unwrap();
            assert!(rkyv::from_bytes::<AdminRequestFrameV5, rkyv::rancor::Error>(&bytes).is_err());
            assert_eq!(
                rkyv::from_bytes::<AdminRequestFrame, rkyv::rancor::Error>(&bytes).unwrap(),
                new
            );
        }
        // The new answers read back.
        for result in [
            Ok(AdminReply::GroupCreated { group: 100 }),
            Ok(AdminReply::GroupRemoved { group: 100 }),
        ] {
            let answer = AdminResponseFrame {
                version: ADMIN_PROTOCOL_VERSION,
                request_id: 10,
                node_id: 2,
                result,
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&answer).unwrap();
            assert_eq!(
                rkyv::from_bytes::<AdminResponseFrame, rkyv::rancor::Error>(&bytes).unwrap(),
                answer
            );
        }
    }

    #[derive(Archive, Serialize, Deserialize)]
    struct AdminRequestFrameV2 {
        version: u16,
        cluster_id: u64,
        request_id: u64,
        request: AdminRequestV2,
    }

    #[test]
    fn a_version_2_request_reads_as_version_3_and_a_status_page_does_not_read_as_version_2() {
        assert_eq!(
            std::mem::size_of::<ArchivedAdminRequestFrame>(),
            std::mem::size_of::<ArchivedAdminRequestFrameV2>(),
            "the request's archived size must not change between admin versions"
        );
        let old = AdminRequestFrameV2 {
            version: 2,
            cluster_id: 7,
            request_id: 9,
            request: AdminRequestV2::Addresses,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let read = rkyv::from_bytes::<AdminRequestFrame, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(read.request, AdminRequest::Addresses);
        assert_eq!((read.version, read.cluster_id, read.request_id), (2, 7, 9));
        let new = AdminRequestFrame {
            version: ADMIN_PROTOCOL_VERSION,
            cluster_id: 7,
            request_id: 10,
            request: AdminRequest::StatusPage {
                after: 0,
                groups_max: ADMIN_STATUS_PAGE_GROUPS_MAX,
            },
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&new).unwrap();
        assert!(rkyv::from_bytes::<AdminRequestFrameV2, rkyv::rancor::Error>(&bytes).is_err());
    }

    fn report(group: u64, members: usize, peers: usize) -> GroupReport {
        GroupReport {
            group,
            role: AdminRole::Leader,
            term: u64::MAX,
            leader: Some(u64::MAX),
            commit_index: u64::MAX,
            applied_index: u64::MAX,
            last_index: u64::MAX,
            snapshot_index: u64::MAX,
            quiesced: true,
            voters: (0..members as u64).collect(),
            outgoing_voters: (0..members as u64).collect(),
            learners: (0..members as u64).collect(),
            peers: (0..peers as u64)
                .map(|node| PeerReport {
                    node,
                    match_index: u64::MAX,
                    next_index: u64::MAX,
                    lag: u64::MAX,
                })
                .collect(),
        }
    }

    #[test]
    fn the_counted_bytes_of_a_status_answer_are_at_least_its_archived_bytes() {
        for (groups, members, peers) in [(1, 0, 0), (1000, 3, 3), (100, 1024, 1024), (5000, 1, 0)] {
            let reports: Vec<GroupReport> = (0..groups).map(|g| report(g, members, peers)).collect();
            let counted: usize = reports.iter().map(group_report_bytes_max).sum();
            let answer = AdminResponseFrame {
                version: ADMIN_PROTOCOL_VERSION,
                request_id: 1,
                node_id: 1,
                result: Ok(AdminReply::Status(NodeReport {
                    node: 1,
                    cluster_id: 1,
                    shards: 1,
                    groups: reports,
                    election_priority: 10,
                })),
            };
            let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&answer).unwrap().len();
            // The frame's own fields: far below one group's count.
            assert!(
                archived <= counted + GROUP_REPORT_FIXED_BYTES,
                "{groups} groups of {members} members, {peers} peers: archived {archived} > counted {counted}"
            );
        }
        const { assert!(ADMIN_ANSWER_BYTES_MAX + GROUP_REPORT_FIXED_BYTES <= crate::frame::FRAME_BODY_MAX_BYTES) };
    }

    #[test]
    fn versions_1_2_and_3_read_each_others_unsupported_version_answer() {
        assert_eq!(
            std::mem::size_of::<ArchivedAdminResponseFrame>(),
            std::mem::size_of::<ArchivedAdminResponseFrameV1>(),
            "the response's archived size must not change between admin versions"
        );
        // A node of version 1 refuses a version 2 tool.
        let old = AdminResponseFrameV1 {
            version: 1,
            request_id: 3,
            node_id: 4,
            result: Err(AdminError::UnsupportedVersion { found: 2, supported: 1 }),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let read = rkyv::from_bytes::<AdminResponseFrame, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(
            read.result,
            Err(AdminError::UnsupportedVersion { found: 2, supported: 1 })
        );
        assert_eq!((read.version, read.request_id, read.node_id), (1, 3, 4));
        // A node of this version (2 or 3) refuses a version 1 tool.
        let new = AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id: 5,
            node_id: 6,
            result: Err(AdminError::UnsupportedVersion {
                found: 1,
                supported: ADMIN_PROTOCOL_VERSION,
            }),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&new).unwrap();
        let read = rkyv::from_bytes::<AdminResponseFrameV1, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(
            read.result.err(),
            Some(AdminError::UnsupportedVersion {
                found: 1,
                supported: ADMIN_PROTOCOL_VERSION
            })
        );
        assert_eq!(
            (read.version, read.request_id, read.node_id),
            (ADMIN_PROTOCOL_VERSION, 5, 6)
        );
    }
}
