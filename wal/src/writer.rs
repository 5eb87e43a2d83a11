//! Group commit: the flusher task and the durability futures.
//!
//! Appends encode records into the open [`Batch`] (in memory, no I/O). A
//! `sync()` raises the requested LSN and wakes the flusher, a task on the
//! shard's executor. The flusher seals the open batch and writes it with one
//! O_DIRECT write made durable as by an fdatasync: with the real file system
//! a large batch is a single O_DSYNC write, because a separate fdatasync
//! could only be submitted once the shard thread comes back from appending
//! the next batch, which put the sync after the appends instead of beside
//! them; a small batch is a write and an fdatasync.
//! Everything appended meanwhile goes into the next open batch and the next
//! flush. There is no timer: a lone append is flushed as soon as it is
//! synced. Every batch starts on a fresh block with a flush marker
//! ([`crate::format::FlushMarker`]) and the flusher writes one batch at a
//! time, the next only after the previous one's sync returned: a block that
//! holds synced records is never written again, so a power cut can only
//! damage the bytes of the flush it interrupted, and a later marker vouches
//! for every flush before it (see `docs/wal.md`, "Recovery rules"). Records
//! are encoded straight into the batch's DMA memory ([`crate::buffer`]),
//! which the flush writes as is.
//!
//! When it has nothing to flush, the flusher zeroes the current segment
//! ahead of the log's end (up to [`crate::Config::zero_ahead_bytes`], in
//! steps of [`ZERO_CHUNK_BYTES`], each written, then synced by a task of its
//! own that no flush waits for): preallocated
//! blocks read as zeros but are unwritten extents, and the first write into
//! one makes its fdatasync convert the extent and commit the file system's
//! journal; a block already written with zeros is overwritten in place. It
//! is the same task that flushes, so a zeroing step never races a flush of
//! the same blocks: it starts past the open batch's last block, and what is
//! appended meanwhile is flushed after it.
//!
//! Failure rules: a failed write (ENOSPC, EIO, short write after retries)
//! fails the waiting syncs and keeps the batch for the next attempt; a failed
//! fdatasync poisons the WAL for good, because the kernel may have dropped
//! the dirty data and a retried fsync could falsely succeed. An O_DSYNC
//! write cannot tell its write from its sync, so any error of it but ENOSPC
//! poisons ([`crate::fs::DurableWriteError::from_dsync_write`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use memmap2::Mmap;

use crate::buffer::{BatchBuffer, SealedBuffer};
use crate::config::Config;
use crate::error::{Error, IoOp, Result};
use crate::format::{
    align_up, checksum_record, encode_entry_fused, encode_flush_marker_into, encode_record_unchecksummed,
    encode_segment_header, fuses, FlushMarker, Record, SegmentHeader, BLOCK_BYTES, FLUSH_CLOSE_FLAG,
    FLUSH_MARKER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::fs::{DurableWriteError, FileSystem, SegmentFile};
use crate::index::Groups;
use crate::recovery::{write_segment_range_off_thread, SegmentRange};

/// Attempts to write a batch whose write came back short before giving up.
pub const WRITE_ATTEMPTS_MAX: usize = 3;
/// Bytes of zeros one idle zeroing step writes and syncs. A flush that
/// arrives during a step waits for its write (not its sync): small enough
/// to cost a fraction of a millisecond, large enough that a busy log is kept ahead of with few
/// extra fdatasyncs.
pub const ZERO_CHUNK_BYTES: usize = 128 << 10;

/// Spare segments kept prepared beside the open one: one. The next
/// rotation claims it and a task prepares the next one at once, so a node
/// that fills a segment every ~0.35 s (4 KiB writes) always finds one.
pub const SPARE_SEGMENTS_MAX: usize = 1;

/// The smallest buffer a new batch starts with; it grows if the batch does.
pub const BATCH_CAPACITY_MIN_BYTES: usize = 64 << 10;
/// How many sealed batches' sizes a new batch's buffer is sized after
/// ([`RecentBatches`]).
pub const RECENT_BATCHES_MAX: usize = 16;

/// The sizes of the last [`RECENT_BATCHES_MAX`] sealed batches: a new
/// batch's buffer starts as large as the largest of them.
///
/// Sized after the last batch alone, a batch larger than the one before it
/// outgrew its buffer, and growing copies every byte so far into one twice
/// as large. At 4 KiB writes a follower's batch is typically one 1 MiB
/// append message's entries and their headers, just over 1 MiB, with small
/// batches between them: each such batch started in a 1 MiB buffer and
/// grew to 2 MiB at its end, 2.7-3.0 growths per 1,000 writes copying
/// ~2 KB per write (docs/journal/benchmarks.md, "issue 17: 4 KiB writes").
/// Never more than the largest batch (at most `batch_bytes_max` and its
/// marker) and a block, so the memory stays bounded as before.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentBatches {
    bytes: [usize; RECENT_BATCHES_MAX],
    next: usize,
}

