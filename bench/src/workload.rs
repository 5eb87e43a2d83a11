//! What the cluster benchmark's clients send, and the driver threads that
//! send it: closed loop (each client keeps one request outstanding, the
//! default) or open loop (`--rate`: requests fall due on a fixed schedule
//! and each one's latency counts from when it was due, so a stall is charged
//! to every request it delayed — no coordinated omission).
//!
//! Writes go through the log under a client session; reads are the client
//! protocol's linearizable reads (ReadIndex or the leader's lease, as the
//! nodes are configured, or sent to a follower, which asks the leader for
//! the read index and answers from its own state machine).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::api::KvOp;
use coraft::raft::{GroupId, NodeId};
use coraft_net::schema::{
    ArchivedClientError, ClientError, ClientRequest, ClientRequestBatch, ClientResponseBatch, ReadConsistency,
};
use coraft_net::{BlockingConnection, Hello, NetError, Role as NetRole};
use hdrhistogram::Histogram;
use rkyv::result::ArchivedResult;
use serde::Serialize;

/// Bound on requests one driver sends in one frame.
const DRIVER_BATCH_MAX: usize = 4096;
/// Bound on requests an open-loop driver holds that fell due while every
/// client was busy; past it, due requests are counted as `unsent` (the
/// cluster is far behind the offered rate) rather than queued.
const OPEN_LOOP_BACKLOG_MAX: usize = 1 << 20;
/// The request id of session registrations (write sequences start at 1).
const REGISTER_REQUEST_ID: u64 = 0;
/// Read request ids carry this bit, so they never equal a write's sequence.
const READ_ID_BIT: u64 = 1 << 63;
/// Longest an open-loop driver waits on its socket before checking its
/// schedule again.
const OPEN_LOOP_POLL_MAX: Duration = Duration::from_millis(1);
/// A driver waiting longer than this for any frame on its connection while
/// requests are outstanding fails the run, naming the node and shard: a
/// live node answers every request within its own `REQUEST_TIMEOUT` (10 s),
/// if only with a timeout, so silence this long means the node (or one of
/// its shards) is stuck or gone. Also how long past the end of the run a
/// driver waits for its last answers.
pub const DRIVER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(DRIVER_READ_TIMEOUT.as_secs() > coraft::runtime::REQUEST_TIMEOUT.as_secs());

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Only writes (through the log).
    Write,
    /// Only linearizable reads.
    Read,
    /// Reads and writes, `--read-ratio` of them reads (chosen per request).
    Mixed,
}

/// How reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadPath {
    /// The leader confirms leadership with a heartbeat round per read batch (ReadIndex).
    ReadIndex,
    /// The leader answers within its lease (check-quorum on), no round.
    Lease,
    /// A follower asks the leader for the read index and answers from its own copy.
    Follower,
    /// A follower answers at once from what it has applied, without
    /// contacting the leader: possibly stale (`ReadConsistency::Stale`).
    Stale,
}

impl ReadPath {
    /// The consistency a read of this path asks for on the wire.
    pub fn consistency(self) -> ReadConsistency {
        match self {
            ReadPath::Stale => ReadConsistency::Stale,
            ReadPath::ReadIndex | ReadPath::Lease | ReadPath::Follower => ReadConsistency::Linearizable,
        }
    }
}

/// The state machine the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateMachineKind {
    /// Counts commands; a write carries `--payload` opaque bytes.
    Counter,
    /// `coraft::api::KvStore`: u64 registers over `--keys` keys.
    Kv,
}

impl StateMachineKind {
    /// As `coraft-node --state-machine` spells it.
    pub fn name(self) -> &'static str {
        match self {
            StateMachineKind::Counter => "counter",
            StateMachineKind::Kv => "kv",
        }
    }
}

/// What every client of a run sends.
#[derive(Debug, Clone)]
pub struct Mix {
    pub workload: Workload,
    pub read_ratio: f64,
    pub state_machine: StateMachineKind,
    pub keys: u64,
    pub payload: usize,
}

impl Mix {
    fn is_read(&self, rng: &mut Rng) -> bool {
        match self.workload {
            Workload::Write => false,
            Workload::Read => true,
            Workload::Mixed => rng.fraction() < self.read_ratio,
        }
    }

    /// The command of `client`'s write `sequence`, into `out`: the same
    /// bytes each time it is asked for, so a write sent again after
    /// `NotLeader` is the same command under the same sequence (a session
    /// refuses a sequence reused for another command).
    fn write_payload_into(&self, client: u64, sequence: u64, filler: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self.state_machine {
            StateMachineKind::Counter => out.extend_from_slice(filler),
            StateMachineKind::Kv => {
                let mut rng = Rng::new(client.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ sequence);
                KvOp::Write {
                    key: rng.below(self.keys),
                    value: rng.next(),
                }
                .encode_into(out)
            }
        }
    }

    /// A read's query, into `out`.
    fn read_query_into(&self, rng: &mut Rng, out: &mut Vec<u8>) {
        out.clear();
        match self.state_machine {
            StateMachineKind::Counter => {}
            StateMachineKind::Kv => KvOp::Read {
                key: rng.below(self.keys),
            }
            .encode_into(out),
        }
    }
}

