//! The WAL's one error type: every failure as data with structured fields.

use std::io;

/// The file-system operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Listing or creating the WAL directory.
    Directory,
    /// Creating and preallocating a segment.
    Create,
    /// Opening or mapping an existing segment.
    Open,
    /// Writing records.
    Write,
    /// fdatasync of a segment.
    Sync,
    /// fsync of the directory.
    SyncDirectory,
    /// Deleting a segment.
    Remove,
    /// Zeroing a torn tail during recovery.
    Repair,
    /// Replacing (or reading) the segment range file
    /// ([`crate::recovery::SEGMENT_RANGE_FILE_NAME`]).
    RangeFile,
}

impl IoOp {
    /// What was being done, and to which file, in words: "creating and
    /// preallocating segment file 00000000000000000001.wal".
    pub fn describe(self, segment: u64) -> String {
        let file = || format!("segment file {}", crate::format::segment_file_name(segment));
        match self {
            IoOp::Directory => "listing or creating the WAL directory".into(),
            IoOp::Create => format!("creating and preallocating {}", file()),
            IoOp::Open => format!("opening {}", file()),
            IoOp::Write => format!("writing records to {}", file()),
            IoOp::Sync => format!("fdatasync of {}", file()),
            IoOp::SyncDirectory => "fsync of the WAL directory".into(),
            IoOp::Remove => format!("deleting {}", file()),
            IoOp::Repair => format!("zeroing a torn tail of {}", file()),
            IoOp::RangeFile => format!(
                "replacing the segment range file {} (for segment {})",
                crate::recovery::SEGMENT_RANGE_FILE_NAME,
                crate::format::segment_file_name(segment)
            ),
        }
    }
}

