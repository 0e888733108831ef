/* shardalloc: mimalloc's allocator design in Rust, as a C library.
 *
 * Link with -lshardalloc (libshardalloc.so, or libshardalloc.a plus -lpthread -ldl -lm),
 * or preload it: LD_PRELOAD=/path/to/libshardalloc.so program.
 *
 * Linking or preloading replaces malloc, free, calloc, realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, cfree,
 * glibc's __libc_* names and C++ operator new/delete. The full mimalloc API (mi_*) is
 * declared in mimalloc.h, included below; this header adds what is shardalloc's own.
 *
 * Semantics beyond mimalloc's:
 * - every failed allocation sets errno = ENOMEM (bad alignment: EINVAL);
 * - realloc(p, 0) frees p and returns NULL (glibc); mi_realloc(p, 0) returns a block;
 * - free() of a pointer shardalloc never handed out is reported (with show_errors) and
 *   ignored; with SHARDALLOC_SHOW_ERRORS=1, double frees too;
 * - throwing operator new calls std::new_handler and retries when out of memory; with no
 *   handler it aborts with a message (Rust cannot throw std::bad_alloc).
 *
 * Environment (SHARDALLOC_<NAME>, or mimalloc's MIMALLOC_<NAME>):
 *   SHOW_STATS=1      print statistics at exit
 *   SHOW_ERRORS=1     report errors (and check every free for double/invalid frees)
 *   VERBOSE=1         print options at start, and errors
 *   PURGE_DELAY=ms    delay before freed memory goes back to the OS (-1: never; alias
 *                     DECOMMIT_DELAY)
 *   LIMIT=size        cap on memory reserved from the OS (e.g. 512M, 2G); beyond it
 *                     allocation returns NULL with ENOMEM
 */
#ifndef SHARDALLOC_H
#define SHARDALLOC_H

#include "mimalloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version: major * 10000 + minor * 100 + patch. */
int shardalloc_version(void);

/* Caps the bytes reserved from the OS (0 = no cap, the default). */
void shardalloc_set_limit(size_t bytes);

/* The cap set by shardalloc_set_limit or SHARDALLOC_LIMIT (0 = none). */
size_t shardalloc_limit(void);

/* Bytes currently reserved from the OS. */
size_t shardalloc_reserved(void);

/* Whether a detected misuse (double or invalid free, corrupted free list, write after
   free, wrong size to a sized free) aborts the process after its report; returns the
   previous setting. Default: on in the secure build (cargo feature `secure`), off
   otherwise; environment SHARDALLOC_ABORT_ON_ERROR=0/1. Reports go through
   mi_register_error and, with SHARDALLOC_SHOW_ERRORS=1, to stderr. */
bool shardalloc_set_abort_on_error(bool abort);

#ifdef __cplusplus
}
#endif

#endif /* SHARDALLOC_H */
