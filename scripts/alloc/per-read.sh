#!/bin/bash
# Allocations per linearizable read of `coraft-bench --workload read`: the
# method of scripts/alloc/per-write.sh, counting reads with a uprobe on
# `Shard::read`.
#
#   scripts/alloc/per-read.sh BENCH_BINARY [CLIENTS] --workload read [EXTRA BENCH ARGS...]
#
# (With `--workload mixed --read-ratio 0.9` the allocations of the writes
# in between are counted too, over the reads only.)
ALLOC_PER=read exec "$(dirname "$0")/per-write.sh" "$@"
