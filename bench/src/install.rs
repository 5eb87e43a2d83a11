//! `coraft-bench install`: InstallSnapshot throughput over loopback against
//! a raw TCP stream of the same bytes, measured in the same run.
//!
//! An embedded 3-node cluster (real TCP, real WALs and snapshot stores in a
//! temp dir) runs one group whose state machine holds `--state-mib` MiB of
//! state ([`Blob`]). One follower is stopped, the leader takes a snapshot
//! and compacts its log past what that follower holds, and the follower is
//! started again: it can only catch up by the leader's snapshot stream. The
//! time runs from the restart until the follower's snapshot index reaches
//! the leader's snapshot (polled through `GroupStatus`), while `--writers`
//! closed-loop writers keep the leader serving writes. The pace limit
//! (`SnapshotPolicy::install_bytes_per_second`) is set high by default so
//! that it is not what bounds the stream.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use coraft::api::{Command, PreparedSnapshot, SnapshotLoader, SnapshotView, StateMachine};
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{GroupStatus, Node, NodeOptions, PeerSpec, SnapshotPolicy, StateMachineFactory};
use hdrhistogram::Histogram;

use crate::machine::Machine;

const CLUSTER_ID: u64 = 0xC0_4A_F8;
const GROUP: GroupId = GroupId(1);
/// The blob's unit of copy-on-write: a write copies at most one chunk that
/// a snapshot view or another node still holds. Every node starts from the
/// same chunks, so the first write to each copies it: with 1 MiB chunks the
/// writers during a 1 GiB install made the leader and the other follower
/// copy up to 1 GiB each into fresh memory (6 % of the run's CPU samples,
/// competing with the stream for the 2 cores), a cost of this harness's
/// state machine, not of the engine.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks per MiB of state.
const CHUNKS_PER_MIB: u64 = (1 << 20) / CHUNK_BYTES as u64;
/// The largest `--state-mib` (three nodes hold it in one process).
const STATE_MIB_MAX: u64 = 4096;
/// Bytes of each write's payload (after its 8-byte offset).
const WRITE_PAYLOAD_BYTES: usize = 64;
/// Writes every node holds before the follower stops.
const WRITES_BEFORE_STOP: u64 = 100;
/// Writes the follower misses: more than the leader's log tail, so only a
/// snapshot can catch it up.
const WRITES_MISSED: u64 = 200;
/// Bytes of each missed write's payload: 200 of them (12.5 MiB) do not fit
/// in the leader's outbound queue to the stopped follower (4 MiB), whose
/// AppendEntries wait there and are delivered when it comes back; with
/// small writes they can catch the follower up without a snapshot, and
/// the run never ends (seen in 3 of 48 runs before).
const MISSED_PAYLOAD_BYTES: usize = 64 << 10;
/// Entries the leader keeps below its snapshot.
const LOG_TAIL_ENTRIES: u64 = 16;
/// The largest number of `--writers`.
const WRITERS_MAX: usize = 64;
/// How often the follower's status is polled while it installs.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Bytes of each write of the raw TCP and disk floors.
const RAW_WRITE_BYTES: usize = 128 << 10;
/// Runs of the raw TCP floor; the best counts (the machine may be shared).
const RAW_TCP_RUNS: usize = 3;
/// Bytes of each direct write of the raw TCP into a file floor (as the
/// engine's receive path, `DIRECT_WRITE_BYTES`).
const RAW_DIRECT_WRITE_BYTES: usize = 2 << 20;
/// Alignment of a direct write's buffer, offset and length.
const RAW_DIRECT_ALIGN_BYTES: usize = 4096;
/// How often the leader's role is checked while the follower installs: a
/// leader change ends the run (the new leader, which took no snapshot,
/// catches the follower up from its log, so no stream would be measured).
const LEADER_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `coraft-bench install`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// MiB of state the state machine holds (the snapshot's size), 1 to 4096.
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = state_mib)]
    pub state_mib: u64,
    /// The leader's InstallSnapshot pace limit in bytes per second
    /// [default: 4 GiB/s, so that the limiter is not the bound].
    #[arg(long, default_value_t = 4 << 30, value_name = "BYTES", value_parser = crate::args::at_least_one_u64)]
    pub install_bytes_per_second: u64,
    /// Closed-loop writers on the leader while the follower installs
    /// (0: no write load), at most 64.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = writers)]
    pub writers: usize,
    /// Seconds the follower gets to install before the run fails
    /// [default: 120 plus one per 4 MiB of state].
    #[arg(long, value_name = "S", value_parser = crate::args::seconds_at_least_one)]
    pub timeout: Option<u64>,
    /// Where the blob's loader decodes the snapshot into: memory the
    /// blob keeps for it (`kept`, double buffering) or fresh memory
    /// (`fresh`).
    #[arg(long, value_enum, default_value_t = LoaderMemory::Kept, value_name = "MEMORY")]
    pub loader: LoaderMemory,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn state_mib(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(mib) if (1..=STATE_MIB_MAX).contains(&mib) => Ok(mib),
        _ => Err(format!(
            "expected MiB of state from 1 to {STATE_MIB_MAX} (STATE_MIB_MAX)"
        )),
    }
}

fn writers(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n <= WRITERS_MAX => Ok(n),
        _ => Err(format!(
            "expected a number of writers from 0 to {WRITERS_MAX} (WRITERS_MAX)"
        )),
    }
}

