//! `coraft-bench net`: frames over TCP against a raw TCP stream and ping-pong.
//!
//! Every point runs four measurements in the same process, on the same two
//! glommio executors (pinned to cores 0 and 1 unless `--unpinned`):
//! - framed stream: one `OutboundConnection` sends AppendEntries messages of
//!   `msg_bytes` payload as fast as its queue takes them; the receiver
//!   validates every frame and touches every payload. Each message shares its
//!   payload (a `Bytes` clone) with a pool of entries built before the clock
//!   starts, as a leader's `to_wire` shares an entry of its log with every
//!   follower; `--copy-payloads` gives each message a fresh copy instead (what
//!   the engine did before entry payloads were shared);
//! - raw stream: the same frame bytes, written in a loop over a plain glommio
//!   TCP stream and read into a discarded buffer: the floor;
//! - framed round trip: one AppendEntries out, one AppendEntriesResponse back
//!   on the peer's own outbound connection (the way Raft replies), one at a time;
//! - raw round trip: `msg_bytes` out and echoed back over plain TCP.
//!
//! `--json` prints one line per point with exactly the keys of issue 4.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use coraft_net::bytes::Bytes;
use coraft_net::futures_lite::{AsyncReadExt, AsyncWriteExt};
use coraft_net::schema::{
    entry_kind, AppendEntries, AppendEntriesResponse, ArchivedRaftBody, Entry, Envelope, RaftBatch, RaftBody,
};
use coraft_net::{FrameEncoder, Listener, LocalIdentity, NetConfig, OutboundConnection, PeerAddress};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

const CLUSTER: u64 = 0xC0_4A_F7;
const DEFAULT_SIZES: [usize; 4] = [64, 512, 4096, 65536];
const DEFAULT_STREAM_SECONDS: f64 = 1.0;
/// Framed and raw streams alternate this many times; medians are reported,
/// so a burst of load from other processes hits both sides alike.
const DEFAULT_REPEATS: usize = 3;
const DEFAULT_RTT_SECONDS: f64 = 1.0;
/// The raw stream writes a template of about this many bytes per call.
const RAW_TEMPLATE_BYTES: usize = 256 * 1024;
const RAW_READ_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Options {
    json: bool,
    sizes: Vec<usize>,
    stream_seconds: f64,
    rtt_seconds: f64,
    pinned: bool,
    spin_us: u64,
    repeats: usize,
    copy_payloads: bool,
}

/// `coraft-bench net`: each point is one message size.
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Message payload sizes in bytes, comma-separated (1 to 1048576 each).
    #[arg(long, value_delimiter = ',', value_name = "BYTES,...", default_values_t = DEFAULT_SIZES, value_parser = message_size)]
    pub sizes: Vec<usize>,
    /// Seconds of each framed and raw stream measurement.
    #[arg(long, default_value_t = DEFAULT_STREAM_SECONDS, value_name = "S", value_parser = crate::args::positive_seconds)]
    pub seconds: f64,
    /// Seconds of each round-trip measurement.
    #[arg(long, default_value_t = DEFAULT_RTT_SECONDS, value_name = "S", value_parser = crate::args::positive_seconds)]
    pub rtt_seconds: f64,
    /// Times the framed and raw streams alternate (medians are reported).
    #[arg(long, default_value_t = DEFAULT_REPEATS, value_name = "N", value_parser = crate::args::at_least_one)]
    pub repeats: usize,
    /// Microseconds each executor spins before parking (glommio's spin_before_park).
    #[arg(long, default_value_t = 0, value_name = "US")]
    pub spin_us: u64,
    /// Leave the two executors unpinned (default: pinned to cores 0 and 1).
    #[arg(long)]
    pub unpinned: bool,
    /// Give each message a fresh payload copy instead of a shared one.
    #[arg(long)]
    pub copy_payloads: bool,
    /// Print one JSON line per point instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn message_size(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(size) if (1..=1 << 20).contains(&size) => Ok(size),
        _ => Err("expected message sizes in bytes from 1 to 1048576, e.g. 64,4096".into()),
    }
}

fn parse(args: NetArgs) -> Options {
    Options {
        json: args.json,
        sizes: args.sizes,
        stream_seconds: args.seconds,
        rtt_seconds: args.rtt_seconds,
        pinned: !args.unpinned,
        spin_us: args.spin_us,
        repeats: args.repeats,
        copy_payloads: args.copy_payloads,
    }
}

