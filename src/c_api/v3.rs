//! What mimalloc v3 (v3.4.3's `mimalloc.h`) added to the C API, apart from arenas
//! (`arenas.rs`) and statistics (`stats.rs`): the `mi_u*` allocation functions that also
//! return the block size, `mi_free_small`, the heap queries (`mi_heap_of`,
//! `mi_heap_contains`, `mi_any_heap_contains`, `mi_heap_main`), the thread-local-heap
//! ("theap") API, sub-processes, and process controls.
//!
//! Heaps: in shardalloc (today) a heap is its creating thread's, as in mimalloc 2.x. A
//! `mi_theap_t` is then the heap itself as seen from its own thread: `mi_heap_theap(h)` is
//! `h` on the thread that owns it, NULL elsewhere, and the `mi_theap_*` functions are the
//! `mi_heap_*` functions on it. The functions here that depend on what a heap is are
//! marked "heap semantics" and kept small: `mi_heap_main`, `mi_heap_of` (the page's
//! heap pointer), `mi_heap_contains`, `mi_heap_theap` and the `mi_theap_*` forwards,
//! `mi_heap_visit_abandoned_blocks`, `mi_unsafe_heap_page_is_under_utilized`.

use core::ffi::{c_int, c_void};
use core::ptr;

use super::heaps;
use super::semantics as s;
use crate::global::hosted;
use crate::heap::{OwnedHeap, RawHeap, SharedHeap};
use crate::segment::checked_page;

/// A heap (`mi_heap_t*`): a shared heap; a theap (`mi_theap_t*`) is one thread's part
/// of one, a `RawHeap`.
type H = *mut SharedHeap;
type T = *mut RawHeap;
type P = *mut c_void;

/// Writes `v` to `out` when `out` is not null.
///
/// # Safety
/// `out` is null or points to a writable `size_t`.
#[inline]
unsafe fn put(out: *mut usize, v: usize) {
    if !out.is_null() {
        // SAFETY: non-null, so writable (this function's contract).
        unsafe { *out = v };
    }
}

/// The usable size of `p` (0 for null).
///
/// # Safety
/// `p` is null or a live block of ours.
#[inline]
unsafe fn usable_or_zero(p: *const u8) -> usize {
    if p.is_null() {
        0
    } else {
        // SAFETY: a live block of ours (this function's contract).
        unsafe { s::usable_size(p) }
    }
}

// ---------------------------------------------------------------------------------------
// allocation that returns the block size

#[no_mangle]
pub unsafe extern "C" fn mi_umalloc(size: usize, block_size: *mut usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition.
    let p = unsafe { s::malloc(None, size) };
    // SAFETY: `p` is null or the block just allocated; `block_size` is null or writable
    // (the C caller's contract for `mi_umalloc`).
    unsafe { put(block_size, usable_or_zero(p)) };
    p as P
}

#[no_mangle]
pub unsafe extern "C" fn mi_ucalloc(count: usize, size: usize, block_size: *mut usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition.
    let p = unsafe { s::calloc(None, count, size) };
    // SAFETY: as in `mi_umalloc`.
    unsafe { put(block_size, usable_or_zero(p)) };
    p as P
}

#[no_mangle]
pub unsafe extern "C" fn mi_umalloc_small(size: usize, block_size: *mut usize) -> P {
    // SAFETY: as `mi_umalloc` (the small variant only promises `size <= MI_SMALL_SIZE_MAX`).
    unsafe { mi_umalloc(size, block_size) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_uzalloc_small(size: usize, block_size: *mut usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition.
    let p = unsafe { s::zalloc(None, size) };
    // SAFETY: as in `mi_umalloc`.
    unsafe { put(block_size, usable_or_zero(p)) };
    p as P
}

#[no_mangle]
pub unsafe extern "C" fn mi_umalloc_aligned(
    size: usize,
    align: usize,
    block_size: *mut usize,
) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition.
    let p = unsafe { s::malloc_aligned_at(None, size, align, 0, false) };
    // SAFETY: as in `mi_umalloc`.
    unsafe { put(block_size, usable_or_zero(p)) };
    p as P
}

#[no_mangle]
pub unsafe extern "C" fn mi_uzalloc_aligned(
    size: usize,
    align: usize,
    block_size: *mut usize,
) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition.
    let p = unsafe { s::malloc_aligned_at(None, size, align, 0, true) };
    // SAFETY: as in `mi_umalloc`.
    unsafe { put(block_size, usable_or_zero(p)) };
    p as P
}

