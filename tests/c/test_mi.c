// mimalloc's `mi_*` API with mimalloc's semantics, written as a mimalloc user would, with
// no libc allocation names: it runs against libshardalloc.so on Linux (tests/c_api.rs)
// and against shardalloc.dll on Windows, under Wine (tests/windows.rs). Threads are made
// with pthreads or CreateThread. Prints "test_mi: N checks passed" and exits 0, or names
// the failed check and exits 1.
#include <mimalloc.h>
#include <mimalloc-stats.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#endif

static int checks = 0, failed = 0;
#define CHECK(cond)                                                              \
  do {                                                                           \
    checks++;                                                                    \
    if (!(cond)) {                                                               \
      failed++;                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

static void basic(void) {
  char* p = (char*)mi_malloc(100);
  CHECK(p != NULL && mi_usable_size(p) >= 100);
  memset(p, 1, 100);
  p = (char*)mi_realloc(p, 10000);
  CHECK(p != NULL && p[99] == 1 && mi_usable_size(p) >= 10000);
  mi_free(p);
  int* z = (int*)mi_calloc(1000, sizeof(int));
  int all_zero = 1;
  for (int i = 0; i < 1000; i++) all_zero &= z[i] == 0;
  CHECK(z != NULL && all_zero);
  mi_free(z);
  char* zz = (char*)mi_zalloc(300);
  CHECK(zz != NULL && zz[0] == 0 && zz[299] == 0);
  mi_free(zz);
  mi_free(NULL);
  CHECK(mi_good_size(100) >= 100);
  // a large and a huge block
  char* big = (char*)mi_malloc(3 << 20);
  char* huge = (char*)mi_malloc(64 << 20);
  CHECK(big != NULL && huge != NULL);
  memset(big, 2, 3 << 20);
  memset(huge, 3, 64 << 20);
  huge = (char*)mi_realloc(huge, 80 << 20);
  CHECK(huge != NULL && huge[(64 << 20) - 1] == 3);
  mi_free(big);
  mi_free(huge);
}

static void errors(void) {
  volatile size_t max = SIZE_MAX;  // (hidden from the compiler's size warnings)
  errno = 0;
  CHECK(mi_malloc(max) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(mi_calloc(max / 2, 3) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(mi_mallocn(max / 4, 8) == NULL);
  CHECK(mi_malloc_aligned(16, 3) == NULL);  // not a power of two
  void* q = NULL;
  CHECK(mi_posix_memalign(&q, 3, 16) == EINVAL && q == NULL);
  CHECK(mi_new_nothrow(max) == NULL);
  char* p = (char*)mi_malloc(10);
  CHECK(mi_reallocarray(p, max / 2, 3) == NULL);
  CHECK(p[0] == p[0]);  // still live
  mi_free(p);
}

static void aligned(void) {
  for (size_t a = 8; a <= (1 << 20); a *= 4) {
    char* p = (char*)mi_malloc_aligned(a + 5, a);
    CHECK(p != NULL && ((uintptr_t)p % a) == 0);
    char* z = (char*)mi_zalloc_aligned(100, a);
    CHECK(z != NULL && ((uintptr_t)z % a) == 0 && z[99] == 0);
    p = (char*)mi_realloc_aligned(p, 3 * a, a);
    CHECK(p != NULL && ((uintptr_t)p % a) == 0);
    mi_free(p);
    mi_free(z);
  }
  char* at = (char*)mi_malloc_aligned_at(100, 64, 16);
  CHECK(at != NULL && ((uintptr_t)(at + 16) % 64) == 0);
  mi_free(at);
  void* q = NULL;
  CHECK(mi_posix_memalign(&q, 256, 1000) == 0 && q != NULL && ((uintptr_t)q % 256) == 0);
  mi_free(q);
}

static void strings(void) {
  char* s = mi_strdup("shardalloc");
  CHECK(s != NULL && strcmp(s, "shardalloc") == 0);
  char* n = mi_strndup("shardalloc", 5);
  CHECK(n != NULL && strcmp(n, "shard") == 0);
  mi_free(s);
  mi_free(n);
  char* r = mi_realpath(".", NULL);
  CHECK(r != NULL && strlen(r) > 0);
  mi_free(r);
  CHECK(mi_realpath("does/not/exist/anywhere", NULL) == NULL);
  char* v = NULL;
  size_t len = 0;
  CHECK(mi_dupenv_s(&v, &len, "TEST_MI_VAR") == 0 && v != NULL && strcmp(v, "value-1") == 0 &&
        len == 8);
  mi_free(v);
  CHECK(mi_dupenv_s(&v, &len, "TEST_MI_UNSET") == 0 && v == NULL);
#ifdef _WIN32
  unsigned short* w = NULL;
  CHECK(mi_wdupenv_s(&w, &len, (const unsigned short*)L"TEST_MI_VAR") == 0 && w != NULL &&
        w[0] == 'v' && w[6] == '1' && w[7] == 0 && len == 8);
  mi_free(w);
#endif
}

static size_t visited_blocks, visited_bytes;
static bool visitor(const mi_heap_t* heap, const mi_heap_area_t* area, void* block,
                    size_t block_size, void* arg) {
  (void)heap; (void)area; (void)arg;
  if (block != NULL) {
    visited_blocks++;
    visited_bytes += block_size;
  }
  return true;
}

static void heaps(void) {
  mi_heap_t* h = mi_heap_new();
  CHECK(h != NULL);
  void* ps[100];
  for (int i = 0; i < 100; i++) ps[i] = mi_heap_malloc(h, 16 + i);
  CHECK(mi_heap_contains_block(h, ps[50]));
  CHECK(!mi_heap_contains_block(mi_heap_get_default(), ps[50]));
  CHECK(mi_heap_check_owned(h, ps[7]));
  CHECK(mi_check_owned(ps[7]));   // mimalloc v3: mi_check_owned is any heap's
  CHECK(mi_heap_of(ps[7]) == h && mi_heap_contains(h, ps[7]) && !mi_heap_contains(NULL, ps[7]));
  void* own = mi_malloc(24);
  CHECK(mi_check_owned(own) && !mi_heap_check_owned(h, own));
  mi_free(own);
  visited_blocks = visited_bytes = 0;
  CHECK(mi_heap_visit_blocks(h, true, visitor, NULL));
  CHECK(visited_blocks == 100);
  char* s = mi_heap_strdup(h, "in a heap");
  CHECK(s != NULL && mi_heap_contains_block(h, s));
  mi_heap_destroy(h);  // frees every block at once

  // delete: live blocks move to the default heap and stay valid
  h = mi_heap_new();
  char* keep = (char*)mi_heap_malloc(h, 64);
  strcpy(keep, "kept");
  mi_heap_delete(h);
  CHECK(strcmp(keep, "kept") == 0);
  mi_free(keep);

  // a heap as the default
  h = mi_heap_new();
  mi_heap_t* old = mi_heap_set_default(h);
  void* d = mi_malloc(10);
  CHECK(mi_heap_contains_block(h, d));
  mi_heap_set_default(old);
  mi_free(d);
  mi_heap_delete(h);
  CHECK(mi_heap_get_backing() != NULL);
}

static char stats_text[8192];
static size_t stats_len;
static void collect_output(const char* msg, void* arg) {
  (void)arg;
  size_t n = strlen(msg);
  if (stats_len + n < sizeof stats_text) {
    memcpy(stats_text + stats_len, msg, n);
    stats_len += n;
    stats_text[stats_len] = 0;
  }
}

static void options_and_stats(void) {
  long old = mi_option_get(mi_option_purge_delay);
  mi_option_set(mi_option_purge_delay, 250);
  CHECK(mi_option_get(mi_option_purge_delay) == 250);
  mi_option_set(mi_option_purge_delay, old);
  // options come from the environment at load time (the tests set MIMALLOC_SHOW_STATS)
  const char* show = getenv("MIMALLOC_SHOW_STATS");
  CHECK(mi_option_is_enabled(mi_option_show_stats) == (show != NULL && strcmp(show, "1") == 0));
  CHECK(mi_version() > 0);
  mi_collect(true);
  stats_len = 0;
  mi_stats_print_out(collect_output, NULL);
  CHECK(stats_len > 100 && strstr(stats_text, "shardalloc statistics") != NULL);
  CHECK(strstr(stats_text, "test_mi") != NULL);  // the program's name
  size_t elapsed, user, sys, rss, peak_rss, commit, peak_commit, faults;
  void* p = mi_malloc(8 << 20);
  memset(p, 1, 8 << 20);
  mi_process_info(&elapsed, &user, &sys, &rss, &peak_rss, &commit, &peak_commit, &faults);
  CHECK(rss >= (8 << 20) && peak_rss >= rss && peak_commit >= commit);
  mi_free(p);
  CHECK(mi_is_in_heap_region(p) || !mi_is_in_heap_region(p));
#ifdef _WIN32
  CHECK(!mi_is_redirected());  // the C runtime keeps its malloc
#endif
}

// threads: each allocates, frees half, and passes the rest to the main thread
#define THREADS 8
#define PER 2000
static void* passed[THREADS][PER];
static int thread_ok[THREADS];

static void thread_work(int t) {
  int ok = 1;
  for (int i = 0; i < PER; i++) {
    size_t n = 8 + (size_t)((i * 7919 + t * 131) % 2000);
    unsigned char* p = (unsigned char*)mi_malloc(n);
    if (p == NULL) { ok = 0; break; }
    memset(p, (unsigned char)(t + 1), n);
    if (i % 2) {
      mi_free(p);
      passed[t][i] = NULL;
    } else {
      passed[t][i] = p;
    }
  }
  thread_ok[t] = ok;
}

#ifdef _WIN32
static DWORD WINAPI thread_main(LPVOID arg) {
  thread_work((int)(intptr_t)arg);
  return 0;
}
#else
static void* thread_main(void* arg) {
  thread_work((int)(intptr_t)arg);
  return NULL;
}
#endif

static void threads(void) {
  for (int round = 0; round < 5; round++) {
#ifdef _WIN32
    HANDLE hs[THREADS];
    for (int t = 0; t < THREADS; t++)
      hs[t] = CreateThread(NULL, 0, thread_main, (LPVOID)(intptr_t)t, 0, NULL);
    for (int t = 0; t < THREADS; t++) {
      WaitForSingleObject(hs[t], INFINITE);
      CloseHandle(hs[t]);
    }
#else
    pthread_t hs[THREADS];
    for (int t = 0; t < THREADS; t++)
      pthread_create(&hs[t], NULL, thread_main, (void*)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(hs[t], NULL);
#endif
    // the threads have exited: free what they left, checking the contents
    int intact = 1;
    for (int t = 0; t < THREADS; t++) {
      CHECK(thread_ok[t]);
      for (int i = 0; i < PER; i++) {
        unsigned char* p = (unsigned char*)passed[t][i];
        if (p == NULL) continue;
        size_t n = 8 + (size_t)((i * 7919 + t * 131) % 2000);
        intact &= p[0] == (unsigned char)(t + 1) && p[n - 1] == (unsigned char)(t + 1);
        mi_free(p);
      }
    }
    CHECK(intact);
  }
}

// mimalloc v3's additions, portably (tests/c/test_v3.c has every case on Linux): the
// usable-size variants, heap queries, statistics as JSON, and an arena reserved from the
// OS (VirtualAlloc on Windows) with a heap inside it.
static void v3(void) {
  size_t bs = 0;
  void* p = mi_umalloc(100, &bs);
  CHECK(p != NULL && bs >= 100 && bs == mi_usable_size(p));
  size_t fb = 0;
  mi_ufree(p, &fb);
  CHECK(fb == bs);
  void* q = mi_malloc(10);
  CHECK(mi_heap_of(q) == mi_heap_main() && mi_any_heap_contains(q) && mi_heap_contains(NULL, q));
  mi_free(q);
  CHECK(mi_option_get_size(mi_option_arena_reserve) == (size_t)mi_option_get(mi_option_arena_reserve) * 1024);
  mi_stats_t_decl(st);
  CHECK(mi_stats_get(&st) && st.reserved.current > 0);
  char* js = mi_stats_get_json(0, NULL);
  CHECK(js != NULL && strstr(js, "\"stat_version\": 5") != NULL);
  mi_free(js);
  mi_arena_id_t id = NULL;
  CHECK(mi_reserve_os_memory_ex(32 << 20, true, false, true, &id) == 0 && id != NULL);
  mi_heap_t* h = mi_heap_new_in_arena(id);
  CHECK(h != NULL);
  if (h != NULL) {
    size_t total = 0;
    for (;;) {
      void* b = mi_heap_malloc(h, 100000);
      if (b == NULL) break;
      CHECK(mi_arena_contains(id, b) && mi_heap_of(b) == h);
      total += 100000;
    }
    CHECK(total >= (16 << 20));   // exhaustion gives NULL, after most of the arena
    mi_heap_destroy(h);
  }
  // a sub-process: a domain of its own, destroyed with its memory
  mi_subproc_id_t sp = mi_subproc_new();
  CHECK(sp._mi_subproc_id != NULL && sp._mi_subproc_id != mi_subproc_main()._mi_subproc_id);
  mi_subproc_destroy(sp);
}

int main(void) {
#ifdef _WIN32
  SetEnvironmentVariableA("TEST_MI_VAR", "value-1");
  _putenv("TEST_MI_VAR=value-1");
#else
  setenv("TEST_MI_VAR", "value-1", 1);
#endif
  basic();
  errors();
  aligned();
  strings();
  heaps();
  options_and_stats();
  threads();
  v3();
  if (failed) {
    fprintf(stderr, "test_mi: %d of %d checks failed\n", failed, checks);
    return 1;
  }
  printf("test_mi: %d checks passed\n", checks);
  return 0;
}
