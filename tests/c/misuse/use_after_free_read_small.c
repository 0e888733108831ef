/* misuse: A read of a freed small block: must not see its old contents (secure). */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(48));
  memset(p, 0x5a, 48);
  free(p);
  int seen = 0;
  for (int i = 8; i < 48; i++) seen += (((volatile char*)p)[i] == 0x5a);
  char buf[64];
  snprintf(buf, sizeof buf, "OLD-BYTES %d\n", seen);
  say(buf);
  DONE();
  return 0;
}
