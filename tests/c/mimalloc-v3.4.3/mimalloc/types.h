/* shardalloc: a stand-in for mimalloc's internal header `mimalloc/types.h`, which
   mimalloc's test/test-api-fill.c (v3.4.3, next to this directory, unchanged) includes for
   a few constants. It declares only those, with the values of mimalloc's debug build that
   shardalloc's debug mode (cargo feature `debug-mode`) implements: tests/debug_mode.rs
   compiles test-api-fill.c with this directory first on the include path and runs it
   against `libshardalloc.so` built with `--features override,debug-mode`.
   (This file is shardalloc's, not mimalloc's.) */
#ifndef SHARDALLOC_MIMALLOC_TYPES_SHIM_H
#define SHARDALLOC_MIMALLOC_TYPES_SHIM_H

#include <stdint.h>
#include <stdbool.h>

/* a debug build with padding and fill patterns (mimalloc's MI_DEBUG >= 2) */
#define MI_DEBUG             2
/* no valgrind/asan/ETW tracking, no guarded blocks, no thread sanitizer */
#define MI_TRACK_VALGRIND    0
#define MI_TRACK_ASAN        0
#define MI_TRACK_ETW         0
#define MI_GUARDED           0
#define MI_TSAN              0

/* sizeof(max_align_t) */
#define MI_MAX_ALIGN_SIZE    16

/* the fill patterns (shardalloc::debug_mode::UNINIT / FREED / PADDING_FILL) */
#define MI_DEBUG_UNINIT      (0xD0)
#define MI_DEBUG_FREED       (0xDF)
#define MI_DEBUG_PADDING     (0xDE)

#endif
