//! Fault injection for tests: a [`FileSystem`] that wraps another one and can
//! fail syncs, refuse space, shorten writes, fail writes of the
//! segment range file, and simulate a power cut that
//! loses (or tears) every write not yet covered by an fdatasync.
//!
//! Writes go through to the real files at once (so mmap reads see them);
//! each write first saves the bytes it overwrites, and [`Faults::power_cut`]
//! puts back all or part of those pre-images for writes never synced;
//! [`Faults::power_cut_garbling`] instead fills the whole block that was
//! being written with garbage, whatever it held before.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::format::{align_up, BLOCK_BYTES};
use crate::fs::{FileSystem, LocalBoxFuture, SegmentFile};

/// One unsynced write: where, and what was there before.
#[derive(Debug, Clone)]
struct Undo {
    path: PathBuf,
    offset: u64,
    before: Vec<u8>,
}

/// The faults to inject, shared between the test and the file system.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Fail the next this-many fdatasyncs with EIO (without syncing).
    pub failing_syncs: usize,
    /// Fail segment creations with ENOSPC while true.
    pub no_space_on_create: bool,
    /// Fail writes with ENOSPC while true.
    pub no_space_on_write: bool,
    /// Make the next this-many writes write only their first block.
    pub short_writes: usize,
    /// Fail the next this-many writes of the segment range file (its
    /// creation or an update of one slot) before they touch it: the first with ENOSPC, the next ones
    /// alternately with EIO and ENOSPC.
    pub failing_range_writes: usize,
    /// Range-file writes failed so far.
    pub range_writes_failed: usize,
    /// Hold every segment removal (before it touches the file) while true,
    /// as an `unlink` waiting for the device would.
    pub hold_removes: bool,
    /// Removals waiting on `hold_removes` now.
    pub removes_held: usize,
    unsynced: Vec<Undo>,
}

/// A handle on the faults of a [`FaultyFs`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    plan: Rc<RefCell<FaultPlan>>,
}

impl Faults {
    /// Changes the plan.
    pub fn update(&self, change: impl FnOnce(&mut FaultPlan)) {
        change(&mut self.plan.borrow_mut());
    }

    /// Bytes written since the last successful fdatasync of their file.
    pub fn unsynced_bytes(&self) -> usize {
        self.plan.borrow().unsynced.iter().map(|undo| undo.before.len()).sum()
    }

    /// Simulates a power cut during which the device garbles the whole block
    /// it was writing: of the unsynced writes, the first `keep_blocks`
    /// blocks (in write order) survive, the next one is overwritten in full
    /// with garbage derived from `seed` (the bytes that were there before
    /// included, as a drive that loses power mid-sector may leave them), and
    /// the rest revert to what was on disk before. Call it after the WAL is
    /// dropped.
    pub fn power_cut_garbling(&self, keep_blocks: usize, seed: u64) -> io::Result<()> {
        let unsynced = std::mem::take(&mut self.plan.borrow_mut().unsynced);
        let mut blocks_seen = 0;
        let mut reverts = Vec::new();
        let mut garbled = None;
        for undo in &unsynced {
            for (block, before) in undo.before.chunks(BLOCK_BYTES).enumerate() {
                let offset = undo.offset + (block * BLOCK_BYTES) as u64;
                if blocks_seen == keep_blocks {
                    garbled = Some((undo.path.clone(), offset));
                } else if blocks_seen > keep_blocks {
                    reverts.push((undo.path.clone(), offset, before.to_vec()));
                }
                blocks_seen += 1;
            }
        }
        for (path, offset, bytes) in reverts.into_iter().rev() {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.write_all_at(&bytes, offset)?;
            file.sync_data()?;
        }
        if let Some((path, offset)) = garbled {
            let mut state = seed | 1;
            let garbage: Vec<u8> = (0..BLOCK_BYTES)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let file = OpenOptions::new().write(true).open(&path)?;
            file.write_all_at(&garbage, offset)?;
            file.sync_data()?;
        }
        Ok(())
    }

    /// Simulates a power cut: of the unsynced writes, the first `keep_blocks`
    /// blocks (in write order) survive, the next one is torn after
    /// `torn_bytes`, and the rest revert to what was on disk before. Call it
    /// after the WAL is dropped.
    pub fn power_cut(&self, keep_blocks: usize, torn_bytes: usize) -> io::Result<()> {
        let unsynced = std::mem::take(&mut self.plan.borrow_mut().unsynced);
        let mut blocks_seen = 0;
        let mut reverts = Vec::new();
        for undo in &unsynced {
            for (block, before) in undo.before.chunks(BLOCK_BYTES).enumerate() {
                let offset = undo.offset + (block * BLOCK_BYTES) as u64;
                if blocks_seen > keep_blocks {
                    reverts.push((undo.path.clone(), offset, before.to_vec()));
                } else if blocks_seen == keep_blocks {
                    let torn = torn_bytes.min(before.len());
                    let tail = before[torn..].to_vec();
                    reverts.push((undo.path.clone(), offset + torn as u64, tail));
                }
                blocks_seen += 1;
            }
        }
        // Revert newest first so that overlapping writes end at the oldest image.
        for (path, offset, bytes) in reverts.into_iter().rev() {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.write_all_at(&bytes, offset)?;
            file.sync_data()?;
        }
        Ok(())
    }
}

/// A [`FileSystem`] that injects the faults of its [`Faults`].
pub struct FaultyFs {
    inner: Rc<dyn FileSystem>,
    faults: Faults,
}

