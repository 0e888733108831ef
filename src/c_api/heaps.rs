//! mimalloc's first-class heaps (`mi_heap_t` is a [`SharedHeap`]), as in mimalloc v3: any
//! thread may allocate from a heap (each through its own part of it, found without a
//! lock), and any thread may delete or destroy it; blocks may be freed by any thread.
//!
//! - `mi_heap_delete` hands the heap's live blocks to the backing heaps of the threads that
//!   allocated them; `mi_heap_destroy` frees them all. The calling thread's part goes at
//!   once; another thread's when that thread next looks up a heap part, collects, or
//!   exits (only a thread may touch its own pages). Both are no-ops on the main heap.
//! - A thread that exits while a heap lives takes its live blocks of the heap along (as
//!   `mi_heap_delete` would): they stay valid and leave the heap.
//! - `mi_heap_get_backing()` is the main heap (`MAIN_HEAP`), whose part on each thread is
//!   that thread's backing heap; `mi_heap_set_default(h)` makes the calling thread's part
//!   of `h` serve its `malloc`.
//! - `mi_heap_visit_blocks` and `mi_heap_collect` act on the calling thread's part.

use core::ffi::{c_char, c_void};
use core::ptr;

use super::semantics as s;
use crate::collect::{heap_collect, Collect};
use crate::first_class;
use crate::global::hosted;
use crate::global::tls;
use crate::heap::{OwnedHeap, RawHeap, SharedHeap};
use crate::segment::checked_page;
use crate::shared;
use crate::size_class::WORD;

type H = *mut SharedHeap;
type P = *mut c_void;

/// The calling thread's backing heap, initialised; `None` when out of memory.
fn backing() -> Option<OwnedHeap> {
    let h = hosted::heap_initialized();
    // SAFETY: live or the empty heap; an initialised one is this thread's, and so is its
    // thread's backing heap.
    unsafe {
        (*h).is_initialized()
            .then(|| OwnedHeap::new((*(*h).tld).heap_backing))
    }
}

/// The main heap of the calling thread's sub-process (`hosted::MAIN_HEAP` in the main
/// one).
fn main_heap() -> H {
    hosted::thread_main_heap() as H
}

/// Makes the backing heap the default again (before the thread is done, or when the
/// default heap is deleted).
pub(crate) fn reset_default_to_backing() {
    let h = hosted::default_heap();
    // SAFETY: `default_heap()` is the calling thread's live default heap or the static
    // empty heap, both readable `RawHeap`s.
    if !unsafe { (*h).is_initialized() } {
        return;
    }
    // SAFETY: `h` is initialised (checked above), so its `tld` is the calling thread's
    // live thread data.
    let b = unsafe { (*(*h).tld).heap_backing };
    if b != h {
        tls::set(b);
    }
}

#[no_mangle]
pub extern "C" fn mi_heap_new() -> H {
    let Some(b) = backing() else {
        super::set_errno(::libc::ENOMEM);
        return ptr::null_mut();
    };
    let h = shared::shared_new(b);
    if h.is_null() {
        super::set_errno(::libc::ENOMEM);
    }
    h
}

