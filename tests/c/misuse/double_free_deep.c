/* misuse: A block freed twice with other frees in between (it lies deeper in its page's list). */
#include "misuse.h"

int main(void) {
  char* p = opaque(malloc(32));
  char* q[8];
  for (int i = 0; i < 8; i++) q[i] = opaque(malloc(32));
  free(p);
  for (int i = 0; i < 8; i++) free(q[i]);
  free(p);
  DONE();
  return 0;
}
