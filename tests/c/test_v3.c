// What mimalloc v3 (v3.4.3's mimalloc.h and mimalloc-stats.h) added to the C API, case
// by case, with mimalloc's semantics: the mi_u* functions, heap queries, theaps, options,
// statistics (mi_stats_t, JSON), sub-processes, arenas (caller memory, OS reservations,
// huge OS pages). Linked against libshardalloc.so (tests/c_api.rs: v3_api_cases).
//
//   test_v3            runs every case of the default list
//   test_v3 NAME...    runs the named cases (some need an environment, see c_api.rs)
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mimalloc.h>
#include <mimalloc-stats.h>

static int failures = 0;
static const char* current = "";

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "FAIL %s: %s:%d: %s\n", current, __FILE__, __LINE__, #cond);   \
      failures++;                                                                    \
    }                                                                                \
  } while (0)

static int aligned_to(const void* p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }
static int all_zero(const void* p, size_t n) {
  const unsigned char* c = p;
  for (size_t i = 0; i < n; i++) if (c[i] != 0) return 0;
  return 1;
}

// output captured from mi_*_print_out
static char captured[1 << 16];
static size_t captured_len = 0;
static void capture(const char* msg, void* arg) {
  (void)arg;
  size_t n = strlen(msg);
  if (captured_len + n < sizeof captured) { memcpy(captured + captured_len, msg, n); captured_len += n; captured[captured_len] = 0; }
}
static void capture_reset(void) { captured_len = 0; captured[0] = 0; }

typedef struct { size_t areas, blocks; } count_t;
static bool count_visitor(const mi_heap_t* heap, const mi_heap_area_t* area, void* block, size_t bsize, void* arg) {
  (void)heap; (void)area; (void)bsize;
  count_t* c = arg;
  if (block == NULL) c->areas++; else c->blocks++;
  return true;
}

// ---------------------------------------------------------------------------------------

static void case_usable_size_variants(void) {
  size_t bs = 1;
  void* p = mi_umalloc(100, &bs);
  CHECK(p && bs >= 100 && bs == mi_usable_size(p));
  size_t fb = 0;
  mi_ufree(p, &fb);
  CHECK(fb == bs);
  p = mi_ucalloc(10, 30, &bs);
  CHECK(p && bs >= 300 && bs == mi_usable_size(p) && all_zero(p, 300));
  mi_free(p);
  bs = 7;
  CHECK(mi_ucalloc(SIZE_MAX / 2, 3, &bs) == NULL);   // overflow
  p = mi_umalloc_small(24, &bs); CHECK(p && bs >= 24 && bs == mi_usable_size(p)); mi_free_small(p);
  p = mi_uzalloc_small(200, &bs); CHECK(p && bs >= 200 && all_zero(p, bs)); mi_free(p);
  p = mi_umalloc_aligned(100, 4096, &bs); CHECK(p && aligned_to(p, 4096) && bs >= 100); mi_free(p);
  p = mi_uzalloc_aligned(3000, 256, &bs); CHECK(p && aligned_to(p, 256) && bs >= 3000 && all_zero(p, 3000)); mi_free(p);
  size_t pre = 1, post = 1;
  p = mi_urealloc(NULL, 50, &pre, &post);
  CHECK(p && pre == 0 && post == mi_usable_size(p) && post >= 50);
  memset(p, 7, 50);
  size_t old = post;
  p = mi_urealloc(p, 5000, &pre, &post);
  CHECK(p && pre == old && post >= 5000 && post == mi_usable_size(p) && ((unsigned char*)p)[49] == 7);
  mi_ufree(p, NULL);
  fb = 9; mi_ufree(NULL, &fb); CHECK(fb == 0);
  int local = 0;
  fb = 9; mi_ufree(&local, &fb); CHECK(fb == 0);                // not ours: ignored
  p = mi_malloc_small(8); CHECK(p); mi_free_small(p);
}

static void case_heap_queries(void) {
  int local = 0;
  void* p = mi_malloc(100);
  mi_heap_t* h = mi_heap_new();
  void* q = mi_heap_malloc(h, 100);
  CHECK(p && h && q);
  CHECK(mi_heap_main() != NULL && mi_heap_main() != h);
  CHECK(mi_heap_of(p) == mi_heap_main());
  CHECK(mi_heap_of(q) == h && mi_heap_of((char*)q + 50) == h);   // interior pointers too
  CHECK(mi_heap_of(NULL) == NULL && mi_heap_of(&local) == NULL);
  CHECK(mi_heap_contains(h, q) && !mi_heap_contains(h, p));
  CHECK(mi_heap_contains(NULL, p) && !mi_heap_contains(NULL, q)); // NULL: the main heap
  CHECK(mi_any_heap_contains(p) && mi_any_heap_contains(q) && !mi_any_heap_contains(&local));
  CHECK(mi_check_owned(q) && !mi_check_owned(&local));           // v3: any heap
  void* z = mi_heap_zalloc_small(h, 64); CHECK(z && all_zero(z, 64) && mi_heap_of(z) == h);
  count_t a = {0, 0}, b = {0, 0};
  CHECK(mi_heap_visit_blocks(h, true, count_visitor, &a));
  CHECK(mi_heap_visit_abandoned_blocks(h, true, count_visitor, &b));
  CHECK(a.blocks == 2 && b.blocks == a.blocks && b.areas == a.areas);
  mi_heap_set_numa_affinity(h, 0);                               // a hint: no effect
  mi_free(p);
  mi_heap_destroy(h);
}