/// `mi_realloc`, also giving the usable size of `p` before (0 for NULL) and of the result
/// after (0 when it failed).
#[no_mangle]
pub unsafe extern "C" fn mi_urealloc(
    p: P,
    size: usize,
    block_size_pre: *mut usize,
    block_size_post: *mut usize,
) -> P {
    // SAFETY: `p` is null or a live block of ours; the out-pointers are null or writable:
    // the C caller's contract for `mi_urealloc`.
    unsafe {
        put(block_size_pre, usable_or_zero(p as *const u8));
        let q = s::mi_realloc(None, p as *mut u8, size);
        put(block_size_post, usable_or_zero(q));
        q as P
    }
}

/// `mi_free`, also giving the usable size the block had (0 for NULL or a pointer that is
/// not ours, which is ignored as `mi_free` ignores it).
#[no_mangle]
pub unsafe extern "C" fn mi_ufree(p: P, block_size: *mut usize) {
    let size = if !p.is_null() && crate::segment::checked_segment(p as *const u8).is_some() {
        // SAFETY: `p` lies in a live segment of ours, so by the C caller's contract (that of
        // `mi_free`) it is a live block of ours.
        unsafe { s::usable_size(p as *const u8) }
    } else {
        0
    };
    // SAFETY: `block_size` is null or writable (the C caller's contract for `mi_ufree`).
    unsafe { put(block_size, size) };
    // SAFETY: `p` is null or a block of ours not used afterwards (the caller's contract).
    unsafe { s::free(p as *mut u8) }
}

