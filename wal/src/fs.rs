//! The file-system seam: everything the writer does to disk goes through
//! [`FileSystem`] and [`SegmentFile`], so tests can put [`crate::FaultyFs`]
//! in between. [`DmaFs`] is the real one: glommio `DmaFile`s (O_DIRECT,
//! io_uring), 4 KiB-aligned writes, fdatasync. It writes large flushes
//! through a second handle opened with O_DSYNC, so that such a flush is one
//! io_uring operation (see [`SegmentFile::write_durable_at`]).
//!
//! Recovery and the mmap read path use `std::fs` directly: they only read,
//! and happen before the writer starts.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::buffer::SealedBuffer;
use crate::format::{align_up, BLOCK_BYTES};

/// A boxed, non-`Send` future: the WAL lives on one executor.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// One open segment file, written append-only.
pub trait SegmentFile {
    /// Writes `data` at `offset` (a block boundary), padded with zeros to a
    /// whole block. Returns the bytes written (the padded length on success).
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> LocalBoxFuture<'a, io::Result<usize>>;
    /// fdatasync. An error here is fatal for the WAL.
    fn sync_data(&self) -> LocalBoxFuture<'_, io::Result<()>>;

    /// Writes `data` at `offset` like [`SegmentFile::write_at`] and makes it
    /// durable like a following [`SegmentFile::sync_data`]; this is what a
    /// flush does. Returns the bytes written; a short count means the rest
    /// must be written again (and nothing is known durable).
    ///
    /// The provided version is exactly `write_at` then, if the write was
    /// whole, `sync_data`, and tells their errors apart. [`DmaFs`] does the
    /// same for small writes, and issues one O_DSYNC write for writes of at
    /// least [`DSYNC_WRITE_BYTES_MIN`] (and of at most
    /// [`crate::Config::dsync_small_flush_bytes`], if set), so that their sync does not wait for
    /// the shard thread to come back from its appends to be submitted.
    fn write_durable_at<'a>(
        &'a self,
        offset: u64,
        data: &'a [u8],
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        let padded = align_up(data.len() as u64) as usize;
        Box::pin(write_then_sync(self, self.write_at(offset, data), padded))
    }

    /// [`SegmentFile::write_durable_at`] of a sealed batch, whose buffer is
    /// already block-aligned DMA memory padded with zeros: [`DmaFs`] writes
    /// it as is, without copying it. The provided version writes
    /// `batch.as_slice()` through `write_durable_at`.
    fn write_durable_sealed<'a>(
        &'a self,
        offset: u64,
        batch: &'a SealedBuffer,
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        self.write_durable_at(offset, batch.as_slice())
    }

    /// [`SegmentFile::write_durable_at`] of `len` zeros (whole blocks):
    /// a step of zeroing a segment ahead of the log. [`DmaFs`] writes the
    /// zeroed DMA buffer `zeros` keeps instead of copying zeros into a new
    /// one each step; the provided version writes `zeros`' plain bytes
    /// through `write_durable_at`.
    fn write_zeros_durable_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        zeros: &'a mut Zeros,
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        self.write_durable_at(offset, zeros.bytes(len))
    }

    /// Writes `len` zeros (whole blocks) at `offset` without syncing them:
    /// a step of zeroing ahead whose sync the flusher does not wait for
    /// (zeros need no durability: an unwritten preallocated block reads as
    /// zeros too). [`DmaFs`] writes the DMA buffer `zeros` keeps; the
    /// provided version writes `zeros`' plain bytes through `write_at`.
    fn write_zeros_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        zeros: &'a mut Zeros,
    ) -> LocalBoxFuture<'a, io::Result<usize>> {
        self.write_at(offset, zeros.bytes(len))
    }
}

/// The zeros a WAL's flusher writes ahead of the log, kept from one
/// zeroing step to the next (one step's worth, [`crate::writer::ZERO_CHUNK_BYTES`]
/// at most, made at the first step and again only for a step of another
/// length, such as a segment's last).
#[derive(Default)]
pub struct Zeros {
    bytes: Vec<u8>,
    dma: Option<Rc<DmaBuffer>>,
}

