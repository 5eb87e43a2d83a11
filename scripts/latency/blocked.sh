#!/bin/bash
# Where a benchmark process's threads block in the kernel (uninterruptible
# sleep, state D), by thread and by the call that blocked: an executor
# thread in D stalls every task of its shard (docs/journal/benchmarks.md,
# "issue 17: the 4 KiB tail").
#
#   scripts/latency/blocked.sh BENCH_BINARY [BENCH ARGS...]
#
# Runs `BENCH_BINARY ARGS --duration 8 --warmup 2 --no-floor --json`
# (ARGS default: --payload 4096 --clients 252), records
# sched:sched_switch with call graphs of the process for WINDOW s (default
# 3) from 5 s in, and prints, per thread and blocking call, how many times
# and how long (until the thread's next event) it was off the CPU in D,
# then the run's JSON line. Needs root (tracepoints).
set -euo pipefail
BIN=$(readlink -f "$1"); shift
ARGS=("$@"); [ ${#ARGS[@]} -eq 0 ] && ARGS=(--payload 4096 --clients 252)
WORK=$(mktemp -d /tmp/blocked.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BIN" "${ARGS[@]}" --duration 8 --warmup 2 --no-floor --json > "$WORK/run.json" &
PID=$!
sleep 5
perf record -q -o "$WORK/d.data" -g -e sched:sched_switch -p "$PID" -- sleep "${WINDOW:-3}" 2>/dev/null
wait "$PID"
perf script -i "$WORK/d.data" --ns -F comm,tid,time,event,trace,ip,sym 2>/dev/null > "$WORK/d.txt"
python3 - "$WORK/d.txt" "${WINDOW:-3}" <<'PY'
import collections, re, sys
head = re.compile(r'^\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$')
events, current = [], None
for line in open(sys.argv[1]):
    m = head.match(line)
    if m:
        comm, tid, t, _, rest = m.groups()
        current = [float(t), comm, int(tid), rest, []]
        events.append(current)
    elif current is not None and line.strip():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            current[4].append(parts[1].split('+')[0])
by_thread = collections.defaultdict(list)
for e in events:
    by_thread[e[2]].append(e)
ms, count = collections.Counter(), collections.Counter()
for run in by_thread.values():
    for a, b in zip(run, run[1:]):
        if 'prev_state=D' not in a[3]:
            continue
        stack = a[4]
        ours = [f for f in stack if f.startswith(('coraft', '<coraft', 'glommio', '<glommio'))]
        calls = [f[len('__x64_sys_'):] for f in stack if f.startswith('__x64_sys_')]
        comm = re.sub(r'^iou-wrk-\d+$', 'iou-wrk', a[1])
        key = (comm, calls[0] if calls else '-', ours[0][:70] if ours else '-')
        ms[key] += (b[0] - a[0]) * 1e3
        count[key] += 1
executors = [key for key in ms if re.fullmatch(r'coraft-\d+-\d+-\d+', key[0])]
print(f'executor threads (coraft-NODE-SHARD-ID) blocked in D: {sum(ms[k] for k in executors):.1f} ms, '
      f'{sum(count[k] for k in executors)} times, longest call total {max([ms[k] for k in executors] or [0]):.1f} ms')
print(f'blocked (D) in a {sys.argv[2]} s window: ms, times, thread, system call, first coraft/glommio frame')
for key, total in ms.most_common(25):
    print(f'{total:8.1f} {count[key]:6d}  {key[0]:16s} {key[1]:10s} {key[2]}')
PY
echo "run: $(cat "$WORK/run.json")" | cut -c1-400
