//! The on-disk format: the segment header and the record encoding.
//!
//! Everything the WAL writes goes through [`encode_record`] and everything it
//! reads back goes through [`decode_record`]; `docs/wal.md` has the byte-layout
//! tables. All integers are little-endian. A record is
//!
//! ```text
//! crc32 u32 | body_len u32 | kind u8 | entry_type u8 | reserved [0; 2] | body
//! ```
//!
//! and the CRC covers every byte after itself (prefix and body), so a flipped
//! bit anywhere in a record is caught.
//!
//! Every flush starts on a fresh block with a [`FlushMarker`]: recovery
//! follows the chain of markers to tell the bytes of the last flush (the
//! only ones a power cut may have torn) from bytes an earlier sync covered
//! (whose damage is corruption). `docs/wal.md`, "Recovery rules", has the rules.

use std::sync::OnceLock;

/// The O_DIRECT block: writes are aligned to it and the segment header fills it.
pub const BLOCK_BYTES: usize = 4096;
/// The magic number at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CORAFTWL";
/// The format version written by this code. Version 2 added the segment
/// nonce and the flush markers (version 1 rewrote the last partly filled
/// block in place, and recovery could not tell a torn flush from damaged
/// synced records). Version 3 added the forget-group record
/// ([`Record::ForgetGroup`]); the rest of the layout is version 2's.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this code reads: version-2 segments hold no
/// forget-group record and read as they always did. Records are only ever
/// appended to segments of [`FORMAT_VERSION`] (opening a WAL whose last
/// segment is older starts a new segment), so code that reads only
/// version 2 refuses a directory holding a forget-group record by name
/// instead of taking the record for damage.
pub const FORMAT_VERSION_MIN: u32 = 2;
/// Bytes of the segment header region; records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// Meaningful bytes of the segment header (the rest of its block is zero).
const SEGMENT_HEADER_USED_BYTES: usize = 44;
/// Bytes of the segment header the CRC covers (it follows them).
const SEGMENT_HEADER_CHECKED_BYTES: usize = 40;
/// Bytes of the fixed record prefix: crc, body length, kind, entry type, reserved.
pub const RECORD_PREFIX_BYTES: usize = 12;
/// Fixed body bytes of an entry record before its payload: group, term, index.
pub const ENTRY_FIXED_BYTES: usize = 24;
/// Body bytes of a hard-state record: group, term, vote, commit.
const HARD_STATE_BODY_BYTES: usize = 32;
/// Body bytes of a truncate-suffix record: group, from index.
const TRUNCATE_BODY_BYTES: usize = 16;
/// Body bytes of a purge record: group, index, term.
const PURGE_BODY_BYTES: usize = 24;
/// Body bytes of a forget-group record: group.
const FORGET_GROUP_BODY_BYTES: usize = 8;
/// The kind byte of a forget-group record (5 was version 1's padding).
pub const FORGET_GROUP_KIND: u8 = 7;
/// Body bytes of a flush marker: nonce, offset, flush, previous end,
/// synced through, flags.
const FLUSH_MARKER_BODY_BYTES: usize = 48;
/// Bytes of an encoded flush marker; every flush starts with one.
pub const FLUSH_MARKER_BYTES: usize = RECORD_PREFIX_BYTES + FLUSH_MARKER_BODY_BYTES;
/// The kind byte of a flush marker.
pub const FLUSH_MARKER_KIND: u8 = 6;
/// [`FlushMarker::flags`]: the WAL was closed cleanly after this flush.
pub const FLUSH_CLOSE_FLAG: u64 = 1;
/// The file-name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";

/// Raft's persistent per-group state: current term, vote and commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term the group has seen.
    pub term: u64,
    /// The node voted for in `term` (0 = none; the WAL does not interpret it).
    pub vote: u64,
    /// The highest log index known to be committed.
    pub commit: u64,
}