impl Zeros {
    /// `len` zero bytes.
    pub fn bytes(&mut self, len: usize) -> &[u8] {
        self.bytes.resize(len, 0);
        &self.bytes[..len]
    }

    /// A DMA buffer of `len` zero bytes (`len` a multiple of a block).
    fn dma(&mut self, len: usize) -> Rc<DmaBuffer> {
        match &self.dma {
            Some(buffer) if buffer.len() == len => buffer.clone(),
            _ => {
                let mut buffer = glommio::allocate_dma_buffer(len);
                buffer.as_bytes_mut().fill(0);
                let buffer = Rc::new(buffer);
                self.dma = Some(buffer.clone());
                buffer
            }
        }
    }
}

/// `write` (of `padded` bytes), then `sync_data` if the write was whole: a
/// durable write in two steps, with their errors told apart.
async fn write_then_sync<F: SegmentFile + ?Sized>(
    file: &F,
    write: impl Future<Output = io::Result<usize>>,
    padded: usize,
) -> Result<usize, DurableWriteError> {
    let written = write.await.map_err(DurableWriteError::Write)?;
    if written < padded {
        return Ok(written);
    }
    file.sync_data().await.map_err(DurableWriteError::Sync)?;
    Ok(written)
}

/// Why [`SegmentFile::write_durable_at`] failed.
#[derive(Debug)]
pub enum DurableWriteError {
    /// The write failed and nothing was left half-synced: retrying the same
    /// bytes is safe.
    Write(io::Error),
    /// Making the data durable failed, or may have failed: fatal, like a
    /// failed fdatasync.
    Sync(io::Error),
}

impl DurableWriteError {
    /// Classifies the error of an O_DSYNC write, where the write and the
    /// sync share one error code. Only ENOSPC is taken as the write's own
    /// (it comes from allocating blocks or converting preallocated extents,
    /// before any cache flush; the data is not acknowledged and rewriting it
    /// later is safe). Any other error may come from the flush and is fatal.
    pub fn from_dsync_write(error: io::Error) -> DurableWriteError {
        if error.raw_os_error() == Some(libc::ENOSPC) {
            DurableWriteError::Write(error)
        } else {
            DurableWriteError::Sync(error)
        }
    }
}