/// Where the blob's loader decodes a snapshot into (`--loader`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderMemory {
    /// Memory the blob keeps for it: a second allocation of the state's
    /// size, touched when the node starts (so inside the restart's time,
    /// not the stream's), and after each swap the old state's chunks that
    /// nothing else holds. Double buffering, as a store that loads into
    /// its own structures does.
    Kept,
    /// Fresh memory, allocated chunk by chunk as the snapshot arrives
    /// (the blob's loader before this option): on this VM a host fault per
    /// first touch of each page.
    Fresh,
}

impl LoaderMemory {
    fn name(self) -> &'static str {
        match self {
            LoaderMemory::Kept => "kept",
            LoaderMemory::Fresh => "fresh",
        }
    }
}

/// When each of a node's blob loaders prepared, for the report: the
/// loader's own time, apart from the engine's stream.
#[derive(Default)]
struct LoadTimes {
    /// (started, ended, succeeded) of each `BlobLoader::read`.
    loads: std::sync::Mutex<Vec<(Instant, Instant, bool)>>,
}

impl LoadTimes {
    /// The last load that succeeded.
    fn last_ok(&self) -> Option<(Instant, Instant)> {
        let loads = self.loads.lock().expect("not poisoned");
        loads.iter().rev().find(|l| l.2).map(|l| (l.0, l.1))
    }
}

/// A state machine holding a blob of bytes in 64 KiB chunks shared
/// copy-on-write: every node starts from the same blob (so no writes are
/// needed to fill it), a write copies bytes into it at the offset it names,
/// and a snapshot view is a clone of the chunk list, written off the
/// shard's loop while writes go on.
struct Blob {
    chunks: Vec<Arc<Vec<u8>>>,
    applied: u64,
    /// Chunks the next loader decodes into (`LoaderMemory::Kept`; empty
    /// with `Fresh`). A loader takes them all; one that is dropped unused
    /// (its stream abandoned) takes them with it, and the next allocates.
    spare: Vec<Vec<u8>>,
    memory: LoaderMemory,
    loads: Arc<LoadTimes>,
}

impl Blob {
    /// Each chunk's bytes are its index, so a loaded snapshot can be checked.
    fn initial(mib: u64) -> Vec<Arc<Vec<u8>>> {
        (0..mib * CHUNKS_PER_MIB)
            .map(|i| Arc::new(vec![i as u8; CHUNK_BYTES]))
            .collect()
    }

    /// A node's blob: `initial`'s chunks, shared, and with `Kept` a spare
    /// of as many chunks, every page written once (a zeroed allocation
    /// would be faulted in by the first load instead).
    fn new(initial: &[Arc<Vec<u8>>], memory: LoaderMemory, loads: Arc<LoadTimes>) -> Blob {
        let spare = match memory {
            LoaderMemory::Kept => (0..initial.len()).map(|_| vec![0xA5u8; CHUNK_BYTES]).collect(),
            LoaderMemory::Fresh => Vec::new(),
        };
        Blob {
            chunks: initial.to_vec(),
            applied: 0,
            spare,
            memory,
            loads,
        }
    }

    fn loader(&mut self) -> BlobLoader {
        BlobLoader {
            chunks_expected: self.chunks.len(),
            spare: std::mem::take(&mut self.spare),
            loads: self.loads.clone(),
        }
    }

    /// Swaps `loaded` in; with `Kept`, the old chunks nothing else holds
    /// become the next loader's memory.
    fn swap_in(&mut self, loaded: Loaded) {
        let old = std::mem::replace(&mut self.chunks, loaded.chunks);
        self.applied = loaded.applied;
        if self.memory == LoaderMemory::Kept {
            self.spare
                .extend(old.into_iter().filter_map(|chunk| Arc::try_unwrap(chunk).ok()));
            self.spare.truncate(self.chunks.len());
        }
    }
}

impl StateMachine for Blob {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|command| {
                self.applied += 1;
                if command.data.len() > 8 && command.data.len() - 8 <= CHUNK_BYTES {
                    let offset = u64::from_le_bytes(command.data[..8].try_into().expect("8 bytes"));
                    let payload = &command.data[8..];
                    let chunk = (offset / CHUNK_BYTES as u64) as usize % self.chunks.len();
                    let at = (offset as usize % CHUNK_BYTES).min(CHUNK_BYTES - payload.len());
                    Arc::make_mut(&mut self.chunks[chunk])[at..at + payload.len()].copy_from_slice(payload);
                }
                self.applied.to_le_bytes().to_vec()
            })
            .collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        write_blob(self.applied, &self.chunks, writer)
    }

    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        Some(Box::new(BlobView {
            applied: self.applied,
            chunks: self.chunks.clone(),
        }))
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let loaded = self.loader().read(reader)?;
        self.swap_in(loaded);
        Ok(())
    }

    /// The blob is read and decoded on a blocking thread; only the swap
    /// runs on the shard's.
    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        Some(Box::new(self.loader()))
    }

    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let loaded = prepared
            .downcast::<Loaded>()
            .map_err(|_| std::io::Error::other("a prepared snapshot that is not a blob's"))?;
        self.swap_in(*loaded);
        Ok(())
    }
}

