// C++ written for mimalloc: mimalloc.h's STL allocators, linked with -lshardalloc
// (tests/c_api.rs: mimalloc_users_compile_unchanged).
#include <mimalloc.h>
#include <vector>
#include <cstdio>
int main() {
  std::vector<int, mi_stl_allocator<int>> v;
  for (int i = 0; i < 100000; i++) v.push_back(i);
  mi_heap_stl_allocator<int> ha;
  std::vector<int, mi_heap_stl_allocator<int>> hv(ha);
  for (int i = 0; i < 1000; i++) hv.push_back(i);
  mi_heap_destroy_stl_allocator<int> da;
  std::vector<int, mi_heap_destroy_stl_allocator<int>> dv(da);
  for (int i = 0; i < 1000; i++) dv.push_back(i);
  std::printf("%zu %zu %zu %d\n", v.size(), hv.size(), dv.size(), (int)mi_is_in_heap_region(v.data()));
}
