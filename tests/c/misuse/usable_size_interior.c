/* misuse: malloc_usable_size of an interior pointer. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
  char* p = opaque(malloc(64));
  size_t n = malloc_usable_size(p + 24);
  char buf[64];
  snprintf(buf, sizeof buf, "USABLE %zu\n", n);
  say(buf);
  DONE();
  return 0;
}
