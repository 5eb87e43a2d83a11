#!/usr/bin/env python3
"""All of a benchmark process's CPU per write, by category (scripts/profile/account.sh).

  account.py SCRIPT --writes W --freq HZ [--stat STAT --events LABELS] [--mode cluster|floor]
             [--json OUT] [-v]
  account.py combine A.json B.json ...   (windows of the cluster and of the floor)
  account.py redo A.json ...             (the same windows attributed again, after a change of the rules)

SCRIPT is `perf script --no-inline -F comm,tid,ip,sym,dso` of a cpu-clock
recording with call graphs. Every sample of every thread is one 1/HZ s of
CPU. A sample whose leaf is in the kernel goes to a kernel category chosen
by what its whole kernel stack is doing (KERNEL below, first rule that any
frame matches: a TCP send made inside io_uring_enter is a TCP send, an
fdatasync run by an io_uring worker is an fdatasync, a task switched out at
an interrupt's return is "preempted"); a sample in user space goes to
categories.py's rule for its user frames (the same rules as
scripts/profile/per-write.sh), except that the bench's drivers and the
floor's threads are one category each. The uprobe's own trap is left out of
the totals.
"""
import collections
import json
import os
import re
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from categories import classify, samples  # noqa: E402  (user-space rules)

SCHED = re.compile(r'^(finish_task_switch|__schedule$|schedule$|schedule_timeout|__switch_to|context_switch)')
WAKE = re.compile(r'try_to_wake_up|wake_up_q|__wake_up|wake_up_process|sock_def_readable|io_poll_wake|task_work_add')
PREEMPT_CALLER = re.compile(
    r'^(irqentry_exit|exit_to_user_mode|preempt_schedule|__cond_resched|_cond_resched|raw_irqentry_exit_cond_resched)')
KERNEL = [
    # the uprobes' traps, perf stat's tracepoints counting every system call
    # (and the slow syscall entry they switch on), and a BPF program someone
    # else attached to sys_membarrier on this machine
    ('k: measurement (uprobe traps, counting tracepoints, BPF)',
     r'uprobe|handle_swbp|exc_int3|^int3|perf_syscall_enter|perf_syscall_exit|perf_tp_event|perf_trace_|perf_swevent|'
     r'syscall_trace_enter|__traceiter_sys_|bpf_|__htab_map|lookup_nulls_elem_raw'),
    ('k: page faults', r'exc_page_fault|handle_mm_fault'),
    ('k: membarrier (the call: IPI sent and waited for)', r'membarrier'),
    ('k: membarrier (IPI received)', r'^ipi_mb$'),
    ('k: IPIs received (other: reschedule, TLB, call-function)',
     r'sysvec_call_function|generic_smp_call_function|flush_tlb_func|sysvec_reschedule'),
    ('k: fdatasync (flush, journal, disk cache flush)',
     r'fdatasync|vfs_fsync|ext4_sync_file|io_fsync|blkdev_issue_flush|jbd2|file_write_and_wait|ext4_fc_commit'),
    ('k: log data writes (WAL/floor pwrite, block layer, virtio-blk)',
     r'ext4_file_write|ext4_dio|iomap_|ksys_pwrite|sys_pwrite|blk_mq_|submit_bio|virtblk|vring_interrupt|iowrite16|^bio_|blk_'),
    ('k: TCP send (loopback: runs the receiver\'s softirq and wakeup)',
     r'tcp_sendmsg|sock_sendmsg|sys_sendmsg|__sys_sendto|sock_write_iter|io_sendmsg|^io_send$|tcp_write_xmit|'
     r'__tcp_push_pending_frames'),
    ('k: TCP receive', r'tcp_recvmsg|sock_recvmsg|__sys_recvfrom|__sys_recvmsg|sock_read_iter|^io_recv|tcp_read_sock|'
     r'skb_copy_datagram|tcp_cleanup_rbuf'),
    ('k: net softirq outside a send', r'net_rx_action|__napi_poll|process_backlog|tcp_v4_rcv|tcp_delack_timer|'
     r'tcp_write_timer|__netif_receive'),
    ('k: io_uring poll (arm, wake, re-issue)', r'io_poll|io_arm_poll|io_apoll|vfs_poll|sock_poll|tcp_poll|ep_poll|do_epoll'),
    ('k: io_uring timeouts and cancels (glommio\'s preemption timer)',
     r'io_timeout|io_async_cancel|io_link_timeout|io_try_cancel|io_kill_timeout|io_flush_timeouts|io_cancel'),
    ('k: futex (locks, condvars, channels)', r'futex'),
    ('k: executor park (io_uring_enter waiting)', r'io_cqring_wait'),
    ('k: io_uring worker idle', r'io_wq_worker'),
    ('k: context switch (other)', r'__schedule|^schedule|finish_task_switch'),
    ('k: wakeups (other)', r'try_to_wake_up|wake_up'),
    ('k: io_uring submit/complete (other)', r'io_uring|io_submit_sqes|io_issue_sqe|io_wq|tctx_task_work|^io_req_|^io_cq|'
     r'^__io_|io_handle_tw'),
    ('k: timers, clocks', r'hrtimer|clock_nanosleep|do_nanosleep|timerfd|ktime_get|^tick_'),
    ('k: interrupts (other)', r'asm_sysvec|asm_common_interrupt|irq_exit|handle_softirqs|__sysvec|irqentry'),
    ('k: system call entry/exit, other calls', r'do_syscall_64|entry_SYSCALL|syscall_exit|exit_to_user_mode'),
]
KERNEL = [(c, re.compile(r)) for c, r in KERNEL]
MEASUREMENT = KERNEL[0][0]
PREEMPTED = 'k: preempted (switched out at an interrupt or syscall return: the load)'


