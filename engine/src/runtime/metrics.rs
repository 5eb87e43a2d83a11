//! What a shard counts and times: counters per stage, latency histograms per
//! stage of a write (queue wait, WAL group commit, replication round trip,
//! commit, apply, proposal to result) and of the loop turn, readable through
//! [`Node::metrics`](super::Node::metrics) and rendered in the Prometheus
//! text format for the optional HTTP endpoint.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A turn of the shard loop longer than this is logged as a stall.
pub const TURN_BUDGET: Duration = Duration::from_millis(20);
/// Largest latency the histograms record (longer values are clamped).
pub const LATENCY_MAX_US: u64 = 60_000_000;
/// Bound on the bytes of an HTTP request the metrics endpoint reads.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

/// A snapshot of one shard's metrics.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// The shard.
    pub shard: usize,
    /// Groups it hosts.
    pub groups: u64,
    /// Groups it currently leads.
    pub groups_led: u64,
    /// Groups idle and quiet (no ticks, no heartbeats of their own).
    pub groups_quiesced: u64,
    /// Requests answered with a timeout (`REQUEST_TIMEOUT`).
    pub requests_timed_out: u64,
    /// Loop turns run.
    pub turns: u64,
    /// Turns longer than [`TURN_BUDGET`].
    pub stalls: u64,
    /// Raft messages received from peers.
    pub raft_messages_received: u64,
    /// Raft messages queued to peers.
    pub raft_messages_sent: u64,
    /// Raft messages dropped because a peer's queue was full or the peer was down.
    pub raft_messages_dropped: u64,
    /// Peers' messages dropped for breaking the protocol (wrong sender,
    /// malformed appends, impossible acknowledgements, snapshots).
    pub protocol_violations: u64,
    /// Client requests received over the network.
    pub client_requests: u64,
    /// Proposals accepted by a leader's core.
    pub proposals: u64,
    /// Proposals refused (not leader, busy, ...).
    pub proposals_refused: u64,
    /// Committed entries applied to state machines.
    pub entries_applied: u64,
    /// Linearizable reads answered.
    pub reads_served: u64,
    /// Snapshots taken and made durable (on demand and by policy).
    pub snapshots_taken: u64,
    /// Data bytes of those snapshots (what `on_snapshot_save` wrote).
    pub snapshot_bytes: u64,
    /// WAL segment files deleted after log compaction.
    pub wal_segments_deleted: u64,
    /// Log entries compactions forgot that the shard's release thread
    /// dropped (`RELEASE_OFF_LOOP_ENTRIES_MIN` or more at once).
    pub compacted_entries_released_off_loop: u64,
    /// Log entries compactions forgot that were dropped on the shard's
    /// thread: fewer than `RELEASE_OFF_LOOP_ENTRIES_MIN` at once, or the
    /// release thread `RELEASE_QUEUE_MAX` compactions behind.
    pub compacted_entries_dropped_on_loop: u64,
    /// Snapshot stream bytes sent to followers (InstallSnapshot; resent
    /// chunks count again).
    pub snapshot_install_bytes_sent: u64,
    /// Snapshot stream bytes received from leaders and accepted.
    pub snapshot_install_bytes_received: u64,
    /// Snapshot streams a follower acknowledged as durable.
    pub snapshot_installs_sent: u64,
    /// Snapshots installed here from a leader.
    pub snapshots_installed: u64,
    /// Snapshot streams that could not be sent (the snapshot could not be
    /// read): the core goes back to probing the follower.
    pub snapshot_installs_failed: u64,
    /// Snapshot streams dropped because the group's leadership changed or
    /// the follower left the configuration.
    pub snapshot_installs_abandoned: u64,
    /// Times a snapshot stream went back to its last acknowledged chunk (a
    /// reconnect, or no ack for `SNAPSHOT_ACK_TIMEOUT`).
    pub snapshot_install_rewinds: u64,
    /// Snapshot chunks refused here (out of order, stale term, bad checksum
    /// or metadata).
    pub snapshot_install_chunks_refused: u64,
    /// WAL group commits completed.
    pub wal_syncs: u64,
    /// Ticks made up after the shard was late to count them (a long turn,
    /// a paused process, a slow `on_apply`): see `runtime/clock.rs`.
    pub ticks_made_up: u64,
    /// 1 once the shard's WAL failed (an fdatasync error, no space): the
    /// shard has stopped serving as a replica (fail-stop) until restarted.
    pub wal_failed: u64,
    /// Outbound connections to peer nodes (a gauge: membership changes
    /// open and close them).
    pub peer_connections: u64,
    /// Length of loop turns, µs.
    pub turn_us: Histogram<u64>,
    /// WAL group commit (write + fdatasync) as the shard waits for it, µs.
    pub wal_sync_us: Histogram<u64>,
    /// From a proposal reaching the shard to its result, µs.
    pub proposal_us: Histogram<u64>,
    /// From a client request arriving on its connection to its proposal
    /// reaching the core (the shard's inbox and batching), µs.
    pub queue_us: Histogram<u64>,
    /// From an AppendEntries leaving the leader to the follower's
    /// acknowledgement of its last entry (the follower's fsync included), µs.
    pub replication_us: Histogram<u64>,
    /// From a proposal reaching the core to its entry being committed, µs.
    pub commit_us: Histogram<u64>,
    /// One state machine `on_apply` call (a batch of commands), µs.
    pub apply_us: Histogram<u64>,
    /// Making one snapshot durable on the blocking thread pool (`finish`,
    /// and a view's writing before it), µs; `on_snapshot_save` itself runs
    /// on the shard's thread before and is not counted.
    pub snapshot_us: Histogram<u64>,
    /// Between two node-level beats this shard sent its peers (one a tick
    /// when the loop is on time; a long turn stretches it), µs.
    pub beat_interval_us: Histogram<u64>,
}