impl RecentBatches {
    /// Notes a sealed batch of `sealed_bytes`; returns the buffer size the
    /// next batch starts with.
    pub fn sealed(&mut self, sealed_bytes: usize) -> usize {
        self.bytes[self.next] = sealed_bytes;
        self.next = (self.next + 1) % RECENT_BATCHES_MAX;
        let largest = self.bytes.iter().copied().max().unwrap_or(0);
        (largest + BLOCK_BYTES).max(BATCH_CAPACITY_MIN_BYTES)
    }
}

/// The open batch: records waiting to be written to one segment, as one
/// contiguous run of bytes starting at a fresh block with its flush marker.
pub struct Batch {
    /// The segment (its first LSN).
    pub segment: u64,
    /// Where the first byte goes in the segment; a block boundary.
    pub file_offset: u64,
    /// The flush marker followed by the batch's records; the last record's
    /// CRC may still be missing (see `unchecksummed`).
    bytes: BatchBuffer,
    /// The marker the batch starts with.
    pub marker: FlushMarker,
    /// Where the last record starts if its CRC is not computed yet: an
    /// append checksums the record before its own (see
    /// [`crate::format::encode_record_unchecksummed`]), and everything that
    /// reads the bytes checksums the last one first.
    unchecksummed: Option<usize>,
    /// Bytes of records appended into this batch (not its marker).
    pub record_bytes: usize,
    /// LSN of the last record in the batch; 0 when it has none.
    pub last_lsn: u64,
    /// Most bytes the batch takes before an append seals it (or, where the
    /// segment ends first, rotates): `batch_bytes_max` and the marker, or
    /// the room left in the segment. One comparison per append covers both.
    pub bytes_limit: usize,
}

impl Batch {
    /// A batch of `segment` (whose size is `segment_bytes`) holding only
    /// `marker` and starting at the marker's offset (a block boundary), with
    /// room for `capacity` bytes before its buffer grows.
    pub(crate) fn new(
        segment: u64,
        marker: FlushMarker,
        segment_bytes: u64,
        config: &Config,
        capacity: usize,
    ) -> Batch {
        let file_offset = marker.offset;
        let segment_room = segment_bytes.saturating_sub(file_offset);
        let mut bytes = BatchBuffer::with_capacity(capacity.max(FLUSH_MARKER_BYTES));
        encode_flush_marker_into(&marker, bytes.grow(FLUSH_MARKER_BYTES));
        Batch {
            segment,
            file_offset,
            bytes,
            marker,
            unchecksummed: None,
            record_bytes: 0,
            last_lsn: 0,
            // `batch_bytes_max` bounds the records; the marker comes on top.
            bytes_limit: (config.batch_bytes_max + FLUSH_MARKER_BYTES)
                .min(usize::try_from(segment_room).unwrap_or(usize::MAX)),
        }
    }

    /// The segment offset just past the batch's bytes.
    #[inline]
    pub fn end_offset(&self) -> u64 {
        self.file_offset + self.bytes.len() as u64
    }

    /// Bytes in the batch, carried ones included.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when the batch holds no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `record`. An entry with a large payload is copied and
    /// checksummed in one pass ([`crate::format::encode_entry_fused`]);
    /// any other record's CRC is computed by the next append or read.
    #[inline]
    pub(crate) fn push_record(&mut self, record: &Record<'_>) {
        self.checksum_last();
        let start = self.bytes.len();
        let out = self.bytes.grow(record.encoded_len());
        if fuses(record) && encode_entry_fused(record, out) {
            return;
        }
        encode_record_unchecksummed(record, out);
        self.unchecksummed = Some(start);
    }

    /// Marks a batch that holds no record as the WAL's clean close.
    fn mark_close(&mut self) {
        debug_assert_eq!(self.last_lsn, 0, "only a batch without records closes");
        self.marker.flags |= FLUSH_CLOSE_FLAG;
        encode_flush_marker_into(&self.marker, self.bytes.as_mut_slice());
    }

    /// The batch's bytes, every record checksummed.
    pub(crate) fn bytes(&mut self) -> &[u8] {
        self.checksum_last();
        self.bytes.as_slice()
    }

    #[inline]
    fn checksum_last(&mut self) {
        if let Some(start) = self.unchecksummed.take() {
            let end = self.bytes.len();
            checksum_record(&mut self.bytes.as_mut_slice()[start..end]);
        }
    }

    /// Freezes the batch for its flush.
    fn seal(mut self) -> SealedBatch {
        self.checksum_last();
        SealedBatch {
            segment: self.segment,
            file_offset: self.file_offset,
            bytes: self.bytes.seal(),
            record_bytes: self.record_bytes,
            last_lsn: self.last_lsn,
        }
    }
}

/// A batch waiting for (or in) its flush; its bytes no longer change.
pub struct SealedBatch {
    /// The segment (its first LSN).
    pub segment: u64,
    /// Where the first byte goes in the segment; a block boundary.
    pub file_offset: u64,
    /// The flush marker, the records, zeros to a block boundary.
    pub bytes: SealedBuffer,
    /// Bytes of records in this batch (not its marker).
    pub record_bytes: usize,
    /// LSN of the last record in the batch.
    pub last_lsn: u64,
}

impl SealedBatch {
    /// The segment offset just past the batch's bytes (padding excluded).
    pub fn end_offset(&self) -> u64 {
        self.file_offset + self.bytes.as_slice().len() as u64
    }
}

