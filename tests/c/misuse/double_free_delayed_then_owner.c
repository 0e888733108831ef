/* misuse: A block of a full page freed by another thread (onto the owner heap's delayed
   list) and then again by its owner, before the owner took the delayed list. */
#include "misuse.h"
#include <pthread.h>
static void* free_once(void* arg) {
  free(arg);
  return NULL;
}

int main(void) {
  enum { N = 300 };
  static char* blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = opaque(malloc(1000));
  /* blocks[0] is in the first page, full since the second page began */
  pthread_t t;
  pthread_create(&t, NULL, free_once, blocks[0]);
  pthread_join(t, NULL);
  free(blocks[0]);
  say("MISUSE-PASSED\n"); /* the report must come before this line */
  for (int i = 1; i < N; i++) free(blocks[i]);
  for (int i = 0; i < 8; i++) free(opaque(malloc(1000)));
  DONE();
  return 0;
}