impl ShardMetrics {
    /// Empty metrics of shard `shard`.
    pub fn new(shard: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            groups: 0,
            groups_led: 0,
            groups_quiesced: 0,
            requests_timed_out: 0,
            turns: 0,
            stalls: 0,
            raft_messages_received: 0,
            raft_messages_sent: 0,
            raft_messages_dropped: 0,
            protocol_violations: 0,
            client_requests: 0,
            proposals: 0,
            proposals_refused: 0,
            entries_applied: 0,
            reads_served: 0,
            snapshots_taken: 0,
            snapshot_bytes: 0,
            wal_segments_deleted: 0,
            compacted_entries_released_off_loop: 0,
            compacted_entries_dropped_on_loop: 0,
            snapshot_install_bytes_sent: 0,
            snapshot_install_bytes_received: 0,
            snapshot_installs_sent: 0,
            snapshots_installed: 0,
            snapshot_installs_failed: 0,
            snapshot_installs_abandoned: 0,
            snapshot_install_rewinds: 0,
            snapshot_install_chunks_refused: 0,
            wal_syncs: 0,
            ticks_made_up: 0,
            wal_failed: 0,
            peer_connections: 0,
            turn_us: histogram(),
            wal_sync_us: histogram(),
            proposal_us: histogram(),
            queue_us: histogram(),
            replication_us: histogram(),
            commit_us: histogram(),
            apply_us: histogram(),
            snapshot_us: histogram(),
            beat_interval_us: histogram(),
        }
    }

    /// Records a duration in a histogram, clamped to its bounds.
    pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        histogram.record(micros).expect("value within bounds");
    }
}

/// A counter or gauge of the exposition: name, help, how to read it.
type CounterSpec = (&'static str, &'static str, fn(&ShardMetrics) -> u64);
/// A latency summary of the exposition: name, help, which histogram.
type SummarySpec = (&'static str, &'static str, fn(&ShardMetrics) -> &Histogram<u64>);