/// A segment the WAL writes or has written.
pub struct Segment {
    /// Its first LSN (and file name).
    pub first_lsn: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub segment_bytes: u64,
    /// Its nonce (in its header and every flush marker).
    pub nonce: u64,
    /// The write handle; `None` before creation or once rotated away.
    pub file: Option<Rc<dyn SegmentFile>>,
    /// True once the file exists durably.
    pub created: bool,
    /// The read-only mapping, made on first read.
    pub map: Option<Rc<Mmap>>,
}

/// Counters of the write path, for benchmarks and the inspect tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Flushes completed (each one durable write: O_DSYNC, or write + fdatasync).
    pub flushes: u64,
    /// Bytes written by those flushes, markers and the zeros to each
    /// flush's last block boundary included.
    pub bytes_written: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Bytes of zeros written ahead of the log's end (and synced).
    pub zeroed_bytes: u64,
    /// Segments made from the prepared spare (a rename and a header at
    /// rotation), among `segments_created`.
    pub segments_from_spare: u64,
}

/// How far the segment being written has been zeroed ahead of the log.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZeroFrontier {
    /// The segment (its first LSN).
    segment: u64,
    /// Everything from the log's end up to here is written with zeros and synced.
    offset: u64,
    /// A zeroing write of this segment failed: leave it be.
    stopped: bool,
    /// Bytes the last flush wrote: zeroing is for logs of small flushes.
    last_flush_bytes: usize,
}

/// A flusher job.
pub(crate) enum Job {
    /// Write this batch and make it durable.
    Flush(Rc<SealedBatch>),
    /// Write `len` zeros at `offset` of `segment` and sync them.
    Zero {
        segment: u64,
        file: Rc<dyn SegmentFile>,
        offset: u64,
        len: usize,
    },
}

/// Everything the appenders, readers and the flusher share on one shard.
pub struct State {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) fs: Rc<dyn FileSystem>,
    pub(crate) groups: Groups,
    pub(crate) segments: VecDeque<Segment>,
    pub(crate) next_lsn: u64,
    pub(crate) open: Batch,
    pub(crate) sealed: VecDeque<Rc<SealedBatch>>,
    pub(crate) pending_bytes: usize,
    pub(crate) written_lsn: u64,
    pub(crate) durable_lsn: u64,
    pub(crate) requested_lsn: u64,
    pub(crate) failures: u64,
    pub(crate) last_failure: Option<Error>,
    pub(crate) poisoned: Option<Error>,
    pub(crate) closed: bool,
    pub(crate) flusher_done: bool,
    pub(crate) flusher_waker: Option<Waker>,
    pub(crate) waiters: Vec<Waker>,
    pub(crate) stats: WriterStats,
    /// The buffer size a new batch starts with: the largest recent sealed
    /// batch's ([`RecentBatches`]), so that a flow of batches of varying
    /// size rarely grows one.
    pub(crate) batch_capacity: usize,
    /// The sizes of the last sealed batches.
    pub(crate) recent_batches: RecentBatches,
    /// Zeroing ahead of the log's end in the segment being written.
    pub(crate) zero_frontier: ZeroFrontier,
    /// What the segment range file says (see
    /// [`crate::recovery::SegmentRange`]); `None` before the first segment
    /// is created.
    pub(crate) range: Option<SegmentRange>,
    /// The sequence number of the range file's update that holds `range`
    /// (0 while there is no file): the next update is one more, written
    /// into the other slot.
    pub(crate) range_sequence: u64,
    /// Held while the range file is written (off the shard's thread): one
    /// write at a time, each from the range as it is then, so that a
    /// deletion and a new segment cannot write stale ranges over each
    /// other, or two updates tear both slots.
    pub(crate) range_lock: Rc<glommio::sync::Semaphore>,
    /// The prepared spare segment ([`crate::fs::FileSystem::prepare_spare`]),
    /// at most [`SPARE_SEGMENTS_MAX`]: the next rotation claims it.
    pub(crate) spare: Option<Rc<dyn SegmentFile>>,
    /// A task is preparing the spare.
    pub(crate) spare_preparing: bool,
    /// A zeroing step's fdatasync is in flight (its own task, which no
    /// flush waits for); at most one at a time.
    pub(crate) zero_sync_in_flight: bool,
    /// The sealed batch (segment, offset) that was written and synced while
    /// the range-file write naming its segment failed: the retry only
    /// names it.
    pub(crate) written_unnamed: Option<(u64, u64)>,
}

impl State {
    /// The error an append is refused with, if it is: the WAL is poisoned or
    /// closed, a record is too large, or too much waits for durability. An
    /// append of one record passes its size as both `largest_record_bytes`
    /// and `total_bytes`; a batch ([`crate::Wal::append_entries`]) passes
    /// its largest record and the sum of all of them, so that it is refused
    /// as a whole before any of it is appended. One test on the append path
    /// guards this (see [`State::refuses`]).
    #[cold]
    pub(crate) fn refusal(&self, largest_record_bytes: usize, total_bytes: usize) -> Option<Error> {
        if let Some(error) = &self.poisoned {
            return Some(error.clone());
        }
        if self.closed {
            return Some(Error::Closed);
        }
        if largest_record_bytes > self.config.record_bytes_max {
            return Some(Error::RecordTooLarge {
                record_bytes: largest_record_bytes,
                record_bytes_max: self.config.record_bytes_max,
            });
        }
        if self.pending_bytes.saturating_add(total_bytes) > self.config.pending_bytes_max {
            return Some(Error::Backpressure {
                pending_bytes: self.pending_bytes,
                pending_bytes_max: self.config.pending_bytes_max,
            });
        }
        None
    }

