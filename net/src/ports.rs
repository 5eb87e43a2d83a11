//! Free loopback addresses for tests and local clusters.
//!
//! The usual trick — bind port 0, read the port, drop the listener, hand the
//! port to a node — races on a busy machine: the port comes from the kernel's
//! ephemeral range, and until the node binds it, any outbound connection on
//! the machine may be given the same port as its source port. The node then
//! fails with "Address already in use". When many tests start clusters at
//! once, that happens.
//!
//! [`free_loopback_addresses`] picks ports *below* the ephemeral range
//! (read from `/proc/sys/net/ipv4/ip_local_port_range`), which the kernel never
//! hands out on its own, starting at a point drawn per process so that test
//! processes running side by side rarely probe the same ports, and never
//! handing out a port twice within one process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const PORT_LOW: u32 = 10_000;
/// The ephemeral range's start when `/proc` does not say (Linux's default).
const EPHEMERAL_LOW_DEFAULT: u32 = 32_768;
/// How many ports one call probes before it gives up.
const PROBES_MAX: u32 = 4_096;

/// Offset of the next probe from this process's starting point.
static NEXT: AtomicU32 = AtomicU32::new(0);

fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_LOW_DEFAULT)
}

fn process_start(span: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (std::process::id().wrapping_mul(2_654_435_761)) ^ nanos.wrapping_mul(40_503);
    mixed % span
}

static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Returns `count` distinct `127.0.0.1` addresses whose ports were free a
/// moment ago and lie outside the kernel's ephemeral range, so no outbound
/// connection takes them before they are bound. Falls back to port 0
/// binding when the ephemeral range leaves no room below it.
pub fn free_loopback_addresses(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let high = ephemeral_low();
    if high <= PORT_LOW + 1_000 {
        let listeners = (0..count)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        return listeners.iter().map(|l| l.local_addr()).collect();
    }
    let span = high - PORT_LOW;
    let start = *START.get_or_init(|| process_start(span));
    let mut held = Vec::with_capacity(count);
    for _ in 0..PROBES_MAX {
        if held.len() == count {
            break;
        }
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_LOW + (start + offset) % span;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(listener);
        }
    }
    if held.len() < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("found {} of {count} free loopback ports below {high}", held.len()),
        ));
    }
    held.iter().map(|l| l.local_addr()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_bindable_and_below_the_ephemeral_range() {
        let first = free_loopback_addresses(5).unwrap();
        let second = free_loopback_addresses(5).unwrap();
        let mut all: Vec<_> = first.iter().chain(&second).map(|a| a.port()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 10, "a port was handed out twice: {first:?} {second:?}");
        for address in first.iter().chain(&second) {
            assert!(u32::from(address.port()) < ephemeral_low());
            TcpListener::bind(address).expect("the handed-out port is free");
        }
    }
}
