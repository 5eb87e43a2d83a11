// Counts a process's allocation calls (malloc, calloc, posix_memalign,
// aligned_alloc, memalign; realloc apart) and prints the totals to stderr
// at exit. Build: cc -O2 -shared -fPIC -o count_alloc.so count_alloc.c
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static atomic_ulong n_alloc, n_realloc;
static void count(atomic_ulong *n) { atomic_fetch_add_explicit(n, 1, memory_order_relaxed); }
void *malloc(size_t n) { count(&n_alloc); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(&n_alloc); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(&n_realloc); return __libc_realloc(p, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  count(&n_alloc);
  void *p = __libc_memalign(a, n);
  if (!p) return 12;
  *out = p;
  return 0;
}
void *aligned_alloc(size_t a, size_t n) { count(&n_alloc); return __libc_memalign(a, n); }
void *memalign(size_t a, size_t n) { count(&n_alloc); return __libc_memalign(a, n); }
__attribute__((destructor)) static void report(void) {
  fprintf(stderr, "ALLOC_COUNT allocs=%lu reallocs=%lu\n", atomic_load(&n_alloc), atomic_load(&n_realloc));
}
