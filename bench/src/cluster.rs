//! `coraft-bench` with no subcommand: an embedded 3-node cluster on loopback
//! (real TCP, real WALs with fdatasync in a temp dir removed afterwards),
//! driven by closed-loop clients through the client protocol. The fdatasync
//! floor is measured in the same run on the same directory.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use coraft::api::CommandCounter;
use coraft::raft::{GroupId, NodeId, ReadMode, Role};
use coraft::runtime::{Node, NodeOptions, PeerSpec, StateMachineFactory};
use coraft_net::schema::{ClientRequest, ClientRequestBatch, ClientResponseBatch};
use coraft_net::{BlockingConnection, Hello, Role as NetRole};
use hdrhistogram::Histogram;

const CLUSTER_ID: u64 = 0xC0_4A_F7;
/// The replication floor runs at most this long (and warms up at most
/// `FLOOR_WARMUP_MAX`), whatever the benchmark's own duration.
const FLOOR_DURATION_MAX: Duration = Duration::from_secs(5);
const FLOOR_WARMUP_MAX: Duration = Duration::from_secs(1);
/// Bound on requests one driver sends in one frame.
const DRIVER_BATCH_MAX: usize = 4096;

struct Options {
    nodes: usize,
    clients: usize,
    payload: usize,
    groups: u64,
    shards: usize,
    duration: Duration,
    warmup: Duration,
    drivers: usize,
    json: bool,
    spin_before_park: Option<Duration>,
    /// `NodeOptions::wal_zero_ahead_bytes` of every node.
    wal_zero_ahead_bytes: u64,
    /// Run the replication floor ([`crate::floor`]) in the same run (3 nodes only).
    floor: bool,
}

fn parse(args: Vec<String>) -> Result<Options> {
    let mut options = Options {
        nodes: 3,
        clients: 64,
        payload: 16,
        groups: 1,
        shards: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        drivers: 2,
        json: false,
        spin_before_park: None,
        floor: true,
        wal_zero_ahead_bytes: coraft_wal::config::ZERO_AHEAD_BYTES_DEFAULT,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| crate::number_after(&mut it, name);
        match flag.as_str() {
            "--nodes" => options.nodes = value("--nodes")? as usize,
            "--clients" => options.clients = value("--clients")? as usize,
            "--payload" => options.payload = value("--payload")? as usize,
            "--groups" => options.groups = value("--groups")?,
            "--shards" => options.shards = value("--shards")? as usize,
            "--duration" => options.duration = Duration::from_secs(value("--duration")?),
            "--warmup" => options.warmup = Duration::from_secs(value("--warmup")?),
            "--drivers" => options.drivers = value("--drivers")? as usize,
            "--spin-before-park-us" => {
                options.spin_before_park = Some(Duration::from_micros(value("--spin-before-park-us")?))
            }
            "--json" => options.json = true,
            "--no-floor" => options.floor = false,
            "--wal-zero-ahead-bytes" => options.wal_zero_ahead_bytes = value("--wal-zero-ahead-bytes")?,
            other => bail!(
                "unknown option `{other}`; options: --nodes N --clients N --payload BYTES --groups N --shards N \
                 --duration S --warmup S --drivers N --spin-before-park-us US --wal-zero-ahead-bytes N --no-floor --json"
            ),
        }
    }
    if options.clients == 0 || options.groups == 0 || options.shards == 0 || options.drivers == 0 {
        bail!("--clients, --groups, --shards and --drivers must be at least 1");
    }
    if options.nodes == 0 || options.nodes.is_multiple_of(2) {
        bail!(
            "--nodes must be odd (1, 3, 5, ...): a Raft cluster of {} nodes",
            options.nodes
        );
    }
    if options.duration.is_zero() {
        bail!("--duration must be at least 1 second");
    }
    Ok(options)
}