    /// True if an append of records of at most `largest_record_bytes` each
    /// and `total_bytes` in all must be refused ([`State::refusal`] says why).
    #[inline]
    pub(crate) fn refuses(&self, largest_record_bytes: usize, total_bytes: usize) -> bool {
        self.poisoned.is_some()
            || self.closed
            || largest_record_bytes > self.config.record_bytes_max
            || self.pending_bytes.saturating_add(total_bytes) > self.config.pending_bytes_max
    }

    /// Encodes `record` (of `record_bytes`) at the end of the open batch,
    /// making room first if it would pass the batch's limit; returns its LSN
    /// and its offset in the segment. The caller counts its pending bytes.
    #[inline]
    pub(crate) fn push_record(&mut self, record: &Record<'_>, record_bytes: usize) -> (u64, u64) {
        if self.open.len() + record_bytes > self.open.bytes_limit {
            self.make_room(record_bytes);
        }
        let lsn = self.next_lsn;
        let offset = self.open.end_offset();
        self.open.push_record(record);
        self.open.record_bytes += record_bytes;
        self.open.last_lsn = lsn;
        self.next_lsn += 1;
        (lsn, offset)
    }

    /// Makes room in the open batch for a record of `record_bytes` that would
    /// pass its [`Batch::bytes_limit`]: a new batch on the next fresh block
    /// if the record fits there, else a new segment. (An open batch without
    /// records always has room under `batch_bytes_max`, which
    /// [`Config::validate`] makes at least a record: its limit is the end
    /// of the segment.)
    #[cold]
    pub(crate) fn make_room(&mut self, record_bytes: usize) {
        let segment_bytes = self.segment_bytes(self.open.segment);
        let next_start = align_up(self.open.end_offset());
        let fits_next = next_start + (FLUSH_MARKER_BYTES + record_bytes) as u64 <= segment_bytes;
        if self.open.last_lsn != 0 && fits_next {
            self.seal_open();
        } else {
            self.rotate();
        }
    }

    /// Moves the open batch (if it holds records) to the sealed queue and
    /// opens the next one on the same segment, on the next fresh block.
    pub(crate) fn seal_open(&mut self) {
        if self.open.last_lsn == 0 {
            return;
        }
        self.seal_open_batch();
    }

    /// Seals the open batch even if it holds no record (a marker-only flush:
    /// the WAL's open and close), and opens the next one after it.
    fn seal_open_batch(&mut self) {
        let segment_bytes = self.segment_bytes(self.open.segment);
        self.batch_capacity = self.recent_batches.sealed(self.open.len());
        let marker = FlushMarker {
            nonce: self.open.marker.nonce,
            offset: align_up(self.open.end_offset()),
            flush: self.open.marker.flush + 1,
            previous_end: self.open.end_offset(),
            synced_through: self.next_lsn - 1,
            flags: 0,
        };
        let next = Batch::new(
            self.open.segment,
            marker,
            segment_bytes,
            &self.config,
            self.batch_capacity,
        );
        let sealed = std::mem::replace(&mut self.open, next);
        self.sealed.push_back(Rc::new(sealed.seal()));
    }

    /// Seals a flush that holds only the open batch's marker, flagged as a
    /// clean close if `close`, for the caller to write with [`flush`]
    /// while the flusher is not running; `None` if the open batch holds
    /// records or its segment was never created. A close marker that does
    /// not fit in the segment goes to a new one (which [`flush`] creates).
    pub(crate) fn seal_marker_only(&mut self, close: bool) -> Option<Rc<SealedBatch>> {
        let segment = self.segments.iter().find(|s| s.first_lsn == self.open.segment)?;
        if !segment.created || self.open.last_lsn != 0 {
            return None;
        }
        if self.open.len() > self.open.bytes_limit {
            if !close {
                return None;
            }
            self.rotate();
        }
        if close {
            self.open.mark_close();
        }
        self.seal_open_batch();
        self.sealed.pop_back()
    }

    /// The size of `segment` (by first LSN); 0 if it is not listed.
    fn segment_bytes(&self, segment: u64) -> u64 {
        self.segments
            .iter()
            .rev()
            .find(|listed| listed.first_lsn == segment)
            .map_or(0, |listed| listed.segment_bytes)
    }

