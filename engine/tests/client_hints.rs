//! The client library's retry policy when two nodes point at each other.
//!
//! During a leadership transfer the old leader refuses new requests with
//! `NotLeader { leader_hint: target }` while the target, not yet elected,
//! still names the old leader. A client that follows every hint at once
//! bounces between them and spends its [`ATTEMPTS_MAX`] attempts in a few
//! round trips, well before the target wins its election: the request ends
//! `GaveUp`, an unknown outcome (issue 14: the chaos campaign's `transfer`
//! runs had 18). The client must back off when a hint sends it back to a
//! node it already asked in this call.
//!
//! The two nodes are stand-ins on real sockets speaking the real client
//! protocol (a real election cannot be held open for a set time): node 1
//! always answers `NotLeader` naming node 2; node 2 names node 1 until the
//! window has passed since the first request, then answers as a leader.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coraft::client::{Client, ClientConfig, ClientFailure, ATTEMPTS_MAX};
use coraft::raft::{GroupId, NodeId};
use coraft_net::schema::{ClientError, ClientRequest, ClientRequestBatch, ClientResponse, ClientResponseBatch};

const CLUSTER: u64 = 0x7e57_c11e;
const GROUP: u64 = 3;
/// How long the two stand-ins point at each other: longer than the
/// attempts of a client that never backs off take on a loaded machine, and
/// much shorter than the attempts of one that backs off.
const TRANSFER_WINDOW: Duration = Duration::from_secs(2);

/// What the stand-ins share: when the first request came, and how many
/// requests each got.
#[derive(Default)]
struct Shared {
    first_request: Mutex<Option<Instant>>,
    requests: [AtomicUsize; 2],
}

/// A stand-in for node `node` (1 or 2) at `address`: serves one client
/// connection, answering every request as described above, then ends.
fn stand_in(node: u64, address: SocketAddr, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    let (ready, listening) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async move {
                let identity = coraft_net::LocalIdentity {
                    cluster_id: CLUSTER,
                    node_id: node,
                    shard_id: 0,
                };
                let listener = coraft_net::Listener::bind(address, coraft_net::NetConfig::new(identity)).unwrap();
                ready.send(()).unwrap();
                let mut connection = listener.accept().await.unwrap().handshake().await.unwrap();
                let mut writer = connection.take_response_writer().unwrap();
                while let Ok(Some(frame)) = connection.recv().await {
                    let Some(archived) = frame.client_requests() else {
                        continue;
                    };
                    let batch = rkyv::deserialize::<ClientRequestBatch, rkyv::rancor::Error>(archived).unwrap();
                    let mut responses = Vec::new();
                    for request in batch.requests {
                        let (client_id, request_id) = match request {
                            ClientRequest::Read {
                                client_id, request_id, ..
                            }
                            | ClientRequest::RegisterSession {
                                client_id, request_id, ..
                            } => (client_id, request_id),
                            ClientRequest::Propose {
                                client_id, sequence, ..
                            } => (client_id, sequence),
                        };
                        shared.requests[node as usize - 1].fetch_add(1, Ordering::Relaxed);
                        let first = *shared.first_request.lock().unwrap().get_or_insert_with(Instant::now);
                        let elected = node == 2 && first.elapsed() >= TRANSFER_WINDOW;
                        let other = 3 - node;
                        responses.push(ClientResponse {
                            client_id,
                            request_id,
                            group: GROUP,
                            leader_hint: Some(if elected { node } else { other }),
                            result: if elected {
                                Ok(b"answered by the new leader".to_vec())
                            } else {
                                Err(ClientError::NotLeader {
                                    leader_hint: Some(other),
                                })
                            },
                        });
                    }
                    if writer.send(&ClientResponseBatch { responses }).await.is_err() {
                        break;
                    }
                }
            });
    });
    listening.recv().unwrap();
    thread
}

#[test]
fn a_client_sent_back_and_forth_by_two_hints_backs_off_and_outlasts_a_leadership_transfer() {
    let addresses = coraft::ports::free_loopback_addresses(2).unwrap();
    let shared = Arc::new(Shared::default());
    let servers: Vec<_> = (1..=2)
        .map(|node| stand_in(node, addresses[node as usize - 1], shared.clone()))
        .collect();
    let mut client = Client::new(ClientConfig {
        cluster_id: CLUSTER,
        nodes: vec![(NodeId(1), vec![addresses[0]]), (NodeId(2), vec![addresses[1]])],
        attempt_timeout: Duration::from_secs(10),
    });
    let started = Instant::now();
    let result = client.read(GroupId(GROUP), b"query");
    let took = started.elapsed();
    let asked = [
        shared.requests[0].load(Ordering::Relaxed),
        shared.requests[1].load(Ordering::Relaxed),
    ];
    drop(client);
    for server in servers {
        server.join().unwrap();
    }
    println!("result {result:?} after {took:?}; requests to nodes 1 and 2: {asked:?}");
    match result {
        Ok(answer) => assert_eq!(answer, b"answered by the new leader"),
        Err(ClientFailure::GaveUp { attempts, last }) => panic!(
            "the client gave up after {attempts} attempts in {took:?} ({asked:?} requests to nodes 1 and 2; \
             last: {last}) while the two nodes pointed at each other for {TRANSFER_WINDOW:?}"
        ),
        Err(other) => panic!("unexpected failure {other:?}"),
    }
    assert!(asked.iter().sum::<usize>() <= ATTEMPTS_MAX, "{asked:?}");
    assert!(took >= TRANSFER_WINDOW, "answered before the window ended: {took:?}");
}
