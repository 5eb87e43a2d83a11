//! A real listener on loopback is fed garbage, truncated, oversized and
//! bad-checksum frames, invalid archives and foreign handshakes, and keeps
//! serving a well-behaved client throughout; each bad connection is closed
//! and counted under its reason.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use coraft_net::frame::{FrameHeader, FRAME_HEADER_BYTES};
use coraft_net::handshake::{HelloReply, Refusal};
use coraft_net::schema::*;
use coraft_net::stats::Counter;
use coraft_net::{
    BlockingConnection, FrameDecoder, FrameEncoder, FrameKind, Hello, Listener, LocalIdentity, NetConfig, NetError,
    Role, WIRE_VERSION,
};
use glommio::{LocalExecutorBuilder, Placement};

const CLUSTER: u64 = 77;
const TIMEOUT: Duration = Duration::from_secs(5);

const COUNTERS: [Counter; 13] = [
    Counter::HandshakesAccepted,
    Counter::RefusedForeignCluster,
    Counter::RefusedIncompatibleVersion,
    Counter::RefusedMisaddressed,
    Counter::HandshakesFailed,
    Counter::ClosedBadMagic,
    Counter::ClosedBadHeader,
    Counter::ClosedOversized,
    Counter::ClosedBadChecksum,
    Counter::ClosedTruncated,
    Counter::ClosedInvalidArchive,
    Counter::ClosedUnexpectedFrame,
    Counter::ClosedCleanly,
];

/// Runs an echo server on its own glommio executor until `stop` is set; returns
/// the listener's counters (in `COUNTERS` order).
fn start_server(stop: Arc<AtomicBool>) -> (SocketAddr, glommio::ExecutorJoinHandle<Vec<u64>>) {
    let (address_tx, address_rx) = mpsc::channel();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("listener-test")
        .spawn(move || async move {
            let identity = LocalIdentity {
                cluster_id: CLUSTER,
                node_id: 1,
                shard_id: 0,
            };
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), NetConfig::new(identity)).unwrap();
            address_tx.send(listener.local_addr()).unwrap();
            let stats = listener.stats();
            let stopped = async {
                while !stop.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            };
            let serve = async {
                loop {
                    let Ok(handshaking) = listener.accept().await else {
                        continue;
                    };
                    glommio::spawn_local(async move {
                        let Ok(mut connection) = handshaking.handshake().await else {
                            return;
                        };
                        let mut responses = connection.take_response_writer();
                        while let Ok(Some(frame)) = connection.recv().await {
                            let (Some(requests), Some(writer)) = (frame.client_requests(), responses.as_mut()) else {
                                continue;
                            };
                            let batch = ClientResponseBatch {
                                responses: requests.requests.iter().map(echo).collect(),
                            };
                            if writer.send(&batch).await.is_err() {
                                return;
                            }
                        }
                    })
                    .detach();
                }
            };
            futures_lite::future::or(serve, stopped).await;
            COUNTERS.iter().map(|counter| stats.get(*counter)).collect::<Vec<_>>()
        })
        .unwrap();
    (address_rx.recv().unwrap(), handle)
}

fn echo(request: &ArchivedClientRequest) -> ClientResponse {
    let ArchivedClientRequest::Read {
        client_id,
        request_id,
        group,
        payload,
        ..
    } = request
    else {
        panic!("the test only sends reads");
    };
    ClientResponse {
        client_id: client_id.to_native(),
        request_id: request_id.to_native(),
        group: group.to_native(),
        leader_hint: Some(1),
        result: Ok(payload.to_vec()),
    }
}

fn hello(cluster_id: u64, role: Role) -> Hello {
    Hello {
        cluster_id,
        node_id: 9,
        shard_id: 0,
        target_shard_id: 0,
        target_node_id: 1,
        role,
        client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
    }
}

fn client(address: SocketAddr) -> BlockingConnection {
    BlockingConnection::connect(address, &hello(CLUSTER, Role::Client), TIMEOUT).unwrap()
}

