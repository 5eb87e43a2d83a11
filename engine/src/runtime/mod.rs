//! The runtime: shards (one glommio executor each) running many Raft groups
//! over the shard's WAL and TCP connections. See `docs/architecture.md`.

mod admin;
mod affinity;
mod apply;
mod apply_lane;
mod clock;
mod codec;
mod compaction;
mod crc_hints;
mod created_groups;
mod direct_write;
mod events;
mod forward;
mod group;
mod group_creation;
mod group_set;
mod install;
mod install_progress;
mod membership;
mod metrics;
mod node;
mod park_bound;
mod release;
mod reply;
mod sessions;
mod shard;
mod snapshot_store;
mod snapshot_stream;
mod storage;
mod ticker;
mod transport;
mod violations;

pub use admin::ADMIN_REQUESTS_QUEUED_MAX;
pub use affinity::{current_thread_cpus, pin_current_thread};
pub use apply_lane::{APPLY_LANE_BACKLOG_BYTES_MAX, APPLY_LANE_BATCH_ENTRIES_MAX};
pub use clock::{CATCH_UP_ELECTION_TIMEOUTS_MAX, LEASE_DRIFT_MARGIN_TICKS_MIN};
pub use codec::{command_kind, decode_command, encode_command, LoggedCommand, COMMAND_HEADER_BYTES_MAX};
#[doc(hidden)]
pub use compaction::set_snapshot_stream_log_kept_bytes_max_for_tests;
pub use compaction::{
    SnapshotPolicy, METADATA_REWRITES_PER_TURN_MAX, SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT,
    SNAPSHOT_STREAM_LOG_KEPT_BYTES_MAX,
};
pub use created_groups::CREATED_GROUPS_FILE;
pub use events::EVENTS_QUEUED_MAX;
pub use forward::FORWARD_QUEUE_MAX;
pub use group::{GroupCounters, PENDING_PROPOSALS_MAX, PENDING_READS_MAX};
pub use install::{SNAPSHOT_ACK_TIMEOUT, SNAPSHOT_STREAM_LOG_HOLD_AFTER_MAX};
pub use install_progress::{InstallDirection, InstallProgress, INSTALL_RECEIVE_IDLE_MAX};
pub use membership::{MEMBERSHIP_CHANGES_IN_FLIGHT_MAX, NODE_ADDRESSES_MAX, PROMOTE_LAG_ENTRIES_MAX};
pub use metrics::{
    render_prometheus, ShardMetrics, APPEND_TIMES_MAX, HTTP_REQUEST_BYTES_MAX, LATENCY_MAX_US, TURN_BUDGET,
};
pub use node::{
    GroupCreator, GroupHandle, GroupStatus, Node, NodeOptions, PeerSpec, PeerStatus, Protocol, StateMachineFactory,
    WalFault, API_QUEUE_MAX,
};
pub use park_bound::{Keeper, ParkBound, PARK_BOUND, PARK_BOUND_KEEPERS_MAX};
pub use release::{RELEASE_OFF_LOOP_ENTRIES_MIN, RELEASE_QUEUE_MAX};
pub use sessions::{
    SessionId, SessionRefusal, SessionTable, SessionTableError, SESSIONS_PER_GROUP_MAX, SESSION_RESULTS_MAX,
    SESSION_TIMEOUT_DEFAULT_MS,
};
pub use shard::REQUEST_TIMEOUT;
pub use shard::{COMMAND_BYTES_MAX, PENDING_SNAPSHOTS_MAX, READY_ROUNDS_PER_TURN_MAX, WAL_BACKLOG_BYTES_MAX};
pub use snapshot_store::{
    NewestValid, SkippedSnapshot, SnapshotHeader, SnapshotId, SnapshotReader, SnapshotResult, SnapshotStore,
    SnapshotStoreError, SnapshotWriter, StoredSnapshot, SNAPSHOTS_KEPT, SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_FORMAT_VERSION_MIN, SNAPSHOT_METADATA_BYTES_MAX, SNAPSHOT_READ_BUFFER_BYTES_MAX,
    SNAPSHOT_WRITE_BUFFER_BYTES_MAX,
};
pub use snapshot_stream::{
    AckOutcome, RateLimiter, SnapshotInbox, SnapshotSender, SnapshotStreamError, SNAPSHOT_CHUNKS_IN_FLIGHT_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT, SNAPSHOT_RECEIVE_SYNC_BYTES,
};
pub use violations::VIOLATION_LOG_INTERVAL;
