//! Messages between the cores of one group. The runtime carries them (and
//! may batch many groups' messages into one frame); the core only builds and
//! consumes them.

use super::types::{Entry, GroupId, LogIndex, NodeId, SnapshotMeta, Term};

/// One message from one core to another core of the same group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The group both cores belong to.
    pub group: GroupId,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for pre-votes: the term it would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: entries following (`prev_log_index`, `prev_log_term`)
    /// (Raft §5.3). Empty `entries` only carries the commit index.
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries, in order.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// Follower → leader, sent only after the entries are persisted.
    AppendEntriesResponse(AppendOutcome),
    /// Candidate → voter (Raft §5.2), or a pre-vote (thesis §9.6).
    RequestVote {
        /// True for a pre-vote: nobody changes term or vote.
        pre_vote: bool,
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// True when campaigning on a leadership transfer (TimeoutNow): voters
        /// skip the "a leader is alive" check (thesis §3.10).
        leadership_transfer: bool,
    },
    /// Voter → candidate; for real votes sent only after the vote is persisted.
    RequestVoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// Leader → follower: liveness, the commit index, and a read round.
    Heartbeat {
        /// min(leader commit, follower match): safe for the follower to commit.
        commit_index: LogIndex,
        /// The leader's heartbeat round; echoed back to confirm leadership for
        /// reads and leases.
        round: u64,
        /// The leader goes quiet after this heartbeat: a follower holding
        /// everything committed stops its election timer (`quiesce.rs`).
        quiesce: bool,
    },
    /// Follower → leader.
    HeartbeatResponse {
        /// The round being acknowledged.
        round: u64,
    },
    /// Leader → transfer target: campaign now (thesis §3.10).
    TimeoutNow,
    /// Follower → leader: confirm a linearizable read.
    ReadIndex {
        /// The follower's identifier for the read.
        context: u64,
    },
    /// Leader → follower: the read index, or `None` if the leader cannot serve.
    ReadIndexResponse {
        /// The follower's identifier for the read.
        context: u64,
        /// The index to wait for.
        index: Option<LogIndex>,
    },
    /// Leader → follower: replace your log with this snapshot. The runtime
    /// streams the snapshot data in chunks beside this message and steps it
    /// into the receiving core only once the data is complete.
    InstallSnapshot {
        /// Where the snapshot stands.
        meta: SnapshotMeta,
    },
    /// Follower → leader, sent after the snapshot is persisted.
    InstallSnapshotResponse {
        /// The follower's last index after handling the snapshot.
        last_index: LogIndex,
    },
}

/// What a follower answers to AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted {
        /// Highest index known to match.
        match_index: LogIndex,
    },
    /// The entry at `rejected_index` did not match. The hint lets the leader
    /// skip a whole term at once: the follower's last entry at or below
    /// `rejected_index` whose term is at most the leader's `prev_log_term`.
    Rejected {
        /// The `prev_log_index` that failed.
        rejected_index: LogIndex,
        /// Index of the hint entry.
        hint_index: LogIndex,
        /// Term of the hint entry.
        hint_term: Term,
    },
}

impl MessageBody {
    /// A short name for logs and the simulator's traces.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse(_) => "AppendEntriesResponse",
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        }
    }
}