/// A blob's state as a loader decoded it.
struct Loaded {
    chunks: Vec<Arc<Vec<u8>>>,
    applied: u64,
}

/// Reads a blob's snapshot into a new state, off the shard's thread.
struct BlobLoader {
    /// The blob's size in chunks (every node holds the same).
    chunks_expected: usize,
    /// Memory to decode into before allocating (`Blob::spare`).
    spare: Vec<Vec<u8>>,
    loads: Arc<LoadTimes>,
}

impl SnapshotLoader for BlobLoader {
    fn prepare(self: Box<Self>, reader: &mut dyn Read) -> std::io::Result<PreparedSnapshot> {
        Ok(Box::new(self.read(reader)?))
    }
}

impl BlobLoader {
    fn read(mut self, reader: &mut dyn Read) -> std::io::Result<Loaded> {
        let started = Instant::now();
        let loaded = self.decode(reader);
        self.loads
            .loads
            .lock()
            .expect("not poisoned")
            .push((started, Instant::now(), loaded.is_ok()));
        loaded
    }

    fn decode(&mut self, reader: &mut dyn Read) -> std::io::Result<Loaded> {
        let mut applied = [0u8; 8];
        reader.read_exact(&mut applied)?;
        let mut chunks = Vec::with_capacity(self.chunks_expected);
        loop {
            let mut chunk = self.spare.pop().unwrap_or_else(|| vec![0u8; CHUNK_BYTES]);
            let mut filled = 0;
            while filled < CHUNK_BYTES {
                match reader.read(&mut chunk[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            match filled {
                0 => {
                    self.spare.push(chunk);
                    break;
                }
                CHUNK_BYTES => chunks.push(Arc::new(chunk)),
                _ => {
                    return Err(std::io::Error::other(format!(
                        "a blob snapshot ending in a {filled}-byte chunk"
                    )))
                }
            }
        }
        if chunks.len() != self.chunks_expected {
            return Err(std::io::Error::other(format!(
                "a blob snapshot of {} chunks, expected {}",
                chunks.len(),
                self.chunks_expected
            )));
        }
        Ok(Loaded {
            chunks,
            applied: u64::from_le_bytes(applied),
        })
    }
}

fn write_blob(applied: u64, chunks: &[Arc<Vec<u8>>], writer: &mut dyn Write) -> std::io::Result<()> {
    writer.write_all(&applied.to_le_bytes())?;
    for chunk in chunks {
        writer.write_all(chunk)?;
    }
    Ok(())
}

struct BlobView {
    applied: u64,
    chunks: Vec<Arc<Vec<u8>>>,
}

impl SnapshotView for BlobView {
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        write_blob(self.applied, &self.chunks, writer)
    }
}

/// What one run measured.
struct Outcome {
    snapshot_index: u64,
    snapshot_save_s: f64,
    bytes_received: u64,
    bytes_sent: u64,
    /// Restart to installed.
    total_s: f64,
    /// First byte received to installed.
    stream_s: f64,
    /// First byte received to the last chunk written (the snapshot durable
    /// in the store: received, checked, written, fsynced, renamed): the
    /// engine's part, polled as `stream_s` is.
    engine_stream_s: f64,
    /// The follower's loader, from its start (the stream's first chunk)
    /// to its state prepared.
    loader_s: Option<f64>,
    /// When the loader was done, after the snapshot was durable (negative:
    /// before).
    loader_after_durable_s: Option<f64>,
    writes: u64,
    write_errors: u64,
    write_latency_us: Histogram<u64>,
    raw_tcp_mb_per_s: f64,
    /// Raw TCP into a durable file, buffered and direct writes (`None`: the
    /// file system refused direct writes).
    raw_tcp_file_buffered_mb_per_s: f64,
    raw_tcp_file_direct_mb_per_s: Option<f64>,
    disk_mb_per_s: f64,
    /// The disk in the engine's direct writes (`None`: refused).
    disk_direct_mb_per_s: Option<f64>,
}

impl Outcome {
    /// The faster way of putting the bytes into a durable file.
    fn raw_tcp_file_mb_per_s(&self) -> f64 {
        self.raw_tcp_file_buffered_mb_per_s
            .max(self.raw_tcp_file_direct_mb_per_s.unwrap_or(0.0))
    }
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

fn status(node: &Node) -> Result<GroupStatus> {
    block(node.group(GROUP).status()).map_err(|e| anyhow!("status of node {}: {e}", node.id()))
}

fn options(root: &std::path::Path, peers: &[PeerSpec], id: NodeId, rate: u64) -> NodeOptions {
    // Snapshots on demand only: the run takes the one it measures.
    let snapshot = SnapshotPolicy {
        after_entries: 0,
        after_log_bytes: 0,
        shard_after_log_bytes: 0,
        interval: Duration::ZERO,
        log_tail_entries: LOG_TAIL_ENTRIES,
        install_bytes_per_second: rate,
    };
    let wal_dir = root.join(format!("node-{id}"));
    embedded_node_options(CLUSTER_ID, id, peers.to_vec(), wal_dir, vec![GROUP], snapshot)
}

/// Options of one node of the harness's own embedded clusters (`install`,
/// `longrun`, `restart`): one unbound shard, a 10 ms tick, ReadIndex reads,
/// the default limits, and the given snapshot policy.
pub(crate) fn embedded_node_options(
    cluster_id: u64,
    node_id: NodeId,
    peers: Vec<PeerSpec>,
    wal_dir: std::path::PathBuf,
    groups: Vec<GroupId>,
    snapshot: SnapshotPolicy,
) -> NodeOptions {
    NodeOptions {
        cluster_id,
        node_id,
        peers,
        shard_cores: vec![None],
        helper_cores: None,
        wal_dir,
        shard_wal_dirs: Vec::new(),
        wal_segment_bytes: coraft_wal::config::SEGMENT_BYTES_DEFAULT,
        wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
        wal_polled_io: false,
        wal_dsync_small_flush_bytes: coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
        groups,
        tick: Duration::from_millis(10),
        election_timeout_ticks: 30,
        heartbeat_interval_ticks: 3,
        read_mode: ReadMode::Safe,
        protocol: Default::default(),
        limits: Default::default(),
        spin_before_park: None,
        metrics_listen: None,
        quiesce_idle_groups: true,
        request_timeout: coraft::runtime::REQUEST_TIMEOUT,
        session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
        snapshot,
    }
}

/// Applies `count` writes of `payload` bytes through node `leader`.
fn write_some(leader: &Node, count: u64, seed: u64, payload: usize) -> Result<()> {
    let handle = leader.group(GROUP);
    for i in 0..count {
        block(handle.apply(write_command(seed.wrapping_add(i), payload)))
            .map_err(|e| anyhow!("a write on the leader (node {}): {e}", leader.id()))?;
    }
    Ok(())
}

fn write_command(n: u64, payload: usize) -> Vec<u8> {
    let offset = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut command = offset.to_le_bytes().to_vec();
    command.extend(std::iter::repeat_n(n as u8, payload));
    command
}

fn leader_of(nodes: &[Option<Node>]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (index, node) in nodes.iter().enumerate() {
            if let Some(node) = node {
                if status(node)?.role == Role::Leader {
                    return Ok(index);
                }
            }
        }
        ensure!(Instant::now() < deadline, "no leader elected within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// MB/s (10^6 bytes) of `bytes` sent over one loopback TCP connection in
/// 128 KiB writes, read on another thread: the floor of the stream.
fn raw_tcp_mb_per_s(bytes: u64) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the raw TCP floor's listener")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; RAW_WRITE_BYTES];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok((total, Instant::now())),
                n => total += n as u64,
            }
        }
    });
    let mut stream = std::net::TcpStream::connect(address).context("connecting to the raw TCP floor")?;
    let buffer = vec![0x5Au8; RAW_WRITE_BYTES];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(RAW_WRITE_BYTES as u64) as usize;
        stream.write_all(&buffer[..n]).context("the raw TCP floor's writes")?;
        left -= n as u64;
    }
    drop(stream);
    let (received, done) = reader
        .join()
        .map_err(|_| anyhow!("the raw TCP floor's reader panicked"))?
        .context("the raw TCP floor's reads")?;
    ensure!(
        received == bytes,
        "the raw TCP floor received {received} of {bytes} bytes"
    );
    Ok(bytes as f64 / done.duration_since(started).as_secs_f64() / 1e6)
}

