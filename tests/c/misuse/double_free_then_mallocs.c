/* misuse: A small double free, then 4096 malloc(16): the freed block must not come back more than once. */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(16));
  free(p);
  free(p);
  int same = 0;
  static void* keep[4096];
  for (int i = 0; i < 4096; i++) {
    keep[i] = malloc(16);
    if (keep[i] == p) same++;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "SAME-BLOCK %d\n", same);
  say(buf);
  DONE();
  return 0;
}
