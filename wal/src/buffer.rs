//! [`BatchBuffer`]: the bytes of one batch, in memory the flush can hand to
//! O_DIRECT as is. Appends encode records straight into it; sealing pads it
//! with zeros to a block boundary and freezes it ([`SealedBuffer`]); the
//! flush writes that same memory. There is no copy between the encoding of
//! a record and the disk (a flush used to copy its whole batch into a fresh
//! DMA buffer: a megabyte per 1 MiB flush, on the path from one flush's
//! completion to the next one's submission).

use std::rc::Rc;

use glommio::io::DmaBuffer;

use crate::format::{align_up, BLOCK_BYTES};

/// A batch being filled: a block-aligned buffer and the length used so far.
/// It grows like a `Vec` (a larger buffer, the bytes copied over) when a
/// batch outgrows it; the WAL sizes new batches after the last one, so in a
/// steady flow a batch never moves.
///
/// The memory comes from the shard executor's io_uring buffer arena
/// (`glommio::allocate_dma_buffer`, where the copying flush took its buffers
/// from too): that memory is registered with the ring, so it is already
/// resident and a write from it needs no page pinning. A fresh allocation
/// from the process allocator instead page-faulted a megabyte per 1 MiB
/// batch (glibc maps and unmaps buffers that large every time), which cost
/// more than the copy it saved. When the arena is full the allocation falls
/// back to the process allocator.
///
/// The memory is not cleared: every byte below [`BatchBuffer::len`] was
/// written by the WAL (records are encoded in full, reserved bytes included),
/// and sealing zeroes the rest of the last block.
pub struct BatchBuffer {
    buffer: DmaBuffer,
    len: usize,
}

impl BatchBuffer {
    /// An empty buffer that can hold at least `capacity` bytes. Must be
    /// called on a glommio executor.
    pub fn with_capacity(capacity: usize) -> BatchBuffer {
        BatchBuffer {
            buffer: allocate(capacity),
            len: 0,
        }
    }

    /// Bytes it holds before it has to grow.
    pub fn capacity(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buffer.as_bytes()[..self.len]
    }

    /// The bytes written so far, to change in place.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buffer.as_bytes_mut()[..self.len]
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.grow(bytes.len()).copy_from_slice(bytes);
    }

    /// Extends the buffer by `count` bytes and returns them for the caller
    /// to fill completely (their contents are whatever the memory held).
    #[inline]
    pub fn grow(&mut self, count: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + count;
        if end > self.buffer.len() {
            self.reallocate(end);
        }
        self.len = end;
        &mut self.buffer.as_bytes_mut()[start..end]
    }

    /// Moves the bytes into a buffer of at least twice the capacity and at
    /// least `needed` bytes.
    #[cold]
    fn reallocate(&mut self, needed: usize) {
        let mut larger = allocate(needed.max(2 * self.buffer.len()));
        larger.as_bytes_mut()[..self.len].copy_from_slice(&self.buffer.as_bytes()[..self.len]);
        self.buffer = larger;
    }

    /// Pads the bytes with zeros to a block boundary and freezes them for
    /// writing.
    pub fn seal(mut self) -> SealedBuffer {
        let len = self.len;
        let padded = align_up(len as u64) as usize;
        if padded > self.buffer.len() {
            self.reallocate(padded);
        }
        self.buffer.as_bytes_mut()[len..padded].fill(0);
        self.buffer.trim_to_size(padded);
        SealedBuffer {
            buffer: Rc::new(self.buffer),
            len,
        }
    }
}

/// A DMA buffer of at least `capacity` bytes: a power of two of at least a
/// block, which is what the arena's buddy allocator hands out anyway.
fn allocate(capacity: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(capacity.max(BLOCK_BYTES).next_power_of_two())
}

/// A sealed batch's bytes: `len` bytes of records, then zeros to a block
/// boundary. The buffer is shared with the write in flight.
pub struct SealedBuffer {
    buffer: Rc<DmaBuffer>,
    len: usize,
}

impl SealedBuffer {
    /// The batch's bytes, without the zero padding.
    pub fn as_slice(&self) -> &[u8] {
        &self.buffer.as_bytes()[..self.len]
    }

    /// The whole buffer, padded to a block boundary: what a flush writes.
    pub fn padded(&self) -> &Rc<DmaBuffer> {
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_executor(test: impl FnOnce() + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor")
            .run(async move { test() });
    }

    #[test]
    fn sealing_pads_to_a_block_with_zeros_over_old_contents() {
        on_executor(|| {
            // Fill a buffer's memory with non-zero bytes, then reuse the same
            // memory: sealing must not write those old bytes out.
            let mut buffer = BatchBuffer::with_capacity(3 * BLOCK_BYTES);
            buffer.grow(3 * BLOCK_BYTES).fill(0xee);
            let mut buffer = BatchBuffer {
                buffer: buffer.buffer,
                len: 0,
            };
            buffer.extend_from_slice(b"record");
            buffer.grow(2).copy_from_slice(b"!!");
            assert_eq!(buffer.as_slice(), b"record!!");
            let sealed = buffer.seal();
            assert_eq!(sealed.as_slice(), b"record!!");
            let padded = sealed.padded().as_bytes();
            assert_eq!(padded.len(), BLOCK_BYTES);
            assert!(padded[8..].iter().all(|&byte| byte == 0));
        });
    }

    #[test]
    fn a_block_aligned_batch_is_written_without_padding() {
        on_executor(|| {
            let mut buffer = BatchBuffer::with_capacity(2 * BLOCK_BYTES);
            buffer.grow(BLOCK_BYTES).fill(7);
            let sealed = buffer.seal();
            assert_eq!(sealed.padded().len(), BLOCK_BYTES);
            assert_eq!(sealed.as_slice().len(), BLOCK_BYTES);
        });
    }

    #[test]
    fn a_batch_that_outgrows_its_buffer_keeps_its_bytes() {
        on_executor(|| {
            let mut buffer = BatchBuffer::with_capacity(BLOCK_BYTES);
            let bytes: Vec<u8> = (0..5 * BLOCK_BYTES + 7).map(|at| (at % 251) as u8).collect();
            for chunk in bytes.chunks(1000) {
                buffer.extend_from_slice(chunk);
            }
            assert!(buffer.capacity() >= bytes.len());
            assert_eq!(buffer.as_slice(), &bytes[..]);
            let sealed = buffer.seal();
            assert_eq!(sealed.as_slice(), &bytes[..]);
            assert_eq!(sealed.padded().len(), 6 * BLOCK_BYTES);
        });
    }
}
