/* misuse: free() of a pointer into the segment header (the allocator's metadata) of a live block. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(16));
  uintptr_t seg = (uintptr_t)p & ~(uintptr_t)((4u << 20) - 1);
  free((void*)(seg + 256));
  DONE();
  return 0;
}
