#!/usr/bin/env python3
"""One client's write, hop by hop, from `perf script` output of
`one-client.sh`: `timeline.py cluster FILE` or `timeline.py floor FILE`.

At one client the writes are strictly one after another, so every event
between the driver's send and its receive of the answer belongs to that
write. For each write it follows the causal chain (the leader reads the
request, sends the append, a follower reads it, writes and syncs its log,
acknowledges, the leader answers) and prints, per step, the median time
since the driver's send and the median of the hop from the step before.
For the cluster it also prints counts per write over the three nodes."""
import re
import statistics
import sys
from collections import Counter, defaultdict

LINE = re.compile(r'^\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$')


def read(path):
    events = []
    for line in open(path):
        m = LINE.match(line)
        if m:
            comm, tid, t, event, args = m.groups()
            events.append((float(t) * 1e6, comm, int(tid), event.split(':', 1)[1], args))
    events.sort(key=lambda e: e[0])
    return events


def field(args, name):
    m = re.search(name + r' (\S+)', args)
    return m.group(1).rstrip(',') if m else None


def find(write, after, who, kind):
    for t, w, k in write:
        if t >= after and w in who and k == kind:
            return t, w
    return None, None


def split_writes(norm, driver):
    writes, current = [], None
    for e in norm:
        t, who, kind = e
        if who == driver and kind == 'send':
            current = [e]
        elif who == driver and kind == 'recv' and current is not None:
            current.append(e)
            writes.append(current)
            current = None
        elif current is not None:
            current.append(e)
    return writes


def report(chains, order):
    n = len(chains['driver sends'])
    print(f'{n} complete chains')
    print(f'{"since send":>10} {"hop":>8}  step (medians, µs)')
    previous = 0.0
    for name in order:
        if len(chains[name]) < n / 2:
            continue
        median = statistics.median(chains[name])
        print(f'{median:10.1f} {median - previous:8.1f}  {name}')
        previous = median


def cluster(path):
    role = {}

    def who(comm):
        m = re.match(r'coraft-(\d+)-0-\d+$', comm)
        if m:
            return 'n' + m.group(1)
        if comm.startswith('iou-wrk'):
            return 'io-wq'
        return 'other' if comm.startswith('coraft-') else 'driver'

    norm, ops, sleeping, counts = [], {}, {}, Counter()
    for t, comm, tid, event, args in read(path):
        w = who(comm)
        role[tid] = w
        if event == 'io_uring_submit_req':
            op = field(args, 'opcode')
            ops[(field(args, 'ring'), field(args, 'req'))] = (w, op)
            if w.startswith('n'):
                counts['io_uring submissions'] += 1
                if op in ('WRITE_FIXED', 'FSYNC'):
                    counts[op + ' (WAL)'] += 1
            if op in ('WRITE_FIXED', 'FSYNC'):
                norm.append((t, w, op + ' submit'))
        elif event == 'io_uring_complete':
            submitted = ops.get((field(args, 'ring'), field(args, 'req')))
            if submitted and submitted[1] in ('WRITE_FIXED', 'FSYNC'):
                norm.append((t, submitted[0], submitted[1] + ' done'))
        elif event == 'io_uring_queue_async_work':
            counts['requests punted to io-wq'] += 1
        elif event == 'sys_enter_io_uring_enter' and w.startswith('n'):
            counts['io_uring_enter'] += 1
            if 'min_complete: 0x00000001' in args:
                sleeping[tid] = True
                counts['executor sleeps'] += 1
        elif event == 'sys_exit_io_uring_enter' and w.startswith('n'):
            sleeping.pop(tid, None)
        elif event == 'sys_exit_recvfrom' and not args.startswith('0xffff'):
            norm.append((t, w, 'recv'))
        elif event == 'sys_enter_sendmsg':
            norm.append((t, w, 'sendmsg'))
            counts['sendmsg'] += 1
        elif event == 'sys_enter_sendto':
            norm.append((t, w, 'send'))
        elif event == 'sched_wakeup' and w == 'io-wq':
            counts['io-wq worker wakes a thread'] += 1
    answers = Counter(w for _, w, k in norm if k == 'send' and w.startswith('n'))
    leader = answers.most_common(1)[0][0]
    followers = sorted({w for _, w, _ in norm if w.startswith('n')} - {leader})
    dsync = counts['FSYNC (WAL)'] == 0
    writes = split_writes(norm, 'driver')
    print(f'{len(writes)} writes; leader {leader}, followers {followers}; '
          f'{"O_DSYNC writes" if dsync else "write + fsync"} per flush')
    for name, count in sorted(counts.items()):
        print(f'  per write, three nodes: {name:32s} {count / max(len(writes), 1):7.2f}')
    chains, order = defaultdict(list), []
    leader_last = 0
    for write in writes:
        t0 = write[0][0]
        steps = {}

        def put(name, t):
            if name not in order:
                order.append(name)
            steps[name] = t

        put('driver sends', t0)
        request, _ = find(write, t0, {leader}, 'recv')
        append = request and find(write, request, {leader}, 'sendmsg')[0]
        if append is None:
            continue
        put('L reads the request', request)
        put('L sends the append (1st sendmsg)', append)
        acks = []
        for f in followers:
            got = find(write, append, {f}, 'recv')[0]
            submitted = got and find(write, got, {f}, 'WRITE_FIXED submit')[0]
            written = submitted and find(write, submitted, {f}, 'WRITE_FIXED done')[0]
            if dsync:
                synced_submit, synced = written, written
            else:
                synced_submit = written and find(write, written, {f}, 'FSYNC submit')[0]
                synced = synced_submit and find(write, synced_submit, {f}, 'FSYNC done')[0]
            ack = synced and find(write, synced, {f}, 'sendmsg')[0]
            if ack:
                acks.append((ack, got, submitted, written, synced_submit, synced))
        if not acks:
            continue
        ack, got, submitted, written, synced_submit, synced = min(acks)
        put('F reads the append', got)
        put('F submits its WAL write', submitted)
        if dsync:
            put('F: O_DSYNC write done', written)
        else:
            put('F: write done', written)
            put('F submits fsync', synced_submit)
            put('F: fsync done', synced)
        put('F sends the ack (sendmsg)', ack)
        ack_read = find(write, ack, {leader}, 'recv')[0]
        answer = ack_read and find(write, ack_read, {leader}, 'send')[0]
        if answer is None:
            continue
        put('L reads the ack', ack_read)
        put('L sends the answer', answer)
        put('driver receives', write[-1][0])
        own = find(write, append, {leader}, 'FSYNC done' if not dsync else 'WRITE_FIXED done')[0]
        leader_last += 1 if own is None or own > ack_read else 0
        for name, t in steps.items():
            chains[name].append(t - t0)
    report(chains, order)
    n = len(chains['driver sends'])
    print(f'writes whose leader was durable only after the first ack was read: {leader_last / max(n, 1):.2f}')


