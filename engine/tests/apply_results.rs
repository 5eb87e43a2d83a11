//! Results written into the engine's lent buffer (`on_apply_into`), on a
//! real 3-node cluster in one process (glommio executors, loopback TCP,
//! real WALs in temp dirs): the clients get each write's own result, from
//! a state machine on its shard and from one on its apply lane; a state
//! machine with only `on_apply` still answers; a result past the bound is
//! refused with an error naming it, and the group goes on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coraft::api::{ApplyResults, Command, Error, OffShard, ResultTooLarge, StateMachine, APPLY_RESULT_BYTES_MAX};
use coraft::client::{Client, ClientConfig, ClientFailure};
use coraft::raft::{GroupId, NodeId, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory, REQUEST_TIMEOUT};
use coraft_net::schema::{ClientError, ClientRequest, ClientRequestBatch, ClientResponseBatch};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};

/// `Echo` on the shard.
const INTO_SHARD: GroupId = GroupId(1);
/// `Echo` on its apply lane.
const INTO_LANE: GroupId = GroupId(2);
/// `OldEcho` (only `on_apply`) on the shard.
const OLD_SHARD: GroupId = GroupId(3);
/// `OldEcho` on its apply lane.
const OLD_LANE: GroupId = GroupId(4);
const GROUPS: [GroupId; 4] = [INTO_SHARD, INTO_LANE, OLD_SHARD, OLD_LANE];

/// A command starting with this gets a result one byte past the bound.
const BIG: &[u8] = b"big";

/// What both state machines answer a command with.
fn echo(data: &[u8]) -> Vec<u8> {
    [b"echo:".as_slice(), data].concat()
}

/// Answers each command with `echo(data)`, written into the lent buffer;
/// counts the results the buffer refused.
struct Echo {
    refused: Arc<AtomicUsize>,
}