/// The first record of every flush, on a block boundary. It vouches for every
/// flush before it in its segment: the writer starts a flush only after the
/// previous one's sync returned, so a valid marker proves that the bytes
/// before it were durable. It has no LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushMarker {
    /// The segment's nonce (from its header): a marker of another segment
    /// (a copied block, old data) never matches.
    pub nonce: u64,
    /// The marker's own offset in the segment.
    pub offset: u64,
    /// The flush's number in the segment, from 1.
    pub flush: u64,
    /// Where the previous flush's records ended (the header's end for the
    /// first flush).
    pub previous_end: u64,
    /// The LSN of the last record before this flush: every record up to it
    /// was durable when this flush was written.
    pub synced_through: u64,
    /// [`FLUSH_CLOSE_FLAG`] or 0.
    pub flags: u64,
}

/// Encodes `marker` into `out[..FLUSH_MARKER_BYTES]`, every byte of it.
pub fn encode_flush_marker_into(marker: &FlushMarker, out: &mut [u8]) {
    let out = &mut out[..FLUSH_MARKER_BYTES];
    out[4..8].copy_from_slice(&(FLUSH_MARKER_BODY_BYTES as u32).to_le_bytes());
    out[8..12].copy_from_slice(&[FLUSH_MARKER_KIND, 0, 0, 0]);
    let fields = [
        marker.nonce,
        marker.offset,
        marker.flush,
        marker.previous_end,
        marker.synced_through,
        marker.flags,
    ];
    for (at, field) in fields.iter().enumerate() {
        let start = RECORD_PREFIX_BYTES + at * 8;
        out[start..start + 8].copy_from_slice(&field.to_le_bytes());
    }
    checksum_record(out);
}

/// One decoded record, borrowing its payload from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A log entry of a group.
    Entry {
        /// The group (Raft group id).
        group: u64,
        /// The entry's term.
        term: u64,
        /// The entry's log index.
        index: u64,
        /// The entry's type, opaque to the WAL.
        entry_type: u8,
        /// The entry's payload.
        payload: &'a [u8],
    },
    /// A group's hard state; the latest one wins.
    HardState {
        /// The group.
        group: u64,
        /// The state.
        state: HardState,
    },
    /// Drop the group's entries with index `>= from_index` (a conflicting suffix).
    TruncateSuffix {
        /// The group.
        group: u64,
        /// The first index dropped.
        from_index: u64,
    },
    /// Drop the group's entries with index `<= index` (below a snapshot).
    Purge {
        /// The group.
        group: u64,
        /// The last index covered by the snapshot.
        index: u64,
        /// The term of `index`.
        term: u64,
    },
    /// Forget everything about the group written before this record (its
    /// entries, hard state and purge marker): the group was removed. Its
    /// older records no longer hold segments back; records of the group
    /// after this one start a new log. (Format version 3.)
    ForgetGroup {
        /// The group.
        group: u64,
    },
}

impl Record<'_> {
    /// The group the record belongs to.
    pub fn group(&self) -> u64 {
        match *self {
            Record::Entry { group, .. }
            | Record::HardState { group, .. }
            | Record::TruncateSuffix { group, .. }
            | Record::Purge { group, .. }
            | Record::ForgetGroup { group } => group,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Entry { .. } => 1,
            Record::HardState { .. } => 2,
            Record::TruncateSuffix { .. } => 3,
            Record::Purge { .. } => 4,
            Record::ForgetGroup { .. } => FORGET_GROUP_KIND,
        }
    }

    /// The encoded size of the record in bytes.
    pub fn encoded_len(&self) -> usize {
        RECORD_PREFIX_BYTES + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Record::Entry { payload, .. } => ENTRY_FIXED_BYTES + payload.len(),
            Record::HardState { .. } => HARD_STATE_BODY_BYTES,
            Record::TruncateSuffix { .. } => TRUNCATE_BODY_BYTES,
            Record::Purge { .. } => PURGE_BODY_BYTES,
            Record::ForgetGroup { .. } => FORGET_GROUP_BODY_BYTES,
        }
    }
}

