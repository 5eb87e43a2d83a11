//! A fault-injecting TCP proxy of our own, one per directed link between
//! two nodes: node `i` is configured to reach peer `j` at the listening
//! address of the proxy for the link `i → j`, which forwards to `j`'s real
//! address. The proxies carry only node-to-node traffic; clients reach the
//! nodes directly. What a link does is set by [`LinkFaults`], at any time:
//!
//! * **delay and jitter**: every chunk read from the sender is held
//!   `delay + [0, jitter)` before it is written on. Order within one
//!   connection is kept (a chunk is never written before the one read
//!   before it), so only data on *different* connections is reordered:
//!   one link's messages against another's, and an old connection's
//!   against its replacement's.
//! * **resets**: each connection lives a drawn lifetime, then the proxy
//!   closes it abruptly on the sender's side (`SO_LINGER` 0: a reset), and
//!   the sender reconnects through the proxy. What the proxy still held for
//!   it is either discarded ([`LinkFaults::late_delivery`] off) or delivered
//!   late on the old connection to the receiver, after the extra hold, while
//!   the new connection already carries newer messages: the receiver gets
//!   old messages after new ones ([`LinkFaults::late_delivery`] on).
//! * **stalls** ("lossy" links): TCP cannot lose bytes inside a connection
//!   it keeps, so a lossy link loses them the only way a TCP peer can see:
//!   for the last [`LinkFaults::stall_ms`] of a connection's lifetime the
//!   proxy keeps reading (the sender's writes succeed, its kernel sees them
//!   acknowledged) and forwards nothing; then it resets the connection. The
//!   bytes read during the stall are lost: messages the sender believes
//!   sent never arrive, and the connection then fails.
//!
//! The return direction of a connection (the handshake's reply) is
//! forwarded as it comes. Each proxy counts what it did ([`LinkCounters`]).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::rng::Rng;
use crate::RunError;

/// Bytes read from a socket at once.
const CHUNK_BYTES: usize = 64 << 10;
/// Bound on the bytes one connection's proxy holds (delayed or waiting for
/// late delivery); past it the proxy stops reading, so TCP's flow control
/// slows the sender.
pub const HELD_BYTES_MAX: usize = 8 << 20;
/// How often an idle pump or accept loop looks at its settings and the
/// stop flag.
const POLL: Duration = Duration::from_millis(10);
/// How long the proxy waits for its target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a write to a receiver may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one link does now; the default forwards at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkFaults {
    /// Every chunk is held this long at least.
    pub delay_ms: u64,
    /// Plus a random `[0, jitter_ms)` drawn per chunk.
    pub jitter_ms: u64,
    /// Connections are reset after a lifetime drawn from this range
    /// (`None`: they live until an end closes them).
    pub lifetime_ms: Option<(u64, u64)>,
    /// The last part of a connection's lifetime during which it forwards
    /// nothing and discards what it reads (0: no stall).
    pub stall_ms: u64,
    /// At a reset, deliver what was held to the receiver this much later on
    /// the old connection instead of discarding it (`None`: discard).
    pub late_delivery: Option<u64>,
}

impl LinkFaults {
    /// Whether the link behaves as a plain forwarder.
    pub fn is_clean(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// What one proxy did, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    /// Connections accepted from the sender.
    pub connections: u64,
    /// Bytes written on to the receiver.
    pub bytes_forwarded: u64,
    /// Bytes written on later than read because of a delay.
    pub bytes_delayed: u64,
    /// Connections the proxy reset on the sender's side.
    pub resets: u64,
    /// Bytes read and never delivered (stalls, resets that discard).
    pub bytes_lost: u64,
    /// Bytes delivered on an old connection after it was reset.
    pub bytes_late: u64,
}

impl LinkCounters {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &LinkCounters) -> LinkCounters {
        LinkCounters {
            connections: self.connections - earlier.connections,
            bytes_forwarded: self.bytes_forwarded - earlier.bytes_forwarded,
            bytes_delayed: self.bytes_delayed - earlier.bytes_delayed,
            resets: self.resets - earlier.resets,
            bytes_lost: self.bytes_lost - earlier.bytes_lost,
            bytes_late: self.bytes_late - earlier.bytes_late,
        }
    }

