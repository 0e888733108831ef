/* misuse: A 1-byte overflow of a small block (into its free neighbour's link), then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_free_neighbour(24, 256);
  size_t n = malloc_usable_size(p);
  p[n] ^= 0x10;
  drain(24, 20000);
  DONE();
  return 0;
}