/// The CRC32 (IEEE, as `crc32fast::hash`) of `bytes`.
///
/// `crc32fast::hash` asks the CPU-feature cache on every call (four lookups,
/// about as many instructions as the folding itself on a 48-byte record);
/// this clones a hasher whose kernel was chosen once per process.
#[inline]
pub fn crc32(bytes: &[u8]) -> u32 {
    static PROTOTYPE: OnceLock<crc32fast::Hasher> = OnceLock::new();
    let mut hasher = PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// Appends the encoding of `record` to `out`.
pub fn encode_record(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + record.encoded_len(), 0);
    encode_record_into(record, &mut out[start..]);
}

/// Encodes `record` into `out[..record.encoded_len()]`, writing every one of
/// those bytes (the WAL encodes into reused DMA memory, whose old contents
/// must not leak into a record).
pub fn encode_record_into(record: &Record<'_>, out: &mut [u8]) {
    encode_record_unchecksummed(record, out);
    checksum_record(&mut out[..record.encoded_len()]);
}

/// [`encode_record_into`] but for the CRC field, left as it was: every other
/// byte of `out[..record.encoded_len()]` is written. [`checksum_record`]
/// fills the CRC in.
///
/// The WAL's append path checksums a record later, when it appends the next
/// one: the CRC reads the record back in 16-byte loads, and right after the
/// fields were stored (in 4- and 8-byte pieces) those loads cannot be served
/// from the store buffer and wait for the stores to reach the cache. That
/// stall on the first load was a third of the CPU time of an append of a
/// 16-byte entry. One append later the stores are long done.
#[inline]
pub fn encode_record_unchecksummed(record: &Record<'_>, out: &mut [u8]) {
    let record_bytes = record.encoded_len();
    let out = &mut out[..record_bytes];
    let (head, tail) = out.split_at_mut(RECORD_PREFIX_BYTES + 8);
    let head: &mut [u8; RECORD_PREFIX_BYTES + 8] = head.try_into().expect("split at the prefix and group");
    let entry_type = match *record {
        Record::Entry { entry_type, .. } => entry_type,
        _ => 0,
    };
    head[4..8].copy_from_slice(&(record.body_len() as u32).to_le_bytes());
    head[8..12].copy_from_slice(&[record.kind(), entry_type, 0, 0]);
    head[12..20].copy_from_slice(&record.group().to_le_bytes());
    match *record {
        Record::Entry {
            term, index, payload, ..
        } => {
            let (fields, rest) = tail.split_at_mut(16);
            fields[0..8].copy_from_slice(&term.to_le_bytes());
            fields[8..16].copy_from_slice(&index.to_le_bytes());
            copy_payload(rest, payload);
        }
        Record::HardState { state, .. } => {
            tail[0..8].copy_from_slice(&state.term.to_le_bytes());
            tail[8..16].copy_from_slice(&state.vote.to_le_bytes());
            tail[16..24].copy_from_slice(&state.commit.to_le_bytes());
        }
        Record::TruncateSuffix { from_index, .. } => tail[0..8].copy_from_slice(&from_index.to_le_bytes()),
        Record::Purge { index, term, .. } => {
            tail[0..8].copy_from_slice(&index.to_le_bytes());
            tail[8..16].copy_from_slice(&term.to_le_bytes());
        }
        Record::ForgetGroup { .. } => {}
    }
}

/// Entry payloads of at least this many bytes are copied and checksummed in
/// one pass ([`encode_entry_fused`]) where the CPU has the wide kernel: below
/// it the kernel does not pay for its setup, and a small record's CRC is
/// better left to the next append ([`encode_record_unchecksummed`]).
pub const FUSED_PAYLOAD_MIN_BYTES: usize = coraft_checksum::WIDE_MIN_BYTES;

/// Bytes of an entry record the CRC covers before its payload: the prefix
/// after the CRC field, then group, term and index.
const ENTRY_CHECKED_HEAD_BYTES: usize = RECORD_PREFIX_BYTES - 4 + ENTRY_FIXED_BYTES;

/// Whether [`encode_entry_fused`] is the way to append `record`: an entry
/// whose payload is at least [`FUSED_PAYLOAD_MIN_BYTES`], on a CPU with the
/// wide kernel.
#[inline]
pub fn fuses(record: &Record<'_>) -> bool {
    matches!(record, Record::Entry { payload, .. } if payload.len() >= FUSED_PAYLOAD_MIN_BYTES)
        && coraft_checksum::wide_kernel()
}