/// Creates, opens and removes segment files.
pub trait FileSystem {
    /// Creates `path`, preallocates `segment_bytes`, writes `header` (one
    /// block) at offset 0 and fdatasyncs the file (not the directory).
    fn create_segment<'a>(
        &'a self,
        path: &'a Path,
        header: &'a [u8],
        segment_bytes: u64,
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>>;
    /// Prepares the spare segment file `path` (a name recovery does not
    /// list, [`SPARE_SEGMENT_FILE_NAME`]): created (replacing a leftover
    /// one) and preallocated to `segment_bytes`, nothing written, nothing
    /// synced. The writer turns it into the next segment at rotation
    /// ([`FileSystem::claim_spare`]), so that rotation is a rename and a
    /// header instead of a create and a 64 MiB fallocate on the flush path.
    /// `None` if this file system keeps no spare (the provided version:
    /// segments are then made by [`FileSystem::create_segment`] at
    /// rotation, which is what fault-injecting file systems exercise).
    fn prepare_spare<'a>(
        &'a self,
        path: &'a Path,
        segment_bytes: u64,
    ) -> Option<LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>>> {
        let _ = (path, segment_bytes);
        None
    }
    /// Makes the prepared spare `spare` (at `spare_path`) the segment
    /// `path`: renamed, `header` written at offset 0 and fdatasynced, the
    /// directory fsynced, so that afterwards it is exactly what
    /// [`FileSystem::create_segment`] and a directory sync leave. A crash
    /// part-way leaves the spare (ignored and replaced on the next open)
    /// or a segment whose header block is blank (removed by recovery, rule
    /// 5 of `docs/wal.md`); no record goes in before this returns.
    fn claim_spare<'a>(
        &'a self,
        spare: Rc<dyn SegmentFile>,
        spare_path: &'a Path,
        path: &'a Path,
        header: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            std::fs::rename(spare_path, path)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let header_durable = async {
                let written = spare.write_at(0, header).await?;
                if written < header.len() {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "short header write"));
                }
                spare.sync_data().await
            };
            // The header's sync and the directory's run side by side.
            let (header, directory) = join(header_durable, self.sync_dir(dir)).await;
            header?;
            directory?;
            Ok(spare)
        })
    }
    /// Opens an existing segment for writing.
    fn open_segment<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>>;
    /// fsyncs a directory, making creations and deletions in it durable.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>>;
    /// Removes a segment file. It must not block the shard's thread: the
    /// real file system unlinks on the executor's blocking thread pool,
    /// since freeing a 64 MiB segment's blocks can wait for the device
    /// (on a file system mounted with `discard`, ext4 discards them before
    /// `unlink` returns: 10-25 ms per segment on the 2-core VM, every
    /// executor stalled that long, docs/journal/benchmarks.md, "issue 17:
    /// the 4 KiB tail").
    fn remove<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>>;
    /// Durably replaces the small file `name` in `dir` with `bytes` (the
    /// segment range file, when it is made: there is none yet, or an older
    /// format is converted): a temporary file `NAME.tmp` written and
    /// fsynced, renamed over `name`, the directory fsynced. Blocking: the
    /// file is two blocks, and the WAL makes it when it opens or, on the
    /// write path ([`FileSystem::replace_file_off_thread`]), once for its
    /// first segment.
    fn replace_file(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        replace_file(dir, name, bytes)
    }
    /// [`FileSystem::replace_file`] for the write path, which must not
    /// block the shard's thread: the real file system runs it on the
    /// executor's blocking thread pool. By default it calls `replace_file`
    /// in place.
    fn replace_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.replace_file(dir, name, bytes) })
    }
    /// Durably overwrites `bytes` at `offset` of the existing small file
    /// `name` in `dir` (one slot of the segment range file, a block at a
    /// block boundary): one write and one fdatasync, no rename and no
    /// directory sync, since the file keeps its size and blocks. A crash
    /// may leave those bytes torn; the range file's slots carry a CRC for
    /// it. This is every update of the range file once it exists (a new
    /// segment, a deletion), so it runs off the shard's thread: the real
    /// file system on the executor's blocking thread pool. The replacement
    /// it took the place of (three syncs: the temporary file, the rename,
    /// the directory) took 2.7-3.1 ms at the median (p90 6.5-10.5 ms) at
    /// 4 KiB writes, 1.1-1.8 ms longer than the batch written beside it
    /// in a rotation's first flush; this takes about as long as that batch
    /// (docs/journal/benchmarks.md, "the range file as one block"). By
    /// default it calls [`overwrite_file`] in place.
    fn overwrite_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        offset: u64,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move { overwrite_file(dir, name, offset, bytes) })
    }
}

/// The name of the spare segment file in a WAL directory
/// ([`FileSystem::prepare_spare`]). Not a segment name, so recovery does
/// not list it; opening the WAL removes a leftover one (it never holds a
/// record: it is renamed before its header is written).
pub const SPARE_SEGMENT_FILE_NAME: &str = "segment.spare";

/// Awaits two futures side by side; their outputs in order.
pub(crate) async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    std::future::poll_fn(move |cx| {
        if out_a.is_none() {
            if let Poll::Ready(output) = a.as_mut().poll(cx) {
                out_a = Some(output);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(output) = b.as_mut().poll(cx) {
                out_b = Some(output);
            }
        }
        if out_a.is_some() && out_b.is_some() {
            return Poll::Ready((out_a.take().expect("ready"), out_b.take().expect("ready")));
        }
        Poll::Pending
    })
    .await
}

