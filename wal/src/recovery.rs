//! Recovery: map every segment, verify every record's CRC in order, rebuild
//! each group's index, and decide what to do with a damaged tail.
//!
//! Rules (also in `docs/wal.md`):
//! 1. Segments are read in the order of their first LSN (their file name);
//!    each must start where the previous one ended, else [`Error::MissingRecords`].
//! 2. A bad record, or any non-zero byte after the last record, in any
//!    segment but the last is [`Error::Corruption`]: the writer fdatasyncs a
//!    segment fully before it writes the next one.
//! 3. Within a segment, recovery follows the chain of flush markers: each
//!    flush starts on a fresh block with a marker naming the segment's
//!    nonce, its own offset, its number, where the previous flush ended and
//!    the last LSN synced before it. The chain stops at zeros, at damage or
//!    at a marker that does not continue it. Non-zero bytes from there on
//!    are damage.
//! 4. In the last segment, damage is a torn tail only if no valid marker of
//!    a later flush lies beyond it: then it can only be the bytes of the
//!    last flush, whose sync may never have returned. In tolerant mode it is
//!    zeroed and reported; in strict mode it is [`Error::TornTail`]. With a
//!    later marker beyond it, the damaged bytes were synced before that
//!    flush was written: [`Error::Corruption`], in every mode.
//! 5. A last segment whose header block is all zeros was being created when
//!    the process died: it is removed.
//! 6. A segment file shorter than the size its header gives was truncated
//!    (segments are preallocated whole before their header is written):
//!    [`Error::TruncatedSegment`], in every mode.
//! 7. The segments listed must cover the [`SegmentRange`] recorded in the
//!    directory: none may be missing after its newest or before its oldest
//!    ([`Error::MissingSegment`], in every mode). Rule 1 covers the middle.
//! 8. Without a range file, a segment whose header carries
//!    [`SEGMENT_FLAG_RANGE_FILE`] and that holds records means the file was
//!    lost ([`Error::MissingSegmentRange`], in every mode): the WAL names a
//!    segment in the file before it writes any record into it. Only
//!    `coraft-wal rebuild-range` ([`recover_ignoring_range_file`], then
//!    [`write_segment_range`]) accepts such a directory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::config::RecoveryMode;
use crate::error::{Error, IoOp, Result};
use crate::format::{
    align_up, decode_record, decode_segment_header, parse_segment_file_name, BadHeader, BadRecord, Decoded,
    FlushMarker, Record, BLOCK_BYTES, FLUSH_CLOSE_FLAG, FLUSH_MARKER_BYTES, RECORD_PREFIX_BYTES,
    SEGMENT_FLAG_RANGE_FILE, SEGMENT_HEADER_BYTES,
};
use crate::fs::FileSystem;
use crate::index::Groups;

/// The name of the file, in the WAL directory, that records which segments
/// exist: [`SegmentRange`].
pub const SEGMENT_RANGE_FILE_NAME: &str = "segment-range";
/// Magic number of the older range file format (one record, version 1),
/// which is still read (and converted on open).
const SEGMENT_RANGE_MAGIC_V1: [u8; 8] = *b"CORAFTR1";
/// Bytes of the older range file: magic, oldest, newest, CRC32 of those.
const SEGMENT_RANGE_V1_BYTES: usize = 28;
/// Magic number of a slot of the range file.
const SEGMENT_RANGE_SLOT_MAGIC: [u8; 8] = *b"CORAFTRS";
/// Format version of a slot of the range file.
const SEGMENT_RANGE_SLOT_VERSION: u32 = 2;
/// Bytes of one slot of the range file (one block: an update overwrites
/// exactly one slot).
pub const SEGMENT_RANGE_SLOT_BYTES: usize = BLOCK_BYTES;
/// Bytes of the range file: two slots.
pub const SEGMENT_RANGE_FILE_BYTES: usize = 2 * SEGMENT_RANGE_SLOT_BYTES;
/// The encoded fields of a slot: magic, version, sequence, oldest, newest
/// (the CRC32 of those follows them).
const SEGMENT_RANGE_SLOT_FIELDS: usize = 8 + 4 + 8 + 8 + 8;

