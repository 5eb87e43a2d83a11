//! Errors a caller of the engine can see. None of them is a panic: a caller's
//! mistake or a cluster's state is a value.

use thiserror::Error;

use crate::raft::{GroupId, NodeId, Term};

/// Why a request to the engine did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// This node does not lead the group; `leader_hint` is the leader it
    /// believes in. A write refused with this error was not applied.
    #[error("not the leader of the group (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node believed to lead, if known.
        leader_hint: Option<NodeId>,
    },
    /// A write bound to a term (`GroupHandle::apply_in_term`) reached a
    /// leader of another term; it was not applied.
    #[error("expected term {expected}, the leader is in term {current}")]
    TermMismatch {
        /// The term the caller expected.
        expected: Term,
        /// The leader's term.
        current: Term,
    },
    /// The request did not complete in time; a write's outcome is unknown.
    #[error("timed out")]
    Timeout,
    /// A named bound was reached (queue, uncommitted bytes, pending reads).
    #[error("busy: {bound} reached")]
    Busy {
        /// The bound that was reached.
        bound: &'static str,
    },
    /// A command larger than the engine takes (the bound is named).
    #[error("command of {bytes} bytes exceeds {bound} ({bound_bytes} bytes)")]
    TooLarge {
        /// The command's size.
        bytes: usize,
        /// The bound's name.
        bound: &'static str,
        /// The bound.
        bound_bytes: usize,
    },
    /// The node or group is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// The write-ahead log of the shard owning the group failed (an
    /// fdatasync error, no space left): that shard stopped serving as a
    /// replica (fail-stop) until the node is restarted. The rest of the
    /// group goes on without it: try another node. A write answered with
    /// this may still have been committed by the other replicas, so its
    /// outcome is unknown, as with [`Error::Timeout`].
    #[error("storage failed: {0}")]
    Storage(String),
    /// The group is not hosted by this node.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The group was removed from this node (`Node::remove_group`); its id
    /// is not reused here. A write answered with this while the group was
    /// being removed may still have been committed by the other replicas.
    #[error("group {0} was removed from this node")]
    GroupRemoved(GroupId),
    /// The node's configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The network layer failed to start (e.g. the listen address is taken).
    #[error("network: {0}")]
    Network(String),
    /// A client write's session is unknown to the group (never registered,
    /// expired or evicted); the write was not applied.
    #[error("the client session expired or is unknown")]
    SessionExpired,
    /// A client write's sequence is one its session cannot vouch for (older
    /// than it remembers, or used for another command); not applied.
    #[error("the client session cannot vouch for this sequence")]
    StaleSequence,
    /// A membership change is already in flight in this group (one at a
    /// time: a joint configuration must be left, a learner promoted, before
    /// the next); this one was not started.
    #[error("a membership change is already in progress in this group")]
    ChangeInProgress,
    /// A membership change that cannot be made (a node that is not a
    /// learner promoted, no voter left, a new node without addresses).
    #[error("invalid membership change: {0}")]
    InvalidChange(String),
    /// The write was applied, but its result was refused by a bound of
    /// [`ApplyResults`](crate::api::ApplyResults) (named in `reason`): the
    /// state machine's result was too large to answer with. A retry of the
    /// write (same session sequence) gets an empty result.
    #[error("the write was applied, but its result was refused: {reason}")]
    ResultTooLarge {
        /// The refusal, naming the bound.
        reason: crate::api::ResultTooLarge,
    },
    /// A snapshot could not be taken (`GroupHandle::snapshot`): nothing is
    /// applied yet, the state machine's `on_snapshot_save` failed, or the
    /// snapshot store did (the reason names the path). The group goes on.
    #[error("snapshot of group {group}: {reason}")]
    Snapshot {
        /// The group.
        group: GroupId,
        /// What went wrong.
        reason: String,
    },
}
