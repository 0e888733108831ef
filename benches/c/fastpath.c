/* The small-size fast path through the C entry points, for callgrind under LD_PRELOAD
 * (benches/run.sh --callgrind): each iteration mallocs 4 blocks (32, 200 and 1000 bytes
 * and a random 8..520), writes and reads a byte of each, and frees them.
 *   fastpath-c N            the loop over malloc/free (whichever library is preloaded)
 *   fastpath-c N baseline   the same loop over a static buffer: the loop's own cost
 * Built with -fno-builtin so that the compiler keeps every malloc/free call. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char buffer[4][1024];

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  int baseline = argc > 2 && strcmp(argv[2], "baseline") == 0;
  uint64_t r = 88172645463325252ull;
  unsigned sum = 0;
  for (long i = 0; i < n; i++) {
    r ^= r << 13; r ^= r >> 7; r ^= r << 17;
    size_t s4 = 8 + (size_t)(r % 513);
    char *a, *b, *c, *d;
    if (baseline) {
      a = buffer[0]; b = buffer[1]; c = buffer[2]; d = buffer[3];
      __asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d) : "r"(s4));
    } else {
      a = malloc(32); b = malloc(200); c = malloc(1000); d = malloc(s4);
      if (!a || !b || !c || !d) return 2;
    }
    a[0] = 1; b[0] = 2; c[0] = 3; d[0] = 4;
    sum += a[0] + b[0] + c[0] + d[0];
    if (!baseline) { free(a); free(b); free(c); free(d); }
    else __asm__ volatile("" : : "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
  }
  printf("fastpath-c n=%ld check=%u\n", n, sum);
  return 0;
}
