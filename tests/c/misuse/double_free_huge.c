/* misuse: A huge block (64 MiB) freed twice. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(64u << 20));
  p[0] = 1;
  free(p);
  free(p);
  DONE();
  return 0;
}
