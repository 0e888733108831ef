/* misuse: Sized operator delete (_ZdlPvm) of a 64-byte block with size 4096. */
#include "misuse.h"

int main(void) {
  void (*del)(void*, size_t) = (void (*)(void*, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
  void* (*nw)(size_t) = (void* (*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
  if (del == NULL || nw == NULL) { say("NO-OPERATOR-DELETE\n"); return 2; }
  void* p = opaque(nw(64));
  del(p, 4096);
  DONE();
  return 0;
}