/// xorshift64*: the drivers' key and mix choices (not the engine's).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters every driver adds to while it runs (read by the progress line).
#[derive(Default)]
pub struct Totals {
    /// Answered successfully, counted or not (warm-up included).
    pub answered: AtomicU64,
    /// Answered successfully within the measurement.
    pub completed: AtomicU64,
    /// Requests that failed and were not sent again (`NotLeader` answers
    /// followed to another node are counted in `not_leader` instead), and
    /// requests outstanding on a connection that closed (their outcome is
    /// unknown; each goes again, with the same session sequence, to another
    /// node: see [`LOST_NODE_BACKOFF_MIN`]).
    pub errors: AtomicU64,
    /// `NotLeader` answers: each one sent its request again, to the leader
    /// the answer named or to the next node (see [`Links`]).
    pub not_leader: AtomicU64,
    /// When set, every latency counted is also recorded here (`coraft-bench
    /// longrun` takes it window by window).
    pub window_latency_us: Option<std::sync::Mutex<Histogram<u64>>>,
}

/// First wait before a client that a node refused with `NotLeader` is sent
/// again, when the refusal named no leader this run knows (an election is
/// under way) or after [`REDIRECT_IMMEDIATE_MAX`] refusals in a row; doubled
/// per refusal in a row up to [`REDIRECT_BACKOFF_MAX`].
pub const REDIRECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between two tries of a client refused with `NotLeader`: a
/// leader change costs each client about its election time divided by
/// this, plus the first few, in retries.
pub const REDIRECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// `NotLeader` answers in a row that name a leader and are followed at
/// once; past them the client backs off too (two nodes naming each other
/// while a leader change settles must not make a busy loop).
pub const REDIRECT_IMMEDIATE_MAX: u32 = 2;

/// First wait before a client whose driver lost its node (the connection
/// closed or failed, or the node refused to connect) is sent again by a
/// driver of the next node; doubled each time in a row it loses a node, up
/// to [`LOST_NODE_BACKOFF_MAX`]. The client then follows `NotLeader` hints
/// from there as usual.
pub const LOST_NODE_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait of a client moved off a lost node: with every node down, a
/// client visits each node's driver at most once per this long.
pub const LOST_NODE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A client handed from one driver to another: its state, and when it may
/// send again.
pub struct Moved {
    client: Client,
    not_before: Instant,
}

/// How a driver hands its clients to the other drivers of its run when a
/// node answers `NotLeader`: to a driver of the node the answer names, or,
/// with no name, of the next node in turn, after a backoff
/// ([`REDIRECT_BACKOFF_MIN`] .. [`REDIRECT_BACKOFF_MAX`]). The client's
/// write goes again with the same session sequence and command, so the
/// cluster applies it once whatever became of the refused try.
pub struct Links {
    /// Where clients handed to this driver arrive. Its bound is the run's
    /// number of clients: a client is in one driver or one inbox at a time,
    /// so a hand-over never waits.
    pub inbox: Receiver<Moved>,
    /// Every node's drivers of this driver's shard, in turn order.
    pub peers: Arc<BTreeMap<NodeId, Vec<SyncSender<Moved>>>>,
}

impl Links {
    /// Where a client refused by `from` goes next, and how long it waits
    /// first: `redirects` is its number of `NotLeader` answers in a row.
    fn next_target(&self, from: NodeId, hint: Option<u64>, redirects: u32) -> (NodeId, Duration) {
        let backoff = REDIRECT_BACKOFF_MIN
            .saturating_mul(1 << redirects.saturating_sub(1).min(16))
            .min(REDIRECT_BACKOFF_MAX);
        match hint.map(NodeId) {
            Some(leader) if leader != from && self.peers.contains_key(&leader) => {
                let wait = if redirects <= REDIRECT_IMMEDIATE_MAX {
                    Duration::ZERO
                } else {
                    backoff
                };
                (leader, wait)
            }
            _ => {
                let next = self
                    .peers
                    .range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
                    .next()
                    .or_else(|| self.peers.iter().next())
                    .map_or(from, |(&node, _)| node);
                (next, backoff)
            }
        }
    }
}

/// One driver: a connection to one (node, shard), carrying many clients.
pub struct Driver {
    pub address: SocketAddr,
    pub cluster_id: u64,
    pub target_node: NodeId,
    pub shard: usize,
    /// (client id, its group): the clients it starts with.
    pub clients: Vec<(u64, GroupId)>,
    /// Open loop: this driver's share of `--rate`, requests per second.
    pub rate: Option<f64>,
    pub seed: u64,
    /// What its reads ask for (`--read-mode stale`: stale).
    pub read_consistency: ReadConsistency,
    /// Every node's address for this driver's shard: where a session
    /// registration refused with a leader hint is sent again.
    pub shard_addresses: BTreeMap<NodeId, SocketAddr>,
    /// The other drivers of the run, which take a client over when this
    /// driver's node does not lead its group. `None`: a `NotLeader` answer
    /// is an error, and the client's next request goes to the same node.
    pub links: Option<Links>,
}

impl Driver {
    /// Names the connection in errors: `node 2 shard 1 (127.0.0.1:7001)`.
    fn connection_name(&self) -> String {
        format!("node {} shard {} ({})", self.target_node, self.shard, self.address)
    }

    /// A connection to the driver's node and shard, with the driver's
    /// timeouts.
    fn connect(&self) -> Result<BlockingConnection> {
        let hello = Hello {
            cluster_id: self.cluster_id,
            node_id: self.clients.first().map_or(1, |c| c.0),
            shard_id: 0,
            target_shard_id: self.shard as u32,
            target_node_id: self.target_node.0,
            role: NetRole::Client,
            client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
        };
        let connection = BlockingConnection::connect(self.address, &hello, Duration::from_secs(5))
            .map_err(|error| anyhow!(error).context(format!("connecting to {}", self.connection_name())))?;
        connection.set_read_timeout(Some(DRIVER_READ_TIMEOUT))?;
        // A node that stops reading fills the socket's buffer: a send then
        // blocks, at most this long too.
        connection
            .stream()
            .set_write_timeout(Some(DRIVER_READ_TIMEOUT))
            .context("setting the connection's write timeout")?;
        Ok(connection)
    }
}

