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
use crate::heap::{OwnedHeap, RawHeap};
use crate::segment::checked_page;
use crate::size_class::WORD;

type H = *mut RawHeap;
type P = *mut c_void;

/// Whether `h` is a live heap of the calling thread.
///
/// # Safety
/// `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted.
pub(crate) unsafe fn owned(h: H) -> bool {
    if h.is_null() {
        return false;
    }
    // SAFETY: `h` is non-null, so a heap from `mi_heap_new` / `mi_heap_get_*` not yet
    // deleted (this function's contract): its struct is allocated, even after its thread
    // is done.
    if !unsafe { (*h).is_initialized() } {
        return false;
    }
    let mine = hosted::heap_initialized();
    // SAFETY: `h` as above; `mine` is the calling thread's heap, initialised (or the
    // static empty heap when out of memory), live while the thread runs.
    let (theirs, ours) = unsafe { ((*h).owner, (*mine).owner) };
    // a heap in an arena has an owner of its own, and is used by the thread that made it
    theirs == ours || super::arenas::owned_by_caller(h, ours)
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
    let b = backing();
    // SAFETY: `backing()` is the calling thread's live backing heap or the static empty
    // heap, both readable `RawHeap`s.
    if !unsafe { (*b).is_initialized() } {
        return ptr::null_mut();
    }
    // SAFETY: `b` is the calling thread's backing heap, initialised (checked above), and
    // stays its own for this call, as `OwnedHeap::new` requires.
    let h = first_class::heap_new(unsafe { OwnedHeap::new(b) });
    if h.is_null() {
        super::set_errno(::libc::ENOMEM);
    }
    h
}

/// Shared by delete and destroy: `destroy` frees the blocks, else they move to the
/// backing heap.
///
/// # Safety
/// `h` is null or a heap not yet deleted.
unsafe fn heap_release(h: H, destroy: bool) {
    if h.is_null() {
        return;
    }
    // SAFETY: `h` is non-null, so a heap not yet deleted (this function's contract): its
    // struct is allocated, even after its thread is done.
    if !unsafe { (*h).is_initialized() } {
        // its thread is done: only the struct is left
        // SAFETY: the struct of a first-class heap is a block of its thread's backing heap
        // (`first_class::heap_new`); the C caller deletes it once and does not use it
        // afterwards (mimalloc's contract for `mi_heap_delete`/`mi_heap_destroy`).
        unsafe { s::free(h as *mut u8) };
        return;
    }
    // SAFETY: `h` is a heap not yet deleted (this function's contract); with `destroy`
    // its blocks are not used afterwards (mimalloc's contract for `mi_heap_destroy`).
    if unsafe { super::arenas::release(h, destroy) } {
        return;
    }
    // SAFETY: `h` is null or a heap not yet deleted (this function's contract).
    if !unsafe { owned(h) } {
        super::options::error(
            ::libc::EINVAL,
            format_args!("heap {h:p} deleted by a thread that does not own it (ignored)"),
        );
        return;
    }
    // SAFETY: `h` passed `owned(h)`, so it is an initialised heap of the calling thread,
    // whose `tld` is the calling thread's live thread data.
    let b = unsafe { (*(*h).tld).heap_backing };
    if h == b {
        return;
    }
    if hosted::default_heap() == h {
        tls::set(b);
    }
    if destroy {
        // SAFETY: `h` passed `owned(h)` and is not the backing heap `b`: an initialised
        // first-class heap of the calling thread (what `OwnedHeap::new` requires); no
        // longer the default heap, and neither it nor its blocks are used afterwards
        // (mimalloc's contract for `mi_heap_destroy`).
        unsafe { first_class::heap_destroy(OwnedHeap::new(h)) };
    } else {
        // SAFETY: `h` passed `owned(h)` and is not the backing heap `b`: an initialised
        // first-class heap of the calling thread (what `OwnedHeap::new` requires); no
        // longer the default heap, and not used afterwards (mimalloc's contract for
        // `mi_heap_delete`).
        unsafe { first_class::heap_delete(OwnedHeap::new(h)) };
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
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_*` (mimalloc's, include/mimalloc.h).
    // (a heap in an arena cannot be the default: `malloc`'s frees and the thread's exit
    // assume the default heap is of the thread's own data)
    if !unsafe { owned(h) } || super::arenas::is_arena_heap(h) {
        return ptr::null_mut();
    }
    let prev = hosted::heap_initialized();
    tls::set(h);
    prev
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
    // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted:
    // the C caller's contract for `mi_heap_*` (mimalloc's, include/mimalloc.h).
    if unsafe { owned(h) } {
        let mode = if force {
            Collect::Force
        } else {
            Collect::Normal
        };
        // SAFETY: `h` passed `owned(h)`, so it is an initialised heap of the calling thread
        // (only this thread could delete it), as `OwnedHeap::new` requires.
        heap_collect(unsafe { OwnedHeap::new(h) }, mode);
    }
}

// ---------------------------------------------------------------------------------------
// allocation

/// The heap to allocate from: `h` when it is usable by this thread, else a dead heap
/// (allocation returns NULL with ENOMEM) — never another thread's heap.
///
/// # Safety
/// `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet deleted.
#[inline]
unsafe fn alloc_heap(h: H) -> Option<H> {
    // SAFETY: `h` is null or a heap not yet deleted (this function's contract is
    // `owned`'s).
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
            // SAFETY: `h` is null or a heap from `mi_heap_new` / `mi_heap_get_*` not yet
            // deleted: the C caller's contract for `mi_heap_*` (mimalloc's,
            // include/mimalloc.h).
            let $hh = unsafe { alloc_heap(h) };
            // SAFETY: `$hh` is `h` after it passed `owned(h)` (an initialised heap of the
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
    if !unsafe { owned(h) } {
        return false;
    }
    // Collecting first applies delayed and remote frees and frees empty pages.
    // SAFETY: `h` passed `owned(h)`, so it is an initialised heap of the calling thread
    // (only this thread could delete it), as `OwnedHeap::new` requires.
    heap_collect(unsafe { OwnedHeap::new(h) }, Collect::Normal);
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
    // The visitor does not allocate from or free into `h`: mimalloc's contract for
    // `mi_heap_visit_blocks`.
    // SAFETY: `h` passed `owned(h)`, so it is an initialised heap of the calling thread,
    // and stays so during the visit (the visitor does not delete it), as
    // `OwnedHeap::new` requires.
    first_class::heap_visit(unsafe { OwnedHeap::new(h) }, visit_blocks, visit)
}