/// p50 of a 64-byte ping-pong over loopback TCP between two threads, in
/// microseconds: the floor of one network hop and back.
fn tcp_rtt_floor_p50_us() -> Result<u64> {
    use std::io::{Read, Write};
    const ROUNDS: usize = 2000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the RTT floor's listener")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; 64];
        for _ in 0..ROUNDS {
            stream.read_exact(&mut buffer)?;
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(address).context("connecting to the RTT floor's listener")?;
    stream.set_nodelay(true)?;
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut buffer = [0x5au8; 64];
    for _ in 0..ROUNDS {
        let started = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        histogram.record(started.elapsed().as_micros() as u64).ok();
    }
    echo.join()
        .map_err(|_| anyhow!("the RTT floor's echo thread panicked"))?
        .context("the RTT floor's echo")?;
    Ok(histogram.value_at_quantile(0.5))
}

/// User + system CPU time of this process so far (every thread: the nodes'
/// executors, their io_uring workers, the drivers).
pub(crate) fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// p50 of a 4 KiB O_DIRECT write + fdatasync in `dir`: the floor of a durable write.
fn fsync_floor_p50_us(dir: &std::path::Path) -> Result<u64> {
    let path = dir.join("fsync-floor");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
    // SAFETY: the layout is non-zero; the buffer is freed below.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    anyhow::ensure!(!buffer.is_null(), "allocating an aligned buffer");
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut result = Ok(());
    for round in 0..300u64 {
        let started = Instant::now();
        // SAFETY: buffer holds 4096 bytes, aligned as O_DIRECT requires.
        let written = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                buffer as *const libc::c_void,
                4096,
                (round % 64) as i64 * 4096,
            )
        };
        // SAFETY: a valid open file descriptor.
        let synced = unsafe { libc::fdatasync(file.as_raw_fd()) };
        if written != 4096 || synced != 0 {
            result = Err(anyhow!(
                "raw write + fdatasync failed: {}",
                std::io::Error::last_os_error()
            ));
            break;
        }
        histogram.record(started.elapsed().as_micros() as u64).ok();
    }
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(buffer, layout) };
    let _ = std::fs::remove_file(&path);
    result.map(|()| histogram.value_at_quantile(0.5))
}

fn free_addresses(count: usize) -> Result<Vec<SocketAddr>> {
    Ok(coraft::ports::free_loopback_addresses(count)?)
}

struct Totals {
    completed: AtomicU64,
    errors: AtomicU64,
}

/// One driver: a connection to one (leader node, shard), carrying many
/// closed-loop clients, each with one request outstanding.
struct Driver {
    address: SocketAddr,
    target_node: NodeId,
    shard: usize,
    clients: Vec<(u64, GroupId)>,
}

