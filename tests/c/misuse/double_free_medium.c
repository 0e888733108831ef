/* misuse: A medium block (5000 bytes) freed twice. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(5000));
  char* q = opaque(malloc(5000));
  free(p);
  free(p);
  free(q);
  DONE();
  return 0;
}
