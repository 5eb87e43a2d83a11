#!/usr/bin/env python3
"""Splits the CRC32 work of a `perf script -F event,trace,ip,sym` dump by
the pass that asked for it (the first caller naming one), for
crc-calls.sh (uprobe events: calls and bytes per write) and crc-share.sh
(cpu-clock samples: shares of the process's samples)."""
import collections
import re
import sys

PASSES = [
    ("apply", r"apply_batch|Applying|apply_commands"),
    ("follower's append", r"archived_append|append_from_archived"),
    # The client path's frames are inlined into `transport::serve`.
    ("leader's client frame", r"client_requests|client_proposal|session_data_crc"),
    ("wal", r"coraft_wal|Wal::|checksum_record|checksum_last"),
    ("net frames", r"coraft_net"),
]


def samples(path):
    sample = None
    for line in open(path, errors="replace"):
        if line.strip() and not line[0].isspace():
            if sample:
                yield sample
            sample = [line, []]
        elif line.strip() and sample is not None:
            sample[1].append(line.strip())
    if sample:
        yield sample


def where(stack):
    # The hints' CRC (`session_data_crc`) is told apart by its callers.
    for name, pattern in PASSES[:2]:
        if any(re.search(pattern, frame) for frame in stack):
            return name
    for frame in stack:
        for name, pattern in PASSES:
            if re.search(pattern, frame):
                return name
    return "other"


def main():
    path, mode = sys.argv[1], sys.argv[2]
    calls, nbytes = collections.Counter(), collections.Counter()
    writes = total = 0
    for head, stack in samples(path):
        if mode == "calls":
            if re.search(r":w\d+:", head):
                writes += 1
                continue
            m = re.search(r"len=(0x[0-9a-f]+|\d+)", head)
            pass_ = where(stack)
            calls[pass_] += 1
            nbytes[pass_] += int(m.group(1), 0) if m else 0
        else:
            total += 1
            if stack and "crc32fast" in stack[0]:
                calls[where(stack)] += 1
    if mode == "calls":
        # The recorded samples give each pass's share of the CRCs and
        # their mean length; perf stat's counts (lossless) scale them.
        counted_writes, counted_crcs = int(sys.argv[3]), int(sys.argv[4])
        recorded = sum(calls.values())
        print(f"recorded: {writes} writes, {recorded} CRCs")
        for p in sorted(calls, key=lambda p: -calls[p]):
            per_write = counted_crcs * calls[p] / max(recorded, 1) / max(counted_writes, 1)
            mean = nbytes[p] / calls[p]
            print(f"{p:24} calls/write {per_write:6.2f}  bytes/write {per_write * mean:8.0f}")
    else:
        crc = sum(calls.values())
        print(f"samples {total}, crc32fast {crc} ({100 * crc / max(total, 1):.1f} %)")
        for p in sorted(calls, key=lambda p: -calls[p]):
            print(f"{p:24} {100 * calls[p] / max(total, 1):5.1f} % of the samples")


main()
