#!/bin/bash
# Payload reference counts per write, load-independent
# (docs/journal/benchmarks.md, "the last 1 % cuts"):
#   scripts/profile/refcounts.sh BENCH_BINARY TAG [extra bench args]
# uprobes on bytes' `shared_v_clone` / `shared_v_drop` (every clone and
# drop of a shared payload `Bytes` goes through them by its vtable, never
# inlined) and on `Shard::queue_proposal` (one per write), counted for 4 s
# of a 6 s run of the three nodes in one process (`--clients 256` unless
# the extra args say otherwise). Needs root (uprobes). Output in /tmp/refcounts.
BIN=$(readlink -f $1); TAG=$2; shift 2
mkdir -p /tmp/refcounts; cd /tmp/refcounts
T=/sys/kernel/tracing; GROUP=s31rc$$
read -r OFF VADDR <<<"$(readelf -lW "$BIN" | awk '$1=="LOAD" && / R E / {print $2, $3}')"
DELTA=$(( VADDR - OFF )); EV=()
probe() { # name, nm -C pattern
  local i=0
  for addr in $(nm -C "$BIN" | grep -E " [tT] $2\$" | awk '{print $1}' | sort -u); do
    echo "p:$GROUP/$1$i $BIN:$(printf '0x%x' $(( 0x$addr - DELTA )))" >> $T/uprobe_events
    EV+=(-e "$GROUP:$1$i"); i=$((i+1)); done
}
probe w 'coraft::runtime::shard::Shard::queue_proposal'
probe c 'bytes::bytes_mut::shared_v_clone'
probe d 'bytes::bytes_mut::shared_v_drop'
$BIN --clients 256 --duration 6 --warmup 1 --no-floor "$@" > run.$TAG.out 2>&1 &
BP=$!
for i in $(seq 1 100); do grep -q "coraft-1-0" /proc/$BP/task/*/comm 2>/dev/null && break; sleep 0.2; done
sleep 2
perf stat -x, "${EV[@]}" -p $BP -o stat.$TAG -- sleep 4
wait $BP
for e in $(grep -o "^p:$GROUP/[a-z_0-9]*" $T/uprobe_events | sed 's/^p://'); do echo "-:$e" >> $T/uprobe_events; done
sum() { grep "$GROUP:$1" stat.$TAG | cut -d, -f1 | paste -sd+ | bc; }
W=$(sum w); C=$(sum c); D=$(sum d)
echo "$TAG writes $W clone/write $(echo "scale=2; $C/$W" | bc) drop/write $(echo "scale=2; $D/$W" | bc)"
