/* The misuse programs' stand-in for mimalloc.h (found first by `#include "mimalloc.h"`
   from this directory): the programs are not linked against shardalloc but run under
   LD_PRELOAD, so the few mi_* functions they call are looked up at run time. Also
   installs the misuse programs' error hook and fault handler (misuse.h). */
#ifndef MISUSE_MIMALLOC_SHIM_H
#define MISUSE_MIMALLOC_SHIM_H
#include "misuse.h"

static void* mi_malloc_aligned(size_t size, size_t align) {
  void* (*f)(size_t, size_t) = (void* (*)(size_t, size_t))dlsym(RTLD_DEFAULT, "mi_malloc_aligned");
  return f(size, align);
}
static void mi_free(void* p) {
  void (*f)(void*) = (void (*)(void*))dlsym(RTLD_DEFAULT, "mi_free");
  f(p);
}
#endif
