//! Outbound connections on glommio: delivery in order with batching,
//! back-pressure from the byte bound, isolation from a slow peer, reconnects
//! with backoff, refusals.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use coraft_net::schema::*;
use coraft_net::stats::Counter;
use coraft_net::{
    ConnectionState, InboundConnection, Listener, LocalIdentity, NetConfig, NetError, OutboundConnection, PeerAddress,
};
use glommio::{LocalExecutorBuilder, Placement};

const CLUSTER: u64 = 5;

fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

fn config(node_id: u64, cluster_id: u64) -> NetConfig {
    let mut config = NetConfig::new(LocalIdentity {
        cluster_id,
        node_id,
        shard_id: 0,
    });
    config.reconnect_backoff_min = Duration::from_millis(5);
    config.reconnect_backoff_max = Duration::from_millis(40);
    config
}

fn heartbeat(sequence: u64) -> Envelope {
    Envelope {
        group: sequence % 7,
        from: 2,
        to: 1,
        term: 1,
        body: RaftBody::Heartbeat(Heartbeat {
            commit_index: sequence,
            read_context: 0,
        }),
    }
}

fn append(payload_bytes: usize) -> Envelope {
    Envelope {
        group: 1,
        from: 2,
        to: 1,
        term: 1,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            leader_commit: 0,
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: entry_kind::NORMAL,
                data: vec![0x5a; payload_bytes].into(),
            }],
        }),
    }
}

fn peer(address: SocketAddr) -> PeerAddress {
    PeerAddress {
        node_id: 1,
        shard_id: 0,
        address,
    }
}

/// Accepts connections forever; records every heartbeat's commit index.
fn spawn_recording_server(listener: Rc<Listener>, seen: Rc<RefCell<Vec<u64>>>) {
    glommio::spawn_local(async move {
        while let Ok(handshaking) = listener.accept().await {
            let seen = Rc::clone(&seen);
            glommio::spawn_local(async move {
                let Ok(mut connection) = handshaking.handshake().await else {
                    return;
                };
                record(&mut connection, &seen).await;
            })
            .detach();
        }
    })
    .detach();
}

async fn record(connection: &mut InboundConnection, seen: &RefCell<Vec<u64>>) {
    while let Ok(Some(frame)) = connection.recv().await {
        for message in frame.raft().unwrap().messages.iter() {
            match &message.body {
                ArchivedRaftBody::Heartbeat(beat) => seen.borrow_mut().push(beat.commit_index.to_native()),
                _ => seen.borrow_mut().push(u64::MAX),
            }
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn outbound_delivers_every_message_in_order_batched_into_few_frames() {
    run(|| async {
        let listener = Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap());
        let seen = Rc::new(RefCell::new(Vec::new()));
        spawn_recording_server(Rc::clone(&listener), Rc::clone(&seen));
        let outbound = OutboundConnection::spawn(config(2, CLUSTER), peer(listener.local_addr())).unwrap();
        const MESSAGES: u64 = 20_000;
        for sequence in 0..MESSAGES {
            outbound.send(heartbeat(sequence)).await.unwrap();
        }
        wait_until("all messages arrived", || seen.borrow().len() == MESSAGES as usize).await;
        assert!(seen.borrow().iter().copied().eq(0..MESSAGES));
        let stats = outbound.stats();
        assert_eq!(stats.messages_sent, MESSAGES);
        assert_eq!(stats.connects, 1);
        assert!(
            stats.frames_sent < MESSAGES / 10,
            "{} frames: not batched",
            stats.frames_sent
        );
        assert_eq!(outbound.state(), ConnectionState::Connected);
        outbound.close().await;
    });
}

#[test]
fn large_payloads_sent_in_place_arrive_whole_in_order_across_many_frames() {
    run(|| async {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap();
        let outbound = OutboundConnection::spawn(config(2, CLUSTER), peer(listener.local_addr())).unwrap();
        const MESSAGES: u64 = 3000;
        // Payload sizes around the scatter threshold, contents tied to the index.
        let payload = |index: u64| -> Vec<u8> {
            let len = 900 + (index as usize * 37) % 5000;
            (0..len).map(|at| (at as u64 ^ index) as u8).collect()
        };
        let sender = glommio::spawn_local(async move {
            for index in 0..MESSAGES {
                let mut message = append(0);
                if let RaftBody::AppendEntries(append) = &mut message.body {
                    append.entries[0].index = index;
                    append.entries[0].data = payload(index).into();
                }
                outbound.send(message).await.unwrap();
            }
            outbound.flushed().await;
            let stats = outbound.stats();
            assert_eq!(stats.messages_sent, MESSAGES);
            assert!(stats.frames_sent > 1, "expected many frames");
            outbound.close().await;
        });
        let mut connection = listener.accept().await.unwrap().handshake().await.unwrap();
        let mut next = 0u64;
        while next < MESSAGES {
            let frame = connection.recv().await.unwrap().expect("stream ended early");
            for message in frame.raft().unwrap().messages.iter() {
                let ArchivedRaftBody::AppendEntries(append) = &message.body else {
                    panic!("not an append");
                };
                let entry = &append.entries[0];
                assert_eq!(entry.index.to_native(), next);
                assert_eq!(entry.data.as_slice(), payload(next).as_slice(), "payload {next}");
                next += 1;
            }
        }
        sender.await;
    });
}

#[test]
fn a_lone_message_is_sent_at_once_without_waiting_for_a_batch() {
    run(|| async {
        let listener = Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap());
        let seen = Rc::new(RefCell::new(Vec::new()));
        spawn_recording_server(Rc::clone(&listener), Rc::clone(&seen));
        let outbound = OutboundConnection::spawn(config(2, CLUSTER), peer(listener.local_addr())).unwrap();
        outbound.try_send(heartbeat(42)).unwrap();
        wait_until("the message arrived", || seen.borrow().as_slice() == [42]).await;
        assert_eq!(outbound.stats().frames_sent, 1);
        outbound.close().await;
    });
}

#[test]
fn full_queue_gives_back_pressure_and_a_slow_peer_does_not_block_others() {
    run(|| async {
        // A peer that completes the handshake and then never reads.
        let slow_listener = Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap());
        let held = Rc::new(RefCell::new(Vec::new()));
        {
            let (listener, held) = (Rc::clone(&slow_listener), Rc::clone(&held));
            glommio::spawn_local(async move {
                while let Ok(handshaking) = listener.accept().await {
                    if let Ok(connection) = handshaking.handshake().await {
                        held.borrow_mut().push(connection);
                    }
                }
            })
            .detach();
        }
        let fast_listener = Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap());
        let seen = Rc::new(RefCell::new(Vec::new()));
        spawn_recording_server(Rc::clone(&fast_listener), Rc::clone(&seen));

        let mut bounded = config(2, CLUSTER);
        bounded.outbound_queue_bytes_max = 256 * 1024;
        let slow = OutboundConnection::spawn(bounded, peer(slow_listener.local_addr())).unwrap();
        let fast = OutboundConnection::spawn(bounded, peer(fast_listener.local_addr())).unwrap();

        wait_until("connected to the slow peer", || {
            slow.state() == ConnectionState::Connected
        })
        .await;
        // Fill the queue until the kernel's socket buffers are full too and
        // nothing drains any more.
        let mut stable_rounds = 0;
        for _ in 0..500 {
            let full = loop {
                if let Err(error) = slow.try_send(append(64 * 1024)) {
                    break error;
                }
            };
            assert!(matches!(full, NetError::QueueFull { limit_bytes, .. } if limit_bytes == 256 * 1024));
            assert!(slow.held_bytes() <= 256 * 1024);
            let before = slow.stats().bytes_sent;
            glommio::timer::sleep(Duration::from_millis(20)).await;
            stable_rounds = if slow.stats().bytes_sent == before {
                stable_rounds + 1
            } else {
                0
            };
            if stable_rounds == 3 {
                break;
            }
        }
        assert_eq!(stable_rounds, 3, "the slow peer's socket never filled up");
        while slow.try_send(append(64 * 1024)).is_ok() {}

        // The waiting form waits (here: longer than 50 ms) instead of failing.
        let waited = futures_lite::future::or(async { Some(slow.send(append(64 * 1024)).await) }, async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            None
        })
        .await;
        assert!(waited.is_none(), "send must wait while the queue is full");

        // Meanwhile the other peer is served.
        for sequence in 0..100 {
            fast.send(heartbeat(sequence)).await.unwrap();
        }
        wait_until("the fast peer got everything", || seen.borrow().len() == 100).await;

        // A message larger than the bound can never be queued.
        assert!(matches!(
            fast.try_send(append(512 * 1024)),
            Err(NetError::MessageTooLarge { .. })
        ));
        slow.close().await;
        fast.close().await;
    });
}

