// mimalloc-override.h: the C allocation names become mimalloc's, by macro (v3.4.3's
// header, unchanged). Every block below must be shardalloc's (tests/c_api.rs:
// mimalloc_v3_headers).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mimalloc-override.h>

static int bad = 0;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #c); bad++; } } while (0)

int main(void) {
  char* p = malloc(100);              CHECK(p && mi_any_heap_contains(p));
  p = realloc(p, 10000);              CHECK(p && mi_any_heap_contains(p));
  free(p);
  int* c = calloc(10, sizeof(int));   CHECK(c && c[9] == 0 && mi_any_heap_contains(c)); free(c);
  char* s = strdup("override");       CHECK(s && !strcmp(s, "override") && mi_any_heap_contains(s)); free(s);
  s = strndup("override", 4);         CHECK(s && !strcmp(s, "over")); free(s);
  void* a = _aligned_malloc(100, 256); CHECK(a && ((size_t)a & 255) == 0 && mi_any_heap_contains(a));
  a = _aligned_realloc(a, 1000, 256);  CHECK(a && ((size_t)a & 255) == 0);
  CHECK(_aligned_msize(a, 256, 0) >= 1000); _aligned_free(a);
  void* m = NULL;
  CHECK(posix_memalign(&m, 64, 100) == 0 && m && ((size_t)m & 63) == 0); free(m);
  m = aligned_alloc(128, 256);        CHECK(m && ((size_t)m & 127) == 0); cfree(m);
  m = memalign(32, 10);               CHECK(m && malloc_usable_size(m) >= 10); free(m);
  m = reallocarray(NULL, 10, 10);     CHECK(m && malloc_size(m) >= 100);
  CHECK(reallocarr(&m, 20, 10) == 0 && m && _msize(m) >= 200); free(m);
  CHECK(malloc_good_size(100) >= 100);
  m = valloc(10); CHECK(m); free(m);
  m = _recalloc(NULL, 4, 4); CHECK(m); free(m);
  printf("override.h: %s\n", bad ? "FAILED" : "ok");
  return bad != 0;
}