/// The segments the WAL knows exist, oldest and newest by first LSN, kept
/// in [`SEGMENT_RANGE_FILE_NAME`] so that recovery can tell a segment file
/// that went missing at either end of the log from one the WAL never made
/// or deleted itself. (A gap in the middle shows without it: each segment
/// must start where the previous one ended.)
///
/// The file holds two slots of one block each ([`SEGMENT_RANGE_SLOT_BYTES`]):
/// magic, version, an update sequence number, oldest, newest, CRC32. The
/// range is the one in the valid slot with the highest sequence. An update
/// writes the next sequence into the other slot (slot `sequence % 2`) and
/// fdatasyncs the file: one block write and one sync, no rename and no
/// directory sync. A crash during it can tear only that slot, which then
/// fails its CRC (or still holds the update before the previous one), and
/// the other slot, durable before the update started, gives the range the
/// update was replacing; that is safe because the WAL acknowledges nothing
/// and deletes nothing that depends on an update before the update's sync
/// has returned (see below). The file is created whole (a temporary file
/// written and synced, renamed over it, the directory synced) when there
/// is none yet and when an older WAL's one-record file is converted on
/// open.
///
/// The WAL updates the file at two points only:
/// - after a new segment's creation is durable (header written and synced,
///   directory synced) and before any record in it is acknowledged:
///   `newest` becomes that segment (before the first flush into it, or
///   beside it for a segment made from the prepared spare). A crash
///   before that leaves a segment newer than `newest` without acknowledged
///   records (or blank, and then removed): legitimate. Once any record in
///   the segment is acknowledged, the file names it, so a deleted newest
///   segment is refused instead of its records silently vanishing.
/// - when [`crate::Wal::delete_obsolete_segments`] has decided which
///   segments no group needs (after purges), before it removes any file:
///   `oldest` becomes the first segment kept. A crash before the removals
///   leaves segments older than `oldest`: legitimate (the next deletion
///   removes them). A listed oldest segment newer than `oldest` means a
///   segment the WAL still needed was deleted by someone else.
///
/// A directory with segments but no range file was written before the file
/// existed, or lost it. Segments made by a WAL that keeps the file say so
/// in their header ([`SEGMENT_FLAG_RANGE_FILE`]): if one of them holds
/// records, the file was lost and recovery refuses the directory
/// ([`Error::MissingSegmentRange`]; `coraft-wal rebuild-range` accepts it
/// explicitly). Otherwise (segments of older code only, or a crash between
/// making the first segment and naming it) it is read without these
/// checks, and opening it writes the file for the segments found, so the
/// checks hold from then on. Code older than the range file ignores the
/// file and the flag; code that knows only the one-record file refuses the
/// two-slot file as damaged ([`Error::BadSegmentRange`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRange {
    /// The first LSN of the oldest segment the WAL has not deleted.
    pub oldest: u64,
    /// The first LSN of the newest segment the WAL created and may have
    /// written records to.
    pub newest: u64,
}

/// What a range file holds: the range and the sequence number of the
/// update that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRange {
    /// The range.
    pub range: SegmentRange,
    /// The sequence number of its slot (at least 1); 0 for a file in the
    /// older one-record format, which the WAL converts when it opens.
    pub sequence: u64,
}

/// Reads `dir`'s segment range file; `None` if there is none.
pub fn read_segment_range(dir: &Path) -> Result<Option<SegmentRange>> {
    Ok(read_stored_range(dir)?.map(|stored| stored.range))
}

