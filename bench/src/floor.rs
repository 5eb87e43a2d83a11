//! The replication floor: what this machine's disk, loopback and cores allow
//! for a replicated durable write when nothing but the physical work is done.
//!
//! Three "nodes" in one process, built from blocking threads and nothing
//! else: no Raft, no executor, no frame schema. Closed-loop drivers send
//! 8-byte ids with their payload over TCP to the leader; the leader appends a
//! 64-byte record per write to its own log and sends the records to two
//! followers over TCP; every node's flusher group-commits its log (one
//! O_DIRECT `pwrite` of everything appended since its last flush, then
//! `fdatasync`, the partial last block rewritten by the next flush, like the
//! WAL); a follower acknowledges the count it has made durable; a write is
//! answered once two of the three logs hold it (the leader's and one
//! follower's, or both followers'). The logs write into blocks zeroed before
//! the clock starts (a region reused in a circle), so no fdatasync converts
//! an unwritten extent: the cheapest case the disk has.
//!
//! With one node (`nodes: 1`, for `coraft-bench --nodes 1`) it is a single
//! bare group-committing log: the leader answers a write once its own log
//! holds it, and there are no followers.
//!
//! It is a floor in the sense of the other subcommands' raw sides: an
//! optimistic bound for the same closed loop (the same clients, payload and
//! drivers), not an implementation of anything. The cluster benchmark runs
//! it in the same run and reports its own figures against it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

/// Bytes of a log record's header (the id, the payload's length, the rest
/// zeros: about what a WAL entry record's header and session take).
const RECORD_HEADER_BYTES: usize = 48;
/// Largest payload the floor takes.
pub const FLOOR_PAYLOAD_MAX: usize = 64 << 10;
/// Bytes of a request on the wire: the id and the payload's bytes.
const REQUEST_HEADER_BYTES: usize = 8;
/// Bytes of the zeroed region each log writes into, in a circle.
const LOG_REGION_BYTES: u64 = 32 << 20;
/// The most bytes one flush takes; appends beyond it wait for the next.
const FLUSH_BYTES_MAX: usize = 4 << 20;
/// Bytes one read from a socket takes at most.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Most record bytes the floor's clients may have in flight (one record per
/// client): they must fit the sockets' buffers, or its blocking threads
/// could wait on each other.
pub const FLOOR_INFLIGHT_BYTES_MAX: usize = 1 << 20;

/// Bytes of the floor's log record for a payload: the header and the
/// payload rounded up to 8 bytes.
fn record_bytes(payload: usize) -> usize {
    RECORD_HEADER_BYTES + payload.div_ceil(8) * 8
}

/// The node counts the floor models: a single log, or three replicating.
pub const FLOOR_NODES: [usize; 2] = [1, 3];

/// Why the floor cannot run this workload, if it cannot.
pub fn refusal(nodes: usize, clients: usize, payload: usize) -> Option<String> {
    if !FLOOR_NODES.contains(&nodes) {
        return Some(format!("the replication floor models 1 or 3 nodes (asked {nodes})"));
    }
    if payload > FLOOR_PAYLOAD_MAX {
        return Some(format!(
            "the replication floor takes payloads of at most {FLOOR_PAYLOAD_MAX} bytes (asked {payload})"
        ));
    }
    if clients == 0 || clients.saturating_mul(record_bytes(payload)) > FLOOR_INFLIGHT_BYTES_MAX {
        return Some(format!(
            "the replication floor takes 1 to {} clients of {payload}-byte payloads \
             (FLOOR_INFLIGHT_BYTES_MAX; asked {clients})",
            FLOOR_INFLIGHT_BYTES_MAX / record_bytes(payload)
        ));
    }
    None
}
/// A driver waiting longer than this for an answer gives up (the floor is stuck).
const DRIVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Block size of the O_DIRECT writes.
const BLOCK: usize = 4096;

