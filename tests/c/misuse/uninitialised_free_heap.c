/* misuse: free() of a pointer read from a fresh, uninitialised block (default build: its first word is a free-list link, so this frees a free block). */
#include "misuse.h"

int main(void) {
  void** a = opaque(malloc(64));
  void* x = a[0];
  if (x == NULL) { say("UNINIT-NULL\n"); DONE(); return 0; }
  free(x);
  DONE();
  return 0;
}