/// Renders a node's metrics in the Prometheus text exposition format.
pub fn render_prometheus(node: u64, shards: &[ShardMetrics]) -> String {
    let mut out = String::new();
    let counters: [CounterSpec; 33] = [
        ("coraft_groups", "Groups hosted", |m| m.groups),
        ("coraft_groups_led", "Groups led", |m| m.groups_led),
        ("coraft_groups_quiesced", "Groups quiet (idle)", |m| m.groups_quiesced),
        (
            "coraft_requests_timed_out_total",
            "Requests answered with a timeout",
            |m| m.requests_timed_out,
        ),
        ("coraft_turns_total", "Shard loop turns", |m| m.turns),
        ("coraft_stalls_total", "Turns over the budget", |m| m.stalls),
        ("coraft_raft_messages_received_total", "Raft messages received", |m| {
            m.raft_messages_received
        }),
        (
            "coraft_raft_messages_sent_total",
            "Raft messages queued to peers",
            |m| m.raft_messages_sent,
        ),
        (
            "coraft_raft_messages_dropped_total",
            "Raft messages dropped on full queues or for peers that are down",
            |m| m.raft_messages_dropped,
        ),
        (
            "coraft_protocol_violations_total",
            "Peer messages dropped for breaking the protocol",
            |m| m.protocol_violations,
        ),
        ("coraft_client_requests_total", "Client requests received", |m| {
            m.client_requests
        }),
        ("coraft_proposals_total", "Proposals accepted", |m| m.proposals),
        ("coraft_proposals_refused_total", "Proposals refused", |m| {
            m.proposals_refused
        }),
        ("coraft_entries_applied_total", "Entries applied", |m| m.entries_applied),
        ("coraft_reads_served_total", "Linearizable reads answered", |m| {
            m.reads_served
        }),
        ("coraft_snapshots_taken_total", "Snapshots taken", |m| m.snapshots_taken),
        (
            "coraft_compacted_entries_released_off_loop_total",
            "Compacted log entries dropped by the shard's release thread",
            |m| m.compacted_entries_released_off_loop,
        ),
        (
            "coraft_compacted_entries_dropped_on_loop_total",
            "Compacted log entries dropped on the shard's thread",
            |m| m.compacted_entries_dropped_on_loop,
        ),
        (
            "coraft_snapshot_bytes_total",
            "Data bytes of the snapshots taken",
            |m| m.snapshot_bytes,
        ),
        (
            "coraft_wal_segments_deleted_total",
            "WAL segment files deleted after log compaction",
            |m| m.wal_segments_deleted,
        ),
        (
            "coraft_snapshot_install_bytes_sent_total",
            "Snapshot stream bytes sent to followers",
            |m| m.snapshot_install_bytes_sent,
        ),
        (
            "coraft_snapshot_install_bytes_received_total",
            "Snapshot stream bytes received from leaders",
            |m| m.snapshot_install_bytes_received,
        ),
        (
            "coraft_snapshot_installs_sent_total",
            "Snapshot streams a follower acknowledged as durable",
            |m| m.snapshot_installs_sent,
        ),
        (
            "coraft_snapshots_installed_total",
            "Snapshots installed from a leader",
            |m| m.snapshots_installed,
        ),
        (
            "coraft_snapshot_installs_failed_total",
            "Snapshot streams that could not be sent",
            |m| m.snapshot_installs_failed,
        ),
        (
            "coraft_snapshot_installs_abandoned_total",
            "Snapshot streams dropped on a leadership or membership change",
            |m| m.snapshot_installs_abandoned,
        ),
        (
            "coraft_snapshot_install_rewinds_total",
            "Snapshot streams sent again from the last acknowledged chunk",
            |m| m.snapshot_install_rewinds,
        ),
        (
            "coraft_snapshot_install_chunks_refused_total",
            "Snapshot chunks refused (out of order, stale, damaged)",
            |m| m.snapshot_install_chunks_refused,
        ),
        ("coraft_wal_syncs_total", "WAL group commits", |m| m.wal_syncs),
        (
            "coraft_ticks_made_up_total",
            "Ticks made up after the shard was late to count them",
            |m| m.ticks_made_up,
        ),
        (
            "coraft_wal_failed",
            "1 once the WAL failed and the shard stopped serving (fail-stop)",
            |m| m.wal_failed,
        ),
        ("coraft_shards", "Shards", |_| 1),
        ("coraft_peer_connections", "Outbound connections to peer nodes", |m| {
            m.peer_connections
        }),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in shards {
            let _ = writeln!(out, "{name}{{node=\"{node}\",shard=\"{}\"}} {}", m.shard, value(m));
        }
    }
    let histograms: [SummarySpec; 8] = [
        ("coraft_turn_seconds", "Shard loop turn length", |m| &m.turn_us),
        ("coraft_wal_sync_seconds", "WAL group commit latency", |m| {
            &m.wal_sync_us
        }),
        ("coraft_proposal_seconds", "Proposal to result latency", |m| {
            &m.proposal_us
        }),
        ("coraft_queue_seconds", "Client request arrival to proposal", |m| {
            &m.queue_us
        }),
        (
            "coraft_replication_seconds",
            "AppendEntries sent to acknowledged",
            |m| &m.replication_us,
        ),
        ("coraft_commit_seconds", "Proposal to commit", |m| &m.commit_us),
        ("coraft_apply_seconds", "State machine apply batch", |m| &m.apply_us),
        (
            "coraft_snapshot_seconds",
            "Snapshot made durable off the loop (finish, and a view's writing)",
            |m| &m.snapshot_us,
        ),
    ];
    for (name, help, histogram) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for m in shards {
            let h = histogram(m);
            for quantile in [0.5, 0.9, 0.99, 0.999] {
                let seconds = h.value_at_quantile(quantile) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{node}\",shard=\"{}\",quantile=\"{quantile}\"}} {seconds}",
                    m.shard
                );
            }
            let sum = h.mean() * h.len() as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{node=\"{node}\",shard=\"{}\"}} {sum}", m.shard);
            let _ = writeln!(out, "{name}_count{{node=\"{node}\",shard=\"{}\"}} {}", m.shard, h.len());
        }
    }
    out
}