/// [`encode_record_into`] for an entry, in one pass over the payload: the
/// CRC of the fields (from a local copy, not read back from `out`) is
/// extended over the payload while the payload is copied
/// ([`coraft_checksum::copy_with_crc`]), where the two-pass encoding copies
/// the payload and later reads it back for the CRC. The bytes are the same
/// ones. Returns `false`, writing nothing, for a record that is not an
/// entry.
#[inline]
pub fn encode_entry_fused(record: &Record<'_>, out: &mut [u8]) -> bool {
    let Record::Entry {
        group,
        term,
        index,
        entry_type,
        payload,
    } = *record
    else {
        return false;
    };
    let mut head = [0u8; ENTRY_CHECKED_HEAD_BYTES];
    head[0..4].copy_from_slice(&(record.body_len() as u32).to_le_bytes());
    head[4..8].copy_from_slice(&[record.kind(), entry_type, 0, 0]);
    head[8..16].copy_from_slice(&group.to_le_bytes());
    head[16..24].copy_from_slice(&term.to_le_bytes());
    head[24..32].copy_from_slice(&index.to_le_bytes());
    let out = &mut out[..record.encoded_len()];
    let (prefix, payload_out) = out.split_at_mut(4 + ENTRY_CHECKED_HEAD_BYTES);
    prefix[4..].copy_from_slice(&head);
    let crc = coraft_checksum::copy_with_crc(crc32(&head), payload, payload_out);
    prefix[..4].copy_from_slice(&crc.to_le_bytes());
    true
}

/// `out.copy_from_slice(payload)`, with payloads of 8 to 32 bytes copied
/// as two overlapping fixed-size pieces instead of a call to `memcpy` (whose
/// call and size dispatch cost more instructions than the copy of a 16-byte
/// payload itself).
#[inline]
fn copy_payload(out: &mut [u8], payload: &[u8]) {
    let length = payload.len();
    match length {
        8..=16 => {
            out[..8].copy_from_slice(&payload[..8]);
            out[length - 8..length].copy_from_slice(&payload[length - 8..]);
        }
        17..=32 => {
            out[..16].copy_from_slice(&payload[..16]);
            out[length - 16..length].copy_from_slice(&payload[length - 16..]);
        }
        _ => out.copy_from_slice(payload),
    }
}

