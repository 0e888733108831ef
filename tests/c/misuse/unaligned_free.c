/* misuse: free(p + 1). */
#include "misuse.h"

int main(void) {
  char* p = with_neighbours(64);
  free(p + 1);
  DONE();
  return 0;
}
