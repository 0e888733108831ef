/* misuse: a write one byte past the end of a huge (8 MiB) block. Secure mode ends every
   large and huge segment with a guard page (where the page source can protect memory, as
   mmap can), right after the block: the program's own write must fault there. It also
   looks for the guard page that ends a segment's metadata (an inaccessible mapping in the
   first 64 KiB of a small block's segment) and right after the huge block, and prints
   GUARD-METADATA 0/1 and GUARD-TAIL 0/1. */
#include "misuse.h"

/* Whether an inaccessible mapping starts in [lo, hi). */
static int guard_in(uintptr_t lo, uintptr_t hi) {
  int found = 0;
  FILE* f = fopen("/proc/self/maps", "r");
  if (f == NULL) return -1;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long start, end;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) == 3 &&
        strcmp(perms, "---p") == 0 && start >= lo && start < hi)
      found = 1;
  }
  fclose(f);
  return found;
}

int main(void) {
  char* small = opaque(malloc(64));
  uintptr_t seg = (uintptr_t)small & ~(uintptr_t)((4u << 20) - 1);
  char buf[64];
  snprintf(buf, sizeof buf, "GUARD-METADATA %d\n", guard_in(seg + 1, seg + 65536));
  say(buf);
  char* p = opaque(malloc(8u << 20));
  size_t n = malloc_usable_size(p);
  snprintf(buf, sizeof buf, "GUARD-TAIL %d\n", guard_in((uintptr_t)p + n, (uintptr_t)p + n + 1));
  say(buf);
  p[n - 1] = 1; /* the block's own last byte */
  PROGRAM_ACCESS(p[n] = 0x41);
  free(p);
  free(small);
  DONE();
  return 0;
}
