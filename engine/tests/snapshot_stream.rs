//! InstallSnapshot streaming on real files and real sockets: a stored
//! snapshot travels from a leader's store to a follower's in chunks, over
//! TCP in coraft frames; a cut connection resumes from the last
//! acknowledged chunk; malformed chunks and a newer term are handled.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use coraft::raft::{Configuration, GroupId, LogIndex, NodeId, SnapshotMeta, Term};
use coraft::runtime::{
    AckOutcome, RateLimiter, SnapshotInbox, SnapshotSender, SnapshotStore, SnapshotStreamError, StoredSnapshot,
    SNAPSHOT_CHUNKS_IN_FLIGHT_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_RECEIVE_SYNC_BYTES,
};
use coraft_net::bytes::Bytes;
use coraft_net::schema::{Envelope, RaftBatch, RaftBody, SnapshotChunk, SnapshotChunkAck};
use coraft_net::{FrameDecoder, FrameEncoder};

const GROUP: GroupId = GroupId(5);
const LEADER: NodeId = NodeId(1);
const FOLLOWER: NodeId = NodeId(2);
/// Spans several chunks, and not a multiple of one.
const DATA_BYTES: usize = 5 * SNAPSHOT_CHUNK_BYTES_MAX + 12_345;

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        configuration: Configuration {
            voters: [LEADER, FOLLOWER, NodeId(3)].into_iter().collect(),
            learners: [NodeId(9)].into_iter().collect(),
            ..Configuration::default()
        },
    }
}

fn data(seed: u64) -> Vec<u8> {
    (0..DATA_BYTES as u64)
        .map(|i| (i * 131 + seed * 7 + i / 997) as u8)
        .collect()
}

fn leader_snapshot(dir: &Path, index: u64, term: u64) -> StoredSnapshot {
    let store = SnapshotStore::open(dir, GROUP).unwrap();
    let mut writer = store.begin(meta(index, term), b"session table".to_vec()).unwrap();
    writer.write_all(&data(index)).unwrap();
    writer.finish().unwrap()
}

fn unlimited() -> RateLimiter {
    RateLimiter::new(u64::MAX / 4, Instant::now())
}

fn temp_dirs(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("tmp-"))
        .count()
}

/// The follower's published snapshot has the leader's metadata, sessions and data.
fn assert_installed(store: &SnapshotStore, index: u64, term: u64) {
    let found = store.newest_valid().unwrap();
    assert!(found.skipped.is_empty(), "skipped: {:?}", found.skipped);
    let snapshot = found.snapshot.expect("the streamed snapshot is published");
    assert_eq!(snapshot.meta, meta(index, term));
    assert_eq!(snapshot.sessions, b"session table".to_vec());
    let mut bytes = Vec::new();
    snapshot.open_reader().unwrap().read_to_end(&mut bytes).unwrap();
    assert!(bytes == data(index), "the data differs from the leader's");
    assert_eq!(temp_dirs(store.dir()), 0, "no temp directory left behind");
}

#[test]
fn a_snapshot_streams_in_bounded_chunks_and_is_published_whole() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let stored = leader_snapshot(leader_dir.path(), 40, 3);
    let follower = SnapshotStore::open(follower_dir.path(), GROUP).unwrap();
    let mut sender = SnapshotSender::open(&stored, FOLLOWER, Term(4)).unwrap();
    let mut inbox = SnapshotInbox::new();
    let mut limiter = unlimited();
    let mut chunks = 0;
    loop {
        let mut window = Vec::new();
        while let Some(chunk) = sender.next_chunk(&mut limiter, Instant::now()).unwrap() {
            assert!(chunk.data.len() <= SNAPSHOT_CHUNK_BYTES_MAX);
            window.push(chunk);
        }
        assert!(
            !window.is_empty() && window.len() <= SNAPSHOT_CHUNKS_IN_FLIGHT_MAX,
            "{} chunks in flight",
            window.len()
        );
        let mut outcome = AckOutcome::Progress;
        for chunk in &window {
            chunks += 1;
            if chunk.last {
                assert!(
                    follower.list().unwrap().is_empty(),
                    "nothing published before the last chunk"
                );
            }
            let (ack, result) = inbox.on_chunk(&follower, GROUP, LEADER, Term(4), Term(4), chunk);
            result.unwrap();
            outcome = sender.on_ack(&ack).unwrap();
        }
        if outcome == AckOutcome::Complete {
            break;
        }
    }
    assert!(sender.is_complete());
    assert!(chunks >= 6, "{chunks} chunks");
    assert_eq!(sender.bytes_sent, sender.total_bytes(), "nothing sent twice");
    assert_installed(&follower, 40, 3);
}