    /// Starts a new segment whose first record gets `next_lsn`.
    pub(crate) fn rotate(&mut self) {
        self.seal_open();
        if let Some(current) = self.segments.back_mut() {
            if current.created && self.sealed.is_empty() {
                current.file = None;
            }
        }
        let first_lsn = self.next_lsn;
        let nonce = new_nonce();
        self.segments.push_back(Segment {
            first_lsn,
            path: self.dir.join(crate::format::segment_file_name(first_lsn)),
            segment_bytes: self.config.segment_bytes,
            nonce,
            file: None,
            created: false,
            map: None,
        });
        let marker = FlushMarker {
            nonce,
            offset: SEGMENT_HEADER_BYTES as u64,
            flush: 1,
            previous_end: SEGMENT_HEADER_BYTES as u64,
            synced_through: first_lsn - 1,
            flags: 0,
        };
        self.open = Batch::new(
            first_lsn,
            marker,
            self.config.segment_bytes,
            &self.config,
            self.batch_capacity,
        );
    }

    /// The next zeroing step, if the flusher is idle and the segment being
    /// written is not yet zeroed far enough ahead of the log's end.
    fn zero_job(&mut self) -> Option<Job> {
        let ahead = self.config.zero_ahead_bytes;
        let idle = self.sealed.is_empty() && self.requested_lsn <= self.durable_lsn;
        // A log of large flushes (as fast as the disk allows) gains little
        // (the conversion is a small part of each flush) and would pay for
        // every byte twice.
        let small_flushes = self.zero_frontier.last_flush_bytes < ZERO_CHUNK_BYTES;
        if ahead == 0 || !idle || !small_flushes || self.zero_sync_in_flight || self.closed || self.poisoned.is_some() {
            return None;
        }
        let segment = self.open.segment;
        if self.zero_frontier.segment != segment {
            self.zero_frontier = ZeroFrontier {
                segment,
                last_flush_bytes: self.zero_frontier.last_flush_bytes,
                ..ZeroFrontier::default()
            };
        }
        if self.zero_frontier.stopped {
            return None;
        }
        let entry = self.segments.iter().find(|s| s.first_lsn == segment)?;
        let file = entry.file.clone()?;
        // From the open batch's first block on: it starts on a fresh block
        // that no flush has written, and the flusher writes it only after
        // this step (the records appended meanwhile go in the same flush).
        let log_end = self.open.file_offset;
        let offset = self.zero_frontier.offset.max(log_end);
        let limit = entry.segment_bytes.min(log_end + ahead);
        if offset >= limit {
            return None;
        }
        let len = (limit - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        Some(Job::Zero {
            segment,
            file,
            offset,
            len,
        })
    }

    fn wake_waiters(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    fn segment_mut(&mut self, first_lsn: u64) -> &mut Segment {
        self.segments
            .iter_mut()
            .find(|segment| segment.first_lsn == first_lsn)
            .expect("a batch's segment is listed")
    }
}

/// Waits until the flusher has a batch to write or, idle, blocks to zero
/// ahead; `None` when it should stop.
fn next_job(shared: &Rc<RefCell<State>>) -> impl Future<Output = Option<Job>> + '_ {
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let mut state = shared.borrow_mut();
        if state.poisoned.is_some() {
            return Poll::Ready(None);
        }
        if state.requested_lsn > state.durable_lsn {
            if state.sealed.is_empty() {
                state.seal_open();
            }
            if let Some(batch) = state.sealed.front() {
                return Poll::Ready(Some(Job::Flush(batch.clone())));
            }
        }
        if state.closed {
            return Poll::Ready(None);
        }
        if let Some(job) = state.zero_job() {
            return Poll::Ready(Some(job));
        }
        state.flusher_waker = Some(cx.waker().clone());
        Poll::Pending
    })
}

/// The flusher task: one per WAL, on the WAL's executor.
pub(crate) async fn run_flusher(shared: Rc<RefCell<State>>) {
    let mut zeros = crate::fs::Zeros::default();
    while let Some(job) = next_job(&shared).await {
        let batch = match job {
            Job::Flush(batch) => batch,
            Job::Zero {
                segment,
                file,
                offset,
                len,
            } => {
                // The write is awaited (a flush of the same blocks must
                // come after it), its sync is not: it runs in a task of
                // its own, so that a flush arriving meanwhile goes ahead.
                let outcome = file.write_zeros_at(offset, len, &mut zeros).await;
                zero_written(&shared, segment, file, offset, len, outcome);
                continue;
            }
        };
        let outcome = flush(&shared, &batch).await;
        let mut state = shared.borrow_mut();
        match outcome {
            Ok(written) => {
                state.sealed.pop_front();
                state.durable_lsn = batch.last_lsn;
                state.written_lsn = state.written_lsn.max(batch.last_lsn);
                state.pending_bytes -= batch.record_bytes;
                state.stats.flushes += 1;
                state.stats.bytes_written += written as u64;
                state.zero_frontier.last_flush_bytes = written;
            }
            Err(error @ Error::Poisoned { .. }) => state.poisoned = Some(error),
            Err(error) => {
                state.failures += 1;
                state.last_failure = Some(error);
                state.requested_lsn = state.durable_lsn;
            }
        }
        state.wake_waiters();
    }
    let mut state = shared.borrow_mut();
    state.flusher_done = true;
    state.wake_waiters();
}

