//! Which heap serves the caller: a thread-local heap (hosted) or the current CPU's heap
//! (kernel), and the `GlobalAlloc` types built on that.

use core::alloc::Layout;

use crate::heap::RawHeap;
use crate::size_class::WORD;

// (not with `embedded`: its page entries have no remote-free list, and per-CPU heaps free
// into each other's pages; per-core heaps on a microcontroller take `small` alone)
#[cfg(not(feature = "embedded"))]
pub mod percpu;

#[cfg(all(feature = "std", any(unix, windows)))]
pub mod hosted;
#[cfg(all(feature = "std", any(unix, windows)))]
pub(crate) mod process_source;
#[cfg(all(feature = "std", any(unix, windows)))]
pub(crate) mod tls;

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "embedded")]
mod embedded_runs;

/// Allocates for `layout` from `heap`. Null when out of memory or when `heap` is the
/// empty heap (the caller then initialises the thread and retries).
///
/// # Safety
/// `heap` is the calling thread's (CPU's) heap or the empty heap; `align` is a power of
/// two.
#[inline(always)]
pub(crate) unsafe fn heap_alloc(
    heap: *mut RawHeap,
    size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    if align <= WORD {
        // SAFETY: the caller's heap (or the empty heap); every block is word-aligned.
        unsafe { crate::alloc::malloc(heap, size, zero) }
    } else {
        // SAFETY: the caller's heap (or the empty heap); a `Layout`'s (or the checked)
        // alignment is a power of two (caller).
        unsafe { crate::alloc::malloc_aligned(heap, size, align, zero) }
    }
}

/// Re-allocates for `GlobalAlloc::realloc`.
///
/// # Safety
/// As `GlobalAlloc::realloc`, with `heap`/`owner` the caller's heap and owner token.
#[inline]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn heap_realloc(
    heap: *mut RawHeap,
    owner: usize,
    p: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: the caller's heap and token; `p` is a live block of ours (GlobalAlloc's
    // contract) and a `Layout`'s alignment is a power of two.
    unsafe {
        crate::alloc::realloc(
            heap,
            owner,
            p,
            layout.size(),
            new_size,
            layout.align(),
            false,
        )
    }
}