/// For blocks of `mi_(heap_)malloc_small`: shardalloc's `free` is as fast for them.
#[no_mangle]
pub unsafe extern "C" fn mi_free_small(p: P) {
    // SAFETY: `p` is null or a block of ours not used afterwards (the caller's contract).
    unsafe { s::free(p as *mut u8) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_zalloc_small(h: H, size: usize) -> P {
    // SAFETY: `h` is null or a heap not yet deleted: the caller's contract for `mi_heap_*`.
    unsafe { heaps::mi_heap_zalloc(h, size) }
}

// ---------------------------------------------------------------------------------------
// heap queries (heap semantics)

/// The main heap: the process's heap whose part on each thread is that thread's backing
/// heap (what `malloc` uses unless another default was set).
#[no_mangle]
pub extern "C" fn mi_heap_main() -> H {
    heaps::mi_heap_get_backing()
}

/// The heap whose page holds `p` (NULL for a pointer that is not in a live block of ours,
/// or whose page belongs to no heap: that of an exited thread). Any pointer may be asked.
#[no_mangle]
pub extern "C" fn mi_heap_of(p: *const c_void) -> H {
    match checked_page(p as *const u8) {
        // SAFETY: `checked_page` found a page in use holding `p`, so its header is live;
        // its heap pointer is an atomic field, and a page's heap is a live part (its
        // thread unlinks and abandons its pages before the part goes), whose `shared` is
        // set before it allocates.
        Ok(page) => unsafe {
            let part = (*page).heap();
            if part.is_null() {
                ptr::null_mut()
            } else {
                (*part).shared as H
            }
        },
        Err(_) => ptr::null_mut(),
    }
}

/// Whether `p` points into a block of heap `h` (NULL: the main heap).
#[no_mangle]
pub extern "C" fn mi_heap_contains(h: *const SharedHeap, p: *const c_void) -> bool {
    let h = if h.is_null() { mi_heap_main() } else { h as H };
    heaps::mi_heap_contains_block(h, p)
}

/// Whether `p` points into a block of any heap (mimalloc v3: of any heap of the process).
#[no_mangle]
pub extern "C" fn mi_any_heap_contains(p: *const c_void) -> bool {
    !mi_heap_of(p).is_null()
}

/// Visits the blocks of `h` in abandoned pages too. A live shardalloc heap has no
/// abandoned page (a part's pages are abandoned only when its thread exits, and then they
/// belong to no heap), so this visits the heap, as `mi_heap_visit_blocks` (the calling
/// thread's part).
#[no_mangle]
pub unsafe extern "C" fn mi_heap_visit_abandoned_blocks(
    h: H,
    visit_blocks: bool,
    visitor: Option<heaps::BlockVisitFun>,
    arg: P,
) -> bool {
    // SAFETY: `h` is null or a heap not yet deleted; `visitor` a valid function: the C
    // caller's contract for `mi_heap_visit_*`.
    unsafe { heaps::mi_heap_visit_blocks(h as *const c_void, visit_blocks, visitor, arg) }
}

/// Whether the page of `p` (of heap `h`, or any heap when NULL) uses at most
/// `perc_threshold` percent of its blocks, and is not the page allocations currently go
/// to (mimalloc's test for DragonFly's compaction). "Unsafe": the caller promises no other
/// thread uses the page meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mi_unsafe_heap_page_is_under_utilized(
    h: H,
    p: P,
    perc_threshold: usize,
) -> bool {
    let Ok(page) = checked_page(p as *const u8) else {
        return false;
    };
    // SAFETY: `checked_page` found a page in use holding `p`; the caller promises that
    // no other thread changes it meanwhile (the function's "unsafe" contract).
    let pg = unsafe { &*page };
    if pg.used == pg.capacity || pg.capacity < pg.reserved || pg.capacity == 0 {
        return false;
    }
    // the head of its queue is where allocation goes now
    if pg.links.prev.is_null() {
        return false;
    }
    let part = pg.heap();
    // SAFETY: a page's heap is a live part (see `mi_heap_of`).
    if part.is_null() || (!h.is_null() && unsafe { (*part).shared } != h as *const SharedHeap) {
        return false;
    }
    perc_threshold >= 100 || perc_threshold >= 100 * pg.used as usize / pg.capacity as usize
}

/// mimalloc v3: the same as `mi_any_heap_contains` (mimalloc 2.x: a block start of the
/// default heap).
#[no_mangle]
pub extern "C" fn mi_check_owned(p: *const c_void) -> bool {
    mi_any_heap_contains(p)
}

// ---------------------------------------------------------------------------------------
// theaps: one thread's part of a heap

/// The calling thread's part of `h` (NULL: the main heap), made on first use; NULL when
/// out of memory, when `h` is no longer live, or for a heap in an arena made by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn mi_heap_theap(h: H) -> T {
    let h = if h.is_null() { mi_heap_main() } else { h };
    // SAFETY: `h` is a heap not yet deleted (the caller's contract, or the main heap).
    let part = unsafe { hosted::part_of(h) };
    // SAFETY: the calling thread's part or the static empty heap: readable.
    if unsafe { (*part).is_initialized() } {
        part
    } else {
        ptr::null_mut()
    }
}

/// `theap` as an owned heap when it is a part of the calling thread.
///
/// # Safety
/// `theap` is null or a theap from `mi_heap_theap` / `mi_theap_get_default` not yet
/// released.
unsafe fn owned_theap(theap: T) -> Option<OwnedHeap> {
    if theap.is_null() {
        return None;
    }
    let mine = hosted::heap_initialized();
    // SAFETY: `theap` is a live heap (this function's contract); `mine` is the calling
    // thread's heap or the static empty heap. A part of a heap in an arena has a context of
    // its own, whose host is the context of the thread that uses it.
    unsafe {
        if !(*mine).is_initialized() || !(*theap).is_initialized() {
            return None;
        }
        let ours = (*theap).owner == (*mine).owner || (*(*theap).tld).host == (*mine).tld;
        ours.then(|| OwnedHeap::new(theap))
    }
}

