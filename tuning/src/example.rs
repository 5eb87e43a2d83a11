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
    format!(
        r#"# coraft node config (see docs/tuning.md). Check it with `coraft-tune check FILE`.

cluster_id = 42                      # peers of another cluster are refused at handshake
node_id = 1                          # this node; must be one of the peers (0 is reserved)
listen = "127.0.0.1:7001"            # Raft and client traffic
# metrics_listen = "127.0.0.1:9101"  # Prometheus text format over HTTP; off when omitted

# Every voter, this node included: the id and the address others dial.
[[peers]]
id = 1
address = "127.0.0.1:7001"
[[peers]]
id = 2
address = "127.0.0.1:7002"
[[peers]]
id = 3
address = "127.0.0.1:7003"

# One shard = one glommio executor thread owning its Raft groups and one WAL.
# To pin the shards on this machine (`coraft-tune suggest`):
#   placement = "fixed"
#   {pinned}
[shards]
count = {count}
placement = "unbound"                # "fixed" pins shard i to cores[i] (or cores = "auto")
spin_before_park_us = {spin}             # >0 spins that long before sleeping: lower latency, more CPU

[wal]
dir = "/var/lib/coraft/wal"          # shard i logs in dir/shard-i; or dirs = [..] one per shard
segment_bytes = {segment}       # preallocated segment size, multiple of 4096
fsync = "always"                     # "never" loses acknowledged writes on a crash: benchmarks only

[raft]
tick_ms = {tick}                          # every Raft timeout counts in ticks
election_timeout_ticks = {election}          # each term waits a random [T, 2T) before campaigning
heartbeat_interval_ticks = {heartbeat}         # must be below election_timeout_ticks
pre_vote = true                      # a partitioned node cannot disrupt the cluster on return
check_quorum = true                  # a leader without a quorum steps down
read_mode = "read_index"             # or "lease": no round trip, trusts clocks within the margin
clock_drift_margin_ticks = {drift}         # lease = election_timeout_ticks - this

[limits]
batch_entries_max = {entries}             # entries per proposal batch / AppendEntries / apply
batch_bytes_max = {batch}            # bytes per batch (at least one entry is always sent)
inflight_messages_max = {messages}          # AppendEntries in flight per follower
inflight_bytes_max = {inflight}        # entry bytes in flight per follower
uncommitted_bytes_max = {uncommitted}     # leader refuses proposals beyond this (back-pressure)
outbound_queue_bytes_max = {outbound}   # bytes queued per peer connection
groups_max = {groups}                  # Raft groups this node may host
"#,
        count = suggestion.shard_count,
        spin = SPIN_BEFORE_PARK_US_DEFAULT,
        segment = SEGMENT_BYTES_DEFAULT,
        tick = TICK_MS_DEFAULT,
        election = ELECTION_TIMEOUT_TICKS_DEFAULT,
        heartbeat = HEARTBEAT_INTERVAL_TICKS_DEFAULT,
        drift = CLOCK_DRIFT_MARGIN_TICKS_DEFAULT,
        entries = BATCH_ENTRIES_MAX_DEFAULT,
        batch = BATCH_BYTES_MAX_DEFAULT,
        messages = INFLIGHT_MESSAGES_MAX_DEFAULT,
        inflight = INFLIGHT_BYTES_MAX_DEFAULT,
        uncommitted = UNCOMMITTED_BYTES_MAX_DEFAULT,
        outbound = OUTBOUND_QUEUE_BYTES_MAX_DEFAULT,
        groups = GROUPS_MAX_DEFAULT,
    )
}
