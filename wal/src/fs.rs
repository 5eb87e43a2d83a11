//! The file-system seam: everything the writer does to disk goes through
//! [`FileSystem`] and [`SegmentFile`], so tests can put [`crate::FaultyFs`]
//! in between. [`DmaFs`] is the real one: glommio `DmaFile`s (O_DIRECT,
//! io_uring), 4 KiB-aligned writes, fdatasync.
//!
//! Recovery and the mmap read path use `std::fs` directly: they only read,
//! and happen before the writer starts.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

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
    /// Opens an existing segment for writing.
    fn open_segment<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>>;
    /// fsyncs a directory, making creations and deletions in it durable.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>>;
    /// Removes a segment file.
    fn remove<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>>;
}

/// The real file system: glommio DMA files (O_DIRECT through io_uring).
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaFs;

struct DmaSegment {
    file: DmaFile,
}

impl SegmentFile for DmaSegment {
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            let padded = align_up(data.len() as u64) as usize;
            let mut buffer = self.file.alloc_dma_buffer(padded.max(BLOCK_BYTES));
            let bytes = buffer.as_bytes_mut();
            bytes[..data.len()].copy_from_slice(data);
            bytes[data.len()..].fill(0);
            Ok(self.file.write_at(buffer, offset).await?)
        })
    }

    fn sync_data(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(async move { Ok(self.file.fdatasync().await?) })
    }
}

impl FileSystem for DmaFs {
    fn create_segment<'a>(
        &'a self,
        path: &'a Path,
        header: &'a [u8],
        segment_bytes: u64,
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .dma_open(path)
                .await?;
            file.pre_allocate(segment_bytes, false).await?;
            let segment = DmaSegment { file };
            let written = segment.write_at(0, header).await?;
            if written < header.len() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short header write"));
            }
            segment.sync_data().await?;
            Ok(Rc::new(segment) as Rc<dyn SegmentFile>)
        })
    }

    fn open_segment<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            let file = OpenOptions::new().read(true).write(true).dma_open(path).await?;
            Ok(Rc::new(DmaSegment { file }) as Rc<dyn SegmentFile>)
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let directory = glommio::io::Directory::open(dir).await?;
            directory.sync().await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move { std::fs::remove_file(path) })
    }
}
