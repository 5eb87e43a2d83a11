//! CRC32 (IEEE, the same value as `crc32fast::hash`) and a copy that
//! computes it on the way: the wire (`coraft-net`, frame bodies and the
//! entry payloads copied into them) and the WAL (`coraft-wal`, a record's
//! payload copied into the batch) both checksum bytes they copy, and one
//! pass that loads each byte once, stores it and folds it into the CRC
//! costs a few percent more than the CRC alone (a separate `memcpy` costs
//! about as much as the CRC itself).
//!
//! The wide kernel folds eight 16-byte streams with AVX2 `VPCLMULQDQ`
//! (the standard carry-less-multiply method; its multipliers are computed
//! from the polynomial at compile time) and stores each block it loads; it
//! leaves a 16-byte remainder for `crc32fast` to finish. CPUs without AVX2
//! and `VPCLMULQDQ`, other architectures and short inputs use `crc32fast`
//! and a plain copy. Tests compare every path with `crc32fast`.

#![deny(missing_docs)]

use std::mem::MaybeUninit;
use std::sync::LazyLock;

/// Bytes the wide kernel folds per loop turn (8 streams of 16 bytes):
/// [`checksum_and_copy_blocks`] takes whole blocks only.
pub const BLOCK_BYTES: usize = 128;

/// Inputs shorter than this (bytes) take the plain copy and `crc32fast`:
/// the wide kernel needs two blocks to pay for its setup.
pub const WIDE_MIN_BYTES: usize = 256;

/// `crc` (the CRC32 of the bytes before, 0 for none) extended over `bytes`.
#[inline]
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc);
    hasher.update(bytes);
    hasher.finalize()
}

/// Whether this CPU runs the wide kernel (checked once).
static WIDE_KERNEL: LazyLock<bool> = LazyLock::new(wide_kernel_supported);

/// True when this CPU runs the wide kernel (AVX2 and `VPCLMULQDQ`), so that
/// [`checksum_and_copy_blocks`] can answer.
#[inline]
pub fn wide_kernel() -> bool {
    *WIDE_KERNEL
}

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

