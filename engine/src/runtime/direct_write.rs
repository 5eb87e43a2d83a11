//! Writing a received snapshot's data file with `O_DIRECT`: the bytes go
//! from two reused, aligned buffers to the disk, never through the page
//! cache, and the disk's writes overlap the receiving.
//!
//! Sits under `snapshot_store.rs`'s [`SnapshotWriter`](super::snapshot_store::SnapshotWriter)
//! on the follower's receive path (`snapshot_stream.rs`). Filling new page
//! cache was the receive worker's largest cost: at 1 GiB the kernel's copy
//! into fresh page-cache pages took 17 % of the install's CPU samples, and
//! starting their writeback every 2 MiB blocked the worker for 8 of a 22 s
//! stream on the shared disk. A direct write of [`DIRECT_WRITE_BYTES`] is a
//! DMA from the buffer. With one buffer written in place the worker then
//! waited for each write (1.4–1.7 s of a 1.8–2.1 s stream of 1 GiB on an
//! idle machine): a thread of the file's own now writes one buffer while
//! the worker fills the other. The atomic publication does not change: the
//! writer still fsyncs the file (size and extents, and the disk's cache)
//! before the rename. A file system that refuses `O_DIRECT` (tmpfs) gets
//! buffered writes, as before.

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;

/// Bytes gathered before one direct write: the bound on each of a
/// received stream's [`DIRECT_BUFFERS`] buffers. On this project's VM disk
/// 1 MiB writes one after the other reached 0.4–0.6 GB/s over 1 GiB, 2 MiB
/// ones 0.7–1.2 GB/s and 4 MiB ones 0.9–1.3 GB/s (noisy, shared); 2 MiB,
/// not 4, so that a stream's file still grows while it arrives (a kill
/// mid-stream of a 4 MiB snapshot leaves a partly written temp directory,
/// as a test checks).
pub const DIRECT_WRITE_BYTES: usize = 2 << 20;
/// Buffers of a stream: one fills on the receive worker while the other
/// is written by the stream's writer thread, so that receiving, checksums
/// and the copy overlap the disk's writes instead of waiting for them.
pub const DIRECT_BUFFERS: usize = 2;
/// Alignment of a direct write's buffer, offset and length: a page, a
/// multiple of every logical block size the kernel allows.
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// A heap buffer of [`DIRECT_WRITE_BYTES`] aligned to [`DIRECT_ALIGN_BYTES`].
struct AlignedBuffer {
    pointer: NonNull<u8>,
}

impl AlignedBuffer {
    fn layout() -> Layout {
        Layout::from_size_align(DIRECT_WRITE_BYTES, DIRECT_ALIGN_BYTES).expect("a valid constant layout")
    }

    fn new() -> AlignedBuffer {
        let layout = Self::layout();
        // SAFETY: the layout's size is not zero.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(pointer) = NonNull::new(pointer) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuffer { pointer }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the allocation holds DIRECT_WRITE_BYTES initialized
        // (zeroed) bytes, owned by self and borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), DIRECT_WRITE_BYTES) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.pointer.as_ptr(), Self::layout()) }
    }
}

// SAFETY: the buffer is owned memory with no thread affinity (it moves to
// the receive worker's blocking thread with its writer).
unsafe impl Send for AlignedBuffer {}

/// A buffer the writer thread is to write: its first `length` bytes at
/// `offset`.
struct Job {
    buffer: AlignedBuffer,
    offset: u64,
    length: usize,
}

/// A new file written front to back with direct writes: the receive
/// worker fills one buffer while a thread of the file's own writes the
/// previous one ([`DIRECT_BUFFERS`] in all).
pub(crate) struct DirectFile {
    /// Sends full buffers to the writer thread (`None` once finished).
    jobs: Option<flume::Sender<Job>>,
    /// Buffers back from the writer thread, with the write's result.
    done: flume::Receiver<(AlignedBuffer, io::Result<()>)>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The file, for the last write and the cut to length.
    file: File,
    /// The buffer being filled (`None` while every buffer is out).
    buffer: Option<AlignedBuffer>,
    /// Buffers not yet made (allocated on first need).
    unmade: usize,
    /// Buffers handed to the writer thread and not back.
    out: usize,
    /// Bytes of `buffer` not yet written.
    filled: usize,
    /// Bytes handed to the writer so far (a multiple of the buffer's size).
    written: u64,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile")
            .field("filled", &self.filled)
            .field("written", &self.written)
            .field("out", &self.out)
            .finish()
    }
}