static void case_unsafe_page_utilization(void) {
  mi_heap_t* h = mi_heap_new();
  mi_heap_t* other = mi_heap_new();
  enum { N = 6000 };
  static void* ps[N];
  for (int i = 0; i < N; i++) ps[i] = mi_heap_malloc(h, 32);
  int local = 0;
  CHECK(!mi_unsafe_heap_page_is_under_utilized(h, NULL, 50));
  CHECK(!mi_unsafe_heap_page_is_under_utilized(h, &local, 50));
  // a full page is never under-utilised
  CHECK(!mi_unsafe_heap_page_is_under_utilized(h, ps[0], 100));
  for (int i = 0; i < 2000; i += 2) { mi_free(ps[i]); ps[i] = NULL; }
  for (int i = 1; i < 2000; i += 2) {
    // half of the first page's blocks are used: not under 40%, and not in `other`
    CHECK(!mi_unsafe_heap_page_is_under_utilized(h, ps[i], 40));
    CHECK(!mi_unsafe_heap_page_is_under_utilized(other, ps[i], 100));
    CHECK(mi_unsafe_heap_page_is_under_utilized(h, ps[i], 60) ==
          mi_unsafe_heap_page_is_under_utilized(NULL, ps[i], 60));
  }
  mi_heap_destroy(h);
  mi_heap_destroy(other);
}

static void* theap_of_other_thread(void* h) { return mi_heap_theap((mi_heap_t*)h); }

static void case_theaps(void) {
  mi_heap_t* h = mi_heap_new();
  mi_theap_t* t = mi_heap_theap(h);
  CHECK(t != NULL);
  CHECK(mi_heap_theap(NULL) != NULL);                           // the main heap's
  void* p = mi_theap_malloc(t, 40); CHECK(p && mi_heap_of(p) == h);
  void* z = mi_theap_zalloc(t, 400); CHECK(z && all_zero(z, 400) && mi_heap_of(z) == h);
  void* c = mi_theap_calloc(t, 10, 10); CHECK(c && all_zero(c, 100) && mi_heap_of(c) == h);
  void* s = mi_theap_malloc_small(t, 16); CHECK(s && mi_heap_of(s) == h);
  void* zs = mi_theap_zalloc_small(t, 16); CHECK(zs && all_zero(zs, 16) && mi_heap_of(zs) == h);
  void* al = mi_theap_malloc_aligned(t, 100, 1024); CHECK(al && aligned_to(al, 1024) && mi_heap_of(al) == h);
  p = mi_theap_realloc(t, p, 10000); CHECK(p && mi_heap_of(p) == h);
  count_t cnt = {0, 0};
  CHECK(mi_theap_visit_blocks(t, true, count_visitor, &cnt) && cnt.blocks == 6);
  mi_theap_collect(t, true);
  mi_theap_guarded_set_sample_rate(t, 0, 0);
  mi_theap_guarded_set_size_bound(t, 0, 0);
  // the default theap serves malloc
  mi_theap_t* prev = mi_theap_set_default(t);
  CHECK(prev != NULL && mi_theap_get_default() == t);
  void* d = mi_malloc(24); CHECK(d && mi_heap_of(d) == h);
  CHECK(mi_theap_set_default(prev) == t && mi_theap_get_default() == prev);
  void* e = mi_malloc(24); CHECK(e && mi_heap_of(e) == mi_heap_main());
  mi_free(e);
  // another thread has a theap of its own of the same heap
  pthread_t th; void* r = NULL;
  pthread_create(&th, NULL, theap_of_other_thread, h);
  pthread_join(th, &r);
  CHECK(r != NULL && r != (void*)t);
  mi_heap_destroy(h);
}

static void case_options(void) {
  CHECK(mi_version() == MI_MALLOC_VERSION);
  // v3 numbering and legacy names
  CHECK(mi_option_purge_delay == 15 && mi_option_reset_delay == mi_option_purge_delay);
  CHECK(_mi_option_last == 47);
  long d = mi_option_get(mi_option_purge_delay);
  mi_option_set(mi_option_reset_delay, 123);
  CHECK(mi_option_get(mi_option_purge_delay) == 123);
  mi_option_set(mi_option_purge_delay, d);
  // sizes in KiB
  mi_option_set(mi_option_arena_reserve, 2048);
  CHECK(mi_option_get_size(mi_option_arena_reserve) == 2048 * 1024);
  mi_option_set(mi_option_max_errors, 5);
  CHECK(mi_option_get_size(mi_option_max_errors) == 5);
  mi_option_set(mi_option_reserve_huge_os_pages_at, -1);
  CHECK(mi_option_get_size(mi_option_reserve_huge_os_pages_at) == 0);   // negative: 0
  CHECK(mi_option_get(mi_option_arena_is_numa_local) == 0);
  CHECK(mi_option_get((mi_option_t)_mi_option_last) == 0);             // out of range
  capture_reset();
  mi_options_print_out(capture, NULL);
  CHECK(strstr(captured, "option 'purge_delay':") != NULL);
  CHECK(strstr(captured, "option 'arena_reserve': 2048 KiB (no effect)") != NULL);
  CHECK(strstr(captured, "option 'show_stats': 0\n") != NULL);         // acted on: unmarked
  CHECK(strstr(captured, "mimalloc API v3.4.3") != NULL);
  mi_register_output(capture, NULL);
  capture_reset();
  mi_options_print();
  mi_register_output(NULL, NULL);
  CHECK(strstr(captured, "option 'max_errors': 5") != NULL);
}