/// MB/s of `bytes` sent over one loopback TCP connection in 128 KiB writes
/// and written by the reader into a new file in `dir`, made durable with
/// one fsync: the least a follower's install does (the snapshot's bytes
/// into a durable file), under the same page-cache conditions. `direct`:
/// the reader gathers 1 MiB and writes it with `O_DIRECT`, as the engine's
/// receive path does; else 128 KiB buffered writes.
fn raw_tcp_into_file_mb_per_s(dir: &std::path::Path, bytes: u64, direct: bool) -> Result<f64> {
    let path = dir.join(if direct { "raw-tcp-file-direct" } else { "raw-tcp-file" });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the raw TCP file floor's listener")?;
    let address = listener.local_addr()?;
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let total = if direct {
            receive_direct(&mut stream, &reader_path)?
        } else {
            receive_buffered(&mut stream, &reader_path)?
        };
        Ok((total, Instant::now()))
    });
    let mut stream = std::net::TcpStream::connect(address).context("connecting to the raw TCP file floor")?;
    let buffer = vec![0x5Au8; RAW_WRITE_BYTES];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(RAW_WRITE_BYTES as u64) as usize;
        stream
            .write_all(&buffer[..n])
            .context("the raw TCP file floor's writes")?;
        left -= n as u64;
    }
    drop(stream);
    let joined = reader
        .join()
        .map_err(|_| anyhow!("the raw TCP file floor's reader panicked"))?;
    let _ = std::fs::remove_file(&path);
    let (received, done) = joined.with_context(|| format!("the raw TCP file floor's reader ({})", path.display()))?;
    ensure!(
        received == bytes,
        "the raw TCP file floor received {received} of {bytes} bytes"
    );
    Ok(bytes as f64 / done.duration_since(started).as_secs_f64() / 1e6)
}

/// Reads `stream` to its end into a new file at `path` in 128 KiB buffered
/// writes, then fsyncs it; the bytes read.
fn receive_buffered(stream: &mut std::net::TcpStream, path: &std::path::Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::create_new(path)?;
    let mut buffer = vec![0u8; RAW_WRITE_BYTES];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buffer)? {
            0 => break,
            n => {
                file.write_all(&buffer[..n])?;
                total += n as u64;
            }
        }
    }
    file.sync_all()?;
    Ok(total)
}

