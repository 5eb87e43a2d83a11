#!/bin/bash
# Where ALL of a benchmark process's CPU goes per write, the cluster or its
# replication floor (docs/journal/benchmarks.md, "issue 17: the cluster
# against its floor, category by category"):
#   scripts/profile/account.sh BENCH_BINARY TAG cluster [bench args]
#   scripts/profile/account.sh BENCH_BINARY TAG floor   [bench args]
# bench args default to `--clients 256`; the script adds `--duration 24
# --warmup 1` (and `--no-floor` for the cluster; the floor runs as
# `coraft-bench floor`, the same closed loop the cluster benchmark runs
# before its own). For the 64-group point: `cluster --clients 1024
# --groups 64` against `floor --clients 1024`. Alternate cluster and floor
# windows within minutes.
#
# Two windows of one run, 3 s after the process's threads exist:
#  A, WINDOW s (default 12), the profile: perf record -F $FREQ (default
#    999) cpu-clock with dwarf call graphs of every thread of the process
#    (executors, io_uring workers, glommio's blocking threads, the keepers,
#    the bench's drivers), and nothing else but the write counter;
#  B, COUNTS s (default 5), the counts: perf stat --per-thread of system
#    calls by name, membarrier calls, IPIs sent (all, and those with
#    membarrier's callback), io_uring submissions by opcode, context
#    switches, wakeups, page faults, task-clock, and uprobes on glommio's
#    Reactor::link_rings_and_sleep (an executor going to sleep),
#    LocalExecutor::run_task_queues (a loop iteration), the two
#    prepare_*_preemption_timer (Reactor::wait is inlined), and
#    Shard::turn. Counting apart from profiling because every counter of
#    a thread is switched at each of its context switches, and a uprobe
#    traps (~1-5 us here): together they halved the cluster's writes/s
#    when run with the profile.
# Writes, in both windows, from a uprobe per batch that fetches the batch's
# length (perf record of the uprobe, summed): cluster,
# RaftCore::propose_from(&mut self, payloads: &mut Vec<Bytes>) on the
# leader (RaftCore::propose(.., Vec<Bytes>) in binaries before it), the
# Vec's len at 16 bytes into the Vec RDX points to (checked in the
# disassembly of this build: `mov 0x10(%rdx),%rbp`; and against a uprobe
# on Shard::queue_proposal, one per write: COUNT_EACH=1 adds it to window
# B, 1.014 calls per proposed write at 22:12 UTC); floor,
# LogShared::append(&self, bytes: &[u8]), the slice's length in RDX (each
# record is appended to every log: writes = bytes / record bytes / 3, or
# / 1 with `--nodes 1`).
# /proc/stat and the load average before and after window A say what the
# other engineers' work took of the machine.
# Then scripts/profile/account.py attributes each sample to a category (the
# kernel's by what its stack is doing: TCP send, fdatasync, membarrier, ...;
# user space by scripts/profile/categories.py's rules) in ns per write and
# writes TAG.json; `account.py combine A.json B.json ...` tabulates windows,
# `account.py redo A.json ...` attributes them again after a rule change.
# Needs root (uprobes, tracepoints). Output in $OUT (default /tmp/acct).
# perf probe does not work on this machine: uprobes are written into
# /sys/kernel/tracing/uprobe_events directly (file offset = symbol address
# - (the R E LOAD segment's vaddr - its file offset)).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f "$1"); TAG=$2; MODE=$3; shift 3
[ "$MODE" = cluster ] || [ "$MODE" = floor ] || { echo "MODE is cluster or floor, not $MODE" >&2; exit 2; }
ARGS=("$@"); [ ${#ARGS[@]} -eq 0 ] && ARGS=(--clients 256)
WINDOW=${WINDOW:-12}; COUNTS=${COUNTS:-5}; FREQ=${FREQ:-999}; OUT=${OUT:-/tmp/acct}
# WARMUP s (default 1) before the benchmark measures, and the windows start
# WARMUP + 2 s after the process's threads exist: a run whose memory must
# level off first (64 groups: WARMUP=120) is profiled in its steady state.
WARMUP=${WARMUP:-1}
mkdir -p "$OUT"; cd "$OUT" || exit 1
T=/sys/kernel/tracing; GROUP=acct$$
read -r OFF VADDR <<<"$(readelf -lW "$BIN" | awk '$1=="LOAD" && / R E / {print $2, $3}')"
DELTA=$(( VADDR - OFF ))
fileoff() { # symbol (exact, demangled) -> file offset of its first address
  local addr; addr=$(nm -C "$BIN" | awk -v s="$1" '{a=$1; $1=""; $2=""; sub(/^  /,""); if ($0==s) {print a; exit}}')
  [ -n "$addr" ] || { echo "symbol not found: $1" >&2; return 1; }
  printf '0x%x' $(( 0x$addr - DELTA ))
}
cleanup() { for e in $(grep -o "^p:$GROUP/[a-z_0-9]*" $T/uprobe_events | sed 's/^p://'); do echo "-:$e" >> $T/uprobe_events; done; }
trap cleanup EXIT
if [ "$MODE" = cluster ]; then
  # The shard proposes through propose_from (a binary older than it: propose).
  PROPOSE='coraft::raft::core::RaftCore::propose_from'
  nm -C "$BIN" | grep -q " $PROPOSE\$" || PROPOSE='coraft::raft::core::RaftCore::propose'
  echo "p:$GROUP/batch $BIN:$(fileoff "$PROPOSE") n=+16(%dx):u64" >> $T/uprobe_events || exit 1
  echo "p:$GROUP/each $BIN:$(fileoff 'coraft::runtime::shard::Shard::queue_proposal')" >> $T/uprobe_events
  echo "p:$GROUP/sleeps $BIN:$(fileoff 'glommio::sys::uring::Reactor::link_rings_and_sleep')" >> $T/uprobe_events
  echo "p:$GROUP/turns $BIN:$(fileoff 'coraft::runtime::shard::Shard::turn')" >> $T/uprobe_events
  echo "p:$GROUP/thr $BIN:$(fileoff 'glommio::sys::uring::SleepableRing::prepare_throughput_preemption_timer')" >> $T/uprobe_events
  echo "p:$GROUP/lat $BIN:$(fileoff 'glommio::sys::uring::SleepableRing::prepare_latency_preemption_timer')" >> $T/uprobe_events
  echo "p:$GROUP/queues $BIN:$(fileoff 'glommio::executor::LocalExecutor::run_task_queues')" >> $T/uprobe_events
  "$BIN" "${ARGS[@]}" --duration 24 --warmup "$WARMUP" --no-floor > "run.$TAG.out" 2>&1 &
else
  echo "p:$GROUP/batch $BIN:$(fileoff 'coraft_bench::floor::LogShared::append') n=%dx:u64" >> $T/uprobe_events || exit 1
  "$BIN" floor "${ARGS[@]}" --duration 24 --warmup "$WARMUP" > "run.$TAG.out" 2>&1 &
fi
BP=$!
# The floor's threads once it runs: 12 with three logs, 6 with one.
THREADS=12; [[ " ${ARGS[*]} " =~ " --nodes 1 " ]] && THREADS=6
for _ in $(seq 1 300); do
  if [ "$MODE" = cluster ]; then grep -q "coraft-1-0" /proc/$BP/task/*/comm 2>/dev/null && break
  else [ "$(ls /proc/$BP/task 2>/dev/null | wc -l)" -ge "$THREADS" ] && break; fi
  sleep 0.2
done
sleep $(( WARMUP + 2 ))
# membarrier's IPI carries this callback (its callsite is membarrier_private_expedited)
MB=$(awk '/ generic_smp_call_function_single_interrupt$/ {print "0x" $1}' /proc/kallsyms)
LABELS=(); EV=()
ev() { EV+=(-e "$1"); [ $# -gt 2 ] && EV+=(--filter "$2"); LABELS+=("${!#}"); }
if [ "$MODE" = cluster ]; then
  [ -n "${COUNT_EACH:-}" ] && ev "$GROUP:each" "Shard::queue_proposal calls (uprobe, one per write)"
  ev "$GROUP:sleeps" "executor sleeps (uprobe link_rings_and_sleep)"
  ev "$GROUP:turns" "shard loop turns (uprobe Shard::turn)"
  ev "$GROUP:queues" "executor loop iterations (uprobe LocalExecutor::run_task_queues)"
  ev "$GROUP:thr" "throughput preemption timers armed (uprobe, one per Reactor::wait)"
  ev "$GROUP:lat" "latency preemption timers armed (uprobe)"
fi
ev task-clock task-clock; ev page-faults page-faults; ev context-switches context-switches
ev cpu-migrations cpu-migrations; ev sched:sched_wakeup wakeups; ev raw_syscalls:sys_enter "system calls"
ev syscalls:sys_enter_membarrier membarrier; ev ipi:ipi_send_cpu "callback == $MB" "IPIs sent for a function call (membarrier's)"
ev ipi:ipi_send_cpu "IPIs sent (all)"
for s in io_uring_enter sendmsg sendto recvfrom recvmsg read write pwrite64 fdatasync futex; do
  ev syscalls:sys_enter_$s "$s"; done
ev io_uring:io_uring_submit_req "io_uring submissions"
# io_uring submissions by opcode (include/uapi/linux/io_uring.h)
for op in 3:FSYNC 5:WRITE_FIXED 6:POLL_ADD 11:TIMEOUT 14:ASYNC_CANCEL 22:READ 23:WRITE; do
  ev io_uring:io_uring_submit_req "opcode == ${op%%:*}" "io_uring ${op#*:}"; done
printf '%s\n' "${LABELS[@]}" > "events.$TAG"
# Window A: the profile.
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); STAT0=$(head -1 /proc/stat); D0=$(date -u +%H:%M:%S)
perf record -e "$GROUP:batch" -p $BP -o "batch.$TAG.data" -- sleep "$WINDOW" > /dev/null 2>&1 &
AP=$!
perf record -F "$FREQ" -e cpu-clock --call-graph dwarf,8192 -p $BP -o "perf.$TAG.data" -- sleep "$WINDOW" > /dev/null 2>&1
wait $AP
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg); STAT1=$(head -1 /proc/stat)
# Window B: the counts.
perf record -e "$GROUP:batch" -p $BP -o "batchB.$TAG.data" -- sleep "$COUNTS" > /dev/null 2>&1 &
AP=$!
perf stat --per-thread -x, "${EV[@]}" -p $BP -o "stat.$TAG" -- sleep "$COUNTS"
wait $AP
wait $BP
cleanup; trap - EXIT
records() { perf script -i "$1" -F trace 2>/dev/null | grep -oE 'n=(0x[0-9a-f]+|[0-9]+)' | cut -d= -f2 |
  python3 -c "import sys; print(sum(int(l, 0) for l in sys.stdin))"; }
SUM=$(records "batch.$TAG.data"); SUMB=$(records "batchB.$TAG.data")
if [ "$MODE" = cluster ]; then W=$SUM; WB=$SUMB
else
  PAYLOAD=$(echo "${ARGS[@]} --payload 16" | grep -oE -- '--payload[ =][0-9]+' | head -1 | grep -oE '[0-9]+$')
  RB=$(( 48 + ( PAYLOAD + 7 ) / 8 * 8 ))  # the floor's record: 48-byte header + payload rounded to 8
  # Each record is appended to every log: three, or one with `--nodes 1`.
  LOGS=$(echo "${ARGS[@]} --nodes 3" | grep -oE -- '--nodes[ =][0-9]+' | head -1 | grep -oE '[0-9]+$')
  W=$(( SUM / RB / LOGS )); WB=$(( SUMB / RB / LOGS ))
fi
echo "$TAG $MODE ${ARGS[*]}: window A $D0 UTC, ${WINDOW} s, writes $W; window B ${COUNTS} s, writes $WB; load $LOAD0 -> $LOAD1"
grep -E "writes/s|CPU per (op|write)" "run.$TAG.out"
perf script --no-inline -i "perf.$TAG.data" -F comm,tid,ip,sym,dso 2>/dev/null > "$TAG.script"
python3 "$HERE/account.py" "$TAG.script" --stat "stat.$TAG" --events "events.$TAG" --writes "$W" --count-writes "$WB" \
  --freq "$FREQ" --window "$WINDOW" --mode "$MODE" --cpu-before "$STAT0" --cpu-after "$STAT1" --load "$LOAD0 -> $LOAD1" \
  --at "$D0" --json "$TAG.json"