def kernel_category(kframes):
    """kframes: kernel symbols, leaf first."""
    if any(KERNEL[0][1].search(f) for f in kframes):
        return MEASUREMENT
    for i, f in enumerate(kframes):
        if f in ('__schedule', 'schedule'):
            for g in kframes[i + 1:]:
                if g in ('schedule', '__schedule', 'preempt_schedule_common', 'preempt_schedule_notrace'):
                    continue
                if PREEMPT_CALLER.match(g):
                    return PREEMPTED
                break
            break
    for c, r in KERNEL[1:]:
        if any(r.search(f) for f in kframes):
            return c
    return 'k: other'


def thread_class(comm, mode):
    if mode == 'floor':
        return 'floor threads'
    if re.match(r'^coraft-\d+-\d+-blk$', comm):
        return "glommio's blocking threads"
    if re.match(r'^coraft-\d+-wake$', comm):
        return 'park keepers'
    if re.match(r'^coraft-\d+-\d+', comm):
        return 'executors'
    if comm.startswith('iou-wrk'):
        return 'io_uring workers'
    if comm.startswith('coraft-bench') or comm.startswith('bench-'):
        return 'bench drivers (and main)'
    return 'other threads'


def user_category(frames, cls):
    if cls == 'bench drivers (and main)':
        return 'u: bench drivers (wire schema, histograms)'
    if cls == 'floor threads':
        return "u: floor threads (drivers, leader, followers)"
    c, _ = classify(frames)
    return 'u: ' + c


def read_stat(path, labels_path):
    """perf stat --per-thread -x, output -> {label: {comm-tid: count}}."""
    labels = [line.rstrip('\n') for line in open(labels_path)] if labels_path else []
    blocks = []
    current = None
    seen = set()
    for line in open(path):
        if not line.strip() or line.startswith('#'):
            continue
        f = line.rstrip('\n').split(',')
        if len(f) < 4:
            continue
        thread, count, event = f[0], f[1], f[3]
        if current is None or current[0] != event or thread in seen:
            current = (event, {})
            blocks.append(current)
            seen = set()
        seen.add(thread)
        try:
            current[1][thread] = float(count)
        except ValueError:
            current[1][thread] = 0.0
    out = {}
    for i, (event, counts) in enumerate(blocks):
        out[labels[i] if i < len(labels) else event] = counts
    return out


def comm_of(thread):
    return thread.rsplit('-', 1)[0]


def busy(before, after):
    a = [int(x) for x in before.split()[1:]]
    b = [int(x) for x in after.split()[1:]]
    d = [y - x for x, y in zip(a, b)]
    total = sum(d[:8]) or 1
    idle = d[3] + d[4]
    return 100.0 * (total - idle) / total, 100.0 * d[7] / total


