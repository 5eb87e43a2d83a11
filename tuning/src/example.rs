//! A commented example config, fitted to a machine: what
//! `coraft-tune example` prints and the docs start from.
//!
//! Shards run unbound so the example passes validation anywhere; the comment
//! above `[shards]` shows the pinned layout [`Topology::suggest`] gives for
//! the machine.

use crate::config::*;
use crate::topology::Topology;

/// A commented TOML config for node 1 of a 3-node loopback cluster, with one
/// shard per usable physical core of `topology`, unbound.
pub fn example_config(topology: &Topology) -> String {
    let suggestion = topology.suggest(None);
    let pinned = match &suggestion.cores {
        Some(cores) => {
            let list: Vec<String> = cores.iter().map(ToString::to_string).collect();
            format!("cores = [{}]", list.join(", "))
        }
        None => "cores = \"auto\"".to_owned(),
    };
    let peers: String = (1..=3)
        .map(|id| format!("[[peers]]\nid = {id}\naddress = \"127.0.0.1:700{id}\"\n"))
        .collect();
    [
        "# coraft node config (see docs/tuning.md). Check it with `coraft-tune check FILE`.\n\n".to_owned(),
        rows(&[
            (
                "cluster_id = 42".into(),
                "peers of another cluster are refused at handshake",
            ),
            (
                "node_id = 1".into(),
                "this node; must be one of the peers (0 is reserved)",
            ),
            ("listen = \"127.0.0.1:7001\"".into(), "Raft and client traffic"),
            (
                "# metrics_listen = \"127.0.0.1:9101\"".into(),
                "Prometheus text format over HTTP; off when omitted",
            ),
        ]),
        "\n# Every voter, this node included: the id and the address others dial.\n".to_owned(),
        peers,
        "\n# One shard = one glommio executor thread owning its Raft groups and one WAL.\n".to_owned(),
        format!(
            "# To pin the shards on this machine (`coraft-tune suggest`):\n#   placement = \"fixed\"\n#   {pinned}\n"
        ),
        "[shards]\n".to_owned(),
        rows(&[
            (
                format!("count = {}", suggestion.shard_count),
                "shards on this machine: one per usable physical core",
            ),
            (
                "placement = \"unbound\"".into(),
                "\"fixed\" pins shard i to cores[i] (or cores = \"auto\")",
            ),
            (
                format!("spin_before_park_us = {SPIN_BEFORE_PARK_US_DEFAULT}"),
                ">0: spin that long before sleeping, lower latency for more CPU",
            ),
        ]),
        "\n# The threads that are not shard executors: each shard's blocking thread\n# (snapshot and install writes, admin calls to other nodes), the metrics\n# endpoint, coraft-node's main thread. \"auto\": the CPUs no shard is pinned to\n# (all of them when the shards are unbound or take every one).\n[helper_threads]\n".to_owned(),
        rows(&[(
            "cores = \"auto\"".into(),
            "or a list of CPUs, e.g. [0]; any of them, the OS picks",
        )]),
        "\n[wal]\n".to_owned(),
        rows(&[
            (
                "dir = \"/var/lib/coraft/wal\"".into(),
                "shard i logs in dir/shard-i; or dirs = [..], one per shard",
            ),
            (
                format!("segment_bytes = {SEGMENT_BYTES_DEFAULT}"),
                "preallocated segment size, a multiple of 4096",
            ),
            (
                format!("zero_ahead_bytes = {ZERO_AHEAD_BYTES_DEFAULT}"),
                "idle WAL zeroes this far ahead so small writes overwrite; 0 = off",
            ),
            (
                "polled_io = false".into(),
                "true: IOPOLL ring, spins while writing; NVMe with poll queues only",
            ),
            (
                "dsync_small_flush_bytes = 524288".into(),
                "flushes up to this size are one O_DSYNC write (512 KiB: all); 0 = none below 512 KiB",
            ),
            (
                "fsync = \"always\"".into(),
                "the only policy the engine runs (\"never\" is refused)",
            ),
        ]),
        "\n[raft]\n".to_owned(),
        raft_rows(),
        "\n[limits]\n".to_owned(),
        limits_rows(),
        "\n[snapshot]\n".to_owned(),
        snapshot_rows(),
        "\n[log]\n".to_owned(),
        rows(&[(
            "level = \"info\"".into(),
            "coraft-node's stderr: off, error, warn, info, debug, trace; RUST_LOG wins",
        )]),
    ]
    .concat()
}