/// Reads `dir`'s segment range file with the sequence number of the slot
/// it came from; `None` if there is none. A file in neither format, or
/// with no valid slot, is [`Error::BadSegmentRange`].
pub fn read_stored_range(dir: &Path) -> Result<Option<StoredRange>> {
    let path = dir.join(SEGMENT_RANGE_FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(IoOp::RangeFile, 0, &error)),
    };
    let stored = match bytes.len() {
        SEGMENT_RANGE_V1_BYTES => decode_range_v1(&bytes),
        SEGMENT_RANGE_FILE_BYTES => bytes
            .chunks_exact(SEGMENT_RANGE_SLOT_BYTES)
            .enumerate()
            .filter_map(|(slot, bytes)| decode_range_slot(slot, bytes))
            .max_by_key(|stored| stored.sequence),
        _ => None,
    };
    stored.map(Some).ok_or(Error::BadSegmentRange { path })
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The older one-record file: magic, oldest, newest, CRC32.
fn decode_range_v1(bytes: &[u8]) -> Option<StoredRange> {
    let (oldest, newest) = (u64_at(bytes, 8), u64_at(bytes, 16));
    let valid = bytes[0..8] == SEGMENT_RANGE_MAGIC_V1
        && crate::format::crc32(&bytes[..24]).to_le_bytes() == bytes[24..28]
        && oldest <= newest;
    valid.then_some(StoredRange {
        range: SegmentRange { oldest, newest },
        sequence: 0,
    })
}

/// Slot `slot` of the two-slot file, if it is whole and belongs there (a
/// sequence number always goes to slot `sequence % 2`).
fn decode_range_slot(slot: usize, bytes: &[u8]) -> Option<StoredRange> {
    let fields = &bytes[..SEGMENT_RANGE_SLOT_FIELDS];
    let crc = &bytes[SEGMENT_RANGE_SLOT_FIELDS..SEGMENT_RANGE_SLOT_FIELDS + 4];
    let (sequence, oldest, newest) = (u64_at(bytes, 12), u64_at(bytes, 20), u64_at(bytes, 28));
    let valid = fields[0..8] == SEGMENT_RANGE_SLOT_MAGIC
        && fields[8..12] == SEGMENT_RANGE_SLOT_VERSION.to_le_bytes()
        && crate::format::crc32(fields).to_le_bytes() == crc
        && sequence > 0
        && sequence % 2 == slot as u64
        && oldest <= newest;
    valid.then_some(StoredRange {
        range: SegmentRange { oldest, newest },
        sequence,
    })
}

/// One slot holding `range` as update number `sequence`: the block an
/// update writes at `(sequence % 2) * SEGMENT_RANGE_SLOT_BYTES`.
pub fn encode_range_slot(range: SegmentRange, sequence: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SEGMENT_RANGE_SLOT_BYTES);
    bytes.extend_from_slice(&SEGMENT_RANGE_SLOT_MAGIC);
    bytes.extend_from_slice(&SEGMENT_RANGE_SLOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    bytes.extend_from_slice(&range.oldest.to_le_bytes());
    bytes.extend_from_slice(&range.newest.to_le_bytes());
    let crc = crate::format::crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.resize(SEGMENT_RANGE_SLOT_BYTES, 0);
    bytes
}

/// A whole new range file holding `range` as update 1 (slot 1; slot 0 is
/// zeros, which is no valid slot).
fn encode_range_file(range: SegmentRange) -> Vec<u8> {
    let mut bytes = vec![0; SEGMENT_RANGE_SLOT_BYTES];
    bytes.extend_from_slice(&encode_range_slot(range, 1));
    bytes
}

/// Durably writes `dir`'s segment range file anew, holding `range` as
/// update 1, through `fs` ([`FileSystem::replace_file`]: a temporary file
/// written and synced, renamed over the old one, the directory synced).
/// Returns the sequence number written (1).
pub fn write_segment_range(fs: &dyn FileSystem, dir: &Path, range: SegmentRange) -> Result<u64> {
    fs.replace_file(dir, SEGMENT_RANGE_FILE_NAME, &encode_range_file(range))
        .map_err(|error| Error::io(IoOp::RangeFile, range.newest, &error))?;
    Ok(1)
}