/// Reads `stream` to its end into a new file at `path` in 2 MiB `O_DIRECT`
/// writes (the last one padded, the file then cut to length), then fsyncs
/// it; the bytes read. As the engine's receive path: a writer thread
/// writes one buffer while the reader fills the other.
fn receive_direct(stream: &mut std::net::TcpStream, path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let writer_file = file.try_clone()?;
    // Each buffer as (backing, start of its aligned part).
    let aligned = || {
        let backing = vec![0u8; RAW_DIRECT_WRITE_BYTES + RAW_DIRECT_ALIGN_BYTES];
        let start = backing.as_ptr().align_offset(RAW_DIRECT_ALIGN_BYTES);
        (backing, start)
    };
    let (jobs, to_write) = std::sync::mpsc::sync_channel::<((Vec<u8>, usize), usize, u64)>(2);
    let (back, done) = std::sync::mpsc::sync_channel(2);
    let writer = std::thread::spawn(move || {
        for ((backing, start), length, offset) in to_write.iter() {
            let result = writer_file.write_all_at(&backing[start..start + length], offset);
            if back.send(((backing, start), result)).is_err() {
                return;
            }
        }
    });
    let mut spare = vec![aligned()];
    let mut current = aligned();
    let (mut filled, mut written, mut out) = (0usize, 0u64, 0usize);
    let result = (|| -> std::io::Result<()> {
        loop {
            let (backing, start) = &mut current;
            let buffer = &mut backing[*start..*start + RAW_DIRECT_WRITE_BYTES];
            let n = stream.read(&mut buffer[filled..])?;
            filled += n;
            if filled == buffer.len() || (n == 0 && filled > 0) {
                let length = filled.next_multiple_of(RAW_DIRECT_ALIGN_BYTES);
                buffer[filled..length].fill(0);
                let next = match spare.pop() {
                    Some(next) => next,
                    None => {
                        let (next, result) = done.recv().map_err(|_| std::io::Error::other("writer stopped"))?;
                        out -= 1;
                        result?;
                        next
                    }
                };
                let full = std::mem::replace(&mut current, next);
                jobs.send((full, length, written))
                    .map_err(|_| std::io::Error::other("writer stopped"))?;
                out += 1;
                written += filled as u64;
                filled = 0;
            }
            if n == 0 {
                break;
            }
        }
        while out > 0 {
            let (_, result) = done.recv().map_err(|_| std::io::Error::other("writer stopped"))?;
            out -= 1;
            result?;
        }
        Ok(())
    })();
    drop(jobs);
    let _ = writer.join();
    result?;
    file.set_len(written)?;
    file.sync_all()?;
    Ok(written)
}

/// MB/s of `bytes` written into a new file in `dir` in 128 KiB writes and
/// made durable with one fdatasync: the floor of the follower's disk, which
/// writes the received snapshot into its store and syncs it.
fn disk_mb_per_s(dir: &std::path::Path, bytes: u64) -> Result<f64> {
    let path = dir.join("disk-floor");
    let buffer = vec![0x5Au8; RAW_WRITE_BYTES];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(RAW_WRITE_BYTES as u64) as usize;
        file.write_all(&buffer[..n]).context("the disk floor's writes")?;
        left -= n as u64;
    }
    file.sync_data().context("the disk floor's fdatasync")?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(bytes as f64 / seconds / 1e6)
}

/// MB/s of `bytes` written into a new file in `dir` in 2 MiB `O_DIRECT`
/// writes one after the other and made durable with one fsync: what the
/// disk takes the way the engine writes a received snapshot, with nothing
/// to receive. `None`: the file system refuses `O_DIRECT`.
fn disk_direct_mb_per_s(dir: &std::path::Path, bytes: u64) -> Result<Option<f64>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = dir.join("disk-floor-direct");
    let started = Instant::now();
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let mut backing = vec![0x5Au8; RAW_DIRECT_WRITE_BYTES + RAW_DIRECT_ALIGN_BYTES];
    let start = backing.as_ptr().align_offset(RAW_DIRECT_ALIGN_BYTES);
    let buffer = &mut backing[start..start + RAW_DIRECT_WRITE_BYTES];
    let mut written = 0u64;
    let result = (|| -> std::io::Result<()> {
        while written < bytes {
            file.write_all_at(buffer, written)?;
            written += RAW_DIRECT_WRITE_BYTES as u64;
        }
        file.sync_all()
    })();
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => Ok(Some(written as f64 / seconds / 1e6)),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(error) => Err(error).context("the direct disk floor's writes"),
    }
}