/// Shared by delete and destroy: `destroy` frees the blocks, else they move to the
/// backing heaps.
///
/// # Safety
/// `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted, which no
/// thread allocates from meanwhile.
unsafe fn heap_release(h: H, destroy: bool) {
    // SAFETY: `h` is null or a live heap (this function's contract); a main heap (the
    // process's or a sub-process's) is never released.
    if h.is_null() || unsafe { (*h).is_main } {
        return;
    }
    let Some(b) = backing() else {
        return;
    };
    // SAFETY: `h` is a live heap other than the main heap, given up with its blocks for
    // destroy (this function's contract, mimalloc's for `mi_heap_delete`/`destroy`).
    if unsafe { shared::shared_release(b, h, destroy, hosted::default_heap()) } {
        tls::set(b.as_ptr());
    }
}
#[no_mangle]
pub unsafe extern "C" fn mi_heap_delete(h: H) {
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_delete` (mimalloc's, include/mimalloc.h).
    unsafe { heap_release(h, false) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_destroy(h: H) {
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_destroy` (mimalloc's, include/mimalloc.h).
    unsafe { heap_release(h, true) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_set_default(h: H) -> H {
    // (a heap in an arena cannot be the default: `malloc`'s frees and the thread's exit
    // assume the default heap is of the thread's own data)
    // SAFETY: `h` is null or a live heap (the C caller's contract).
    if h.is_null() || unsafe { super::arenas::is_arena_heap(h) } {
        return ptr::null_mut();
    }
    let prev = mi_heap_get_default();
    // SAFETY: `h` is a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted: the C
    // caller's contract for `mi_heap_*` (mimalloc's, include/mimalloc.h).
    let part = unsafe { hosted::part_of(h) };
    // SAFETY: the calling thread's part or the static empty heap: readable.
    if !unsafe { (*part).is_initialized() } {
        return ptr::null_mut();
    }
    tls::set(part);
    prev
}

#[no_mangle]
pub extern "C" fn mi_heap_get_default() -> H {
    let h = hosted::heap_initialized();
    // SAFETY: live or the empty heap; a live heap of a thread is a part of a shared heap
    // (the backing heap: of the main heap).
    let shared = unsafe { (*h).shared };
    if shared.is_null() {
        main_heap()
    } else {
        shared as H
    }
}

#[no_mangle]
pub extern "C" fn mi_heap_get_backing() -> H {
    main_heap()
}

/// The calling thread's part of `h`, if it has one.
///
/// # Safety
/// `h` is null or a live heap.
pub(crate) unsafe fn own_part(h: H) -> Option<OwnedHeap> {
    if h.is_null() {
        return None;
    }
    shared::part_peek(backing()?, h)
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_collect(h: H, force: bool) {
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_*` (mimalloc's, include/mimalloc.h).
    if let Some(part) = unsafe { own_part(h) } {
        let mode = if force {
            Collect::Force
        } else {
            Collect::Normal
        };
        heap_collect(part, mode);
    }
}

// ---------------------------------------------------------------------------------------
// allocation

/// The heap to allocate from: the calling thread's part of `h` (made on first use), or
/// the empty heap (allocation returns NULL with ENOMEM) when `h` is null, out of memory,
/// or no longer live.
///
/// # Safety
/// `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted.
#[inline(always)]
unsafe fn alloc_heap(h: H) -> Option<*mut RawHeap> {
    if h.is_null() {
        return Some(crate::heap::empty_heap());
    }
    // SAFETY: `h` is a live heap (this function's contract).
    Some(unsafe { hosted::part_of(h) })
}

macro_rules! heap_fns {
    ($($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = |$hh:ident| $body:expr;)*) => {$(
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(h: H $(, $arg: $ty)*) -> $ret {
            // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet
            // deleted: the C caller's contract for `mi_heap_*` (mimalloc's,
            // include/mimalloc.h).
            let $hh = unsafe { alloc_heap(h) };
            // SAFETY: `$hh` is the calling thread's part of `h` (an initialised heap of the
            // calling thread) or else the empty heap: what the `heap` argument of the
            // `semantics` functions allows; pointer arguments are null or live blocks of
            // ours, strings are C strings and `resolved` holds `PATH_MAX` bytes: the C
            // caller's contract for the `mi_heap_*` functions (mimalloc's).
            unsafe { $body }
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

/// Whether `p` points into a block of a page of heap `h` (any thread's part; any pointer
/// may be asked).
#[no_mangle]
pub extern "C" fn mi_heap_contains_block(h: H, p: *const c_void) -> bool {
    !h.is_null()
        && checked_page(p as *const u8).is_ok_and(|page| {
            // SAFETY: the page is in use (checked), so its heap field is meaningful; `h` is
            // a live heap (the C caller's contract for `mi_heap_*`).
            unsafe { shared::shared_has_part(h, (*page).heap()) }
        })
}

/// Whether `p` is the start of a block of heap `h` (any pointer may be asked).
#[no_mangle]
pub extern "C" fn mi_heap_check_owned(h: H, p: *const c_void) -> bool {
    if h.is_null() || (p as usize) & (WORD - 1) != 0 {
        return false;
    }
    match checked_page(p as *const u8) {
        // SAFETY: the page is in use (checked), so its fields are meaningful; `h` is a
        // live heap (the C caller's contract).
        Ok(page) => unsafe {
            shared::shared_has_part(h, (*page).heap())
                && (p as usize - (*page).page_start() as usize).is_multiple_of((*page).block_size)
        },
        Err(_) => false,
    }
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
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_*` (mimalloc's, include/mimalloc.h).
    let Some(part) = (unsafe { own_part(h) }) else {
        return true; // nothing allocated from it on this thread
    };
    // SAFETY: `part` is this thread's part of the live heap `h`; `visitor` is the C
    // caller's valid function.
    unsafe { visit_part(part, h, visit_blocks, Some(visitor), arg) }
}

/// Visits the pages (and, with `visit_blocks`, the live blocks) of `part`, the calling
/// thread's part of heap `h`, calling `visitor` with `h`.
///
/// # Safety
/// `visitor` is null or a valid `mi_block_visit_fun`; it neither allocates from nor frees
/// into the heap (mimalloc's contract for `mi_heap_visit_blocks`).
pub(crate) unsafe fn visit_part(
    part: OwnedHeap,
    h: H,
    visit_blocks: bool,
    visitor: Option<BlockVisitFun>,
    arg: P,
) -> bool {
    let Some(visitor) = visitor else {
        return false;
    };
    // Collecting first applies delayed and remote frees and frees empty pages.
    heap_collect(part, Collect::Normal);
    let visit = |area: &first_class::Area, block: *mut u8| {
        let a = HeapArea {
            blocks: area.blocks as P,
            reserved: area.reserved,
            committed: area.committed,
            used: area.used,
            block_size: area.block_size,
            full_block_size: area.block_size,
        };
        // SAFETY: `visitor` is the C caller's `mi_block_visit_fun`, called with its `arg`,
        // a pointer to a live `HeapArea` on our stack, and null or a live block of `h`.
        unsafe { visitor(h as *const c_void, &a, block as P, area.block_size, arg) }
    };
    first_class::heap_visit(part, visit_blocks, visit)
}
