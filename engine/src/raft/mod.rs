//! The consensus core: pure, deterministic, no I/O.
//!
//! A [`RaftCore`] runs one group on one node. It has inputs only —
//! [`tick`](RaftCore::tick), [`step`](RaftCore::step),
//! [`propose`](RaftCore::propose), [`propose_conf_change`](RaftCore::propose_conf_change),
//! [`read_index`](RaftCore::read_index), [`transfer_leader`](RaftCore::transfer_leader),
//! [`on_persisted`](RaftCore::on_persisted), [`snapshot_created`](RaftCore::snapshot_created)
//! (a peer's message goes through [`step_checked`](RaftCore::step_checked),
//! which validates it first: `violation.rs`)
//! — and one output, the [`Ready`] bundle taken by
//! [`take_ready`](RaftCore::take_ready). It reads no clock (time is ticks), no
//! socket and no file; its randomness comes from a seed in [`RaftConfig`].
//! That is what lets the simulator (`crate::sim`) replay whole clusters
//! exactly from one seed.
//!
//! ```
//! use coraft::raft::{Configuration, GroupId, InitialState, NodeId, RaftConfig, RaftCore, Role};
//!
//! // A single-voter group elects itself and commits once its write is durable.
//! let config = RaftConfig::new(NodeId(1), GroupId(7));
//! let initial = InitialState { configuration: Configuration::with_voters([NodeId(1)]), ..Default::default() };
//! let mut core = RaftCore::new(config, initial).unwrap();
//! while core.role() != Role::Leader {
//!     core.tick();
//! }
//! let (index, term) = core.propose(vec![bytes::Bytes::from_static(b"x")]).unwrap();
//! let ready = core.take_ready();
//! assert!(ready.hard_state.is_some() && !ready.entries.is_empty());
//! // ... the runtime writes ready.entries and ready.hard_state, fsyncs, then:
//! core.on_persisted(index, term);
//! let ready = core.take_ready();
//! assert_eq!(ready.committed_entries.last().unwrap().index, index);
//! ```

mod config;
mod core;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod progress;
mod quiesce;
mod quorum;
mod reads;
mod ready;
mod replication;
mod rng;
mod snapshot;
mod types;
mod violation;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_membership;
#[cfg(test)]
mod tests_quiesce;

pub use config::{PlantedBug, RaftConfig, ReadMode, DEFAULT_APPEND_BYTES_MAX, ELECTION_PRIORITY_MAX};
pub use core::{InitialState, RaftCore, APPLY_BATCH_BYTES_MAX, READY_VECTOR_KEPT_MAX, SPARE_APPEND_VECTORS_MAX};
pub use error::{ConfigError, RaftError};
pub use membership::ConfChange;
pub use message::{AppendOutcome, Message, MessageBody};
pub use progress::{Inflights, Progress, ProgressState, PROBE_APPEND_BYTES_MAX};
pub use quorum::VoteResult;
pub use reads::{PENDING_READS_MAX, ROUND_HISTORY_MAX};
pub use ready::{CommittedRange, Ready};
pub use rng::SeededRng;
pub use types::{
    Configuration, Entry, EntryPayload, GroupId, HardState, LogIndex, NodeId, ReadState, Role, SnapshotMeta, SoftState,
    Term, ENTRY_OVERHEAD_BYTES,
};
pub use violation::{check_message, ProtocolViolation, ViolationKind, INDEX_MAX, TERM_MAX};