/// Runs the network benchmark with the given command-line arguments.
pub fn run(args: NetArgs) -> Result<()> {
    let options = parse(args);
    if !options.json {
        println!(
            "net: coraft-net frames vs raw TCP on loopback, same run ({}, spin_before_park {} us, {})",
            if options.pinned {
                "executors pinned to cores 0,1"
            } else {
                "unpinned"
            },
            options.spin_us,
            if options.copy_payloads {
                "a payload copy per message"
            } else {
                "shared payloads"
            }
        );
        println!(
            "{:>9} {:>12} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9}   {:>6} {:>6} {:>6} {:>6} {:>5} {:>7} {:>7}",
            "msg_bytes",
            "msgs/s",
            "MB/s",
            "raw MB/s",
            "ratio",
            "rtt p50",
            "rtt p99",
            "raw p50",
            "raw p99",
            "send",
            "recv",
            "rsend",
            "rrecv",
            "cpu r",
            "rtt cpu",
            "raw cpu"
        );
    }
    for &size in &options.sizes {
        let (mut msgs_per_s, mut mb_per_s, mut raw_mb_per_s) = (Vec::new(), Vec::new(), Vec::new());
        let (mut framed_cpu, mut raw_cpu) = (Vec::new(), Vec::new());
        for _ in 0..options.repeats {
            let (framed, cpu) = framed_stream(&options, size)?;
            msgs_per_s.push(framed.msgs_per_s);
            mb_per_s.push(framed.mb_per_s);
            framed_cpu.push(cpu);
            let (raw, cpu) = raw_stream(&options, size)?;
            raw_mb_per_s.push(raw);
            raw_cpu.push(cpu);
        }
        let framed_cpu = median_cpu(framed_cpu);
        let raw_cpu = median_cpu(raw_cpu);
        let stream = StreamResult {
            msgs_per_s: median(msgs_per_s),
            mb_per_s: median(mb_per_s),
        };
        let raw_mb_per_s = median(raw_mb_per_s);
        let (rtt_p50_us, rtt_p99_us, rtt_cpu_us) = framed_round_trips(&options, size)?;
        let (raw_rtt_p50_us, raw_rtt_p99_us, raw_rtt_cpu_us) = raw_round_trips(&options, size)?;
        let ratio = stream.mb_per_s / raw_mb_per_s;
        if options.json {
            // Keys in the order issue 4 lists them (serde_json would sort them).
            println!(
                "{{\"msg_bytes\":{size},\"msgs_per_s\":{},\"mb_per_s\":{},\"raw_mb_per_s\":{},\
                 \"ratio\":{},\"rtt_p50_us\":{},\"rtt_p99_us\":{},\"raw_rtt_p50_us\":{}}}",
                json_integer(stream.msgs_per_s),
                json_number(round2(stream.mb_per_s)),
                json_number(round2(raw_mb_per_s)),
                json_number(round2(ratio)),
                json_number(round2(rtt_p50_us)),
                json_number(round2(rtt_p99_us)),
                json_number(round2(raw_rtt_p50_us)),
            );
        } else {
            let cpu_ratio = raw_cpu.bottleneck() / framed_cpu.bottleneck();
            println!(
                "{size:>9} {:>12.0} {:>10.1} {:>10.1} {ratio:>6.2} {rtt_p50_us:>9.1} {rtt_p99_us:>9.1} \
                 {raw_rtt_p50_us:>9.1} {raw_rtt_p99_us:>9.1}   {:>6.0} {:>6.0} {:>6.0} {:>6.0} {cpu_ratio:>5.2} \
                 {rtt_cpu_us:>7.1} {raw_rtt_cpu_us:>7.1}",
                stream.msgs_per_s,
                stream.mb_per_s,
                raw_mb_per_s,
                framed_cpu.send_ns_per_kb,
                framed_cpu.recv_ns_per_kb,
                raw_cpu.send_ns_per_kb,
                raw_cpu.recv_ns_per_kb,
            );
        }
    }
    Ok(())
}

/// A rounded JSON integer (`null` for NaN or infinity).
fn json_integer(value: f64) -> serde_json::Value {
    if value.is_finite() {
        serde_json::Value::from(value.round() as u64)
    } else {
        serde_json::Value::Null
    }
}

/// A JSON number (`null` for NaN or infinity, which JSON cannot hold).
fn json_number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The run whose bottleneck side is the median one.
fn median_cpu(mut values: Vec<StreamCpu>) -> StreamCpu {
    values.sort_by(|a, b| a.bottleneck().total_cmp(&b.bottleneck()));
    values[values.len() / 2]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn executor(options: &Options, core: usize, name: &str) -> LocalExecutorBuilder {
    let placement = if options.pinned {
        Placement::Fixed(core)
    } else {
        Placement::Unbound
    };
    let mut builder = LocalExecutorBuilder::new(placement).name(name);
    if options.spin_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(options.spin_us));
    }
    builder
}

