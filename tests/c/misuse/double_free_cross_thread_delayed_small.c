/* misuse: One 8-byte block of a full page freed twice by another thread (the first free
   goes to the owner heap's delayed list), then blocks of its size allocated again. */
#include "misuse.h"
#include <pthread.h>
static void* free_twice(void* arg) {
  free(arg);
  free(arg);
  say("MISUSE-PASSED\n"); /* the report must come before this line */
  return NULL;
}

int main(void) {
  enum { N = 20000 };
  static char* blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = opaque(malloc(8));
  char* victim = blocks[0]; /* in the first page, full since the second page began */
  pthread_t t;
  pthread_create(&t, NULL, free_twice, victim);
  pthread_join(t, NULL);
  for (int i = 0; i < 4096; i++) opaque(malloc(8));
  DONE();
  return 0;
}
