/* misuse: A block of 16 bytes freed twice in a row. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(16));
  free(p);
  free(p);
  DONE();
  return 0;
}
