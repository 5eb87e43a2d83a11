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
    apply_via_results, ApplyResults, Command, LeaderStopReason, OffShard, PreparedSnapshot, ResultTooLarge,
    SnapshotLoader, SnapshotView, StateMachine, APPLY_RESULTS_BYTES_MAX, APPLY_RESULTS_RETAINED_BYTES_MAX,
    APPLY_RESULTS_RETAINED_MAX, APPLY_RESULT_BYTES_MAX,
};