/// One run's drivers, linked ([`Links`]): for every node and shard in
/// `addresses`, the clients `planned` on it split over at most
/// `drivers_per_target` drivers, or one driver without clients where none
/// are planned, so that every node has a driver to take clients over when
/// it becomes their group's leader.
pub fn plan_drivers(
    cluster_id: u64,
    addresses: &BTreeMap<NodeId, Vec<SocketAddr>>,
    mut planned: BTreeMap<(NodeId, usize), Vec<(u64, GroupId)>>,
    drivers_per_target: usize,
    read_consistency: ReadConsistency,
) -> Result<Vec<Driver>> {
    if let Some(&(node, shard)) = planned
        .keys()
        .find(|(node, shard)| addresses.get(node).is_none_or(|a| a.get(*shard).is_none()))
    {
        bail!("clients are planned on node {node} shard {shard}, which the cluster does not have");
    }
    let clients_total: usize = planned.values().map(Vec::len).sum();
    let shards = addresses.values().map(Vec::len).max().unwrap_or(0);
    let mut drivers = Vec::new();
    for shard in 0..shards {
        let shard_addresses: BTreeMap<NodeId, SocketAddr> = addresses
            .iter()
            .filter_map(|(&id, addresses)| Some((id, *addresses.get(shard)?)))
            .collect();
        let mut peers: BTreeMap<NodeId, Vec<SyncSender<Moved>>> = BTreeMap::new();
        let mut unlinked = Vec::new();
        for (&node, &address) in &shard_addresses {
            let clients = planned.remove(&(node, shard)).unwrap_or_default();
            let chunk = clients.len().div_ceil(drivers_per_target.max(1)).max(1);
            let parts: Vec<Vec<(u64, GroupId)>> = if clients.is_empty() {
                vec![Vec::new()]
            } else {
                clients.chunks(chunk).map(<[_]>::to_vec).collect()
            };
            for part in parts {
                let (sender, inbox) = std::sync::mpsc::sync_channel(clients_total.max(1));
                peers.entry(node).or_default().push(sender);
                let seed = part
                    .first()
                    .map_or(shard as u64 + 1, |c| c.0)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ node.0;
                unlinked.push((
                    Driver {
                        address,
                        cluster_id,
                        target_node: node,
                        shard,
                        clients: part,
                        rate: None,
                        seed,
                        read_consistency,
                        shard_addresses: shard_addresses.clone(),
                        links: None,
                    },
                    inbox,
                ));
            }
        }
        let peers = Arc::new(peers);
        drivers.extend(unlinked.into_iter().map(|(mut driver, inbox)| {
            driver.links = Some(Links {
                inbox,
                peers: peers.clone(),
            });
            driver
        }));
    }
    Ok(drivers)
}

/// The next frame on `connection`, or an error naming the driver's
/// connection: the peer closed it, or sent nothing for `DRIVER_READ_TIMEOUT`
/// (the connection's read timeout) while `outstanding` requests wait.
fn next_frame(connection: &mut BlockingConnection, driver: &Driver, outstanding: usize) -> Result<coraft_net::Frame> {
    match connection.recv() {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => bail!(
            "{} closed the connection with {outstanding} requests outstanding",
            driver.connection_name()
        ),
        Err(error) if is_timeout(&error) => Err(silent(driver, outstanding)),
        Err(error) => Err(anyhow!(error).context(format!("waiting for {}", driver.connection_name()))),
    }
}

/// The error of a node that answered nothing for `DRIVER_READ_TIMEOUT`.
fn silent(driver: &Driver, outstanding: usize) -> anyhow::Error {
    anyhow!(
        "{} sent no answer within {} s (DRIVER_READ_TIMEOUT) with {outstanding} requests outstanding: \
         the node or that shard is stuck or gone",
        driver.connection_name(),
        DRIVER_READ_TIMEOUT.as_secs()
    )
}

/// Sends `batch`, or fails naming the driver's connection (a send blocked
/// for `DRIVER_READ_TIMEOUT` by a node that stopped reading, or an error).
fn send_batch(connection: &mut BlockingConnection, driver: &Driver, batch: &ClientRequestBatch) -> Result<()> {
    connection.send(batch).map_err(|error| send_failure(driver, error))
}

/// The error of a send to `driver`'s node that failed.
fn send_failure(driver: &Driver, error: NetError) -> anyhow::Error {
    if is_timeout(&error) {
        anyhow!(
            "{} took no requests for {} s (DRIVER_READ_TIMEOUT): the node or that shard is stuck or gone",
            driver.connection_name(),
            DRIVER_READ_TIMEOUT.as_secs()
        )
    } else {
        anyhow!(error).context(format!("sending to {}", driver.connection_name()))
    }
}

