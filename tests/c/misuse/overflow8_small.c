/* misuse: An 8-byte overflow of a small block, then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_neighbours(24);
  size_t n = malloc_usable_size(p);
  memset(p + n, 0x41, 8);
  for (int i = 0; i < 64; i++) opaque(malloc(24));
  DONE();
  return 0;
}
