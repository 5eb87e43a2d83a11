//! Recovery: map every segment, verify every record's CRC in order, rebuild
//! each group's index, and decide what to do with a damaged tail.
//!
//! Rules (also in `docs/wal.md`):
//! 1. Segments are read in the order of their first LSN (their file name);
//!    each must start where the previous one ended, else [`Error::MissingRecords`].
//! 2. A bad record, or any non-zero byte after the last record, in any
//!    segment but the last is [`Error::Corruption`]: the writer fdatasyncs a
//!    segment fully before it writes the next one.
//! 3. In the last segment, the valid records end at the first zero prefix or
//!    bad record. Any non-zero byte after that end is damage. If all of it
//!    lies within [`TORN_WINDOW_BYTES`] of the end's block (the most one
//!    flush can have written past the durable end), it is a torn tail: in
//!    tolerant mode it is zeroed and reported, in strict mode it is
//!    [`Error::TornTail`]. Damage further out is [`Error::Corruption`].
//! 4. A last segment whose header block is all zeros was being created when
//!    the process died: it is removed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use crate::config::{RecoveryMode, BATCH_BYTES_LIMIT};
use crate::error::{Error, IoOp, Result};
use crate::format::{
    align_down, decode_record, decode_segment_header, parse_segment_file_name, BadHeader, BadRecord, Decoded, Record,
    BLOCK_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::index::Groups;

/// How far past the durable end one flush can write: damage beyond this
/// distance from the end of the valid records cannot be a torn write.
pub const TORN_WINDOW_BYTES: u64 = (BATCH_BYTES_LIMIT + 4 * BLOCK_BYTES) as u64;

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
    /// Where its valid records end.
    pub end_offset: u64,
    /// How many records it holds.
    pub records: u64,
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

/// Where the valid records of a segment end, calling `visit` for each.
fn scan(bytes: &[u8], mut visit: impl FnMut(u64, &Record<'_>) -> Result<()>) -> Result<(u64, Option<BadRecord>)> {
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        match decode_record(&bytes[offset..]) {
            Decoded::Record(record, length) => {
                visit(offset as u64, &record)?;
                offset += length;
            }
            Decoded::Padding(length) => offset += length,
            Decoded::End => return Ok((offset as u64, None)),
            Decoded::Bad(reason) => return Ok((offset as u64, Some(reason))),
        }
    }
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
    let mut listed = list_segments(dir)?;
    let mut groups = Groups::default();
    let mut segments: Vec<MappedSegment> = Vec::new();
    let mut next_lsn = 1;
    let mut torn_tail = None;
    let mut removed_blank_segment = None;
    let count = listed.len();
    for (position, (first_lsn, path)) in listed.drain(..).enumerate() {
        let last = position + 1 == count;
        let map = map_segment(&path, first_lsn)?;
        let header = match decode_segment_header(&map) {
            Ok(header) if header.first_lsn == first_lsn => header,
            Err(BadHeader::Blank) if last => {
                if repair {
                    std::fs::remove_file(&path).map_err(|error| Error::io(IoOp::Remove, first_lsn, &error))?;
                    sync_directory(dir)?;
                }
                removed_blank_segment = Some(first_lsn);
                break;
            }
            Err(BadHeader::Invalid) if last && map.len() < SEGMENT_HEADER_BYTES => {
                // Created but never preallocated: the process died in creation.
                if repair {
                    std::fs::remove_file(&path).map_err(|error| Error::io(IoOp::Remove, first_lsn, &error))?;
                    sync_directory(dir)?;
                }
                removed_blank_segment = Some(first_lsn);
                break;
            }
            _ => return Err(Error::BadSegmentHeader { segment: first_lsn }),
        };
        if position > 0 && first_lsn != next_lsn {
            return Err(Error::MissingRecords {
                segment: first_lsn,
                expected_lsn: next_lsn,
            });
        }
        next_lsn = first_lsn;
        let log_is_suffix = segments.first().map_or(first_lsn, |first| first.first_lsn) > 1;
        let segment_len = map.len().min(header.segment_bytes as usize);
        let bytes = &map[..segment_len];
        let (end_offset, bad) = scan(bytes, |offset, record| {
            groups
                .replay(record, next_lsn, offset, log_is_suffix)
                .map_err(|_| Error::InconsistentRecord {
                    segment: first_lsn,
                    offset,
                    group: record.group(),
                })?;
            next_lsn += 1;
            Ok(())
        })?;
        if !last {
            // The writer synced this segment before writing the next one, so
            // everything after its last record must still be zero.
            if bad.is_some() || nonzero_end(bytes, end_offset as usize).is_some() {
                return Err(Error::Corruption {
                    segment: first_lsn,
                    offset: end_offset,
                });
            }
        } else if let Some(damage_end) = nonzero_end(bytes, end_offset as usize) {
            let window_end = align_down(end_offset) + TORN_WINDOW_BYTES;
            if damage_end as u64 > window_end {
                return Err(Error::Corruption {
                    segment: first_lsn,
                    offset: end_offset,
                });
            }
            if mode == RecoveryMode::Strict {
                return Err(Error::TornTail {
                    segment: first_lsn,
                    offset: end_offset,
                });
            }
            if repair {
                zero_range(&path, first_lsn, end_offset, damage_end as u64)?;
            }
            torn_tail = Some(TornTail {
                segment: first_lsn,
                offset: end_offset,
                reason: bad,
            });
        }
        segments.push(MappedSegment {
            first_lsn,
            path,
            segment_bytes: header.segment_bytes,
            map: Rc::new(map),
            end_offset,
            records: next_lsn - first_lsn,
        });
    }
    Ok(Recovered {
        groups,
        segments,
        next_lsn,
        torn_tail,
        removed_blank_segment,
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
