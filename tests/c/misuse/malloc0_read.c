/* misuse: Reads past malloc(0): must not expose a heap address (secure). */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(0));
  char* q = opaque(malloc(0));
  free(q); /* q's first word now links its free list */
  uintptr_t w = 0;
  int leaks = 0;
  for (int i = 0; i < 64; i += 8) {
    memcpy(&w, p + i, 8);
    if (w != 0 && (w >> 22) == ((uintptr_t)p >> 22)) leaks++;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "HEAP-ADDRESSES %d\n", leaks);
  say(buf);
  DONE();
  return 0;
}
