/* misuse: free() of memory mapped by the program. */
#include "misuse.h"
#include <sys/mman.h>

int main(void) {
  char* m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 2;
  free(m + 64);
  DONE();
  return 0;
}