/// What the floor measured.
pub struct Floor {
    pub ops_per_s: f64,
    pub latency_us: Histogram<u64>,
    pub cpu_us_per_op: f64,
    /// Each flush's `pwrite` + `fdatasync`, over the three logs and the whole run.
    pub flush_us: Histogram<u64>,
}

pub struct FloorOptions {
    /// 3 logs replicating, or 1 alone ([`FLOOR_NODES`]).
    pub nodes: usize,
    pub clients: usize,
    pub payload: usize,
    pub drivers: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// A 4096-aligned buffer for O_DIRECT writes.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn zeroed(bytes: usize) -> Result<Aligned> {
        let layout = std::alloc::Layout::from_size_align(bytes, BLOCK).context("an aligned layout")?;
        // SAFETY: the layout is non-zero sized.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("allocating {bytes} aligned bytes");
        }
        Ok(Aligned { ptr, layout })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr holds layout.size() bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: the buffer is owned by one thread at a time.
unsafe impl Send for Aligned {}

/// Records appended and not yet flushed, shared by a node's appender and its flusher.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    records: u64,
    closed: bool,
}

struct LogShared {
    pending: Mutex<Pending>,
    ready: Condvar,
    record_bytes: usize,
}

impl LogShared {
    fn new(record_bytes: usize) -> Arc<LogShared> {
        Arc::new(LogShared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            record_bytes,
        })
    }

    /// Appends records; waits while a full flush's worth is already waiting.
    fn append(&self, bytes: &[u8]) -> Result<()> {
        let mut pending = self.pending.lock().map_err(|_| anyhow!("a log lock was poisoned"))?;
        while pending.bytes.len() + bytes.len() > FLUSH_BYTES_MAX && !pending.closed {
            pending = self
                .ready
                .wait(pending)
                .map_err(|_| anyhow!("a log lock was poisoned"))?;
        }
        if pending.closed {
            // Shutting down: what still arrives is not flushed (appending
            // it past FLUSH_BYTES_MAX overran the flusher's buffer, a panic
            // seen at the end of a 4 KiB run).
            return Ok(());
        }
        pending.bytes.extend_from_slice(bytes);
        pending.records += (bytes.len() / self.record_bytes) as u64;
        self.ready.notify_all();
        Ok(())
    }

    fn close(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.closed = true;
        }
        self.ready.notify_all();
    }
}

/// A node's log file: a zeroed region written in a circle, group-committed.
fn open_log(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut zeros = Aligned::zeroed(1 << 20)?;
    let chunk = zeros.as_mut();
    for offset in (0..LOG_REGION_BYTES).step_by(chunk.len()) {
        pwrite_all(&file, chunk, offset).with_context(|| format!("zeroing {}", path.display()))?;
    }
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("fdatasync of {}", path.display()));
    }
    Ok(file)
}

fn pwrite_all(file: &std::fs::File, bytes: &[u8], offset: u64) -> Result<()> {
    // SAFETY: bytes is a valid buffer of its length; O_DIRECT alignment is the caller's.
    let written = unsafe { libc::pwrite(file.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), offset as i64) };
    if written != bytes.len() as isize {
        return Err(std::io::Error::last_os_error()).context("a floor log pwrite");
    }
    Ok(())
}

