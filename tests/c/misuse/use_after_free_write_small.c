/* misuse: A write to a freed small block, then mallocs of its size until it comes back. */
#include "misuse.h"

int main(void) {
  long* p = opaque(malloc(48));
  free(p);
  p[2] = 0x4141414141414141L;
  for (int i = 0; i < 64; i++) opaque(malloc(48));
  DONE();
  return 0;
}