// run with MIMALLOC_RESERVE_OS_MEMORY=4MiB MIMALLOC_ARENA_RESERVE=3000 MIMALLOC_RESET_DELAY=77
static void case_env_options(void) {
  CHECK(mi_option_get(mi_option_reserve_os_memory) == 4096);
  CHECK(mi_option_get_size(mi_option_reserve_os_memory) == 4 << 20);
  CHECK(mi_option_get(mi_option_arena_reserve) == 3);   // a plain number is bytes, rounded up to KiB
  CHECK(mi_option_get(mi_option_purge_delay) == 77);    // legacy name
}

// MIMALLOC_LARGE_OS_PAGES=1 (mimalloc's legacy name of allow_large_os_pages): a segment
// made now (a new thread's first block) lies in a mapping advised MADV_HUGEPAGE: its
// VmFlags in /proc/self/smaps show "hg".
static int mapping_has_flag(const void* p, const char* flag) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  int inside = 0, found = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = lo <= (uintptr_t)p && (uintptr_t)p < hi;
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      char want[8]; snprintf(want, sizeof want, " %s", flag);
      for (char* q = line + 7; (q = strstr(q, want)) != NULL; q++) {
        if (q[strlen(want)] == ' ' || q[strlen(want)] == '\n') found = 1;
      }
      break;
    }
  }
  fclose(f);
  return found;
}

static void* first_block_of_thread(void* arg) {
  (void)arg;
  char* p = mi_malloc(1000);
  if (p) memset(p, 5, 1000);
  return p;
}

static void case_large_os_pages(void) {
  CHECK(mi_option_is_enabled(mi_option_allow_large_os_pages));
  capture_reset();
  mi_options_print_out(capture, NULL);
  CHECK(strstr(captured, "option 'allow_large_os_pages': 1\n") != NULL);   // acted on: unmarked
  pthread_t th; void* p = NULL;
  pthread_create(&th, NULL, first_block_of_thread, NULL);
  pthread_join(th, &p);
  CHECK(p != NULL && mapping_has_flag(p, "hg") == 1);
  mi_free(p);
}

static int bin_of(size_t size) {
  for (int b = 1; b < (int)MI_BIN_HUGE; b++) if (mi_stats_get_bin_size(b) >= size) return b;
  return -1;
}

static void case_stats(void) {
  mi_stats_t_decl(st);
  enum { N = 100 };
  void* big = mi_malloc(1 << 20);
  memset(big, 1, 1 << 20);
  mi_stats_merge();
  CHECK(mi_stats_get(&st));
  CHECK(st.malloc_normal.current >= (1 << 20) && st.reserved.current > 0 && st.committed.current > 0);
  CHECK(st.pages.current > 0 && st.threads.current >= 1 && st.segments.current > 0);
  CHECK(st.reserved.peak >= st.reserved.current && st.reserved.total >= st.reserved.current);
  mi_stats_t bad; memset(&bad, 0, sizeof bad); bad.size = sizeof bad - 8; bad.version = MI_STAT_VERSION;
  CHECK(!mi_stats_get(&bad) && !mi_stats_get(NULL));
  // JSON: allocated, or into the caller's buffer (NULL when too small)
  char* js = mi_stats_get_json(0, NULL);
  CHECK(js && js[0] == '{' && strstr(js, "\"stat_version\": 5,") && strstr(js, "\"mimalloc_version\": 30403,"));
  CHECK(js && strstr(js, "\"reserved\": { \"total\": ") && strstr(js, "\"malloc_bins\": [") && strstr(js, "\"chunk_bins\": ["));
  CHECK(js && strstr(js, "\"process\": {") && strstr(js, "\"commit_peak\": "));
  CHECK(js && js[strlen(js) - 2] == '}' && mi_any_heap_contains(js));
  mi_free(js);
  char small[32];
  CHECK(mi_stats_get_json(sizeof small, small) == NULL);
  static char large[64 * 1024];
  CHECK(mi_stats_get_json(sizeof large, large) == large && strstr(large, "\"threads\": {"));
  js = mi_stats_as_json(&st, 0, NULL); CHECK(js && strstr(js, "\"segments\": {")); mi_free(js);
  CHECK(mi_stats_as_json(&bad, 0, NULL) == NULL);
  CHECK(mi_stats_get_bin_size(1) == sizeof(void*) && mi_stats_get_bin_size(MI_BIN_HUGE + 1) == 0);
  // per-heap figures: counted from the heap's pages
  mi_heap_t* h = mi_heap_new();
  void* ps[N];
  for (int i = 0; i < N; i++) ps[i] = mi_heap_malloc(h, 64);
  mi_stats_t_decl(hs);
  CHECK(mi_heap_stats_get(h, &hs));
  int b = bin_of(64);
  CHECK(b > 0 && hs.malloc_bins[b].current == N && hs.page_bins[b].current == 1);
  CHECK(hs.pages.current == 1 && hs.malloc_normal.current == N * (int64_t)mi_stats_get_bin_size(b));
  for (int i = 0; i < N / 2; i++) mi_free(ps[i]);
  CHECK(mi_heap_stats_get(h, &hs) && hs.malloc_bins[b].current == N / 2);
  js = mi_heap_stats_get_json(h, 0, NULL); CHECK(js && strstr(js, "\"malloc_bins\"")); mi_free(js);
  capture_reset();
  mi_heap_stats_print_out(h, capture, NULL);
  CHECK(strstr(captured, "\"pages\": { \"total\": 1, \"peak\": 1, \"current\": 1 }"));
  mi_heap_stats_merge_to_subproc(h);
  // sub-process statistics: the process's
  mi_subproc_id_t sp = mi_subproc_main();
  mi_stats_t_decl(ss);
  CHECK(mi_subproc_stats_get(sp, &ss) && ss.reserved.current > 0);
  CHECK(mi_subproc_stats_get_exclusive(sp, &ss));
  js = mi_subproc_stats_get_json(sp, 0, NULL); CHECK(js && strstr(js, "\"threads\"")); mi_free(js);
  capture_reset();
  mi_subproc_stats_print_out(sp, capture, NULL);
  CHECK(strstr(captured, "shardalloc statistics") != NULL);
  capture_reset();
  mi_subproc_heap_stats_print_out(sp, capture, NULL);
  CHECK(strstr(captured, "heap 0x") != NULL);
  capture_reset();
  mi_stats_print_out(capture, NULL);
  CHECK(strstr(captured, "reserved") != NULL);
  mi_heap_destroy(h);
  mi_free(big);
}

