/* misuse: free(p + 16) of a 64-byte block. */
#include "misuse.h"

int main(void) {
  char* p = with_neighbours(64);
  free(p + 16);
  DONE();
  return 0;
}