/// Records a zeroing step's write and, if whole, starts its fdatasync in
/// a task of its own: zeros need no durability (an unwritten preallocated
/// block reads as zeros as well), the sync only commits the extents'
/// conversion before a flush needs it, and a flush that waited for it
/// waited for nothing it needs (docs/journal/benchmarks.md, "the next
/// segment prepared ahead").
fn zero_written(
    shared: &Rc<RefCell<State>>,
    segment: u64,
    file: Rc<dyn SegmentFile>,
    offset: u64,
    len: usize,
    outcome: std::io::Result<usize>,
) {
    match outcome {
        Ok(written) if written >= len => {
            {
                let mut state = shared.borrow_mut();
                if state.zero_frontier.segment == segment {
                    state.zero_frontier.offset = offset + len as u64;
                }
                state.zero_sync_in_flight = true;
            }
            let shared = shared.clone();
            // glommio polls a spawned task at once: no borrow is held here.
            glommio::spawn_local(async move {
                let outcome = file.sync_data().await;
                let mut state = shared.borrow_mut();
                state.zero_sync_in_flight = false;
                match outcome {
                    Ok(()) => state.stats.zeroed_bytes += len as u64,
                    Err(error) => {
                        // The same file's fdatasync: a failure here may have
                        // cost the flushes' data, as one of theirs would.
                        state.poisoned = Some(Error::Poisoned {
                            segment,
                            errno: error.raw_os_error(),
                        });
                        state.wake_waiters();
                    }
                }
                if let Some(waker) = state.flusher_waker.take() {
                    waker.wake();
                }
            })
            .detach();
        }
        Ok(_) => zeroed(shared, segment, offset, len, Ok(0)),
        Err(error) => zeroed(shared, segment, offset, len, Err(DurableWriteError::Write(error))),
    }
}

/// Records the outcome of a zeroing step.
fn zeroed(
    shared: &Rc<RefCell<State>>,
    segment: u64,
    offset: u64,
    len: usize,
    outcome: std::result::Result<usize, DurableWriteError>,
) {
    let mut state = shared.borrow_mut();
    let frontier = &mut state.zero_frontier;
    match outcome {
        Ok(written) if written >= len => {
            if frontier.segment == segment {
                frontier.offset = offset + len as u64;
            }
            state.stats.zeroed_bytes += len as u64;
        }
        Ok(_) | Err(DurableWriteError::Write(_)) => {
            // Only an optimisation failed (a short write, no space):
            // flushes go on into the unwritten blocks.
            if frontier.segment == segment {
                frontier.stopped = true;
            }
        }
        Err(DurableWriteError::Sync(error)) => {
            // The same file's fdatasync: a failure here may have cost
            // the flushes' data, as one of theirs would.
            state.poisoned = Some(Error::Poisoned {
                segment,
                errno: error.raw_os_error(),
            });
            state.wake_waiters();
        }
    }
}

/// Writes one batch and makes it durable (see
/// [`SegmentFile::write_durable_at`]); returns the bytes written.
pub(crate) async fn flush(shared: &Rc<RefCell<State>>, batch: &SealedBatch) -> Result<usize> {
    let (file, claimed) = segment_file(shared, batch.segment).await?;
    let dir = shared.borrow().dir.clone();
    let key = (batch.segment, batch.file_offset);
    if shared.borrow().written_unnamed == Some(key) {
        // Written and synced by an attempt whose range-file write failed:
        // only the naming is left (a synced block is never written again).
        name_in_range(shared, &dir, batch.segment).await?;
        shared.borrow_mut().written_unnamed = None;
        return Ok(batch.bytes.padded().len());
    }
    let range = shared.borrow().range;
    let named = range.is_some_and(|range| range.newest >= batch.segment);
    if named || !claimed || range.is_none() {
        name_in_range(shared, &dir, batch.segment).await?;
        return write_batch(shared, &*file, batch).await;
    }
    // The first batch of a segment made from the spare: its creation is
    // durable and a range file exists, so the file may name it while the
    // batch is written; both are done before any of its records is
    // acknowledged. A crash between leaves the segment newer than the
    // range's `newest`, with records never acknowledged, which recovery
    // accepts (rule 9 of docs/wal.md).
    let (naming, writing) = crate::fs::join(
        name_in_range(shared, &dir, batch.segment),
        write_batch(shared, &*file, batch),
    )
    .await;
    match (naming, writing) {
        (Ok(()), writing) => writing,
        (Err(error), Ok(_)) => {
            shared.borrow_mut().written_unnamed = Some(key);
            Err(error)
        }
        (Err(_), Err(error)) => Err(error),
    }
}

/// Writes `batch` into `file` and makes it durable, retrying a short
/// write; returns the bytes written.
async fn write_batch(shared: &Rc<RefCell<State>>, file: &dyn SegmentFile, batch: &SealedBatch) -> Result<usize> {
    let padded = batch.bytes.padded().len();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let written = match file.write_durable_sealed(batch.file_offset, &batch.bytes).await {
            Ok(written) => written,
            Err(DurableWriteError::Write(error)) => return Err(Error::io(IoOp::Write, batch.segment, &error)),
            Err(DurableWriteError::Sync(error)) => {
                return Err(Error::Poisoned {
                    segment: batch.segment,
                    errno: error.raw_os_error(),
                })
            }
        };
        if written >= padded {
            break;
        }
        if attempts == WRITE_ATTEMPTS_MAX {
            return Err(Error::Io {
                op: IoOp::Write,
                segment: batch.segment,
                kind: std::io::ErrorKind::WriteZero,
                errno: None,
            });
        }
    }
    let mut state = shared.borrow_mut();
    state.written_lsn = state.written_lsn.max(batch.last_lsn);
    Ok(padded)
}

