/* misuse: Blocks freed twice by another thread while their page holds blocks on its own
   free lists, then forced collections (mi_collect(true)) and allocations, round after
   round: the owner's walks of its lists (a list with a cycle, from the double frees) must
   end, whether or not they report. */
#include "misuse.h"
#include <dlfcn.h>
#include <pthread.h>
static void* free_twice(void* p) {
  free(p);
  free(p);
  return NULL;
}

int main(void) {
  void (*collect)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "mi_collect");
  enum { N = 40 };
  static char* b[N];
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < N; i++) b[i] = opaque(malloc(64));
    for (int i = 0; i < N; i += 4) free(b[i]); /* the owner's own frees */
    pthread_t t;
    pthread_create(&t, NULL, free_twice, b[1 + round % 3]);
    pthread_join(t, NULL);
    for (int i = 0; i < round; i++) opaque(malloc(64));
    if (collect) collect(round % 2);
    for (int i = 0; i < 2 * N; i++) opaque(malloc(64));
    if (collect) collect(1);
  }
  DONE();
  return 0;
}