/// Makes `theap` the calling thread's default (what `malloc` uses) if it is a part of
/// this thread (not in an arena); returns the previous default either way.
#[no_mangle]
pub unsafe extern "C" fn mi_theap_set_default(theap: T) -> T {
    let prev = hosted::heap_initialized();
    // SAFETY: `theap` is null or a theap not yet released (the caller's contract).
    if let Some(t) = unsafe { owned_theap(theap) } {
        // SAFETY: a live part of this thread; its `shared` is set.
        let shared = unsafe { (*t.as_ptr()).shared };
        // SAFETY: as above; a heap in an arena is refused by `mi_heap_set_default`.
        let _ = unsafe { heaps::mi_heap_set_default(shared as H) };
    }
    prev
}

#[no_mangle]
pub extern "C" fn mi_theap_get_default() -> T {
    let h = hosted::heap_initialized();
    // SAFETY: live or the empty heap: readable.
    if unsafe { (*h).is_initialized() } {
        h
    } else {
        ptr::null_mut()
    }
}

/// The `mi_theap_*` allocation functions: the `semantics` ones on the thread's part (the
/// empty heap, whose allocations fail, for a theap of another thread).
macro_rules! theap_alloc {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = |$hh:ident| $body:expr;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(theap: T $(, $arg: $ty)*) -> $ret {
            // SAFETY: `theap` is null or a theap not yet released: the C caller's contract
            // for the `mi_theap_*` functions.
            let $hh = Some(match unsafe { owned_theap(theap) } {
                Some(t) => t.as_ptr(),
                None => crate::heap::empty_heap(),
            });
            // SAFETY: `$hh` is a part of the calling thread or the empty heap, what the
            // `heap` argument of the `semantics` functions allows; `p` is null or a live
            // block of ours (the C caller's contract).
            unsafe { $body }
        }
    )*};
}

theap_alloc! {
    mi_theap_malloc(size: usize) -> P = |hh| s::malloc(hh, size) as P;
    mi_theap_zalloc(size: usize) -> P = |hh| s::zalloc(hh, size) as P;
    mi_theap_calloc(count: usize, size: usize) -> P = |hh| s::calloc(hh, count, size) as P;
    mi_theap_malloc_small(size: usize) -> P = |hh| s::malloc(hh, size) as P;
    mi_theap_zalloc_small(size: usize) -> P = |hh| s::zalloc(hh, size) as P;
    mi_theap_malloc_aligned(size: usize, align: usize) -> P =
        |hh| s::malloc_aligned_at(hh, size, align, 0, false) as P;
    mi_theap_realloc(p: P, size: usize) -> P = |hh| s::mi_realloc(hh, p as *mut u8, size) as P;
}

