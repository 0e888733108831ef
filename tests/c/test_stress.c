// Threaded stress: threads come and go (thread churn), allocate blocks of random sizes,
// check their contents, and hand a share of them to other threads to free (cross-thread
// frees, also into segments of threads that have exited). Seeded and deterministic per
// thread; prints the seed. Every block must be shardalloc's (mi_is_in_heap_region), also
// when the program runs preloaded rather than linked.
//
//   test_stress [threads] [rounds] [seed]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 4096
static void* volatile transfer[SLOTS];   // blocks handed between threads
static size_t transfer_size[SLOTS];
static pthread_mutex_t transfer_lock[64];
static int nthreads = 8, rounds = 6;
static uint64_t seed0;
static volatile int failed = 0;

// weak: linked with -lshardalloc or preloaded, the symbol is there; a run where malloc is
// not shardalloc's fails instead of passing on glibc's malloc
extern _Bool mi_is_in_heap_region(const void* p) __attribute__((weak));
static int ours(const void* p) { return mi_is_in_heap_region && mi_is_in_heap_region(p); }

static uint64_t next(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t pick_size(uint64_t* s) {
  uint64_t r = next(s) % 1000;
  if (r < 700) return 1 + next(s) % 128;
  if (r < 950) return 1 + next(s) % 4096;
  if (r < 998) return 1 + next(s) % (256 * 1024);
  return 1 + next(s) % (6 << 20);
}
static void stamp(unsigned char* p, size_t n) {
  // first and last bytes carry the size, so corruption shows
  p[n - 1] = (unsigned char)(n >> 3); p[0] = (unsigned char)n;
  if (n > 16) memset(p + 1, (int)(n & 0xff), n < 64 ? n - 2 : 62);
}
static int stamped(const unsigned char* p, size_t n) {
  if (p[0] != (unsigned char)n || (n > 1 && p[n - 1] != (unsigned char)(n >> 3))) return 0;
  if (n > 16) for (size_t i = 1; i < (n < 64 ? n - 1 : 63); i++) if (p[i] != (unsigned char)(n & 0xff)) return 0;
  return 1;
}

static void* worker(void* arg) {
  uint64_t s = seed0 ^ (uintptr_t)arg * 0x1234567ull;
  enum { LOCAL = 512 };
  void* mine[LOCAL] = {0};
  size_t sizes[LOCAL] = {0};
  for (int it = 0; it < 20000; it++) {
    int i = (int)(next(&s) % LOCAL);
    if (mine[i]) {
      if (!stamped(mine[i], sizes[i])) { fprintf(stderr, "corrupt local block %p size %zu\n", mine[i], sizes[i]); failed = 1; }
      if (next(&s) % 3 == 0) {
        // hand it to another thread (swapping with what is there)
        int t = (int)(next(&s) % SLOTS);
        pthread_mutex_lock(&transfer_lock[t % 64]);
        void* old = transfer[t]; size_t oldn = transfer_size[t];
        transfer[t] = mine[i]; transfer_size[t] = sizes[i];
        pthread_mutex_unlock(&transfer_lock[t % 64]);
        mine[i] = old; sizes[i] = oldn;
        if (old && !stamped(old, oldn)) { fprintf(stderr, "corrupt transferred block %p size %zu\n", old, oldn); failed = 1; }
      } else {
        free(mine[i]); mine[i] = NULL;
      }
    } else {
      size_t n = pick_size(&s);
      unsigned char* p;
      switch (next(&s) % 4) {
        case 0: p = calloc(1, n); if (p && p[n / 2] != 0) { fprintf(stderr, "calloc not zero\n"); failed = 1; } break;
        case 1: p = aligned_alloc(64, (n + 63) & ~(size_t)63); break;
        case 2: p = realloc(malloc(n / 2 + 1), n); break;
        default: p = malloc(n);
      }
      if (!p) { fprintf(stderr, "out of memory at %zu\n", n); failed = 1; continue; }
      if (!ours(p)) { if (!failed) fprintf(stderr, "block %p of size %zu is not shardalloc's\n", p, n); failed = 1; }
      stamp(p, n); mine[i] = p; sizes[i] = n;
    }
  }
  // leave about half behind: the thread exits with live blocks (abandoned segments)
  for (int i = 0; i < LOCAL; i += 2) { free(mine[i]); mine[i] = NULL; }
  for (int i = 1; i < LOCAL; i += 2) {
    if (mine[i]) {
      int t = (int)(next(&s) % SLOTS);
      pthread_mutex_lock(&transfer_lock[t % 64]);
      void* old = transfer[t]; size_t oldn = transfer_size[t];
      transfer[t] = mine[i]; transfer_size[t] = sizes[i];
      pthread_mutex_unlock(&transfer_lock[t % 64]);
      if (old) { if (!stamped(old, oldn)) { fprintf(stderr, "corrupt\n"); failed = 1; } free(old); }
    }
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc > 1) nthreads = atoi(argv[1]);
  if (argc > 2) rounds = atoi(argv[2]);
  seed0 = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)getpid() * 2654435761u;
  printf("test_stress: %d threads x %d rounds, seed %llu\n", nthreads, rounds, (unsigned long long)seed0);
  for (int i = 0; i < 64; i++) pthread_mutex_init(&transfer_lock[i], NULL);
  for (int r = 0; r < rounds; r++) {
    pthread_t t[64];
    for (int i = 0; i < nthreads; i++) pthread_create(&t[i], NULL, worker, (void*)(uintptr_t)(r * 100 + i + 1));
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
  }
  for (int i = 0; i < SLOTS; i++) {
    if (transfer[i]) { if (!stamped(transfer[i], transfer_size[i])) failed = 1; free(transfer[i]); }
  }
  if (!mi_is_in_heap_region) { fprintf(stderr, "test_stress: shardalloc is not loaded\n"); failed = 1; }
  if (failed) { printf("test_stress: FAILED (seed %llu)\n", (unsigned long long)seed0); return 1; }
  printf("test_stress: ok\n");
  return 0;
}
