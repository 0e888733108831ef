/* misuse: mi_free_size of a 4096-byte block with size 16. */
#include "misuse.h"

int main(void) {
  void (*fs)(void*, size_t) = (void (*)(void*, size_t))dlsym(RTLD_DEFAULT, "mi_free_size");
  if (fs == NULL) { say("NO-MI-FREE-SIZE\n"); return 2; }
  void* p = opaque(malloc(4096));
  fs(p, 16);
  DONE();
  return 0;
}