def floor(path):
    events = read(path)
    received, sent_len, flushers = defaultdict(set), defaultdict(set), set()
    for t, comm, tid, event, args in events:
        if event == 'sys_exit_recvfrom':
            received[tid].add(args.strip())
        elif event == 'sys_enter_sendto':
            sent_len[tid].add(field(args.replace(':', ''), 'len'))
        elif event == 'sys_enter_pwrite64':
            flushers.add(tid)
    # Requests are 8 + payload bytes, records 64, acknowledgements 8.
    ingress = next(t for t in received if '0x18' in received[t])
    readers = {t for t in received if '0x40' in received[t]}
    driver = next(t for t in sent_len if '0x00000018' in sent_len[t] and t not in flushers and t != ingress)
    norm = []
    for t, comm, tid, event, args in events:
        kind = {'sys_enter_sendto': 'send', 'sys_exit_recvfrom': 'recv', 'sys_enter_pwrite64': 'pwrite',
                'sys_exit_pwrite64': 'pwrite done', 'sys_exit_fdatasync': 'fdatasync done'}.get(event)
        if kind:
            norm.append((t, tid, kind))
    writes = split_writes(norm, driver)
    print(f'{len(writes)} writes')
    chains, order = defaultdict(list), []
    for write in writes:
        t0 = write[0][0]
        steps = {}

        def put(name, t):
            if name not in order:
                order.append(name)
            steps[name] = t

        put('driver sends', t0)
        request = find(write, t0, {ingress}, 'recv')[0]
        append = request and find(write, request, {ingress}, 'send')[0]
        got = append and find(write, append, readers, 'recv')[0]
        start, log = find(write, got, flushers, 'pwrite') if got else (None, None)
        written = start and find(write, start, {log}, 'pwrite done')[0]
        synced = written and find(write, written, {log}, 'fdatasync done')[0]
        answer = synced and find(write, synced, {log}, 'send')[0]
        if answer is None:
            continue
        put('L reads the request', request)
        put('L sends the records (1st send)', append)
        put('F reads the records', got)
        put('a log starts its pwrite', start)
        put('... pwrite returns', written)
        put('... fdatasync returns', synced)
        put('... its thread sends the ack or answer', answer)
        put('driver receives', write[-1][0])
        for name, t in steps.items():
            chains[name].append(t - t0)
    report(chains, order)


if __name__ == '__main__':
    {'cluster': cluster, 'floor': floor}[sys.argv[1]](sys.argv[2])
