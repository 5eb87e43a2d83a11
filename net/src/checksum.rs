//! CRC32 (IEEE, as `crc32fast`) of frame bodies, and a copy that computes it
//! on the way.
//!
//! Where it sits: [`crate::frame::ScatterWriter`] checksums a body while rkyv
//! writes it, and copies entry payloads into the frame with
//! [`append_with_crc`]: the CRC has to load every payload byte anyway, so the
//! same pass stores them into the frame buffer for a few percent more than the
//! CRC alone (a separate `memcpy` costs about as much as the CRC itself), and
//! it also folds in the few dozen bytes rkyv wrote since the last payload. The
//! kernel then copies one contiguous frame, which it does ~20 % faster per
//! byte than gathering hundreds of small and large slices
//! (docs/journal/benchmarks.md, "## Net", 2026-11-24 session 4).
//!
//! The one-pass kernel is `coraft-checksum`'s (the WAL copies its records'
//! payloads with it too); this module fits it to a frame buffer that holds
//! bytes rkyv wrote and nobody checksummed yet.

use std::mem::MaybeUninit;

pub(crate) use coraft_checksum::crc32_update;
use coraft_checksum::{checksum_and_copy_blocks, BLOCK_BYTES, WIDE_MIN_BYTES};
use rkyv::util::AlignedVec;

use crate::frame::FRAME_ALIGN_BYTES;

/// Appends `bytes` to `buffer` and extends `crc` over `buffer[crc_end..]`
/// (bytes appended earlier and not checksummed yet) and then `bytes`, in one
/// pass when the CPU allows. Returns the new CRC and the new `crc_end`:
/// where the still-unchecksummed bytes now start (a tail of fewer than
/// [`BLOCK_BYTES`] may be left for the next call or a final
/// [`crc32_update`]).
///
/// Taking the pending bytes into the same pass saves a `crc32fast` call per
/// payload for the few dozen bytes rkyv writes between two payloads.
pub(crate) fn append_with_crc(
    buffer: &mut AlignedVec<FRAME_ALIGN_BYTES>,
    crc_end: usize,
    bytes: &[u8],
    crc: u32,
) -> (u32, usize) {
    if buffer.len() - crc_end + bytes.len() >= WIDE_MIN_BYTES && coraft_checksum::wide_kernel() {
        // Top up the pending bytes to whole blocks with the head of `bytes`
        // (a plain copy of < 128 bytes), so the pass reads whole blocks from
        // the buffer, then whole blocks from `bytes`.
        let head = ((BLOCK_BYTES - (buffer.len() - crc_end) % BLOCK_BYTES) % BLOCK_BYTES).min(bytes.len());
        buffer.extend_from_slice(&bytes[..head]);
        let rest = &bytes[head..];
        let rest_blocks_bytes = rest.len() / BLOCK_BYTES * BLOCK_BYTES;
        buffer.reserve(rest.len());
        let old_len = buffer.len();
        let base = buffer.as_mut_ptr();
        // SAFETY: both slices come from one pointer taken after the
        // `reserve`: `pending` is `buffer[crc_end..old_len]` (initialized),
        // `destination` the `rest_blocks_bytes` of reserved room after
        // `old_len`, so they do not overlap each other, nor `rest` (which
        // cannot alias `buffer`, borrowed mutably here).
        let (pending, destination) = unsafe {
            (
                std::slice::from_raw_parts(base.add(crc_end), old_len - crc_end),
                std::slice::from_raw_parts_mut(base.add(old_len).cast::<MaybeUninit<u8>>(), rest_blocks_bytes),
            )
        };
        if let Some(crc) = checksum_and_copy_blocks(crc, pending, &rest[..rest_blocks_bytes], destination) {
            // SAFETY: the pass wrote every byte of `destination`, the
            // `rest_blocks_bytes` after `old_len`, inside the reserved room.
            unsafe { buffer.set_len(old_len + rest_blocks_bytes) };
            let crc_end = buffer.len();
            buffer.extend_from_slice(&rest[rest_blocks_bytes..]);
            return (crc, crc_end);
        }
        return append_then_crc(buffer, crc_end, rest, crc);
    }
    append_then_crc(buffer, crc_end, bytes, crc)
}