static bool count_heaps(mi_heap_t* heap, void* arg) { (void)heap; (*(int*)arg)++; return true; }
static bool stop_at_first(mi_heap_t* heap, void* arg) { (void)heap; (*(int*)arg)++; return false; }

// A thread of a new sub-process: its allocations, heaps and main heap are the
// sub-process's; some blocks outlive it, one is freed by the main thread.
struct sp_thread {
  mi_subproc_id_t sp;
  mi_heap_t* main_of_process;
  void* keep[64];                                        // left live at the thread's exit
  void* for_main;                                        // freed by the main thread
  int ready;                                             // set when done checking
  int destroy_refused;                                   // mi_subproc_destroy while we run
};

static int last_error = 0;
static void record_error(int err, void* arg) { (void)arg; last_error = err; }

static void* subproc_thread(void* arg) {
  struct sp_thread* t = arg;
  mi_heap_t* before = mi_heap_new();                     // the thread's default when it moves
  void* b = mi_heap_malloc(before, 40);
  CHECK(b && mi_heap_set_default(before) != NULL);
  mi_subproc_add_current_thread(t->sp);
  CHECK(mi_subproc_current()._mi_subproc_id == t->sp._mi_subproc_id);
  CHECK(mi_heap_get_default() != before && mi_is_in_heap_region(b));
  mi_free(b);
  mi_heap_delete(before);
  mi_heap_t* hm = mi_heap_main();
  CHECK(hm != NULL && hm != t->main_of_process);
  CHECK(mi_heap_malloc(t->main_of_process, 8) == NULL);  // another sub-process's heap
  void* ps[2000];
  for (int i = 0; i < 2000; i++) {
    size_t n = 8 + (size_t)(i * 37) % 3000;
    ps[i] = malloc(n);
    CHECK(ps[i] && mi_heap_of(ps[i]) == hm);
    if (ps[i]) memset(ps[i], i & 0xff, n);
  }
  mi_heap_t* h = mi_heap_new();                          // a heap of the sub-process
  void* q = mi_heap_malloc(h, 100);
  CHECK(q && mi_heap_of(q) == h);
  int count = 0;
  CHECK(mi_subproc_visit_heaps(t->sp, count_heaps, &count) && count >= 2);
  mi_stats_t_decl(st);
  CHECK(mi_subproc_stats_get(t->sp, &st) && st.reserved.current > 0 && st.threads.current == 1);
  for (int i = 0; i < 2000; i++) {
    if (ps[i]) CHECK(((unsigned char*)ps[i])[0] == (i & 0xff));
    if (i < 64) t->keep[i] = ps[i]; else if (i == 64) t->for_main = ps[i]; else free(ps[i]);
  }
  mi_heap_destroy(h);
  // a thread cannot move on to another sub-process (a warning)
  capture_reset();
  mi_subproc_add_current_thread(mi_subproc_main());
  CHECK(strstr(captured, "another sub-process") != NULL);
  CHECK(mi_subproc_current()._mi_subproc_id == t->sp._mi_subproc_id);
  // the main thread tries to destroy the sub-process now: refused
  __atomic_store_n(&t->ready, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&t->destroy_refused, __ATOMIC_ACQUIRE)) sched_yield();
  return NULL;
}