/// Errors of the write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that an earlier sync covered (or that a later flush marker
    /// vouches for) fail their checks: data the WAL reported durable is
    /// damaged. Never repaired, in any recovery mode.
    #[error(
        "corruption in segment {segment} (file {}) at offset {offset}: data reported durable is damaged",
        crate::format::segment_file_name(*segment)
    )]
    Corruption {
        /// The segment's first LSN (its file name).
        segment: u64,
        /// The byte offset of the bad record in the segment.
        offset: u64,
    },
    /// A segment header is damaged, foreign, or of an unknown version.
    #[error(
        "bad header in segment {segment} (file {}): damaged, or not a coraft WAL segment",
        crate::format::segment_file_name(*segment)
    )]
    BadSegmentHeader {
        /// The segment's first LSN (its file name).
        segment: u64,
    },
    /// A segment file is shorter than the size its header gives: segments
    /// are preallocated whole before their header is written, so bytes
    /// at its end (records reported durable among them, perhaps) were cut
    /// off. Never repaired, in any recovery mode.
    #[error(
        "segment {segment} (file {}) is {length} bytes, its header says {segment_bytes}: the file was truncated",
        crate::format::segment_file_name(*segment)
    )]
    TruncatedSegment {
        /// The segment's first LSN (its file name).
        segment: u64,
        /// The file's length.
        length: u64,
        /// The size its header gives.
        segment_bytes: u64,
    },
    /// A segment of an on-disk format version this code does not read.
    #[error(
        "segment {segment} (file {}) has WAL format version {version}; this build reads versions {} to {}",
        crate::format::segment_file_name(*segment),
        crate::format::FORMAT_VERSION_MIN,
        crate::format::FORMAT_VERSION
    )]
    UnsupportedFormat {
        /// The segment's first LSN (its file name).
        segment: u64,
        /// The version found in its header.
        version: u32,
    },
    /// Consecutive segments do not continue each other: records are missing.
    #[error(
        "segment {segment} (file {}) should start at LSN {expected_lsn}: records are missing (a segment file is missing, or the one before it lost its end)",
        crate::format::segment_file_name(*segment)
    )]
    MissingRecords {
        /// The segment's first LSN (its file name).
        segment: u64,
        /// The LSN the previous segment ends before.
        expected_lsn: u64,
    },
    /// A segment file the WAL's segment range file says exists is gone: the
    /// newest one (records reported durable were in it) or the oldest one
    /// the WAL had not deleted itself (the start of some group's log). See
    /// [`crate::recovery::SegmentRange`]. Never repaired, in any mode.
    #[error(
        "segment {segment} (file {} in {}) is missing: the WAL's {} file says segments {oldest} to {newest} exist, and records in it may have been acknowledged",
        crate::format::segment_file_name(*segment),
        dir.display(),
        crate::recovery::SEGMENT_RANGE_FILE_NAME
    )]
    MissingSegment {
        /// The missing segment's first LSN (its file name).
        segment: u64,
        /// The WAL directory.
        dir: std::path::PathBuf,
        /// The oldest segment the range file gives.
        oldest: u64,
        /// The newest segment the range file gives.
        newest: u64,
    },
    /// The segment range file is damaged.
    #[error(
        "the WAL's segment range file {} is damaged; if the segment files are known to be whole, \
         `coraft-wal rebuild-range {}` writes it anew from them",
        path.display(),
        path.parent().unwrap_or(std::path::Path::new(".")).display()
    )]
    BadSegmentRange {
        /// Its path.
        path: std::path::PathBuf,
    },
    /// The segment range file is missing from a WAL that keeps one (its
    /// segment `segment` says so in its header and holds records, which the
    /// WAL writes only once the range file names their segment): a segment
    /// deleted at either end could not be told. Never repaired, in any mode.
    #[error(
        "the WAL's segment range file {} is missing, but segment file {} was written by a WAL that keeps one: \
         segment files deleted at either end of the log could not be detected; if they are known to be whole, \
         `coraft-wal rebuild-range {}` writes it anew from the segments found",
        path.display(),
        crate::format::segment_file_name(*segment),
        path.parent().unwrap_or(std::path::Path::new(".")).display()
    )]
    MissingSegmentRange {
        /// Where the file should be.
        path: std::path::PathBuf,
        /// A segment whose header says the WAL keeps the file.
        segment: u64,
    },
    /// Strict recovery found a torn tail (tolerate mode would truncate it).
    #[error(
        "torn tail in segment {segment} (file {}) at offset {offset} (strict recovery)",
        crate::format::segment_file_name(*segment)
    )]
    TornTail {
        /// The segment's first LSN (its file name).
        segment: u64,
        /// Where the valid records end.
        offset: u64,
    },
    /// A record replays against a group's log in a way appends never produce.
    #[error("record at segment {segment} offset {offset} does not fit group {group}'s log")]
    InconsistentRecord {
        /// The segment's first LSN.
        segment: u64,
        /// The record's byte offset.
        offset: u64,
        /// The group.
        group: u64,
    },
    /// An entry's index does not follow the group's last index.
    #[error("group {group}: entry index {index} does not follow, expected {expected}")]
    NonContiguousIndex {
        /// The group.
        group: u64,
        /// The index appended.
        index: u64,
        /// The only index that may be appended next.
        expected: u64,
    },
    /// A record is larger than the configured maximum.
    #[error("record of {record_bytes} bytes exceeds the maximum of {record_bytes_max}")]
    RecordTooLarge {
        /// The encoded record size.
        record_bytes: usize,
        /// The limit.
        record_bytes_max: usize,
    },
    /// Appends would exceed the bytes allowed to wait for a flush.
    #[error("{pending_bytes} bytes are waiting for a flush, the maximum is {pending_bytes_max}; await sync() first")]
    Backpressure {
        /// Bytes appended but not yet durable.
        pending_bytes: usize,
        /// The limit.
        pending_bytes_max: usize,
    },
    /// Entries requested below the group's first index (purged).
    #[error("group {group}: index {index} is purged, the first index is {first_index}")]
    Compacted {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
        /// The group's first index.
        first_index: u64,
    },
    /// Entries requested past the group's last index, or an unknown group.
    #[error("group {group}: index {index} is past the last index {last_index}")]
    Unavailable {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
        /// The group's last index.
        last_index: u64,
    },
    /// The disk is full; nothing acknowledged is lost and a later `sync` retries.
    #[error("no space left on device while {}", op.describe(*segment))]
    NoSpace {
        /// What was being done.
        op: IoOp,
        /// The segment concerned.
        segment: u64,
    },
    /// A file-system operation failed.
    #[error("{} failed: {kind:?} (errno {errno:?})", op.describe(*segment))]
    Io {
        /// What was being done.
        op: IoOp,
        /// The segment concerned (0 for the directory).
        segment: u64,
        /// The error kind.
        kind: io::ErrorKind,
        /// The OS error number, if any.
        errno: Option<i32>,
    },
    /// An fdatasync failed earlier: the WAL refuses all further writes.
    #[error(
        "the WAL is poisoned: fdatasync of segment file {} failed (errno {errno:?})",
        crate::format::segment_file_name(*segment)
    )]
    Poisoned {
        /// The segment whose sync failed.
        segment: u64,
        /// The OS error number, if any.
        errno: Option<i32>,
    },
    /// The configuration is invalid.
    #[error("invalid config: {field} = {value} ({reason})")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The WAL was closed.
    #[error("the WAL is closed")]
    Closed,
}

impl Error {
    /// Converts an I/O error into a WAL error, singling out ENOSPC.
    pub fn io(op: IoOp, segment: u64, error: &io::Error) -> Error {
        let errno = error.raw_os_error();
        // glommio hands ENOSPC back as the kind alone, without the errno
        // (seen on a full ext4: "StorageFull (errno None)").
        if errno == Some(libc::ENOSPC) || error.kind() == io::ErrorKind::StorageFull {
            return Error::NoSpace { op, segment };
        }
        Error::Io {
            op,
            segment,
            kind: error.kind(),
            errno,
        }
    }
}

/// The WAL's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_with_or_without_its_errno_is_no_space_naming_the_file() {
        for error in [
            io::Error::from_raw_os_error(libc::ENOSPC),
            io::Error::from(io::ErrorKind::StorageFull),
        ] {
            let converted = Error::io(IoOp::Create, 12085, &error);
            assert_eq!(
                converted,
                Error::NoSpace {
                    op: IoOp::Create,
                    segment: 12085
                }
            );
            assert_eq!(
                converted.to_string(),
                "no space left on device while creating and preallocating segment file 00000000000000012085.wal"
            );
        }
    }
}