/// The write handle of `segment`, making the file first if needed; true
/// if it was just made from the spare.
async fn segment_file(shared: &Rc<RefCell<State>>, segment: u64) -> Result<(Rc<dyn SegmentFile>, bool)> {
    let (fs, path, dir, segment_bytes, nonce, existing) = {
        let mut state = shared.borrow_mut();
        let (fs, dir) = (state.fs.clone(), state.dir.clone());
        let entry = state.segment_mut(segment);
        let nonce = entry.nonce;
        (
            fs,
            entry.path.clone(),
            dir,
            entry.segment_bytes,
            nonce,
            entry.file.clone(),
        )
    };
    if let Some(file) = existing {
        return Ok((file, false));
    }
    let header = encode_segment_header(&SegmentHeader {
        first_lsn: segment,
        segment_bytes,
        nonce,
        flags: crate::format::SEGMENT_FLAG_RANGE_FILE,
        version: crate::format::FORMAT_VERSION,
    });
    let spare = shared.borrow_mut().spare.take();
    let from_spare = spare.is_some();
    let made = match spare {
        Some(spare) => {
            let spare_path = dir.join(crate::fs::SPARE_SEGMENT_FILE_NAME);
            fs.claim_spare(spare, &spare_path, &path, &header).await
        }
        None => match fs.create_segment(&path, &header, segment_bytes).await {
            Ok(file) => fs.sync_dir(&dir).await.map(|()| file),
            Err(error) => Err(error),
        },
    };
    let file = match made {
        Ok(file) => file,
        Err(error) => {
            // Leave no half-made file behind: the next attempt creates it anew.
            let _ = std::fs::remove_file(&path);
            return Err(Error::io(IoOp::Create, segment, &error));
        }
    };
    {
        let mut state = shared.borrow_mut();
        state.stats.segments_created += 1;
        state.stats.segments_from_spare += u64::from(from_spare);
        for older in state.segments.iter_mut() {
            if older.first_lsn < segment {
                older.file = None;
            }
        }
        let entry = state.segment_mut(segment);
        entry.file = Some(file.clone());
        entry.created = true;
    }
    prepare_spare(shared);
    Ok((file, from_spare))
}