#[test]
fn outbound_reconnects_with_backoff_until_the_peer_listens_and_after_it_drops_us() {
    run(|| async {
        // Nobody listens there yet; below the ephemeral range, so neither
        // another socket nor this dial (a TCP self-connect) takes the port
        // before the test listens on it.
        let address = coraft_net::ports::free_loopback_addresses(1).unwrap()[0];
        let outbound = OutboundConnection::spawn(config(2, CLUSTER), peer(address)).unwrap();
        wait_until("a failed attempt", || outbound.stats().failures >= 2).await;
        assert_ne!(outbound.state(), ConnectionState::Connected);
        outbound.try_send(heartbeat(1)).unwrap();

        let listener = Listener::bind(address, config(1, CLUSTER)).unwrap();
        let mut connection = listener.accept().await.unwrap().handshake().await.unwrap();
        let frame = connection.recv().await.unwrap().unwrap();
        assert_eq!(
            frame.raft().unwrap().messages.len(),
            1,
            "queued while down, sent once up"
        );
        assert_eq!(outbound.stats().connects, 1);

        // The peer drops the connection: the writer notices and comes back.
        drop(connection);
        let reconnected = Cell::new(None);
        let accept = async {
            let connection = listener.accept().await.unwrap().handshake().await.unwrap();
            reconnected.set(Some(connection));
        };
        let keep_sending = async {
            for sequence in 2.. {
                let _ = outbound.try_send(heartbeat(sequence));
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        };
        futures_lite::future::or(accept, keep_sending).await;
        let mut connection = reconnected.take().unwrap();
        // What was in flight on the broken connection is lost; new messages flow.
        wait_until("connected again", || outbound.state() == ConnectionState::Connected).await;
        outbound.try_send(heartbeat(1_000_000)).unwrap();
        assert!(connection.recv().await.unwrap().is_some());
        assert_eq!(outbound.stats().connects, 2);
        outbound.close().await;
    });
}

#[test]
fn outbound_to_a_foreign_cluster_is_refused_and_counted_on_both_sides() {
    run(|| async {
        let listener = Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), config(1, CLUSTER)).unwrap());
        spawn_recording_server(Rc::clone(&listener), Rc::new(RefCell::new(Vec::new())));
        let outbound = OutboundConnection::spawn(config(2, CLUSTER + 1), peer(listener.local_addr())).unwrap();
        wait_until("two refusals", || outbound.stats().refusals >= 2).await;
        assert_eq!(outbound.stats().connects, 0);
        assert!(listener.stats().get(Counter::RefusedForeignCluster) >= 2);
        outbound.close().await;
    });
}
