/* misuse: A write to a freed huge (64 MiB) block. */
#include "misuse.h"

int main(void) {
  long* p = opaque(malloc(64u << 20));
  p[0] = 1;
  free(p);
  PROGRAM_ACCESS(p[1000] = 0x4141414141414141L);
  for (int i = 0; i < 2; i++) opaque(malloc(64u << 20));
  DONE();
  return 0;
}
