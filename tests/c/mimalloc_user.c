// A program written for mimalloc: its header, its macros, its types, linked with
// -lshardalloc instead (tests/c_api.rs: mimalloc_users_compile_unchanged).
#include <mimalloc.h>
#include <stdio.h>
#include <string.h>
typedef struct { int x; double y; } point_t;
int main(void) {
  point_t* p = mi_malloc_tp(point_t);
  point_t* ps = mi_calloc_tp(point_t, 10);
  ps = mi_reallocn_tp(ps, point_t, 20);
  mi_heap_t* h = mi_heap_new();
  point_t* q = mi_heap_malloc_tp(h, point_t);
  mi_option_t opt = mi_option_show_errors;
  mi_option_set_enabled(opt, false);
  mi_heap_area_t area; memset(&area, 0, sizeof area);
  printf("%d %d %d\n", p != NULL && ps != NULL && q != NULL, MI_SMALL_SIZE_MAX == 1024, mi_option_decommit_delay == 15);
  mi_free(p); mi_free(ps); mi_heap_destroy(h);
  return 0;
}