impl StateMachine for Echo {
    fn on_apply(&mut self, _commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        panic!("the engine calls on_apply_into")
    }

    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        for command in commands {
            let pushed = if command.data.starts_with(BIG) {
                out.push_with(|bytes| bytes.resize(bytes.len() + APPLY_RESULT_BYTES_MAX + 1, 7))
            } else {
                out.push_with(|bytes| {
                    bytes.extend_from_slice(b"echo:");
                    bytes.extend_from_slice(command.data);
                })
            };
            if let Err(refused) = pushed {
                assert_eq!(
                    refused,
                    ResultTooLarge::Result {
                        bytes: APPLY_RESULT_BYTES_MAX + 1
                    }
                );
                assert_eq!(refused.bound(), "APPLY_RESULT_BYTES_MAX");
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The same answers from `on_apply` alone (the default `on_apply_into`
/// copies them in).
struct OldEcho;

impl StateMachine for OldEcho {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands
            .map(|command| {
                if command.data.starts_with(BIG) {
                    vec![7; APPLY_RESULT_BYTES_MAX + 1]
                } else {
                    echo(command.data)
                }
            })
            .collect()
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    nodes: Vec<Node>,
    refused: Arc<AtomicUsize>,
}

impl Cluster {
    fn start() -> Cluster {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let addresses = coraft::ports::free_loopback_addresses(3).unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = refused.clone();
        let factory: StateMachineFactory = Arc::new(move |group| match group {
            INTO_SHARD => Box::new(Echo {
                refused: counted.clone(),
            }),
            INTO_LANE => Box::new(OffShard::new(Echo {
                refused: counted.clone(),
            })),
            OLD_SHARD => Box::new(OldEcho),
            _ => Box::new(OffShard::new(OldEcho)),
        });
        let nodes = (1..=3)
            .map(|n| {
                let id = NodeId(n);
                let options = NodeOptions {
                    cluster_id: 7,
                    node_id: id,
                    peers: addresses
                        .iter()
                        .enumerate()
                        .map(|(i, &a)| PeerSpec {
                            id: NodeId(i as u64 + 1),
                            shard_addresses: vec![a],
                        })
                        .collect(),
                    shard_cores: vec![None],
                    helper_cores: None,
                    wal_dir: dir.path().join(format!("node-{id}")),
                    shard_wal_dirs: Vec::new(),
                    wal_segment_bytes: 8 << 20,
                    wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
                    wal_polled_io: false,
                    wal_dsync_small_flush_bytes: coraft_wal::config::DSYNC_SMALL_FLUSH_BYTES_DEFAULT,
                    groups: GROUPS.to_vec(),
                    tick: Duration::from_millis(10),
                    // Generous: the machine running the tests may be loaded.
                    election_timeout_ticks: 50,
                    heartbeat_interval_ticks: 5,
                    read_mode: coraft::raft::ReadMode::Safe,
                    protocol: Default::default(),
                    limits: Default::default(),
                    spin_before_park: None,
                    metrics_listen: None,
                    quiesce_idle_groups: true,
                    request_timeout: REQUEST_TIMEOUT,
                    session_timeout: Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
                    snapshot: Default::default(),
                };
                Node::start(options, factory.clone()).expect("node starts")
            })
            .collect();
        Cluster {
            _dir: dir,
            addresses,
            nodes,
            refused,
        }
    }

    /// Waits for the one node leading `group`.
    fn leader(&self, group: GroupId) -> &Node {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leaders: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| block(n.group(group).status()).is_ok_and(|s| s.role == Role::Leader))
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader of group {group} in 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig {
            cluster_id: 7,
            nodes: self
                .addresses
                .iter()
                .enumerate()
                .map(|(i, &a)| (NodeId(i as u64 + 1), vec![a]))
                .collect(),
            attempt_timeout: Duration::from_secs(5),
        })
    }

    /// Applies through the embedding API on the leader of `group`,
    /// following leader changes.
    fn apply(&self, group: GroupId, data: &[u8]) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match block(self.leader(group).group(group).apply(data.to_vec())) {
                Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

/// Writes through a session, retried while the cluster elects.
fn write(client: &mut Client, group: GroupId, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.write(group, data) {
            Ok(result) => return result,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no write to group {group} succeeded in 60 s: {error}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Payloads of every size class: empty, kept in place by the session
/// table, kept on its heap, several KiB.
fn payload(client: usize, i: usize) -> Vec<u8> {
    let length = [0, 3, 40, 5000][i % 4];
    let mut data = format!("c{client}-w{i}:").into_bytes();
    data.resize(data.len() + length, b'a' + (i % 26) as u8);
    data
}

#[test]
fn clients_get_each_writes_own_result_from_the_lent_buffer_on_the_shard_and_on_the_lane_and_from_on_apply_alone() {
    let cluster = Cluster::start();
    for group in GROUPS {
        // One write first, so that every group has its leader.
        assert_eq!(cluster.apply(group, b"first"), Ok(echo(b"first")));
    }
    // Concurrent clients, so that batches carry several results (one
    // buffer) and response frames several answers.
    let config_cluster = &cluster;
    std::thread::scope(|scope| {
        for c in 0..4 {
            scope.spawn(move || {
                let mut client = config_cluster.client();
                for i in 0..40 {
                    for group in GROUPS {
                        let data = payload(c, i);
                        assert_eq!(
                            write(&mut client, group, &data),
                            echo(&data),
                            "client {c}, write {i}, group {group}"
                        );
                    }
                }
                // A retry is answered from the session table's copy.
                let last = payload(c, 39);
                let retried = client
                    .retry_write()
                    .unwrap_or_else(|error| panic!("client {c}'s retry failed: {error}"));
                assert_eq!(retried, echo(&last), "client {c}'s retry");
            });
        }
    });
    // And through the embedding API (a vector per answer there).
    for group in GROUPS {
        assert_eq!(cluster.apply(group, b"last"), Ok(echo(b"last")), "group {group}");
    }
}

#[test]
fn a_result_past_its_bound_is_refused_with_an_error_naming_the_bound_and_the_group_goes_on() {
    let cluster = Cluster::start();
    for group in GROUPS {
        assert_eq!(cluster.apply(group, b"first"), Ok(echo(b"first")));
        match cluster.apply(group, b"big result") {
            Err(Error::ResultTooLarge { reason }) => {
                assert_eq!(
                    reason,
                    ResultTooLarge::Result {
                        bytes: APPLY_RESULT_BYTES_MAX + 1
                    },
                    "group {group}"
                );
                assert!(
                    reason.to_string().contains("APPLY_RESULT_BYTES_MAX"),
                    "the error names the bound: {reason}"
                );
            }
            other => panic!("group {group}: the oversize result got {other:?}"),
        }
        // The group goes on applying and answering.
        assert_eq!(cluster.apply(group, b"after"), Ok(echo(b"after")), "group {group}");
    }
    // `Echo` saw its push refused on each of the three replicas of each
    // of its two groups (the followers apply it too).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.refused.load(Ordering::Relaxed) < 6 {
        assert!(
            Instant::now() < deadline,
            "Echo saw {} refusals, not 6",
            cluster.refused.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cluster.refused.load(Ordering::Relaxed), 6);
    // A network client's write gets the distinct error (not `Storage`,
    // which would send it to the other nodes before it gave up), at once,
    // and the connection goes on serving.
    let mut client = cluster.client();
    assert_eq!(write(&mut client, INTO_SHARD, b"ok"), echo(b"ok"));
    assert_eq!(
        client.write(INTO_SHARD, b"big again"),
        Err(ClientFailure::ResultTooLarge)
    );
    // Applied: its retry gets the session table's empty result.
    assert_eq!(client.retry_write(), Ok(Vec::new()));
    assert_eq!(write(&mut client, INTO_SHARD, b"ok again"), echo(b"ok again"));
    // A client from before client protocol 1 (zeros in its hello) is
    // answered `Storage`, which it can read, and goes on too.
    let leader = cluster.leader(INTO_SHARD).id();
    let mut old = OldClient::connect(cluster.addresses[leader.0 as usize - 1]);
    assert_eq!(
        old.call(ClientRequest::RegisterSession {
            client_id: 1,
            request_id: 1,
            group: INTO_SHARD.0,
            session: 77,
        }),
        Ok(Vec::new())
    );
    assert_eq!(old.write(1, b"big from an old client"), Err(ClientError::Storage));
    assert_eq!(old.write(2, b"old ok"), Ok(echo(b"old ok")));
}

/// A client connection of client protocol 0, as every client built before
/// `ClientError::ResultTooLarge` opened it.
struct OldClient {
    connection: BlockingConnection,
}

impl OldClient {
    fn connect(address: SocketAddr) -> OldClient {
        let hello = Hello {
            cluster_id: 7,
            node_id: 99,
            shard_id: 0,
            target_shard_id: 0,
            target_node_id: 0,
            role: NetRole::Client,
            client_protocol: 0,
        };
        let connection = BlockingConnection::connect(address, &hello, Duration::from_secs(10)).unwrap();
        connection.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        OldClient { connection }
    }

    fn write(&mut self, sequence: u64, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(ClientRequest::Propose {
            client_id: 1,
            session: 77,
            sequence,
            lowest_unanswered: sequence,
            group: INTO_SHARD.0,
            payload: payload.to_vec(),
        })
    }

    fn call(&mut self, request: ClientRequest) -> Result<Vec<u8>, ClientError> {
        self.connection
            .send(&ClientRequestBatch {
                requests: vec![request],
            })
            .unwrap();
        loop {
            let frame = self.connection.recv().unwrap().expect("the node answers");
            if let Some(archived) = frame.client_responses() {
                let batch = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived).unwrap();
                return batch.responses.into_iter().next().expect("one answer").result;
            }
        }
    }
}