fn write_frame(stream: &mut TcpStream, from: NodeId, to: NodeId, body: RaftBody) -> std::io::Result<()> {
    let mut encoder = FrameEncoder::new();
    let batch = RaftBatch {
        messages: vec![Envelope {
            group: GROUP.0,
            from: from.0,
            to: to.0,
            term: 4,
            body,
        }],
    };
    encoder.encode(&batch).unwrap();
    stream.write_all(encoder.as_bytes())
}

/// Reads the next Raft envelope; `None` when the peer closed.
fn read_envelope(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> Option<Envelope> {
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            let batch: RaftBatch = rkyv::deserialize::<RaftBatch, rkyv::rancor::Error>(frame.raft().unwrap()).unwrap();
            return batch.messages.into_iter().next();
        }
        let buffer = decoder.read_buf().unwrap();
        match stream.read(buffer) {
            Ok(0) | Err(_) => return None,
            Ok(n) => decoder.advance(n),
        }
    }
}

/// The follower: serves connections one after the other with one inbox,
/// until the leader says it is done; returns what was installed.
fn serve_follower(listener: TcpListener, store: SnapshotStore, done: Arc<AtomicBool>) -> Option<StoredSnapshot> {
    let mut inbox = SnapshotInbox::new();
    let mut installed = None;
    loop {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = FrameDecoder::new();
        while let Some(envelope) = read_envelope(&mut stream, &mut decoder) {
            let RaftBody::SnapshotChunk(chunk) = envelope.body else {
                panic!("not a chunk: {:?}", envelope.body);
            };
            let (ack, result) = inbox.on_chunk(
                &store,
                GROUP,
                NodeId(envelope.from),
                Term(envelope.term),
                Term(4),
                &chunk,
            );
            // After the cut the follower may hold chunks whose acks were
            // lost: it refuses the resent ones and names the offset it wants.
            match result {
                Ok(Some(stored)) => installed = Some(stored),
                Ok(None) | Err(SnapshotStreamError::OutOfOrder { .. }) => {}
                Err(error) => panic!("refused: {error}"),
            }
            if write_frame(&mut stream, FOLLOWER, LEADER, RaftBody::SnapshotChunkAck(ack)).is_err() {
                break;
            }
        }
        if done.load(Ordering::SeqCst) {
            return installed;
        }
    }
}

#[test]
fn a_stream_cut_halfway_over_tcp_resumes_from_the_last_acknowledged_chunk() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let stored = leader_snapshot(leader_dir.path(), 77, 2);
    let follower = SnapshotStore::open(follower_dir.path(), GROUP).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let done = done.clone();
        thread::spawn(move || serve_follower(listener, follower, done))
    };

    let mut sender = SnapshotSender::open(&stored, FOLLOWER, Term(4)).unwrap();
    let mut limiter = unlimited();
    let mut cut_at = None;
    let mut resumed_at = None;
    'connections: loop {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut decoder = FrameDecoder::new();
        loop {
            while let Some(chunk) = sender.next_chunk(&mut limiter, Instant::now()).unwrap() {
                if cut_at.is_some() && resumed_at.is_none() {
                    resumed_at = Some(chunk.offset);
                }
                write_frame(&mut stream, LEADER, FOLLOWER, RaftBody::SnapshotChunk(chunk)).unwrap();
            }
            let envelope = read_envelope(&mut stream, &mut decoder).expect("the follower answers");
            let RaftBody::SnapshotChunkAck(ack) = envelope.body else {
                panic!("not an ack");
            };
            if sender.on_ack(&ack).unwrap() == AckOutcome::Complete {
                done.store(true, Ordering::SeqCst);
                drop(stream);
                break 'connections;
            }
            if cut_at.is_none() && sender.acknowledged() > sender.total_bytes() / 2 {
                // The connection dies with chunks in flight.
                stream.shutdown(Shutdown::Both).unwrap();
                cut_at = Some(sender.acknowledged());
                sender.rewind();
                continue 'connections;
            }
        }
    }
    let installed = server.join().unwrap().expect("installed");
    assert_eq!(installed.meta, meta(77, 2));
    let (cut_at, resumed_at) = (cut_at.unwrap(), resumed_at.unwrap());
    assert_eq!(
        resumed_at, cut_at,
        "the second connection starts at the last acknowledged offset"
    );
    assert!(cut_at > 0);
    assert!(
        sender.bytes_sent <= sender.total_bytes() + (SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES_MAX) as u64,
        "only the chunks in flight at the cut are sent twice ({} of {})",
        sender.bytes_sent,
        sender.total_bytes()
    );
    assert_installed(&SnapshotStore::open(follower_dir.path(), GROUP).unwrap(), 77, 2);
}

