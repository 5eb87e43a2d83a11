#!/bin/bash
# The serial path of one write at one client, hop by hop, for the cluster
# and for its replication floor (docs/journal/benchmarks.md, "issue 17: one
# client's write, hop by hop").
#
#   scripts/latency/one-client.sh BENCH_BINARY [EXTRA CLUSTER ARGS...]
#
# Runs `coraft-bench floor --clients 1` and then `coraft-bench --clients 1
# --no-floor`, each under `perf record` of kernel tracepoints for 3 s
# (system calls on sockets and files, io_uring submissions and
# completions, executor sleeps in io_uring_enter), and prints, per hop, the
# median time from the driver's send over the writes of the window. No
# uprobes: it works on any build. Needs root (tracepoints) and python3.
set -euo pipefail
BIN=$(readlink -f "$1"); shift
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/one-client.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
record() { # PID OUT EVENTS...
  local pid=$1 out=$2; shift 2
  local args=()
  for e in "$@"; do args+=(-e "$e"); done
  perf record -q -o "$out.data" "${args[@]}" -p "$pid" -- sleep 3 2>/dev/null
  perf script -i "$out.data" --ns -F tid,comm,time,event,trace > "$out.txt" 2>/dev/null
}
"$BIN" floor --clients 1 --duration 6 --warmup 1 --json > "$WORK/floor.json" &
PID=$!
sleep 3
record $PID "$WORK/floor" syscalls:sys_enter_sendto syscalls:sys_exit_recvfrom \
  syscalls:sys_enter_pwrite64 syscalls:sys_exit_pwrite64 syscalls:sys_enter_fdatasync syscalls:sys_exit_fdatasync
wait $PID
"$BIN" --clients 1 --duration 8 --warmup 2 --no-floor --json "$@" > "$WORK/cluster.json" &
PID=$!
sleep 4
record $PID "$WORK/cluster" io_uring:io_uring_submit_req io_uring:io_uring_complete \
  io_uring:io_uring_queue_async_work syscalls:sys_enter_sendmsg syscalls:sys_enter_sendto \
  syscalls:sys_exit_recvfrom syscalls:sys_enter_io_uring_enter syscalls:sys_exit_io_uring_enter \
  sched:sched_wakeup
wait $PID
echo "floor:   $(cat "$WORK/floor.json")"
python3 "$HERE/timeline.py" floor "$WORK/floor.txt"
echo "cluster: $(grep -o '"ops_per_s":[0-9]*,"p50_us":[0-9]*' "$WORK/cluster.json"), load $(grep -o '"load_1m":[0-9.]*' "$WORK/cluster.json")"
python3 "$HERE/timeline.py" cluster "$WORK/cluster.txt"