fn raft_rows() -> String {
    rows(&[
        (
            format!("tick_ms = {TICK_MS_DEFAULT}"),
            "every Raft timeout counts in ticks",
        ),
        (
            format!("election_timeout_ticks = {ELECTION_TIMEOUT_TICKS_DEFAULT}"),
            "each term waits a random [T, 2T) before campaigning",
        ),
        (
            format!("heartbeat_interval_ticks = {HEARTBEAT_INTERVAL_TICKS_DEFAULT}"),
            "must be below election_timeout_ticks",
        ),
        (
            "pre_vote = true".into(),
            "a partitioned node cannot disrupt the cluster on return",
        ),
        ("check_quorum = true".into(), "a leader without a quorum steps down"),
        (
            "read_mode = \"read_index\"".into(),
            "or \"lease\": no round trip, trusts clocks within the margin",
        ),
        (
            format!("clock_drift_margin_ticks = {CLOCK_DRIFT_MARGIN_TICKS_DEFAULT}"),
            "lease = election_timeout_ticks - this",
        ),
        (
            "election_priority = 0".into(),
            "0 = off; 1..=10: higher campaigns sooner, so tends to lead",
        ),
    ])
}

fn snapshot_rows() -> String {
    rows(&[
        (
            format!("after_entries = {SNAPSHOT_AFTER_ENTRIES_DEFAULT}"),
            "a group snapshots after this many entries applied; 0 = off",
        ),
        (
            format!("after_log_bytes = {SNAPSHOT_AFTER_LOG_BYTES_DEFAULT}"),
            "or after this many log bytes applied; 0 = off",
        ),
        (
            format!("shard_after_log_bytes = {SNAPSHOT_SHARD_AFTER_LOG_BYTES_DEFAULT}"),
            "or the shard's largest, once its groups applied this many together; 0 = off",
        ),
        (
            format!("interval_ms = {SNAPSHOT_INTERVAL_MS_DEFAULT}"),
            "or after this long, if it applied anything; 0 = off",
        ),
        (
            format!("log_tail_entries = {SNAPSHOT_LOG_TAIL_ENTRIES_DEFAULT}"),
            "entries kept below a snapshot for slow followers",
        ),
        (
            format!("install_bytes_per_second = {SNAPSHOT_INSTALL_BYTES_PER_SECOND_DEFAULT}"),
            "pace of the snapshots a shard streams to lagging followers",
        ),
    ])
}

fn limits_rows() -> String {
    rows(&[
        (
            format!("batch_entries_max = {BATCH_ENTRIES_MAX_DEFAULT}"),
            "proposals of one group handed to its core at once",
        ),
        (
            format!("batch_bytes_max = {BATCH_BYTES_MAX_DEFAULT}"),
            "entry bytes per AppendEntries (at least one entry is sent)",
        ),
        (
            format!("inflight_messages_max = {INFLIGHT_MESSAGES_MAX_DEFAULT}"),
            "AppendEntries in flight per follower",
        ),
        (
            format!("inflight_bytes_max = {INFLIGHT_BYTES_MAX_DEFAULT}"),
            "entry bytes in flight per follower",
        ),
        (
            format!("uncommitted_bytes_max = {UNCOMMITTED_BYTES_MAX_DEFAULT}"),
            "a leader refuses proposals beyond this (back-pressure)",
        ),
        (
            format!("outbound_queue_bytes_max = {OUTBOUND_QUEUE_BYTES_MAX_DEFAULT}"),
            "bytes queued per peer connection",
        ),
        (
            format!("groups_max = {GROUPS_MAX_DEFAULT}"),
            "coraft-node refuses --groups above this",
        ),
    ])
}

/// `setting   # comment` lines, comments aligned.
fn rows(rows: &[(String, &str)]) -> String {
    rows.iter()
        .map(|(setting, comment)| format!("{setting:<36} # {comment}\n"))
        .collect()
}
