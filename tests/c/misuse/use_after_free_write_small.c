/* misuse: A write to a freed small block, then mallocs of its size until it comes back. */
#include "misuse.h"

int main(void) {
  long* p = opaque(malloc(48));
  free(p);
  p[2] = 0x4141414141414141L;
  drain(48, 20000);
  DONE();
  return 0;
}
