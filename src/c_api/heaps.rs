//! mimalloc's first-class heaps (`mi_heap_t` is a `RawHeap`): made, used, deleted and
//! destroyed by the thread that owns them; their blocks may be freed by any thread.
//!
//! - `mi_heap_delete` hands the heap's live blocks to the thread's backing heap;
//!   `mi_heap_destroy` frees them all at once. Both are no-ops on the backing heap.
//! - A heap whose thread has exited is inert: allocation from it returns NULL.
//! - A heap made the default (`mi_heap_set_default`) serves `malloc` on its thread.

use core::ffi::{c_char, c_void};
use core::ptr;

use super::semantics as s;
use crate::collect::{heap_collect, Collect};
use crate::first_class;
use crate::global::{hosted, tls};
use crate::heap::RawHeap;
use crate::segment::checked_page;
use crate::size_class::WORD;

type H = *mut RawHeap;
type P = *mut c_void;

/// Whether `h` is a live heap of the calling thread.
///
/// # Safety
/// `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted.
unsafe fn owned(h: H) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        !h.is_null()
            && (*h).is_initialized()
            && (*h).owner == (*hosted::heap_initialized()).owner
    }
}

/// The calling thread's backing heap (its default heap unless changed), initialised;
/// the empty heap when out of memory.
fn backing() -> H {
    let h = hosted::heap_initialized();
    // SAFETY: live or the empty heap.
    unsafe {
        if (*h).is_initialized() {
            (*(*h).tld).heap_backing
        } else {
            h
        }
    }
}

/// Makes the backing heap the default again (before the thread is done, or when the
/// default heap is deleted).
pub(crate) fn reset_default_to_backing() {
    let h = hosted::default_heap();
    // SAFETY: live or the empty heap.
    unsafe {
        if (*h).is_initialized() {
            let b = (*(*h).tld).heap_backing;
            if b != h {
                tls::set(b);
            }
        }
    }
}

#[no_mangle]
pub extern "C" fn mi_heap_new() -> H {
    let b = backing();
    // SAFETY: `b` is this thread's backing heap (or the empty heap, checked).
    unsafe {
        if !(*b).is_initialized() {
            return ptr::null_mut();
        }
        let h = first_class::heap_new(b);
        if h.is_null() {
            super::set_errno(::libc::ENOMEM);
        }
        h
    }
}