impl FaultyFs {
    /// Wraps `inner`; returns the file system and the handle to steer it.
    pub fn new(inner: Rc<dyn FileSystem>) -> (FaultyFs, Faults) {
        let faults = Faults::default();
        let fs = FaultyFs {
            inner,
            faults: faults.clone(),
        };
        (fs, faults)
    }
}

struct FaultySegment {
    inner: Rc<dyn SegmentFile>,
    path: PathBuf,
    faults: Faults,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SegmentFile for FaultySegment {
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            let short = {
                let mut plan = self.faults.plan.borrow_mut();
                if plan.no_space_on_write {
                    return Err(errno(libc::ENOSPC));
                }
                let short = plan.short_writes > 0;
                plan.short_writes = plan.short_writes.saturating_sub(1);
                short
            };
            let data = if short && data.len() > BLOCK_BYTES {
                &data[..BLOCK_BYTES]
            } else {
                data
            };
            let padded = align_up(data.len() as u64) as usize;
            let mut before = vec![0; padded];
            let file = std::fs::File::open(&self.path)?;
            let read = file.read_at(&mut before, offset)?;
            before.truncate(read);
            self.faults.plan.borrow_mut().unsynced.push(Undo {
                path: self.path.clone(),
                offset,
                before,
            });
            self.inner.write_at(offset, data).await
        })
    }

    fn sync_data(&self) -> LocalBoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            {
                let mut plan = self.faults.plan.borrow_mut();
                if plan.failing_syncs > 0 {
                    plan.failing_syncs -= 1;
                    return Err(errno(libc::EIO));
                }
            }
            self.inner.sync_data().await?;
            let path = &self.path;
            self.faults.plan.borrow_mut().unsynced.retain(|undo| &undo.path != path);
            Ok(())
        })
    }
}

impl FileSystem for FaultyFs {
    fn create_segment<'a>(
        &'a self,
        path: &'a Path,
        header: &'a [u8],
        segment_bytes: u64,
    ) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            if self.faults.plan.borrow().no_space_on_create {
                return Err(errno(libc::ENOSPC));
            }
            let inner = self.inner.create_segment(path, header, segment_bytes).await?;
            Ok(Rc::new(FaultySegment {
                inner,
                path: path.to_path_buf(),
                faults: self.faults.clone(),
            }) as Rc<dyn SegmentFile>)
        })
    }

    fn open_segment<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<Rc<dyn SegmentFile>>> {
        Box::pin(async move {
            let inner = self.inner.open_segment(path).await?;
            Ok(Rc::new(FaultySegment {
                inner,
                path: path.to_path_buf(),
                faults: self.faults.clone(),
            }) as Rc<dyn SegmentFile>)
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        self.inner.sync_dir(dir)
    }

    fn remove<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            if self.faults.plan.borrow().hold_removes {
                self.faults.plan.borrow_mut().removes_held += 1;
                while self.faults.plan.borrow().hold_removes {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                self.faults.plan.borrow_mut().removes_held -= 1;
            }
            self.inner.remove(path).await
        })
    }

    fn replace_file(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.range_write_fault()?;
        self.inner.replace_file(dir, name, bytes)
    }

    fn replace_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.range_write_fault()?;
            self.inner.replace_file_off_thread(dir, name, bytes).await
        })
    }

    fn overwrite_file_off_thread<'a>(
        &'a self,
        dir: &'a Path,
        name: &'a str,
        offset: u64,
        bytes: &'a [u8],
    ) -> LocalBoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.range_write_fault()?;
            self.inner.overwrite_file_off_thread(dir, name, offset, bytes).await
        })
    }
}

impl FaultyFs {
    /// The planned failure of a range file write, if one is due.
    fn range_write_fault(&self) -> io::Result<()> {
        {
            let mut plan = self.faults.plan.borrow_mut();
            if plan.failing_range_writes > 0 {
                plan.failing_range_writes -= 1;
                plan.range_writes_failed += 1;
                let code = if plan.range_writes_failed % 2 == 1 {
                    libc::ENOSPC
                } else {
                    libc::EIO
                };
                return Err(errno(code));
            }
        }
        Ok(())
    }
}

/// From here on, the system calls numbered `syscalls` (`libc::SYS_*`) fail
/// with `EPERM` on the calling thread and on the threads it starts later;
/// other threads are untouched (a seccomp filter: irreversible for the
/// thread). For tests that show a piece of work runs off a given thread:
/// put the filter on that thread and check the work still succeeds.
/// Other architectures than x86_64 are let through.
///
/// # Panics
///
/// If the kernel refuses the filter.
pub fn refuse_syscalls_on_this_thread(syscalls: &[libc::c_long]) {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let count = u8::try_from(syscalls.len()).expect("at most 255 system calls");
    let statement = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_if = |k: u32, jt: u8, jf: u8| sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    // seccomp_data.arch: anything but x86_64 jumps to "allow", past the
    // load of the number and one test per system call.
    let mut filter = vec![
        statement(BPF_LD | BPF_W | BPF_ABS, 4),
        jump_if(AUDIT_ARCH_X86_64, 0, count + 1),
        // seccomp_data.nr
        statement(BPF_LD | BPF_W | BPF_ABS, 0),
    ];
    // The i-th test jumps past the tests after it and "allow" to "refuse".
    for (i, &nr) in syscalls.iter().enumerate() {
        filter.push(jump_if(nr as u32, count - i as u8, 0));
    }
    filter.push(statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    filter.push(statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain system calls; the filter outlives the call that copies it.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "PR_SET_NO_NEW_PRIVS"
        );
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &program as *const sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}
