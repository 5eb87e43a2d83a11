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
//! The wide kernel folds eight 16-byte streams with AVX2 `VPCLMULQDQ`
//! (the standard carry-less-multiply method; its multipliers are computed
//! from the polynomial at compile time) and stores each block it loads; it
//! leaves a 16-byte remainder for `crc32fast` to finish. CPUs without AVX2
//! and `VPCLMULQDQ`, other architectures and short inputs use `crc32fast`
//! and a plain copy. Tests compare every path with `crc32fast`.

use std::sync::LazyLock;

use rkyv::util::AlignedVec;

use crate::frame::FRAME_ALIGN_BYTES;

/// Inputs shorter than this (bytes) take the plain copy and `crc32fast`:
/// the wide kernel needs two 128-byte blocks to pay for its setup.
const WIDE_MIN_BYTES: usize = 256;

/// `crc` (the CRC32 of the bytes before, 0 for none) extended over `bytes`.
#[inline]
pub(crate) fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc);
    hasher.update(bytes);
    hasher.finalize()
}

/// Whether this CPU runs the wide kernel (checked once).
static WIDE_KERNEL: LazyLock<bool> = LazyLock::new(wide_kernel_supported);

#[cfg(target_arch = "x86_64")]
fn wide_kernel_supported() -> bool {
    std::arch::is_x86_feature_detected!("pclmulqdq")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("vpclmulqdq")
}

#[cfg(not(target_arch = "x86_64"))]
fn wide_kernel_supported() -> bool {
    false
}

