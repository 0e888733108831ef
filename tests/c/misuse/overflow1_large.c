/* misuse: A 1-byte overflow of a large block, then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_neighbours(100000);
  size_t n = malloc_usable_size(p);
  p[n] ^= 0x10;
  for (int i = 0; i < 16; i++) opaque(malloc(100000));
  DONE();
  return 0;
}
