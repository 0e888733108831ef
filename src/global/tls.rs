//! The thread-local slot holding the calling thread's default heap.
//!
//! In an executable, a `const`-initialised `thread_local!` without destructor compiles to
//! a direct `%fs` access and never allocates (std registers no destructor for it).

use core::cell::Cell;

use crate::heap::{empty_heap, RawHeap};

std::thread_local! {
    static HEAP: Cell<*mut RawHeap> = const { Cell::new(empty_heap()) };
}

/// The calling thread's default heap (the empty heap before its first allocation).
#[inline(always)]
pub(crate) fn get() -> *mut RawHeap {
    HEAP.with(|h| h.get())
}

/// Sets the calling thread's default heap.
#[inline]
pub(crate) fn set(heap: *mut RawHeap) {
    HEAP.with(|h| h.set(heap))
}