/// [`FileSystem::replace_file`] with the standard library's blocking calls.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// [`FileSystem::overwrite_file_off_thread`] with the standard library's
/// blocking calls: `bytes` written at `offset` of `dir/name`, which must
/// exist, then fdatasync.
pub fn overwrite_file(dir: &Path, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(dir.join(name))?;
    file.write_all_at(bytes, offset)?;
    file.sync_data()
}

/// The real file system: glommio DMA files (O_DIRECT through io_uring).
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaFs {
    /// Whether glommio may use its polled ring for these files
    /// ([`crate::Config::polled_io`]).
    pub polled_io: bool,
    /// Flushes of at most this many bytes are O_DSYNC writes too
    /// ([`crate::Config::dsync_small_flush_bytes`]; 0 for none).
    pub dsync_small_flush_bytes: usize,
}

/// Name of the scratch file [`keep_off_the_poll_ring`] opens and removes
/// in a WAL directory; recovery ignores it (not a segment name).
pub const POLL_PROBE_FILE_NAME: &str = "poll-probe.tmp";

/// Keeps this thread's DMA I/O on `dir`'s device off glommio's polled ring.
///
/// glommio decides once per thread and device, when the thread first opens
/// a DMA file there, by reading the file through its IOPOLL ring: a read
/// that works makes every later DMA read and write on the device go to
/// that ring. While anything is in flight there the executor cannot sleep:
/// it polls, entering the kernel and re-arming its timers in a loop. On
/// recent kernels the read works on devices without poll queues too (the
/// kernel completes the I/O by interrupt), so an executor spun through
/// every WAL write. Measured on the 2-core VM (docs/journal/benchmarks.md,
/// "Polled I/O"): at one client the cluster used 1.0-1.2 ms of CPU per
/// write with the poll ring and 0.61-0.65 ms without, and its p99 fell
/// from ~5 ms to ~0.77 ms.
///
/// A file opened write-only fails that first read, and glommio then keeps
/// the device off the poll ring for the thread (glommio logs the failed
/// read as an error, once per thread and device). If the thread has opened
/// a DMA file on the device before, glommio has decided already and this
/// changes nothing.
pub async fn keep_off_the_poll_ring(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    thread_local!(static DECIDED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });
    let Ok(metadata) = std::fs::metadata(dir) else { return };
    let device = metadata.dev();
    if DECIDED.with(|decided| {
        let mut decided = decided.borrow_mut();
        let known = decided.contains(&device);
        if !known {
            decided.push(device);
        }
        known
    }) {
        return;
    }
    let probe = dir.join(POLL_PROBE_FILE_NAME);
    // If even this open fails, glommio has not decided, and the segment's
    // own open decides as it would have without this.
    if let Ok(file) = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&probe)
        .await
    {
        let _ = file.close().await;
    }
    let _ = std::fs::remove_file(&probe);
}

/// Writes at least this large always go through the O_DSYNC handle;
/// smaller ones do if they are at most `dsync_small_flush_bytes` (by
/// default this bound too, so every flush does: [`crate::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT`]),
/// and are otherwise written and fdatasynced separately. On an older,
/// loaded 2-core VM an O_DSYNC write of a lone append measured ~4 ms (its
/// completion runs in a kernel worker that waited for a scheduler tick)
/// where a rewrite of the last block plus fdatasync took ~0.25 ms, and at
/// 64 KiB the 100 KB point of `coraft-bench wal` measured worse with it;
/// on the quiet benchmark machine every flush size measured better.
pub const DSYNC_WRITE_BYTES_MIN: usize = 512 << 10;

struct DmaSegment {
    /// For small writes and fdatasync.
    file: DmaFile,
    /// The same file opened with O_DSYNC, for large writes.
    dsync: DmaFile,
    /// [`crate::Config::polled_io`].
    polled_io: bool,
    /// [`crate::Config::dsync_small_flush_bytes`].
    dsync_small_flush_bytes: usize,
}

