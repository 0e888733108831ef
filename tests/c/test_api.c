// The C API of shardalloc, case by case (in the style of mimalloc's test-api.c).
// Linked against libshardalloc.so, so that malloc & co. are shardalloc's too.
//
//   test_api            runs every case of the default list
//   test_api NAME...    runs the named cases (some need an environment, see c_api.rs)
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <semaphore.h>

#include "shardalloc.h"

extern void cfree(void*);
static volatile size_t size_max = SIZE_MAX;  // hides the constant from the compiler
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
static void fill(void* p, size_t n, unsigned seed) {
  unsigned char* c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}
static int has_fill(const void* p, size_t n, unsigned seed) {
  const unsigned char* c = p;
  for (size_t i = 0; i < n; i++) if (c[i] != (unsigned char)(seed + i * 7)) return 0;
  return 1;
}
static int ours(const void* p) { return mi_is_in_heap_region(p); }

// live blocks of a heap, through mi_heap_visit_blocks (which applies pending frees first)
typedef struct { size_t areas, blocks, bytes; void* find; int found; } visit_t;
static bool visitor(const mi_heap_t* heap, const mi_heap_area_t* area, void* block, size_t bsize, void* arg) {
  (void)heap;
  visit_t* v = arg;
  if (block == NULL) { v->areas++; CHECK(area->block_size == bsize && area->used <= area->committed / bsize); return true; }
  v->blocks++; v->bytes += bsize;
  if (block == v->find) v->found = 1;
  return true;
}
static size_t live_blocks(mi_heap_t* h) {
  visit_t v = {0, 0, 0, NULL, 0};
  CHECK(mi_heap_visit_blocks(h, true, visitor, &v));
  return v.blocks;
}

// the statistics table of mi_stats_print_out, read back: one value of one row
typedef struct { char text[16384]; size_t len; int calls; } capture_t;
static void capture(const char* msg, void* arg) {
  capture_t* c = arg;
  c->calls++;
  size_t n = strlen(msg);
  if (c->len + n < sizeof c->text) { memcpy(c->text + c->len, msg, n + 1); c->len += n; }
}
enum { PEAK = 0, TOTAL = 1, FREED = 2, CURRENT = 3 };
// `row` is "allocated", "reserved", "committed" (bytes, as printed: 1 decimal in the
// largest unit), or "segments", "pages", "threads" (counts); -1 when not found
static double stat_of(const char* text, const char* row, int col) {
  size_t rl = strlen(row);
  for (const char* line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    if (strncmp(line, row, rl) != 0 || line[rl] != ' ') continue;
    const char* q = line + rl;
    double v = -1;
    for (int c = 0; c <= col; c++) {
      char* end;
      v = strtod(q, &end);
      if (end == q) return -1;
      q = end;
      while (*q == ' ') q++;
      if (q[0] == 'B' && q[1] == ' ') { q += 1; }
      else if (strncmp(q, "KiB", 3) == 0) { v *= 1024.0; q += 3; }
      else if (strncmp(q, "MiB", 3) == 0) { v *= 1048576.0; q += 3; }
      else if (strncmp(q, "GiB", 3) == 0) { v *= 1073741824.0; q += 3; }
      else if (q[0] == 'B') { q += 1; }
    }
    return v;
  }
  return -1;
}
static double stat_now(const char* row, int col) {
  static capture_t c;
  c.len = 0; c.calls = 0; c.text[0] = 0;
  mi_stats_print_out(capture, &c);
  double v = stat_of(c.text, row, col);
  CHECK(v >= 0);
  return v;
}
static size_t committed_now(void) {
  size_t commit = 0;
  mi_process_info(NULL, NULL, NULL, NULL, NULL, &commit, NULL, NULL);
  return commit;
}

// ---------------------------------------------------------------------------------------
// malloc family