/// The flusher: everything appended since the last flush, one `pwrite`, one
/// `fdatasync`; then `durable(total records durable)`.
fn flusher(
    file: std::fs::File,
    shared: Arc<LogShared>,
    flushes: Arc<Mutex<Histogram<u64>>>,
    mut durable: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut buffer = Aligned::zeroed(FLUSH_BYTES_MAX + 2 * BLOCK)?;
    let mut carry = 0usize; // bytes of the partial last block at the start of `buffer`
    let mut offset = 0u64; // where `buffer` goes in the file
    let mut total = 0u64;
    loop {
        let (bytes, records) = {
            let mut pending = shared.pending.lock().map_err(|_| anyhow!("a log lock was poisoned"))?;
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .ready
                    .wait(pending)
                    .map_err(|_| anyhow!("a log lock was poisoned"))?;
            }
            if pending.bytes.is_empty() {
                return Ok(());
            }
            let taken = (std::mem::take(&mut pending.bytes), pending.records);
            pending.records = 0;
            shared.ready.notify_all();
            taken
        };
        if offset + (carry + bytes.len() + BLOCK) as u64 > LOG_REGION_BYTES {
            offset = 0;
            carry = 0;
        }
        let data = buffer.as_mut();
        data[carry..carry + bytes.len()].copy_from_slice(&bytes);
        let end = carry + bytes.len();
        let padded = end.div_ceil(BLOCK) * BLOCK;
        data[end..padded].fill(0);
        let started = Instant::now();
        pwrite_all(&file, &data[..padded], offset)?;
        // SAFETY: a valid open file descriptor.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("a floor log fdatasync");
        }
        if let Ok(mut flushes) = flushes.lock() {
            flushes.record(started.elapsed().as_micros().max(1) as u64).ok();
        }
        total += records;
        durable(total)?;
        let full = end / BLOCK * BLOCK;
        data.copy_within(full..end, 0);
        carry = end - full;
        offset += full as u64;
    }
}

/// The leader's view: what each log holds durable, and the writes in log
/// order with the driver that sent each.
struct Leader {
    /// Per log (the leader's first).
    durable: Vec<u64>,
    answered: u64,
    /// (driver, id) of every write appended and not answered, oldest first.
    waiting: VecDeque<(usize, u64)>,
    replies: Vec<TcpStream>,
    scratch: Vec<Vec<u8>>,
}

impl Leader {
    /// Answers every write that a majority of the logs hold (two of three,
    /// or the one).
    fn advance(&mut self, log: usize, durable: u64) -> Result<()> {
        self.durable[log] = self.durable[log].max(durable);
        let mut sorted = [0u64; 3];
        let sorted = &mut sorted[..self.durable.len()];
        sorted.copy_from_slice(&self.durable);
        sorted.sort_unstable();
        let committed = sorted[(sorted.len() - 1) / 2];
        while self.answered < committed {
            let Some((driver, id)) = self.waiting.pop_front() else {
                break;
            };
            self.scratch[driver].extend_from_slice(&id.to_le_bytes());
            self.answered += 1;
        }
        for (driver, bytes) in self.scratch.iter_mut().enumerate() {
            if !bytes.is_empty() {
                self.replies[driver]
                    .write_all(bytes)
                    .context("answering a floor driver")?;
                bytes.clear();
            }
        }
        Ok(())
    }
}

fn lock(leader: &Mutex<Leader>) -> Result<std::sync::MutexGuard<'_, Leader>> {
    leader
        .lock()
        .map_err(|_| anyhow!("the floor leader's lock was poisoned"))
}

fn connected_pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a floor listener")?;
    let client = TcpStream::connect(listener.local_addr()?).context("connecting a floor socket")?;
    let (server, _) = listener.accept().context("accepting a floor socket")?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Reads whole units of `unit` bytes into `buffer` (keeping a partial tail
/// for the next call); `Ok(None)` at end of stream.
fn read_units<'a>(
    stream: &mut TcpStream,
    buffer: &'a mut Vec<u8>,
    kept: &mut usize,
    unit: usize,
) -> Result<Option<(&'a [u8], usize)>> {
    if buffer.len() < READ_BUFFER_BYTES {
        buffer.resize(READ_BUFFER_BYTES, 0);
    }
    let read = match stream.read(&mut buffer[*kept..]) {
        Ok(0) => return Ok(None),
        Ok(read) => read,
        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => 0,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(error) => return Err(error).context("a floor socket read"),
    };
    let available = *kept + read;
    let whole = available / unit * unit;
    Ok(Some((&buffer[..whole], available - whole)))
}