static void case_subprocs(void) {
  mi_subproc_id_t m = mi_subproc_main();
  CHECK(m._mi_subproc_id != NULL && mi_subproc_current()._mi_subproc_id == m._mi_subproc_id);
  mi_subproc_add_current_thread(m);                      // already there: nothing happens
  mi_subproc_destroy(m);                                 // the main one stays
  mi_heap_t* h = mi_heap_new();
  mi_free(mi_heap_malloc(h, 8));                         // this thread's part of it
  int count = 0;
  CHECK(mi_subproc_visit_heaps(m, count_heaps, &count) && count >= 2);
  count = 0;
  CHECK(!mi_subproc_visit_heaps(m, stop_at_first, &count) && count == 1);
  mi_stats_t_decl(st);
  mi_subproc_id_t bogus = { (void*)&count };
  CHECK(!mi_subproc_stats_get(bogus, &st) && !mi_subproc_visit_heaps(bogus, count_heaps, &count));
  mi_heap_delete(h);

  // a real sub-process: a domain of its own
  long show = mi_option_get(mi_option_show_errors);
  mi_option_enable(mi_option_show_errors);              // errors and warnings to `capture`
  mi_register_error(record_error, NULL);
  mi_register_output(capture, NULL);
  mi_subproc_id_t sp = mi_subproc_new();
  CHECK(sp._mi_subproc_id != NULL && sp._mi_subproc_id != m._mi_subproc_id);
  mi_stats_t_decl(s0);
  CHECK(mi_subproc_stats_get(sp, &s0) && s0.reserved.current == 0 && s0.threads.current == 0);
  struct sp_thread t;
  memset(&t, 0, sizeof t);
  t.sp = sp;
  t.main_of_process = mi_heap_main();
  pthread_t th;
  pthread_create(&th, NULL, subproc_thread, &t);
  // destroying it while its thread runs is refused, and loses nothing
  while (!__atomic_load_n(&t.ready, __ATOMIC_ACQUIRE)) sched_yield();
  mi_stats_t_decl(s1);
  CHECK(mi_subproc_stats_get(sp, &s1) && s1.threads.current == 1 && s1.reserved.current > 0);
  capture_reset();
  last_error = 0;
  mi_subproc_destroy(sp);
  CHECK(strstr(captured, "still has 1 running thread") != NULL && last_error == EBUSY);
  CHECK(mi_subproc_stats_get(sp, &st));
  __atomic_store_n(&t.destroy_refused, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  // its blocks outlive the thread, readable and freeable from here
  for (int i = 0; i < 64; i++) CHECK(t.keep[i] && ((unsigned char*)t.keep[i])[0] == (i & 0xff));
  CHECK(t.for_main && mi_is_in_heap_region(t.for_main));
  mi_free(t.for_main);
  mi_heap_t* hm = mi_heap_main();
  CHECK(hm == t.main_of_process);                        // this thread is still in the main one
  CHECK(mi_subproc_stats_get(sp, &st) && st.threads.current == 0 && st.reserved.current > 0);
  // destroy: every block goes, with its memory
  capture_reset();
  mi_subproc_destroy(sp);
  CHECK(captured[0] == 0);
  CHECK(!mi_subproc_stats_get(sp, &st));                 // the id is dead
  for (int i = 0; i < 64; i++) CHECK(!mi_is_in_heap_region(t.keep[i]));
  mi_subproc_add_current_thread(sp);                     // unknown now: an error, no move
  CHECK(strstr(captured, "unknown sub-process") != NULL && last_error == EINVAL);
  CHECK(mi_subproc_current()._mi_subproc_id == m._mi_subproc_id);
  mi_register_output(NULL, NULL);
  mi_register_error(NULL, NULL);
  mi_option_set(mi_option_show_errors, show);
}

// ---------------------------------------------------------------------------------------
// arenas

static void* thread_free(void* p) { mi_free(p); return NULL; }

// Fills heap `h` with blocks of `size` until allocation fails; every block must lie in
// arena `id`. Returns the bytes allocated; the blocks are left to the caller's heap.
static size_t fill_arena(mi_heap_t* h, mi_arena_id_t id, size_t size) {
  size_t total = 0;
  for (;;) {
    errno = 0;
    void* p = mi_heap_malloc(h, size);
    if (p == NULL) { CHECK(errno == ENOMEM); break; }
    CHECK(mi_arena_contains(id, p) && mi_arena_contains(id, (char*)p + size - 1));
    total += size;
  }
  return total;
}

// Threads that allocate from one heap in an arena: each keeps half of its blocks live
// (they outlive the thread) and frees the rest.
struct arena_use {
  mi_heap_t* h;
  mi_arena_id_t id;
  void* kept[4][100];
  int bad;
};
static int arena_seq = 0;

static void* arena_user(void* arg) {
  struct arena_use* u = arg;
  int me = __atomic_fetch_add(&arena_seq, 1, __ATOMIC_RELAXED) % 4;
  for (int i = 0; i < 200; i++) {
    size_t n = (i % 10 == 9) ? 70000 : 16 + (size_t)i * 7;
    unsigned char* p = mi_heap_malloc(u->h, n);
    if (p == NULL || !mi_arena_contains(u->id, p) || mi_heap_of(p) != u->h) { __atomic_fetch_add(&u->bad, 1, __ATOMIC_RELAXED); continue; }
    memset(p, me * 50 + i % 50, n);
    if (i % 2) u->kept[me][i / 2] = p; else mi_free(p);
  }
  return NULL;
}

static void* destroy_heap(void* h) { mi_heap_destroy(h); return NULL; }

static void check_arena(mi_arena_id_t id, void* start, size_t size) {
  size_t sz = 0;
  CHECK(mi_arena_area(id, &sz) == start && sz == size);
  CHECK(mi_arena_contains(id, (char*)start + 5) && !mi_arena_contains(id, (char*)start + size));
  mi_heap_t* h = mi_heap_new_in_arena(id);
  CHECK(h != NULL);
  if (h == NULL) return;
  CHECK(mi_heap_set_default(h) == NULL);                 // an arena heap is never the default
  // blocks of every size class stay inside the arena, and behave as any block
  void* ps[400];
  for (int i = 0; i < 400; i++) {
    size_t n = (i % 4 == 3) ? 100000 + (size_t)i : 8 + (size_t)i * 13;
    ps[i] = mi_heap_malloc(h, n);
    CHECK(ps[i] && mi_arena_contains(id, ps[i]) && mi_heap_of(ps[i]) == h && mi_usable_size(ps[i]) >= n);
    if (ps[i]) memset(ps[i], i & 0xff, n);
  }
  void* huge = mi_heap_malloc(h, 3 << 20);               // its own segment
  CHECK(huge && mi_arena_contains(id, huge));
  void* a = mi_heap_malloc_aligned(h, 1000, 65536); CHECK(a && aligned_to(a, 65536) && mi_arena_contains(id, a));
  ps[0] = mi_heap_realloc(h, ps[0], 50000); CHECK(ps[0] && mi_arena_contains(id, ps[0]));
  // frees from this thread and from another
  for (int i = 0; i < 400; i += 2) mi_free(ps[i]);
  pthread_t th;
  pthread_create(&th, NULL, thread_free, ps[1]);
  pthread_join(th, NULL);
  for (int i = 3; i < 400; i += 2) { CHECK(ps[i] && ((unsigned char*)ps[i])[0] == (i & 0xff)); mi_free(ps[i]); }
  mi_free(huge); mi_free(a);
  mi_heap_collect(h, true);
  // exhaustion gives NULL with ENOMEM; destroy gives it all back
  size_t first = fill_arena(h, id, 256 * 1024);
  CHECK(first >= size / 2);
  mi_heap_destroy(h);
  h = mi_heap_new_in_arena(id);
  CHECK(h != NULL);
  size_t second = fill_arena(h, id, 256 * 1024);
  CHECK(second >= first - first / 10);
  mi_heap_destroy(h);
  // delete keeps the blocks valid (in the arena) until they are freed
  h = mi_heap_new_in_arena(id);
  void* kept[64];
  for (int i = 0; i < 64; i++) { kept[i] = mi_heap_malloc(h, 20000); if (kept[i]) memset(kept[i], 0x5a, 20000); }
  mi_heap_delete(h);
  for (int i = 0; i < 64; i++) {
    CHECK(kept[i] && mi_arena_contains(id, kept[i]) && ((unsigned char*)kept[i])[19999] == 0x5a);
    mi_free(kept[i]);
  }
  mi_collect(true);                                      // frees the deleted heap's segments
  h = mi_heap_new_in_arena(id);
  size_t third = fill_arena(h, id, 256 * 1024);
  CHECK(third >= first - first / 10);
  mi_heap_destroy(h);
  // any thread may allocate from a heap in an arena; its blocks stay in the arena and
  // outlive the threads (a thread's exit takes its part's live blocks out of the heap, so
  // they are freed one by one); then the heap is destroyed by a thread that never used it
  h = mi_heap_new_in_arena(id);
  static struct arena_use u;
  memset(&u, 0, sizeof u);
  u.h = h; u.id = id;
  arena_seq = 0;
  pthread_t ths[4];
  for (int t = 0; t < 4; t++) pthread_create(&ths[t], NULL, arena_user, &u);
  for (int t = 0; t < 4; t++) pthread_join(ths[t], NULL);
  CHECK(u.bad == 0);
  for (int t = 0; t < 4; t++)
    for (int i = 0; i < 100; i++) {
      unsigned char* p = u.kept[t][i];
      CHECK(p && mi_arena_contains(id, p) && p[0] == (unsigned char)(t * 50 + (2 * i + 1) % 50));
      mi_free(p);
    }
  void* mine = mi_heap_malloc(h, 1000);                  // this thread's part too
  CHECK(mine && mi_arena_contains(id, mine) && mi_heap_of(mine) == h);
  pthread_t th2;
  pthread_create(&th2, NULL, destroy_heap, h);           // destroyed by another thread
  pthread_join(th2, NULL);
  mi_collect(true);                                      // our part goes; the threads' blocks too
  h = mi_heap_new_in_arena(id);
  size_t fourth = fill_arena(h, id, 256 * 1024);
  CHECK(fourth >= first - first / 10);
  mi_heap_destroy(h);
}

static void case_arena_caller_memory(void) {
  size_t min = mi_arena_min_size(), align = mi_arena_min_alignment();
  CHECK(min >= align && align >= 4096 && (align & (align - 1)) == 0);
  size_t size = 8 * min;
  char* raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(raw != MAP_FAILED);
  char* start = (char*)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  mi_arena_id_t id = (mi_arena_id_t)1;
  CHECK(!mi_manage_os_memory_ex(start, min / 2, true, false, false, -1, true, &id) && id == NULL); // too small
  CHECK(mi_manage_os_memory_ex(start, size, true, false, false, -1, true, &id) && id != NULL);
  check_arena(id, start, size);
  // unknown ids
  size_t sz = 5;
  int local;
  CHECK(mi_arena_area(&local, &sz) == NULL && sz == 0);
  CHECK(!mi_arena_contains(&local, start));
  errno = 0;
  CHECK(mi_heap_new_in_arena(&local) == NULL && errno == ENOMEM);
  mi_register_output(capture, NULL);
  capture_reset();
  mi_arenas_print();
  mi_debug_show_arenas();
  mi_register_output(NULL, NULL);
  CHECK(strstr(captured, "exclusive") != NULL && strstr(captured, "arenas") != NULL);
}

static int commit_calls = 0;
static bool commit_fun(bool commit, void* start, size_t size, bool* is_zero, void* arg) {
  CHECK(arg == &commit_calls);
  commit_calls++;
  if (is_zero) *is_zero = true;
  return commit && mprotect(start, size, PROT_READ | PROT_WRITE) == 0;
}

static void case_arena_uncommitted(void) {
  size_t size = 2 * mi_arena_min_size(), align = mi_arena_min_alignment();
  // reserved, not accessible: mi_manage_os_memory commits it
  char* raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* start = (char*)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  mi_arena_id_t id = NULL;
  CHECK(mi_manage_os_memory_ex(start, size, false, false, false, -1, true, &id) && id);
  mi_heap_t* h = mi_heap_new_in_arena(id);
  void* p = h ? mi_heap_malloc(h, 1000) : NULL;
  CHECK(p && mi_arena_contains(id, p));
  if (p) memset(p, 1, 1000);
  if (h) mi_heap_destroy(h);
  // through the program's commit function
  raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  start = (char*)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  id = NULL;
  CHECK(mi_manage_memory(start, size, false, false, false, -1, true, commit_fun, &commit_calls, &id) && id);
  CHECK(commit_calls == 1);
  h = mi_heap_new_in_arena(id);
  p = h ? mi_heap_malloc(h, 100000) : NULL;
  CHECK(p && mi_arena_contains(id, p));
  if (h) mi_heap_destroy(h);
}

static void case_arena_reserved(void) {
  mi_arena_id_t id = NULL;
  CHECK(mi_reserve_os_memory_ex(64 << 20, true, false, true, &id) == 0 && id != NULL);
  size_t sz = 0;
  void* start = mi_arena_area(id, &sz);
  CHECK(start && sz >= (64 << 20) && aligned_to(start, mi_arena_min_alignment()));
  check_arena(id, start, sz);
  // the plain form (rounded up to an arena's minimum size)
  CHECK(mi_reserve_os_memory(1 << 20, false, true) == 0);
  errno = 0;
  CHECK(mi_reserve_os_memory_ex(SIZE_MAX - 100, true, false, true, &id) == ENOMEM && id == NULL);
}

// `malloc` takes memory from an arena that is not exclusive before asking the OS (the first
// shared arena of the process; segments cached or abandoned by exited threads are reused
// first, as any segment); when the arena is full, from the OS.
static void* malloc_in_arena(void* arg) {
  mi_arena_id_t id = arg;
  int inside = 0, outside = 0;
  void* ps[64];
  for (int i = 0; i < 64; i++) {                         // 64 x 1 MiB: past the arena
    ps[i] = malloc(1 << 20);
    CHECK(ps[i] != NULL);
    if (ps[i] == NULL) continue;
    memset(ps[i], i, 1 << 20);
    if (mi_arena_contains(id, ps[i])) inside++; else outside++;
  }
  for (int i = 0; i < 64; i++) { CHECK(((unsigned char*)ps[i])[12345] == (unsigned char)i); free(ps[i]); }
  printf("  arena-malloc: %d of 64 blocks of 1 MiB in the 16 MiB arena\n", inside);
  CHECK(inside >= 8 && outside >= 16);
  return NULL;
}

static void case_arena_malloc(void) {
  mi_arena_id_t id = NULL;
  CHECK(mi_reserve_os_memory_ex(16 << 20, true, false, false, &id) == 0 && id != NULL);
  pthread_t th;
  pthread_create(&th, NULL, malloc_in_arena, id);
  pthread_join(th, NULL);
  // an exclusive arena is never used by malloc
  mi_arena_id_t ex = NULL;
  CHECK(mi_reserve_os_memory_ex(16 << 20, true, false, true, &ex) == 0 && ex != NULL);
  for (int i = 0; i < 64; i++) { void* p = malloc(1 << 20); CHECK(p && !mi_arena_contains(ex, p)); free(p); }
}

// With MIMALLOC_RESERVE_OS_MEMORY and MIMALLOC_DISALLOW_OS_ALLOC (set by c_api.rs), the
// arena reserved at start is all `malloc` has: it runs out with NULL/ENOMEM, and what it
// handed out fits in the arena.
static void case_arena_only(void) {
  CHECK(mi_option_is_enabled(mi_option_disallow_os_alloc));
  size_t total = 0;
  void* ps[4096];
  int n = 0;
  for (; n < 4096; n++) {
    errno = 0;
    ps[n] = malloc(64 << 10);
    if (ps[n] == NULL) { CHECK(errno == ENOMEM); break; }
    memset(ps[n], 1, 64 << 10);
    total += 64 << 10;
  }
  size_t reserved = (size_t)mi_option_get_size(mi_option_reserve_os_memory);
  CHECK(n < 4096 && total >= reserved / 2 && total <= reserved);
  for (int i = 0; i < n; i++) free(ps[i]);
  void* p = malloc(64 << 10);                            // memory back: malloc works again
  CHECK(p != NULL);
  free(p);
}

// huge OS pages: granted only if the kernel has 1 GiB pages in its pool
static long free_1g_pages(void) {
  FILE* f = fopen("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "r");
  long n = 0;
  if (f) { if (fscanf(f, "%ld", &n) != 1) n = 0; fclose(f); }
  return n;
}

static void case_huge_os_pages(void) {
  long avail = free_1g_pages();
  mi_arena_id_t id = (mi_arena_id_t)1;
  int err = mi_reserve_huge_os_pages_at_ex(1, 0, 100, true, &id);
  if (avail < 1) {
    CHECK(err == ENOMEM && id == NULL);
    size_t got = 7;
    CHECK(mi_reserve_huge_os_pages(1, 0.1, &got) == ENOMEM && got == 0);
    CHECK(mi_reserve_huge_os_pages_interleave(2, 1, 100) == ENOMEM);
    CHECK(mi_reserve_huge_os_pages_at(1, -1, 100) == ENOMEM);
    printf("huge-os-pages: none granted by the OS (ENOMEM, as expected)\n");
  } else {
    CHECK(err == 0 && id != NULL);
    size_t sz = 0;
    void* start = mi_arena_area(id, &sz);
    CHECK(start && sz == ((size_t)1 << 30));
    mi_heap_t* h = mi_heap_new_in_arena(id);
    void* p = h ? mi_heap_malloc(h, 1000) : NULL;
    CHECK(p && mi_arena_contains(id, p));
    if (h) mi_heap_destroy(h);
    printf("huge-os-pages: 1 GiB page granted and used\n");
  }
  CHECK(mi_reserve_huge_os_pages_at(0, 0, 0) == 0);       // nothing asked, nothing done
}

static void case_misc(void) {
  mi_thread_set_in_threadpool();
  mi_collect_reduce(0);
  capture_reset();
  mi_process_info_print_out(capture, NULL);
  CHECK(strstr(captured, "elapsed") != NULL && strstr(captured, "rss") != NULL);
  mi_register_output(capture, NULL);
  capture_reset();
  mi_process_info_print();
  mi_register_output(NULL, NULL);
  CHECK(strstr(captured, "elapsed") != NULL);
  CHECK(!mi_is_redirected() || mi_is_redirected());     // callable
}

typedef struct { const char* name; void (*fn)(void); int by_default; } test_case;
static const test_case cases[] = {
  {"usable-size-variants", case_usable_size_variants, 1},
  {"heap-queries", case_heap_queries, 1},
  {"unsafe-page-utilization", case_unsafe_page_utilization, 1},
  {"theaps", case_theaps, 1},
  {"options", case_options, 1},
  {"env-options", case_env_options, 0},
  {"large-os-pages", case_large_os_pages, 0},
  {"stats", case_stats, 1},
  {"subprocs", case_subprocs, 1},
  {"arena-malloc", case_arena_malloc, 1},               // before any other shared arena
  {"arena-caller-memory", case_arena_caller_memory, 1},
  {"arena-uncommitted", case_arena_uncommitted, 1},
  {"arena-reserved", case_arena_reserved, 1},
  {"arena-only", case_arena_only, 0},
  {"huge-os-pages", case_huge_os_pages, 1},
  {"misc", case_misc, 1},
};

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int ran = 0;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int selected = argc <= 1 ? cases[i].by_default : 0;
    for (int a = 1; a < argc; a++) if (strcmp(argv[a], cases[i].name) == 0) selected = 1;
    if (!selected) continue;
    current = cases[i].name;
    int before = failures;
    cases[i].fn();
    printf("%-28s %s\n", cases[i].name, failures == before ? "ok" : "FAILED");
    ran++;
  }
  if (ran == 0 || (argc > 1 && ran != argc - 1)) { fprintf(stderr, "unknown test case\n"); return 2; }
  printf("%d cases, %d failed checks\n", ran, failures);
  return failures == 0 ? 0 : 1;
}
