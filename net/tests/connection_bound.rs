//! A real listener on loopback holds at most its bound of connections open:
//! with the bound reached, each further connection is closed at once and
//! counted as `RefusedOverLimit`, the connections already open keep being
//! served, and once one of them closes a new one is accepted again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use coraft_net::schema::*;
use coraft_net::stats::Counter;
use coraft_net::{BlockingConnection, Hello, Listener, LocalIdentity, NetConfig, Role, INBOUND_CONNECTIONS_MAX};
use glommio::{LocalExecutorBuilder, Placement};

const CLUSTER: u64 = 78;
const TIMEOUT: Duration = Duration::from_secs(5);
const BOUND: usize = 4;

/// Serves an echo listener bounded to `BOUND` connections until `stop`;
/// returns (default bound, refused over the limit, handshakes accepted).
fn start_server(stop: Arc<AtomicBool>) -> (SocketAddr, glommio::ExecutorJoinHandle<(usize, u64, u64)>) {
    let (address_tx, address_rx) = mpsc::channel();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bound-test")
        .spawn(move || async move {
            let identity = LocalIdentity {
                cluster_id: CLUSTER,
                node_id: 1,
                shard_id: 0,
            };
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), NetConfig::new(identity)).unwrap();
            let default_bound = listener.connections_max();
            listener.set_connections_max(BOUND);
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
                                responses: requests
                                    .requests
                                    .iter()
                                    .map(|r| {
                                        let ArchivedClientRequest::Read { request_id, .. } = r else {
                                            panic!("the test only sends reads");
                                        };
                                        ClientResponse {
                                            client_id: 9,
                                            request_id: request_id.to_native(),
                                            group: 1,
                                            leader_hint: None,
                                            result: Ok(Vec::new()),
                                        }
                                    })
                                    .collect(),
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
            (
                default_bound,
                stats.get(Counter::RefusedOverLimit),
                stats.get(Counter::HandshakesAccepted),
            )
        })
        .unwrap();
    (address_rx.recv().unwrap(), handle)
}

fn connect(address: SocketAddr) -> Result<BlockingConnection, coraft_net::NetError> {
    let hello = Hello {
        cluster_id: CLUSTER,
        node_id: 9,
        shard_id: 0,
        target_shard_id: 0,
        target_node_id: 1,
        role: Role::Client,
        client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
    };
    BlockingConnection::connect(address, &hello, TIMEOUT)
}

fn assert_served(connection: &mut BlockingConnection, request_id: u64) {
    let request = ClientRequestBatch {
        requests: vec![ClientRequest::Read {
            client_id: 9,
            request_id,
            group: 1,
            payload: Vec::new(),
            consistency: Default::default(),
        }],
    };
    connection.send(&request).unwrap();
    let frame = connection.recv().unwrap().expect("still served");
    assert_eq!(
        frame.client_responses().unwrap().responses[0].request_id.to_native(),
        request_id
    );
}

#[test]
fn listener_holds_its_connection_bound_and_keeps_serving() {
    let stop = Arc::new(AtomicBool::new(false));
    let (address, server) = start_server(stop.clone());
    let mut open: Vec<BlockingConnection> = (0..BOUND)
        .map(|_| connect(address).expect("within the bound"))
        .collect();
    for (i, connection) in open.iter_mut().enumerate() {
        assert_served(connection, i as u64);
    }
    // Over the bound: closed before the handshake is answered, every time.
    for _ in 0..3 {
        let refused = connect(address).expect_err("over the bound");
        assert!(
            matches!(
                refused,
                coraft_net::NetError::BadHandshake { .. } | coraft_net::NetError::Io { .. }
            ),
            "{refused:?}"
        );
    }
    // The open ones are still served.
    for (i, connection) in open.iter_mut().enumerate() {
        assert_served(connection, 100 + i as u64);
    }
    // One closes; the listener takes a new connection once it noticed.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replacement = loop {
        match connect(address) {
            Ok(connection) => break connection,
            Err(error) => assert!(Instant::now() < deadline, "no new connection after one closed: {error}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_served(&mut replacement, 200);
    drop(replacement);
    drop(open);
    stop.store(true, Ordering::Relaxed);
    let (default_bound, refused, accepted) = server.join().unwrap();
    assert_eq!(default_bound, INBOUND_CONNECTIONS_MAX);
    assert!(refused >= 3, "refused over the limit: {refused}");
    assert_eq!(accepted, BOUND as u64 + 1);
}
