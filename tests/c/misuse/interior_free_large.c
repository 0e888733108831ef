/* misuse: free(p + 4096) of a 200 KB block. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(200000));
  free(p + 4096);
  DONE();
  return 0;
}