/// Appends `bytes` to `buffer` and extends `crc` over `buffer[crc_end..]`
/// (bytes appended earlier and not checksummed yet) and then `bytes`, in one
/// pass when the CPU allows. Returns the new CRC and the new `crc_end`:
/// where the still-unchecksummed bytes now start (a tail of fewer than
/// [`wide::BLOCK_BYTES`] may be left for the next call or a final
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
    #[cfg(target_arch = "x86_64")]
    if buffer.len() - crc_end + bytes.len() >= WIDE_MIN_BYTES && *WIDE_KERNEL {
        use wide::BLOCK_BYTES;
        // Top up the pending bytes to whole blocks with the head of `bytes`
        // (a plain copy of < 128 bytes), so the pass reads whole blocks from
        // the buffer, then whole blocks from `bytes`.
        let head = ((BLOCK_BYTES - (buffer.len() - crc_end) % BLOCK_BYTES) % BLOCK_BYTES).min(bytes.len());
        buffer.extend_from_slice(&bytes[..head]);
        let rest = &bytes[head..];
        let pending_bytes = buffer.len() - crc_end;
        let rest_blocks_bytes = rest.len() / BLOCK_BYTES * BLOCK_BYTES;
        if pending_bytes.is_multiple_of(BLOCK_BYTES) && pending_bytes + rest_blocks_bytes >= WIDE_MIN_BYTES {
            buffer.reserve(rest.len());
            let old_len = buffer.len();
            // SAFETY: `reserve` made room for `rest.len()` more bytes after
            // `old_len`, so the kernel's writes (`rest_blocks_bytes` from
            // `old_len` on) stay inside it, and `set_len` then covers exactly
            // them. Its reads are `buffer[crc_end..old_len]` (initialized,
            // not written by the kernel: the writes start at `old_len`) and
            // `rest[..rest_blocks_bytes]`, which cannot overlap `buffer` (one
            // is borrowed mutably). Both pointers come from `as_mut_ptr`
            // after the `reserve`. `WIDE_KERNEL` checked the CPU features.
            let crc = unsafe {
                let base = buffer.as_mut_ptr();
                let crc = wide::checksum_and_copy(
                    crc,
                    base.add(crc_end),
                    pending_bytes,
                    rest.as_ptr(),
                    base.add(old_len),
                    rest_blocks_bytes,
                );
                buffer.set_len(old_len + rest_blocks_bytes);
                crc
            };
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

#[cfg(target_arch = "x86_64")]
mod wide {
    //! Carry-less-multiply folding (the method of Gopal et al., "Fast CRC
    //! Computation for Generic Polynomials Using PCLMULQDQ", Intel 2009),
    //! four 256-bit accumulators wide, with a store of every source block.
    //!
    //! Eight 16-byte streams advance through 128-byte blocks; each block
    //! folds a stream's accumulator forward by 1024 bits onto the stream's
    //! next 16 bytes. The streams then collapse into one 128-bit remainder
    //! that has the same CRC register as everything folded, and `crc32fast`
    //! finishes those 16 bytes: no reduction of our own to get wrong.

    use std::arch::x86_64 as arch;

    /// Bytes the kernel folds per loop turn: 8 streams of 16 bytes.
    pub(super) const BLOCK_BYTES: usize = 128;

    /// The CRC32 (IEEE) polynomial, with its x^32 term.
    const POLY: u64 = 0x1_04C1_1DB7;

    /// x^n mod POLY, in GF(2).
    const fn x_pow_mod(n: u32) -> u64 {
        let mut value = 1u64;
        let mut i = 0;
        while i < n {
            value <<= 1;
            if value & (1 << 32) != 0 {
                value ^= POLY;
            }
            i += 1;
        }
        value
    }

    /// The multiplier that moves 64 bits of a reflected 128-bit lane forward
    /// by `n - 32` bits: x^n mod POLY, bit-reflected in 32 bits, times x.
    const fn key(n: u32) -> i64 {
        ((x_pow_mod(n) as u32).reverse_bits() as i64) << 1
    }

    /// (low half, high half) multipliers of a fold over `distance` bits: the
    /// low 64 bits of a lane lie `distance + 64` bits before the target's
    /// end, the high 64 bits `distance`.
    const fn fold_keys(distance: u32) -> (i64, i64) {
        (key(distance + 32), key(distance - 32))
    }

    const FOLD_1024: (i64, i64) = fold_keys(1024);
    const FOLD_256: (i64, i64) = fold_keys(256);
    const FOLD_128: (i64, i64) = fold_keys(128);

    /// Returns `crc` extended over `pending_bytes` bytes at `pending` and
    /// then `copy_bytes` bytes at `source`, which it also copies to
    /// `destination`.
    ///
    /// # Safety
    /// The CPU has PCLMULQDQ, AVX2 and VPCLMULQDQ; both lengths are multiples
    /// of [`BLOCK_BYTES`] and together at least one block; `pending` and
    /// `source` are readable for their lengths, `destination` is writable
    /// for `copy_bytes` bytes and overlaps neither.
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1,avx,avx2,vpclmulqdq")]
    pub(super) unsafe fn checksum_and_copy(
        crc: u32,
        pending: *const u8,
        pending_bytes: usize,
        source: *const u8,
        destination: *mut u8,
        copy_bytes: usize,
    ) -> u32 {
        debug_assert!(pending_bytes.is_multiple_of(BLOCK_BYTES) && copy_bytes.is_multiple_of(BLOCK_BYTES));
        debug_assert!(pending_bytes + copy_bytes >= BLOCK_BYTES);
        let step = arch::_mm256_set_epi64x(FOLD_1024.1, FOLD_1024.0, FOLD_1024.1, FOLD_1024.0);
        // The first block starts the streams; the others fold onto them.
        // SAFETY (loads and stores): each block lies below the length the
        // contract vouches for at its pointer.
        let (mut streams, mut pending_offset, mut copy_offset) = if pending_bytes > 0 {
            (unsafe { load_block(pending) }, BLOCK_BYTES, 0)
        } else {
            let block = unsafe { load_block(source) };
            unsafe { store_block(destination, block) };
            (block, 0, BLOCK_BYTES)
        };
        // The register starts as the complement of the CRC so far, which
        // enters the first four bytes.
        streams[0] = arch::_mm256_xor_si256(
            streams[0],
            arch::_mm256_castsi128_si256(arch::_mm_cvtsi32_si128(!crc as i32)),
        );
        while pending_offset < pending_bytes {
            let block = unsafe { load_block(pending.add(pending_offset)) };
            streams = fold_block(streams, block, step);
            pending_offset += BLOCK_BYTES;
        }
        while copy_offset < copy_bytes {
            let block = unsafe { load_block(source.add(copy_offset)) };
            unsafe { store_block(destination.add(copy_offset), block) };
            streams = fold_block(streams, block, step);
            copy_offset += BLOCK_BYTES;
        }
        let [s0, s1, s2, s3] = streams;
        // Each register's lanes sit 32 bytes before the next register's:
        // fold forward by 256 bits, then the last register's low lane onto
        // its high lane by 128 bits.
        let by_256 = arch::_mm256_set_epi64x(FOLD_256.1, FOLD_256.0, FOLD_256.1, FOLD_256.0);
        let last = fold256(fold256(fold256(s0, s1, by_256), s2, by_256), s3, by_256);
        let by_128 = arch::_mm_set_epi64x(FOLD_128.1, FOLD_128.0);
        let remainder = fold128(
            arch::_mm256_castsi256_si128(last),
            arch::_mm256_extracti128_si256(last, 1),
            by_128,
        );
        let mut bytes = [0u8; 16];
        // SAFETY: 16 writable bytes; unaligned store.
        unsafe { arch::_mm_storeu_si128(bytes.as_mut_ptr().cast(), remainder) };
        // The remainder's bytes in a register that starts at zero (the
        // complement of !0) give the CRC of everything folded.
        super::crc32_update(!0, &bytes)
    }

    /// # Safety
    /// 128 readable bytes at `at`.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn load_block(at: *const u8) -> [arch::__m256i; 4] {
        // SAFETY: the caller's 128 bytes; unaligned loads.
        unsafe {
            [
                arch::_mm256_loadu_si256(at.cast()),
                arch::_mm256_loadu_si256(at.add(32).cast()),
                arch::_mm256_loadu_si256(at.add(64).cast()),
                arch::_mm256_loadu_si256(at.add(96).cast()),
            ]
        }
    }

    /// # Safety
    /// 128 writable bytes at `at`.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn store_block(at: *mut u8, block: [arch::__m256i; 4]) {
        // SAFETY: the caller's 128 bytes; unaligned stores.
        unsafe {
            arch::_mm256_storeu_si256(at.cast(), block[0]);
            arch::_mm256_storeu_si256(at.add(32).cast(), block[1]);
            arch::_mm256_storeu_si256(at.add(64).cast(), block[2]);
            arch::_mm256_storeu_si256(at.add(96).cast(), block[3]);
        }
    }

    /// Every stream moved forward by one block, added onto the block's bytes.
    #[target_feature(enable = "avx2,vpclmulqdq")]
    #[inline]
    fn fold_block(streams: [arch::__m256i; 4], block: [arch::__m256i; 4], step: arch::__m256i) -> [arch::__m256i; 4] {
        [
            fold256(streams[0], block[0], step),
            fold256(streams[1], block[1], step),
            fold256(streams[2], block[2], step),
            fold256(streams[3], block[3], step),
        ]
    }

    /// `lanes` moved forward by the keys' distance, added onto `onto`, per 128-bit lane.
    #[target_feature(enable = "avx2,vpclmulqdq")]
    #[inline]
    fn fold256(lanes: arch::__m256i, onto: arch::__m256i, keys: arch::__m256i) -> arch::__m256i {
        let low = arch::_mm256_clmulepi64_epi128(lanes, keys, 0x00);
        let high = arch::_mm256_clmulepi64_epi128(lanes, keys, 0x11);
        arch::_mm256_xor_si256(onto, arch::_mm256_xor_si256(low, high))
    }

    /// `lane` moved forward by the keys' distance, added onto `onto`.
    #[target_feature(enable = "pclmulqdq,sse2")]
    #[inline]
    fn fold128(lane: arch::__m128i, onto: arch::__m128i, keys: arch::__m128i) -> arch::__m128i {
        let low = arch::_mm_clmulepi64_si128(lane, keys, 0x00);
        let high = arch::_mm_clmulepi64_si128(lane, keys, 0x11);
        arch::_mm_xor_si128(onto, arch::_mm_xor_si128(low, high))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fold_keys_are_the_powers_of_x_the_method_needs() {
            // Known values of x^n mod P (reflected, times x) for CRC32 IEEE.
            assert_eq!(FOLD_128, (0x1_7519_97d0, 0x0_ccaa_009e));
            assert_eq!(key(64), 0x1_63cd_6124);
        }
    }
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
