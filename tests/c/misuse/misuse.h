/* Shared by the misuse programs of tests/misuse.rs: each program commits one misuse
   against the allocator it runs on (shardalloc through LD_PRELOAD).

   - Every error the allocator reports through mimalloc's `mi_register_error` (found with
     dlsym, so the programs link against nothing) prints "MISUSE-REPORTED <errno>".
   - A SIGSEGV/SIGBUS while the program itself touches memory it should not (inside
     PROGRAM_ACCESS(...)) prints "PROGRAM-FAULT" and exits 77: the intended outcome when a
     freed large block is unmapped or protected. Any other SIGSEGV/SIGBUS (inside the
     allocator) is left to kill the process, which the test reports as a crash.
   - DONE() prints "MISUSE-DONE": the program ran on after its misuse.
   - A program may print "MISUSE-PASSED" right after its misuse: a build that must report
     it must do so before that line (at the misuse, not later). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>

static volatile sig_atomic_t in_program_access = 0;

static void say(const char* s) { (void)!write(2, s, strlen(s)); }

static void on_fault(int sig) {
  if (in_program_access) {
    say("PROGRAM-FAULT\n");
    _exit(77);
  }
  signal(sig, SIG_DFL); /* a fault inside the allocator: die of it */
  raise(sig);
}

static void on_error(int err, void* arg) {
  (void)arg;
  char buf[64];
  snprintf(buf, sizeof buf, "MISUSE-REPORTED %d\n", err);
  say(buf);
}

__attribute__((constructor)) static void misuse_setup(void) {
  signal(SIGSEGV, on_fault);
  signal(SIGBUS, on_fault);
  void (*reg)(void (*)(int, void*), void*) =
      (void (*)(void (*)(int, void*), void*))dlsym(RTLD_DEFAULT, "mi_register_error");
  if (reg != NULL) reg(on_error, NULL);
  else say("MISUSE-NO-MIMALLOC-API\n");
}

#define PROGRAM_ACCESS(stmt)          \
  do {                                \
    in_program_access = 1;            \
    __sync_synchronize();             \
    stmt;                             \
    __sync_synchronize();             \
    in_program_access = 0;            \
  } while (0)

#define DONE() say("MISUSE-DONE\n")

/* The compiler must not see through malloc/free (the tests build with -fno-builtin too). */
static void* volatile sink;
static inline void* opaque(void* p) { sink = p; return sink; }

/* Returns a live block of `size` bytes whose neighbour in memory (the block right after
   it) is free: the target of an overflow that reaches the neighbour's free-list link
   (allocation order is random in secure mode, so the pair is searched for). */
static inline char* with_free_neighbour(size_t size, int n) {
  static char* b[512];
  if (n > 512) n = 512;
  for (int i = 0; i < n; i++) b[i] = malloc(size);
  size_t us = malloc_usable_size(b[0]);
  int live = -1, next = -1;
  for (int i = 0; i < n && live < 0; i++)
    for (int j = 0; j < n; j++)
      if (b[j] == b[i] + us) { live = i; next = j; break; }
  if (live < 0) { say("NO-NEIGHBOURS\n"); _exit(3); }
  free(b[next]);
  return opaque(b[live]);
}

/* Allocates `n` blocks of `size` (kept): enough to take every free block of the page of
   a misused block, so that its lists are consumed. */
static inline void drain(size_t size, int n) {
  for (int i = 0; i < n; i++) opaque(malloc(size));
}

/* Allocates a few blocks of `size` after the one returned, so that the misused block has
   neighbours on its page's free list. */
static inline void* with_neighbours(size_t size) {
  void* p = malloc(size);
  void* q[4];
  for (int i = 0; i < 4; i++) q[i] = malloc(size);
  for (int i = 0; i < 4; i++) free(q[i]);
  return opaque(p);
}
