//! `coraft-wal`: the segmented, group-committed, checksummed write-ahead log
//! of one shard.
//!
//! Every Raft group of a shard appends to the same [`Wal`]; one fdatasync
//! commits all of a loop turn's appends (group commit). The log is a
//! directory of fixed-size, preallocated segment files, written append-only
//! with O_DIRECT through io_uring (glommio `DmaFile`), read back through
//! memmap2. Every record carries a CRC32. See `docs/wal.md` for the byte
//! layout and the recovery rules.
//!
//! ```no_run
//! use coraft_wal::{Config, HardState, Wal};
//! use glommio::{LocalExecutorBuilder, Placement};
//!
//! LocalExecutorBuilder::new(Placement::Unbound)
//!     .make()
//!     .unwrap()
//!     .run(async {
//!         let (wal, report) = Wal::open("/tmp/shard-0", Config::default()).await.unwrap();
//!         assert!(report.torn_tail.is_none());
//!         // One loop turn: records of many groups, then one group commit.
//!         wal.append_entry(7, 1, 1, 0, b"set x=1").unwrap();
//!         wal.append_hard_state(7, HardState { term: 1, vote: 2, commit: 0 }).unwrap();
//!         wal.append_entry(9, 1, 1, 0, b"set y=2").unwrap();
//!         let commit = wal.sync(); // the flush starts now
//!         wal.append_entry(9, 2, 1, 0, b"next turn").unwrap(); // goes in the next flush
//!         let durable_lsn = commit.await.unwrap();
//!         assert!(durable_lsn >= 3);
//!         let entries = wal.entries(7, 1..2, usize::MAX).unwrap();
//!         assert_eq!(&*entries[0].payload, b"set x=1");
//!         wal.close().await.unwrap();
//!     });
//! ```
#![deny(missing_docs)]

pub mod buffer;
pub mod config;
pub mod conformance;
pub mod error;
pub mod faults;
pub mod format;
pub mod fs;
pub mod index;
pub mod recovery;
mod wal;
pub mod writer;

pub use config::{Config, RecoveryMode};
pub use error::{Error, IoOp, Result};
pub use faults::{FaultPlan, Faults, FaultyFs};
pub use format::{HardState, Record};
pub use fs::{
    keep_off_the_poll_ring, DmaFs, DurableWriteError, FileSystem, SegmentFile, POLL_PROBE_FILE_NAME,
    SPARE_SEGMENT_FILE_NAME,
};
pub use index::{GroupState, Need, SegmentHolder, SegmentHolders, SEGMENT_HOLDERS_MAX};
pub use recovery::TornTail;
pub use wal::{Entry, Holder, NewEntry, OpenReport, Payload, Wal};
pub use writer::{SyncFuture, WriterStats, SPARE_SEGMENTS_MAX, ZERO_CHUNK_BYTES};
