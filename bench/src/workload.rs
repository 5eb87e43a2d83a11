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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::api::KvOp;
use coraft::raft::{GroupId, NodeId};
use coraft_net::schema::{ClientError, ClientRequest, ClientRequestBatch, ClientResponseBatch, ReadConsistency};
use coraft_net::{BlockingConnection, Hello, NetError, Role as NetRole};
use hdrhistogram::Histogram;
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

    fn write_payload(&self, rng: &mut Rng, filler: &[u8]) -> Vec<u8> {
        match self.state_machine {
            StateMachineKind::Counter => filler.to_vec(),
            StateMachineKind::Kv => KvOp::Write {
                key: rng.below(self.keys),
                value: rng.next(),
            }
            .encode(),
        }
    }

    fn read_query(&self, rng: &mut Rng) -> Vec<u8> {
        match self.state_machine {
            StateMachineKind::Counter => Vec::new(),
            StateMachineKind::Kv => KvOp::Read {
                key: rng.below(self.keys),
            }
            .encode(),
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
    pub errors: AtomicU64,
    /// When set, every latency counted is also recorded here (`coraft-bench
    /// longrun` takes it window by window).
    pub window_latency_us: Option<std::sync::Mutex<Histogram<u64>>>,
}

/// One driver: a connection to one (node, shard), carrying many clients.
pub struct Driver {
    pub address: SocketAddr,
    pub cluster_id: u64,
    pub target_node: NodeId,
    pub shard: usize,
    /// (client id, its group).
    pub clients: Vec<(u64, GroupId)>,
    /// Open loop: this driver's share of `--rate`, requests per second.
    pub rate: Option<f64>,
    pub seed: u64,
    /// What its reads ask for (`--read-mode stale`: stale).
    pub read_consistency: ReadConsistency,
    /// Every node's address for this driver's shard: where a session
    /// registration refused with a leader hint is sent again.
    pub shard_addresses: BTreeMap<NodeId, SocketAddr>,
}

impl Driver {
    /// Names the connection in errors: `node 2 shard 1 (127.0.0.1:7001)`.
    fn connection_name(&self) -> String {
        format!("node {} shard {} ({})", self.target_node, self.shard, self.address)
    }
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
        Err(error) if is_timeout(&error) => bail!(
            "{} sent no answer within {} s (DRIVER_READ_TIMEOUT) with {outstanding} requests outstanding: \
             the node or that shard is stuck or gone",
            driver.connection_name(),
            DRIVER_READ_TIMEOUT.as_secs()
        ),
        Err(error) => Err(anyhow!(error).context(format!("waiting for {}", driver.connection_name()))),
    }
}