/// Computes and stores the CRC of the encoded record that is exactly `record`.
#[inline]
pub fn checksum_record(record: &mut [u8]) {
    let crc = crc32(&record[4..]);
    record[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// What [`decode_record`] found at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and its encoded length.
    Record(Record<'a>, usize),
    /// A valid flush marker (it has no LSN; its length is [`FLUSH_MARKER_BYTES`]).
    Marker(FlushMarker),
    /// An all-zero prefix (or too few bytes left for one): the end of the data.
    End,
    /// Bytes that are not a valid record: torn or corrupted.
    Bad(BadRecord),
}

/// Why bytes failed to decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// The length runs past the end of the segment.
    LengthOutOfBounds,
    /// The kind byte is unknown.
    UnknownKind,
    /// The body length does not match the kind, or reserved bytes are not zero.
    Malformed,
    /// The checksum does not match.
    ChecksumMismatch,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes the record starting at `bytes[0]`; `bytes` runs to the end of the segment.
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < RECORD_PREFIX_BYTES {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(BadRecord::LengthOutOfBounds)
        };
    }
    let prefix = &bytes[..RECORD_PREFIX_BYTES];
    if prefix.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let body_len = u32_at(bytes, 4) as usize;
    let total = RECORD_PREFIX_BYTES.saturating_add(body_len);
    if total > bytes.len() {
        return Decoded::Bad(BadRecord::LengthOutOfBounds);
    }
    let (kind, entry_type) = (bytes[8], bytes[9]);
    if bytes[10] != 0 || bytes[11] != 0 {
        return Decoded::Bad(BadRecord::Malformed);
    }
    let expected_body = match kind {
        1 if body_len >= ENTRY_FIXED_BYTES => body_len,
        1 => return Decoded::Bad(BadRecord::Malformed),
        2 => HARD_STATE_BODY_BYTES,
        3 => TRUNCATE_BODY_BYTES,
        4 => PURGE_BODY_BYTES,
        FORGET_GROUP_KIND => FORGET_GROUP_BODY_BYTES,
        FLUSH_MARKER_KIND => FLUSH_MARKER_BODY_BYTES,
        _ => return Decoded::Bad(BadRecord::UnknownKind),
    };
    if expected_body != body_len || (kind != 1 && entry_type != 0) {
        return Decoded::Bad(BadRecord::Malformed);
    }
    if crc32(&bytes[4..total]) != u32_at(bytes, 0) {
        return Decoded::Bad(BadRecord::ChecksumMismatch);
    }
    let body = &bytes[RECORD_PREFIX_BYTES..total];
    if kind == FLUSH_MARKER_KIND {
        return Decoded::Marker(FlushMarker {
            nonce: u64_at(body, 0),
            offset: u64_at(body, 8),
            flush: u64_at(body, 16),
            previous_end: u64_at(body, 24),
            synced_through: u64_at(body, 32),
            flags: u64_at(body, 40),
        });
    }
    let group = u64_at(body, 0);
    let record = match kind {
        1 => Record::Entry {
            group,
            term: u64_at(body, 8),
            index: u64_at(body, 16),
            entry_type,
            payload: &body[ENTRY_FIXED_BYTES..],
        },
        2 => Record::HardState {
            group,
            state: HardState {
                term: u64_at(body, 8),
                vote: u64_at(body, 16),
                commit: u64_at(body, 24),
            },
        },
        3 => Record::TruncateSuffix {
            group,
            from_index: u64_at(body, 8),
        },
        4 => Record::Purge {
            group,
            index: u64_at(body, 8),
            term: u64_at(body, 16),
        },
        _ => Record::ForgetGroup { group },
    };
    Decoded::Record(record, total)
}

/// The decoded fixed part of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The sequence number (LSN) of the segment's first record.
    pub first_lsn: u64,
    /// The segment's size in bytes, header included.
    pub segment_bytes: u64,
    /// A random number chosen when the segment is created; every flush
    /// marker in it repeats it.
    pub nonce: u64,
    /// Flags ([`SEGMENT_FLAG_RANGE_FILE`]); code that knows none reads them
    /// as zero and ignores them.
    pub flags: u32,
    /// The format version (from [`FORMAT_VERSION_MIN`] to
    /// [`FORMAT_VERSION`]); [`encode_segment_header`] writes it as given.
    pub version: u32,
}

/// [`SegmentHeader::flags`]: the WAL that made the segment keeps a segment
/// range file ([`crate::recovery::SegmentRange`]) and wrote it before any
/// record into the segment, so a missing range file is loss, not age.
pub const SEGMENT_FLAG_RANGE_FILE: u32 = 1;

/// Encodes a segment header into a full block.
pub fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    block[0..8].copy_from_slice(&SEGMENT_MAGIC);
    block[8..12].copy_from_slice(&header.version.to_le_bytes());
    // 12..16: flags (zero in version 1; older readers ignore them).
    block[12..16].copy_from_slice(&header.flags.to_le_bytes());
    block[16..24].copy_from_slice(&header.first_lsn.to_le_bytes());
    block[24..32].copy_from_slice(&header.segment_bytes.to_le_bytes());
    block[32..40].copy_from_slice(&header.nonce.to_le_bytes());
    let crc = crc32(&block[0..SEGMENT_HEADER_CHECKED_BYTES]);
    block[SEGMENT_HEADER_CHECKED_BYTES..SEGMENT_HEADER_USED_BYTES].copy_from_slice(&crc.to_le_bytes());
    block
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHeader {
    /// The header block is all zeros: the segment's creation never became durable.
    Blank,
    /// Not a coraft WAL segment, or a damaged header.
    Invalid,
    /// A format version this code does not read.
    UnsupportedVersion(u32),
}