/// Shared by delete and destroy: `destroy` frees the blocks, else they move to the
/// backing heap.
///
/// # Safety
/// `h` is null or a heap not yet deleted.
unsafe fn heap_release(h: H, destroy: bool) {
    // SAFETY: as the caller guarantees.
    unsafe {
        if h.is_null() {
            return;
        }
        if !(*h).is_initialized() {
            // its thread is done: only the struct is left
            s::free(h as *mut u8);
            return;
        }
        if !owned(h) {
            super::options::error(
                ::libc::EINVAL,
                format_args!("heap {h:p} deleted by a thread that does not own it (ignored)"),
            );
            return;
        }
        let b = (*(*h).tld).heap_backing;
        if h == b {
            return;
        }
        if hosted::default_heap() == h {
            tls::set(b);
        }
        if destroy {
            first_class::heap_destroy(h);
        } else {
            first_class::heap_delete(h);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_delete(h: H) {
    // SAFETY: the caller's contract.
    unsafe { heap_release(h, false) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_destroy(h: H) {
    // SAFETY: the caller's contract.
    unsafe { heap_release(h, true) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_set_default(h: H) -> H {
    // SAFETY: the caller's contract.
    unsafe {
        if !owned(h) {
            return ptr::null_mut();
        }
        let prev = hosted::heap_initialized();
        tls::set(h);
        prev
    }
}

#[no_mangle]
pub extern "C" fn mi_heap_get_default() -> H {
    hosted::heap_initialized()
}

#[no_mangle]
pub extern "C" fn mi_heap_get_backing() -> H {
    backing()
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_collect(h: H, force: bool) {
    // SAFETY: the caller's contract; only our own heaps are collected.
    unsafe {
        if owned(h) {
            heap_collect(
                h,
                if force {
                    Collect::Force
                } else {
                    Collect::Normal
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// allocation

/// The heap to allocate from: `h` when it is usable by this thread, else a dead heap
/// (allocation returns NULL with ENOMEM) — never another thread's heap.
///
/// # Safety
/// `h` is a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted.
#[inline]
unsafe fn alloc_heap(h: H) -> Option<H> {
    // SAFETY: as the caller guarantees.
    if unsafe { owned(h) } {
        Some(h)
    } else {
        Some(crate::heap::empty_heap())
    }
}

macro_rules! heap_fns {
    ($($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = |$hh:ident| $body:expr;)*) => {$(
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(h: H $(, $arg: $ty)*) -> $ret {
            // SAFETY: `h` is the caller's heap (checked by `alloc_heap`); pointers passed
            // are null or blocks of ours (the caller's contract).
            unsafe {
                let $hh = alloc_heap(h);
                $body
            }
        }
    )*};
}

heap_fns! {
    fn mi_heap_malloc(size: usize) -> P = |hh| s::malloc(hh, size) as P;
    fn mi_heap_malloc_small(size: usize) -> P = |hh| s::malloc(hh, size) as P;
    fn mi_heap_zalloc(size: usize) -> P = |hh| s::zalloc(hh, size) as P;
    fn mi_heap_calloc(count: usize, size: usize) -> P = |hh| s::calloc(hh, count, size) as P;
    fn mi_heap_mallocn(count: usize, size: usize) -> P = |hh| s::mallocn(hh, count, size) as P;
    fn mi_heap_realloc(p: P, size: usize) -> P = |hh| s::mi_realloc(hh, p as *mut u8, size) as P;
    fn mi_heap_reallocn(p: P, count: usize, size: usize) -> P = |hh| match s::count_size(count, size) {
        Some(t) => s::mi_realloc(hh, p as *mut u8, t) as P,
        None => ptr::null_mut(),
    };
    fn mi_heap_reallocf(p: P, size: usize) -> P = |hh| s::reallocf(hh, p as *mut u8, size) as P;
    fn mi_heap_strdup(str: *const c_char) -> *mut c_char =
        |hh| s::strndup(hh, str as *const u8, usize::MAX) as *mut c_char;
    fn mi_heap_strndup(str: *const c_char, n: usize) -> *mut c_char =
        |hh| s::strndup(hh, str as *const u8, n) as *mut c_char;
    fn mi_heap_realpath(fname: *const c_char, resolved: *mut c_char) -> *mut c_char =
        |hh| s::realpath(hh, fname as *const u8, resolved as *mut u8) as *mut c_char;
    fn mi_heap_malloc_aligned(size: usize, align: usize) -> P =
        |hh| s::malloc_aligned_at(hh, size, align, 0, false) as P;
    fn mi_heap_malloc_aligned_at(size: usize, align: usize, offset: usize) -> P =
        |hh| s::malloc_aligned_at(hh, size, align, offset, false) as P;
    fn mi_heap_zalloc_aligned(size: usize, align: usize) -> P =
        |hh| s::malloc_aligned_at(hh, size, align, 0, true) as P;
    fn mi_heap_zalloc_aligned_at(size: usize, align: usize, offset: usize) -> P =
        |hh| s::malloc_aligned_at(hh, size, align, offset, true) as P;
    fn mi_heap_calloc_aligned(count: usize, size: usize, align: usize) -> P =
        |hh| match s::count_size(count, size) {
            Some(t) => s::malloc_aligned_at(hh, t, align, 0, true) as P,
            None => ptr::null_mut(),
        };
    fn mi_heap_calloc_aligned_at(count: usize, size: usize, align: usize, offset: usize) -> P =
        |hh| match s::count_size(count, size) {
            Some(t) => s::malloc_aligned_at(hh, t, align, offset, true) as P,
            None => ptr::null_mut(),
        };
    fn mi_heap_realloc_aligned(p: P, size: usize, align: usize) -> P =
        |hh| s::realloc_aligned_at(hh, p as *mut u8, size, align, 0, false) as P;
    fn mi_heap_realloc_aligned_at(p: P, size: usize, align: usize, offset: usize) -> P =
        |hh| s::realloc_aligned_at(hh, p as *mut u8, size, align, offset, false) as P;
    fn mi_heap_rezalloc(p: P, size: usize) -> P = |hh| s::rezalloc(hh, p as *mut u8, size) as P;
    fn mi_heap_recalloc(p: P, count: usize, size: usize) -> P =
        |hh| match s::count_size(count, size) {
            Some(t) => s::rezalloc(hh, p as *mut u8, t) as P,
            None => ptr::null_mut(),
        };
    fn mi_heap_rezalloc_aligned(p: P, size: usize, align: usize) -> P =
        |hh| s::realloc_aligned_at(hh, p as *mut u8, size, align, 0, true) as P;
    fn mi_heap_rezalloc_aligned_at(p: P, size: usize, align: usize, offset: usize) -> P =
        |hh| s::realloc_aligned_at(hh, p as *mut u8, size, align, offset, true) as P;
    fn mi_heap_recalloc_aligned(p: P, count: usize, size: usize, align: usize) -> P =
        |hh| match s::count_size(count, size) {
            Some(t) => s::realloc_aligned_at(hh, p as *mut u8, t, align, 0, true) as P,
            None => ptr::null_mut(),
        };
    fn mi_heap_recalloc_aligned_at(p: P, count: usize, size: usize, align: usize, offset: usize) -> P =
        |hh| match s::count_size(count, size) {
            Some(t) => s::realloc_aligned_at(hh, p as *mut u8, t, align, offset, true) as P,
            None => ptr::null_mut(),
        };
    /// As `mi_new`, from a heap: aborts when out of memory.
    fn mi_heap_alloc_new(size: usize) -> P = |hh| {
        let p = s::malloc(hh, size);
        if p.is_null() {
            super::fatal(format_args!("mi_heap_alloc_new({size}): out of memory"));
        }
        p as P
    };
    /// As `mi_new_n`, from a heap: aborts when out of memory or on overflow.
    fn mi_heap_alloc_new_n(count: usize, size: usize) -> P = |hh| {
        let p = s::mallocn(hh, count, size);
        if p.is_null() {
            super::fatal(format_args!("mi_heap_alloc_new_n({count}, {size}): out of memory"));
        }
        p as P
    };
}

// ---------------------------------------------------------------------------------------
// analysis

/// Whether `p` points into a block of a page of heap `h` (any pointer may be asked).
#[no_mangle]
pub extern "C" fn mi_heap_contains_block(h: H, p: *const c_void) -> bool {
    // SAFETY: a page in use has a live owner field.
    !h.is_null() && checked_page(p as *const u8).is_ok_and(|page| unsafe { (*page).heap() } == h)
}

/// Whether `p` is the start of a block of heap `h` (any pointer may be asked).
#[no_mangle]
pub extern "C" fn mi_heap_check_owned(h: H, p: *const c_void) -> bool {
    if h.is_null() || (p as usize) & (WORD - 1) != 0 {
        return false;
    }
    match checked_page(p as *const u8) {
        // SAFETY: the page is in use (checked), so its fields are meaningful.
        Ok(page) => unsafe {
            (*page).heap() == h
                && (p as usize - (*page).page_start as usize).is_multiple_of((*page).block_size)
        },
        Err(_) => false,
    }
}

#[no_mangle]
pub extern "C" fn mi_check_owned(p: *const c_void) -> bool {
    mi_heap_check_owned(hosted::heap_initialized(), p)
}

/// mimalloc's `mi_heap_area_t`.
#[repr(C)]
pub struct HeapArea {
    pub blocks: *mut c_void,
    pub reserved: usize,
    pub committed: usize,
    pub used: usize,
    pub block_size: usize,
    pub full_block_size: usize,
}

pub type BlockVisitFun = unsafe extern "C" fn(
    heap: *const c_void,
    area: *const HeapArea,
    block: P,
    block_size: usize,
    arg: P,
) -> bool;

/// Calls `visitor` once per page ("area", with a NULL block) and, with `visit_blocks`,
/// once per live block. Stops when it returns false; returns whether all were visited.
#[no_mangle]
pub unsafe extern "C" fn mi_heap_visit_blocks(
    h: *const c_void,
    visit_blocks: bool,
    visitor: Option<BlockVisitFun>,
    arg: P,
) -> bool {
    let h = h as H;
    let Some(visitor) = visitor else {
        return false;
    };
    // SAFETY: the caller's contract; only our own heaps are visited. Collecting first
    // applies delayed and remote frees and frees empty pages.
    unsafe {
        if !owned(h) {
            return false;
        }
        heap_collect(h, Collect::Normal);
        first_class::heap_visit(h, visit_blocks, |area, block| {
            let a = HeapArea {
                blocks: area.blocks as P,
                reserved: area.reserved,
                committed: area.committed,
                used: area.used,
                block_size: area.block_size,
                full_block_size: area.block_size,
            };
            visitor(h as *const c_void, &a, block as P, area.block_size, arg)
        })
    }
}
