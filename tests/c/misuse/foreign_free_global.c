/* misuse: free() of an address in the program's data. */
#include "misuse.h"

int main(void) {
  static char buf[256];
  opaque(buf);
  free(buf + 16);
  DONE();
  return 0;
}