impl DirectFile {
    /// Opens the empty file at `path` for direct writes. `None` if the file
    /// system does not take them (the open or a first aligned write fails
    /// with `EINVAL`, as on tmpfs): the caller writes it buffered.
    pub fn open(path: &Path) -> io::Result<Option<DirectFile>> {
        let opened = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path);
        let file = match opened {
            Ok(file) => file,
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut buffer = AlignedBuffer::new();
        // Some file systems take the flag and refuse the writes: find out
        // now, while nothing depends on it (the block is overwritten or cut
        // off by `finish`).
        match file.write_all_at(&buffer.bytes()[..DIRECT_ALIGN_BYTES], 0) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(error) => return Err(error),
        }
        let writer_file = file.try_clone()?;
        let (jobs, to_write) = flume::bounded::<Job>(DIRECT_BUFFERS);
        let (written, done) = flume::bounded(DIRECT_BUFFERS);
        let writer = std::thread::Builder::new()
            .name("coraft-snap-write".into())
            .spawn(move || {
                // Ends when the file is finished or dropped (the sender
                // goes), after the write under way.
                for Job {
                    mut buffer,
                    offset,
                    length,
                } in to_write.iter()
                {
                    let result = writer_file.write_all_at(&buffer.bytes()[..length], offset);
                    if written.send((buffer, result)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Some(DirectFile {
            jobs: Some(jobs),
            done,
            writer: Some(writer),
            file,
            buffer: Some(buffer),
            unmade: DIRECT_BUFFERS - 1,
            out: 0,
            filled: 0,
            written: 0,
        }))
    }

    /// Appends `bytes`, handing each buffer to the writer thread as it
    /// fills. An error is that of an earlier write (or of this one's
    /// hand-over): the file is then not to be used.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let filled = self.filled;
            let buffer = self.buffer()?;
            let take = bytes.len().min(DIRECT_WRITE_BYTES - filled);
            buffer.bytes()[filled..filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == DIRECT_WRITE_BYTES {
                self.hand_over(DIRECT_WRITE_BYTES)?;
            }
        }
        Ok(())
    }

    /// The buffer to fill: the current one, a new one while fewer than
    /// [`DIRECT_BUFFERS`] exist, else the next one the writer gives back.
    fn buffer(&mut self) -> io::Result<&mut AlignedBuffer> {
        if self.buffer.is_none() {
            if self.unmade > 0 {
                self.unmade -= 1;
                self.buffer = Some(AlignedBuffer::new());
            } else {
                self.buffer = Some(self.take_back()?);
            }
        }
        Ok(self.buffer.as_mut().expect("set above"))
    }

    /// Waits for a buffer back from the writer thread.
    fn take_back(&mut self) -> io::Result<AlignedBuffer> {
        let (buffer, result) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("the snapshot's writer thread stopped"))?;
        self.out -= 1;
        result?;
        Ok(buffer)
    }

    /// Hands the first `length` bytes of the buffer (a multiple of the
    /// alignment) to the writer thread, at the end of what is written.
    fn hand_over(&mut self, length: usize) -> io::Result<()> {
        let buffer = self.buffer.take().expect("a buffer was filled");
        let job = Job {
            buffer,
            offset: self.written,
            length,
        };
        let jobs = self.jobs.as_ref().expect("not finished");
        jobs.send(job)
            .map_err(|_| io::Error::other("the snapshot's writer thread stopped"))?;
        self.out += 1;
        self.written += length as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is buffered (its last block padded with zeros), waits
    /// for every write and cuts the file to `total_bytes`, the bytes
    /// appended in all. Not durable: the caller fsyncs the file.
    pub fn finish(mut self, total_bytes: u64) -> io::Result<()> {
        debug_assert_eq!(self.written + self.filled as u64, total_bytes);
        if self.filled > 0 {
            let padded = self.filled.next_multiple_of(DIRECT_ALIGN_BYTES);
            let filled = self.filled;
            self.buffer()?.bytes()[filled..padded].fill(0);
            self.hand_over(padded)?;
        }
        while self.out > 0 {
            self.take_back()?;
        }
        self.file.set_len(total_bytes)
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // The writer thread ends after the write under way.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file holds exactly the bytes appended, across buffer boundaries
    /// and with a tail that is not a whole block.
    #[test]
    fn direct_file_holds_exactly_what_was_appended() {
        let dir = tempfile::tempdir().expect("temp dir");
        for total in [
            0usize,
            1,
            4095,
            4097,
            DIRECT_WRITE_BYTES,
            DIRECT_WRITE_BYTES * 2 + 12_345,
        ] {
            let path = dir.path().join(format!("data-{total}"));
            File::create(&path).expect("create");
            let expected: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
            match DirectFile::open(&path).expect("open") {
                Some(mut direct) => {
                    for piece in expected.chunks(131_072 - 3) {
                        direct.write(piece).expect("write");
                    }
                    direct.finish(total as u64).expect("finish");
                }
                // A file system without O_DIRECT: nothing to test here.
                None => return,
            }
            assert_eq!(std::fs::read(&path).expect("read"), expected, "{total} bytes");
        }
    }

    /// A file dropped unfinished (a stream abandoned) stops its writer
    /// thread once the write under way is done: the full buffers it was
    /// handed are in the file when the drop returns.
    #[test]
    fn a_file_dropped_unfinished_has_its_full_buffers_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        File::create(&path).expect("create");
        let expected: Vec<u8> = (0..DIRECT_WRITE_BYTES * 2 + 1).map(|i| (i / 4096) as u8).collect();
        let Some(mut direct) = DirectFile::open(&path).expect("open") else {
            return;
        };
        direct.write(&expected).expect("write");
        drop(direct);
        let written = std::fs::read(&path).expect("read");
        assert_eq!(written.len(), DIRECT_WRITE_BYTES * 2, "two full buffers written");
        assert!(written == expected[..DIRECT_WRITE_BYTES * 2], "their bytes");
    }
}