/// Decodes a segment header from the start of a segment.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, BadHeader> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(BadHeader::Invalid);
    }
    let block = &bytes[..SEGMENT_HEADER_BYTES];
    if block.iter().all(|&b| b == 0) {
        return Err(BadHeader::Blank);
    }
    if block[0..8] != SEGMENT_MAGIC {
        return Err(BadHeader::Invalid);
    }
    // The version decides the layout (and where the CRC is), so it is read
    // first: a segment of another version is refused as such.
    let version = u32_at(block, 8);
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(BadHeader::UnsupportedVersion(version));
    }
    let padding_is_zero = block[SEGMENT_HEADER_USED_BYTES..].iter().all(|&b| b == 0);
    let crc = crc32(&block[0..SEGMENT_HEADER_CHECKED_BYTES]);
    if crc != u32_at(block, SEGMENT_HEADER_CHECKED_BYTES) || !padding_is_zero {
        return Err(BadHeader::Invalid);
    }
    Ok(SegmentHeader {
        first_lsn: u64_at(block, 16),
        segment_bytes: u64_at(block, 24),
        nonce: u64_at(block, 32),
        flags: u32_at(block, 12),
        version,
    })
}

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Rounds `offset` down to a block boundary.
pub fn align_down(offset: u64) -> u64 {
    offset - offset % BLOCK_BYTES as u64
}

