/* misuse: A 1-byte overflow of a small block (into its free neighbour's link), then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_neighbours(24);
  size_t n = malloc_usable_size(p);
  p[n] ^= 0x10;
  for (int i = 0; i < 64; i++) opaque(malloc(24));
  DONE();
  return 0;
}
