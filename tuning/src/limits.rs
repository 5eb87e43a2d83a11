//! Hard limits on config values, each a named constant.
//!
//! [`crate::NodeConfig::validate`] refuses a value outside these ranges. Some
//! mirror a constant of a crate `coraft-tuning` must not depend on (the WAL's
//! block size, the net frame bound); the comment names the original, and the
//! engine, which sees both, is where a mismatch would show.

/// Most shards (executor threads) one node runs.
pub const SHARD_COUNT_LIMIT: usize = 256;
/// Most voters one cluster lists.
pub const PEERS_LIMIT: usize = 64;
/// Longest spin before park: 10 ms. Beyond that an idle shard is a busy loop.
pub const SPIN_BEFORE_PARK_US_LIMIT: u64 = 10_000;
/// Smallest WAL segment: 64 KiB (`coraft_wal::SEGMENT_BYTES_MIN`).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest WAL segment: 1 GiB.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;
/// Segments are a whole number of O_DIRECT blocks (`coraft_wal::format::BLOCK_BYTES`).
pub const SEGMENT_ALIGN_BYTES: u64 = 4096;
/// Bytes at the head of each segment that records cannot use
/// (`coraft_wal::format::SEGMENT_HEADER_BYTES`).
pub const SEGMENT_HEADER_BYTES: u64 = 4096;
/// Longest tick: 1 s.
pub const TICK_MS_LIMIT: u64 = 1_000;
/// Longest base election timeout, in ticks.
pub const ELECTION_TIMEOUT_TICKS_LIMIT: u64 = 10_000;
/// Highest election priority: the core's `ELECTION_PRIORITY_MAX`.
pub const ELECTION_PRIORITY_LIMIT: u64 = 10;
/// Most entries in one batch.
pub const BATCH_ENTRIES_LIMIT: usize = 1 << 20;
/// Most bytes in one batch: 16 MiB, the WAL's `BATCH_BYTES_LIMIT` and the
/// net's `FRAME_BODY_MAX_BYTES`.
pub const BATCH_BYTES_LIMIT: u64 = 16 << 20;
/// Most AppendEntries in flight to one follower.
pub const INFLIGHT_MESSAGES_LIMIT: usize = 1 << 16;
/// Most entry bytes in flight to one follower: 1 GiB.
pub const INFLIGHT_BYTES_LIMIT: u64 = 1 << 30;
/// Most uncommitted bytes per leader: 4 GiB.
pub const UNCOMMITTED_BYTES_LIMIT: u64 = 4 << 30;
/// Most bytes queued on one outbound connection: 8 MiB, half the net's
/// `FRAME_BODY_MAX_BYTES` (what `coraft_net::NetConfig::validate` accepts).
pub const OUTBOUND_QUEUE_BYTES_LIMIT: u64 = 8 << 20;
/// Most Raft groups one node hosts.
pub const GROUPS_LIMIT: usize = 1_000_000;
/// Physical cores from which [`crate::Topology::suggest`] leaves CPU 0's
/// core to the OS and its interrupts.
pub const OS_RESERVED_CORE_FROM_PHYSICAL_CORES: usize = 4;
/// Oldest kernel glommio 0.9 runs on.
pub const KERNEL_VERSION_MIN: (u32, u32) = (5, 8);
/// Locked memory glommio asks for (its README): 512 KiB.
pub const MEMLOCK_BYTES_MIN: u64 = 512 << 10;
/// CPU ids at or above this in sysfs are taken as corrupt data, not as CPUs
/// (it bounds what a malformed `cpulist` can make detection allocate).
pub const CPU_ID_LIMIT: usize = 1 << 16;

/// Least `raft.clock_drift_margin_ticks` with `read_mode = "lease"`. Mirrors
/// `coraft::runtime::LEASE_DRIFT_MARGIN_TICKS_MIN` (which gives the reason:
/// ticks quantize the lease on both sides); the engine asserts they are equal.
pub const LEASE_DRIFT_MARGIN_TICKS_MIN: u64 = 2;

/// Least `snapshot.after_entries` other than 0 (off): a snapshot every few
/// entries would spend the shard on fsyncs.
pub const SNAPSHOT_AFTER_ENTRIES_MIN: u64 = 64;
/// Least `snapshot.after_log_bytes` other than 0 (off): 64 KiB.
pub const SNAPSHOT_AFTER_LOG_BYTES_MIN: u64 = 64 << 10;
/// Shortest `snapshot.interval_ms` other than 0 (off): 100 ms.
pub const SNAPSHOT_INTERVAL_MS_MIN: u64 = 100;
/// Longest `snapshot.interval_ms`: one week.
pub const SNAPSHOT_INTERVAL_MS_LIMIT: u64 = 7 * 24 * 3_600_000;
/// Most `snapshot.log_tail_entries`: 16 Mi entries (the tail is held in
/// memory per group).
pub const SNAPSHOT_LOG_TAIL_ENTRIES_LIMIT: u64 = 1 << 24;
/// Least `snapshot.install_bytes_per_second`: 1 MiB/s (below it a snapshot
/// of a few hundred MiB takes longer than an operator waits for).
pub const SNAPSHOT_INSTALL_BYTES_PER_SECOND_MIN: u64 = 1 << 20;
/// Most `snapshot.install_bytes_per_second`: 64 GiB/s, beyond any link.
pub const SNAPSHOT_INSTALL_BYTES_PER_SECOND_LIMIT: u64 = 64 << 30;
