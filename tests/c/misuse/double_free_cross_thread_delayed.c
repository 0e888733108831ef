/* misuse: One medium block (20 KB) of a full page freed twice by another thread: the
   first free goes to the owner heap's delayed list, the second must be seen there. */
#include "misuse.h"
#include <pthread.h>
static void* free_twice(void* arg) {
  free(arg);
  free(arg);
  say("MISUSE-PASSED\n"); /* the report must come before this line */
  return NULL;
}

int main(void) {
  enum { N = 100 };
  static char* blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = opaque(malloc(20000));
  /* blocks[0] is in the first page, full since the second page began */
  pthread_t t;
  pthread_create(&t, NULL, free_twice, blocks[0]);
  pthread_join(t, NULL);
  for (int i = 1; i < N; i++) free(blocks[i]);
  for (int i = 0; i < 8; i++) free(opaque(malloc(20000)));
  DONE();
  return 0;
}