/// What one driver measured.
pub struct DriverResult {
    pub latency_us: Histogram<u64>,
    pub reads: u64,
    pub writes: u64,
    /// Open loop: requests that fell due but were never sent because the
    /// backlog was full.
    pub unsent: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn is_timeout(error: &NetError) -> bool {
    matches!(error, NetError::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// One client's state; it moves with the client from driver to driver.
struct Client {
    id: u64,
    group: GroupId,
    /// Its session (registered by the driver it started in).
    session: u128,
    /// The id of its outstanding request, if any.
    outstanding: Option<u64>,
    /// Its session's last write sequence.
    sequence: u64,
    /// Its read ids so far.
    reads: u64,
    /// When its outstanding request was due (closed loop: when it was first
    /// sent; a request sent again after `NotLeader` keeps it).
    due: Instant,
    read: bool,
    /// Its last request was refused with `NotLeader`: the next send is that
    /// request again (a write with the same sequence and command).
    again: bool,
    /// `NotLeader` answers in a row.
    redirects: u32,
    /// Nodes lost in a row under it ([`LOST_NODE_BACKOFF_MIN`]).
    lost: u32,
}

/// The clients a driver holds and where each one is.
struct Clients {
    slots: Vec<Option<Client>>,
    slot_of: HashMap<u64, usize>,
    /// Slots whose client left.
    vacant: Vec<usize>,
    /// Clients ready to send.
    free: Vec<usize>,
    /// Clients waiting out a backoff before they send again, with when.
    delayed: Vec<(Instant, usize)>,
    in_flight: usize,
}

impl Clients {
    fn take(&mut self, client: Client) -> usize {
        let id = client.id;
        let slot = match self.vacant.pop() {
            Some(slot) => {
                self.slots[slot] = Some(client);
                slot
            }
            None => {
                self.slots.push(Some(client));
                self.slots.len() - 1
            }
        };
        self.slot_of.insert(id, slot);
        slot
    }

    /// Places a client that arrived (or waits here) by when it may send.
    fn ready_at(&mut self, slot: usize, not_before: Instant, now: Instant) {
        if not_before <= now {
            self.free.push(slot);
        } else {
            self.delayed.push((not_before, slot));
        }
    }

    fn release(&mut self, slot: usize) -> Client {
        let client = self.slots[slot].take().expect("an occupied slot");
        self.slot_of.remove(&client.id);
        self.vacant.push(slot);
        client
    }

    /// Frees the delayed clients whose wait is over.
    fn wake(&mut self, now: Instant) {
        let free = &mut self.free;
        self.delayed.retain(|&(at, slot)| {
            if at <= now {
                free.push(slot);
            }
            at > now
        });
    }

    fn next_wake(&self) -> Option<Instant> {
        self.delayed.iter().map(|&(at, _)| at).min()
    }
}

/// Runs one driver until `stop_at` and every answer is in.
pub fn run_driver(
    driver: Driver,
    mix: Mix,
    measure_from: Instant,
    stop_at: Instant,
    totals: Arc<Totals>,
) -> Result<DriverResult> {
    // A driver that starts without clients connects when the first one is
    // handed to it.
    let mut connection = if driver.clients.is_empty() {
        None
    } else {
        Some(driver.connect()?)
    };
    let mut rng = Rng::new(driver.seed);
    let filler = vec![0x5a; mix.payload];
    // A session id is the client's id under this run's start time, unique per run.
    let run_bits = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let session = |slot: usize| (u128::from(run_bits) << 64) | u128::from(driver.clients[slot].0);
    if let Some(connection) = connection.as_mut() {
        if mix.workload != Workload::Read {
            register_sessions(connection, &driver, session)?;
        }
    }
    let now = Instant::now();
    let mut clients = Clients {
        slots: Vec::with_capacity(driver.clients.len()),
        slot_of: HashMap::with_capacity(driver.clients.len()),
        vacant: Vec::new(),
        free: Vec::new(),
        delayed: Vec::new(),
        in_flight: 0,
    };
    for (slot, &(id, group)) in driver.clients.iter().enumerate() {
        clients.take(Client {
            id,
            group,
            session: session(slot),
            outstanding: None,
            sequence: 0,
            reads: 0,
            due: now,
            read: false,
            again: false,
            redirects: 0,
            lost: 0,
        });
    }
    clients.free = (0..clients.slots.len()).rev().collect();
    let mut result = DriverResult {
        latency_us: new_histogram(),
        reads: 0,
        writes: 0,
        unsent: 0,
    };
    let mut batch = ClientRequestBatch { requests: Vec::new() };
    // The payload buffers of the requests sent, for the next ones.
    let mut spare_payloads: Vec<Vec<u8>> = Vec::new();
    // Open loop: requests due but not yet sent, and the schedule.
    let mut backlog: VecDeque<Instant> = VecDeque::new();
    let schedule_start = Instant::now();
    let mut scheduled: u64 = 0;
    let interval = driver
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut answers = Vec::new();
    // Closed loop: whether the socket's read timeout is shortened to wake a
    // delayed client, and when the node last sent a frame.
    let mut short_timeout = false;
    let mut last_frame = Instant::now();
    // Whether this driver said its node refused to connect.
    let mut refused_said = false;
    loop {
        let now = Instant::now();
        // Clients handed over by other drivers join.
        if let Some(links) = &driver.links {
            while let Ok(moved) = links.inbox.try_recv() {
                let slot = clients.take(moved.client);
                clients.ready_at(slot, moved.not_before, now);
            }
        }
        clients.wake(now);
        if connection.is_none() && !clients.free.is_empty() && now < stop_at {
            match (driver.connect(), &driver.links) {
                (Ok(connected), _) => {
                    connection = Some(connected);
                    last_frame = Instant::now();
                }
                (Err(error), Some(links)) => {
                    // Said once: clients may come back here while the node is down.
                    if !refused_said {
                        eprintln!("{error:#}: its clients go to another node");
                        refused_said = true;
                    }
                    leave_lost_node(&mut clients, &driver, links, &totals, now);
                    continue;
                }
                (Err(error), None) => return Err(error),
            }
        }
        // Open loop: every request that fell due joins the backlog.
        if let Some(interval) = interval {
            loop {
                let due = schedule_start + interval.mul_f64(scheduled as f64);
                if due > now || due >= stop_at {
                    break;
                }
                scheduled += 1;
                if backlog.len() < OPEN_LOOP_BACKLOG_MAX {
                    backlog.push_back(due);
                } else if due >= measure_from {
                    result.unsent += 1;
                }
            }
        }
        // Send: every free client at once (closed loop), or the due requests
        // while a client is free (open loop). A client sending again after
        // `NotLeader` goes first and keeps its request's due time.
        while let Some(&slot) = clients.free.last() {
            let client = clients.slots[slot].as_mut().expect("a free client is held");
            let due = if client.again {
                if interval.is_none() && now >= stop_at {
                    // Closed loop: an answer after the run would not count.
                    break;
                }
                None
            } else {
                match interval {
                    None if now < stop_at => Some(now),
                    None => break,
                    Some(_) => match backlog.pop_front() {
                        Some(due) => Some(due),
                        None => break,
                    },
                }
            };
            if connection.is_none() {
                break;
            }
            clients.free.pop();
            let read = match due {
                Some(_) => mix.is_read(&mut rng),
                None => client.read,
            };
            let request = if read {
                client.reads += 1;
                let id = READ_ID_BIT | client.reads;
                client.outstanding = Some(id);
                ClientRequest::Read {
                    client_id: client.id,
                    request_id: id,
                    group: client.group.0,
                    payload: {
                        let mut query = spare_payloads.pop().unwrap_or_default();
                        mix.read_query_into(&mut rng, &mut query);
                        query
                    },
                    consistency: driver.read_consistency,
                }
            } else {
                if due.is_some() {
                    client.sequence += 1;
                }
                client.outstanding = Some(client.sequence);
                ClientRequest::Propose {
                    client_id: client.id,
                    session: client.session,
                    sequence: client.sequence,
                    lowest_unanswered: client.sequence,
                    group: client.group.0,
                    payload: {
                        let mut command = spare_payloads.pop().unwrap_or_default();
                        mix.write_payload_into(client.id, client.sequence, &filler, &mut command);
                        command
                    },
                }
            };
            if let Some(due) = due {
                client.due = due;
            }
            client.read = read;
            client.again = false;
            clients.in_flight += 1;
            batch.requests.push(request);
            if batch.requests.len() == DRIVER_BATCH_MAX {
                break;
            }
        }
        if !batch.requests.is_empty() {
            let connected = connection.as_mut().expect("requests are built only with a connection");
            let sent = connected.send(&batch);
            let full = batch.requests.len() == DRIVER_BATCH_MAX;
            // The requests' buffers serve the next batch's (at most
            // DRIVER_BATCH_MAX kept), as a client that reuses its buffers.
            spare_payloads.extend(batch.requests.drain(..).filter_map(|request| match request {
                ClientRequest::Read { payload, .. } | ClientRequest::Propose { payload, .. } => Some(payload),
                ClientRequest::RegisterSession { .. } => None,
            }));
            match (sent, &driver.links) {
                (Ok(()), _) => {}
                // Gone (closed, reset), not stuck (a timeout fails the run).
                (Err(error), Some(links)) if !is_timeout(&error) => {
                    eprintln!(
                        "sending to {}: {error}: its clients go to another node",
                        driver.connection_name()
                    );
                    connection_lost(&mut connection, &mut clients, &driver, links, &totals);
                    continue;
                }
                (Err(error), _) => return Err(send_failure(&driver, error)),
            }
            if full {
                // Build the next batch before waiting for answers.
                continue;
            }
        }
        // The run is over once nothing is in flight; clients still waiting
        // out a backoff have nothing outstanding.
        if clients.in_flight == 0 && now >= stop_at {
            break;
        }
        if now > stop_at + DRIVER_READ_TIMEOUT {
            bail!(
                "{} left {} requests unanswered {} s (DRIVER_READ_TIMEOUT) after the run ended",
                driver.connection_name(),
                clients.in_flight,
                DRIVER_READ_TIMEOUT.as_secs()
            );
        }
        let (Some(connected), true) = (connection.as_mut(), clients.in_flight > 0) else {
            // Nothing on the wire: wait for a client handed over, a backoff
            // to end, the open loop's next request or the end of the run.
            let mut until = clients.next_wake().unwrap_or(stop_at).min(stop_at);
            if let Some(interval) = interval {
                until = until.min(schedule_start + interval.mul_f64(scheduled as f64));
            }
            let wait = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(50));
            match &driver.links {
                Some(links) => {
                    if let Ok(moved) = links.inbox.recv_timeout(wait) {
                        let slot = clients.take(moved.client);
                        clients.ready_at(slot, moved.not_before, Instant::now());
                    }
                }
                None => std::thread::sleep(wait),
            }
            continue;
        };
        let Some(interval) = interval else {
            // Closed loop: block until answers come, at most
            // DRIVER_READ_TIMEOUT, or until a delayed client may send.
            match clients.next_wake() {
                Some(at) => {
                    let wait = at
                        .saturating_duration_since(Instant::now())
                        .clamp(Duration::from_millis(1), DRIVER_READ_TIMEOUT);
                    connected.set_read_timeout(Some(wait))?;
                    short_timeout = true;
                }
                None if short_timeout => {
                    connected.set_read_timeout(Some(DRIVER_READ_TIMEOUT))?;
                    short_timeout = false;
                }
                None => {}
            }
            let frame = match connected.recv() {
                Ok(Some(frame)) => frame,
                // The shortened timeout ran out: a delayed client may send.
                Err(error) if is_timeout(&error) && short_timeout && last_frame.elapsed() < DRIVER_READ_TIMEOUT => {
                    continue
                }
                Err(error) if is_timeout(&error) => return Err(silent(&driver, clients.in_flight)),
                closed => {
                    let links = lost_or_fail(closed, &driver, clients.in_flight)?;
                    connection_lost(&mut connection, &mut clients, &driver, links, &totals);
                    continue;
                }
            };
            last_frame = Instant::now();
            answer(frame, &mut answers)?;
            settle(
                &mut answers,
                &mut clients,
                &driver,
                &mut result,
                &totals,
                measure_from,
                stop_at,
                false,
            );
            continue;
        };
        // Open loop: wait for answers, but wake when the next request falls
        // due or a delayed client may send.
        let mut next_due = schedule_start + interval.mul_f64(scheduled as f64);
        if let Some(at) = clients.next_wake() {
            next_due = next_due.min(at);
        }
        let wait = next_due
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_micros(50), OPEN_LOOP_POLL_MAX);
        connected.set_read_timeout(Some(wait))?;
        match connected.recv() {
            Ok(Some(frame)) => answer(frame, &mut answers)?,
            Err(error) if is_timeout(&error) => continue,
            closed => {
                let links = lost_or_fail(closed, &driver, clients.in_flight)?;
                connection_lost(&mut connection, &mut clients, &driver, links, &totals);
                continue;
            }
        }
        settle(
            &mut answers,
            &mut clients,
            &driver,
            &mut result,
            &totals,
            measure_from,
            stop_at,
            true,
        );
    }
    // Due requests never sent by the end count as unsent (measured part only).
    result.unsent += backlog.iter().filter(|due| **due >= measure_from).count() as u64;
    Ok(result)
}

/// What a receive that was neither a frame nor a timeout means: with links,
/// the node is gone and its clients move ([`leave_lost_node`]); without,
/// the run fails naming the connection.
fn lost_or_fail(
    closed: Result<Option<coraft_net::Frame>, NetError>,
    driver: &Driver,
    outstanding: usize,
) -> Result<&Links> {
    let error = match closed {
        Ok(_) => anyhow!(
            "{} closed the connection with {outstanding} requests outstanding",
            driver.connection_name()
        ),
        Err(error) => anyhow!(error).context(format!("waiting for {}", driver.connection_name())),
    };
    match &driver.links {
        Some(links) => {
            eprintln!("{error:#}: its clients go to another node");
            Ok(links)
        }
        None => Err(error),
    }
}

/// Drops the driver's connection to a node that is gone and moves its clients.
fn connection_lost(
    connection: &mut Option<BlockingConnection>,
    clients: &mut Clients,
    driver: &Driver,
    links: &Links,
    totals: &Totals,
) {
    *connection = None;
    leave_lost_node(clients, driver, links, totals, Instant::now());
}

/// Hands every client of a driver whose node is gone to a driver of the
/// next node, after [`LOST_NODE_BACKOFF_MIN`] .. [`LOST_NODE_BACKOFF_MAX`].
/// A request that was outstanding is counted as an error (its outcome is
/// unknown) and goes again from there: the same read, or the same write
/// with the same session sequence, which the cluster applies at most once.
/// The driver keeps no client; one handed to it later reconnects first.
fn leave_lost_node(clients: &mut Clients, driver: &Driver, links: &Links, totals: &Totals, now: Instant) {
    let (next, _) = links.next_target(driver.target_node, None, 0);
    clients.free.clear();
    clients.delayed.clear();
    for slot in 0..clients.slots.len() {
        let Some(client) = clients.slots[slot].as_mut() else {
            continue;
        };
        if client.outstanding.take().is_some() {
            clients.in_flight -= 1;
            totals.errors.fetch_add(1, Ordering::Relaxed);
            client.again = true;
        }
        client.lost = client.lost.saturating_add(1);
        let wait = LOST_NODE_BACKOFF_MIN
            .saturating_mul(1 << (client.lost - 1).min(16))
            .min(LOST_NODE_BACKOFF_MAX);
        let id = client.id;
        let moved = Moved {
            client: clients.release(slot),
            not_before: now + wait,
        };
        let inboxes = &links.peers[&next];
        // Full cannot happen (the bound is the run's clients); disconnected:
        // that driver ended (the run is ending).
        if inboxes[(id % inboxes.len() as u64) as usize].try_send(moved).is_err() {
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a request ended, as far as its driver cares.
enum Outcome {
    Ok,
    /// `NotLeader`, with the leader it named if any.
    NotLeader(Option<u64>),
    Failed,
}

/// What the driver needs of a response: whose it is and how it ended.
struct Answer {
    client_id: u64,
    request_id: u64,
    outcome: Outcome,
}

/// Reads a frame's client responses in place into `answers` (other frames:
/// none): the harness's own cost per write stays out of the cluster's
/// figures as far as it can (no owned copy of each result).
fn answer(frame: coraft_net::Frame, answers: &mut Vec<Answer>) -> Result<()> {
    if let Some(archived) = frame.client_responses() {
        answers.extend(archived.responses.iter().map(|response| Answer {
            client_id: response.client_id.to_native(),
            request_id: response.request_id.to_native(),
            outcome: match &response.result {
                ArchivedResult::Ok(_) => Outcome::Ok,
                ArchivedResult::Err(ArchivedClientError::NotLeader { leader_hint }) => {
                    Outcome::NotLeader(leader_hint.as_ref().map(|hint| hint.to_native()))
                }
                ArchivedResult::Err(_) => Outcome::Failed,
            },
        }));
    }
    Ok(())
}

/// Matches answers to their clients, records latencies, frees the clients;
/// a client refused with `NotLeader` is sent again, here after a backoff or
/// by the driver of the node it goes to ([`Links`]).
#[allow(clippy::too_many_arguments)]
fn settle(
    answers: &mut Vec<Answer>,
    clients: &mut Clients,
    driver: &Driver,
    result: &mut DriverResult,
    totals: &Totals,
    measure_from: Instant,
    stop_at: Instant,
    open_loop: bool,
) {
    let now = Instant::now();
    for response in answers.drain(..) {
        let Some(&slot) = clients.slot_of.get(&response.client_id) else {
            continue;
        };
        let client = clients.slots[slot].as_mut().expect("a mapped slot is occupied");
        if client.outstanding != Some(response.request_id) {
            continue;
        }
        client.outstanding = None;
        clients.in_flight -= 1;
        match response.outcome {
            Outcome::Ok => {
                client.redirects = 0;
                client.lost = 0;
                clients.free.push(slot);
                totals.answered.fetch_add(1, Ordering::Relaxed);
                // Closed loop: what was answered within the measurement. Open
                // loop: every request due within it, however late its answer (the
                // slowest answers are the ones that must not be left out).
                let counted = client.due >= measure_from
                    && if open_loop {
                        client.due < stop_at
                    } else {
                        now <= stop_at
                    };
                if counted {
                    let us = now.duration_since(client.due).as_micros().max(1) as u64;
                    result.latency_us.record(us).ok();
                    if let Some(window) = &totals.window_latency_us {
                        window.lock().unwrap_or_else(|p| p.into_inner()).record(us).ok();
                    }
                    totals.completed.fetch_add(1, Ordering::Relaxed);
                    if client.read {
                        result.reads += 1;
                    } else {
                        result.writes += 1;
                    }
                }
            }
            Outcome::NotLeader(hint) => {
                totals.not_leader.fetch_add(1, Ordering::Relaxed);
                let Some(links) = driver.links.as_ref().filter(|_| now < stop_at) else {
                    // Not followed: without links as an error, after the
                    // run as nothing (its answer would not count).
                    if driver.links.is_none() {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    clients.free.push(slot);
                    continue;
                };
                client.redirects = client.redirects.saturating_add(1);
                client.again = true;
                let (next, wait) = links.next_target(driver.target_node, hint, client.redirects);
                if next == driver.target_node {
                    clients.ready_at(slot, now + wait, now);
                    continue;
                }
                let moved = Moved {
                    client: clients.release(slot),
                    not_before: now + wait,
                };
                let inboxes = &links.peers[&next];
                let inbox = &inboxes[(response.client_id % inboxes.len() as u64) as usize];
                // Full cannot happen (the bound is the run's clients);
                // disconnected: that driver ended (the run is ending).
                if inbox.try_send(moved).is_err() {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outcome::Failed => {
                clients.free.push(slot);
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Rounds of registration a driver makes before it gives up: a round sends
/// every registration not yet accepted, each to the node last named as the
/// group's leader.
const REGISTER_ROUNDS_MAX: u32 = 12;
/// Wait before the second round; doubled each round up to
/// [`REGISTER_BACKOFF_MAX`] (12 rounds: about 8 s in all).
const REGISTER_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two rounds of registration.
const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Registers the session of every client of `driver` and waits until each
/// registration is accepted. A registration refused because the node does
/// not lead the group (leadership moved since the leaders were found, or an
/// election is under way), or because it is busy or timed out, is sent again
/// after a backoff, to the leader the refusal named if it named one in
/// `driver.shard_addresses` (through a connection of its own), else to the
/// same node; at most [`REGISTER_ROUNDS_MAX`] rounds. Any other refusal, or
/// a registration still refused after the last round, is an error naming
/// the client, the node and the refusal.
pub(crate) fn register_sessions(
    connection: &mut BlockingConnection,
    driver: &Driver,
    session: impl Fn(usize) -> u128,
) -> Result<()> {
    // Where each client's registration goes next, by node.
    let mut pending: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    pending.insert(driver.target_node, (0..driver.clients.len()).collect());
    let mut others: BTreeMap<NodeId, BlockingConnection> = BTreeMap::new();
    let mut backoff = REGISTER_BACKOFF_MIN;
    for round in 1..=REGISTER_ROUNDS_MAX {
        let mut refused: Vec<(usize, NodeId, ClientError)> = Vec::new();
        for (node, slots) in std::mem::take(&mut pending) {
            let via = if node == driver.target_node {
                &mut *connection
            } else {
                match others.entry(node) {
                    std::collections::btree_map::Entry::Occupied(held) => held.into_mut(),
                    std::collections::btree_map::Entry::Vacant(vacant) => {
                        let address = driver.shard_addresses[&node];
                        let hello = Hello {
                            cluster_id: driver.cluster_id,
                            node_id: driver.clients.first().map_or(1, |c| c.0),
                            shard_id: 0,
                            target_shard_id: driver.shard as u32,
                            target_node_id: node.0,
                            role: NetRole::Client,
                            client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
                        };
                        let opened =
                            BlockingConnection::connect(address, &hello, Duration::from_secs(5)).map_err(|error| {
                                anyhow!(error)
                                    .context(format!("connecting to node {node} ({address}) to register sessions"))
                            })?;
                        opened.set_read_timeout(Some(DRIVER_READ_TIMEOUT))?;
                        vacant.insert(opened)
                    }
                }
            };
            for (slot, error) in register_round(via, node, driver, &slots, &session)? {
                refused.push((slot, node, error));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        for (slot, node, error) in refused {
            let next = match error {
                ClientError::NotLeader {
                    leader_hint: Some(hint),
                } if driver.shard_addresses.contains_key(&NodeId(hint)) => NodeId(hint),
                ClientError::NotLeader { .. } | ClientError::Busy | ClientError::Timeout
                    if round < REGISTER_ROUNDS_MAX =>
                {
                    node
                }
                error => bail!(
                    "node {node} refused to register client {}'s session{}: {error:?}",
                    driver.clients[slot].0,
                    if round > 1 {
                        format!(" (round {round} of {REGISTER_ROUNDS_MAX})")
                    } else {
                        String::new()
                    },
                ),
            };
            pending.entry(next).or_default().push(slot);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
    }
    let (node, slots) = pending.into_iter().next().expect("a refused registration is pending");
    bail!(
        "client {}'s session was not registered in {REGISTER_ROUNDS_MAX} rounds (last sent to node {node})",
        driver.clients[slots[0]].0
    )
}

/// Sends the registrations of `slots` through `connection` (to `node`) and
/// waits for each answer; returns the refused ones with their refusal.
fn register_round(
    connection: &mut BlockingConnection,
    node: NodeId,
    driver: &Driver,
    slots: &[usize],
    session: &impl Fn(usize) -> u128,
) -> Result<Vec<(usize, ClientError)>> {
    let slot_of: HashMap<u64, usize> = slots.iter().map(|&slot| (driver.clients[slot].0, slot)).collect();
    for chunk in slots.chunks(DRIVER_BATCH_MAX) {
        let requests = chunk
            .iter()
            .map(|&slot| ClientRequest::RegisterSession {
                client_id: driver.clients[slot].0,
                request_id: REGISTER_REQUEST_ID,
                group: driver.clients[slot].1 .0,
                session: session(slot),
            })
            .collect();
        send_batch(connection, driver, &ClientRequestBatch { requests })?;
    }
    let mut refused = Vec::new();
    let mut unanswered = slots.len();
    while unanswered > 0 {
        let frame = next_frame(connection, driver, unanswered)
            .with_context(|| format!("registering the clients' sessions on node {node}"))?;
        let Some(archived) = frame.client_responses() else {
            continue;
        };
        let responses = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived)?;
        for response in responses.responses {
            if response.request_id != REGISTER_REQUEST_ID {
                continue;
            }
            let Some(&slot) = slot_of.get(&response.client_id) else {
                continue;
            };
            if let Err(error) = response.result {
                refused.push((slot, error));
            }
            unanswered -= 1;
        }
    }
    Ok(refused)
}

/// How long one admin call to a node may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every group's leadership moved mid-run (`--transfer-leaders-at`).
#[derive(Serialize, Debug, Clone)]
pub struct LeaderChange {
    /// Seconds since the load started when the transfers were asked for.
    pub asked_at_s: f64,
    /// Seconds since the load started when every group had its new leader.
    pub done_at_s: f64,
    pub groups_moved: u64,
    /// `NotLeader` answers the clients met over the whole run; each one
    /// sent its request again to the leader it named (or the next node).
    pub not_leader: u64,
}

/// How long the nodes get to elect the leaders a transfer asked for (a
/// loaded machine: generous).
const TRANSFER_WAIT: Duration = Duration::from_secs(60);

/// Waits for the `--transfer-leaders-at` thread, if one was started, and
/// adds the `NotLeader` answers the writers met (`not_leader`) to what it
/// reports.
pub fn join_leader_transfer(
    transfer: Option<std::thread::JoinHandle<Result<LeaderChange>>>,
    not_leader: u64,
) -> Result<Option<LeaderChange>> {
    let Some(transfer) = transfer else {
        return Ok(None);
    };
    let mut change = transfer
        .join()
        .map_err(|_| anyhow!("the leader transfer thread panicked"))?
        .context("moving every group's leadership (--transfer-leaders-at)")?;
    change.not_leader = not_leader;
    Ok(Some(change))
}

/// Moves every group's leadership from its leader to the next node (by id,
/// wrapping) over the admin protocol (`addresses`: every node's), and waits
/// until each new leader leads (`--transfer-leaders-at`).
pub fn transfer_leaders(
    addresses: &[SocketAddr],
    cluster_id: u64,
    groups: &[GroupId],
    started: Instant,
) -> Result<LeaderChange> {
    let mut admins = BTreeMap::new();
    for &address in addresses {
        let admin = coraft::admin::AdminClient::connect(address, cluster_id, ADMIN_TIMEOUT)
            .with_context(|| format!("admin {address}"))?;
        admins.insert(admin.node(), admin);
    }
    let nodes: Vec<NodeId> = admins.keys().copied().collect();
    // Each group's leader, as its leader reports it.
    let leaders = |admins: &mut BTreeMap<NodeId, coraft::admin::AdminClient>| -> Result<BTreeMap<GroupId, NodeId>> {
        let mut leaders = BTreeMap::new();
        for (&node, admin) in admins.iter_mut() {
            for chunk in groups.chunks(coraft::admin::ADMIN_STATUS_GROUPS_MAX) {
                for group in admin
                    .status(chunk)
                    .with_context(|| format!("status of node {node}"))?
                    .groups
                {
                    if group.role == coraft::admin::AdminRole::Leader {
                        leaders.insert(GroupId(group.group), node);
                    }
                }
            }
        }
        Ok(leaders)
    };
    let asked_at_s = started.elapsed().as_secs_f64();
    let before = leaders(&mut admins)?;
    let mut wanted = BTreeMap::new();
    for (&group, &from) in &before {
        let at = nodes.iter().position(|&n| n == from).unwrap_or(0);
        let to = nodes[(at + 1) % nodes.len()];
        admins
            .get_mut(&from)
            .expect("a leader is a node of the cluster")
            .transfer_leader(group, to)
            .with_context(|| format!("transferring group {group} from node {from} to node {to}"))?;
        wanted.insert(group, to);
    }
    let deadline = Instant::now() + TRANSFER_WAIT;
    loop {
        let now = leaders(&mut admins)?;
        if wanted.iter().all(|(group, to)| now.get(group) == Some(to)) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the groups' leaders after {} s: {now:?}, where the transfers asked for {wanted:?}",
                TRANSFER_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(LeaderChange {
        asked_at_s,
        done_at_s: started.elapsed().as_secs_f64(),
        groups_moved: wanted.len() as u64,
        not_leader: 0,
    })
}
