// dlopen(libshardalloc.so) into a program that is not linked with it: it loads (no
// "cannot allocate memory in static TLS block"), its mi_* API works from several threads
// (the thread-local heap slot is the library's own TLS), and malloc stays glibc's.
//
//   test_dlopen /path/to/libshardalloc.so
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <stdint.h>

typedef void* (*malloc_fn)(size_t);
typedef void (*free_fn)(void*);
typedef size_t (*usable_fn)(const void*);
typedef bool (*region_fn)(const void*);
typedef void* (*heap_fn)(void);
typedef bool (*contains_fn)(const void*, const void*);
static malloc_fn mi_malloc_p;
static free_fn mi_free_p;
static usable_fn mi_usable_p;
static region_fn mi_region_p;
static heap_fn mi_heap_default_p;
static contains_fn mi_contains_p;
static int failed = 0;

static void* worker(void* arg) {
  void* keep[1000];
  for (int i = 0; i < 1000; i++) {
    keep[i] = mi_malloc_p(16 + i);
    if (!keep[i] || !mi_region_p(keep[i]) || mi_usable_p(keep[i]) < (size_t)(16 + i)) failed = 1;
    memset(keep[i], i, 16 + i);
  }
  // every thread allocates from its own part of the main heap: not from the main thread's
  // pages (the main thread keeps the block `arg` live), in segments of its own (4 MiB)
  void* h = mi_heap_default_p();
  if (!mi_contains_p(h, keep[0])) failed = 1;
  if (arg && ((uintptr_t)keep[0] >> 22) == ((uintptr_t)arg >> 22)) failed = 1;
  for (int i = 0; i < 1000; i++) mi_free_p(keep[i]);
  return h;
}

static pthread_barrier_t barrier, early_go;
static void* worker(void* arg);
static void* early_worker(void* arg) {
  (void)arg;
  pthread_barrier_wait(&early_go);
  return worker(NULL);
}
static void* late_worker(void* arg) {
  (void)arg;
  void* p = mi_malloc_p(100);
  pthread_barrier_wait(&barrier);
  pthread_barrier_wait(&barrier);
  mi_free_p(p);                            // the library is dlclosed by now
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: test_dlopen lib.so\n"); return 2; }
  // a thread that exists before the library is loaded: glibc must give it the library's
  // static TLS initialised (the heap slot starts as the empty heap, not as zero)
  pthread_barrier_init(&early_go, NULL, 2);
  pthread_t early;
  pthread_create(&early, NULL, early_worker, NULL);
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen failed: %s\n", dlerror()); return 1; }
  mi_malloc_p = (malloc_fn)dlsym(lib, "mi_malloc");
  mi_free_p = (free_fn)dlsym(lib, "mi_free");
  mi_usable_p = (usable_fn)dlsym(lib, "mi_usable_size");
  mi_region_p = (region_fn)dlsym(lib, "mi_is_in_heap_region");
  mi_heap_default_p = (heap_fn)dlsym(lib, "mi_heap_get_default");
  mi_contains_p = (contains_fn)dlsym(lib, "mi_heap_contains_block");
  bool (*redirected)(void) = (bool (*)(void))dlsym(lib, "mi_is_redirected");
  if (!mi_malloc_p || !mi_free_p || !mi_usable_p || !mi_region_p || !mi_heap_default_p ||
      !mi_contains_p || !redirected) {
    fprintf(stderr, "dlsym failed\n"); return 1;
  }
  if (redirected()) { fprintf(stderr, "malloc should still be glibc's after dlopen\n"); failed = 1; }
  void* g = malloc(100);                 // glibc's
  if (mi_region_p(g)) { fprintf(stderr, "glibc block claimed by shardalloc\n"); failed = 1; }
  free(g);
  pthread_barrier_wait(&early_go);         // the library is loaded: go
  pthread_join(early, NULL);
  worker(NULL);
  void* anchor = mi_malloc_p(64);          // keeps the main thread's segment in use
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, anchor);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  mi_free_p(anchor);
  // dlclose while a thread that allocated is still alive: when it exits afterwards, its
  // thread-key destructor must still find shardalloc's code (the library pins itself)
  pthread_t late;
  pthread_barrier_init(&barrier, NULL, 2);
  pthread_create(&late, NULL, late_worker, NULL);
  pthread_barrier_wait(&barrier);          // it has allocated
  if (dlclose(lib) != 0) { fprintf(stderr, "dlclose failed: %s\n", dlerror()); failed = 1; }
  pthread_barrier_wait(&barrier);          // now let it exit
  pthread_join(late, NULL);
  printf("test_dlopen: %s\n", failed ? "FAILED" : "ok");
  return failed;
}