    /// Field-by-field sum.
    pub fn add(&mut self, other: &LinkCounters) {
        self.connections += other.connections;
        self.bytes_forwarded += other.bytes_forwarded;
        self.bytes_delayed += other.bytes_delayed;
        self.resets += other.resets;
        self.bytes_lost += other.bytes_lost;
        self.bytes_late += other.bytes_late;
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_delayed: AtomicU64,
    resets: AtomicU64,
    bytes_lost: AtomicU64,
    bytes_late: AtomicU64,
}

struct Shared {
    faults: Mutex<LinkFaults>,
    counters: Counters,
    stop: AtomicBool,
    /// Bumped by [`Proxy::reset_connections`]: connections older than it reset.
    reset_epoch: AtomicU64,
    seed: AtomicU64,
}

impl Shared {
    fn faults(&self) -> LinkFaults {
        *self.faults.lock().expect("proxy faults lock")
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One directed link's proxy: a listening socket and its threads, stopped
/// (every connection closed) when dropped.
pub struct Proxy {
    listen: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Makes the next close of `stream` send a reset instead of a FIN.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a `linger` of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Proxy {
    /// A proxy listening on `bind` (port 0: any free port) that forwards
    /// each connection to `target`; `seed` seeds its jitter and lifetimes.
    pub fn start(bind: SocketAddr, target: SocketAddr, seed: u64) -> Result<Proxy, RunError> {
        let listener = TcpListener::bind(bind).map_err(io_error(format!("binding a proxy on {bind}")))?;
        let listen = listener
            .local_addr()
            .map_err(io_error(format!("reading the proxy's address on {bind}")))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error(format!("setting the proxy on {listen} non-blocking")))?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(LinkFaults::default()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            reset_epoch: AtomicU64::new(0),
            seed: AtomicU64::new(seed),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", listen.port()))
                .spawn(move || accept_loop(listener, target, shared))
                .map_err(io_error("starting a proxy thread".into()))?
        };
        Ok(Proxy {
            listen,
            target,
            shared,
            accept: Some(accept),
        })
    }

    /// Where senders connect.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen
    }

    /// Where it forwards.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets what the link does from now on (chunks already held keep the
    /// time they were given).
    pub fn set_faults(&self, faults: LinkFaults) {
        *self.shared.faults.lock().expect("proxy faults lock") = faults;
    }

    /// What the link does now.
    pub fn faults(&self) -> LinkFaults {
        self.shared.faults()
    }

    /// Resets every connection open now, as if its lifetime had ended.
    pub fn reset_connections(&self) {
        self.shared.reset_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// What it did so far.
    pub fn counters(&self) -> LinkCounters {
        let c = &self.shared.counters;
        LinkCounters {
            connections: c.connections.load(Ordering::Relaxed),
            bytes_forwarded: c.bytes_forwarded.load(Ordering::Relaxed),
            bytes_delayed: c.bytes_delayed.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            bytes_lost: c.bytes_lost.load(Ordering::Relaxed),
            bytes_late: c.bytes_late.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        match listener.accept() {
            Ok((sender, _)) => {
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                let Ok(receiver) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
                    // The target is down: the sender sees its connection reset.
                    set_linger_zero(&sender);
                    continue;
                };
                let seed = shared.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
                let shared = shared.clone();
                if let Ok(pump) = std::thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || connection(sender, receiver, shared, seed))
                {
                    pumps.push(pump);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(POLL);
            }
            Err(_) => std::thread::sleep(POLL),
        }
        pumps.retain(|p| !p.is_finished());
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// One proxied connection: the sender-to-receiver direction here (with
/// the faults), the reply direction on a thread of its own (plain).
fn connection(sender: TcpStream, receiver: TcpStream, shared: Arc<Shared>, seed: u64) {
    let _ = sender.set_nodelay(true);
    let _ = receiver.set_nodelay(true);
    let _ = receiver.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = sender.set_write_timeout(Some(WRITE_TIMEOUT));
    let reply = match (receiver.try_clone(), sender.try_clone()) {
        (Ok(from), Ok(to)) => {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("proxy-reply".into())
                .spawn(move || reply_pump(from, to, shared))
                .ok()
        }
        _ => None,
    };
    forward_pump(&sender, &receiver, &shared, seed);
    // Both ends closed: the reply pump sees it and ends.
    let _ = sender.shutdown(Shutdown::Both);
    let _ = receiver.shutdown(Shutdown::Both);
    if let Some(reply) = reply {
        let _ = reply.join();
    }
}

/// The receiver's answers, back to the sender as they come.
fn reply_pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buffer = vec![0u8; CHUNK_BYTES];
    while !shared.stopping() {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

/// The sender's bytes to the receiver, with the link's faults.
fn forward_pump(sender: &TcpStream, receiver: &TcpStream, shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut queue: VecDeque<(Instant, bool, Vec<u8>)> = VecDeque::new();
    let mut held = 0usize;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let started = Instant::now();
    let epoch = shared.reset_epoch.load(Ordering::Relaxed);
    // When this connection stalls and when it is reset, once its link
    // has a lifetime (drawn the first time it is seen).
    let mut schedule: Option<(Instant, Instant)> = None;
    let mut last_release = started;
    let counters = &shared.counters;
    let mut sender_open = true;
    loop {
        if shared.stopping() {
            return;
        }
        let faults = shared.faults();
        let now = Instant::now();
        match (faults.lifetime_ms, schedule) {
            (Some((low, high)), None) => {
                let reset_at = now + Duration::from_millis(rng.between(low, high.max(low + 1)));
                let stall_at = reset_at
                    .checked_sub(Duration::from_millis(faults.stall_ms))
                    .unwrap_or(now);
                schedule = Some((stall_at.max(now), reset_at));
            }
            (None, Some(_)) => schedule = None,
            _ => {}
        }
        let reset_now = sender_open
            && (schedule.is_some_and(|(_, reset_at)| now >= reset_at)
                || shared.reset_epoch.load(Ordering::Relaxed) != epoch);
        let stalled = schedule.is_some_and(|(stall_at, _)| now >= stall_at);
        if reset_now {
            counters.resets.fetch_add(1, Ordering::Relaxed);
            set_linger_zero(sender);
            let _ = sender.shutdown(Shutdown::Both);
            sender_open = false;
            match faults.late_delivery {
                Some(hold_ms) => {
                    // Everything held goes out later, in order, on the old
                    // connection; then it closes.
                    let at = now + Duration::from_millis(hold_ms);
                    for (release, _, _) in queue.iter_mut() {
                        *release = (*release).max(at);
                    }
                }
                None => {
                    counters.bytes_lost.fetch_add(held as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
        // Write what is due.
        while let Some((release, _, _)) = queue.front() {
            if *release > Instant::now() {
                break;
            }
            let (_, delayed, chunk) = queue.pop_front().expect("a front");
            held -= chunk.len();
            if (&*receiver).write_all(&chunk).is_err() {
                counters
                    .bytes_lost
                    .fetch_add((chunk.len() + held) as u64, Ordering::Relaxed);
                return;
            }
            counters
                .bytes_forwarded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if !sender_open {
                counters.bytes_late.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            } else if delayed {
                counters.bytes_delayed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        if !sender_open {
            if queue.is_empty() {
                return;
            }
            std::thread::sleep(POLL);
            continue;
        }
        if held >= HELD_BYTES_MAX {
            std::thread::sleep(POLL);
            continue;
        }
        // Read, waiting at most until the next chunk is due.
        let wait = queue
            .front()
            .map_or(POLL, |(release, _, _)| {
                release.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(1), POLL);
        let _ = sender.set_read_timeout(Some(wait));
        match (&*sender).read(&mut buffer) {
            Ok(0) => {
                // The sender closed: deliver what is held, then close.
                sender_open = false;
            }
            Ok(n) => {
                if stalled {
                    counters.bytes_lost.fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                }
                let extra = faults.delay_ms + rng.between(0, faults.jitter_ms);
                let release = (Instant::now() + Duration::from_millis(extra)).max(last_release);
                last_release = release;
                held += n;
                queue.push_back((release, extra > 0, buffer[..n].to_vec()));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => sender_open = false,
        }
    }
}

/// The proxies of a cluster: one per ordered pair of distinct nodes.
pub struct Links {
    /// `proxies[from][to]` (0-based; `None` on the diagonal).
    proxies: Vec<Vec<Option<Proxy>>>,
}

impl Links {
    /// A proxy for every link between `targets` (each node's real Raft
    /// address), listening on `bind_ip` (any free port).
    pub fn start(targets: &[SocketAddr], bind_ip: std::net::IpAddr, seed: u64) -> Result<Links, RunError> {
        let mut rng = Rng::new(seed ^ 0x0050_524F_5859);
        let mut proxies = Vec::new();
        for from in 0..targets.len() {
            let mut row = Vec::new();
            for (to, &target) in targets.iter().enumerate() {
                row.push(if from == to {
                    None
                } else {
                    Some(Proxy::start(SocketAddr::new(bind_ip, 0), target, rng.next_u64())?)
                });
            }
            proxies.push(row);
        }
        Ok(Links { proxies })
    }

    /// How many nodes the links join.
    pub fn nodes(&self) -> usize {
        self.proxies.len()
    }

    /// The proxy of the link `from → to` (0-based, distinct).
    pub fn link(&self, from: usize, to: usize) -> &Proxy {
        self.proxies[from][to]
            .as_ref()
            .expect("a link joins two distinct nodes")
    }

    /// Every link's proxy.
    pub fn all(&self) -> impl Iterator<Item = ((usize, usize), &Proxy)> {
        self.proxies.iter().enumerate().flat_map(|(from, row)| {
            row.iter()
                .enumerate()
                .filter_map(move |(to, p)| Some(((from, to), p.as_ref()?)))
        })
    }

    /// Every link back to plain forwarding.
    pub fn heal(&self) {
        for (_, proxy) in self.all() {
            proxy.set_faults(LinkFaults::default());
        }
    }

    /// The sum of every link's counters.
    pub fn counters(&self) -> LinkCounters {
        let mut total = LinkCounters::default();
        for (_, proxy) in self.all() {
            total.add(&proxy.counters());
        }
        total
    }
}
