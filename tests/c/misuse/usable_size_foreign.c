/* misuse: malloc_usable_size of a stack address. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char buf[64];
  size_t n = malloc_usable_size(opaque(buf));
  char out[64];
  snprintf(out, sizeof out, "USABLE %zu\n", n);
  say(out);
  DONE();
  return 0;
}
