/* misuse: A large block (200 KB) freed twice. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(200000));
  char* q = opaque(malloc(200000));
  free(p);
  free(p);
  free(q);
  DONE();
  return 0;
}