static void malloc_zero(void) {
  void* p = malloc(0);
  void* q = malloc(0);
  CHECK(p != NULL && q != NULL && p != q);
  CHECK(ours(p));
  free(p); free(q);
}
static void malloc_nomem(void) {
  errno = 0;
  CHECK(malloc(SIZE_MAX) == NULL); CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(malloc(PTRDIFF_MAX) == NULL); CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(malloc((size_t)1 << 62) == NULL); CHECK(errno == ENOMEM);
}
static void malloc_sizes(void) {
  // every size up to 4 KiB, then powers of two and neighbours up to 64 MiB
  for (size_t n = 1; n <= 4096; n++) {
    unsigned char* p = malloc(n);
    CHECK(p != NULL);
    CHECK(malloc_usable_size(p) >= n);
    if (n % 16 == 0) CHECK(aligned_to(p, 16));
    CHECK(aligned_to(p, n >= 8 ? 8 : 1));
    // 64-bit targets: every block above 8 bytes is 16-byte aligned, as glibc's and
    // mimalloc's (the tiny classes step by 16 bytes), the next block of the size too
    if (sizeof(void*) == 8 && n > 8) {
      void* q = malloc(n);
      CHECK(aligned_to(p, 16) && q != NULL && aligned_to(q, 16));
      free(q);
    }
    p[0] = 1; p[n - 1] = 2;
    free(p);
  }
  for (size_t n = 8192; n <= ((size_t)64 << 20); n *= 2) {
    for (int d = -1; d <= 1; d++) {
      size_t m = n + d;
      unsigned char* p = malloc(m);
      CHECK(p != NULL && malloc_usable_size(p) >= m);
      p[0] = 1; p[m - 1] = 2;
      free(p);
    }
  }
}
static void malloc_usable(void) {
  CHECK(malloc_usable_size(NULL) == 0);
  int local;
  CHECK(malloc_usable_size(&local) == 0);
}
static void calloc_overflow(void) {
  errno = 0;
  CHECK(calloc(SIZE_MAX / 2, 3) == NULL); CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(calloc(3, SIZE_MAX / 2) == NULL); CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(calloc((size_t)1 << 32, (size_t)1 << 32) == NULL); CHECK(errno == ENOMEM);
  void* p = calloc(0, 0);
  CHECK(p != NULL); free(p);
  p = calloc(0, 1000); CHECK(p != NULL); free(p);
}
static void calloc_zeroes_reused(void) {
  // dirty blocks, free them, calloc the same sizes: always zero
  size_t sizes[] = {8, 24, 100, 1000, 5000, 40000, 300000, 3000000};
  for (int r = 0; r < 3; r++) {
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
      void* ps[64];
      for (int k = 0; k < 64; k++) { ps[k] = malloc(sizes[i]); memset(ps[k], 0xAB, malloc_usable_size(ps[k])); }
      for (int k = 0; k < 64; k++) free(ps[k]);
      for (int k = 0; k < 64; k++) { ps[k] = calloc(1, sizes[i]); CHECK(ps[k] && all_zero(ps[k], sizes[i])); }
      for (int k = 0; k < 64; k++) free(ps[k]);
    }
  }
}
static void realloc_null_and_zero(void) {
  void* p = realloc(NULL, 10);
  CHECK(p != NULL && ours(p));
  errno = 0;
  void* q = realloc(p, 0);          // glibc: frees p, returns NULL
  CHECK(q == NULL);
  CHECK(errno == 0);
  p = realloc(NULL, 0);             // = malloc(0)
  CHECK(p != NULL); free(p);
}
static void realloc_contents(void) {
  size_t n = 1;
  unsigned char* p = malloc(n);
  fill(p, n, 3);
  while (n < ((size_t)16 << 20)) {          // grow through every class to huge
    size_t m = n * 3 / 2 + 1;
    p = realloc(p, m);
    CHECK(p != NULL && has_fill(p, n, 3));
    fill(p, m, 3);
    n = m;
  }
  while (n > 1) {                           // and shrink back
    size_t m = n / 3;
    if (m == 0) m = 1;
    p = realloc(p, m);
    CHECK(p != NULL && has_fill(p, m, 3));
    n = m;
  }
  free(p);
}
static void realloc_nomem_keeps_block(void) {
  char* p = malloc(100);
  fill(p, 100, 9);
  errno = 0;
  CHECK(realloc(p, SIZE_MAX) == NULL); CHECK(errno == ENOMEM);
  CHECK(has_fill(p, 100, 9));
  errno = 0;
  CHECK(reallocarray(p, SIZE_MAX / 2, 3) == NULL); CHECK(errno == ENOMEM);
  CHECK(has_fill(p, 100, 9));
  p = reallocarray(p, 50, 4);
  CHECK(p != NULL && has_fill(p, 100, 9));
  free(p);
}
static void posix_memalign_cases(void) {
  void* p = (void*)1;
  errno = 1234;
  CHECK(posix_memalign(&p, 0, 10) == EINVAL);
  CHECK(posix_memalign(&p, 3, 10) == EINVAL);
  CHECK(posix_memalign(&p, sizeof(void*) / 2, 10) == EINVAL);
  CHECK(posix_memalign(&p, 24, 10) == EINVAL);
  void** volatile null_out = NULL;
  CHECK(posix_memalign(null_out, 16, 10) == EINVAL);
  CHECK(p == (void*)1);        // untouched on error
  CHECK(errno == 1234);        // errno untouched
  CHECK(posix_memalign(&p, 16, SIZE_MAX) == ENOMEM);
  for (size_t a = sizeof(void*); a <= ((size_t)4 << 20); a *= 2) {
    size_t sizes[] = {0, 1, a - 1, a, a + 1, 3 * a + 5};
    for (int i = 0; i < 6; i++) {
      p = NULL;
      CHECK(posix_memalign(&p, a, sizes[i]) == 0);
      CHECK(p != NULL && aligned_to(p, a) && malloc_usable_size(p) >= sizes[i]);
      if (sizes[i]) { memset(p, 0x5a, sizes[i]); }
      free(p);
    }
  }
}
static void aligned_alloc_cases(void) {
  errno = 0;
  CHECK(aligned_alloc(3, 10) == NULL); CHECK(errno == EINVAL);
  errno = 0;
  CHECK(aligned_alloc(0, 10) == NULL); CHECK(errno == EINVAL);
  errno = 0;
  CHECK(aligned_alloc(48, 96) == NULL); CHECK(errno == EINVAL);
  errno = 0;
  CHECK(aligned_alloc(64, SIZE_MAX) == NULL); CHECK(errno == ENOMEM);
  for (size_t a = 1; a <= ((size_t)4 << 20); a *= 2) {
    void* p = aligned_alloc(a, a * 2);
    CHECK(p != NULL && aligned_to(p, a));
    memset(p, 1, a * 2);
    free(p);
  }
}
static void memalign_valloc_cases(void) {
  for (size_t a = 1; a <= ((size_t)4 << 20); a *= 2) {
    void* p = memalign(a, 100);
    CHECK(p != NULL && aligned_to(p, a));
    free(p);
  }
  void* p = memalign(24, 100);       // glibc rounds up to 32
  CHECK(p != NULL && aligned_to(p, 32)); free(p);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  p = valloc(10); CHECK(p && aligned_to(p, page)); free(p);
  p = pvalloc(10); CHECK(p && aligned_to(p, page) && malloc_usable_size(p) >= page); free(p);
  p = pvalloc(0); CHECK(p && aligned_to(p, page)); free(p);
  errno = 0;
  CHECK(pvalloc(SIZE_MAX) == NULL); CHECK(errno == ENOMEM);
}
static void free_foreign(void) {
  // pointers shardalloc never handed out are ignored, not a crash
  int local;
  free(&local);
  static char global_buf[64];
  free(global_buf + 8);
  free(NULL);
  cfree(NULL);
  char* p = malloc(100);
  CHECK(p != NULL);
  free(p);
}
static void libc_names(void) {
  extern void* __libc_malloc(size_t); extern void __libc_free(void*);
  extern void* __libc_calloc(size_t, size_t); extern void* __libc_realloc(void*, size_t);
  extern void* __libc_memalign(size_t, size_t);
  void* p = __libc_malloc(10); CHECK(p && ours(p));
  p = __libc_realloc(p, 1000); CHECK(p && ours(p));
  __libc_free(p);
  p = __libc_calloc(10, 10); CHECK(p && ours(p) && all_zero(p, 100)); __libc_free(p);
  p = __libc_memalign(4096, 10); CHECK(p && ours(p) && aligned_to(p, 4096)); __libc_free(p);
  p = strdup("hello"); CHECK(p && ours(p)); free(p);   // libc allocates through us
}
static void many_live_blocks(void) {
  enum { N = 100000 };
  void** ps = malloc(N * sizeof(void*));
  for (int i = 0; i < N; i++) { ps[i] = malloc(1 + i % 300); fill(ps[i], 1 + i % 300, i); }
  for (int i = 0; i < N; i++) { CHECK(has_fill(ps[i], 1 + i % 300, i)); }
  for (int i = 0; i < N; i += 2) free(ps[i]);
  for (int i = 0; i < N; i += 2) { ps[i] = malloc(1 + i % 300); fill(ps[i], 1 + i % 300, i); }
  for (int i = 0; i < N; i++) { CHECK(has_fill(ps[i], 1 + i % 300, i)); free(ps[i]); }
  free(ps);
}

static void* free_on_thread(void* p) { mi_free(p); return NULL; }

// ---------------------------------------------------------------------------------------
// mi_* basic

