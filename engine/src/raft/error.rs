//! Errors the core returns for requests it cannot take. They are expected
//! outcomes, not broken invariants.

use thiserror::Error;

use super::types::NodeId;

/// Why a proposal, read or transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RaftError {
    /// Only the leader takes this request; `leader_hint` is who it believes leads.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node follows, if known.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing over leadership and takes no proposals meanwhile.
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress {
        /// The transfer target.
        target: NodeId,
    },
    /// Uncommitted entries at the leader exceed `uncommitted_bytes_max`.
    #[error("uncommitted bytes {uncommitted_bytes} would exceed the bound {bound_bytes}")]
    Busy {
        /// Bytes proposed but not yet committed.
        uncommitted_bytes: u64,
        /// The configured bound.
        bound_bytes: u64,
    },
    /// A configuration change is still pending (appended but not committed,
    /// or a joint configuration not yet left).
    #[error("a configuration change is pending")]
    ConfigurationChangePending,
    /// The requested membership change is not valid.
    #[error("invalid configuration change: {reason}")]
    InvalidConfigurationChange {
        /// What is wrong.
        reason: &'static str,
    },
    /// The leadership transfer target is not a voter, or is this node.
    #[error("cannot transfer leadership to {target}: {reason}")]
    InvalidTransferTarget {
        /// The requested target.
        target: NodeId,
        /// Why not.
        reason: &'static str,
    },
}

/// A core configuration that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A field has a value that cannot work.
    #[error("invalid raft config field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}
