// A program written for mimalloc v3.4.3: its header, its macros, its types, linked with
// -lshardalloc instead (tests/c_api.rs: mimalloc_users_compile_unchanged).
#include <mimalloc.h>
#include <stdio.h>
#include <string.h>
typedef struct { int x; double y; } point_t;
int main(void) {
  point_t* p = mi_malloc_tp(point_t);
  point_t* ps = mi_calloc_tp(point_t, 10);
  ps = mi_reallocn_tp(point_t, ps, 20);
  mi_heap_t* h = mi_heap_new();
  point_t* q = mi_heap_malloc_tp(point_t, h);
  mi_option_t opt = mi_option_show_errors;
  mi_option_set_enabled(opt, false);
  mi_heap_area_t area; memset(&area, 0, sizeof area);
  printf("%d %d %d\n", p != NULL && ps != NULL && q != NULL, MI_SMALL_SIZE_MAX == 1024, mi_option_purge_delay == 15 && MI_MALLOC_VERSION == 30403);
  mi_free(p); mi_free(ps); mi_heap_destroy(h);
  return 0;
}
