/* misuse: free() of an uninitialised pointer (stack garbage). */
#include "misuse.h"
__attribute__((noinline)) static void fill_stack(void) {
  volatile uintptr_t junk[64];
  for (int i = 0; i < 64; i++) junk[i] = 0x00007f0012345670u + 16 * i;
  (void)junk[0];
}
__attribute__((noinline)) static void* garbage_pointer(void) {
  volatile uintptr_t junk[64]; /* not initialised: whatever fill_stack left */
  return (void*)junk[7];
}

int main(void) {
  fill_stack();
  free(garbage_pointer());
  DONE();
  return 0;
}
