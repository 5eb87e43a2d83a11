#!/bin/bash
# Allocations per write of `coraft-bench` (docs/benchmarks.md, the
# allocation table; method in docs/journal/benchmarks.md, "issue 17").
#
#   scripts/alloc/per-write.sh BENCH_BINARY [CLIENTS] [EXTRA BENCH ARGS...]
#
# Runs the benchmark twice (--duration 2 and 6, --warmup 1, --no-floor)
# under an LD_PRELOAD allocation counter, counting writes with a uprobe on
# `Shard::queue_proposal` (perf stat); allocations per write = the
# difference of the two runs' allocations over the difference of their
# writes, which cancels the setup. Needs root (uprobes) and a C compiler.
# A pair whose 6 s run wrote less than 1.5x its 2 s run is marked SPOILED
# (the machine stalled one of them): run it again.
# With ALLOC_PER=read (what scripts/alloc/per-read.sh sets) it counts
# reads instead, with a uprobe on `Shard::read`.
set -euo pipefail
OP=${ALLOC_PER:-write}
case $OP in
  write) SYMBOL=queue_proposal ;;
  read) SYMBOL=read ;;
  *) echo "ALLOC_PER must be write or read, not '$OP'" >&2; exit 2 ;;
esac
BIN=$(readlink -f "$1"); CLIENTS=${2:-256}; shift $(( $# < 2 ? $# : 2 ))
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/alloc-per-$OP.XXXXXX)
trap 'del_probes; rm -rf "$WORK"' EXIT
cc -O2 -shared -fPIC -o "$WORK/count_alloc.so" "$HERE/count_alloc.c"
T=/sys/kernel/tracing
GROUP=allocpw$$
del_probes() {
  for e in $(grep -o "^p:$GROUP/[a-z_0-9]*" $T/uprobe_events 2>/dev/null | sed 's/^p://'); do
    echo "-:$e" >> $T/uprobe_events
  done
}
# The uprobe on every copy of Shard::$SYMBOL (file offset of the symbol).
read -r OFF VADDR <<<"$(readelf -lW "$BIN" | awk '$1=="LOAD" && / R E / {print $2, $3}')"
DELTA=$(( VADDR - OFF ))
EVENTS=()
i=0
for addr in $(nm -C "$BIN" | grep -E " [tT] coraft::runtime::shard::Shard::$SYMBOL\$" | awk '{print $1}' | sort -u); do
  echo "p:$GROUP/${OP}_$i $BIN:$(printf '0x%x' $(( 0x$addr - DELTA )))" >> $T/uprobe_events
  EVENTS+=(-e "$GROUP:${OP}_$i")
  i=$((i+1))
done
[ $i -gt 0 ] || { echo "no Shard::$SYMBOL symbol in $BIN" >&2; exit 1; }
declare -A A W
for D in 2 6; do
  perf stat -x, "${EVENTS[@]}" -o "$WORK/$D.stat" -- env LD_PRELOAD="$WORK/count_alloc.so" \
    "$BIN" --clients "$CLIENTS" --duration $D --warmup 1 --no-floor "$@" > "$WORK/$D.out" 2>&1
  A[$D]=$(grep -o ' allocs=[0-9]*' "$WORK/$D.out" | tail -1 | cut -d= -f2)
  W[$D]=$(grep "$GROUP:$OP" "$WORK/$D.stat" | cut -d, -f1 | paste -sd+ | bc)
done
python3 - "${A[2]}" "${A[6]}" "${W[2]}" "${W[6]}" "$(basename "$BIN")" "$CLIENTS" "$OP" <<'PY'
import sys
a2, a6, w2, w6 = map(int, sys.argv[1:5])
spoiled = '' if w6 > 1.5 * w2 else ' SPOILED (6 s run not > 1.5x the 2 s run)'
op = sys.argv[7]
print(f'{sys.argv[5]} clients {sys.argv[6]}: {op}s {w2}/{w6}; allocations per {op} '
      f'{(a6 - a2) / (w6 - w2):.2f}; whole 6 s run {a6 / w6:.2f}{spoiled}')
PY
