#!/usr/bin/env python3
"""Three questions about one client's write, from `perf script --ns -F
tid,comm,time,event,trace` output of a cluster run (`coraft-bench
--clients 1 --no-floor`) recorded with the tracepoints of
`one-client.sh` plus `sched:sched_switch`:

  1. how long after its first append's `sendmsg` the leader submits its
     own WAL write, and how often it was preempted in between;
  2. per follower, the time from its WAL write's completion to its ack's
     `sendmsg`, and whether its executor slept in between (a turn or a
     wake later) or was asleep when the completion came;
  3. on the leader, the time from its last receive to the answer's
     `sendto`, and whether it slept in between.

  hops.py FILE     (docs/journal/benchmarks.md, "issue 17: one client's hops")
"""
import re
import statistics
import sys
from collections import Counter

from timeline import field, read
ev = read(sys.argv[1])
def who(c):
    m = re.match(r'coraft-(\d+)-0-\d+$', c)
    return 'n'+m.group(1) if m else ('driver' if not c.startswith('coraft') else 'other')
ops = {}
seq = []  # (t, who, kind)
for t, comm, tid, e, a in ev:
    w = who(comm)
    if e == 'io_uring_submit_req':
        ops[(field(a,'ring'), field(a,'req'))] = (w, field(a,'opcode'))
        if field(a,'opcode') == 'WRITE_FIXED': seq.append((t, w, 'wal submit'))
    elif e == 'io_uring_complete':
        s = ops.get((field(a,'ring'), field(a,'req')))
        if s and s[1] == 'WRITE_FIXED': seq.append((t, s[0], 'wal done'))
    elif e == 'sys_enter_io_uring_enter' and w.startswith('n') and 'min_complete: 0x00000001' in a:
        seq.append((t, w, 'sleep'))
    elif e == 'sys_exit_io_uring_enter' and w.startswith('n'):
        seq.append((t, w, 'enter exit'))
    elif e == 'sys_enter_sendmsg': seq.append((t, w, 'sendmsg'))
    elif e == 'sys_enter_sendto': seq.append((t, w, 'sendto'))
    elif e == 'sys_exit_recvfrom' and not a.startswith('0xffff'): seq.append((t, w, 'recv'))
    elif e == 'sched_switch' and w.startswith('n') and 'prev_state=R' in a: seq.append((t, w, 'preempted'))
leader = Counter(w for _, w, k in seq if k == 'sendto' and w.startswith('n')).most_common(1)[0][0]
per = {}
for x in seq: per.setdefault(x[1], []).append(x)
def between(w, t0, t1, kind):
    return sum(1 for t, _, k in per[w] if t0 < t < t1 and k == kind)
# 1. leader: first sendmsg after recv of request vs own wal submit
L = per[leader]
r1 = []; pre = 0; n1 = 0
for i, (t, w, k) in enumerate(L):
    if k == 'recv':
        # next sendmsg and next wal submit after this recv, before next recv
        nxt_send = next((tt for tt, _, kk in L[i+1:i+200] if kk == 'sendmsg'), None)
        nxt_wal = next((tt for tt, _, kk in L[i+1:i+200] if kk == 'wal submit'), None)
        nxt_sendto = next((tt for tt, _, kk in L[i+1:i+200] if kk == 'sendto'), None)
        if nxt_send and nxt_wal and (not nxt_sendto or nxt_send < nxt_sendto) and nxt_wal - t < 500:
            n1 += 1; r1.append(nxt_wal - nxt_send); pre += between(leader, nxt_send, nxt_wal, 'preempted') > 0
if r1: print(f'leader: own WAL submit minus 1st append sendmsg: median {statistics.median(r1):.1f} us, negative in {sum(1 for x in r1 if x<0)}/{n1}; leader preempted in between in {pre}/{n1}')
# 2. followers: wal done -> next sendmsg; sleeps in between
for f in sorted(per):
    if f == leader or not f.startswith('n'): continue
    F = per[f]; d = []; sl = 0; n = 0; w_sleep = 0
    for i, (t, w, k) in enumerate(F):
        if k == 'wal done':
            # was the executor asleep when the completion came? (last of sleep/enter exit before t is sleep)
            prev = next((kk for tt, _, kk in reversed(F[max(0,i-20):i]) if kk in ('sleep','enter exit')), None)
            w_sleep += prev == 'sleep'
            s = next((tt for tt, _, kk in F[i+1:i+200] if kk == 'sendmsg'), None)
            if s and s - t < 1000:
                n += 1; d.append(s - t); sl += between(f, t, s, 'sleep') > 0
    if d: print(f'{f}: WAL done -> ack sendmsg median {statistics.median(d):.1f} us (p90 {sorted(d)[int(len(d)*.9)]:.1f}); a sleep in between in {sl}/{n}; completion found the executor asleep in {w_sleep}/{n}')
# 3. leader: ack recv -> answer sendto; sleeps in between
d = []; sl = 0; n = 0
for i, (t, w, k) in enumerate(L):
    if k == 'sendto':
        r = next((tt for tt, _, kk in reversed(L[max(0,i-200):i]) if kk == 'recv'), None)
        if r and t - r < 1000:
            n += 1; d.append(t - r); sl += between(leader, r, t, 'sleep') > 0
print(f'leader: last recv -> answer sendto median {statistics.median(d):.1f} us; a sleep in between in {sl}/{n}')
