#!/bin/bash
# What one membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) costs its caller on
# this machine, the call glommio makes before every executor sleep
# (docs/journal/benchmarks.md, "issue 17: the cluster against its floor"):
#   scripts/profile/membarrier-cost.sh [CALLS]
# Three cases, CALLS calls each (default 20000), in one process:
#  alone  - no other thread of the process exists: the kernel finds no CPU
#           running this mm, no IPI;
#  asleep - a second thread blocked in a read: no IPI either;
#  busy   - a second thread spinning (pinned to the other CPU when there are
#           two): an IPI to it and a wait for its answer at each call.
# Prints ns per call (wall clock, and the caller's CPU from
# CLOCK_THREAD_CPUTIME_ID). Needs a C compiler. On a loaded machine the
# spinning thread may not hold its CPU all the time: the busy case is then
# a mix of calls with and without an IPI.
set -eu
CALLS=${1:-20000}
DIR=$(mktemp -d); trap 'rm -rf "$DIR"' EXIT
cat > "$DIR/mb.c" <<'EOF'
#define _GNU_SOURCE
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static int pipefd[2];

static long mb(int cmd) { return syscall(__NR_membarrier, cmd, 0, 0); }
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

static void *spin(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {}
    return NULL;
}
static void *block(void *arg) {
    (void)arg;
    char c;
    if (read(pipefd[0], &c, 1) < 0) perror("read");
    return NULL;
}
static void pin(pthread_t t, int cpu) {
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
    pthread_setaffinity_np(t, sizeof s, &s);
}
static void measure(const char *name, long calls) {
    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID);
    for (long i = 0; i < calls; i++)
        if (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) { perror("membarrier"); exit(1); }
    double w = now(CLOCK_MONOTONIC) - w0, c = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    printf("%-7s %8.0f ns wall, %8.0f ns of the caller's CPU per call (%ld calls)\n", name, w / calls, c / calls, calls);
}
int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 20000;
    if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) { perror("membarrier register"); return 1; }
    int cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    pin(pthread_self(), 0);
    measure("alone", calls);
    if (pipe(pipefd) != 0) return 1;
    pthread_t t;
    pthread_create(&t, NULL, block, NULL);
    usleep(100000);
    measure("asleep", calls);
    if (write(pipefd[1], "x", 1) != 1) return 1;
    pthread_join(t, NULL);
    pthread_create(&t, NULL, spin, NULL);
    if (cpus > 1) pin(t, 1);
    usleep(100000);
    measure("busy", calls);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
EOF
cc -O2 -pthread -o "$DIR/mb" "$DIR/mb.c"
"$DIR/mb" "$CALLS"
