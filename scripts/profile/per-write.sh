#!/bin/bash
# Where an executor spends its CPU per write at `--nodes 1 --clients 256`
# (docs/journal/benchmarks.md, "issue 17: the leader's client path"):
#   scripts/profile/per-write.sh BENCH_BINARY TAG [extra bench args]
# perf record (cpu-clock, dwarf call graphs) for 12 s of a 20 s run, writes
# counted in the same window by a uprobe on Shard::queue_proposal, then
# scripts/profile/categories.py splits the executor thread's samples into
# categories (ns per write). Needs root (uprobes). Output in /tmp/s25cl.
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f $1); TAG=$2; shift 2
mkdir -p /tmp/s25cl; cd /tmp/s25cl
T=/sys/kernel/tracing; GROUP=s25cl$$
read -r OFF VADDR <<<"$(readelf -lW "$BIN" | awk '$1=="LOAD" && / R E / {print $2, $3}')"
DELTA=$(( VADDR - OFF )); EV=(); i=0
for addr in $(nm -C "$BIN" | grep -E ' [tT] coraft::runtime::shard::Shard::queue_proposal$' | awk '{print $1}' | sort -u); do
  echo "p:$GROUP/w$i $BIN:$(printf '0x%x' $(( 0x$addr - DELTA )))" >> $T/uprobe_events; EV+=(-e "$GROUP:w$i"); i=$((i+1)); done
$BIN --nodes 1 --clients 256 --duration 20 --warmup 1 --no-floor "$@" > run.$TAG.out 2>&1 &
BP=$!
for i in $(seq 1 100); do grep -q "coraft-1-0" /proc/$BP/task/*/comm 2>/dev/null && break; sleep 0.2; done
sleep 3
perf stat -x, "${EV[@]}" -p $BP -o stat.$TAG -- sleep 12 &
perf record -F 1999 -e cpu-clock --call-graph dwarf,16384 -p $BP -o perf.$TAG.data -- sleep 12 > /dev/null 2>&1
wait $BP
for e in $(grep -o "^p:$GROUP/[a-z_0-9]*" $T/uprobe_events | sed 's/^p://'); do echo "-:$e" >> $T/uprobe_events; done
W=$(grep "$GROUP:w" stat.$TAG | cut -d, -f1 | paste -sd+ | bc)
echo "writes in window: $W"
grep -E "writes/s|CPU per op" run.$TAG.out
perf script -i perf.$TAG.data -F comm,tid,ip,sym,dso 2>/dev/null > $TAG.script
python3 "$HERE/categories.py" $TAG.script coraft-1-0 --writes $W
