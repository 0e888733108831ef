/* misuse: A block of the main thread freed twice by another thread. */
#include "misuse.h"
#include <pthread.h>
static void* free_twice(void* p) { free(p); free(p); return NULL; }

int main(void) {
  char* p = opaque(malloc(64));
  pthread_t t;
  pthread_create(&t, NULL, free_twice, p);
  pthread_join(t, NULL);
  DONE();
  return 0;
}