static void mi_basic(void) {
  void* p = mi_malloc(0); CHECK(p != NULL); mi_free(p);
  p = mi_malloc_small(8); CHECK(p != NULL); mi_free(p);
  p = mi_zalloc_small(64); CHECK(p && all_zero(p, 64)); mi_free(p);
  p = mi_zalloc(5000); CHECK(p && all_zero(p, mi_usable_size(p))); mi_free(p);
  errno = 0;
  CHECK(mi_mallocn(SIZE_MAX / 4, 8) == NULL); CHECK(errno == ENOMEM);
  p = mi_mallocn(10, 10); CHECK(p && mi_usable_size(p) >= 100);
  p = mi_reallocn(p, 20, 20); CHECK(p && mi_usable_size(p) >= 400);
  CHECK(mi_reallocn(p, SIZE_MAX / 2, 4) == NULL);
  mi_free(p);
  p = mi_realloc(NULL, 0); CHECK(p != NULL);
  p = mi_realloc(p, 0); CHECK(p != NULL);             // mimalloc: a small block, not freed
  mi_free(p);
  p = mi_reallocf(NULL, 10); CHECK(p != NULL);
  errno = 0;
  CHECK(mi_reallocf(p, SIZE_MAX) == NULL); CHECK(errno == ENOMEM);   // and p is freed
  CHECK(mi_usable_size(NULL) == 0);
  // SIZE_MAX everywhere: NULL with ENOMEM, never a crash or a tiny block
  void* q = mi_malloc(16);
  errno = 0; CHECK(mi_malloc(size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_zalloc(size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_calloc(1, size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_malloc_aligned(size_max, 64) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_zalloc_aligned_at(size_max - 8, 64, 8) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_realloc(q, size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_rezalloc(q, size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_realloc_aligned(q, size_max, 32) == NULL && errno == ENOMEM);
  CHECK(mi_usable_size(q) >= 16);              // q survived every failure
  mi_free(q);
  for (size_t n = 0; n < 100000; n = n * 2 + 1) CHECK(mi_good_size(n) >= n);
  CHECK(mi_good_size(10000000) >= 10000000);
  p = mi_malloc(100);
  CHECK(mi_expand(p, 10) == p);
  CHECK(mi_expand(p, mi_usable_size(p)) == p);
  CHECK(mi_expand(p, 100000) == NULL);
  mi_free(p);
  CHECK(mi_malloc_size(NULL) == 0 && mi_malloc_usable_size(NULL) == 0);
}
static void mi_strings(void) {
  char* s = mi_strdup("shardalloc"); CHECK(s && strcmp(s, "shardalloc") == 0); mi_free(s);
  s = mi_strndup("shardalloc", 5); CHECK(s && strcmp(s, "shard") == 0); mi_free(s);
  s = mi_strndup("ab", 100); CHECK(s && strcmp(s, "ab") == 0); mi_free(s);
  CHECK(mi_strdup(NULL) == NULL);
  s = mi_realpath(".", NULL);
  char buf[PATH_MAX];
  CHECK(s && getcwd(buf, sizeof buf) && strcmp(s, buf) == 0);
  mi_free(s);
  CHECK(mi_realpath("/definitely/not/here", NULL) == NULL);
  char out[PATH_MAX];
  // (declared malloc-like, so the compiler assumes the result is not `out`: compare text)
  char* r = mi_realpath("/", out);
  CHECK(r != NULL && strcmp(out, "/") == 0);
}
static void mi_aligned(void) {
  for (size_t a = 1; a <= ((size_t)4 << 20); a *= 2) {
    void* p = mi_malloc_aligned(a + 3, a);
    CHECK(p && aligned_to(p, a) && mi_usable_size(p) >= a + 3);
    memset(p, 0x11, a + 3);
    mi_free(p);
    p = mi_zalloc_aligned(2 * a, a); CHECK(p && aligned_to(p, a) && all_zero(p, 2 * a)); mi_free(p);
    p = mi_calloc_aligned(3, a, a); CHECK(p && aligned_to(p, a) && all_zero(p, 3 * a)); mi_free(p);
  }
  errno = 0;
  CHECK(mi_malloc_aligned(10, 3) == NULL); CHECK(errno == EINVAL);
  CHECK(mi_malloc_aligned(10, 0) == NULL);
  CHECK(mi_calloc_aligned(SIZE_MAX / 2, 4, 16) == NULL);
  // _at: p + offset aligned
  size_t offs[] = {0, 1, 8, 15, 16, 100, 4095};
  for (size_t a = 8; a <= ((size_t)1 << 20); a *= 4) {
    for (int i = 0; i < 7; i++) {
      unsigned char* p = mi_malloc_aligned_at(200, a, offs[i]);
      CHECK(p && aligned_to(p + offs[i], a) && mi_usable_size(p) >= 200);
      memset(p, 7, 200);
      CHECK(mi_is_in_heap_region(p));
      mi_free(p);
      p = mi_zalloc_aligned_at(300, a, offs[i]);
      CHECK(p && aligned_to(p + offs[i], a) && all_zero(p, 300));
      mi_free(p);
      p = mi_calloc_aligned_at(10, 30, a, offs[i]);
      CHECK(p && aligned_to(p + offs[i], a) && all_zero(p, 300));
      p = mi_realloc_aligned_at(p, 5000, a, offs[i]);
      CHECK(p && aligned_to(p + offs[i], a) && all_zero(p, 300));
      mi_free(p);
    }
  }
  // offsets with huge blocks: fine below a segment size (4 MiB) of alignment, refused
  // (EINVAL) from there on, as mimalloc refuses them for its largest alignments
  for (size_t a = 64; a <= ((size_t)2 << 20); a *= 8) {
    unsigned char* p = mi_malloc_aligned_at((size_t)5 << 20, a, 24);
    CHECK(p && aligned_to(p + 24, a) && mi_usable_size(p) >= ((size_t)5 << 20) && mi_is_in_heap_region(p));
    p[((size_t)5 << 20) - 1] = 1;
    p = mi_realloc_aligned_at(p, (size_t)9 << 20, a, 24);
    CHECK(p && aligned_to(p + 24, a) && p[((size_t)5 << 20) - 1] == 1);
    mi_free(p);
  }
  errno = 0;
  CHECK(mi_malloc_aligned_at((size_t)5 << 20, (size_t)8 << 20, 24) == NULL && errno == EINVAL);
  CHECK(mi_malloc_aligned_at(100, (size_t)4 << 20, 8) == NULL);
  void* big_ok = mi_malloc_aligned_at(100, (size_t)8 << 20, (size_t)16 << 20);   // offset a multiple
  CHECK(big_ok && aligned_to(big_ok, (size_t)8 << 20)); mi_free(big_ok);
  // realloc_aligned keeps contents and alignment
  unsigned char* p = mi_malloc_aligned(100, 64);
  fill(p, 100, 1);
  for (size_t n = 200; n < 3000000; n *= 3) {
    p = mi_realloc_aligned(p, n, 64);
    CHECK(p && aligned_to(p, 64) && has_fill(p, 100, 1));
  }
  mi_free(p);
  // free of an aligned interior pointer by another thread (a remote free: onto the
  // page's thread_free list, after finding the block the pointer is inside)
  mi_heap_t* h = mi_heap_new();
  unsigned char* keep = mi_heap_malloc_aligned_at(h, 100, 256, 3);
  p = mi_heap_malloc_aligned_at(h, 100, 256, 3);
  CHECK(keep && p && aligned_to(p + 3, 256) && aligned_to(keep + 3, 256));
  CHECK(mi_heap_contains_block(h, p) && !mi_heap_check_owned(h, p));   // inside a block
  memset(keep, 0x33, 100);
  memset(p, 0x44, 100);
  CHECK(live_blocks(h) == 2);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, free_on_thread, p) == 0);
  pthread_join(t, NULL);
  visit_t v = {0, 0, 0, NULL, 0};
  CHECK(mi_heap_visit_blocks(h, true, visitor, &v));
  CHECK(v.blocks == 1);                    // the other thread's free reached the block
  size_t bsize = v.bytes;                  // the page's block size
  // the freed block comes back whole, as a block start: whole blocks of the page
  // allocated now (the freed one among them) do not overlap each other or `keep`
  unsigned char* again[64];
  for (int i = 0; i < 64; i++) {
    again[i] = mi_heap_malloc(h, bsize);
    CHECK(again[i] && mi_heap_check_owned(h, again[i]));
    memset(again[i], i, bsize);
  }
  int overlap = 0;
  for (int i = 0; i < 64; i++) for (size_t k = 0; k < bsize; k++) if (again[i][k] != i) overlap = 1;
  for (int k = 0; k < 100; k++) if (keep[k] != 0x33) overlap = 1;
  CHECK(!overlap);
  for (int i = 0; i < 64; i++) mi_free(again[i]);
  mi_free(keep);
  CHECK(live_blocks(h) == 0);
  mi_heap_delete(h);
}
static void mi_zero_realloc(void) {
  unsigned char* p = mi_zalloc(10);
  CHECK(p && all_zero(p, 10));
  for (size_t n = 20; n < 5000000; n = n * 2 + 7) {
    memset(p, 0, 10);                       // keep a known prefix
    p[0] = 0x42;
    p = mi_rezalloc(p, n);
    CHECK(p && p[0] == 0x42 && all_zero(p + 1, n - 1));
    p[0] = 0;
  }
  mi_free(p);
  p = mi_calloc(4, 4);
  p = mi_recalloc(p, 100, 40);
  CHECK(p && all_zero(p, 4000));
  CHECK(mi_recalloc(p, SIZE_MAX / 2, 4) == NULL);
  p = mi_recalloc(p, 1, 16);                // shrink
  CHECK(p && all_zero(p, 16));
  mi_free(p);
  p = mi_zalloc_aligned(100, 128);
  p = mi_rezalloc_aligned(p, 100000, 128);
  CHECK(p && aligned_to(p, 128) && all_zero(p, 100000));
  p = mi_recalloc_aligned(p, 2, 200000, 128);
  CHECK(p && aligned_to(p, 128) && all_zero(p, 400000));
  mi_free(p);
  p = mi_rezalloc_aligned_at(NULL, 1000, 64, 8);
  CHECK(p && aligned_to(p + 8, 64) && all_zero(p, 1000));
  p = mi_recalloc_aligned_at(p, 10, 1000, 64, 8);
  CHECK(p && aligned_to(p + 8, 64) && all_zero(p, 10000));
  mi_free(p);
}
static void mi_posix(void) {
  void* p = NULL;
  CHECK(mi_posix_memalign(&p, 64, 100) == 0 && aligned_to(p, 64)); mi_free(p);
  CHECK(mi_posix_memalign(&p, 12, 100) == EINVAL);
  p = mi_memalign(128, 10); CHECK(p && aligned_to(p, 128)); mi_free(p);
  CHECK(mi_memalign(100, 10) == NULL);
  p = mi_valloc(10); CHECK(p && aligned_to(p, 4096)); mi_free(p);
  p = mi_pvalloc(10); CHECK(p && aligned_to(p, 4096) && mi_usable_size(p) >= 4096); mi_free(p);
  p = mi_aligned_alloc(256, 512); CHECK(p && aligned_to(p, 256)); mi_free(p);
  CHECK(mi_aligned_alloc(7, 512) == NULL);
  errno = 0;
  CHECK(mi_reallocarray(NULL, SIZE_MAX / 2, 3) == NULL); CHECK(errno == EOVERFLOW);
  p = mi_reallocarray(NULL, 10, 10); CHECK(p && mi_usable_size(p) >= 100);
  CHECK(mi_reallocarr(&p, 100, 10) == 0 && mi_usable_size(p) >= 1000);
  void* keep = p;
  CHECK(mi_reallocarr(&p, SIZE_MAX / 2, 3) == EOVERFLOW && p == keep);
  CHECK(mi_reallocarr(NULL, 1, 1) == EINVAL);
  mi_free(p);
  int local;
  mi_cfree(&local);                          // not ours: ignored
  mi_cfree(mi_malloc(10));
  p = mi_new(10); CHECK(p); mi_free(p);
  p = mi_new_aligned(10, 1024); CHECK(p && aligned_to(p, 1024)); mi_free(p);
  CHECK(mi_new_nothrow(SIZE_MAX) == NULL);
  CHECK(mi_new_aligned_nothrow(SIZE_MAX, 64) == NULL);
  p = mi_new_n(10, 10); CHECK(p);
  p = mi_new_realloc(p, 1000); CHECK(p);
  p = mi_new_reallocn(p, 100, 100); CHECK(p && mi_usable_size(p) >= 10000); mi_free(p);
  wchar_t w[] = {L'a', L'b', 0};
  wchar_t* wd = mi_wcsdup(w); CHECK(wd && wd[0] == 'a' && wd[2] == 0); mi_free(wd);
  char* e = NULL; size_t esz = 0;
  setenv("SHARDALLOC_TEST_VAR", "xyz", 1);
  CHECK(mi_dupenv_s(&e, &esz, "SHARDALLOC_TEST_VAR") == 0 && e && strcmp(e, "xyz") == 0 && esz == 4);
  mi_free(e);
  CHECK(mi_dupenv_s(&e, &esz, "SHARDALLOC_NOT_SET_VAR") == 0 && e == NULL);
  // the sized and aligned frees free: the heap's live blocks go down one by one
  mi_heap_t* h = mi_heap_new();
  void* a = mi_heap_malloc(h, 10);
  void* b = mi_heap_malloc(h, 10);
  void* c = mi_heap_malloc_aligned(h, 10, 64);
  void* d = mi_heap_malloc_aligned(h, 10, 64);
  void* f = mi_heap_malloc_aligned_at(h, 10, 64, 8);
  CHECK(a && b && c && d && f && aligned_to(c, 64) && aligned_to(d, 64));
  CHECK(live_blocks(h) == 5);
  mi_free_size(a, 10);
  CHECK(live_blocks(h) == 4);
  mi_free_aligned(c, 64);
  CHECK(live_blocks(h) == 3);
  mi_free_size_aligned(d, 10, 64);
  CHECK(live_blocks(h) == 2);
  mi_free_size_aligned(f, 10, 64);           // an interior pointer (offset 8)
  CHECK(live_blocks(h) == 1);
  mi_free_size(b, 10);
  CHECK(live_blocks(h) == 0);
  mi_heap_delete(h);
}

// ---------------------------------------------------------------------------------------
// heaps

static void heap_basics(void) {
  mi_heap_t* h = mi_heap_new();
  CHECK(h != NULL);
  void* ps[1000];
  for (int i = 0; i < 1000; i++) { ps[i] = mi_heap_malloc(h, 16 + (i % 50) * 8); CHECK(ps[i]); }
  void* other = mi_malloc(32);
  CHECK(mi_heap_contains_block(h, ps[0]) && mi_heap_contains_block(h, ps[999]));
  CHECK(!mi_heap_contains_block(h, other));
  // check_owned: true for the start of a block of the heap, false for a pointer inside one
  CHECK(mi_heap_check_owned(h, ps[10]) && mi_heap_check_owned(h, ps[999]));
  CHECK(!mi_heap_check_owned(h, (char*)ps[10] + 8));
  CHECK(!mi_heap_check_owned(h, (char*)ps[10] + mi_usable_size(ps[10]) - 8));
  CHECK(!mi_heap_check_owned(h, (char*)ps[999] + 16));
  CHECK(mi_heap_contains_block(h, (char*)ps[10] + 8));        // (but contains_block is)
  CHECK(mi_check_owned(other) && mi_check_owned((char*)other + 8));   // v3: any heap, any interior pointer
  CHECK(!mi_heap_check_owned(h, other));
  CHECK(mi_check_owned(other) && mi_check_owned(ps[0]));
  int local;
  CHECK(!mi_heap_contains_block(h, &local) && !mi_check_owned(&local));
  visit_t v = {0, 0, 0, ps[500], 0};
  CHECK(mi_heap_visit_blocks(h, true, visitor, &v));
  CHECK(v.blocks == 1000 && v.found && v.areas >= 1);
  for (int i = 0; i < 1000; i += 2) mi_free(ps[i]);
  visit_t v2 = {0, 0, 0, ps[0], 0};
  CHECK(mi_heap_visit_blocks(h, true, visitor, &v2));
  CHECK(v2.blocks == 500 && !v2.found);
  // the rest of the heap API
  void* z = mi_heap_zalloc(h, 100); CHECK(z && all_zero(z, 100));
  void* c = mi_heap_calloc(h, 10, 10); CHECK(c && all_zero(c, 100));
  CHECK(mi_heap_calloc(h, SIZE_MAX / 2, 4) == NULL);
  CHECK(mi_heap_mallocn(h, SIZE_MAX / 2, 4) == NULL);
  void* r = mi_heap_malloc_small(h, 8); r = mi_heap_realloc(h, r, 3000); CHECK(r && mi_heap_contains_block(h, r));
  r = mi_heap_reallocn(h, r, 10, 1000); CHECK(r && mi_heap_contains_block(h, r));
  r = mi_heap_reallocf(h, r, 50); CHECK(r);
  char* s = mi_heap_strdup(h, "abc"); CHECK(s && !strcmp(s, "abc") && mi_heap_contains_block(h, s));
  s = mi_heap_strndup(h, "abcdef", 2); CHECK(s && !strcmp(s, "ab"));
  s = mi_heap_realpath(h, "/", NULL); CHECK(s && !strcmp(s, "/") && mi_heap_contains_block(h, s));
  void* a = mi_heap_malloc_aligned(h, 100, 4096); CHECK(a && aligned_to(a, 4096) && mi_heap_contains_block(h, a));
  a = mi_heap_malloc_aligned_at(h, 100, 256, 16); CHECK(a && aligned_to((char*)a + 16, 256));
  a = mi_heap_zalloc_aligned(h, 100, 64); CHECK(a && all_zero(a, 100));
  a = mi_heap_zalloc_aligned_at(h, 100, 64, 8); CHECK(a && all_zero(a, 100) && aligned_to((char*)a + 8, 64));
  a = mi_heap_calloc_aligned(h, 5, 20, 32); CHECK(a && all_zero(a, 100));
  a = mi_heap_calloc_aligned_at(h, 5, 20, 32, 4); CHECK(a && all_zero(a, 100));
  a = mi_heap_realloc_aligned(h, a, 1000, 128); CHECK(a && aligned_to(a, 128));
  a = mi_heap_realloc_aligned_at(h, a, 2000, 128, 8); CHECK(a && aligned_to((char*)a + 8, 128));
  a = mi_heap_rezalloc(h, NULL, 100); CHECK(a && all_zero(a, 100));
  a = mi_heap_recalloc(h, a, 10, 100); CHECK(a && all_zero(a, 1000));
  a = mi_heap_rezalloc_aligned(h, a, 2000, 64); CHECK(a && all_zero(a, 2000));
  a = mi_heap_rezalloc_aligned_at(h, a, 3000, 64, 8); CHECK(a && all_zero(a, 3000));
  a = mi_heap_recalloc_aligned(h, a, 2, 2000, 64); CHECK(a && all_zero(a, 4000));
  a = mi_heap_recalloc_aligned_at(h, a, 2, 3000, 64, 8); CHECK(a && all_zero(a, 6000));
  a = mi_heap_alloc_new(h, 10); CHECK(a);
  a = mi_heap_alloc_new_n(h, 10, 10); CHECK(a);
  errno = 0; CHECK(mi_heap_malloc(h, size_max) == NULL && errno == ENOMEM);
  errno = 0; CHECK(mi_heap_zalloc_aligned(h, size_max, 16) == NULL && errno == ENOMEM);
  mi_heap_collect(h, true);
  mi_heap_destroy(h);                        // frees everything at once
  mi_free(other);
}
static void heap_delete_keeps_blocks(void) {
  mi_heap_t* h = mi_heap_new();
  char* ps[500];
  for (int i = 0; i < 500; i++) { ps[i] = mi_heap_malloc(h, 100 + i); fill(ps[i], 100 + i, i); }
  mi_heap_delete(h);                         // blocks move to the backing heap
  for (int i = 0; i < 500; i++) { CHECK(has_fill(ps[i], 100 + i, i)); CHECK(mi_heap_contains_block(mi_heap_get_backing(), ps[i])); }
  for (int i = 0; i < 500; i++) free(ps[i]);
}
static void heap_destroy_frees(void) {
  mi_collect(true);
  size_t reserved0 = shardalloc_reserved(), committed0 = committed_now();
  double pages0 = stat_now("pages", CURRENT);
  mi_heap_t* h = mi_heap_new();
  for (int i = 0; i < 2000; i++) CHECK(mi_heap_malloc(h, 4000) != NULL);   // ~8 MiB, never freed
  void* big = mi_heap_malloc(h, 10 << 20);
  CHECK(big && mi_heap_contains_block(h, big));
  double pages1 = stat_now("pages", CURRENT);
  size_t reserved1 = shardalloc_reserved(), committed1 = committed_now();
  CHECK(pages1 >= pages0 + 100);             // 2000 blocks of 4000 bytes: over 100 pages
  CHECK(reserved1 >= reserved0 + ((size_t)16 << 20) && committed1 >= committed0 + ((size_t)16 << 20));
  mi_heap_destroy(h);
  mi_collect(true);
  double pages2 = stat_now("pages", CURRENT);
  size_t reserved2 = shardalloc_reserved(), committed2 = committed_now();
  // every page of the heap went back: a leak of its pages (8 MiB) fails each bound
  CHECK(pages2 <= pages0);
  CHECK(reserved2 <= reserved0 + ((size_t)1 << 20));
  CHECK(committed2 <= committed0 + ((size_t)1 << 20));
  CHECK(!mi_is_in_heap_region(big));        // its huge segment went back to the OS
}
static void heap_default(void) {
  mi_heap_t* backing = mi_heap_get_backing();
  CHECK(backing != NULL && mi_heap_get_default() == backing);
  mi_heap_t* h = mi_heap_new();
  CHECK(mi_heap_set_default(h) == backing);
  CHECK(mi_heap_get_default() == h && mi_heap_get_backing() == backing);
  void* p = malloc(40);
  CHECK(mi_heap_contains_block(h, p));
  mi_heap_delete(h);                          // default falls back to the backing heap
  CHECK(mi_heap_get_default() == backing);
  CHECK(mi_heap_contains_block(backing, p));
  free(p);
  mi_heap_delete(backing);                    // no-op
  mi_heap_destroy(backing);                   // no-op
  p = malloc(10); CHECK(p && mi_heap_contains_block(backing, p)); free(p);
  CHECK(mi_heap_set_default(NULL) == NULL);
}
// mimalloc v3: a heap is allocated from by any thread (each through its own part), blocks
// are freed across threads, and any thread may delete or destroy it
enum { SHARED_THREADS = 4, SHARED_BLOCKS = 2000 };
static void* shared_blocks[SHARED_THREADS][SHARED_BLOCKS];
static void* heap_other_thread(void* arg) {
  mi_heap_t* h = arg;
  static int next = 0;
  int me = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % SHARED_THREADS;
  for (int i = 0; i < SHARED_BLOCKS; i++) {
    char* p = mi_heap_malloc(h, 16 + (i % 300));
    CHECK(p != NULL && mi_heap_contains_block(h, p) && mi_heap_check_owned(h, p));
    if (p) memset(p, me + 1, 16);
    shared_blocks[me][i] = p;
  }
  return NULL;
}
static void* heap_deleter(void* arg) {
  mi_heap_delete((mi_heap_t*)arg);         // from a thread that never used the heap
  return NULL;
}
static void* heap_destroyer(void* arg) {
  mi_heap_destroy((mi_heap_t*)arg);        // from a thread that never used the heap
  return NULL;
}
static void heap_foreign_thread(void) {
  mi_heap_t* h = mi_heap_new();
  CHECK(h != NULL);
  void* mine = mi_heap_malloc(h, 100);     // this thread's part
  CHECK(mine && mi_heap_contains_block(h, mine));
  pthread_t t[SHARED_THREADS];
  for (int i = 0; i < SHARED_THREADS; i++) pthread_create(&t[i], NULL, heap_other_thread, h);
  for (int i = 0; i < SHARED_THREADS; i++) pthread_join(t[i], NULL);
  // the threads exited: their blocks stayed valid (and left the heap, as with delete)
  int intact = 1;
  for (int i = 0; i < SHARED_THREADS; i++)
    for (int j = 0; j < SHARED_BLOCKS; j++) {
      unsigned char* p = shared_blocks[i][j];
      intact &= p != NULL && p[0] >= 1 && p[0] <= SHARED_THREADS && p[15] == p[0];
      mi_free(p);
    }
  CHECK(intact);
  // threads that live on: allocate from the heap, then another thread destroys it
  pthread_t a;
  pthread_create(&a, NULL, heap_other_thread, h);
  pthread_join(a, NULL);
  for (int j = 0; j < SHARED_BLOCKS; j++) mi_free(shared_blocks[0][j]);
  mi_stats_merge();
  double pages0 = stat_now("pages", CURRENT);
  for (int i = 0; i < 2000; i++) CHECK(mi_heap_malloc(h, 4000) != NULL);  // ~8 MiB here
  mi_stats_merge();
  CHECK(stat_now("pages", CURRENT) >= pages0 + 100);   // 64 KiB pages of 4 KiB blocks
  pthread_t d;
  pthread_create(&d, NULL, heap_destroyer, h);
  pthread_join(d, NULL);
  // this thread's part (with its blocks) goes at this thread's next collection
  mi_collect(false);
  mi_stats_merge();
  CHECK(stat_now("pages", CURRENT) <= pages0);
  // a new heap, deleted by another thread than the one that made it
  h = mi_heap_new();
  void* kept = mi_heap_malloc(h, 50);
  strcpy(kept, "still here");
  pthread_t e;
  pthread_create(&e, NULL, heap_deleter, h);
  pthread_join(e, NULL);
  mi_collect(false);
  CHECK(strcmp(kept, "still here") == 0);  // delete keeps the blocks alive
  CHECK(mi_heap_contains_block(mi_heap_get_backing(), kept));
  mi_free(kept);
}

// ---------------------------------------------------------------------------------------
// options, statistics, process

static void options(void) {
  CHECK(!mi_option_is_enabled(mi_option_verbose));
  mi_option_enable(mi_option_show_stats); CHECK(mi_option_is_enabled(mi_option_show_stats));
  mi_option_disable(mi_option_show_stats); CHECK(!mi_option_is_enabled(mi_option_show_stats));
  mi_option_set_enabled(mi_option_show_stats, true); CHECK(mi_option_get(mi_option_show_stats) == 1);
  mi_option_set_enabled(mi_option_show_stats, false);
  mi_option_set_default(mi_option_show_stats, 1);            // explicit setting wins
  CHECK(!mi_option_is_enabled(mi_option_show_stats));
  mi_option_set_enabled_default(mi_option_deprecated_eager_commit_delay, false);
  CHECK(mi_option_get(mi_option_deprecated_eager_commit_delay) == 0);
  long d = mi_option_get(mi_option_purge_delay);
  CHECK(d == 10);                                             // shardalloc's default purge delay
  mi_option_set(mi_option_purge_delay, 0);
  CHECK(mi_option_get(mi_option_purge_delay) == 0);
  mi_option_set(mi_option_purge_delay, d);
  CHECK(mi_option_get_clamp(mi_option_purge_delay, 50, 100) == 50);
  CHECK(mi_option_get_clamp(mi_option_purge_delay, 0, 5) == 5);
  mi_option_set(mi_option_max_errors, 7); CHECK(mi_option_get(mi_option_max_errors) == 7);
  CHECK(mi_option_get((mi_option_t)1000) == 0);                // out of range: ignored
  mi_option_set((mi_option_t)1000, 5);
  CHECK(mi_option_get(mi_option_os_tag) == 100);
}
static void stats(void) {
  void* p = malloc(1000000);
  capture_t c = {{0}, 0, 0};
  mi_stats_print_out(capture, &c);
  CHECK(c.calls > 0 && strstr(c.text, "allocated") && strstr(c.text, "committed") && strstr(c.text, "segments"));
  capture_t c2 = {{0}, 0, 0};
  mi_register_output(capture, &c2);
  mi_stats_print(NULL);
  mi_register_output(NULL, NULL);
  CHECK(c2.calls > 0 && strstr(c2.text, "reserved"));
  capture_t c3 = {{0}, 0, 0};
  mi_thread_stats_print_out(capture, &c3);
  CHECK(c3.calls > 0 && strstr(c3.text, "allocated"));
  size_t elapsed = 0, user = 0, sys = 0, rss = 0, peak_rss = 0, commit = 0, peak_commit = 0, faults = 0;
  mi_process_info(&elapsed, &user, &sys, &rss, &peak_rss, &commit, &peak_commit, &faults);
  CHECK(rss > 1000000 && peak_rss >= 1000000 && commit >= 1000000 && peak_commit >= commit);
  mi_process_info(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
  free(p);
  // mi_stats_reset: peaks fall to the current values, totals to zero
  void* big = malloc((size_t)64 << 20);
  CHECK(big != NULL);
  free(big);
  mi_collect(true);
  mi_process_info(NULL, NULL, NULL, NULL, NULL, &commit, &peak_commit, NULL);
  CHECK(peak_commit >= commit + ((size_t)64 << 20));
  double pages_total = stat_now("pages", TOTAL), huge_peak = stat_now("huge", PEAK);
  CHECK(pages_total >= 1 && huge_peak >= (double)((size_t)64 << 20));
  mi_stats_reset();
  size_t commit2 = 0, peak_commit2 = 0;
  mi_process_info(NULL, NULL, NULL, NULL, NULL, &commit2, &peak_commit2, NULL);
  CHECK(peak_commit2 == commit2 && commit2 == commit);
  CHECK(stat_now("pages", TOTAL) == 0 && stat_now("allocated", TOTAL) == 0);
  CHECK(stat_now("huge", PEAK) == stat_now("huge", CURRENT));
  CHECK(stat_now("pages", PEAK) == stat_now("pages", CURRENT));
}
// mi_stats_merge: a thread's statistics are in the process's once it merges them, while
// the thread still runs (run alone: `allocated` is read to the KiB while it stays under
// 1 MiB). The thread allocates less than the 256 KiB that a thread gathers before it adds
// its block counts to the shared statistics by itself.
static sem_t merge_done, merge_exit;
static void* merge_worker(void* arg) {
  void** blocks = arg;
  for (int i = 0; i < 230; i++) { blocks[i] = malloc(1000); memset(blocks[i], 1, 1000); }
  mi_stats_merge();
  sem_post(&merge_done);
  sem_wait(&merge_exit);
  for (int i = 0; i < 230; i++) free(blocks[i]);
  return NULL;
}
static void stats_merge(void) {
  static void* blocks[230];
  sem_init(&merge_done, 0, 0);
  sem_init(&merge_exit, 0, 0);
  double before = stat_now("allocated", CURRENT);
  CHECK(before < 512 * 1024);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, merge_worker, blocks) == 0);
  sem_wait(&merge_done);
  double after = stat_now("allocated", CURRENT);
  CHECK(after >= before + 128 * 1024);         // (of the thread's 230 KiB)
  sem_post(&merge_exit);
  pthread_join(t, NULL);
}
// mi_collect(false) gives back a retired page (a heap's only page of a size class whose
// blocks were all freed, kept for reuse); mi_collect(true) also returns unused memory to
// the OS at once, without waiting for the purge delay
static void collect_frees(void) {
  mi_collect(true);
  mi_heap_t* h = mi_heap_new();
  mi_free(mi_heap_malloc(h, 8));           // this thread's part of the heap, made on first use
  double pages0 = stat_now("pages", CURRENT);
  void* q = mi_heap_malloc(h, 100);
  CHECK(q && stat_now("pages", CURRENT) == pages0 + 1);
  mi_free(q);
  CHECK(stat_now("pages", CURRENT) == pages0 + 1);    // retired, not freed
  mi_collect(false);
  CHECK(stat_now("pages", CURRENT) <= pages0);
  mi_heap_delete(h);
  long delay = mi_option_get(mi_option_purge_delay);
  mi_option_set(mi_option_purge_delay, 100000);      // nothing purges by itself here
  enum { N = 6000 };
  static void* ps[N];
  size_t commit0 = committed_now();
  for (int i = 0; i < N; i++) { ps[i] = malloc(1000); CHECK(ps[i]); memset(ps[i], 2, 1000); }
  for (int i = 0; i < N; i++) free(ps[i]);
  size_t commit2 = committed_now();
  mi_collect(true);
  size_t commit3 = committed_now();
  CHECK(commit2 >= commit3 + ((size_t)3 << 20));          // the collection purged ...
  CHECK(commit3 <= commit0 + ((size_t)1 << 20));          // ... all that was freed
  mi_option_set(mi_option_purge_delay, delay);
}
// mi_thread_init: a thread that never allocated gets its heap (the statistics count
// initialised thread heaps)
static sem_t init_go, init_done, init_exit;
static void* init_worker(void* arg) {
  (void)arg;
  sem_wait(&init_go);
  mi_thread_init();
  sem_post(&init_done);
  sem_wait(&init_exit);
  return NULL;
}
static void thread_init(void) {
  sem_init(&init_go, 0, 0); sem_init(&init_done, 0, 0); sem_init(&init_exit, 0, 0);
  double threads0 = stat_now("threads", CURRENT);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, init_worker, NULL) == 0);
  CHECK(stat_now("threads", CURRENT) == threads0);      // started, no heap yet
  sem_post(&init_go);
  sem_wait(&init_done);
  CHECK(stat_now("threads", CURRENT) == threads0 + 1);  // initialised by mi_thread_init
  sem_post(&init_exit);
  pthread_join(t, NULL);
  CHECK(stat_now("threads", CURRENT) == threads0);      // and done at exit
}
static void misc(void) {
  CHECK(mi_version() >= 200);
  CHECK(shardalloc_version() >= 100);
  CHECK(mi_is_redirected());                 // linked before libc: malloc is ours
  int local;
  CHECK(!mi_is_in_heap_region(&local) && !mi_is_in_heap_region(NULL));
  void* p = malloc(10); CHECK(mi_is_in_heap_region(p)); free(p);
  mi_process_init();                         // again: a no-op
}
static int deferred_calls = 0;
static void deferred(bool force, unsigned long long beat, void* arg) { (void)force; (void)beat; *(int*)arg += 1; }
static void deferred_free(void) {
  mi_register_deferred_free(deferred, &deferred_calls);
  mi_collect(true);
  mi_register_deferred_free(NULL, NULL);
  mi_collect(true);
  CHECK(deferred_calls == 1);
}
static void limit(void) {
  size_t old = shardalloc_limit();
  shardalloc_set_limit(shardalloc_reserved() + ((size_t)64 << 20));
  errno = 0;
  void* p = malloc((size_t)128 << 20);
  CHECK(p == NULL && errno == ENOMEM);
  p = malloc((size_t)16 << 20);                 // within the cap
  CHECK(p != NULL);
  free(p);
  shardalloc_set_limit(old);
  p = malloc((size_t)128 << 20);
  CHECK(p != NULL);
  free(p);
}
static void* thread_done_worker(void* arg) {
  (void)arg;
  void* p = malloc(100);
  mi_thread_done();                              // abandon now ...
  free(p);                                       // ... and keep working
  p = malloc(200); CHECK(p != NULL); free(p);
  mi_heap_t* h = mi_heap_new();
  mi_heap_set_default(h);
  p = malloc(50);
  mi_thread_done();                              // with a non-backing default heap
  free(p);
  return NULL;
}
static void thread_done(void) {
  pthread_t t;
  pthread_create(&t, NULL, thread_done_worker, NULL);
  pthread_join(t, NULL);
}
static void* alloc_and_exit(void* arg) { *(void**)arg = malloc(48); return NULL; }
static void* fresh_free(void* arg) { free(arg); return NULL; }
static void free_from_fresh_thread(void) {
  // a block of an exited thread (its segment abandoned), freed by a thread that never
  // allocated: must be a remote free, not a "local" one
  for (int i = 0; i < 50; i++) {
    void* p = NULL;
    pthread_t t;
    pthread_create(&t, NULL, alloc_and_exit, &p); pthread_join(t, NULL);
    pthread_create(&t, NULL, fresh_free, p); pthread_join(t, NULL);
  }
  void* q = malloc(48); CHECK(q != NULL); free(q);
  mi_collect(true);
}