/// Moves the partial tail (`tail` bytes after `whole`) to the front.
fn keep_tail(buffer: &mut [u8], whole: usize, tail: usize, kept: &mut usize) {
    buffer.copy_within(whole..whole + tail, 0);
    *kept = tail;
}

pub fn run_floor(dir: &Path, options: &FloorOptions) -> Result<Floor> {
    if let Some(refusal) = refusal(options.nodes, options.clients, options.payload) {
        bail!(refusal);
    }
    if options.drivers == 0 {
        bail!("the replication floor needs at least one driver");
    }
    let request_bytes = REQUEST_HEADER_BYTES + options.payload;
    let record_bytes = record_bytes(options.payload);
    let nodes = options.nodes;
    let files = (0..nodes)
        .map(|node| open_log(&dir.join(format!("floor-log-{node}"))))
        .collect::<Result<Vec<_>>>()?;
    let logs: Vec<Arc<LogShared>> = (0..nodes).map(|_| LogShared::new(record_bytes)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<JoinHandle<Result<()>>> = Vec::new();

    // Leader to follower links: the leader writes records, the follower acknowledges counts.
    let mut to_followers = Vec::new();
    let mut acks = Vec::new();
    let mut follower_ends = Vec::new();
    for _ in 1..nodes {
        let (leader_end, follower_end) = connected_pair()?;
        acks.push(leader_end.try_clone()?);
        to_followers.push(leader_end);
        follower_ends.push(follower_end);
    }
    // Driver to leader links.
    let mut driver_ends = Vec::new();
    let mut leader_ingress = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..options.drivers {
        let (driver_end, leader_end) = connected_pair()?;
        replies.push(leader_end.try_clone()?);
        leader_ingress.push(leader_end);
        driver_ends.push(driver_end);
    }
    let leader = Arc::new(Mutex::new(Leader {
        durable: vec![0; nodes],
        answered: 0,
        waiting: VecDeque::new(),
        scratch: vec![Vec::new(); options.drivers],
        replies,
    }));

    let mut files = files.into_iter();
    // Every flush's write + fdatasync, all three logs, the whole run.
    let all_flushes = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    ));
    // The leader's flusher (log 0).
    {
        let flushes = all_flushes.clone();
        let file = files.next().expect("the leader's log");
        let shared = logs[0].clone();
        let leader = leader.clone();
        threads.push(std::thread::spawn(move || {
            flusher(file, shared, flushes, |total| lock(&leader)?.advance(0, total))
        }));
    }
    // Followers (logs 1 and 2 of 3): a reader appending what arrives, a flusher acknowledging.
    for (follower, stream) in follower_ends.into_iter().enumerate() {
        let log = follower + 1;
        let file = files.next().expect("a follower's log");
        let shared = logs[log].clone();
        let flushes = all_flushes.clone();
        let mut ack = stream.try_clone()?;
        threads.push(std::thread::spawn(move || {
            flusher(file, shared, flushes, |total| {
                ack.write_all(&total.to_le_bytes())
                    .context("a floor follower's acknowledgement")
            })
        }));
        let shared = logs[log].clone();
        let mut stream = stream;
        threads.push(std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut kept = 0;
            let result = loop {
                match read_units(&mut stream, &mut buffer, &mut kept, record_bytes) {
                    Ok(Some((records, tail))) => {
                        let whole = records.len();
                        if let Err(error) = shared.append(records) {
                            break Err(error);
                        }
                        keep_tail(&mut buffer, whole, tail, &mut kept);
                    }
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            shared.close();
            result
        }));
    }
    // The leader's acknowledgement readers, one per follower.
    for (follower, mut stream) in acks.into_iter().enumerate() {
        let leader = leader.clone();
        threads.push(std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut kept = 0;
            while let Some((counts, tail)) = read_units(&mut stream, &mut buffer, &mut kept, 8)? {
                let whole = counts.len();
                if let Some(last) = counts.chunks_exact(8).last() {
                    let total = u64::from_le_bytes(last.try_into().expect("8 bytes"));
                    lock(&leader)?.advance(follower + 1, total)?;
                }
                keep_tail(&mut buffer, whole, tail, &mut kept);
            }
            Ok(())
        }));
    }
    // The leader's ingress, one per driver: append, then send to both followers.
    let to_followers = Arc::new(Mutex::new(to_followers));
    for (driver, mut stream) in leader_ingress.into_iter().enumerate() {
        let leader = leader.clone();
        let shared = logs[0].clone();
        let to_followers = to_followers.clone();
        threads.push(std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut kept = 0;
            let mut records = Vec::new();
            while let Some((requests, tail)) = read_units(&mut stream, &mut buffer, &mut kept, request_bytes)? {
                let whole = requests.len();
                records.clear();
                let mut ids = Vec::with_capacity(requests.len() / request_bytes);
                for request in requests.chunks_exact(request_bytes) {
                    let id = u64::from_le_bytes(request[..8].try_into().expect("8 bytes"));
                    let start = records.len();
                    records.resize(start + record_bytes, 0);
                    let record = &mut records[start..];
                    record[..8].copy_from_slice(&id.to_le_bytes());
                    record[8..16].copy_from_slice(&(request.len() as u64 - 8).to_le_bytes());
                    record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + request.len() - 8].copy_from_slice(&request[8..]);
                    ids.push((driver, id));
                }
                keep_tail(&mut buffer, whole, tail, &mut kept);
                // One order for the leader's log, the waiting list and the followers' logs.
                let mut links = to_followers.lock().map_err(|_| anyhow!("a floor lock was poisoned"))?;
                lock(&leader)?.waiting.extend(ids);
                shared.append(&records)?;
                for link in links.iter_mut() {
                    link.write_all(&records)
                        .context("sending records to a floor follower")?;
                }
            }
            Ok(())
        }));
    }

    // Drivers: closed loops of `clients` writes in all, measured after the warm-up.
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let measure_until = measure_from + options.duration;
    let mut drivers = Vec::new();
    for (driver, mut stream) in driver_ends.into_iter().enumerate() {
        let clients = options.clients / options.drivers + usize::from(driver < options.clients % options.drivers);
        let payload = options.payload;
        let stop = stop.clone();
        stream.set_read_timeout(Some(DRIVER_READ_TIMEOUT))?;
        drivers.push(std::thread::spawn(move || -> Result<(Histogram<u64>, u64)> {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut sent_at = vec![Instant::now(); clients];
            // The id each slot waits for: its number in the low 32 bits and
            // how many writes it sent before in the high ones; `None` once
            // it stopped. An answer with any other id is a floor bug (a
            // write answered twice, or one never sent).
            let mut waiting: Vec<Option<u64>> = (0..clients as u64).map(Some).collect();
            let mut out = Vec::with_capacity(clients * (8 + payload));
            let request = |out: &mut Vec<u8>, id: u64| {
                out.extend_from_slice(&id.to_le_bytes());
                out.resize(out.len() + payload, 0xAB);
            };
            for id in 0..clients as u64 {
                request(&mut out, id);
            }
            stream.write_all(&out).context("a floor driver's first requests")?;
            let mut buffer = Vec::new();
            let mut kept = 0;
            let mut done = 0u64;
            let mut outstanding = clients;
            while outstanding > 0 {
                let Some((replies, tail)) = read_units(&mut stream, &mut buffer, &mut kept, 8)? else {
                    bail!("the floor leader closed a driver's connection");
                };
                let whole = replies.len();
                let now = Instant::now();
                let stopping = now >= measure_until || stop.load(Ordering::Relaxed);
                out.clear();
                for reply in replies.chunks_exact(8) {
                    let id = u64::from_le_bytes(reply.try_into().expect("8 bytes"));
                    let slot = (id & u64::from(u32::MAX)) as usize;
                    let (Some(at), Some(&Some(expected))) = (sent_at.get_mut(slot), waiting.get(slot)) else {
                        bail!("the floor leader answered id {id:#x}, which no client waits for");
                    };
                    if id != expected {
                        bail!("the floor leader answered id {id:#x} where {expected:#x} waits");
                    }
                    if *at >= measure_from && now <= measure_until {
                        histogram.record((now - *at).as_micros().max(1) as u64).ok();
                        done += 1;
                    }
                    if stopping {
                        outstanding -= 1;
                        waiting[slot] = None;
                    } else {
                        *at = now;
                        let next = id + (1 << 32);
                        waiting[slot] = Some(next);
                        request(&mut out, next);
                    }
                }
                keep_tail(&mut buffer, whole, tail, &mut kept);
                if !out.is_empty() {
                    stream.write_all(&out).context("a floor driver's requests")?;
                }
            }
            let _ = stream.shutdown(Shutdown::Both);
            Ok((histogram, done))
        }));
    }
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let cpu_before = super::cluster::process_cpu();
    std::thread::sleep(measure_until.saturating_duration_since(Instant::now()));
    let cpu = super::cluster::process_cpu().saturating_sub(cpu_before);
    stop.store(true, Ordering::Relaxed);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut ops = 0u64;
    let mut failure = None;
    for driver in drivers {
        match driver.join() {
            Ok(Ok((h, done))) => {
                histogram.add(&h).ok();
                ops += done;
            }
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(_) => failure = failure.or(Some(anyhow!("a floor driver panicked"))),
        }
    }
    // Unblock and join everything else: close the sockets, close the logs.
    if let Ok(links) = to_followers.lock() {
        for link in links.iter() {
            let _ = link.shutdown(Shutdown::Both);
        }
    }
    if let Ok(leader) = leader.lock() {
        for reply in &leader.replies {
            let _ = reply.shutdown(Shutdown::Both);
        }
    }
    for log in &logs {
        log.close();
    }
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            // Errors after the drivers stopped are the shutdown's own (a
            // peer's socket closed under a write).
            Ok(Err(error)) if failure.is_none() && !stop.load(Ordering::Relaxed) => failure = Some(error),
            Ok(Err(_)) => {}
            Err(_) => failure = failure.or(Some(anyhow!("a floor thread panicked"))),
        }
    }
    for node in 0..nodes {
        let _ = std::fs::remove_file(dir.join(format!("floor-log-{node}")));
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let flush_us = all_flushes
        .lock()
        .map_err(|_| anyhow!("the floor's flush histogram lock was poisoned"))?
        .clone();
    let seconds = options.duration.as_secs_f64();
    Ok(Floor {
        ops_per_s: ops as f64 / seconds,
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops.max(1) as f64,
        latency_us: histogram,
        flush_us,
    })
}

