/* What a first touch of fresh anonymous memory costs on this machine, per 4 KiB, in the
 * ways an allocator can touch it: 4 KiB pages faulted one by one, the same range made
 * resident by one madvise(MADV_POPULATE_WRITE), and 2 MiB transparent huge pages
 * (madvise(MADV_HUGEPAGE) on a 2 MiB-aligned range). Each way maps MIB MiB afresh in
 * THREADS threads at once (each its own range) and reports the wall time per 4 KiB and
 * the minor faults the process took (getrusage), so that the figures say what ran: a huge
 * page run that faulted 4 KiB pages (THP off) shows 256 times the faults.
 *
 * Before each way it makes WARM MiB of huge pages resident and unmaps them, as
 * benches/runner does before every run: this machine is a VM whose host takes back free
 * memory a few seconds after the guest frees it, and memory taken back costs the guest
 * many times more to fault in again (WARM 0 shows that cold cost).
 *
 *   fault_cost [MIB per thread (default 128)] [THREADS (default 1)] [WARM MiB (default 512)]
 *
 * benches/fault_cost.sh builds and runs it; benches/README.md explains why it matters. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum way { TOUCH_4K, POPULATE_4K, TOUCH_THP };
static const char *names[] = {"touch, 4 KiB pages", "MADV_POPULATE_WRITE, 4 KiB pages",
                              "touch, 2 MiB huge pages"};
static size_t bytes;
static enum way way;
static int failed;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static long minflt(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

static void *worker(void *arg) {
    (void)arg;
    size_t huge = 2u << 20;
    char *m = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        perror("fault_cost: mmap");
        failed = 1;
        return NULL;
    }
    char *p = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    if (madvise(p, bytes, way == TOUCH_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) {
        perror("fault_cost: madvise (huge page advice)");
        failed = 1;
    }
    if (way == POPULATE_4K) {
        if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
            fprintf(stderr, "fault_cost: MADV_POPULATE_WRITE: %s (Linux 5.14 or later)\n", strerror(errno));
            failed = 1;
        }
    } else {
        for (size_t i = 0; i < bytes; i += 4096)
            p[i] = 1;
    }
    munmap(m, bytes + huge);
    return NULL;
}

/* Makes `mib` MiB of huge pages resident and gives them back. */
static void warm(size_t mib) {
    size_t huge = 2u << 20, n = mib << 20;
    if (n == 0)
        return;
    char *m = mmap(NULL, n + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return;
    char *p = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    madvise(p, n, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    munmap(m, n + huge);
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 128;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    size_t warm_mib = argc > 3 ? strtoul(argv[3], NULL, 10) : 512;
    if (mib == 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: fault_cost [MIB per thread] [THREADS (1-64)] [WARM MiB]\n");
        return 2;
    }
    bytes = mib << 20;
    printf("| way | threads | MiB | warm-up MiB | us per 4 KiB | minor faults |\n|---|---:|---:|---:|---:|---:|\n");
    for (way = TOUCH_4K; way <= TOUCH_THP; way++) {
        pthread_t t[64];
        warm(warm_mib);
        long f0 = minflt();
        double s = now();
        for (int i = 0; i < threads; i++)
            pthread_create(&t[i], NULL, worker, NULL);
        for (int i = 0; i < threads; i++)
            pthread_join(t[i], NULL);
        double e = now();
        long pages = (long)(bytes / 4096) * threads;
        printf("| %s | %d | %zu | %zu | %.3f | %ld |\n", names[way], threads, mib * threads, warm_mib,
               (e - s) * 1e6 / pages, minflt() - f0);
    }
    return failed;
}