impl DmaSegment {
    async fn open(path: &Path, create: bool, fs: &DmaFs) -> io::Result<DmaSegment> {
        let polled_io = fs.polled_io;
        if !polled_io {
            if let Some(dir) = path.parent() {
                keep_off_the_poll_ring(dir).await;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .dma_open(path)
            .await?;
        let dsync = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(path)
            .await?;
        Ok(DmaSegment {
            file,
            dsync,
            polled_io,
            dsync_small_flush_bytes: fs.dsync_small_flush_bytes,
        })
    }

    /// Whether a flush of `len` bytes (before padding) is one O_DSYNC write
    /// rather than a write and an fdatasync: from [`DSYNC_WRITE_BYTES_MIN`]
    /// up always, and up to [`crate::Config::dsync_small_flush_bytes`] if
    /// that is set.
    fn flushes_as_dsync(&self, len: usize) -> bool {
        len >= DSYNC_WRITE_BYTES_MIN || (len > 0 && len <= self.dsync_small_flush_bytes)
    }
}

impl SegmentFile for DmaSegment {
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(write_padded(&self.file, offset, data))
    }

    fn sync_data(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(async move { Ok(self.file.fdatasync().await?) })
    }

    fn write_durable_at<'a>(
        &'a self,
        offset: u64,
        data: &'a [u8],
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        Box::pin(async move {
            if !self.flushes_as_dsync(data.len()) {
                let padded = align_up(data.len() as u64) as usize;
                return write_then_sync(self, self.write_at(offset, data), padded).await;
            }
            // O_DSYNC: the write returns once its data (and the metadata needed
            // to read it back, such as the conversion of preallocated extents)
            // is durable, as after an fdatasync.
            dsync_write(self.polled_io, write_padded(&self.dsync, offset, data))
                .await
                .map_err(DurableWriteError::from_dsync_write)
        })
    }

    fn write_durable_sealed<'a>(
        &'a self,
        offset: u64,
        batch: &'a SealedBuffer,
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        Box::pin(async move {
            let buffer = batch.padded().clone();
            if !self.flushes_as_dsync(batch.as_slice().len()) {
                let padded = buffer.len();
                let write = async { Ok(self.file.write_rc_at(buffer, offset).await?) };
                return write_then_sync(self, write, padded).await;
            }
            // O_DSYNC, as in `write_durable_at`.
            dsync_write(self.polled_io, self.dsync.write_rc_at(buffer, offset))
                .await
                .map_err(|error| DurableWriteError::from_dsync_write(error.into()))
        })
    }

    fn write_zeros_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        zeros: &'a mut Zeros,
    ) -> LocalBoxFuture<'a, io::Result<usize>> {
        if !len.is_multiple_of(BLOCK_BYTES) {
            return self.write_at(offset, zeros.bytes(len));
        }
        let buffer = zeros.dma(len);
        Box::pin(async move { Ok(self.file.write_rc_at(buffer, offset).await?) })
    }

    fn write_zeros_durable_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        zeros: &'a mut Zeros,
    ) -> LocalBoxFuture<'a, Result<usize, DurableWriteError>> {
        if !len.is_multiple_of(BLOCK_BYTES) || len >= DSYNC_WRITE_BYTES_MIN {
            return self.write_durable_at(offset, zeros.bytes(len));
        }
        let buffer = zeros.dma(len);
        Box::pin(async move {
            let write = async { Ok(self.file.write_rc_at(buffer, offset).await?) };
            write_then_sync(self, write, len).await
        })
    }
}

/// How often the shard thread offers its CPU to other threads while an
/// O_DSYNC write is in flight on glommio's polled ring (see
/// [`yielding_while`]).
pub const DSYNC_YIELD_PERIOD: Duration = Duration::from_micros(20);