fn run_once(args: &InstallArgs, root: &std::path::Path) -> Result<Outcome> {
    // The floors move the snapshot's bytes: `--state-mib` MiB (this was
    // `state_mib * CHUNK_BYTES`, 1/16 of them once the chunk became 64 KiB,
    // so the floors of 26d2934's runs moved 64 MiB for a 1 GiB stream).
    let state_bytes = args.state_mib << 20;
    // The floors first, while the cluster's threads are not running.
    let mut raw_tcp = 0f64;
    for _ in 0..RAW_TCP_RUNS {
        raw_tcp = raw_tcp.max(raw_tcp_mb_per_s(state_bytes)?);
    }
    let disk = disk_mb_per_s(root, state_bytes)?;
    let disk_direct = disk_direct_mb_per_s(root, state_bytes)?;
    let file_buffered = raw_tcp_into_file_mb_per_s(root, state_bytes, false)?;
    let file_direct = match raw_tcp_into_file_mb_per_s(root, state_bytes, true) {
        Ok(mb_per_s) => Some(mb_per_s),
        Err(error) => {
            eprintln!("coraft-bench: no direct-write floor (the file system may refuse O_DIRECT): {error:#}");
            None
        }
    };

    let addresses: Vec<SocketAddr> = coraft::ports::free_loopback_addresses(3)?;
    let peers: Vec<PeerSpec> = (0..3)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: vec![addresses[n]],
        })
        .collect();
    let initial = Arc::new(Blob::initial(args.state_mib));
    // Each node's loaders' times, by node (ids 1 to 3).
    let loads: Vec<Arc<LoadTimes>> = (0..3).map(|_| Arc::default()).collect();
    let memory = args.loader;
    let start = |peer: &PeerSpec| -> Result<Node> {
        let (initial, loads) = (initial.clone(), loads[peer.id.0 as usize - 1].clone());
        let factory: StateMachineFactory = Arc::new(move |_| Box::new(Blob::new(&initial, memory, loads.clone())));
        Node::start(options(root, &peers, peer.id, args.install_bytes_per_second), factory)
            .map_err(|e| anyhow!("starting node {}: {e}", peer.id))
    };
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for peer in &peers {
        nodes.push(Some(start(peer)?));
    }
    let result = measure(args, &peers, &mut nodes, &start, &loads).map(|mut outcome| {
        outcome.raw_tcp_mb_per_s = raw_tcp;
        outcome.raw_tcp_file_buffered_mb_per_s = file_buffered;
        outcome.raw_tcp_file_direct_mb_per_s = file_direct;
        outcome.disk_mb_per_s = disk;
        outcome.disk_direct_mb_per_s = disk_direct;
        outcome
    });
    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
    result
}

