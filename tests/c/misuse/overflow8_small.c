/* misuse: An 8-byte overflow of a small block, then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_free_neighbour(24, 256);
  size_t n = malloc_usable_size(p);
  memset(p + n, 0x41, 8);
  drain(24, 20000);
  DONE();
  return 0;
}