def analyse(argv):
    opt = {}
    path = argv[0]
    i = 1
    while i < len(argv):
        if argv[i] == '-v':
            opt['v'] = True
            i += 1
        else:
            opt[argv[i].lstrip('-')] = argv[i + 1]
            i += 2
    previous = {}
    if opt.get('json') and os.path.exists(opt['json']):
        previous = json.load(open(opt['json']))
    mode = opt.get('mode', 'cluster')
    freq = float(opt.get('freq', 999))
    writes = int(float(opt.get('writes', 0)))
    ns = 1e9 / freq
    cats = collections.Counter()
    switch = collections.Counter()
    wake = collections.Counter()
    classes = collections.defaultdict(collections.Counter)  # class -> user/kernel
    by_class_cat = collections.defaultdict(collections.Counter)
    leaves = collections.defaultdict(collections.Counter)
    n = 0
    for comm, frames in samples(path):
        if not frames:
            continue
        n += 1
        cls = thread_class(comm, mode)
        kernel = 'kallsyms' in frames[0][1]
        if kernel:
            kf = [s for s, d in frames if 'kallsyms' in d]
            c = kernel_category(kf)
            if SCHED.match(frames[0][0]):
                switch[c] += 1
            if any(WAKE.search(f) for f in kf):
                wake[c] += 1
        else:
            c = user_category([(s, d) for s, d in frames if 'kallsyms' not in d], cls)
        cats[c] += 1
        if c != MEASUREMENT:
            classes[cls]['kernel' if kernel else 'user'] += 1
        by_class_cat[cls][c] += 1
        leaves[c][frames[0][0][:90]] += 1
    m = cats[MEASUREMENT]
    real = n - m
    per = (lambda k: k * ns / writes) if writes else (lambda k: 0.0)
    r = {'mode': mode, 'tag': os.path.basename(path).rsplit('.', 1)[0], 'at': opt.get('at', ''),
         'load': opt.get('load', ''), 'writes': writes, 'window_s': float(opt.get('window', 0)), 'freq': freq,
         'samples': n, 'measurement_samples': m}
    if 'cpu-before' in opt:
        r['machine_busy_pct'], r['steal_pct'] = busy(opt['cpu-before'], opt['cpu-after'])
    elif 'machine_busy_pct' in previous:
        r['machine_busy_pct'], r['steal_pct'] = previous['machine_busy_pct'], previous['steal_pct']
    r['options'] = {k: (os.path.abspath(v) if k in ('stat', 'events', 'json') else v) for k, v in opt.items()}
    r['options']['script'] = os.path.abspath(path)
    r['writes_per_s'] = writes / r['window_s'] if r['window_s'] else 0
    r['ns_per_write'] = {c: per(k) for c, k in cats.items() if c != MEASUREMENT}
    r['share_pct'] = {c: 100.0 * k / real for c, k in cats.items() if c != MEASUREMENT}
    r['switch_pct'] = {c: 100.0 * switch[c] / cats[c] for c in switch}
    r['wake_pct'] = {c: 100.0 * wake[c] / cats[c] for c in wake}
    r['total_ns_per_write'] = per(real)
    r['classes'] = {cls: {'user': per(v['user']), 'kernel': per(v['kernel'])} for cls, v in classes.items()}
    r['user_ns_per_write'] = sum(v['user'] for v in r['classes'].values())
    r['kernel_ns_per_write'] = sum(v['kernel'] for v in r['classes'].values())
    counts = {}
    cw = int(float(opt.get('count-writes', writes)))  # the counts' window's writes (account.sh: window B)
    r['count_writes'] = cw
    if opt.get('stat'):
        stat = read_stat(opt['stat'], opt.get('events'))
        for label, threads in stat.items():
            total = sum(threads.values())
            counts[label] = total / cw if cw else 0.0
            if label in ('membarrier', "IPIs sent for a function call (membarrier's)", 'context-switches', 'system calls',
                         'task-clock', 'wakeups'):
                byc = collections.Counter()
                for t, v in threads.items():
                    byc[thread_class(comm_of(t), mode)] += v
                r.setdefault('counts_by_class', {})[label] = {k: v / cw for k, v in byc.items()} if cw else {}
        r['task_clock_ns_per_write'] = counts.get('task-clock', 0) * 1e6  # task-clock is in msec
    r['counts_per_write'] = counts
    mb_calls = counts.get('membarrier', 0)
    if mb_calls:
        call = r['ns_per_write'].get('k: membarrier (the call: IPI sent and waited for)', 0)
        recv = r['ns_per_write'].get('k: membarrier (IPI received)', 0)
        ipis = counts.get("IPIs sent for a function call (membarrier's)", 0)
        r['membarrier'] = {'calls_per_write': mb_calls, 'ipis_per_write': ipis, 'ns_per_call': call / mb_calls,
                           'ns_received_per_ipi': recv / ipis if ipis else 0.0}
    report(r, by_class_cat, leaves if opt.get('v') else None, switch, cats, ns, writes)
    if opt.get('json'):
        with open(opt['json'], 'w') as out:
            json.dump(r, out, indent=1, sort_keys=True)


