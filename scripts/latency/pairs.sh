#!/bin/bash
# Alternated pairs: the same point run with base args and with variant args,
# each against the replication floor of its own run, and one line per run.
#
#   scripts/latency/pairs.sh PAIRS "BASE BIN [ARGS]" "VARIANT BIN [ARGS]" [COMMON ARGS...]
#
# e.g. scripts/latency/pairs.sh 4 "/tmp/bench" "/tmp/bench --wal-dsync-small-flush-bytes 4096" --clients 1
# Each run is `BIN ARGS COMMON --duration 8 --warmup 2 --json` (override with
# DURATION / WARMUP). Prints: which, p50, the floor's p50, their ratio, p99,
# writes/s and the floor's, CPU µs per write, the 1-minute load at its start.
set -euo pipefail
PAIRS=$1; BASE=$2; VARIANT=$3; shift 3
one() { # LABEL CMD...
  local label=$1; shift
  local out load
  load=$(cut -d' ' -f1 /proc/loadavg)
  out=$("$@" --duration "${DURATION:-8}" --warmup "${WARMUP:-2}" --json 2>/dev/null | tail -1)
  python3 - "$label" "$out" "$load" <<'PY'
import json, sys
label, text, load = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.loads(text)
except Exception:
    print(f"{label}: no result: {text[:200]}"); sys.exit()
f50 = r.get("floor_p50_us") or 0
print(f'{label:8s} p50 {r["p50_us"]:6d} floor {f50:6d} ratio {r["p50_us"] / f50 if f50 else 0:5.2f}  '
      f'p99 {r["p99_us"]:7d}  ops/s {r["ops_per_s"]:8.0f} floor {r.get("floor_ops_per_s", 0):8.0f} '
      f'({r["ops_per_s"] / r["floor_ops_per_s"] if r.get("floor_ops_per_s") else 0:4.2f})  '
      f'cpu/op {r["cpu_us_per_op"]:7.1f}  load {load}')
PY
}
for i in $(seq 1 "$PAIRS"); do
  # shellcheck disable=SC2086
  one "base" $BASE "$@"
  # shellcheck disable=SC2086
  one "variant" $VARIANT "$@"
done
