/* misuse: An 8-byte overflow of a large block, then mallocs. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_free_neighbour(100000, 16);
  size_t n = malloc_usable_size(p);
  memset(p + n, 0x41, 8);
  drain(100000, 32);
  DONE();
  return 0;
}
