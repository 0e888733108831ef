/* misuse: A block aligned to 4096 freed twice. */
#include "misuse.h"

int main(void) {
  void* p = NULL;
  if (posix_memalign(&p, 4096, 100) != 0) return 2;
  opaque(p);
  free(p);
  free(p);
  DONE();
  return 0;
}
