//! The thread that writes a shard's O_DSYNC flushes.
//!
//! An O_DSYNC write submitted through io_uring runs its block-layer
//! submission inline on the submitting thread, in `io_uring_enter`: on a
//! virtio disk that includes the device notification (a VM exit), which
//! the profiles of `coraft-bench --nodes 1 --clients 256` measured at
//! 20-40 µs per flush, about a fifth of the shard executor's CPU per
//! write (docs/journal/benchmarks.md, "issue 17: one node against one
//! bare log"). The executor is the one thread every write of the shard
//! passes through; the disk's own thread is not. So [`DmaFs`](crate::DmaFs)
//! hands each sealed O_DSYNC flush to this thread, one per executor thread
//! (started when its first flush comes), which `pwrite`s it and wakes the
//! flusher; the executor meanwhile answers the previous flush's writes and
//! takes the next requests. This is how a bare group-committing log (the
//! benchmark's floor) writes too: the flush is its own thread's.
//!
//! The buffer and the file descriptor are the caller's: [`DsyncWrite`]
//! keeps both alive until the thread reports, and if it is dropped before
//! that (the flusher cancelled at shutdown) its drop waits for the write to
//! end, so the thread never writes from memory already given back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

/// Bound on the writes queued to one executor thread's writer and not yet
/// taken. Each WAL's flusher has at most one flush in flight, so this is
/// only reached with more WALs than this on one executor; a write that
/// finds the queue full goes through io_uring instead.
pub const DSYNC_WRITER_QUEUE_MAX: usize = 64;

/// One write handed to the thread.
struct Job {
    fd: RawFd,
    /// Start of the caller's buffer (kept alive by the [`DsyncWrite`]).
    ptr: usize,
    len: usize,
    offset: u64,
    state: Mutex<JobState>,
    done: Condvar,
}

#[derive(Default)]
struct JobState {
    outcome: Option<io::Result<usize>>,
    /// Set with the outcome: the thread is done with the buffer.
    ended: bool,
    waker: Option<Waker>,
}

struct Queue {
    jobs: VecDeque<Arc<Job>>,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
}

/// An executor thread's writer: stops its thread when dropped (with the
/// executor thread's locals).
struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

thread_local! {
    /// This executor thread's writer: `None` until its first flush, and
    /// after a failed start (flushes then stay on io_uring).
    static WRITER: RefCell<Option<Result<Writer, ()>>> = const { RefCell::new(None) };
    /// This thread counted in [`FLUSHING_THREADS`] while it lives.
    static FLUSHING: Flushing = const { Flushing::new() };
}

/// Threads of this process that have flushed an O_DSYNC write (a shard's
/// executor each): a writer thread is used only while they are fewer than
/// the CPUs this process may run on, so that it has a CPU of its own. Where
/// every CPU already runs an executor (a shard per core, or the benchmark's
/// three nodes in one process on two CPUs), the hand-over would only add
/// two context switches per flush to a CPU that is busy anyway: measured
/// there, +0.6 µs of CPU per write (docs/journal/benchmarks.md, "issue 17:
/// one node against one bare log").
static FLUSHING_THREADS: AtomicUsize = AtomicUsize::new(0);

struct Flushing {
    counted: std::cell::Cell<bool>,
}

impl Flushing {
    const fn new() -> Flushing {
        Flushing {
            counted: std::cell::Cell::new(false),
        }
    }

    /// Counts this thread (once); the number of flushing threads.
    fn count(&self) -> usize {
        if !self.counted.replace(true) {
            return FLUSHING_THREADS.fetch_add(1, Ordering::Relaxed) + 1;
        }
        FLUSHING_THREADS.load(Ordering::Relaxed)
    }
}

impl Drop for Flushing {
    fn drop(&mut self) {
        if self.counted.get() {
            FLUSHING_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The CPUs this process may run on (its affinity), read once.
fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |cpus| cpus.get()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still
    // consistent (each update is a single assignment).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start() -> Result<Writer, ()> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            stop: false,
        }),
        work: Condvar::new(),
    });
    // `coraft-1-0-1` (a shard's executor) gets `walw-1-0-1`: short enough
    // for the kernel's 15 bytes, and apart from the executors in profiles.
    let executor = std::thread::current().name().unwrap_or("").to_string();
    let name = format!("walw{}", executor.strip_prefix("coraft").unwrap_or(""));
    let name: String = name.chars().take(15).collect();
    let thread_shared = shared.clone();
    match std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&thread_shared))
    {
        Ok(thread) => Ok(Writer {
            shared,
            thread: Some(thread),
        }),
        // No thread (the process is out of them): flushes stay on io_uring,
        // as they were before this thread existed.
        Err(_) => Err(()),
    }
}

