//! The kernel's global allocator.
//!
//! TEMPORARY until shardalloc's PerCpuAlloc exists: linked_list_allocator over one region of
//! the frames source.

use core::alloc::{GlobalAlloc, Layout};
use linked_list_allocator::LockedHeap;
use shardalloc::PageSource;

use crate::mem::SOURCE;

#[global_allocator]
static ALLOC: LockedHeap = LockedHeap::empty();

pub fn init() {
    let free = crate::mem::PHYS.free_frames() * 4096;
    let size = (free / 2).min(64 << 20) & !0xFFF;
    // SAFETY: size is a non-zero page multiple; align is the page size.
    let r = unsafe { SOURCE.alloc(size, 4096, true) }.expect("heap region");
    // SAFETY: the region is committed, ours alone, and lives forever.
    unsafe { ALLOC.lock().init(r.ptr.as_ptr(), r.size) };
}

pub fn name() -> &'static str {
    "linked_list_allocator (temporary)"
}

/// The global allocator as a `dyn GlobalAlloc`, for the benchmarks.
pub fn global() -> &'static dyn GlobalAlloc {
    &ALLOC
}

#[allow(dead_code)]
pub fn layout_ok(l: Layout) -> bool {
    l.size() > 0
}