/// Rounds `offset` up to a block boundary.
pub fn align_up(offset: u64) -> u64 {
    align_down(offset + BLOCK_BYTES as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Entry {
                group: 7,
                term: 3,
                index: 42,
                entry_type: 2,
                payload: b"hello",
            },
            Record::Entry {
                group: u64::MAX,
                term: 0,
                index: 1,
                entry_type: 0,
                payload: b"",
            },
            Record::HardState {
                group: 1,
                state: HardState {
                    term: 9,
                    vote: 2,
                    commit: 40,
                },
            },
            Record::TruncateSuffix {
                group: 5,
                from_index: 10,
            },
            Record::Purge {
                group: 5,
                index: 8,
                term: 2,
            },
            Record::ForgetGroup { group: 11 },
        ]
    }

    #[test]
    fn every_record_kind_round_trips() {
        for record in samples() {
            let mut bytes = Vec::new();
            encode_record(&record, &mut bytes);
            assert_eq!(bytes.len(), record.encoded_len());
            bytes.extend_from_slice(&[0; 64]);
            assert_eq!(decode_record(&bytes), Decoded::Record(record, record.encoded_len()));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        for record in samples() {
            let mut bytes = Vec::new();
            encode_record(&record, &mut bytes);
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    matches!(decode_record(&flipped), Decoded::Bad(_)),
                    "flip of bit {bit} in {record:?} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn crc32_is_crc32fast_hash_at_every_length() {
        let bytes: Vec<u8> = (0..300u32)
            .map(|at| (at.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for length in 0..bytes.len() {
            assert_eq!(
                crc32(&bytes[..length]),
                crc32fast::hash(&bytes[..length]),
                "length {length}"
            );
        }
    }

    #[test]
    fn encoding_into_dirty_memory_writes_every_byte_of_the_record() {
        for record in samples() {
            let mut clean = Vec::new();
            encode_record(&record, &mut clean);
            let mut dirty = vec![0xa5; record.encoded_len() + 8];
            encode_record_into(&record, &mut dirty);
            assert_eq!(&dirty[..record.encoded_len()], &clean[..], "{record:?}");
            assert_eq!(
                &dirty[record.encoded_len()..],
                &[0xa5; 8],
                "{record:?} wrote past its end"
            );
            // The unchecksummed encoding plus the checksum is the same record.
            let mut split = vec![0x5a; record.encoded_len()];
            encode_record_unchecksummed(&record, &mut split);
            checksum_record(&mut split);
            assert_eq!(split, clean, "{record:?}");
        }
    }

    /// The fused encoding of an entry (copy and CRC in one pass) against
    /// the two-pass one (copy, then checksum), byte for byte.
    fn fused_matches_two_pass(record: &Record<'_>) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut two_pass = vec![0x5a; record.encoded_len()];
        encode_record_unchecksummed(record, &mut two_pass);
        checksum_record(&mut two_pass);
        let mut fused = vec![0xa5; record.encoded_len() + 8];
        proptest::prop_assert!(encode_entry_fused(record, &mut fused));
        proptest::prop_assert_eq!(&fused[..record.encoded_len()], &two_pass[..]);
        proptest::prop_assert_eq!(&fused[record.encoded_len()..], &[0xa5; 8], "wrote past its end");
        proptest::prop_assert_eq!(
            decode_record(&fused[..record.encoded_len()]),
            Decoded::Record(*record, record.encoded_len())
        );
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..proptest::prelude::ProptestConfig::default() })]
        #[test]
        fn an_entry_encoded_in_one_pass_is_the_two_pass_record(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..(64 << 10) + 64),
            // Where the payload starts in `bytes`: any alignment.
            skip in 0usize..64,
            group: u64, term: u64, index: u64, entry_type: u8,
        ) {
            let payload = &bytes[skip.min(bytes.len())..];
            fused_matches_two_pass(&Record::Entry { group, term, index, entry_type, payload })?;
        }
    }

    #[test]
    fn an_entry_encoded_in_one_pass_is_the_two_pass_record_at_every_block_edge() {
        let bytes: Vec<u8> = (0..9_000u32)
            .map(|at| (at.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for length in [
            0, 1, 127, 128, 129, 255, 256, 257, 383, 384, 4095, 4096, 4097, 4209, 8192,
        ] {
            for skip in [0, 1, 3, 8, 31] {
                let payload = &bytes[skip..skip + length];
                fused_matches_two_pass(&Record::Entry {
                    group: 7,
                    term: 3,
                    index: 42,
                    entry_type: 2,
                    payload,
                })
                .unwrap_or_else(|error| panic!("length {length} skip {skip}: {error}"));
            }
        }
        // Other records are not the fused encoder's.
        assert!(!encode_entry_fused(&samples()[2], &mut [0; 64]));
    }

    #[test]
    fn a_flush_marker_round_trips_and_every_bit_flip_is_detected() {
        let marker = FlushMarker {
            nonce: 0x1234_5678_9abc_def0,
            offset: 8192,
            flush: 2,
            previous_end: 4500,
            synced_through: 17,
            flags: FLUSH_CLOSE_FLAG,
        };
        let mut bytes = vec![0xa5; FLUSH_MARKER_BYTES];
        encode_flush_marker_into(&marker, &mut bytes);
        assert_eq!(decode_record(&bytes), Decoded::Marker(marker));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(decode_record(&flipped), Decoded::Marker(marker), "bit {bit}");
        }
    }

    #[test]
    fn zero_bytes_are_the_end_of_data() {
        assert_eq!(decode_record(&[0; 100]), Decoded::End);
        assert_eq!(decode_record(&[0; 5]), Decoded::End);
        assert!(matches!(decode_record(&[0, 0, 1]), Decoded::Bad(_)));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            first_lsn: 1234,
            segment_bytes: 1 << 20,
            nonce: 99,
            flags: SEGMENT_FLAG_RANGE_FILE,
            version: FORMAT_VERSION,
        };
        let block = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&block), Ok(header));
        let mut damaged = block.clone();
        damaged[20] ^= 4;
        assert_eq!(decode_segment_header(&damaged), Err(BadHeader::Invalid));
        assert_eq!(decode_segment_header(&vec![0; BLOCK_BYTES]), Err(BadHeader::Blank));
        let mut old = block.clone();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode_segment_header(&old), Err(BadHeader::UnsupportedVersion(1)));
        // A version-2 header still reads, as version 2.
        let previous = SegmentHeader {
            version: FORMAT_VERSION_MIN,
            ..header
        };
        assert_eq!(decode_segment_header(&encode_segment_header(&previous)), Ok(previous));
        let mut newer = block.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            decode_segment_header(&newer),
            Err(BadHeader::UnsupportedVersion(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn segment_names_sort_by_first_lsn() {
        assert_eq!(segment_file_name(5), "00000000000000000005.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(99)), Some(99));
        assert_eq!(parse_segment_file_name("5.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000005.tmp"), None);
    }
}