fn run_driver(
    driver: Driver,
    payload: Vec<u8>,
    measure_from: Instant,
    stop_at: Instant,
    totals: Arc<Totals>,
) -> Result<Histogram<u64>> {
    let hello = Hello {
        cluster_id: CLUSTER_ID,
        node_id: driver.clients.first().map_or(1, |c| c.0),
        shard_id: 0,
        target_shard_id: driver.shard as u32,
        target_node_id: driver.target_node.0,
        role: NetRole::Client,
    };
    let mut connection = BlockingConnection::connect(driver.address, &hello, Duration::from_secs(5))?;
    connection.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut sequence: Vec<u64> = vec![0; driver.clients.len()];
    let mut sent_at: Vec<Instant> = vec![Instant::now(); driver.clients.len()];
    let slot_of: std::collections::HashMap<u64, usize> = driver
        .clients
        .iter()
        .enumerate()
        .map(|(slot, &(id, _))| (id, slot))
        .collect();
    // Each closed-loop client registers its session with its group first
    // (through the log, as `coraft::client::Client` does); a session id is
    // the client's id under this run's start time, unique per run.
    let run_bits = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let session = |slot: usize| (u128::from(run_bits) << 64) | u128::from(driver.clients[slot].0);
    register_sessions(&mut connection, &driver, session)?;
    let request = |slot: usize, sequence: u64| ClientRequest::Propose {
        client_id: driver.clients[slot].0,
        session: session(slot),
        sequence,
        lowest_unanswered: sequence,
        group: driver.clients[slot].1 .0,
        payload: payload.clone(),
    };
    let mut batch = ClientRequestBatch { requests: Vec::new() };
    for slot in 0..driver.clients.len() {
        sequence[slot] = 1;
        sent_at[slot] = Instant::now();
        batch.requests.push(request(slot, 1));
        if batch.requests.len() == DRIVER_BATCH_MAX {
            connection.send(&batch)?;
            batch.requests.clear();
        }
    }
    connection.send(&batch)?;
    let mut outstanding = driver.clients.len();
    while outstanding > 0 {
        let frame = connection
            .recv()?
            .ok_or_else(|| anyhow!("node {} closed the connection", driver.target_node))?;
        let Some(archived) = frame.client_responses() else {
            continue;
        };
        let responses = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived)?;
        batch.requests.clear();
        let now = Instant::now();
        for response in responses.responses {
            let Some(&slot) = slot_of.get(&response.client_id) else {
                continue;
            };
            if response.request_id != sequence[slot] {
                continue;
            }
            outstanding -= 1;
            if response.result.is_ok() {
                if sent_at[slot] >= measure_from && now <= stop_at {
                    histogram
                        .record(now.duration_since(sent_at[slot]).as_micros().max(1) as u64)
                        .ok();
                    totals.completed.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
            if now < stop_at {
                sequence[slot] += 1;
                sent_at[slot] = now;
                batch.requests.push(request(slot, sequence[slot]));
                outstanding += 1;
            }
        }
        if !batch.requests.is_empty() {
            connection.send(&batch)?;
        }
    }
    Ok(histogram)
}

/// Registers the session of every client of `driver` and waits until each
/// registration is answered.
fn register_sessions(
    connection: &mut BlockingConnection,
    driver: &Driver,
    session: impl Fn(usize) -> u128,
) -> Result<()> {
    for chunk in (0..driver.clients.len()).collect::<Vec<_>>().chunks(DRIVER_BATCH_MAX) {
        let requests = chunk
            .iter()
            .map(|&slot| ClientRequest::RegisterSession {
                client_id: driver.clients[slot].0,
                request_id: REGISTER_REQUEST_ID,
                group: driver.clients[slot].1 .0,
                session: session(slot),
            })
            .collect();
        connection.send(&ClientRequestBatch { requests })?;
    }
    let mut unanswered = driver.clients.len();
    while unanswered > 0 {
        let frame = connection
            .recv()?
            .ok_or_else(|| anyhow!("node {} closed the connection", driver.target_node))?;
        let Some(archived) = frame.client_responses() else {
            continue;
        };
        let responses = rkyv::deserialize::<ClientResponseBatch, rkyv::rancor::Error>(archived)?;
        for response in responses.responses {
            if response.request_id != REGISTER_REQUEST_ID {
                continue;
            }
            if let Err(error) = response.result {
                bail!(
                    "node {} refused to register client {}'s session: {error:?}",
                    driver.target_node,
                    response.client_id
                );
            }
            unanswered -= 1;
        }
    }
    Ok(())
}

/// The request id of session registrations (write sequences start at 1).
const REGISTER_REQUEST_ID: u64 = 0;

/// Runs the cluster benchmark.
pub fn run(args: Vec<String>) -> Result<()> {
    let options = parse(args)?;
    let dir = tempfile::tempdir().context("creating the benchmark's temp dir")?;
    let floor_us = fsync_floor_p50_us(dir.path())?;
    let rtt_us = tcp_rtt_floor_p50_us()?;
    // One replicated write cannot take less than the client's round trip,
    // the leader's round trip to a follower, and that follower's fdatasync
    // (the leader's own runs beside it); one node needs no follower.
    let write_floor_us = if options.nodes > 1 {
        2 * rtt_us + floor_us
    } else {
        rtt_us + floor_us
    };
    // The same closed loop on blocking threads with nothing but the physical
    // work: what this machine allows three replicating logs (see `floor`).
    let floor_refusal = crate::floor::refusal(options.clients, options.payload);
    if let (true, 3, Some(refusal)) = (options.floor, options.nodes, &floor_refusal) {
        eprintln!("no replication floor in this run: {refusal}");
    }
    let replication_floor = if options.floor && options.nodes == 3 && floor_refusal.is_none() {
        let floor_options = crate::floor::FloorOptions {
            clients: options.clients,
            payload: options.payload,
            drivers: options.drivers.min(options.clients),
            duration: options.duration.min(FLOOR_DURATION_MAX),
            warmup: options.warmup.min(FLOOR_WARMUP_MAX),
        };
        if !options.json {
            eprintln!(
                "replication floor: {} s on blocking threads (--no-floor skips it)",
                floor_options.duration.as_secs()
            );
        }
        Some(crate::floor::run_floor(dir.path(), &floor_options).context("the replication floor")?)
    } else {
        None
    };
    let addresses = free_addresses(options.nodes * options.shards)?;
    let peers: Vec<PeerSpec> = (0..options.nodes)
        .map(|n| PeerSpec {
            id: NodeId(n as u64 + 1),
            shard_addresses: addresses[n * options.shards..(n + 1) * options.shards].to_vec(),
        })
        .collect();
    let groups: Vec<GroupId> = (1..=options.groups).map(GroupId).collect();
    let factory: StateMachineFactory = Arc::new(|_| Box::new(CommandCounter::default()));
    let mut nodes = Vec::new();
    for peer in &peers {
        let node_options = NodeOptions {
            cluster_id: CLUSTER_ID,
            node_id: peer.id,
            peers: peers.clone(),
            shard_cores: vec![None; options.shards],
            wal_dir: dir.path().join(format!("node-{}", peer.id)),
            shard_wal_dirs: Vec::new(),
            wal_segment_bytes: coraft_wal::config::SEGMENT_BYTES_DEFAULT,
            wal_zero_ahead_bytes: options.wal_zero_ahead_bytes,
            wal_polled_io: false,
            groups: groups.clone(),
            tick: Duration::from_millis(10),
            election_timeout_ticks: 30,
            heartbeat_interval_ticks: 3,
            read_mode: ReadMode::Safe,
            protocol: Default::default(),
            limits: Default::default(),
            spin_before_park: options.spin_before_park,
            metrics_listen: None,
            quiesce_idle_groups: true,
            request_timeout: coraft::runtime::REQUEST_TIMEOUT,
            session_timeout: std::time::Duration::from_millis(coraft::runtime::SESSION_TIMEOUT_DEFAULT_MS),
            snapshot: coraft::runtime::SnapshotPolicy::default(),
        };
        nodes.push(Node::start(node_options, factory.clone()).map_err(|e| anyhow!("starting node {}: {e}", peer.id))?);
    }
    // Wait for a leader in every group.
    let mut leaders = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leaders.len() < groups.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every group elected a leader within 30 s"
        );
        for &group in &groups {
            for node in &nodes {
                let status = futures_lite::future::block_on(node.group(group).status()).map_err(|e| anyhow!("{e}"))?;
                if status.role == Role::Leader {
                    leaders.insert(group, status.node);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Clients: round-robin over groups; drivers: per (leader, shard) target.
    let mut by_target: std::collections::BTreeMap<(NodeId, usize), Vec<(u64, GroupId)>> = Default::default();
    for client in 0..options.clients {
        let group = groups[client % groups.len()];
        let shard = (group.0 % options.shards as u64) as usize;
        by_target
            .entry((leaders[&group], shard))
            .or_default()
            .push((client as u64 + 1, group));
    }
    let mut drivers = Vec::new();
    let per_target = options.drivers.div_ceil(by_target.len()).max(1);
    for ((node, shard), clients) in by_target {
        let chunk = clients.len().div_ceil(per_target).max(1);
        for part in clients.chunks(chunk) {
            drivers.push(Driver {
                address: peers[node.0 as usize - 1].shard_addresses[shard],
                target_node: node,
                shard,
                clients: part.to_vec(),
            });
        }
    }
    let totals = Arc::new(Totals {
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let stop_at = measure_from + options.duration;
    let payload = vec![0x5a; options.payload];
    let handles: Vec<_> = drivers
        .into_iter()
        .map(|driver| {
            let (payload, totals) = (payload.clone(), totals.clone());
            std::thread::spawn(move || run_driver(driver, payload, measure_from, stop_at, totals))
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let mut last = 0;
    let mut cpu_at_start = None;
    while Instant::now() < stop_at {
        let now = Instant::now();
        if cpu_at_start.is_none() && now + Duration::from_secs(1) >= measure_from {
            std::thread::sleep(measure_from.saturating_duration_since(now));
            cpu_at_start = Some(process_cpu());
            if options.warmup.is_zero() {
                continue;
            }
        } else {
            std::thread::sleep(Duration::from_secs(1).min(stop_at.saturating_duration_since(now)));
        }
        let now = totals.completed.load(Ordering::Relaxed);
        let phase = if Instant::now() < measure_from {
            "warming up"
        } else {
            "measuring"
        };
        let (lead, tail) = if std::io::stderr().is_terminal() {
            ("\r", "   ")
        } else {
            ("", "\n")
        };
        let errors = totals.errors.load(Ordering::Relaxed);
        eprint!("{lead}{phase}: {:>10} ops/s, {errors} errors{tail}", now - last);
        let _ = std::io::stderr().flush();
        last = now;
    }
    eprintln!();
    let cpu = process_cpu().saturating_sub(cpu_at_start.unwrap_or_default());
    done.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for handle in handles {
        let driver = handle.join().map_err(|_| anyhow!("a driver thread panicked"))??;
        histogram.add(&driver).ok();
    }
    // Where the time went, per node, from the engine's own metrics.
    let mut stages = Vec::new();
    for node in &nodes {
        for shard in node.metrics() {
            stages.push((node.id(), shard));
        }
    }
    for node in nodes {
        node.shutdown();
    }
    let ops = histogram.len();
    let seconds = options.duration.as_secs_f64();
    let errors = totals.errors.load(Ordering::Relaxed);
    let q = |quantile: f64| histogram.value_at_quantile(quantile);
    let cpu_us_per_op = cpu.as_secs_f64() * 1e6 / ops.max(1) as f64;
    if options.json {
        // Field order as documented (serde_json would sort the keys).
        println!(
            "{{\"system\":\"coraft\",\"workload\":\"write\",\"nodes\":{},\"groups\":{},\"shards\":{},\"clients\":{},\
             \"payload\":{},\"duration_s\":{},\"ops\":{},\"ops_per_s\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\
             \"p999_us\":{},\"max_us\":{},\"errors\":{},\"fsync\":true,\"fsync_floor_p50_us\":{},\"tcp_rtt_floor_p50_us\":{},\"write_floor_us\":{},\"cpu_us_per_op\":{:.2}{}}}",
            options.nodes,
            options.groups,
            options.shards,
            options.clients,
            options.payload,
            options.duration.as_secs(),
            ops,
            ops as f64 / seconds,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            histogram.max(),
            errors,
            floor_us,
            rtt_us,
            write_floor_us,
            cpu_us_per_op,
            replication_floor
                .as_ref()
                .map(|f| format!(
                    ",\"floor_ops_per_s\":{:.0},\"floor_p50_us\":{},\"floor_p99_us\":{},\"floor_cpu_us_per_op\":{:.2}",
                    f.ops_per_s,
                    f.latency_us.value_at_quantile(0.5),
                    f.latency_us.value_at_quantile(0.99),
                    f.cpu_us_per_op
                ))
                .unwrap_or_default()
        );
    } else {
        println!(
            "coraft cluster benchmark: {} node(s) on loopback, {} shard(s) each, {} group(s), WAL fdatasync on",
            options.nodes, options.shards, options.groups
        );
        println!(
            "  clients {}  payload {} B  duration {} s (after {} s warm-up)",
            options.clients,
            options.payload,
            options.duration.as_secs(),
            options.warmup.as_secs()
        );
        println!("  writes/s        {:>12.0}", ops as f64 / seconds);
        println!("  latency p50     {:>9} µs", q(0.5));
        println!("  latency p90     {:>9} µs", q(0.9));
        println!("  latency p99     {:>9} µs", q(0.99));
        println!("  latency p99.9   {:>9} µs", q(0.999));
        println!("  latency max     {:>9} µs", histogram.max());
        println!("  errors          {:>12}", errors);
        println!(
            "  fdatasync floor {:>9} µs (p50 of 4 KiB O_DIRECT write + fdatasync, same disk)",
            floor_us
        );
        println!("  p50 / floor     {:>12.2}", q(0.5) as f64 / floor_us.max(1) as f64);
        println!(
            "  TCP RTT floor   {:>9} µs (p50 of a 64-byte loopback ping-pong)",
            rtt_us
        );
        println!(
            "  write floor     {:>9} µs ({}; p50 / this {:.2})",
            write_floor_us,
            if options.nodes > 1 {
                "2 RTT + fdatasync: client to leader, leader to follower"
            } else {
                "RTT + fdatasync"
            },
            q(0.5) as f64 / write_floor_us.max(1) as f64
        );
        println!(
            "  CPU per write   {:>9.2} µs (this process's user + system time while measuring; {:.2} cores busy)",
            cpu_us_per_op,
            cpu.as_secs_f64() / seconds
        );
        if let Some(f) = &replication_floor {
            let fq = |quantile: f64| f.latency_us.value_at_quantile(quantile);
            println!(
                "  replication floor {:>7.0} writes/s, p50 {} µs, p99 {} µs, {:.2} µs CPU per write, \
                 flush p50/p99 {}/{} µs (3 logs group-committing, loopback, blocking threads, no Raft; \
                 `coraft-bench floor`)",
                f.ops_per_s,
                fq(0.5),
                fq(0.99),
                f.cpu_us_per_op,
                f.flush_us.value_at_quantile(0.5),
                f.flush_us.value_at_quantile(0.99)
            );
            println!(
                "  against the floor   {:>5.2} of its writes/s, p50 {:.2}×, p99 {:.2}×",
                ops as f64 / seconds / f.ops_per_s.max(1.0),
                q(0.5) as f64 / fq(0.5).max(1) as f64,
                q(0.99) as f64 / fq(0.99).max(1) as f64
            );
        }
        println!("  where the time goes (per node and shard, whole run incl. warm-up):");
        println!("    node shard  leads  turns   stalls  WAL syncs  sync p50/p99 µs   proposal→result p50/p99 µs  turn p99 µs");
        for (node, m) in &stages {
            println!(
                "    {:>4} {:>5} {:>6} {:>6} {:>8} {:>10} {:>8}/{:<8} {:>12}/{:<14} {:>10}",
                node,
                m.shard,
                m.groups_led,
                m.turns,
                m.stalls,
                m.wal_syncs,
                m.wal_sync_us.value_at_quantile(0.5),
                m.wal_sync_us.value_at_quantile(0.99),
                m.proposal_us.value_at_quantile(0.5),
                m.proposal_us.value_at_quantile(0.99),
                m.turn_us.value_at_quantile(0.99),
            );
        }
        println!("  stages of a write on the leaders, p50/p99 µs:");
        println!("    node shard     queue wait   replication RTT   proposal→commit   apply batch");
        for (node, m) in stages.iter().filter(|(_, m)| m.groups_led > 0) {
            let pair = |h: &hdrhistogram::Histogram<u64>| {
                format!("{}/{}", h.value_at_quantile(0.5), h.value_at_quantile(0.99))
            };
            println!(
                "    {:>4} {:>5} {:>14} {:>17} {:>17} {:>13}",
                node,
                m.shard,
                pair(&m.queue_us),
                pair(&m.replication_us),
                pair(&m.commit_us),
                pair(&m.apply_us),
            );
        }
    }
    Ok(())
}
