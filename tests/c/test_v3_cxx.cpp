// C++ against mimalloc v3.4.3's headers: mimalloc-new-delete.h (new/delete defined in this
// file through mi_new & co.), and mimalloc.h's STL allocators, including
// mi_heap_stl_allocator over a heap the program owns (which 2.0.9's copy could not
// compile: its shared_ptr had no deleter) (tests/c_api.rs: mimalloc_v3_headers).
#include <mimalloc-new-delete.h>
#include <mimalloc.h>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

static int bad = 0;
#define CHECK(c) do { if (!(c)) { std::fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #c); bad++; } } while (0)

struct alignas(128) Wide { char x[128]; };

int main() {
  int* i = new int(5);
  CHECK(mi_any_heap_contains(i) && *i == 5);
  delete i;
  Wide* w = new Wide[3];
  CHECK(mi_any_heap_contains(w) && (reinterpret_cast<size_t>(w) & 127) == 0);
  delete[] w;
  // an allocator over a heap the program made: the allocator does not delete it
  mi_heap_t* h = mi_heap_new();
  {
    mi_heap_stl_allocator<int> ha(h);
    std::vector<int, mi_heap_stl_allocator<int>> v(ha);
    for (int k = 0; k < 10000; k++) v.push_back(k);
    CHECK(mi_heap_contains(h, v.data()) && v[9999] == 9999);
    mi_heap_stl_allocator<int> copy(ha);
    CHECK(copy == ha);
  }
  void* still = mi_heap_malloc(h, 10);   // the heap outlived its allocators
  CHECK(still && mi_heap_of(still) == h);
  mi_heap_delete(h);
  // allocators with a fresh heap of their own, deleted / destroyed with them
  {
    std::map<int, std::string, std::less<int>, mi_heap_destroy_stl_allocator<std::pair<const int, std::string>>> m;
    for (int k = 0; k < 1000; k++) m[k] = std::to_string(k);
    CHECK(m.size() == 1000 && m[999] == "999");
    std::vector<int, mi_heap_stl_allocator<int>> v;
    v.resize(5000, 7);
    CHECK(v[4999] == 7 && !mi_heap_contains(mi_heap_main(), v.data()));
    std::vector<int, mi_stl_allocator<int>> s(100, 1);
    CHECK(mi_heap_contains(mi_heap_main(), s.data()));
  }
  std::printf("v3 c++: %s\n", bad ? "FAILED" : "ok");
  return bad != 0;
}