static pthread_key_t late_key;
static void late_destructor(void* v) {
  // runs after shardalloc's own thread-exit destructor (its key is older): allocating
  // here makes the thread start over, and glibc calls shardalloc's destructor again
  free(v);
  void* p = malloc(100);
  memset(p, 1, 100);
  free(p);
}
static void* thread_with_late_destructor(void* arg) {
  (void)arg;
  pthread_setspecific(late_key, malloc(64));
  free(malloc(1000));
  return NULL;
}
static void thread_exit_destructors(void) {
  pthread_key_create(&late_key, late_destructor);
  for (int i = 0; i < 40; i++) {
    pthread_t t;
    pthread_create(&t, NULL, thread_with_late_destructor, NULL);
    pthread_join(t, NULL);
  }
  pthread_key_delete(late_key);
  void* p = malloc(10); CHECK(p != NULL); free(p);
}

// ---------------------------------------------------------------------------------------
// cases that need an environment (run by c_api.rs)

// allocating many blocks of `size` gives no block twice (a block on a free list twice
// would come back twice)
static int distinct_blocks(size_t size) {
  enum { N = 400 };
  static void* ps[N];
  int ok = 1;
  for (int i = 0; i < N; i++) { ps[i] = malloc(size); if (!ps[i]) ok = 0; }
  for (int i = 0; i < N && ok; i++)
    for (int j = i + 1; j < N; j++) if (ps[i] == ps[j]) { ok = 0; break; }
  for (int i = 0; i < N; i++) free(ps[i]);
  return ok;
}
// volatile: glibc declares free() a leaf function, so the compiler would assume that
// free() cannot run on_error (a function of this file) and reuse values read before it
static volatile int errors_seen[200];
static void on_error(int err, void* arg) { (void)arg; if (err >= 0 && err < 200) errors_seen[err]++; }
// SHARDALLOC_SHOW_ERRORS=1: double and invalid frees reported and ignored
static void checked_free(void) {
  mi_register_error(on_error, NULL);
  CHECK(mi_option_is_enabled(mi_option_show_errors));
  char* p = malloc(64);
  free(p);
  free(p);                                      // double free: reported, ignored
  CHECK(errors_seen[EAGAIN] == 1);
  char* q = malloc(64);
  char* r = malloc(64);
  CHECK(q != r);                                 // the block was not put on a list twice
  free(q); free(r);
  // double frees of blocks deeper in a page's lists, each reported and ignored (checked
  // mode sees the lists of pages that the freeing thread owns: `local_free` (own frees),
  // `free` (after a collection) and `thread_free` (other threads' frees))
  {
    // local_free = c -> b -> a: the middle and the tail
    char* keep = malloc(200); char* a = malloc(200); char* b = malloc(200); char* c = malloc(200);
    free(a); free(b); free(c);
    int e = errors_seen[EAGAIN];
    free(b);
    CHECK(errors_seen[EAGAIN] == e + 1);
    free(a);
    CHECK(errors_seen[EAGAIN] == e + 2);
    CHECK(distinct_blocks(200));
    free(keep);
  }
  {
    // in `free`: a forced collection moves local_free there
    char* keep = malloc(300); char* a = malloc(300); char* b = malloc(300);
    free(a); free(b);
    mi_collect(true);
    int e = errors_seen[EAGAIN];
    free(a);
    CHECK(errors_seen[EAGAIN] == e + 1);
    free(b);
    CHECK(errors_seen[EAGAIN] == e + 2);
    CHECK(distinct_blocks(300));
    free(keep);
  }
  {
    // in `thread_free`: freed by another thread, then again by the owner
    char* keep = malloc(2000); char* a = malloc(2000);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_on_thread, a) == 0);
    pthread_join(t, NULL);
    int e = errors_seen[EAGAIN];
    free(a);
    CHECK(errors_seen[EAGAIN] == e + 1);
    CHECK(distinct_blocks(2000));
    free(keep);
  }
  int double_frees = errors_seen[EAGAIN];
  char* s = malloc(1000);
  free(s + 8);                                   // not the start of a block
  CHECK(errors_seen[EINVAL] == 1);
  int local;
  free(&local);
  CHECK(errors_seen[EINVAL] == 2);
  free(s);
  void* a = mi_malloc_aligned_at(100, 64, 8);
  free(a);                                       // interior pointer of an aligned page: fine
  CHECK(errors_seen[EINVAL] == 2 && errors_seen[EAGAIN] == double_frees);
  char* big = malloc(10 << 20);
  free(big);
  free(big);                                     // huge segment already unmapped
  CHECK(errors_seen[EINVAL] == 3);
  fprintf(stderr, "checked-free: errors seen as expected\n");
}
// checked mode switched on and off while the program runs (mi_option_enable): `free`'s
// fast path learns of it through the segment map's bound, so the first free after the
// switch is already checked, and the first one after switching it off is not
static void checked_free_runtime(void) {
  mi_register_error(on_error, NULL);
  CHECK(!mi_option_is_enabled(mi_option_show_errors));
  char* keep = malloc(48);
  char* p = malloc(48);
  free(p);                                       // unchecked: the fast path
  mi_option_enable(mi_option_show_errors);
  int again = errors_seen[EAGAIN], bad = errors_seen[EINVAL];
  char* q = malloc(48);
  free(q);
  free(q);                                       // double free: reported, ignored
  CHECK(errors_seen[EAGAIN] == again + 1);
  char* r = malloc(1000);
  free(r + 8);                                   // not the start of a block: reported
  CHECK(errors_seen[EINVAL] == bad + 1);
  free(r);
  CHECK(distinct_blocks(48));
  mi_option_disable(mi_option_show_errors);
  CHECK(!mi_option_is_enabled(mi_option_show_errors));
  // unchecked again: blocks come and go (a free that were still routed to the checks would
  // be reported, and one that were lost would leave a block out)
  CHECK(distinct_blocks(48));
  int local;
  free(&local);                                  // not ours: still reported
  CHECK(errors_seen[EINVAL] == bad + 2);
  CHECK(errors_seen[EAGAIN] == again + 1);
  free(keep);
}
// SHARDALLOC_LIMIT=64M
static void env_limit(void) {
  CHECK(shardalloc_limit() == ((size_t)64 << 20));
  errno = 0;
  CHECK(malloc((size_t)100 << 20) == NULL && errno == ENOMEM);
}
// MIMALLOC_PURGE_DELAY=0 MIMALLOC_SHOW_STATS=1 MIMALLOC_VERBOSE=1
static void env_mimalloc_names(void) {
  CHECK(mi_option_get(mi_option_purge_delay) == 0);
  CHECK(mi_option_is_enabled(mi_option_show_stats));
  CHECK(mi_option_is_enabled(mi_option_verbose));
}
// SHARDALLOC_PURGE_DELAY=-1 MIMALLOC_PURGE_DELAY=0: ours win
static void env_precedence(void) { CHECK(mi_option_get(mi_option_purge_delay) == -1); }
// throwing new that fails: a message and abort (run expecting SIGABRT)
static void new_fails(void) { void* p = mi_new(size_max); (void)p; fprintf(stderr, "not reached\n"); }

