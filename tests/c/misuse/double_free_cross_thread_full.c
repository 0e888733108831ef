/* misuse: Every block of a page freed twice by another thread (the page is full: the delayed path). */
#include "misuse.h"
#include <pthread.h>
static void* free_all_twice(void* arg) {
  char** b = arg;
  for (int i = 0; i < 1024; i++) free(b[i]);
  for (int i = 0; i < 1024; i++) free(b[i]);
  return NULL;
}

int main(void) {
  enum { N = 1024 };
  static char* blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = opaque(malloc(64));
  pthread_t t;
  pthread_create(&t, NULL, free_all_twice, blocks);
  pthread_join(t, NULL);
  for (int i = 0; i < 100; i++) opaque(malloc(64));
  DONE();
  return 0;
}
