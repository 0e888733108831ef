/* misuse: A block whose first word is zero freed twice (its list link is null: the end of a list). */
#include "misuse.h"

int main(void) {
  long* p = opaque(calloc(1, 48));
  free(p);
  free(p);
  DONE();
  return 0;
}