/// The chunks of a whole stream, taken from a real sender.
fn all_chunks(stored: &StoredSnapshot) -> Vec<SnapshotChunk> {
    let mut sender = SnapshotSender::open(stored, FOLLOWER, Term(4)).unwrap();
    let mut limiter = unlimited();
    let mut chunks = Vec::new();
    loop {
        let Some(chunk) = sender.next_chunk(&mut limiter, Instant::now()).unwrap() else {
            if sender.next_chunk_bytes().is_none() && chunks.last().is_some_and(|c: &SnapshotChunk| c.last) {
                return chunks;
            }
            let ack = SnapshotChunkAck {
                snapshot_index: chunks[0].snapshot_index,
                snapshot_term: chunks[0].snapshot_term,
                chunk_offset: chunks.last().map_or(0, |c: &SnapshotChunk| c.offset),
                next_offset: chunks
                    .last()
                    .map_or(0, |c: &SnapshotChunk| c.offset + c.data.len() as u64),
                refused: false,
                complete: false,
            };
            sender.on_ack(&ack).unwrap();
            continue;
        };
        chunks.push(chunk);
    }
}

fn with_data(chunk: &SnapshotChunk, data: Vec<u8>) -> SnapshotChunk {
    SnapshotChunk {
        crc: crc32fast::hash(&data),
        data: Bytes::from(data),
        ..chunk.clone()
    }
}

#[test]
fn malformed_chunks_are_refused_with_a_clear_error_and_nothing_is_published() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let stored = leader_snapshot(leader_dir.path(), 12, 1);
    let follower = SnapshotStore::open(follower_dir.path(), GROUP).unwrap();
    let chunks = all_chunks(&stored);
    let mut inbox = SnapshotInbox::new();
    let mut step = |chunk: &SnapshotChunk| inbox.on_chunk(&follower, GROUP, LEADER, Term(4), Term(4), chunk);

    // A flipped bit.
    let mut bad = chunks[0].clone();
    bad.crc ^= 1;
    let (ack, result) = step(&bad);
    assert!(
        matches!(result, Err(SnapshotStreamError::ChunkChecksum { offset: 0, .. })),
        "{result:?}"
    );
    assert!(ack.refused && ack.next_offset == 0);

    // A chunk that does not start the stream.
    let (ack, result) = step(&chunks[1]);
    assert!(
        matches!(result, Err(SnapshotStreamError::OutOfOrder { expected: 0, .. })),
        "{result:?}"
    );
    assert!(ack.refused);

    // Too large, with a correct checksum.
    let big = with_data(&chunks[0], vec![7; SNAPSHOT_CHUNK_BYTES_MAX + 1]);
    let (_, result) = step(&big);
    let error = result.unwrap_err();
    assert!(matches!(error, SnapshotStreamError::ChunkTooLarge { .. }), "{error:?}");
    assert!(
        error.to_string().contains("group 5"),
        "the error names the group: {error}"
    );

    // In order, then a skip ahead: refused, and the ack asks for the gap.
    let (ack, result) = step(&chunks[0]);
    result.unwrap();
    assert!(!ack.refused);
    let (ack, result) = step(&chunks[2]);
    assert!(
        matches!(result, Err(SnapshotStreamError::OutOfOrder { .. })),
        "{result:?}"
    );
    assert_eq!(ack.next_offset, chunks[1].offset);
    assert!(ack.refused);

    // A `last` flag that does not fit the stream's length.
    let mut lying = chunks[1].clone();
    lying.last = true;
    let (_, result) = step(&lying);
    assert!(
        matches!(result, Err(SnapshotStreamError::Inconsistent { .. })),
        "{result:?}"
    );

    // The last chunk's data altered, with a chunk checksum to match: the
    // snapshot's own checksum catches it and nothing is published.
    for chunk in &chunks[1..chunks.len() - 1] {
        step(chunk).1.unwrap();
    }
    let last = chunks.last().unwrap();
    let mut altered = last.data.to_vec();
    altered[0] ^= 0x10;
    let (ack, result) = step(&with_data(last, altered));
    assert!(matches!(result, Err(SnapshotStreamError::Store { .. })), "{result:?}");
    assert!(ack.refused && ack.next_offset == 0, "the stream starts over");
    assert!(follower.list().unwrap().is_empty(), "nothing published");
    assert_eq!(temp_dirs(follower.dir()), 0, "the temp directory is removed");

    // Damaged metadata (the prefix, which this small session table keeps
    // inside the first chunk) is refused before any data is written.
    let mut metadata = chunks[0].data.to_vec();
    metadata[20] ^= 0x01;
    let (ack, result) = step(&with_data(&chunks[0], metadata));
    assert!(matches!(result, Err(SnapshotStreamError::Store { .. })), "{result:?}");
    assert!(ack.refused && ack.next_offset == 0);
    assert!(follower.list().unwrap().is_empty());
    assert_eq!(temp_dirs(follower.dir()), 0);
}