/// Awaits `io`, calling `sched_yield` every [`DSYNC_YIELD_PERIOD`] while it
/// is pending. Only with [`crate::Config::polled_io`]: glommio may then
/// send the write to its IOPOLL ring, and while anything is in flight there
/// the executor cannot sleep: it busy-polls. An O_DSYNC write is completed
/// by kernel threads (the io-wq worker that runs it, the work item that
/// converts the preallocated extents), and a kernel thread queued on the
/// shard's CPU waited behind the polling thread, often until the next
/// scheduler tick (4 ms here). Yielding in the poll loop lets such a thread
/// run at once; with nothing else runnable it costs one system call per
/// period.
async fn yielding_while<F: Future>(io: F) -> F::Output {
    let mut io = std::pin::pin!(io);
    let mut timer: Option<Pin<Box<glommio::timer::Timer>>> = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = io.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        loop {
            let pending = timer.get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(DSYNC_YIELD_PERIOD)));
            if pending.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            timer = None;
            std::thread::yield_now();
        }
    })
    .await
}

/// Awaits an O_DSYNC write: yielding on the poll ring (see [`yielding_while`]).
async fn dsync_write<F: Future>(polled_io: bool, io: F) -> F::Output {
    if polled_io {
        yielding_while(io).await
    } else {
        io.await
    }
}

/// Writes `data` at `offset` through `file`, padded with zeros to a block.
async fn write_padded(file: &DmaFile, offset: u64, data: &[u8]) -> io::Result<usize> {
    let padded = align_up(data.len() as u64) as usize;
    let mut buffer = file.alloc_dma_buffer(padded.max(BLOCK_BYTES));
    let bytes = buffer.as_bytes_mut();
    bytes[..data.len()].copy_from_slice(data);
    bytes[data.len()..].fill(0);
    Ok(file.write_at(buffer, offset).await?)
}

impl FileSystem for DmaFs {
    fn create_segment<'a>(
        &'a self,
        path: &'a Path,
        header: &'a [u8],
        segment_bytes: u64,
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            let segment = DmaSegment::open(path, true, self).await?;
            segment.file.pre_allocate(segment_bytes, false).await?;
            let written = segment.write_at(0, header).await?;
            if written < header.len() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short header write"));
            }
            segment.sync_data().await?;
            Ok(Rc::new(segment) as Rc<dyn SegmentFile>)
        })
    }

    fn prepare_spare<'a>(
        &'a self,
        path: &'a Path,
        segment_bytes: u64,
    ) -> Option<LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>>> {
        Some(Box::pin(async move {
            // Off the shard's thread, as `remove`: a spare left behind is a
            // whole segment's blocks to free.
            let leftover = path.to_path_buf();
            match glommio::executor()
                .spawn_blocking(move || std::fs::remove_file(leftover))
                .await
            {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
            let segment = DmaSegment::open(path, true, self).await?;
            segment.file.pre_allocate(segment_bytes, false).await?;
            Ok(Rc::new(segment) as Rc<dyn SegmentFile>)
        }))
    }

    fn open_segment<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move { Ok(Rc::new(DmaSegment::open(path, false, self).await?) as Rc<dyn SegmentFile>) })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let directory = glommio::io::Directory::open(dir).await?;
            directory.sync().await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        let path = path.to_path_buf();
        Box::pin(glommio::executor().spawn_blocking(move || std::fs::remove_file(path)))
    }

    fn replace_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        let (dir, name, bytes) = (dir.to_path_buf(), name.to_owned(), bytes.to_vec());
        Box::pin(glommio::executor().spawn_blocking(move || replace_file(&dir, &name, &bytes)))
    }

    fn overwrite_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        offset: u64,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        let (dir, name, bytes) = (dir.to_path_buf(), name.to_owned(), bytes.to_vec());
        Box::pin(glommio::executor().spawn_blocking(move || overwrite_file(&dir, &name, offset, &bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enospc_from_an_o_dsync_write_is_retryable() {
        let no_space = DurableWriteError::from_dsync_write(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(no_space, DurableWriteError::Write(_)));
        for code in [libc::EIO, libc::EROFS, libc::EDQUOT, libc::EINVAL] {
            let error = DurableWriteError::from_dsync_write(io::Error::from_raw_os_error(code));
            assert!(matches!(error, DurableWriteError::Sync(_)), "errno {code}");
        }
    }
}