fn identity(node_id: u64) -> NetConfig {
    NetConfig::new(LocalIdentity {
        cluster_id: CLUSTER,
        node_id,
        shard_id: 0,
    })
}

/// Distinct entry payloads of `size` bytes, about `RAW_TEMPLATE_BYTES` in
/// all: the entries a leader's log holds, built once (by the proposals, not
/// by the sending), and the same working set as the raw stream's template.
fn payload_pool(size: usize) -> Vec<Bytes> {
    let count = (RAW_TEMPLATE_BYTES / size).max(1);
    (0..count).map(|at| Bytes::from(vec![0xab ^ at as u8; size])).collect()
}

/// An AppendEntries carrying `data` as its one entry.
fn append(data: Bytes, index: u64) -> Envelope {
    Envelope {
        group: index % 64,
        from: 2,
        to: 1,
        term: 1,
        body: RaftBody::AppendEntries(AppendEntries {
            prev_log_index: index,
            prev_log_term: 1,
            leader_commit: index,
            entries: vec![Entry {
                term: 1,
                index: index + 1,
                kind: entry_kind::NORMAL,
                data,
            }],
        }),
    }
}

fn peer(node_id: u64, address: SocketAddr) -> PeerAddress {
    PeerAddress {
        node_id,
        shard_id: 0,
        address,
    }
}

fn join<T: Send + 'static>(handle: glommio::ExecutorJoinHandle<Result<T>>) -> Result<T> {
    handle.join().map_err(|error| anyhow!("executor failed: {error}"))?
}

struct StreamResult {
    msgs_per_s: f64,
    mb_per_s: f64,
}

/// CPU time of one stream, per wire byte, on each side (load-independent:
/// what a quiet machine's throughput follows).
#[derive(Clone, Copy)]
struct StreamCpu {
    send_ns_per_kb: f64,
    recv_ns_per_kb: f64,
}

impl StreamCpu {
    fn new(send_ns: u64, recv_ns: u64, bytes: u64) -> StreamCpu {
        let kb = bytes as f64 / 1000.0;
        StreamCpu {
            send_ns_per_kb: send_ns as f64 / kb,
            recv_ns_per_kb: recv_ns as f64 / kb,
        }
    }

    /// The busier side bounds the stream.
    fn bottleneck(&self) -> f64 {
        self.send_ns_per_kb.max(self.recv_ns_per_kb)
    }
}