#[test]
fn a_newer_term_abandons_the_stream_and_an_older_term_is_refused() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let stored = leader_snapshot(leader_dir.path(), 30, 2);
    let follower = SnapshotStore::open(follower_dir.path(), GROUP).unwrap();
    let chunks = all_chunks(&stored);
    let mut inbox = SnapshotInbox::new();
    for chunk in &chunks[..3] {
        inbox
            .on_chunk(&follower, GROUP, LEADER, Term(4), Term(4), chunk)
            .1
            .unwrap();
    }
    assert_eq!(
        temp_dirs(follower.dir()),
        1,
        "a stream under way writes into a temp directory"
    );

    // The deposed leader's next chunk, after the group moved to term 5.
    let (ack, result) = inbox.on_chunk(&follower, GROUP, LEADER, Term(4), Term(5), &chunks[3]);
    assert!(
        matches!(result, Err(SnapshotStreamError::StaleTerm { .. })),
        "{result:?}"
    );
    assert!(ack.refused);

    // The new leader of term 5 starts its own stream: the old one is dropped.
    let new_leader = NodeId(3);
    for chunk in &chunks {
        let (_, result) = inbox.on_chunk(&follower, GROUP, new_leader, Term(5), Term(5), chunk);
        result.unwrap();
        assert!(
            temp_dirs(follower.dir()) <= 1,
            "the abandoned stream's temp directory is gone"
        );
    }
    assert_installed(&follower, 30, 2);
    // The old leader's stream does not come back.
    let (_, result) = inbox.on_chunk(&follower, GROUP, LEADER, Term(4), Term(5), &chunks[0]);
    assert!(matches!(result, Err(SnapshotStreamError::StaleTerm { .. })));
}

#[test]
fn acks_that_do_not_fit_the_stream_are_refused() {
    let leader_dir = tempfile::tempdir().unwrap();
    let stored = leader_snapshot(leader_dir.path(), 8, 1);
    let mut sender = SnapshotSender::open(&stored, FOLLOWER, Term(4)).unwrap();
    let chunk = sender.next_chunk(&mut unlimited(), Instant::now()).unwrap().unwrap();
    let ack = |index, next_offset, complete| SnapshotChunkAck {
        snapshot_index: index,
        snapshot_term: 1,
        chunk_offset: 0,
        next_offset,
        refused: false,
        complete,
    };
    assert!(matches!(
        sender.on_ack(&ack(9, 0, false)),
        Err(SnapshotStreamError::BadAck { .. })
    ));
    let beyond = chunk.data.len() as u64 + 1;
    assert!(matches!(
        sender.on_ack(&ack(8, beyond, false)),
        Err(SnapshotStreamError::BadAck { .. })
    ));
    assert!(matches!(
        sender.on_ack(&ack(8, 5, true)),
        Err(SnapshotStreamError::BadAck { .. })
    ));
    assert_eq!(
        sender.on_ack(&ack(8, chunk.data.len() as u64, false)).unwrap(),
        AckOutcome::Progress
    );
    assert_eq!(sender.acknowledged(), chunk.data.len() as u64);
}