/// Sends `batch`, or fails naming the driver's connection (a send blocked
/// for `DRIVER_READ_TIMEOUT` by a node that stopped reading, or an error).
fn send_batch(connection: &mut BlockingConnection, driver: &Driver, batch: &ClientRequestBatch) -> Result<()> {
    connection.send(batch).map_err(|error| {
        if is_timeout(&error) {
            anyhow!(
                "{} took no requests for {} s (DRIVER_READ_TIMEOUT): the node or that shard is stuck or gone",
                driver.connection_name(),
                DRIVER_READ_TIMEOUT.as_secs()
            )
        } else {
            anyhow!(error).context(format!("sending to {}", driver.connection_name()))
        }
    })
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

/// One client's state within a driver.
struct Slot {
    /// The id of its outstanding request, if any.
    outstanding: Option<u64>,
    /// Its session's next write sequence.
    sequence: u64,
    /// Its read ids so far.
    reads: u64,
    /// When its outstanding request was due (closed loop: when it was sent).
    due: Instant,
    read: bool,
}

/// Runs one driver until `stop_at` and every answer is in.
pub fn run_driver(
    driver: Driver,
    mix: Mix,
    measure_from: Instant,
    stop_at: Instant,
    totals: Arc<Totals>,
) -> Result<DriverResult> {
    let hello = Hello {
        cluster_id: driver.cluster_id,
        node_id: driver.clients.first().map_or(1, |c| c.0),
        shard_id: 0,
        target_shard_id: driver.shard as u32,
        target_node_id: driver.target_node.0,
        role: NetRole::Client,
    };
    let mut connection = BlockingConnection::connect(driver.address, &hello, Duration::from_secs(5))?;
    connection.set_read_timeout(Some(DRIVER_READ_TIMEOUT))?;
    // A node that stops reading fills the socket's buffer: a send then
    // blocks, at most this long too.
    connection
        .stream()
        .set_write_timeout(Some(DRIVER_READ_TIMEOUT))
        .context("setting the connection's write timeout")?;
    let mut rng = Rng::new(driver.seed);
    let filler = vec![0x5a; mix.payload];
    // A session id is the client's id under this run's start time, unique per run.
    let run_bits = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let session = |slot: usize| (u128::from(run_bits) << 64) | u128::from(driver.clients[slot].0);
    if mix.workload != Workload::Read {
        register_sessions(&mut connection, &driver, session)?;
    }
    let slot_of: HashMap<u64, usize> = driver
        .clients
        .iter()
        .enumerate()
        .map(|(slot, &(id, _))| (id, slot))
        .collect();
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..driver.clients.len())
        .map(|_| Slot {
            outstanding: None,
            sequence: 0,
            reads: 0,
            due: now,
            read: false,
        })
        .collect();
    let mut free: Vec<usize> = (0..slots.len()).rev().collect();
    let mut result = DriverResult {
        latency_us: new_histogram(),
        reads: 0,
        writes: 0,
        unsent: 0,
    };
    let mut batch = ClientRequestBatch { requests: Vec::new() };
    // Open loop: requests due but not yet sent, and the schedule.
    let mut backlog: VecDeque<Instant> = VecDeque::new();
    let schedule_start = Instant::now();
    let mut scheduled: u64 = 0;
    let interval = driver.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut in_flight = 0usize;
    let mut answers = Vec::new();
    loop {
        let now = Instant::now();
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
        // while a client is free (open loop).
        while let Some(&slot) = free.last() {
            let due = match interval {
                None if now < stop_at => now,
                None => break,
                Some(_) => match backlog.pop_front() {
                    Some(due) => due,
                    None => break,
                },
            };
            free.pop();
            let read = mix.is_read(&mut rng);
            let state = &mut slots[slot];
            let (client_id, group) = driver.clients[slot];
            let request = if read {
                state.reads += 1;
                let id = READ_ID_BIT | state.reads;
                state.outstanding = Some(id);
                ClientRequest::Read {
                    client_id,
                    request_id: id,
                    group: group.0,
                    payload: mix.read_query(&mut rng),
                    consistency: driver.read_consistency,
                }
            } else {
                state.sequence += 1;
                state.outstanding = Some(state.sequence);
                ClientRequest::Propose {
                    client_id,
                    session: session(slot),
                    sequence: state.sequence,
                    lowest_unanswered: state.sequence,
                    group: group.0,
                    payload: mix.write_payload(&mut rng, &filler),
                }
            };
            state.due = due;
            state.read = read;
            in_flight += 1;
            batch.requests.push(request);
            if batch.requests.len() == DRIVER_BATCH_MAX {
                send_batch(&mut connection, &driver, &batch)?;
                batch.requests.clear();
            }
        }
        if !batch.requests.is_empty() {
            send_batch(&mut connection, &driver, &batch)?;
            batch.requests.clear();
        }
        if in_flight == 0 && now >= stop_at {
            break;
        }
        if now > stop_at + DRIVER_READ_TIMEOUT {
            bail!(
                "{} left {in_flight} requests unanswered {} s (DRIVER_READ_TIMEOUT) after the run ended",
                driver.connection_name(),
                DRIVER_READ_TIMEOUT.as_secs()
            );
        }
        let Some(interval) = interval else {
            // Closed loop: block until answers come, at most
            // DRIVER_READ_TIMEOUT (the connection's read timeout).
            let frame = next_frame(&mut connection, &driver, in_flight)?;
            answer(frame, &mut answers)?;
            settle(
                &mut answers,
                &mut slots,
                &slot_of,
                &mut free,
                &mut in_flight,
                &mut result,
                &totals,
                measure_from,
                stop_at,
                false,
            );
            continue;
        };
        // Open loop: wait for answers, but wake when the next request falls due.
        let next_due = schedule_start + interval.mul_f64(scheduled as f64);
        let wait = next_due
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_micros(50), OPEN_LOOP_POLL_MAX);
        if in_flight == 0 {
            std::thread::sleep(wait);
            continue;
        }
        connection.set_read_timeout(Some(wait))?;
        match connection.recv() {
            Ok(Some(frame)) => answer(frame, &mut answers)?,
            Ok(None) => bail!(
                "{} closed the connection with {in_flight} requests outstanding",
                driver.connection_name()
            ),
            Err(error) if is_timeout(&error) => continue,
            Err(error) => return Err(anyhow!(error).context(format!("waiting for {}", driver.connection_name()))),
        }
        settle(
            &mut answers,
            &mut slots,
            &slot_of,
            &mut free,
            &mut in_flight,
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

/// What the driver needs of a response: whose it is and whether it succeeded.
struct Answer {
    client_id: u64,
    request_id: u64,
    ok: bool,
}

/// Reads a frame's client responses in place into `answers` (other frames:
/// none): the harness's own cost per write stays out of the cluster's
/// figures as far as it can (no owned copy of each result).
fn answer(frame: coraft_net::Frame, answers: &mut Vec<Answer>) -> Result<()> {
    if let Some(archived) = frame.client_responses() {
        answers.extend(archived.responses.iter().map(|response| Answer {
            client_id: response.client_id.to_native(),
            request_id: response.request_id.to_native(),
            ok: response.result.is_ok(),
        }));
    }
    Ok(())
}

/// Matches answers to their clients, records latencies, frees the clients.
#[allow(clippy::too_many_arguments)]
fn settle(
    answers: &mut Vec<Answer>,
    slots: &mut [Slot],
    slot_of: &HashMap<u64, usize>,
    free: &mut Vec<usize>,
    in_flight: &mut usize,
    result: &mut DriverResult,
    totals: &Totals,
    measure_from: Instant,
    stop_at: Instant,
    open_loop: bool,
) {
    let now = Instant::now();
    for response in answers.drain(..) {
        let Some(&slot) = slot_of.get(&response.client_id) else {
            continue;
        };
        let state = &mut slots[slot];
        if state.outstanding != Some(response.request_id) {
            continue;
        }
        state.outstanding = None;
        *in_flight -= 1;
        free.push(slot);
        if response.ok {
            totals.answered.fetch_add(1, Ordering::Relaxed);
            // Closed loop: what was answered within the measurement. Open
            // loop: every request due within it, however late its answer (the
            // slowest answers are the ones that must not be left out).
            let counted = state.due >= measure_from && if open_loop { state.due < stop_at } else { now <= stop_at };
            if counted {
                let us = now.duration_since(state.due).as_micros().max(1) as u64;
                result.latency_us.record(us).ok();
                if let Some(window) = &totals.window_latency_us {
                    window.lock().unwrap_or_else(|p| p.into_inner()).record(us).ok();
                }
                totals.completed.fetch_add(1, Ordering::Relaxed);
                if state.read {
                    result.reads += 1;
                } else {
                    result.writes += 1;
                }
            }
        } else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
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