def report(r, by_class_cat, leaves, switch, cats, ns, writes):
    print(f"{r['mode']} {r['tag']}: {r['at']} UTC, {r['window_s']:.0f} s, load {r['load']}, "
          f"machine busy {r.get('machine_busy_pct', 0):.0f} % (steal {r.get('steal_pct', 0):.1f} %)")
    print(f"  {r['samples']} samples ({r['measurement_samples']} measurement's own: uprobe traps, counting tracepoints; left out), "
          f"{r['writes']} writes ({r['writes_per_s']:.0f}/s in the window)")
    if not writes:
        return
    print(f"  CPU per write: {r['total_ns_per_write'] / 1000:.2f} us from samples "
          f"(user {r['user_ns_per_write'] / 1000:.2f}, kernel {r['kernel_ns_per_write'] / 1000:.2f}); "
          f"task-clock {r.get('task_clock_ns_per_write', 0) / 1000:.2f} us (the counts' window, {r['count_writes']} writes)")
    print('  by thread (ns per write, user + kernel):')
    for cls, v in sorted(r['classes'].items(), key=lambda x: -sum(x[1].values())):
        print(f"    {cls:34s} {v['user'] + v['kernel']:7.0f} = {v['user']:6.0f} + {v['kernel']:6.0f}")
    classes = sorted(r['classes'], key=lambda c: -sum(r['classes'][c].values()))
    print('  by category: ns/write  share  [switch%: samples at a context switch; wake%: waking a thread]  '
          + ' | '.join(classes))
    for c, v in sorted(r['ns_per_write'].items(), key=lambda x: -x[1]):
        sw = (f"[{r['switch_pct'].get(c, 0):3.0f}% {r['wake_pct'].get(c, 0):3.0f}%]"
              if c in r['switch_pct'] or c in r['wake_pct'] else '           ')
        cols = ' | '.join(f"{by_class_cat[cl][c] * ns / writes:5.0f}" for cl in classes)
        print(f"    {v:7.0f} {r['share_pct'][c]:5.1f}% {sw} {c[:70]:70s} {cols}")
    print('  counts per write (all threads):')
    for label, v in r['counts_per_write'].items():
        if label == 'task-clock':
            continue
        extra = ''
        if label in r.get('counts_by_class', {}):
            extra = '  (' + ', '.join(f'{k} {x:.3f}' for k, x in sorted(r['counts_by_class'][label].items(),
                                                                         key=lambda y: -y[1]) if x) + ')'
        print(f"    {v:8.4f}  {label}{extra}")
    if 'membarrier' in r:
        mb = r['membarrier']
        print(f"  membarrier: {mb['calls_per_write']:.3f} calls and {mb['ipis_per_write']:.3f} IPIs per write; "
              f"{mb['ns_per_call']:.0f} ns of the caller's CPU per call, {mb['ns_received_per_ipi']:.0f} ns "
              f"of a receiving thread of this process per IPI")
    if leaves:
        for c, _ in cats.most_common():
            print('  ==', c)
            for s, k in leaves[c].most_common(8):
                print(f'     {k:5d} {s}')


# The categories in groups, for the cluster-against-floor table (first match).
GROUPS = [
    ('disk: log writes and fdatasync (kernel)', r'^k: (fdatasync|log data)'),
    ('loopback TCP: send, receive, softirq (kernel)', r'^k: (TCP|net softirq)'),
    ('threads waiting on each other: futex (kernel)', r'^k: futex'),
    ('load: preempted (kernel)', r'^k: preempted'),
    ('system call entry/exit, interrupts, IPIs (kernel, not membarrier)',
     r'^k: (system call|interrupts|IPIs received|timers|other)'),
    ('glommio and io_uring: park, wake, ring, timers, membarrier, io-wq',
     r'^k: (executor park|io_uring|membarrier|wakeups|context switch)|^u: (glommio|io_uring_enter)'),
    ('harness: the drivers\' and the floor\'s own user code', r'^u: (bench drivers|floor threads)'),
    ('coraft engine code (user) and its page faults', r'^u: |^k: page faults'),
]
GROUPS = [(g, re.compile(r)) for g, r in GROUPS]