#[test]
fn the_rate_limiter_lets_through_only_the_bytes_its_clock_allows() {
    let start = Instant::now();
    let rate = 4 * SNAPSHOT_CHUNK_BYTES_MAX as u64; // bytes per second; burst of one chunk
    let mut limiter = RateLimiter::new(rate, start);
    let chunk = SNAPSHOT_CHUNK_BYTES_MAX as u64;
    assert!(limiter.try_take(chunk, start), "a full bucket holds one chunk");
    assert!(!limiter.try_take(chunk, start), "then it is empty");
    assert_eq!(limiter.wait_for(chunk, start), Duration::from_millis(250));
    assert!(!limiter.try_take(chunk, start + Duration::from_millis(200)));
    assert!(limiter.try_take(chunk, start + Duration::from_millis(250)));
    // A long pause does not bank more than the bucket holds.
    let later = start + Duration::from_secs(60);
    assert!(limiter.try_take(chunk, later));
    assert!(!limiter.try_take(1, later));
}

/// True if the file system under `dir` takes `O_DIRECT` writes (the
/// receiver then writes around the page cache).
fn takes_direct_writes(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("direct-probe");
    let taken = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    let _ = std::fs::remove_file(&path);
    taken
}

/// A receiver writing buffered hands out its data file every sync interval
/// for its writeback to start; one writing with `O_DIRECT` has no dirty
/// pages and hands out none. Either way the snapshot is published whole.
#[test]
fn a_receiver_hands_out_its_flushed_data_file_every_sync_interval_unless_it_writes_direct() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let direct = takes_direct_writes(follower_dir.path());
    let data_bytes = 3 * SNAPSHOT_RECEIVE_SYNC_BYTES as usize + 12_345;
    let store = SnapshotStore::open(leader_dir.path(), GROUP).unwrap();
    let mut writer = store.begin(meta(80, 5), b"session table".to_vec()).unwrap();
    writer.write_all(&vec![0x3C; data_bytes]).unwrap();
    let stored = writer.finish().unwrap();
    let follower = SnapshotStore::open(follower_dir.path(), GROUP).unwrap();
    let mut inbox = SnapshotInbox::new();
    let metadata_bytes = stored.encoded_metadata().len() as u64;
    let mut handed_out = Vec::new();
    for chunk in all_chunks(&stored) {
        let (_, result) = inbox.on_chunk(&follower, GROUP, LEADER, Term(4), Term(4), &chunk);
        result.unwrap();
        if let Some(file) = inbox.sync_due(GROUP) {
            // Everything written so far reached the file (nothing buffered).
            let written = chunk.offset + chunk.data.len() as u64 - metadata_bytes;
            assert_eq!(file.metadata().unwrap().len(), written);
            file.sync_data().unwrap();
            handed_out.push(written);
        }
    }
    let published = follower.newest_valid().unwrap().snapshot.expect("published");
    assert_eq!(published.data_bytes, data_bytes as u64);
    assert_eq!(published.data_crc, stored.data_crc);
    if direct {
        assert!(
            handed_out.is_empty(),
            "written direct, yet handed out at {handed_out:?}"
        );
        return;
    }
    // After every interval's worth of data, within a chunk of it (the
    // last interval ends with the publishing fsync instead).
    assert!(handed_out.len() >= 2, "{handed_out:?}");
    let mut previous = 0;
    for &at in &handed_out {
        let since = at - previous;
        let within = SNAPSHOT_RECEIVE_SYNC_BYTES..SNAPSHOT_RECEIVE_SYNC_BYTES + 2 * SNAPSHOT_CHUNK_BYTES_MAX as u64;
        assert!(within.contains(&since), "{handed_out:?}");
        previous = at;
    }
}