/// A minimal HTTP endpoint answering `GET /metrics`; stops when dropped.
pub(crate) struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves on `address` from a thread that runs on `cpus` (the node's
    /// helper CPUs).
    pub fn start(
        address: SocketAddr,
        cpus: Vec<usize>,
        render: impl Fn() -> String + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("coraft-metrics".into()).spawn(move || {
            if let Err(error) = super::affinity::pin_current_thread(&cpus) {
                log::warn!("metrics thread: cannot pin to CPUs {cpus:?}: {error}");
            }
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut request = vec![0u8; HTTP_REQUEST_BYTES_MAX];
                        let read = stream.read(&mut request).unwrap_or(0);
                        let head = String::from_utf8_lossy(&request[..read]);
                        let response = if head.starts_with("GET /metrics") {
                            let body = render();
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        } else {
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                        };
                        let _ = stream.write_all(response.as_bytes());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bound on AppendEntries send times remembered per (group, follower).
pub const APPEND_TIMES_MAX: usize = 64;

/// When the leader sent its recent AppendEntries, per group and follower,
/// to time replication round trips when the acknowledgements come back.
#[derive(Default)]
pub(crate) struct AppendTimes {
    sent: std::collections::HashMap<(u64, u64), std::collections::VecDeque<(u64, std::time::Instant)>>,
}

impl AppendTimes {
    /// An append ending at `last_index` left for `follower` now.
    pub fn sent(&mut self, group: u64, follower: u64, last_index: u64) {
        let times = self.sent.entry((group, follower)).or_default();
        if times.len() == APPEND_TIMES_MAX {
            times.pop_front();
        }
        times.push_back((last_index, std::time::Instant::now()));
    }

    /// `follower` acknowledged up to `match_index`: the round trip of the
    /// newest append it covers, if any was remembered.
    pub fn acknowledged(&mut self, group: u64, follower: u64, match_index: u64) -> Option<Duration> {
        let times = self.sent.get_mut(&(group, follower))?;
        let mut newest = None;
        while times.front().is_some_and(|&(index, _)| index <= match_index) {
            newest = times.pop_front().map(|(_, at)| at);
        }
        newest.map(|at| at.elapsed())
    }
}
