//! The WAL's knobs: segment size, record and batch bounds, recovery mode.

use crate::error::{Error, Result};
use crate::format::{BLOCK_BYTES, FLUSH_MARKER_BYTES, RECORD_PREFIX_BYTES, SEGMENT_HEADER_BYTES};

/// Default segment size: 64 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment allowed (tests use small segments to rotate often).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Default largest encoded record: 4 MiB (one full batch).
pub const RECORD_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Default bytes written by one flush (one write, one fdatasync): 4 MiB.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Hard limit on `batch_bytes_max`: bounds the batch buffer and the bytes
/// one flush writes.
pub const BATCH_BYTES_LIMIT: usize = 16 << 20;
/// Default bytes that may wait for durability before appends are refused.
pub const PENDING_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Default distance the flusher zeroes ahead of the log's end: 64 MiB, a
/// whole default segment. Zeroing a little ahead all the time kept extent
/// conversions going on under load, and their fdatasyncs put a tail of
/// 10-15 ms on the cluster's writes (docs/journal/benchmarks.md, "Zeroing the
/// whole segment"); zeroing a segment through once, in the flusher's idle
/// time after it is created, writes the same bytes sooner and then stops.
pub const ZERO_AHEAD_BYTES_DEFAULT: u64 = 64 << 20;
/// Default [`Config::dsync_small_flush_bytes`]: [`crate::fs::DSYNC_WRITE_BYTES_MIN`]
/// (512 KiB), so every flush is one `O_DSYNC` write (no fdatasync handed
/// to an io-wq thread). On the quiet benchmark machine, against write +
/// fdatasync below 512 KiB, one client's median fell from 1.48× to 1.27×
/// of the replication floor's, 256 clients wrote 1.2× as much and one node
/// 1.3–1.4×, each with a quarter to a third less CPU per write
/// (docs/tuning.md, "WAL: small flushes as `O_DSYNC` writes").
pub const DSYNC_SMALL_FLUSH_BYTES_DEFAULT: usize = crate::fs::DSYNC_WRITE_BYTES_MIN;

/// What recovery does with a torn or bad record at the very tail of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Truncate it (it was never acknowledged) and report where.
    TolerateTornTail,
    /// Refuse to open with [`Error::TornTail`].
    Strict,
}

/// WAL configuration; [`Config::default`] suits production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size of every segment file, header included; a multiple of 4 KiB.
    pub segment_bytes: u64,
    /// Largest encoded record accepted by an append.
    pub record_bytes_max: usize,
    /// Most bytes of records one flush writes before its fdatasync (its
    /// flush marker and the zeros to the next block boundary come on top).
    pub batch_bytes_max: usize,
    /// Most bytes appended and not yet durable; beyond it appends fail with
    /// [`Error::Backpressure`].
    pub pending_bytes_max: usize,
    /// Tail handling on open.
    pub recovery_mode: RecoveryMode,
    /// How far past the log's end the flusher, when it has nothing to
    /// flush, writes zeros over the preallocated segment and syncs them; 0
    /// turns this off. A small flush into blocks already written this way
    /// is a plain overwrite: its fdatasync flushes the device cache and no
    /// extent conversion or journal commit (see docs/wal.md, "Zeroing
    /// ahead").
    pub zero_ahead_bytes: u64,
    /// Let glommio send segment writes to its polled (IOPOLL) ring if it
    /// finds the device takes polled I/O. Off by default: while a write is
    /// in flight on that ring the shard's executor cannot sleep and spins,
    /// and on recent kernels glommio's check accepts devices without poll
    /// queues, whose writes complete by interrupt anyway (see docs/wal.md,
    /// "Polled I/O"). For NVMe devices with poll queues and a core of
    /// their own.
    pub polled_io: bool,
    /// Flushes of at most this many bytes (records and flush marker, before
    /// padding to a block) are one O_DSYNC write instead of a write and an
    /// fdatasync; 0 turns this off. 4096 takes a lone append's flush.
    /// One io_uring operation instead of two, and no fdatasync punted to
    /// an io-wq thread: less CPU per write at one client; whether the
    /// median and the tail gain depends on how the device completes an
    /// O_DSYNC write (see docs/tuning.md, "WAL: small flushes as `O_DSYNC`
    /// writes"). At most
    /// [`crate::fs::DSYNC_WRITE_BYTES_MIN`], from where every flush is an
    /// O_DSYNC write anyway.
    pub dsync_small_flush_bytes: usize,

    /// Have recovery copy every entry's payload out of its segment while it
    /// checks the record, for [`crate::Wal::take_recovered_entries`]: an
    /// opener that builds its log in memory (the engine) then reads the log
    /// once instead of twice. Until taken (or dropped with
    /// [`crate::Wal::drop_recovered_entries`]) the copies stay in memory.
    /// Each segment is dropped from the page cache once checked, so the log
    /// is not held twice (a later read of it reads the disk). Off by default.
    pub keep_recovered_payloads: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            pending_bytes_max: PENDING_BYTES_MAX_DEFAULT,
            recovery_mode: RecoveryMode::TolerateTornTail,
            zero_ahead_bytes: ZERO_AHEAD_BYTES_DEFAULT,
            polled_io: false,
            dsync_small_flush_bytes: DSYNC_SMALL_FLUSH_BYTES_DEFAULT,

            keep_recovered_payloads: false,
        }
    }
}

impl Config {
    /// Checks the fields against each other and the hard limits.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, value: u64, reason| Err(Error::InvalidConfig { field, value, reason });
        if self.segment_bytes < SEGMENT_BYTES_MIN || !self.segment_bytes.is_multiple_of(BLOCK_BYTES as u64) {
            return invalid(
                "segment_bytes",
                self.segment_bytes,
                "must be a multiple of 4096 and at least 64 KiB",
            );
        }
        if self.batch_bytes_max < BLOCK_BYTES || self.batch_bytes_max > BATCH_BYTES_LIMIT {
            return invalid(
                "batch_bytes_max",
                self.batch_bytes_max as u64,
                "must be between 4 KiB and BATCH_BYTES_LIMIT",
            );
        }
        // Every flush starts with a marker: a record of the largest size
        // must fit in a batch (whose bound counts records only) and, after
        // a marker, in a segment.
        let segment_room = self.segment_bytes as usize - SEGMENT_HEADER_BYTES - FLUSH_MARKER_BYTES;
        if self.record_bytes_max <= RECORD_PREFIX_BYTES
            || self.record_bytes_max > self.batch_bytes_max
            || self.record_bytes_max > segment_room
        {
            return invalid(
                "record_bytes_max",
                self.record_bytes_max as u64,
                "must fit in one batch, and in one segment after a flush marker",
            );
        }
        if !self.zero_ahead_bytes.is_multiple_of(BLOCK_BYTES as u64) {
            return invalid(
                "zero_ahead_bytes",
                self.zero_ahead_bytes,
                "must be a multiple of 4096 (0 turns zeroing ahead off)",
            );
        }
        if self.dsync_small_flush_bytes > crate::fs::DSYNC_WRITE_BYTES_MIN {
            return invalid(
                "dsync_small_flush_bytes",
                self.dsync_small_flush_bytes as u64,
                "must be at most 524288 (512 KiB): flushes that large are O_DSYNC writes already",
            );
        }
        if self.pending_bytes_max < self.batch_bytes_max {
            return invalid(
                "pending_bytes_max",
                self.pending_bytes_max as u64,
                "must be at least batch_bytes_max",
            );
        }
        Ok(())
    }
}
