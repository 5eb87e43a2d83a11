//! The embedding API: what a storage system implements ([`StateMachine`])
//! and what it calls ([`Node`](crate::runtime::Node),
//! [`GroupHandle`](crate::runtime::GroupHandle)), with typed errors.

mod counter;
mod error;
mod kv;
mod state_machine;

pub use counter::CommandCounter;
pub use error::Error;
pub use kv::{KvError, KvOp, KvResult, KvStore, KEYS_MAX, LIST_VALUES_MAX};
pub use state_machine::{
    Command, LeaderStopReason, OffShard, PreparedSnapshot, SnapshotLoader, SnapshotView, StateMachine,
};
