//! Damage to a stopped node's WAL files, for the `storage` fault
//! ([`crate::nemesis`]): the same kinds of damage `tests/storage.rs` makes
//! between runs, made here to a node SIGKILLed in the middle of one.
//!
//! * [`Damage::TornTail`]: the last 16 bytes of the newest segment's last
//!   flush garbled, as a power cut during its write could leave them. The
//!   node cuts the flush off, says where, and starts; its peers hold what it
//!   lost. (The flush had in fact been synced, so this is a disk that lied:
//!   the nemesis waits for the node to catch up before the next fault.)
//! * [`Damage::BitFlip`]: one bit flipped in the first flush of a segment
//!   that later flushes vouch for: synced bytes damaged. The node must
//!   refuse to start, naming the file and the offset.
//! * [`Damage::ZeroedSector`]: 512 zero bytes in the second block of such a
//!   segment. Refused, naming the file and the offset (or, if the block is
//!   in the last flush, cut as a torn tail).
//! * [`Damage::TruncatedSegment`]: the newest segment cut to half its
//!   records. Refused, naming the file and its size.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use coraft_wal::format::{segment_file_name, BLOCK_BYTES, FLUSH_MARKER_BYTES, SEGMENT_HEADER_BYTES};
use coraft_wal::recovery::recover;
use coraft_wal::RecoveryMode;

/// A kind of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Damage {
    /// The newest segment's last flush garbled at its end.
    TornTail,
    /// One bit flipped in a synced record.
    BitFlip,
    /// A sector of synced records zeroed.
    ZeroedSector,
    /// The newest segment truncated.
    TruncatedSegment,
}

impl Damage {
    /// Every kind, in the order the nemesis draws from.
    pub const ALL: [Damage; 4] = [
        Damage::TornTail,
        Damage::BitFlip,
        Damage::ZeroedSector,
        Damage::TruncatedSegment,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Damage::TornTail => "torn-tail",
            Damage::BitFlip => "bit-flip",
            Damage::ZeroedSector => "zeroed-sector",
            Damage::TruncatedSegment => "truncated-segment",
        }
    }

    /// Whether a node must refuse to start on it (the others it repairs, or
    /// may: a zeroed sector that falls in the last flush reads as a torn
    /// tail).
    pub fn must_refuse(self) -> bool {
        matches!(self, Damage::BitFlip | Damage::TruncatedSegment)
    }
}

/// What was damaged.
#[derive(Debug, Clone, Serialize)]
pub struct Damaged {
    /// The kind.
    pub damage: Damage,
    /// The segment file.
    pub file: PathBuf,
    /// Its name (what a refusal must name).
    pub file_name: String,
    /// Where: the offset of the damaged bytes, or the new length of a
    /// truncated file.
    pub offset: u64,
}

/// Flushes a segment needs before its first can be damaged as "synced"
/// (later flushes vouch for it).
const FLUSHES_VOUCHING_MIN: u64 = 3;

/// Damages the WAL in `shard_dir` (a stopped node's `shard-N` folder) as
/// `damage` says; `Err` names why it could not (no segment fits).
pub fn damage(shard_dir: &Path, damage: Damage) -> Result<Damaged, String> {
    let recovered = recover(shard_dir, RecoveryMode::TolerateTornTail, false)
        .map_err(|e| format!("reading the WAL in {}: {e}", shard_dir.display()))?;
    let segments = &recovered.segments;
    let newest = segments
        .last()
        .ok_or_else(|| format!("no WAL segment in {}", shard_dir.display()))?;
    let record_start = (SEGMENT_HEADER_BYTES + FLUSH_MARKER_BYTES) as u64;
    let (segment, offset) = match damage {
        Damage::TornTail | Damage::TruncatedSegment => {
            if newest.end_offset < record_start + 16 {
                return Err(format!("segment {} holds no record", newest.path.display()));
            }
            if damage == Damage::TornTail {
                let offset = newest.end_offset - 16;
                write_at(&newest.path, offset, &[0xA5; 16])?;
                (newest, offset)
            } else {
                let length = newest.end_offset / 2;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&newest.path)
                    .and_then(|file| file.set_len(length))
                    .map_err(|e| format!("truncating {}: {e}", newest.path.display()))?;
                (newest, length)
            }
        }
        Damage::BitFlip | Damage::ZeroedSector => {
            let zeroed_end = (SEGMENT_HEADER_BYTES + 2 * BLOCK_BYTES) as u64;
            let segment = segments
                .iter()
                .rev()
                .find(|s| s.flushes >= FLUSHES_VOUCHING_MIN && (damage == Damage::BitFlip || s.end_offset > zeroed_end))
                .ok_or_else(|| {
                    format!(
                        "no segment of {FLUSHES_VOUCHING_MIN} flushes in {}",
                        shard_dir.display()
                    )
                })?;
            if damage == Damage::BitFlip {
                let offset = record_start + 20;
                let mut byte = [0u8];
                read_at(&segment.path, offset, &mut byte)?;
                write_at(&segment.path, offset, &[byte[0] ^ 0x10])?;
                (segment, record_start)
            } else {
                let offset = (SEGMENT_HEADER_BYTES + BLOCK_BYTES) as u64;
                write_at(&segment.path, offset, &[0; 512])?;
                (segment, offset)
            }
        }
    };
    Ok(Damaged {
        damage,
        file: segment.path.clone(),
        file_name: segment_file_name(segment.first_lsn),
        offset,
    })
}

fn read_at(path: &Path, offset: u64, bytes: &mut [u8]) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|file| file.read_exact_at(bytes, offset))
        .map_err(|e| format!("reading {} at {offset}: {e}", path.display()))
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.write_all_at(bytes, offset))
        .map_err(|e| format!("writing {} at {offset}: {e}", path.display()))
}