/// Durably records `range` as update number `sequence` (one more than the
/// update the file holds), off the shard's thread: for the write path,
/// where the shard's thread must not wait on the file's syncs. Update 1
/// makes the file ([`FileSystem::replace_file_off_thread`]: there is none
/// yet); any later one overwrites slot `sequence % 2`, the one not holding
/// the current range, and fdatasyncs it
/// ([`FileSystem::overwrite_file_off_thread`]). Callers serialise these
/// writes (two in flight could tear both slots, or share the temporary
/// file).
pub async fn write_segment_range_off_thread(
    fs: &dyn FileSystem,
    dir: &Path,
    range: SegmentRange,
    sequence: u64,
) -> Result<()> {
    let written = if sequence <= 1 {
        fs.replace_file_off_thread(dir, SEGMENT_RANGE_FILE_NAME, &encode_range_file(range))
            .await
    } else {
        let offset = (sequence % 2) * SEGMENT_RANGE_SLOT_BYTES as u64;
        fs.overwrite_file_off_thread(
            dir,
            SEGMENT_RANGE_FILE_NAME,
            offset,
            &encode_range_slot(range, sequence),
        )
        .await
    };
    written.map_err(|error| Error::io(IoOp::RangeFile, range.newest, &error))
}

/// Rule 7: refuses a listing that lacks a segment at either end of `range`.
fn check_range(dir: &Path, range: SegmentRange, listed: &[(u64, PathBuf)]) -> Result<()> {
    let missing = |segment| Error::MissingSegment {
        segment,
        dir: dir.to_path_buf(),
        oldest: range.oldest,
        newest: range.newest,
    };
    let (Some((first, _)), Some((last, _))) = (listed.first(), listed.last()) else {
        return Err(missing(range.newest));
    };
    if *last < range.newest {
        return Err(missing(range.newest));
    }
    if *first > range.oldest {
        return Err(missing(range.oldest));
    }
    Ok(())
}

/// A segment found on disk, mapped read-only.
#[derive(Debug, Clone)]
pub struct MappedSegment {
    /// The LSN of its first record (also its file name).
    pub first_lsn: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its size from the header.
    pub segment_bytes: u64,
    /// The whole file, mapped.
    pub map: Rc<Mmap>,
    /// Where its valid records end (the last flush's records, or its
    /// marker if it has none).
    pub end_offset: u64,
    /// How many records it holds.
    pub records: u64,
    /// Its nonce, from the header.
    pub nonce: u64,
    /// The number of the last valid flush in it (0 if none).
    pub flushes: u64,
    /// True if its last valid flush is a close marker (a clean close).
    pub closed: bool,
    /// Its format version, from the header.
    pub version: u32,
}

/// A torn tail found (and, when repairing, zeroed) by recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The segment (its first LSN).
    pub segment: u64,
    /// Where the valid records end; everything after was dropped.
    pub offset: u64,
    /// Why the first dropped bytes were not a record, if they looked like one.
    pub reason: Option<BadRecord>,
}

/// What recovery rebuilt.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Every group's index.
    pub groups: Groups,
    /// The segments, oldest first.
    pub segments: Vec<MappedSegment>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// The torn tail that was dropped, if any.
    pub torn_tail: Option<TornTail>,
    /// A blank last segment removed (its first LSN), if any.
    pub removed_blank_segment: Option<u64>,
    /// The segment range file's contents; `None` if there is none.
    pub range: Option<SegmentRange>,
    /// The sequence number of the range file's slot that gave `range`
    /// ([`StoredRange::sequence`]): 0 without a file or for the older
    /// one-record format.
    pub range_sequence: u64,
}

