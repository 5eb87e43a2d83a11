//! The fault-injecting proxy on real sockets: a delayed link really holds
//! bytes and so reorders them against a later connection; a reset with late
//! delivery hands the receiver old bytes after newer ones; a stalled link
//! loses what the sender wrote, then resets the sender's connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coraft_chaos::proxy::{LinkFaults, Proxy};

/// What a sink received: (when, which of its connections, the bytes).
type Arrivals = Arc<Mutex<Vec<(Instant, usize, Vec<u8>)>>>;

/// A server that accepts connections and records every read.
fn sink() -> (SocketAddr, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let arrivals: Arrivals = Arc::default();
    let recorded = arrivals.clone();
    std::thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        return;
                    }
                    recorded
                        .lock()
                        .unwrap()
                        .push((Instant::now(), index, buffer[..n].to_vec()));
                }
            });
        }
    });
    (address, arrivals)
}

/// Waits (generously) until the sink has received `bytes` in all.
fn await_bytes(arrivals: &Arrivals, bytes: usize) -> Vec<(Instant, usize, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = arrivals.lock().unwrap().clone();
        if seen.iter().map(|(_, _, b)| b.len()).sum::<usize>() >= bytes || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the proxy closed `stream` on us (a read ends or fails) within 10 s.
fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn a_delayed_link_holds_bytes_and_a_later_connection_overtakes_them() {
    let (target, arrivals) = sink();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target, 1).unwrap();
    proxy.set_faults(LinkFaults {
        delay_ms: 1_500,
        ..LinkFaults::default()
    });
    let mut first = TcpStream::connect(proxy.listen_address()).unwrap();
    let sent = Instant::now();
    first.write_all(b"A").unwrap();
    // Let the proxy read it under the delay, then lift the delay.
    std::thread::sleep(Duration::from_millis(300));
    proxy.set_faults(LinkFaults::default());
    let mut second = TcpStream::connect(proxy.listen_address()).unwrap();
    second.write_all(b"B").unwrap();
    let seen = await_bytes(&arrivals, 2);
    let order: Vec<&[u8]> = seen.iter().map(|(_, _, b)| b.as_slice()).collect();
    assert_eq!(
        order,
        vec![b"B".as_slice(), b"A".as_slice()],
        "the later connection's byte must arrive first"
    );
    let a_arrived = seen[1].0;
    assert!(
        a_arrived.duration_since(sent) >= Duration::from_millis(1_500),
        "A arrived {:?} after it was sent, under a 1.5 s delay",
        a_arrived.duration_since(sent)
    );
    let counters = proxy.counters();
    assert_eq!(counters.connections, 2);
    assert_eq!(counters.bytes_forwarded, 2);
    assert_eq!(counters.bytes_delayed, 1);
}

#[test]
fn a_reset_with_late_delivery_hands_old_bytes_over_after_newer_ones() {
    let (target, arrivals) = sink();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target, 2).unwrap();
    proxy.set_faults(LinkFaults {
        delay_ms: 1_000,
        late_delivery: Some(1_000),
        ..LinkFaults::default()
    });
    let mut old = TcpStream::connect(proxy.listen_address()).unwrap();
    old.write_all(b"old").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    proxy.reset_connections();
    assert!(closed_by_proxy(&mut old), "the old connection was not reset");
    // The sender reconnects: its new bytes go straight through.
    proxy.set_faults(LinkFaults::default());
    let mut new = TcpStream::connect(proxy.listen_address()).unwrap();
    new.write_all(b"new").unwrap();
    let seen = await_bytes(&arrivals, 6);
    let order: Vec<(usize, &[u8])> = seen.iter().map(|(_, c, b)| (*c, b.as_slice())).collect();
    assert_eq!(order, vec![(1, b"new".as_slice()), (0, b"old".as_slice())]);
    let counters = proxy.counters();
    assert_eq!(counters.resets, 1);
    assert_eq!(counters.bytes_late, 3);
    assert_eq!(counters.bytes_lost, 0);
}

#[test]
fn a_stalled_link_loses_what_the_sender_wrote_then_resets_it() {
    let (target, arrivals) = sink();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), target, 3).unwrap();
    // A connection stalls for its whole 500 ms lifetime, then is reset.
    proxy.set_faults(LinkFaults {
        lifetime_ms: Some((500, 501)),
        stall_ms: 500,
        ..LinkFaults::default()
    });
    let mut lossy = TcpStream::connect(proxy.listen_address()).unwrap();
    // The write succeeds: the proxy reads the bytes.
    lossy.write_all(b"lost").unwrap();
    assert!(closed_by_proxy(&mut lossy), "the stalled connection was not reset");
    proxy.set_faults(LinkFaults::default());
    let mut kept = TcpStream::connect(proxy.listen_address()).unwrap();
    kept.write_all(b"kept").unwrap();
    let seen = await_bytes(&arrivals, 4);
    // Give a lost byte every chance to show up late.
    std::thread::sleep(Duration::from_millis(300));
    let seen_late = arrivals.lock().unwrap().clone();
    assert_eq!(seen.len(), seen_late.len());
    let bytes: Vec<&[u8]> = seen_late.iter().map(|(_, _, b)| b.as_slice()).collect();
    assert_eq!(bytes, vec![b"kept".as_slice()], "a stalled byte was delivered");
    let counters = proxy.counters();
    assert_eq!(counters.bytes_lost, 4);
    assert_eq!(counters.resets, 1);
    assert_eq!(counters.bytes_forwarded, 4);
}
