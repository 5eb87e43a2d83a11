#!/bin/bash
# The share of the process's CPU samples in crc32fast, by the pass that
# asked for it (docs/journal/benchmarks.md, "apply's CRC from hot bytes"):
#   scripts/profile/crc-share.sh BENCH_BINARY TAG [extra bench args]
# perf record (cpu-clock, 999 Hz, dwarf call graphs) for 4 s of an 8 s run
# of the three nodes in one process (`--payload 4096 --clients 252` unless
# the extra args say otherwise). Output in /tmp/crcshare.
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(readlink -f $1); TAG=$2; shift 2
mkdir -p /tmp/crcshare; cd /tmp/crcshare
if [ $# -eq 0 ]; then set -- --payload 4096 --clients 252; fi
$BIN --duration 8 --warmup 2 --no-floor "$@" > run.$TAG.out 2>&1 &
BP=$!
for i in $(seq 1 100); do grep -q "coraft-1-0" /proc/$BP/task/*/comm 2>/dev/null && break; sleep 0.2; done
sleep 3
perf record -F 999 -e cpu-clock --call-graph dwarf,8192 -p $BP -o perf.$TAG.data -- sleep 4 > /dev/null 2>&1
wait $BP
perf script -i perf.$TAG.data -F event,trace,ip,sym 2>/dev/null > $TAG.script
python3 "$HERE/crc_by_caller.py" $TAG.script share
grep -E "writes/s" run.$TAG.out | head -2