fn run(shared: &Shared) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.stop {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let outcome = write(&job);
        let waker = {
            let mut state = lock(&job.state);
            state.outcome = Some(outcome);
            state.ended = true;
            state.waker.take()
        };
        job.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// One `pwrite` of the job's bytes (a short count is the caller's to retry,
/// as with io_uring).
fn write(job: &Job) -> io::Result<usize> {
    loop {
        // SAFETY: the job's buffer and descriptor stay valid until its
        // outcome is set ([`DsyncWrite`]'s drop waits for that).
        let written = unsafe {
            libc::pwrite(
                job.fd,
                job.ptr as *const libc::c_void,
                job.len,
                job.offset as libc::off_t,
            )
        };
        if written >= 0 {
            return Ok(written as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A write in flight on the thread; resolves to the `pwrite`'s outcome.
pub(crate) struct DsyncWrite<K> {
    job: Arc<Job>,
    /// What keeps the buffer (and the file) alive until the job is done.
    _keep: K,
}

impl<K> Future for DsyncWrite<K> {
    type Output = io::Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.job.state);
        if let Some(outcome) = state.outcome.take() {
            return Poll::Ready(outcome);
        }
        if !state.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<K> Drop for DsyncWrite<K> {
    fn drop(&mut self) {
        let mut state = lock(&self.job.state);
        while !state.ended {
            state = self
                .job
                .done
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        // The thread may still hold the waker it took: it only wakes it.
        state.waker = None;
    }
}

/// Hands `len` bytes at `ptr` to this executor thread's writer, to be
/// written at `offset` of `fd`; `keep` must keep the bytes and the file
/// open (it is dropped only once the write ended). `None` (and `keep`
/// dropped) when the writer would have no CPU of its own (see
/// [`FLUSHING_THREADS`]), when it could not start, or when its queue is
/// full: write through io_uring then.
///
/// # Safety
///
/// `ptr..ptr + len` must be valid for reads for as long as `keep` lives,
/// and `fd` open that long.
pub(crate) unsafe fn submit<K>(fd: RawFd, ptr: *const u8, len: usize, offset: u64, keep: K) -> Option<DsyncWrite<K>> {
    if FLUSHING.with(Flushing::count) >= cpus() {
        return None;
    }
    // SAFETY: the caller's promise.
    unsafe { submit_to_writer(fd, ptr, len, offset, keep) }
}

/// [`submit`] without the CPU check.
///
/// # Safety
///
/// As [`submit`].
unsafe fn submit_to_writer<K>(fd: RawFd, ptr: *const u8, len: usize, offset: u64, keep: K) -> Option<DsyncWrite<K>> {
    WRITER.with(|writer| {
        let mut writer = writer.borrow_mut();
        let writer = writer.get_or_insert_with(start).as_ref().ok()?;
        let job = Arc::new(Job {
            fd,
            ptr: ptr as usize,
            len,
            offset,
            state: Mutex::new(JobState::default()),
            done: Condvar::new(),
        });
        {
            let mut queue = lock(&writer.shared.queue);
            if queue.jobs.len() >= DSYNC_WRITER_QUEUE_MAX {
                return None;
            }
            queue.jobs.push_back(job.clone());
        }
        writer.shared.work.notify_one();
        Some(DsyncWrite { job, _keep: keep })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Runs `test` on an executor in a thread named as a shard's is.
    fn on_executor<F: Future<Output = ()>>(test: impl FnOnce() -> F + Send + 'static) {
        std::thread::Builder::new()
            .name("coraft-9-0-1".into())
            .spawn(|| {
                glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .make()
                    .unwrap()
                    .run(test())
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_write_is_made_by_the_writer_thread_and_wakes_its_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        on_executor(move || async move {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let bytes: Rc<Vec<u8>> = Rc::new((0..8192u32).map(|i| i as u8).collect());
            // SAFETY: `bytes` and `file` outlive the write (held by it and here).
            let write = unsafe { submit_to_writer(file.as_raw_fd(), bytes.as_ptr(), bytes.len(), 4096, bytes.clone()) }
                .unwrap();
            assert_eq!(write.await.unwrap(), 8192);
            let read = std::fs::read(&path).unwrap();
            assert_eq!(read.len(), 4096 + 8192);
            assert_eq!(&read[4096..], &bytes[..]);
            // The thread is this executor's, named after it.
            assert!(
                thread_names().iter().any(|name| name == "walw-9-0-1"),
                "{:?}",
                thread_names()
            );
        });
    }

    #[test]
    fn an_error_is_the_writes_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        on_executor(move || async move {
            let bytes = vec![0u8; 4096];
            // A descriptor open for reading only: EBADF.
            let file = std::fs::File::open(path).unwrap();
            // SAFETY: as above.
            let write = unsafe { submit_to_writer(file.as_raw_fd(), bytes.as_ptr(), bytes.len(), 0, ()) }.unwrap();
            let error = write.await.unwrap_err();
            assert_eq!(error.raw_os_error(), Some(libc::EBADF));
        });
    }

    #[test]
    fn a_dropped_write_waits_for_the_thread_before_its_buffer_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        on_executor(move || async move {
            let file = std::fs::File::create(path).unwrap();
            for _ in 0..200 {
                let bytes = Rc::new(vec![7u8; 65536]);
                let kept = Rc::downgrade(&bytes);
                // SAFETY: as above.
                let write =
                    unsafe { submit_to_writer(file.as_raw_fd(), bytes.as_ptr(), bytes.len(), 0, bytes) }.unwrap();
                let job = write.job.clone();
                drop(write);
                // The drop returned only once the thread had written: the
                // buffer is gone, and the job has its outcome.
                assert!(kept.upgrade().is_none());
                assert!(lock(&job.state).ended);
            }
        });
    }

    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    use std::rc::Rc;
}
