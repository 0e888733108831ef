/* Debug mode's reports in C (libshardalloc.so built with --features override,debug-mode):
   each misuse prints the pointer it misuses on stdout, then commits it; the library
   reports it on stderr and through the mi_register_error handler. tests/debug_mode.rs
   checks that each report names that pointer (and the requested size, for overflows). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <mimalloc.h>

static int errors = 0;
static int last_err = 0;

static void on_error(int err, void* arg) {
  (void)arg;
  errors++;
  last_err = err;
}

static int expect(const char* what, int before, int err) {
  if (errors != before + 1 || last_err != err) {
    printf("FAIL %s: %d errors (want %d), last %d (want %d)\n", what, errors - before, 1, last_err, err);
    return 1;
  }
  printf("reported %s\n", what);
  return 0;
}

int main(void) {
  int fails = 0;
  mi_register_error(&on_error, NULL);

  /* usable sizes are the requested ones */
  char* u = malloc(13);
  if (malloc_usable_size(u) != 13 || mi_usable_size(u) != 13) {
    printf("FAIL usable size %zu %zu\n", malloc_usable_size(u), mi_usable_size(u));
    fails++;
  }
  free(u);

  /* a 1-byte overflow of malloc(13) */
  int before = errors;
  char* p = malloc(13);
  memset(p, 'a', 13);
  printf("overflow %p 13\n", (void*)p);
  fflush(stdout);
  p[13] = 'x';
  free(p);
  fails += expect("overflow", before, EFAULT);

  /* an overflow of an aligned block */
  before = errors;
  char* a = mi_malloc_aligned(100, 64);
  printf("overflow %p 100\n", (void*)a);
  fflush(stdout);
  a[100] = 'x';
  mi_free(a);
  fails += expect("aligned overflow", before, EFAULT);

  /* a double free */
  char* keep = malloc(40);
  char* d = malloc(40);
  free(d);
  before = errors;
  printf("double %p\n", (void*)d);
  fflush(stdout);
  free(d);
  fails += expect("double free", before, EAGAIN);

  /* an interior free */
  char* i = malloc(40);
  before = errors;
  printf("interior %p\n", (void*)(i + 8));
  fflush(stdout);
  free(i + 8);
  fails += expect("interior free", before, EINVAL);
  free(i);
  free(keep);

  /* correct use reports nothing */
  before = errors;
  for (int n = 0; n < 1000; n++) {
    char* q = malloc((size_t)n * 7 + 1);
    memset(q, 1, (size_t)n * 7 + 1);
    q = realloc(q, (size_t)n * 11 + 1);
    memset(q, 2, (size_t)n * 11 + 1);
    free(q);
  }
  if (errors != before) {
    printf("FAIL correct use reported %d errors\n", errors - before);
    fails++;
  }
  printf("done %d\n", fails);
  return fails;
}
