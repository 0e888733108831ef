/* misuse: A write to a freed large (1 MiB) block, then allocations of its size. */
#include "misuse.h"

int main(void) {
  long* p = opaque(malloc(1 << 20));
  free(p);
  PROGRAM_ACCESS(p[3] = 0x4141414141414141L);
  drain(1 << 20, 4);
  DONE();
  return 0;
}
