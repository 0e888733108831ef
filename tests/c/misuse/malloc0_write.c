/* misuse: Writes of 16 bytes into malloc(0), then mallocs of its size. */
#include "misuse.h"

int main(void) {
  char* p = with_free_neighbour(0, 256);
  memset(p, 0x41, 16);
  drain(0, 20000);
  DONE();
  return 0;
}