def group_of(category):
    for g, r in GROUPS:
        if r.search(category):
            return g
    return 'other'


def combine(paths):
    runs = [json.load(open(p)) for p in paths]
    modes = ['cluster', 'floor']
    by = {m: [x for x in runs if x['mode'] == m] for m in modes}
    for m in modes:
        for x in by[m]:
            print(f"{m} {x['tag']}: {x['at']} UTC, load {x['load']}, busy {x.get('machine_busy_pct', 0):.0f} %, "
                  f"{x['writes_per_s']:.0f} writes/s in the window, {x['samples']} samples, "
                  f"CPU/write {x['total_ns_per_write'] / 1000:.2f} us (task-clock {x.get('task_clock_ns_per_write', 0) / 1000:.2f})")

    def cell(xs, key, c, fmt='{:.0f}'):
        v = [x[key].get(c, 0.0) for x in xs]
        if not v:
            return '—'
        med = statistics.median(v)
        return (fmt.format(med) + ' (' + fmt.format(min(v)) + '–' + fmt.format(max(v)) + ')') if len(v) > 1 else fmt.format(med)
    cats = sorted({c for x in runs for c in x['ns_per_write']},
                  key=lambda c: -max([statistics.median([x['ns_per_write'].get(c, 0) for x in by[m]]) for m in modes if by[m]]))
    print('\n| category | cluster ns/write | cluster share % | floor ns/write | floor share % |')
    print('|---|---|---|---|---|')
    for c in cats:
        print(f"| {c} | {cell(by['cluster'], 'ns_per_write', c)} | {cell(by['cluster'], 'share_pct', c, '{:.1f}')} | "
              f"{cell(by['floor'], 'ns_per_write', c)} | {cell(by['floor'], 'share_pct', c, '{:.1f}')} |")
    tot = {m: [x['total_ns_per_write'] for x in by[m]] for m in modes}
    print('| **total** | ' + ' | '.join(
        (f"{statistics.median(tot[m]):.0f} ({min(tot[m]):.0f}–{max(tot[m]):.0f}) | 100" if tot[m] else '— | —') for m in modes) + ' |')
    def grouped(x):
        out = collections.Counter()
        for c, v in x['ns_per_write'].items():
            out[group_of(c)] += v
        out['of all: samples at a context switch (kernel)'] = sum(
            v * x['switch_pct'].get(c, 0) / 100 for c, v in x['ns_per_write'].items())
        return out
    for m in modes:
        for x in by[m]:
            x['groups'] = grouped(x)
            x['group_share'] = {g: 100.0 * v / x['total_ns_per_write'] for g, v in x['groups'].items()}
    names = [g for g, _ in GROUPS] + ['of all: samples at a context switch (kernel)']
    print('\n| group | cluster ns/write | cluster share % | floor ns/write | floor share % | cluster − floor |')
    print('|---|---|---|---|---|---|')
    for g in names:
        diff = '—'
        if by['cluster'] and by['floor']:
            diff = f"{statistics.median([x['groups'][g] for x in by['cluster']]) - statistics.median([x['groups'][g] for x in by['floor']]):+.0f}"
        print(f"| {g} | {cell(by['cluster'], 'groups', g)} | {cell(by['cluster'], 'group_share', g, '{:.1f}')} | "
              f"{cell(by['floor'], 'groups', g)} | {cell(by['floor'], 'group_share', g, '{:.1f}')} | {diff} |")
    labels = []
    for x in runs:
        for k in x['counts_per_write']:
            if k not in labels:
                labels.append(k)
    print('\n| per write | cluster | floor |')
    print('|---|---|---|')
    for k in labels:
        print(f"| {k} | {cell(by['cluster'], 'counts_per_write', k, '{:.3f}')} | {cell(by['floor'], 'counts_per_write', k, '{:.3f}')} |")


def redo(paths):
    """Attributes the samples of earlier windows again (after a change of the rules)."""
    for p in paths:
        o = dict(json.load(open(p))['options'])
        o.pop('cpu-before', None)
        o.pop('cpu-after', None)
        argv = [o.pop('script')]
        if o.pop('v', None):
            argv.append('-v')
        for k, v in o.items():
            argv += ['--' + k, v]
        analyse(argv)


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'combine':
        combine(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == 'redo':
        redo(sys.argv[2:])
    else:
        analyse(sys.argv[1:])