/// CPU time the calling thread (one glommio executor) has used, in ns.
fn thread_cpu_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a live timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// Receiver on core 0, sender (an `OutboundConnection`) on core 1.
fn framed_stream(options: &Options, size: usize) -> Result<(StreamResult, StreamCpu)> {
    let (address_tx, address_rx) = mpsc::channel();
    let receiver = executor(options, 0, "net-recv")
        .spawn(move || async move {
            let listener = Listener::bind("127.0.0.1:0".parse()?, identity(1))?;
            address_tx.send(listener.local_addr())?;
            let mut connection = listener.accept().await?.handshake().await?;
            let cpu_start = thread_cpu_ns();
            let (mut messages, mut bytes, mut payload) = (0u64, 0u64, 0u64);
            let mut first = None;
            while let Some(frame) = connection.recv().await? {
                first.get_or_insert_with(Instant::now);
                bytes += frame.wire_bytes() as u64;
                for message in frame.raft().expect("raft frame").messages.iter() {
                    messages += 1;
                    if let ArchivedRaftBody::AppendEntries(append) = &message.body {
                        payload += append.entries.iter().map(|entry| entry.data.len() as u64).sum::<u64>();
                    }
                }
            }
            let seconds = first.map_or(f64::NAN, |first| first.elapsed().as_secs_f64());
            anyhow::ensure!(payload == messages * size as u64, "payload bytes lost");
            let result = StreamResult {
                msgs_per_s: messages as f64 / seconds,
                mb_per_s: bytes as f64 / seconds / 1e6,
            };
            Ok((result, thread_cpu_ns() - cpu_start, bytes))
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let address = address_rx.recv()?;
    let seconds = options.stream_seconds;
    let copy_payloads = options.copy_payloads;
    let sender = executor(options, 1, "net-send")
        .spawn(move || async move {
            let pool = payload_pool(size);
            let outbound = OutboundConnection::spawn(identity(2), peer(1, address))?;
            let cpu_start = thread_cpu_ns();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut index = 0u64;
            while Instant::now() < deadline {
                for _ in 0..64 {
                    let shared = &pool[index as usize % pool.len()];
                    let data = if copy_payloads {
                        Bytes::from(shared.to_vec())
                    } else {
                        shared.clone()
                    };
                    outbound.send(append(data, index)).await?;
                    index += 1;
                }
            }
            outbound.flushed().await;
            let cpu = thread_cpu_ns() - cpu_start;
            outbound.close().await;
            Ok(cpu)
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let send_ns = join(sender)?;
    let (result, recv_ns, bytes) = join(receiver)?;
    Ok((result, StreamCpu::new(send_ns, recv_ns, bytes)))
}

/// Frame bytes as the framed stream produces them, about `RAW_TEMPLATE_BYTES`.
fn frame_template(size: usize) -> Vec<u8> {
    let messages = (RAW_TEMPLATE_BYTES / (size + 128)).max(1);
    let batch = RaftBatch {
        messages: (0..messages as u64)
            .map(|index| append(Bytes::from(vec![0xab; size]), index))
            .collect(),
    };
    let mut encoder = FrameEncoder::new();
    encoder.encode(&batch).expect("template encodes");
    encoder.as_bytes().to_vec()
}

/// The same bytes over a plain glommio TCP stream.
fn raw_stream(options: &Options, size: usize) -> Result<(f64, StreamCpu)> {
    let (address_tx, address_rx) = mpsc::channel();
    let receiver = executor(options, 0, "raw-recv")
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| anyhow!("bind: {error}"))?;
            address_tx.send(listener.local_addr().map_err(|error| anyhow!("{error}"))?)?;
            let mut stream = listener.accept().await.map_err(|error| anyhow!("accept: {error}"))?;
            stream.set_nodelay(true).map_err(|error| anyhow!("{error}"))?;
            let cpu_start = thread_cpu_ns();
            let mut buffer = vec![0u8; RAW_READ_BYTES];
            let mut bytes = 0u64;
            let mut first = None;
            loop {
                let received = stream.read(&mut buffer).await?;
                if received == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                bytes += received as u64;
            }
            let seconds = first.map_or(f64::NAN, |first| first.elapsed().as_secs_f64());
            Ok((bytes as f64 / seconds / 1e6, thread_cpu_ns() - cpu_start, bytes))
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let address = address_rx.recv()?;
    let template = frame_template(size);
    let seconds = options.stream_seconds;
    let sender = executor(options, 1, "raw-send")
        .spawn(move || async move {
            let mut stream = TcpStream::connect(address)
                .await
                .map_err(|error| anyhow!("connect: {error}"))?;
            stream.set_nodelay(true).map_err(|error| anyhow!("{error}"))?;
            let cpu_start = thread_cpu_ns();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < deadline {
                stream.write_all(&template).await?;
            }
            stream.close().await?;
            Ok(thread_cpu_ns() - cpu_start)
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let send_ns = join(sender)?;
    let (mb_per_s, recv_ns, bytes) = join(receiver)?;
    Ok((mb_per_s, StreamCpu::new(send_ns, recv_ns, bytes)))
}

fn percentiles_us(histogram: &Histogram<u64>) -> (f64, f64) {
    (
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// p50 and p99 of the round trip in µs, and the CPU time both executor
/// threads spent per round trip in µs (load-robust, like the stream columns).
type RoundTrips = (f64, f64, f64);

/// One AppendEntries at a time from node 2 (core 1) to node 1 (core 0), each
/// answered on node 1's own outbound connection back to node 2.
fn framed_round_trips(options: &Options, size: usize) -> Result<RoundTrips> {
    let (server_tx, server_rx) = mpsc::channel::<SocketAddr>();
    let (client_tx, client_rx) = mpsc::channel::<SocketAddr>();
    let server = executor(options, 0, "rtt-server")
        .spawn(move || async move {
            let listener = Listener::bind("127.0.0.1:0".parse()?, identity(1))?;
            server_tx.send(listener.local_addr())?;
            let back = OutboundConnection::spawn(identity(1), peer(2, client_rx.recv()?))?;
            let mut connection = listener.accept().await?.handshake().await?;
            let cpu_start = thread_cpu_ns();
            while let Some(frame) = connection.recv().await? {
                for message in frame.raft().expect("raft frame").messages.iter() {
                    let reply = Envelope {
                        group: message.group.to_native(),
                        from: 1,
                        to: 2,
                        term: message.term.to_native(),
                        body: RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                            reject: false,
                            index: 1,
                            reject_hint_index: 0,
                            reject_hint_term: 0,
                        }),
                    };
                    back.send(reply).await?;
                }
            }
            let cpu = thread_cpu_ns() - cpu_start;
            back.close().await;
            Ok(cpu)
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let seconds = options.rtt_seconds;
    let client = executor(options, 1, "rtt-client")
        .spawn(move || async move {
            let listener = Listener::bind("127.0.0.1:0".parse()?, identity(2))?;
            client_tx.send(listener.local_addr())?;
            let out = OutboundConnection::spawn(identity(2), peer(1, server_rx.recv()?))?;
            // The inbound task wakes the measuring loop through a local channel,
            // as an engine task would be woken: no polling.
            let (replies_tx, replies_rx) = glommio::channels::local_channel::new_unbounded::<u64>();
            let inbound = glommio::spawn_local(async move {
                let mut connection = listener.accept().await?.handshake().await?;
                while let Some(frame) = connection.recv().await? {
                    let count = frame.raft().expect("raft frame").messages.len() as u64;
                    if replies_tx.try_send(count).is_err() {
                        break;
                    }
                }
                anyhow::Ok(())
            })
            .detach();
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let (mut sent, mut received) = (0u64, 0u64);
            let warmup_until = Instant::now() + Duration::from_millis(100);
            let deadline = warmup_until + Duration::from_secs_f64(seconds);
            let message = append(Bytes::from(vec![0xab; size]), 0);
            let cpu_start = thread_cpu_ns();
            while Instant::now() < deadline {
                let start = Instant::now();
                out.send(message.clone()).await?;
                sent += 1;
                while received < sent {
                    received += replies_rx.recv().await.ok_or_else(|| anyhow!("reply stream ended"))?;
                }
                if start >= warmup_until {
                    histogram.record(start.elapsed().as_nanos() as u64)?;
                }
            }
            let cpu = thread_cpu_ns() - cpu_start;
            out.close().await;
            drop(inbound);
            Ok((percentiles_us(&histogram), cpu, sent))
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let client = join(client);
    let server_cpu = join(server)?;
    let ((p50, p99), client_cpu, round_trips) = client?;
    Ok((p50, p99, (client_cpu + server_cpu) as f64 / 1000.0 / round_trips as f64))
}

/// `size` bytes out and echoed back, over plain glommio TCP.
fn raw_round_trips(options: &Options, size: usize) -> Result<RoundTrips> {
    let (address_tx, address_rx) = mpsc::channel();
    let server = executor(options, 0, "raw-echo")
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| anyhow!("bind: {error}"))?;
            address_tx.send(listener.local_addr().map_err(|error| anyhow!("{error}"))?)?;
            let mut stream = listener.accept().await.map_err(|error| anyhow!("accept: {error}"))?;
            stream.set_nodelay(true).map_err(|error| anyhow!("{error}"))?;
            let mut buffer = vec![0u8; size];
            let cpu_start = thread_cpu_ns();
            loop {
                match stream.read_exact(&mut buffer).await {
                    Ok(()) => stream.write_all(&buffer).await?,
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Ok(thread_cpu_ns() - cpu_start)
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let address = address_rx.recv()?;
    let seconds = options.rtt_seconds;
    let client = executor(options, 1, "raw-ping")
        .spawn(move || async move {
            let mut stream = TcpStream::connect(address)
                .await
                .map_err(|error| anyhow!("connect: {error}"))?;
            stream.set_nodelay(true).map_err(|error| anyhow!("{error}"))?;
            let message = vec![0xabu8; size];
            let mut echo = vec![0u8; size];
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let warmup_until = Instant::now() + Duration::from_millis(100);
            let deadline = warmup_until + Duration::from_secs_f64(seconds);
            let cpu_start = thread_cpu_ns();
            let mut round_trips = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                stream.write_all(&message).await?;
                stream.read_exact(&mut echo).await?;
                round_trips += 1;
                if start >= warmup_until {
                    histogram.record(start.elapsed().as_nanos() as u64)?;
                }
            }
            let cpu = thread_cpu_ns() - cpu_start;
            stream.close().await?;
            Ok((percentiles_us(&histogram), cpu, round_trips))
        })
        .map_err(|error| anyhow!("spawn executor: {error}"))?;
    let client = join(client);
    let server_cpu = join(server)?;
    let ((p50, p99), client_cpu, round_trips) = client?;
    Ok((p50, p99, (client_cpu + server_cpu) as f64 / 1000.0 / round_trips as f64))
}