typedef struct { const char* name; void (*fn)(void); int by_default; } test_case_t;
static const test_case_t cases[] = {
  {"malloc-zero", malloc_zero, 1},
  {"malloc-nomem", malloc_nomem, 1},
  {"malloc-sizes", malloc_sizes, 1},
  {"malloc-usable-size", malloc_usable, 1},
  {"calloc-overflow", calloc_overflow, 1},
  {"calloc-zeroes-reused", calloc_zeroes_reused, 1},
  {"realloc-null-and-zero", realloc_null_and_zero, 1},
  {"realloc-contents", realloc_contents, 1},
  {"realloc-nomem-keeps-block", realloc_nomem_keeps_block, 1},
  {"posix_memalign", posix_memalign_cases, 1},
  {"aligned_alloc", aligned_alloc_cases, 1},
  {"memalign-valloc-pvalloc", memalign_valloc_cases, 1},
  {"free-foreign", free_foreign, 1},
  {"checked-free-runtime", checked_free_runtime, 1},
  {"libc-names", libc_names, 1},
  {"many-live-blocks", many_live_blocks, 1},
  {"mi-basic", mi_basic, 1},
  {"mi-strings", mi_strings, 1},
  {"mi-aligned", mi_aligned, 1},
  {"mi-zero-realloc", mi_zero_realloc, 1},
  {"mi-posix", mi_posix, 1},
  {"heap-basics", heap_basics, 1},
  {"heap-delete-keeps-blocks", heap_delete_keeps_blocks, 1},
  {"heap-destroy-frees", heap_destroy_frees, 1},
  {"heap-default", heap_default, 1},
  {"heap-foreign-thread", heap_foreign_thread, 1},
  {"options", options, 1},
  {"stats", stats, 1},
  {"misc", misc, 1},
  {"collect", collect_frees, 1},
  {"thread-init", thread_init, 1},
  {"deferred-free", deferred_free, 1},
  {"limit", limit, 1},
  {"thread-done", thread_done, 1},
  {"free-from-fresh-thread", free_from_fresh_thread, 1},
  {"thread-exit-destructors", thread_exit_destructors, 1},
  {"stats-merge", stats_merge, 0},
  {"checked-free", checked_free, 0},
  {"env-limit", env_limit, 0},
  {"env-mimalloc-names", env_mimalloc_names, 0},
  {"env-precedence", env_precedence, 0},
  {"new-fails", new_fails, 0},
};

int main(int argc, char** argv) {
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
