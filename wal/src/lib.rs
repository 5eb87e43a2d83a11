//! `coraft-wal`: the segmented write-ahead log, one per shard.
//!
//! This crate will hold (issue 3): fixed-size preallocated segments written
//! append-only with O_DIRECT through io_uring, group commit (one fdatasync
//! covers every group's appends of a loop turn), CRC32-checked records for
//! entries, hard state, truncations and purges, recovery that truncates a torn
//! tail and reports mid-log corruption by segment and offset, and an inspect
//! tool. Nothing is implemented yet.
#![deny(missing_docs)]