/// The well-behaved client asks and must be answered.
fn assert_served(good: &mut BlockingConnection, request_id: u64) {
    let request = ClientRequestBatch {
        requests: vec![ClientRequest::Read {
            client_id: 9,
            request_id,
            group: 3,
            payload: request_id.to_le_bytes().to_vec(),
            consistency: Default::default(),
        }],
    };
    good.send(&request).unwrap();
    let frame = good.recv().unwrap().expect("the listener must still answer");
    let response = &frame.client_responses().unwrap().responses[0];
    assert_eq!(response.request_id.to_native(), request_id);
}

/// Waits until the server closed `stream` (EOF or reset).
fn assert_closed_by_server(mut stream: TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut sink = [0u8; 256];
    loop {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// A raw socket after a good client handshake, to misbehave on.
fn handshaken_raw(address: SocketAddr, role: Role) -> TcpStream {
    let connection = BlockingConnection::connect(address, &hello(CLUSTER, role), TIMEOUT).unwrap();
    connection.stream().try_clone().unwrap()
}

fn valid_request_frame() -> Vec<u8> {
    let mut encoder = FrameEncoder::new();
    encoder
        .encode(&ClientRequestBatch {
            requests: vec![ClientRequest::Read {
                client_id: 1,
                request_id: 1,
                group: 1,
                payload: vec![1, 2, 3],
                consistency: Default::default(),
            }],
        })
        .unwrap();
    encoder.as_bytes().to_vec()
}

#[test]
fn listener_closes_bad_connections_with_counted_reasons_and_keeps_serving() {
    let stop = Arc::new(AtomicBool::new(false));
    let (address, server) = start_server(Arc::clone(&stop));
    let mut good = client(address);
    assert_served(&mut good, 1);

    // Garbage instead of a hello.
    let mut raw = TcpStream::connect(address).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_closed_by_server(raw);
    assert_served(&mut good, 2);

    // A peer of another cluster is refused with that reason.
    let refused = BlockingConnection::connect(address, &hello(CLUSTER + 1, Role::Peer), TIMEOUT);
    assert!(matches!(
        refused,
        Err(NetError::Refused {
            refusal: Refusal::ForeignCluster { expected: CLUSTER, found }
        }) if found == CLUSTER + 1
    ));
    assert_served(&mut good, 3);

    // A peer of another wire version is refused with that reason.
    let mut raw = TcpStream::connect(address).unwrap();
    let mut encoder = FrameEncoder::new();
    encoder
        .encode_raw(
            FrameKind::Hello,
            WIRE_VERSION + 1,
            &hello(CLUSTER, Role::Peer).to_bytes(),
        )
        .unwrap();
    raw.write_all(encoder.as_bytes()).unwrap();
    let mut decoder = FrameDecoder::new();
    let mut reply = None;
    while reply.is_none() {
        let buf = decoder.read_buf().unwrap();
        let n = raw.read(buf).unwrap();
        assert!(n > 0, "expected a refusal before the close");
        decoder.advance(n);
        reply = decoder.next_frame().unwrap();
    }
    let reply = reply.unwrap();
    let reply = HelloReply::parse(reply.body(), reply.version()).unwrap();
    assert!(matches!(
        reply.refusal,
        Some(Refusal::IncompatibleVersion {
            expected: WIRE_VERSION,
            ..
        })
    ));
    assert_closed_by_server(raw);

    // A hello addressed to another shard.
    let misaddressed = Hello {
        target_shard_id: 5,
        ..hello(CLUSTER, Role::Peer)
    };
    assert!(matches!(
        BlockingConnection::connect(address, &misaddressed, TIMEOUT),
        Err(NetError::Refused {
            refusal: Refusal::WrongShard { found: 5, .. }
        })
    ));
    assert_served(&mut good, 4);

    // After a good handshake: a bad checksum.
    let mut raw = handshaken_raw(address, Role::Client);
    let mut frame = valid_request_frame();
    frame[FRAME_HEADER_BYTES + 2] ^= 0x10;
    raw.write_all(&frame).unwrap();
    assert_closed_by_server(raw);
    assert_served(&mut good, 5);

    // An oversized frame, refused from its header alone.
    let mut raw = handshaken_raw(address, Role::Client);
    let mut header = FrameHeader {
        version: WIRE_VERSION,
        kind: FrameKind::ClientRequests,
        body_bytes: 0,
        body_crc: 0,
    }
    .to_bytes();
    header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    raw.write_all(&header).unwrap();
    assert_closed_by_server(raw);
    assert_served(&mut good, 6);

    // A truncated frame: half of it, then the end of the stream.
    let mut raw = handshaken_raw(address, Role::Client);
    let frame = valid_request_frame();
    raw.write_all(&frame[..frame.len() / 2]).unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    assert_closed_by_server(raw);
    assert_served(&mut good, 7);

    // Garbage after the handshake.
    let mut raw = handshaken_raw(address, Role::Client);
    raw.write_all(&[0xa5; 64]).unwrap();
    assert_closed_by_server(raw);

    // A body with a valid checksum that is not a valid archive.
    let mut raw = handshaken_raw(address, Role::Client);
    let mut encoder = FrameEncoder::new();
    encoder
        .encode_raw(FrameKind::ClientRequests, WIRE_VERSION, &[0xff; 48])
        .unwrap();
    raw.write_all(encoder.as_bytes()).unwrap();
    assert_closed_by_server(raw);

    // A peer sending client requests: a frame kind not allowed there.
    let mut raw = handshaken_raw(address, Role::Peer);
    raw.write_all(&valid_request_frame()).unwrap();
    assert_closed_by_server(raw);

    // A version-2 data frame after a version-1 handshake.
    let mut raw = handshaken_raw(address, Role::Client);
    let mut frame = valid_request_frame();
    frame[4..6].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    raw.write_all(&frame).unwrap();
    assert_closed_by_server(raw);
    assert_served(&mut good, 8);

    // A client that leaves cleanly.
    let polite = client(address);
    polite.stream().shutdown(Shutdown::Both).unwrap();
    drop(polite);
    assert_served(&mut good, 9);

    drop(good);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let counters = server.join().unwrap();
    let expected = [
        (Counter::HandshakesAccepted, 9),
        (Counter::RefusedForeignCluster, 1),
        (Counter::RefusedIncompatibleVersion, 1),
        (Counter::RefusedMisaddressed, 1),
        (Counter::HandshakesFailed, 1),
        (Counter::ClosedBadMagic, 1),
        (Counter::ClosedBadHeader, 1),
        (Counter::ClosedOversized, 1),
        (Counter::ClosedBadChecksum, 1),
        (Counter::ClosedTruncated, 1),
        (Counter::ClosedInvalidArchive, 1),
        (Counter::ClosedUnexpectedFrame, 1),
        (Counter::ClosedCleanly, 2),
    ];
    for (counter, value) in expected {
        let at = COUNTERS.iter().position(|c| *c == counter).unwrap();
        assert_eq!(counters[at], value, "{counter:?}");
    }
}

#[test]
fn a_connection_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let (address_tx, address_rx) = mpsc::channel();
    let server = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut config = NetConfig::new(LocalIdentity {
                cluster_id: CLUSTER,
                node_id: 1,
                shard_id: 0,
            });
            config.handshake_timeout = Duration::from_millis(200);
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
            address_tx.send(listener.local_addr()).unwrap();
            let handshaking = listener.accept().await.unwrap();
            let result = handshaking.handshake().await;
            (
                matches!(result, Err(NetError::HandshakeTimeout { millis: 200 })),
                listener.stats().get(Counter::HandshakesFailed),
            )
        })
        .unwrap();
    let silent = TcpStream::connect(address_rx.recv().unwrap()).unwrap();
    let started = std::time::Instant::now();
    assert_closed_by_server(silent);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.join().unwrap(), (true, 1));
}
