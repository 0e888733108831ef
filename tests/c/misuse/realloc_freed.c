/* misuse: realloc of a freed block. */
#include "misuse.h"

int main(void) {
  char* p = with_neighbours(64);
  free(p);
  char* q = realloc(p, 200);
  (void)q;
  DONE();
  return 0;
}