/// The wide kernel's one pass: returns `crc` extended over `pending` and
/// then `source`, and copies `source` into `destination`.
///
/// `None`, with nothing written, unless the CPU has the kernel
/// ([`wide_kernel`]), both lengths are whole [`BLOCK_BYTES`], together at
/// least [`WIDE_MIN_BYTES`], and `destination` is as long as `source`: the
/// caller then copies and checksums the plain way. `pending` lets a caller
/// fold bytes it wrote itself (and did not checksum yet) into the same pass.
pub fn checksum_and_copy_blocks(
    crc: u32,
    pending: &[u8],
    source: &[u8],
    destination: &mut [MaybeUninit<u8>],
) -> Option<u32> {
    let fits = pending.len().is_multiple_of(BLOCK_BYTES)
        && source.len().is_multiple_of(BLOCK_BYTES)
        && pending.len() + source.len() >= WIDE_MIN_BYTES
        && destination.len() == source.len();
    if !fits || !wide_kernel() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `wide_kernel` checked the CPU features; both lengths are
        // whole blocks and together at least one; `pending` and `source`
        // are readable for their lengths and `destination` (as long as
        // `source`) writable, and it cannot overlap either: it is borrowed
        // mutably while they are borrowed.
        Some(unsafe {
            wide::checksum_and_copy(
                crc,
                pending.as_ptr(),
                pending.len(),
                source.as_ptr(),
                destination.as_mut_ptr().cast(),
                source.len(),
            )
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Copies `source` into `destination` (as long as it) and returns `crc`
/// extended over `source`: its whole blocks in one pass where the CPU has
/// the kernel, the rest (or all of it, on other CPUs and below
/// [`WIDE_MIN_BYTES`]) copied, then checksummed with `crc32fast`.
///
/// # Panics
/// If the lengths differ.
pub fn copy_with_crc(crc: u32, source: &[u8], destination: &mut [u8]) -> u32 {
    assert_eq!(source.len(), destination.len(), "copy_with_crc: lengths differ");
    let blocks_bytes = source.len() / BLOCK_BYTES * BLOCK_BYTES;
    let (source_blocks, source_tail) = source.split_at(blocks_bytes);
    let (destination_blocks, destination_tail) = destination.split_at_mut(blocks_bytes);
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and the kernel writes
    // only initialized bytes through it (the `&mut [u8]` stays valid).
    let destination_blocks: &mut [MaybeUninit<u8>] =
        unsafe { std::slice::from_raw_parts_mut(destination_blocks.as_mut_ptr().cast(), destination_blocks.len()) };
    match checksum_and_copy_blocks(crc, &[], source_blocks, destination_blocks) {
        Some(crc) => {
            destination_tail.copy_from_slice(source_tail);
            crc32_update(crc, source_tail)
        }
        None => {
            destination.copy_from_slice(source);
            crc32_update(crc, source)
        }
    }
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

    use super::BLOCK_BYTES;

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

    /// Bytes that differ from one position to the next (a multiplicative hash).
    fn varied_bytes(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|at| (at.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }

    #[test]
    fn copy_with_crc_copies_and_checksums_like_crc32fast_at_every_length_and_offset() {
        let data = varied_bytes(12_000);
        let lengths = [
            0usize, 1, 15, 16, 127, 128, 129, 255, 256, 257, 383, 384, 385, 1000, 1024, 4095, 4096, 4097, 4209, 8191,
            9000,
        ];
        for &len in &lengths {
            for offset in [0usize, 1, 7, 16, 33] {
                for destination_offset in [0usize, 3, 32] {
                    for initial in [0u32, 0xdead_beef] {
                        let source = &data[offset..offset + len];
                        let mut destination = vec![0xa5u8; destination_offset + len + 5];
                        let crc = copy_with_crc(
                            initial,
                            source,
                            &mut destination[destination_offset..destination_offset + len],
                        );
                        let context = format!("len {len} offset {offset} destination {destination_offset}");
                        assert_eq!(crc, crc32_update(initial, source), "{context}");
                        assert_eq!(
                            &destination[destination_offset..destination_offset + len],
                            source,
                            "{context}"
                        );
                        assert!(
                            destination[..destination_offset].iter().all(|&b| b == 0xa5),
                            "{context}"
                        );
                        assert!(
                            destination[destination_offset + len..].iter().all(|&b| b == 0xa5),
                            "{context}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_block_pass_folds_pending_bytes_then_copies_or_declines() {
        let data = varied_bytes(4096);
        let (pending, source) = data.split_at(256);
        let mut destination = vec![MaybeUninit::new(0u8); source.len()];
        let crc = checksum_and_copy_blocks(0xdead_beef, pending, source, &mut destination);
        if wide_kernel() {
            assert_eq!(crc, Some(crc32_update(0xdead_beef, &data)));
            // SAFETY: every byte was initialized above.
            let copied: Vec<u8> = destination.iter().map(|byte| unsafe { byte.assume_init() }).collect();
            assert_eq!(copied, source);
        } else {
            assert_eq!(crc, None);
        }
        // Not whole blocks, too short, or a destination of another length: declined.
        let mut short = vec![MaybeUninit::new(0u8); 128];
        assert_eq!(
            checksum_and_copy_blocks(0, &data[..100], &data[..128], &mut short),
            None
        );
        assert_eq!(checksum_and_copy_blocks(0, &[], &data[..128], &mut short), None);
        assert_eq!(checksum_and_copy_blocks(0, &[], &data[..256], &mut short), None);
    }

    proptest::proptest! {
        #[test]
        fn copy_with_crc_is_crc32fast_and_a_copy(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..20_000), initial: u32, skip in 0usize..64) {
            let source = &bytes[skip.min(bytes.len())..];
            let mut destination = vec![0u8; source.len()];
            let crc = copy_with_crc(initial, source, &mut destination);
            proptest::prop_assert_eq!(crc, crc32_update(initial, source));
            proptest::prop_assert_eq!(&destination[..], source);
        }
    }
}
