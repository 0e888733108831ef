/* misuse: malloc_usable_size of a freed block. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = with_neighbours(64);
  free(p);
  size_t n = malloc_usable_size(p);
  char buf[64];
  snprintf(buf, sizeof buf, "USABLE %zu\n", n);
  say(buf);
  DONE();
  return 0;
}
