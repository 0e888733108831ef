// C++ operator new/delete in every form, through shardalloc (linked or preloaded).
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <map>
#include <vector>
#include <memory>
#include <thread>

// weak: the program runs linked with -lshardalloc or preloaded; either way the symbol is
// there, and a run without shardalloc fails the checks instead of failing to link
extern "C" bool mi_is_in_heap_region(const void* p) __attribute__((weak));
extern "C" void shardalloc_set_limit(size_t) __attribute__((weak));
extern "C" size_t shardalloc_reserved(void) __attribute__((weak));
static bool ours(const void* p) { return mi_is_in_heap_region && mi_is_in_heap_region(p); }

static int failures = 0;
#define CHECK(c) do { if (!(c)) { std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

struct alignas(256) Big { char data[1000]; };
static volatile size_t huge = SIZE_MAX / 2;

// thread_local objects with destructors that free (run at thread exit, before the
// pthread key destructors, so the thread's heap is still there)
struct Holder {
  std::vector<std::string> v;
  ~Holder() { v.clear(); v.shrink_to_fit(); std::string s(1000, 'y'); }
};
thread_local Holder holder;

// a new_handler that frees a reserve and returns: operator new must retry and succeed
static void* reserve = nullptr;
static int handler_calls = 0;
static void release_reserve() {
  handler_calls++;
  std::free(reserve);
  reserve = nullptr;
  std::set_new_handler(nullptr);
}

int main() {
  int* a = new int(5); CHECK(ours(a)); delete a;
  int* arr = new int[100]; CHECK(ours(arr)); delete[] arr;
  Big* b = new Big; CHECK(((uintptr_t)b & 255) == 0 && ours(b)); delete b;
  Big* bs = new Big[3]; CHECK(((uintptr_t)bs & 255) == 0); delete[] bs;
  int* n = new (std::nothrow) int(3); CHECK(n && ours(n)); delete n;
  char* fail = new (std::nothrow) char[huge]; CHECK(fail == nullptr);
  Big* bn = new (std::nothrow) Big; CHECK(bn && ((uintptr_t)bn & 255) == 0); delete bn;
  void* raw = ::operator new(100, std::align_val_t(4096)); CHECK(((uintptr_t)raw & 4095) == 0);
  ::operator delete(raw, 100, std::align_val_t(4096));
  raw = ::operator new[](100, std::align_val_t(64), std::nothrow); CHECK(((uintptr_t)raw & 63) == 0);
  ::operator delete[](raw, std::align_val_t(64), std::nothrow);
  for (size_t n = 1; n < 100; n++) {      // an explicit alignment of 16 holds for every size
    raw = ::operator new(n, std::align_val_t(16)); CHECK(((uintptr_t)raw & 15) == 0);
    ::operator delete(raw, std::align_val_t(16));
  }
  raw = ::operator new(10); ::operator delete(raw, 10);
  raw = ::operator new[](10); ::operator delete[](raw, 10);
  raw = ::operator new(10, std::nothrow); ::operator delete(raw, std::nothrow);
  raw = ::operator new[](10, std::nothrow); ::operator delete[](raw, std::nothrow);
  raw = ::operator new(10, std::align_val_t(32)); ::operator delete(raw, std::align_val_t(32));
  raw = ::operator new[](10, std::align_val_t(32)); ::operator delete[](raw, 10, std::align_val_t(32));
  raw = ::operator new[](10, std::align_val_t(32)); ::operator delete[](raw, std::align_val_t(32));
  raw = ::operator new(10, std::align_val_t(32), std::nothrow); ::operator delete(raw, std::align_val_t(32), std::nothrow);
  std::map<std::string, std::vector<int>> m;
  for (int i = 0; i < 20000; i++) m[std::to_string(i)].push_back(i);
  CHECK(m.size() == 20000 && m["777"][0] == 777);
  auto sp = std::make_shared<std::string>(1000, 'x'); CHECK(ours(sp.get()));
  if (shardalloc_set_limit && shardalloc_reserved) {
    shardalloc_set_limit(shardalloc_reserved() + (64 << 20));
    reserve = std::malloc(48 << 20);
    CHECK(reserve != nullptr);
    std::set_new_handler(release_reserve);
    char* big = new char[32 << 20];          // over the cap until the handler frees
    CHECK(big != nullptr && handler_calls == 1 && reserve == nullptr);
    big[0] = 1;
    delete[] big;
    shardalloc_set_limit(0);
  } else {
    CHECK(!"shardalloc not loaded");
  }
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; t++)
    ts.emplace_back([t] { for (int i = 0; i < 1000; i++) holder.v.push_back(std::string(20 + i % 50, char('a' + t))); });
  for (auto& t : ts) t.join();
  std::printf("test_cxx: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
