#!/bin/bash
# CRC32 calls and bytes per write, by caller, load-independent
# (docs/journal/benchmarks.md, "apply's CRC from hot bytes"):
#   scripts/profile/crc-calls.sh BENCH_BINARY TAG [extra bench args]
# uprobes on crc32fast's `pclmulqdq::calculate_avx512` (the CRCs of 64 bytes or
# more; the length argument fetched) and on `Shard::queue_proposal` (one
# per write), counted (perf stat) and recorded with dwarf call graphs
# (perf record, which may lose events: only its split by pass is used)
# for 3 s of a 6 s run of the three nodes in one process (`--payload 4096 --clients 252` unless the
# extra args say otherwise); each CRC is put under the first of its
# callers that names a pass. Needs root (uprobes). Output in /tmp/crccalls.
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f $1); TAG=$2; shift 2
mkdir -p /tmp/crccalls; cd /tmp/crccalls
T=/sys/kernel/tracing; GROUP=crc$$
read -r OFF VADDR <<<"$(readelf -lW "$BIN" | awk '$1=="LOAD" && / R E / {print $2, $3}')"
DELTA=$(( VADDR - OFF )); EV=()
probe() { # name, nm -C pattern, fetch args
  local i=0
  for addr in $(nm -C "$BIN" | grep -E " [tT] $2\$" | awk '{print $1}' | sort -u); do
    echo "p:$GROUP/$1$i $BIN:$(printf '0x%x' $(( 0x$addr - DELTA ))) $3" >> $T/uprobe_events
    EV+=(-e "$GROUP:$1$i"); i=$((i+1)); done
}
probe w 'coraft::runtime::shard::Shard::queue_proposal' ''
probe c 'crc32fast::specialized::pclmulqdq::calculate_avx512' 'len=%dx:u64'
if [ $# -eq 0 ]; then set -- --payload 4096 --clients 252; fi
$BIN --duration 6 --warmup 1 --no-floor "$@" > run.$TAG.out 2>&1 &
BP=$!
for i in $(seq 1 100); do grep -q "coraft-1-0" /proc/$BP/task/*/comm 2>/dev/null && break; sleep 0.2; done
sleep 2
perf stat -x, "${EV[@]}" -p $BP -o stat.$TAG -- sleep 3 &
perf record "${EV[@]}" --call-graph dwarf,4096 -p $BP -o perf.$TAG.data -- sleep 3 > /dev/null 2>&1
wait $BP
for e in $(grep -o "^p:$GROUP/[a-z_0-9]*" $T/uprobe_events | sed 's/^p://'); do echo "-:$e" >> $T/uprobe_events; done
perf script -i perf.$TAG.data -F event,trace,ip,sym 2>/dev/null > $TAG.script
W=$(grep "$GROUP:w" stat.$TAG | cut -d, -f1 | paste -sd+ | bc)
C=$(grep "$GROUP:c" stat.$TAG | cut -d, -f1 | paste -sd+ | bc)
echo "counted (perf stat): writes $W, CRCs $C, CRCs/write $(echo "scale=2; $C/$W" | bc)"
python3 "$HERE/crc_by_caller.py" $TAG.script calls $W $C
grep -E "writes/s" run.$TAG.out | head -2
