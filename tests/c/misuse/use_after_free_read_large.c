/* misuse: A read of a freed large (1 MiB) block. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(1 << 20));
  memset(p, 0x5a, 1 << 20);
  free(p);
  int seen = 0;
  PROGRAM_ACCESS(for (int i = 4096; i < 8192; i++) seen += (((volatile char*)p)[i] == 0x5a));
  char buf[64];
  snprintf(buf, sizeof buf, "OLD-BYTES %d\n", seen);
  say(buf);
  DONE();
  return 0;
}