/// [`append_with_crc`] in two passes: a plain copy, then `crc32fast`.
fn append_then_crc(buffer: &mut AlignedVec<FRAME_ALIGN_BYTES>, crc_end: usize, bytes: &[u8], crc: u32) -> (u32, usize) {
    buffer.extend_from_slice(bytes);
    (crc32_update(crc, &buffer[crc_end..]), buffer.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    type Append = fn(&mut AlignedVec<FRAME_ALIGN_BYTES>, usize, &[u8], u32) -> (u32, usize);

    /// Appends `bytes` after `pending` unchecksummed bytes with `append` and
    /// finishes the CRC; checks bytes and CRC against `crc32fast`.
    fn check(append: Append, data: &[u8], done: usize, pending: usize, bytes: &[u8], initial: u32) {
        let mut buffer = AlignedVec::<FRAME_ALIGN_BYTES>::new();
        buffer.extend_from_slice(&data[..done + pending]);
        let (crc, crc_end) = append(&mut buffer, done, bytes, initial);
        assert!(crc_end >= done && crc_end <= buffer.len());
        let crc = crc32_update(crc, &buffer[crc_end..]);
        let mut expected = crc32fast::Hasher::new_with_initial(initial);
        expected.update(&data[done..done + pending]);
        expected.update(bytes);
        let context = format!("done {done} pending {pending} len {} initial {initial:#x}", bytes.len());
        assert_eq!(crc, expected.finalize(), "{context}");
        assert_eq!(&buffer[..done + pending], &data[..done + pending], "{context}");
        assert_eq!(&buffer[done + pending..], bytes, "{context}");
    }

    /// Both paths: the one pass (where the CPU has it) and the fallback.
    const APPENDS: [Append; 2] = [append_with_crc, append_then_crc];

    #[test]
    fn append_with_crc_copies_and_checksums_like_crc32fast_at_every_length_and_offset() {
        let data = pseudo_random_bytes(12_000, 0x1234_5678);
        let lengths = [
            0usize, 1, 15, 16, 127, 128, 129, 255, 256, 257, 383, 384, 385, 1000, 1024, 4095, 4096, 4097, 4209, 8191,
            9000,
        ];
        for &len in &lengths {
            for offset in [0usize, 1, 7, 16, 33] {
                for initial in [0u32, 0xdead_beef] {
                    for (done, pending) in [(0, 0), (3, 0), (16, 0), (0, 5), (16, 113), (7, 128), (0, 255), (5, 300)] {
                        for append in APPENDS {
                            let bytes = &data[offset + 2000..offset + 2000 + len];
                            check(append, &data, done, pending, bytes, initial);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_crc_built_in_pieces_equals_the_crc_of_the_whole() {
        let data = pseudo_random_bytes(50_000, 99);
        let mut buffer = AlignedVec::<FRAME_ALIGN_BYTES>::new();
        let (mut crc, mut crc_end) = (0, 0);
        let mut rest = &data[..];
        for piece in [113usize, 4096, 7, 4096, 300, 20_000, 1, 2048].iter().cycle() {
            let take = (*piece).min(rest.len());
            if take >= 1024 {
                (crc, crc_end) = append_with_crc(&mut buffer, crc_end, &rest[..take], crc);
            } else {
                buffer.extend_from_slice(&rest[..take]);
            }
            rest = &rest[take..];
            if rest.is_empty() {
                break;
            }
        }
        let crc = crc32_update(crc, &buffer[crc_end..]);
        assert_eq!(&buffer[..], &data[..]);
        assert_eq!(crc, crc32fast::hash(&data));
    }
}