/// Lists the segment files of `dir`, sorted by first LSN.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let io_error = |error: std::io::Error| Error::io(IoOp::Directory, 0, &error);
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_error)? {
        let item = item.map_err(io_error)?;
        if let Some(first_lsn) = item.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((first_lsn, item.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Maps a whole segment file read-only.
pub fn map_segment(path: &Path, segment: u64) -> Result<Mmap> {
    let file = File::open(path).map_err(|error| Error::io(IoOp::Open, segment, &error))?;
    // SAFETY: the WAL only ever writes past the valid end of a segment and
    // never truncates one while mapped; readers use only validated bytes.
    unsafe { Mmap::map(&file) }.map_err(|error| Error::io(IoOp::Open, segment, &error))
}

/// Drops `map`'s pages from this process's resident memory: they stay in
/// the page cache (or on disk) and are read again on the next access.
/// Recovery reads every byte of the log once to check it; without this the
/// whole log stayed resident through its mappings while the engine copied
/// it into memory, twice the log's size at the peak of a restart.
pub fn release_pages(map: &Mmap) {
    // SAFETY: a read-only shared file mapping: MADV_DONTNEED only removes
    // this process's page table entries, and the next access maps the same
    // bytes of the file again, so no slice into the map changes. A failure
    // only leaves the pages resident.
    let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
}

/// Drops the file at `path` from the page cache (pages mapped or dirty
/// stay): for a segment whose payloads recovery copied, so that the log is
/// not held twice, once in the heap and once in the cache. Any later read
/// of the segment reads the disk again. A failure only leaves the cache as
/// it was.
pub fn drop_cached_pages(path: &Path) {
    if let Ok(file) = File::open(path) {
        // SAFETY: advice on an open descriptor; it changes no byte of the file.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// What following a segment's chain of flushes found.
struct Walk {
    /// Where the valid records of the last valid flush end.
    end_offset: u64,
    /// Where the walk stopped: the start of the next flush it expected, or
    /// the first byte in a flush that is not a valid record.
    stop: u64,
    /// Why the bytes at `stop` are not a record, if they looked like one.
    bad: Option<BadRecord>,
    /// Valid flushes followed.
    flushes: u64,
    /// The last valid flush was a close marker.
    closed: bool,
}

/// Follows the flush markers of a segment from its first block, calling
/// `visit` for each record (its offset and LSN) of each valid flush.
fn walk(
    bytes: &[u8],
    nonce: u64,
    first_lsn: u64,
    mut visit: impl FnMut(u64, &Record<'_>) -> Result<()>,
) -> Result<Walk> {
    let mut walk = Walk {
        end_offset: SEGMENT_HEADER_BYTES as u64,
        stop: SEGMENT_HEADER_BYTES as u64,
        bad: None,
        flushes: 0,
        closed: false,
    };
    let mut records = 0u64;
    loop {
        let start = walk.stop as usize;
        if start >= bytes.len() {
            return Ok(walk);
        }
        let expected = FlushMarker {
            nonce,
            offset: start as u64,
            flush: walk.flushes + 1,
            previous_end: walk.end_offset,
            synced_through: first_lsn + records - 1,
            flags: 0,
        };
        match decode_record(&bytes[start..]) {
            Decoded::Marker(marker)
                if marker
                    == FlushMarker {
                        flags: marker.flags,
                        ..expected
                    } =>
            {
                walk.closed = marker.flags & FLUSH_CLOSE_FLAG != 0;
            }
            Decoded::End => return Ok(walk),
            Decoded::Bad(reason) => {
                walk.bad = Some(reason);
                return Ok(walk);
            }
            // A marker that does not continue the chain, or a record where
            // a flush must start.
            Decoded::Marker(_) | Decoded::Record(..) => return Ok(walk),
        }
        walk.flushes += 1;
        let mut offset = start + FLUSH_MARKER_BYTES;
        walk.end_offset = offset as u64;
        walk.stop = offset as u64;
        loop {
            // Records run on across blocks; the flush ends at a zero prefix
            // or, closer than a prefix to the next block, at zeros up to it.
            // Those few zeros may also be the first bytes of a record's CRC
            // (one record in 256 starts with a zero byte): a whole valid
            // record there continues the flush. On a block boundary the
            // next flush's marker may follow.
            let to_block = align_up(offset as u64) as usize - offset;
            if to_block > 0
                && to_block < RECORD_PREFIX_BYTES
                && bytes[offset..offset + to_block].iter().all(|&b| b == 0)
                && !matches!(decode_record(&bytes[offset..]), Decoded::Record(..))
            {
                break;
            }
            match decode_record(&bytes[offset..]) {
                Decoded::Marker(_) if to_block == 0 => break,
                Decoded::Record(record, length) => {
                    visit(offset as u64, &record)?;
                    records += 1;
                    offset += length;
                    walk.end_offset = offset as u64;
                    walk.stop = offset as u64;
                }
                Decoded::End => break,
                Decoded::Bad(reason) => {
                    walk.bad = Some(reason);
                    return Ok(walk);
                }
                // A marker inside a flush: the flush is damaged here.
                Decoded::Marker(_) => return Ok(walk),
            }
        }
        // The rest of the flush's last block was written as zeros.
        let next = (align_up(offset as u64) as usize).min(bytes.len());
        if bytes[offset..next].iter().any(|&b| b != 0) {
            return Ok(walk);
        }
        walk.stop = next as u64;
    }
}

/// True if a valid marker of a flush later than `flushes` starts on a block
/// boundary at or after `from`: the flush that wrote it began only after
/// every earlier flush of the segment was synced.
fn later_marker_exists(bytes: &[u8], from: u64, nonce: u64, flushes: u64) -> bool {
    let first_block = align_up(from) as usize;
    (first_block..bytes.len()).step_by(BLOCK_BYTES).any(|block| {
        matches!(
            decode_record(&bytes[block..]),
            Decoded::Marker(marker)
                if marker.nonce == nonce && marker.offset == block as u64 && marker.flush > flushes
        )
    })
}

/// The offset just past the last non-zero byte at or after `from`, if any.
fn nonzero_end(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map(|position| from + position + 1)
}

/// Recovers the WAL in `dir`. With `repair`, a torn tail is zeroed on disk
/// and a blank last segment removed; without, the files are left untouched
/// (the `verify` and `inspect` tools).
pub fn recover(dir: &Path, mode: RecoveryMode, repair: bool) -> Result<Recovered> {
    recover_with(dir, mode, repair, true, false)
}

/// [`recover`], also copying every entry's payload out of its segment as
/// its record is checked (while the bytes are in cache), into the index
/// ([`crate::index::GroupLog::take_copies`]): for an opener that builds its
/// in-memory log from the WAL, which then never reads the log a second
/// time. Payloads later truncated, purged or forgotten are dropped as those
/// records replay. Each segment leaves the page cache once checked
/// ([`drop_cached_pages`]).
pub fn recover_keeping_payloads(dir: &Path, mode: RecoveryMode, repair: bool) -> Result<Recovered> {
    recover_with(dir, mode, repair, true, true)
}

/// [`recover`] without reading the segment range file or missing it (rules
/// 7 and 8), and without repairing: for `coraft-wal rebuild-range`, which
/// then records the segments found. Every other rule holds.
pub fn recover_ignoring_range_file(dir: &Path, mode: RecoveryMode) -> Result<Recovered> {
    recover_with(dir, mode, false, false, false)
}

fn recover_with(
    dir: &Path,
    mode: RecoveryMode,
    repair: bool,
    range_file: bool,
    keep_payloads: bool,
) -> Result<Recovered> {
    let mut listed = list_segments(dir)?;
    let stored = if range_file { read_stored_range(dir)? } else { None };
    let range = stored.map(|stored| stored.range);
    if let Some(range) = range {
        check_range(dir, range, &listed)?;
    }
    // A blank segment the range file names was created durably: its header
    // was damaged, not never written.
    let may_be_blank = |first_lsn: u64| range.is_none_or(|range| first_lsn > range.newest);
    let mut groups = Groups::default();
    let mut segments: Vec<MappedSegment> = Vec::new();
    let mut next_lsn = 1;
    let mut torn_tail = None;
    let mut removed_blank_segment = None;
    let count = listed.len();
    for (position, (first_lsn, path)) in listed.drain(..).enumerate() {
        let last = position + 1 == count;
        let map = map_segment(&path, first_lsn)?;
        // The walk reads the whole segment in order: read it ahead (a failure
        // only leaves the reads to the page faults).
        let _ = map.advise(Advice::WillNeed);
        let header = match decode_segment_header(&map) {
            Ok(header) if header.first_lsn == first_lsn => header,
            Err(BadHeader::Blank) if last && may_be_blank(first_lsn) => {
                if repair {
                    std::fs::remove_file(&path).map_err(|error| Error::io(IoOp::Remove, first_lsn, &error))?;
                    sync_directory(dir)?;
                }
                removed_blank_segment = Some(first_lsn);
                break;
            }
            Err(BadHeader::Invalid) if last && map.len() < SEGMENT_HEADER_BYTES && may_be_blank(first_lsn) => {
                // Created but never preallocated: the process died in creation.
                if repair {
                    std::fs::remove_file(&path).map_err(|error| Error::io(IoOp::Remove, first_lsn, &error))?;
                    sync_directory(dir)?;
                }
                removed_blank_segment = Some(first_lsn);
                break;
            }
            Err(BadHeader::UnsupportedVersion(version)) => {
                return Err(Error::UnsupportedFormat {
                    segment: first_lsn,
                    version,
                })
            }
            _ => return Err(Error::BadSegmentHeader { segment: first_lsn }),
        };
        if position > 0 && first_lsn != next_lsn {
            return Err(Error::MissingRecords {
                segment: first_lsn,
                expected_lsn: next_lsn,
            });
        }
        if (map.len() as u64) < header.segment_bytes {
            return Err(Error::TruncatedSegment {
                segment: first_lsn,
                length: map.len() as u64,
                segment_bytes: header.segment_bytes,
            });
        }
        next_lsn = first_lsn;
        let log_is_suffix = segments.first().map_or(first_lsn, |first| first.first_lsn) > 1;
        let segment_len = map.len().min(header.segment_bytes as usize);
        let bytes = &map[..segment_len];
        let walked = walk(bytes, header.nonce, first_lsn, |offset, record| {
            let replayed = if keep_payloads {
                groups.replay_keeping(record, next_lsn, offset, log_is_suffix)
            } else {
                groups.replay(record, next_lsn, offset, log_is_suffix)
            };
            replayed.map_err(|_| Error::InconsistentRecord {
                segment: first_lsn,
                offset,
                group: record.group(),
            })?;
            next_lsn += 1;
            Ok(())
        })?;
        // Rule 8, before anything is repaired.
        if range_file && range.is_none() && header.flags & SEGMENT_FLAG_RANGE_FILE != 0 && next_lsn > first_lsn {
            return Err(Error::MissingSegmentRange {
                path: dir.join(SEGMENT_RANGE_FILE_NAME),
                segment: first_lsn,
            });
        }
        if let Some(damage_end) = nonzero_end(bytes, walked.stop as usize) {
            // The writer synced a segment whole before writing the next one,
            // and a later flush marker vouches for everything before it:
            // only the last flush of the last segment may be torn.
            if !last || later_marker_exists(bytes, walked.stop, header.nonce, walked.flushes) {
                return Err(Error::Corruption {
                    segment: first_lsn,
                    offset: walked.stop,
                });
            }
            if mode == RecoveryMode::Strict {
                return Err(Error::TornTail {
                    segment: first_lsn,
                    offset: walked.stop,
                });
            }
            if repair {
                zero_range(&path, first_lsn, walked.stop, damage_end as u64)?;
            }
            torn_tail = Some(TornTail {
                segment: first_lsn,
                offset: walked.stop,
                reason: walked.bad,
            });
        }
        release_pages(&map);
        if keep_payloads {
            // Its payloads are in memory now: the page cache's copy of the
            // segment would be a second one (a 10 GiB log took 10 GiB of heap
            // and 10 GiB of cache, and the kernel reclaimed other files' cache
            // to make room).
            drop_cached_pages(&path);
        }
        segments.push(MappedSegment {
            first_lsn,
            path,
            segment_bytes: header.segment_bytes,
            map: Rc::new(map),
            end_offset: walked.end_offset,
            records: next_lsn - first_lsn,
            nonce: header.nonce,
            flushes: walked.flushes,
            closed: walked.closed,
            version: header.version,
        });
    }
    Ok(Recovered {
        groups,
        segments,
        next_lsn,
        torn_tail,
        removed_blank_segment,
        range,
        range_sequence: stored.map_or(0, |stored| stored.sequence),
    })
}

fn zero_range(path: &Path, segment: u64, from: u64, to: u64) -> Result<()> {
    let repair_error = |error: std::io::Error| Error::io(IoOp::Repair, segment, &error);
    let file = OpenOptions::new().write(true).open(path).map_err(repair_error)?;
    let zeros = vec![0u8; (to - from) as usize];
    file.write_all_at(&zeros, from).map_err(repair_error)?;
    file.sync_data().map_err(repair_error)
}

fn sync_directory(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| Error::io(IoOp::SyncDirectory, 0, &error))
}
