// A threaded allocation workload for comparing allocators under LD_PRELOAD:
//  - churn: every thread replaces random blocks of a working set (sizes mostly small,
//    some up to 64 KiB), touching each block;
//  - cross: threads pass blocks through rings to the next thread, which frees them
//    (producer/consumer: remote frees).
// Prints the wall time in seconds.
//
//   bench_threads [threads] [iterations per thread]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int nthreads = 4;
static long iters = 2000000;

#define RING 1024
typedef struct { void* volatile slot[RING]; } ring_t;
static ring_t* rings;

static uint64_t rnd(uint64_t* s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }
static size_t size_of(uint64_t r) {
  unsigned k = r % 100;
  if (k < 80) return 8 + (r >> 8) % 120;
  if (k < 98) return 128 + (r >> 8) % 1900;
  return 2048 + (r >> 8) % 63000;
}

static void* worker(void* arg) {
  long id = (long)arg;
  uint64_t s = 0x9e3779b97f4a7c15ull * (id + 1);
  enum { SET = 2000 };
  void** set = calloc(SET, sizeof(void*));
  for (long i = 0; i < iters; i++) {
    uint64_t r = rnd(&s);
    size_t j = r % SET;
    free(set[j]);
    size_t n = size_of(r >> 11);
    char* p = malloc(n);
    p[0] = (char)i; p[n - 1] = (char)i;
    set[j] = p;
    if ((i & 7) == 0) {
      // hand a block to the next thread; free whatever was waiting in the slot
      ring_t* ring = &rings[(id + 1) % nthreads];
      void* q = malloc(size_of(rnd(&s)));
      void* old = __atomic_exchange_n(&ring->slot[(r >> 20) % RING], q, __ATOMIC_ACQ_REL);
      free(old);
    }
  }
  for (size_t j = 0; j < SET; j++) free(set[j]);
  free(set);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc > 1) nthreads = atoi(argv[1]);
  if (argc > 2) iters = atol(argv[2]);
  rings = calloc((size_t)nthreads, sizeof(ring_t));
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  pthread_t t[256];
  for (long i = 0; i < nthreads; i++) pthread_create(&t[i], NULL, worker, (void*)i);
  for (long i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
  for (int r = 0; r < nthreads; r++)
    for (int k = 0; k < RING; k++) free(rings[r].slot[k]);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.3f\n", (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
  return 0;
}
