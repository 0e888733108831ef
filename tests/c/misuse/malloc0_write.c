/* misuse: Writes into malloc(0) up to 8 bytes past its block (16 bytes where the smallest
   block is one word; secure mode's smallest is two), then mallocs of its size. */
#include "misuse.h"

int main(void) {
  char* p = with_free_neighbour(0, 256);
  memset(p, 0x41, malloc_usable_size(p) + 8);
  drain(0, 20000);
  DONE();
  return 0;
}
