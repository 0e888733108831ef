/* misuse: free() of a stack address. */
#include "misuse.h"

int main(void) {
  char buf[64];
  opaque(buf);
  free(buf);
  DONE();
  return 0;
}
