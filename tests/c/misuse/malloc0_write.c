/* misuse: Writes of 16 bytes into malloc(0), then mallocs of its size. */
#include "misuse.h"

int main(void) {
  char* p = with_neighbours(0);
  memset(p, 0x41, 16);
  for (int i = 0; i < 64; i++) opaque(malloc(0));
  DONE();
  return 0;
}