/// `coraft-bench floor`: the replication floor alone.
#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    /// Logs: 3 replicating, or 1 alone (a single group-committing log).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = floor_nodes)]
    pub nodes: usize,
    /// Closed-loop clients, each with one write outstanding.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = crate::args::at_least_one)]
    pub clients: usize,
    /// Bytes of each write.
    #[arg(long, default_value_t = 16, value_name = "BYTES", value_parser = crate::args::payload_bytes)]
    pub payload: usize,
    /// Threads driving the clients (at most one per client).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = crate::args::at_least_one)]
    pub drivers: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub duration: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1, value_name = "S", value_parser = crate::args::seconds)]
    pub warmup: u64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn floor_nodes(value: &str) -> Result<usize, String> {
    let nodes: usize = value.parse().map_err(|e| format!("{e}"))?;
    if FLOOR_NODES.contains(&nodes) {
        Ok(nodes)
    } else {
        Err(format!("the floor models 1 or 3 nodes, not {nodes}"))
    }
}

/// Runs `coraft-bench floor`.
pub fn run(args: FloorArgs) -> Result<()> {
    let options = FloorOptions {
        nodes: args.nodes,
        clients: args.clients,
        payload: args.payload,
        drivers: args.drivers.min(args.clients),
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
    };
    let json = args.json;
    let dir = tempfile::tempdir().context("creating the floor's temp dir")?;
    let floor = run_floor(dir.path(), &options)?;
    let q = |quantile: f64| floor.latency_us.value_at_quantile(quantile);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "system": "replication-floor",
                "nodes": options.nodes,
                "clients": options.clients,
                "payload": options.payload,
                "duration_s": options.duration.as_secs(),
                "ops_per_s": floor.ops_per_s.round(),
                "p50_us": q(0.5),
                "p99_us": q(0.99),
                "p999_us": q(0.999),
                "cpu_us_per_op": (floor.cpu_us_per_op * 100.0).round() / 100.0,
                "flush_p50_us": floor.flush_us.value_at_quantile(0.5),
                "flush_p99_us": floor.flush_us.value_at_quantile(0.99),
            })
        );
    } else {
        println!(
            "replication floor: {} log(s) (pwrite + fdatasync group commit), loopback TCP, blocking threads, no Raft",
            options.nodes
        );
        println!(
            "  clients {}  payload {} B  drivers {}  duration {} s",
            options.clients,
            options.payload,
            options.drivers,
            options.duration.as_secs()
        );
        println!("  writes/s        {:>12.0}", floor.ops_per_s);
        println!("  latency p50     {:>9} µs", q(0.5));
        println!("  latency p99     {:>9} µs", q(0.99));
        println!("  latency p99.9   {:>9} µs", q(0.999));
        println!("  CPU per write   {:>9.2} µs", floor.cpu_us_per_op);
        println!(
            "  flush p50/p99   {:>5}/{} µs (pwrite + fdatasync, all logs)",
            floor.flush_us.value_at_quantile(0.5),
            floor.flush_us.value_at_quantile(0.99)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor runs end to end on real files and sockets: every write is
    /// answered exactly once (the drivers check it) and some were measured.
    #[test]
    fn the_floor_answers_every_write_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let options = FloorOptions {
            nodes: 3,
            clients: 8,
            payload: 16,
            drivers: 2,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
        };
        let floor = run_floor(dir.path(), &options).expect("the floor runs");
        assert!(floor.ops_per_s > 0.0, "no write was answered");
        assert!(!floor.latency_us.is_empty());
        assert!(
            std::fs::read_dir(dir.path()).expect("the dir").next().is_none(),
            "the logs are removed"
        );
    }

    #[test]
    fn bad_floor_options_are_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut options = FloorOptions {
            nodes: 3,
            clients: 1,
            payload: FLOOR_PAYLOAD_MAX + 1,
            drivers: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
        };
        let error = run_floor(dir.path(), &options)
            .err()
            .expect("a payload too large is refused");
        assert!(error.to_string().contains("payloads of at most"), "{error}");
        options.payload = 16;
        options.clients = FLOOR_INFLIGHT_BYTES_MAX / record_bytes(16) + 1;
        assert!(run_floor(dir.path(), &options).is_err());
        options.clients = 1;
        options.nodes = 2;
        let error = run_floor(dir.path(), &options).err().expect("2 nodes are refused");
        assert!(error.to_string().contains("1 or 3 nodes"), "{error}");
    }

    /// With one node the floor is a single log: every write answered once
    /// its own flush holds it, and the log is removed after.
    #[test]
    fn a_one_node_floor_answers_every_write_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let options = FloorOptions {
            nodes: 1,
            clients: 8,
            payload: 16,
            drivers: 2,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
        };
        let floor = run_floor(dir.path(), &options).expect("the floor runs");
        assert!(floor.ops_per_s > 0.0, "no write was answered");
        assert!(
            std::fs::read_dir(dir.path()).expect("the dir").next().is_none(),
            "the log is removed"
        );
    }
}