fn measure(
    args: &InstallArgs,
    peers: &[PeerSpec],
    nodes: &mut [Option<Node>],
    start: &dyn Fn(&PeerSpec) -> Result<Node>,
    loads: &[Arc<LoadTimes>],
) -> Result<Outcome> {
    let leader = leader_of(nodes)?;
    let node = |index: usize| nodes[index].as_ref().expect("running");
    write_some(node(leader), WRITES_BEFORE_STOP, 0, WRITE_PAYLOAD_BYTES)?;
    let follower = (leader + 1) % nodes.len();
    // Every node holds the writes so far before the follower stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = status(node(leader))?.commit_index;
    while status(node(follower))?.applied_index < written {
        ensure!(Instant::now() < deadline, "the follower did not catch up within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    nodes[follower].take().expect("running").shutdown();
    let node = |index: usize| nodes[index].as_ref().expect("running");
    write_some(node(leader), WRITES_MISSED, WRITES_BEFORE_STOP, MISSED_PAYLOAD_BYTES)?;
    let saving = Instant::now();
    let snapshot_index = block(node(leader).group(GROUP).snapshot())
        .map_err(|e| anyhow!("the leader's snapshot: {e}"))?
        .0;
    let snapshot_save_s = saving.elapsed().as_secs_f64();
    let first_index = status(node(leader))?.first_index.0;
    ensure!(
        first_index > WRITES_BEFORE_STOP + 1,
        "the leader kept its log from index {first_index}: the follower would not need a snapshot"
    );

    // The write load, on the leader, until the follower installed.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let (handle, stop) = (node(leader).group(GROUP), stop.clone());
            std::thread::spawn(move || {
                let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let (mut n, mut errors) = ((w as u64 + 1) << 40, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match block(handle.apply(write_command(n, WRITE_PAYLOAD_BYTES))) {
                        Ok(_) => {
                            latency.record(started.elapsed().as_micros().max(1) as u64).ok();
                        }
                        Err(_) => {
                            errors += 1;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    n += 1;
                }
                (latency, errors)
            })
        })
        .collect();

    let timeout = Duration::from_secs(args.timeout.unwrap_or(120 + args.state_mib / 4));
    let leader_handle = node(leader).group(GROUP);
    let leader_term = status(node(leader))?.term;
    let restarted = Instant::now();
    let started = start(&peers[follower]);
    let waited = started.and_then(|node| {
        nodes[follower] = Some(node);
        let follower_node = nodes[follower].as_ref().expect("running");
        let mut first_byte = None;
        // When the received bytes last changed: the last change is the
        // last chunk written, after the snapshot's fsync and rename.
        let mut received = (0u64, restarted);
        let mut leader_checked = restarted;
        loop {
            let now = Instant::now();
            if now.duration_since(leader_checked) >= LEADER_CHECK_INTERVAL {
                leader_checked = now;
                let l = block(leader_handle.status()).map_err(|e| anyhow!("status of the leader: {e}"))?;
                ensure!(
                    l.role == Role::Leader && l.term == leader_term,
                    "the leader (node {}) lost its leadership during the install (now {:?} in term {}, was leader \
                     in term {leader_term}): the new leader took no snapshot and catches the follower up from its \
                     log, so this run measures no stream; run it again",
                    peers[leader].id,
                    l.role,
                    l.term
                );
            }
            let seen = status(follower_node)?;
            if first_byte.is_none() && seen.counters.install_bytes_received > 0 {
                first_byte = Some(now);
            }
            if seen.counters.install_bytes_received != received.0 {
                received = (seen.counters.install_bytes_received, now);
            }
            if seen.counters.snapshots_installed >= 1 && seen.snapshot_index.0 >= snapshot_index {
                return Ok((now, first_byte.unwrap_or(now), received.1, seen));
            }
            if now.duration_since(restarted) > timeout {
                // What both sides saw, for whoever chases the stall.
                let on_leader = block(leader_handle.status())
                    .map(|l| {
                        format!(
                            "leader: role {:?}, term {}, {} bytes sent, peers {:?}",
                            l.role, l.term, l.counters.install_bytes_sent, l.peers
                        )
                    })
                    .unwrap_or_else(|e| format!("leader: {e}"));
                bail!(
                    "the follower (node {}) did not install the leader's snapshot at {snapshot_index} within {} s \
                     ({} bytes received; --timeout sets the limit); follower: role {:?}, term {}, leader {:?}, \
                     last index {}, commit {}; {on_leader}",
                    peers[follower].id,
                    timeout.as_secs(),
                    seen.counters.install_bytes_received,
                    seen.role,
                    seen.term,
                    seen.leader,
                    seen.last_index,
                    seen.commit_index
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    });
    stop.store(true, Ordering::Relaxed);
    let mut write_latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut write_errors = 0;
    for writer in writers {
        let (latency, errors) = writer.join().map_err(|_| anyhow!("a writer thread panicked"))?;
        write_latency_us.add(&latency).ok();
        write_errors += errors;
    }
    let (installed, first_byte, durable, seen) = waited?;
    let load = loads[follower].last_ok();
    let bytes_sent = status(nodes[leader].as_ref().expect("running"))?
        .counters
        .install_bytes_sent;
    Ok(Outcome {
        snapshot_index,
        snapshot_save_s,
        bytes_received: seen.counters.install_bytes_received,
        bytes_sent,
        total_s: installed.duration_since(restarted).as_secs_f64(),
        stream_s: installed.duration_since(first_byte).as_secs_f64(),
        engine_stream_s: durable.duration_since(first_byte).as_secs_f64(),
        loader_s: load.map(|(started, ended)| ended.duration_since(started).as_secs_f64()),
        loader_after_durable_s: load.map(|(_, ended)| {
            ended.saturating_duration_since(durable).as_secs_f64()
                - durable.saturating_duration_since(ended).as_secs_f64()
        }),
        writes: write_latency_us.len(),
        write_errors,
        write_latency_us,
        raw_tcp_mb_per_s: 0.0,
        raw_tcp_file_buffered_mb_per_s: 0.0,
        raw_tcp_file_direct_mb_per_s: None,
        disk_mb_per_s: 0.0,
        disk_direct_mb_per_s: None,
    })
}

/// Runs the InstallSnapshot benchmark.
pub fn run(args: InstallArgs) -> Result<()> {
    // The engine logs where a stream's time went on both sides (at info,
    // `coraft::runtime::install`); shown with RUST_LOG, silent otherwise.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).try_init();
    let dir = tempfile::tempdir().context("creating the benchmark's temp dir")?;
    let machine = Machine::detect(dir.path());
    let command = crate::cluster::command_line();
    if !args.json {
        println!("coraft InstallSnapshot benchmark: 3 nodes on loopback, one group");
        println!("  machine  {}", machine.describe());
        println!("  command  {command}");
        println!(
            "  config   {} MiB of state, pace limit {} B/s, {} writer(s) on the leader meanwhile, loader into {} memory",
            args.state_mib,
            args.install_bytes_per_second,
            args.writers,
            args.loader.name()
        );
    }
    let outcome = run_once(&args, dir.path())?;
    let o = &outcome;
    let mb = |bytes: u64, seconds: f64| bytes as f64 / seconds.max(1e-9) / 1e6;
    let stream_mb_per_s = mb(o.bytes_received, o.stream_s);
    let engine_mb_per_s = mb(o.bytes_received, o.engine_stream_s);
    let seconds_or_null = |s: Option<f64>| s.map_or("null".to_string(), |v| format!("{v:.3}"));
    let total_mb_per_s = mb(o.bytes_received, o.total_s);
    let writes_per_s = o.writes as f64 / o.total_s.max(1e-9);
    let q = |quantile: f64| o.write_latency_us.value_at_quantile(quantile);
    if args.json {
        println!(
            "{{\"system\":\"coraft\",\"bench\":\"install\",\"state_mib\":{},\"install_bytes_per_second\":{},\
             \"snapshot_index\":{},\"snapshot_save_s\":{:.3},\"bytes_received\":{},\"bytes_sent\":{},\
             \"restart_to_installed_s\":{:.3},\"first_byte_s\":{:.3},\"stream_s\":{:.3},\"stream_mb_per_s\":{:.1},\
             \"restart_to_installed_mb_per_s\":{:.1},\"raw_tcp_mb_per_s\":{:.1},\"disk_mb_per_s\":{:.1},\"disk_direct_mb_per_s\":{},\"ratio\":{:.3},\
             \"ratio_restart_to_installed\":{:.3},\"raw_tcp_file_buffered_mb_per_s\":{:.1},\
             \"raw_tcp_file_direct_mb_per_s\":{},\"raw_tcp_file_mb_per_s\":{:.1},\"ratio_file\":{:.3},\"writers\":{},\"writes\":{},\"writes_per_s\":{:.0},\
             \"loader\":\"{}\",\"engine_stream_s\":{:.3},\"engine_mb_per_s\":{:.1},\"ratio_engine\":{:.3},\
             \"loader_s\":{},\"loader_after_durable_s\":{},\"write_p50_us\":{},\"write_p99_us\":{},\"write_errors\":{},\"machine\":{},\"command\":{}}}",
            args.state_mib,
            args.install_bytes_per_second,
            o.snapshot_index,
            o.snapshot_save_s,
            o.bytes_received,
            o.bytes_sent,
            o.total_s,
            o.total_s - o.stream_s,
            o.stream_s,
            stream_mb_per_s,
            total_mb_per_s,
            o.raw_tcp_mb_per_s,
            o.disk_mb_per_s,
            o.disk_direct_mb_per_s.map_or("null".to_string(), |v| format!("{v:.1}")),
            stream_mb_per_s / o.raw_tcp_mb_per_s,
            total_mb_per_s / o.raw_tcp_mb_per_s,
            o.raw_tcp_file_buffered_mb_per_s,
            o.raw_tcp_file_direct_mb_per_s
                .map_or("null".to_string(), |v| format!("{v:.1}")),
            o.raw_tcp_file_mb_per_s(),
            stream_mb_per_s / o.raw_tcp_file_mb_per_s(),
            args.writers,
            o.writes,
            writes_per_s,
            args.loader.name(),
            o.engine_stream_s,
            engine_mb_per_s,
            engine_mb_per_s / o.raw_tcp_mb_per_s,
            seconds_or_null(o.loader_s),
            seconds_or_null(o.loader_after_durable_s),
            q(0.5),
            q(0.99),
            o.write_errors,
            serde_json::to_string(&machine).expect("the machine serializes"),
            serde_json::to_string(&command).expect("a string serializes"),
        );
    } else {
        println!(
            "  snapshot        at index {}, written in {:.2} s on the leader",
            o.snapshot_index, o.snapshot_save_s
        );
        println!(
            "  received        {} bytes ({} sent by the leader)",
            o.bytes_received, o.bytes_sent
        );
        println!(
            "  stream          {:.2} s from the first byte to installed: {stream_mb_per_s:.0} MB/s",
            o.stream_s
        );
        println!(
            "  engine's part   {:.2} s from the first byte to durable in the store (received, checked, written, \
             fsynced, renamed): {engine_mb_per_s:.0} MB/s, {:.2} of raw TCP",
            o.engine_stream_s,
            engine_mb_per_s / o.raw_tcp_mb_per_s
        );
        println!(
            "  loader          {} memory: prepared in {} s from the stream's first chunk, done {} s after durable",
            args.loader.name(),
            seconds_or_null(o.loader_s),
            seconds_or_null(o.loader_after_durable_s)
        );
        println!(
            "  restart         {:.2} s from the follower's start to installed: {total_mb_per_s:.0} MB/s \
             ({:.2} s to the first byte: start, reconnect backoff, probe)",
            o.total_s,
            o.total_s - o.stream_s
        );
        println!(
            "  raw TCP floor   {:.0} MB/s (the same bytes over one loopback connection, 128 KiB writes, best of {RAW_TCP_RUNS})",
            o.raw_tcp_mb_per_s
        );
        println!(
            "  raw TCP → file  {:.0} MB/s (the same bytes over one loopback connection into a new file and one fsync: \
             {:.0} MB/s buffered 128 KiB writes, {} direct 2 MiB writes; the faster counts)",
            o.raw_tcp_file_mb_per_s(),
            o.raw_tcp_file_buffered_mb_per_s,
            o.raw_tcp_file_direct_mb_per_s
                .map_or("no".to_string(), |v| format!("{v:.0} MB/s"))
        );
        println!(
            "  disk floor      {:.0} MB/s (the same bytes written in 128 KiB writes and one fdatasync, same file system), \
             {} in direct 2 MiB writes and one fsync",
            o.disk_mb_per_s,
            o.disk_direct_mb_per_s.map_or("no".to_string(), |v| format!("{v:.0} MB/s"))
        );
        println!(
            "  against raw TCP {:.2} (stream), {:.2} (restart to installed); target at least 0.5",
            stream_mb_per_s / o.raw_tcp_mb_per_s,
            total_mb_per_s / o.raw_tcp_mb_per_s
        );
        println!(
            "  against → file  {:.2} (stream), {:.2} (restart to installed)",
            stream_mb_per_s / o.raw_tcp_file_mb_per_s(),
            total_mb_per_s / o.raw_tcp_file_mb_per_s()
        );
        println!(
            "  writes meanwhile {} ({writes_per_s:.0}/s), p50 {} µs, p99 {} µs, {} errors",
            o.writes,
            q(0.5),
            q(0.99),
            o.write_errors
        );
    }
    Ok(())
}