#[no_mangle]
pub unsafe extern "C" fn mi_theap_collect(theap: T, force: bool) {
    // SAFETY: `theap` is null or a theap not yet released (the caller's contract).
    if let Some(t) = unsafe { owned_theap(theap) } {
        let mode = if force {
            crate::collect::Collect::Force
        } else {
            crate::collect::Collect::Normal
        };
        crate::collect::heap_collect(t, mode);
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_theap_visit_blocks(
    theap: *const RawHeap,
    visit_blocks: bool,
    visitor: Option<heaps::BlockVisitFun>,
    arg: P,
) -> bool {
    // SAFETY: `theap` is null or a theap not yet released (the caller's contract).
    let Some(t) = (unsafe { owned_theap(theap as T) }) else {
        return false;
    };
    // SAFETY: a live part of this thread: its `shared` is set; `visitor` is a valid
    // function (the caller's contract).
    unsafe { heaps::visit_part(t, (*t.as_ptr()).shared as H, visit_blocks, visitor, arg) }
}

/// Guard pages after sampled objects: shardalloc has no guarded objects (as a mimalloc
/// build without `MI_GUARDED`, where this does nothing too).
#[no_mangle]
pub extern "C" fn mi_theap_guarded_set_sample_rate(_theap: T, _rate: usize, _seed: usize) {}

/// See `mi_theap_guarded_set_sample_rate`.
#[no_mangle]
pub extern "C" fn mi_theap_guarded_set_size_bound(_theap: T, _min: usize, _max: usize) {}

/// A NUMA node preference: shardalloc does not place memory by NUMA node (as mimalloc on
/// a machine of one node, where this does nothing either).
#[no_mangle]
pub extern "C" fn mi_heap_set_numa_affinity(_h: H, _numa_node: c_int) {}

// ---------------------------------------------------------------------------------------
// process and threads

/// mimalloc uses it to tune reclaiming across threads; shardalloc's reclaim policy does
/// not depend on it.
#[no_mangle]
pub extern "C" fn mi_thread_set_in_threadpool() {}

/// Gives back what the calling thread holds beyond what it uses: a forced collection of
/// its heaps (shardalloc does not track the bytes a thread owns, so `target` is not
/// compared against).
#[no_mangle]
pub extern "C" fn mi_collect_reduce(_target_thread_owned: usize) {
    hosted::collect(true)
}

#[no_mangle]
pub extern "C" fn mi_process_info_print() {
    super::stats::print_process_info(None, ptr::null_mut())
}

#[no_mangle]
pub extern "C" fn mi_process_info_print_out(out: Option<super::options::OutputFun>, arg: P) {
    super::stats::print_process_info(out, arg)
}

// ---------------------------------------------------------------------------------------
// sub-processes (`subproc.rs`): the heaps of one

pub use super::subproc::SubprocId;

/// Calls `f` for each heap the calling thread has a part of (the main heap, then the
/// others) until it returns false; whether all were visited. Other threads' parts are not
/// seen (only a thread walks its own heaps).
pub(crate) fn for_each_thread_heap(mut f: impl FnMut(H) -> bool) -> bool {
    let mine = hosted::heap_initialized();
    // SAFETY: the calling thread's heap or the static empty heap: readable.
    if !unsafe { (*mine).is_initialized() } {
        return true;
    }
    // SAFETY: an initialised heap of this thread: its `tld` is this thread's live data,
    // whose list of heaps only this thread changes.
    let mut h = unsafe { (*(*mine).tld).heaps };
    while !h.is_null() {
        // SAFETY: a heap of this thread's list is live, its `shared` set (the backing
        // heap's: the main heap); `next` is read before `f` runs (which may not delete
        // heaps: mimalloc's contract for the visitor).
        let (next, shared) = unsafe { ((*h).next, (*h).shared) };
        if !shared.is_null() && !f(shared as H) {
            return false;
        }
        h = next;
    }
    true
}

type HeapVisitFun = unsafe extern "C" fn(heap: H, arg: P) -> bool;

/// Visits the heaps of a sub-process (shardalloc: its main heap, and those the calling
/// thread has a part of when it is in that sub-process, see [`for_each_thread_heap`]);
/// false for unknown ids, or when the visitor stopped.
#[no_mangle]
pub unsafe extern "C" fn mi_subproc_visit_heaps(
    subproc: SubprocId,
    visitor: Option<HeapVisitFun>,
    arg: P,
) -> bool {
    let Some(visitor) = visitor else {
        return false;
    };
    if super::subproc::is_current(subproc) {
        // SAFETY: the C caller's visitor, called with a live heap and its `arg`.
        return for_each_thread_heap(|h| unsafe { visitor(h, arg) });
    }
    match super::subproc::main_heap(subproc) {
        // SAFETY: the C caller's visitor, called with a live heap and its `arg`.
        Some(h) => unsafe { visitor(h, arg) },
        None => false,
    }
}