/// Starts preparing the spare segment in a task of its own, unless one is
/// prepared or being prepared ([`SPARE_SEGMENTS_MAX`]), the WAL is closed
/// or poisoned, or the file system keeps no spare. A failure only leaves
/// the next rotation to create its segment as before.
pub(crate) fn prepare_spare(shared: &Rc<RefCell<State>>) {
    {
        let mut state = shared.borrow_mut();
        if state.spare.is_some() || state.spare_preparing || state.closed || state.poisoned.is_some() {
            return;
        }
        state.spare_preparing = true;
    }
    let shared = shared.clone();
    glommio::spawn_local(async move {
        let (fs, path, segment_bytes) = {
            let state = shared.borrow();
            (
                state.fs.clone(),
                state.dir.join(crate::fs::SPARE_SEGMENT_FILE_NAME),
                state.config.segment_bytes,
            )
        };
        let prepared = match fs.prepare_spare(&path, segment_bytes) {
            Some(preparing) => preparing.await.ok(),
            None => None,
        };
        let mut state = shared.borrow_mut();
        state.spare_preparing = false;
        match prepared {
            Some(file) => state.spare = Some(file),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    })
    .detach();
}

/// Makes the segment range file name `segment` as the newest segment, if it
/// does not yet: after the segment's creation is durable and before any
/// record goes in, so that its loss is refused on the next open (see
/// [`SegmentRange`]). A failed write leaves the range as it was and fails
/// the flush; the next attempt writes it again before writing records.
async fn name_in_range(shared: &Rc<RefCell<State>>, dir: &std::path::Path, segment: u64) -> Result<()> {
    if shared.borrow().range.is_some_and(|range| range.newest >= segment) {
        return Ok(());
    }
    let lock = shared.borrow().range_lock.clone();
    let _writing = lock.acquire_permit(1).await.map_err(|_| Error::Closed)?;
    // Read under the lock: a deletion may have moved the oldest meanwhile.
    let (range, sequence, fs) = {
        let state = shared.borrow();
        (state.range, state.range_sequence + 1, state.fs.clone())
    };
    if range.is_some_and(|range| range.newest >= segment) {
        return Ok(());
    }
    let range = SegmentRange {
        oldest: range.map_or(segment, |range| range.oldest),
        newest: segment,
    };
    write_segment_range_off_thread(&*fs, dir, range, sequence).await?;
    let mut state = shared.borrow_mut();
    state.range = Some(range);
    state.range_sequence = sequence;
    Ok(())
}

/// A segment nonce: random per process (the standard library's hash keys)
/// and distinct per call.
fn new_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// How long a [`SyncFuture`] that had to wait sleeps before it resolves. The
/// length does not matter (a timer that has not expired when first polled is
/// all it takes); what matters is that only the reactor wakes a sleeping task.
pub const HANDOFF_SLEEP: Duration = Duration::from_micros(1);

/// Resolves once every record appended before it was created is durable.
///
/// When it had to wait and the flusher has a next batch, it sleeps for
/// [`HANDOFF_SLEEP`] before resolving. By then the flusher has already queued
/// that flush's write, but glommio
/// hands queued I/O to the kernel only in its reactor pass, between runs of
/// the task queues: resolving at once let the caller append the whole next
/// turn (milliseconds of CPU for a 1 MiB batch of small entries) while that
/// write still waited in glommio's own queue, so the appends and the I/O ran
/// one after the other instead of side by side. A yield of the task queue
/// (`yield_task_queue_now`) does not help: with a single task queue the
/// executor runs the same queue again without a reactor pass. Only the
/// reactor wakes a sleeping task, after it has submitted the write.
pub struct SyncFuture {
    pub(crate) shared: Rc<RefCell<State>>,
    pub(crate) target_lsn: u64,
    pub(crate) failures_seen: u64,
    pub(crate) waited: bool,
    pub(crate) handoff: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Future for SyncFuture {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        if let Some(handoff) = self.handoff.as_mut() {
            if handoff.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(Ok(self.shared.borrow().durable_lsn));
        }
        let shared = self.shared.clone();
        let mut state = shared.borrow_mut();
        if state.durable_lsn >= self.target_lsn {
            // Hand off only when there is a next flush to hand off: a lone
            // commit (the flusher idle again) resolves at once, without a
            // reactor pass of its own.
            if !self.waited || state.sealed.is_empty() {
                return Poll::Ready(Ok(state.durable_lsn));
            }
            drop(state);
            let mut handoff: Pin<Box<dyn Future<Output = ()>>> = Box::pin(glommio::timer::sleep(HANDOFF_SLEEP));
            if handoff.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(shared.borrow().durable_lsn));
            }
            self.handoff = Some(handoff);
            return Poll::Pending;
        }
        if let Some(error) = &state.poisoned {
            return Poll::Ready(Err(error.clone()));
        }
        if state.failures > self.failures_seen {
            let error = state.last_failure.clone().expect("a failure is recorded");
            return Poll::Ready(Err(error));
        }
        if state.flusher_done {
            return Poll::Ready(Err(Error::Closed));
        }
        state.waiters.push(cx.waker().clone());
        drop(state);
        self.waited = true;
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_large_and_small_records_holds_each_one_as_encode_record_writes_it() {
        // Large entries are copied and checksummed in one pass, small
        // records checksummed one append later: mixed in every order, the
        // batch must hold exactly the records `encode_record` writes.
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor")
            .run(async {
                let payload: Vec<u8> = (0..70_000u32)
                    .map(|at| (at.wrapping_mul(2_654_435_761) >> 9) as u8)
                    .collect();
                let entry = |index: u64, skip: usize, length: usize| Record::Entry {
                    group: 3,
                    term: 2,
                    index,
                    entry_type: 1,
                    payload: &payload[skip..skip + length],
                };
                let records = [
                    entry(1, 1, 4096),
                    entry(2, 0, 16),
                    entry(3, 5, 4096),
                    entry(4, 7, 4096),
                    Record::HardState {
                        group: 3,
                        state: crate::format::HardState {
                            term: 2,
                            vote: 1,
                            commit: 3,
                        },
                    },
                    entry(5, 3, 65_536),
                    entry(6, 9, 300),
                    entry(7, 2, 255),
                    entry(8, 0, 256),
                ];
                let marker = FlushMarker {
                    nonce: 9,
                    offset: SEGMENT_HEADER_BYTES as u64,
                    flush: 1,
                    previous_end: SEGMENT_HEADER_BYTES as u64,
                    synced_through: 0,
                    flags: 0,
                };
                // A small first buffer: the batch grows (and moves) on the way.
                let mut batch = Batch::new(1, marker, 64 << 20, &Config::default(), 4096);
                let mut expected = Vec::new();
                for record in &records {
                    batch.push_record(record);
                    crate::format::encode_record(record, &mut expected);
                }
                assert_eq!(&batch.bytes()[FLUSH_MARKER_BYTES..], &expected[..]);
            });
    }

    #[test]
    fn a_new_batch_starts_as_large_as_the_largest_of_the_recent_ones() {
        let mut recent = RecentBatches::default();
        assert_eq!(recent.sealed(0), BATCH_CAPACITY_MIN_BYTES, "never below the floor");
        let large = (1 << 20) + 9_000;
        assert_eq!(recent.sealed(large), large + BLOCK_BYTES);
        // Small batches between large ones keep the buffer large...
        for _ in 1..RECENT_BATCHES_MAX {
            assert_eq!(recent.sealed(100 << 10), large + BLOCK_BYTES);
        }
        // ...until the large one is no longer among the recent ones.
        assert_eq!(recent.sealed(100 << 10), (100 << 10) + BLOCK_BYTES);
    }
}
