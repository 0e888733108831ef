//! What the C allocation functions mean, in one place (as snmalloc's `global/libc.h`):
//! every entry point in `exports.rs`, `mi.rs` and `heaps.rs` is a short forward to here.
//!
//! - every failed allocation sets `errno = ENOMEM` (bad alignments: `EINVAL`);
//! - `n * size` overflows in `calloc`, `reallocarray`, `mi_mallocn`, ... fail;
//! - `malloc(0)` gives a unique, non-null block; `realloc(p, 0)` frees `p` and returns
//!   NULL (glibc), where `mi_realloc(p, 0)` returns a small block (mimalloc);
//! - zero-initialising allocations zero the whole usable block, so that `mi_rezalloc`
//!   and `mi_recalloc` can grow a block in place and still hand out zeroes;
//! - `free` of a pointer that shardalloc never handed out is reported and ignored.
//!
//! Functions taking `heap: Option<*mut RawHeap>` allocate from that heap, or from the
//! calling thread's default heap for `None`.

use core::ptr;

use super::set_errno;
use crate::global::hosted;
use crate::heap::RawHeap;
use crate::segment::{checked_segment, ptr_segment};
use crate::size_class::{good_size, LARGE_OBJ_SIZE_MAX, SEGMENT_SIZE};

/// Largest alignment served (beyond it, allocation fails with `ENOMEM`): aligned huge
/// blocks reserve `alignment` bytes of address space.
pub(crate) const ALIGNMENT_MAX: usize = 1 << 30;

/// OS page size (for `valloc`, `pvalloc`).
pub(crate) fn os_page_size() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Relaxed);
    if p != 0 {
        return p;
    }
    let p = super::sys::page_size();
    PAGE.store(p, Relaxed);
    p
}

#[cold]
#[inline(never)]
fn enomem() -> *mut u8 {
    set_errno(::libc::ENOMEM);
    ptr::null_mut()
}

/// Null with `errno = ENOMEM` when `p` is null.
#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        enomem()
    } else {
        p
    }
}

/// The size to ask for so that the whole usable block gets zeroed: for non-huge sizes the
/// block is exactly `good_size(size)`; huge blocks are fresh, zeroed mappings.
#[inline]
fn zero_size(size: usize) -> usize {
    if size <= LARGE_OBJ_SIZE_MAX {
        good_size(size)
    } else {
        size
    }
}

// ---------------------------------------------------------------------------------------
// raw allocation (no errno): from a heap or the default heap

/// The calling thread's heap when `heap` is `None`, initialised.
pub(crate) fn heap_or_default(heap: Option<*mut RawHeap>) -> *mut RawHeap {
    heap.unwrap_or_else(hosted::heap_initialized)
}

/// # Safety
/// `heap` is `None`, a heap of the calling thread, or the empty heap; `align` is a power
/// of two.
#[inline(always)]
unsafe fn raw_alloc(heap: Option<*mut RawHeap>, size: usize, align: usize, zero: bool) -> *mut u8 {
    match heap {
        // SAFETY: `align` is a power of two (this function's contract: callers pass 1 or an
        // alignment that `alignment_ok`/`posix_memalign` checked), which is all
        // `hosted::alloc` asks.
        None => unsafe { hosted::alloc(size, align, zero) },
        // SAFETY: `h` is a heap of the calling thread or the empty heap (this function's
        // contract: `heaps.rs` passes only heaps that passed `owned(h)`, else the empty
        // heap), as `heap_alloc` requires; `align` is a power of two as above.
        Some(h) => unsafe { crate::global::heap_alloc(h, size, align, zero) },
    }
}

/// Zeroes the usable bytes of `p` from `from` on.
///
/// # Safety
/// `p` is a live block of ours.
unsafe fn zero_tail(p: *mut u8, from: usize) {
    // SAFETY: `p` is a live block of ours (this function's contract: its callers pass a
    // block they just allocated).
    let usable = unsafe { crate::free::usable_size(p) };
    if usable > from {
        // SAFETY: `from < usable`, so `p + from .. p + usable` lies within the usable bytes
        // of the live block `p`, which its allocating caller owns and may write.
        unsafe { ptr::write_bytes(p.add(from), 0, usable - from) };
    }
}

/// Allocates `size` bytes such that `p + offset` is aligned to `align` (a power of two
/// up to `ALIGNMENT_MAX`). Null on failure (no errno).
///
/// # Safety
/// `heap` is `None`, a heap of the calling thread, or the empty heap.
unsafe fn raw_alloc_at(
    heap: Option<*mut RawHeap>,
    size: usize,
    align: usize,
    offset: usize,
    zero: bool,
) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align <= ALIGNMENT_MAX);
    // p ≡ -offset (mod align)
    let adjust = align.wrapping_sub(offset) & (align - 1);
    if adjust == 0 {
        let p = if align <= crate::size_class::WORD {
            // SAFETY: `heap` as this function's contract says; 1 is a power of two.
            unsafe { raw_alloc(heap, if zero { zero_size(size) } else { size }, 1, zero) }
        } else {
            // SAFETY: `heap` as this function's contract says; `align` is a power of two
            // (this function's contract, asserted above).
            unsafe { raw_alloc(heap, size, align, zero) }
        };
        if zero && !p.is_null() && align > crate::size_class::WORD {
            // SAFETY: `p` is non-null, so a live block just allocated above.
            unsafe { zero_tail(p, size) };
        }
        return p;
    }
    // `p` inside the block must find the block's segment through `p - 1`, so it may
    // lie at most a segment size into a huge segment; blocks aligned to a segment
    // size or more already start there. (mimalloc likewise refuses an offset with
    // its largest alignments.)
    if align >= SEGMENT_SIZE {
        return ptr::null_mut();
    }
    let Some(total) = size.checked_add(adjust) else {
        return ptr::null_mut();
    };
    // SAFETY: `heap` as this function's contract says; `align` is a power of two (this
    // function's contract, asserted above).
    let b = unsafe { raw_alloc(heap, total, align, zero) };
    if b.is_null() {
        return b;
    }
    // SAFETY: `b` is a live block of `total = size + adjust` bytes, so `b + adjust` is
    // within it (or one past its end when `size == 0`).
    let p = unsafe { b.add(adjust) };
    if ptr_segment(p) != ptr_segment(b) {
        // cannot happen with the core's layouts (see above); never hand out a
        // pointer that `free` would not recognise
        // SAFETY: `b` is the block just allocated above, not handed out.
        unsafe { free(b) };
        return ptr::null_mut();
    }
    // `p` points inside the block: mark its page so that `free` and `usable_size`
    // find the block start.
    // SAFETY: `b` is a live block the calling thread just allocated from `heap`, which is
    // its own heap (the default heap, or one that passed `owned`: this function's
    // contract; the empty heap allocates nothing, so `b` would be null).
    unsafe { crate::alloc::mark_aligned(b) };
    if zero {
        // SAFETY: `p` points into the live block `b`, now marked as holding aligned
        // pointers, so `usable_size(p)` measures from `p` to the end of `b`.
        unsafe { zero_tail(p, size) };
    }
    p
}

/// Re-allocates `p` (null: allocates) to `new_size` bytes with `p + offset` aligned to
/// `align`; in place when it still fits (and wastes at most half). Null on failure, `p`
/// untouched. With `zero`, the bytes beyond the old usable size are zeroed.
///
/// # Safety
/// `heap` is `None` or a heap of the calling thread; `p` is null or a live block of ours.
unsafe fn raw_realloc_at(
    heap: Option<*mut RawHeap>,
    p: *mut u8,
    new_size: usize,
    align: usize,
    offset: usize,
    zero: bool,
) -> *mut u8 {
    if p.is_null() {
        // SAFETY: `heap` is `None`, a heap of the calling thread or the empty heap (this
        // function's contract).
        return unsafe { raw_alloc_at(heap, new_size, align, offset, zero) };
    }
    // SAFETY: `p` is non-null, so a live block of ours (this function's contract; its
    // caller `realloc_aligned_at` checked its segment with `realloc_arg_ok`).
    let size = unsafe { crate::free::usable_size(p) };
    if new_size <= size
        && new_size >= size / 2
        && (p as usize).wrapping_add(offset) & (align - 1) == 0
    {
        return p;
    }
    // SAFETY: `heap` as above.
    let q = unsafe { raw_alloc_at(heap, new_size, align, offset, false) };
    if q.is_null() {
        return q;
    }
    let keep = size.min(new_size);
    // SAFETY: `p` has `size >= keep` usable bytes, the new block `q` has at least
    // `new_size >= keep`, and a fresh block does not overlap the live block `p`.
    unsafe { ptr::copy_nonoverlapping(p, q, keep) };
    if zero {
        // SAFETY: `q` is the live block just allocated above.
        unsafe { zero_tail(q, keep) };
    }
    // SAFETY: `p` is a live block of ours whose contents now live in `q`; the C caller
    // does not use `p` after a successful realloc (realloc's contract).
    unsafe { free(p) };
    q
}

// ---------------------------------------------------------------------------------------
// the C semantics

/// `malloc`: a block of at least `size` bytes (16-byte aligned when `size` is a multiple
/// of 16, and on 64-bit targets whenever `size` is above 8, as glibc's and mimalloc's: the
/// tiny classes step by 16 bytes, `size_class::ALIGN2W`); `malloc(0)` is a unique non-null
/// block.
///
/// # Safety
/// `heap` is `None` (the calling thread's default heap), a heap of the calling thread, or
/// the empty heap (allocation then fails with `ENOMEM`).
#[inline(always)]
pub(crate) unsafe fn malloc(heap: Option<*mut RawHeap>, size: usize) -> *mut u8 {
    // SAFETY: `heap` is as `raw_alloc` requires (this function's contract); 1 is a power
    // of two.
    or_enomem(unsafe { raw_alloc(heap, size, 1, false) })
}

/// `mi_zalloc`: as `malloc`, with the whole usable block zeroed.
///
/// # Safety
/// As [`malloc`].
pub(crate) unsafe fn zalloc(heap: Option<*mut RawHeap>, size: usize) -> *mut u8 {
    // SAFETY: `heap` is as `raw_alloc` requires (this function's contract, as `malloc`'s);
    // 1 is a power of two.
    or_enomem(unsafe { raw_alloc(heap, zero_size(size), 1, true) })
}

/// `count * size`, or `None` on overflow (with `errno = ENOMEM`).
#[inline]
pub(crate) fn count_size(count: usize, size: usize) -> Option<usize> {
    match count.checked_mul(size) {
        Some(t) => Some(t),
        None => {
            super::options::warning(format_args!(
                "allocation request is too large ({count} * {size} bytes)"
            ));
            set_errno(::libc::ENOMEM);
            None
        }
    }
}

/// `calloc`: `count * size` zeroed bytes; overflow fails with `ENOMEM`.
///
/// # Safety
/// As [`malloc`].
pub(crate) unsafe fn calloc(heap: Option<*mut RawHeap>, count: usize, size: usize) -> *mut u8 {
    match count_size(count, size) {
        // SAFETY: `heap` is as `zalloc` requires (this function's contract is `malloc`'s).
        Some(total) => unsafe { zalloc(heap, total) },
        None => ptr::null_mut(),
    }
}

/// `mi_mallocn`: `count * size` bytes; overflow fails with `ENOMEM`.
///
/// # Safety
/// As [`malloc`].
pub(crate) unsafe fn mallocn(heap: Option<*mut RawHeap>, count: usize, size: usize) -> *mut u8 {
    match count_size(count, size) {
        // SAFETY: `heap` is as `malloc` requires (this function's contract is `malloc`'s).
        Some(total) => unsafe { malloc(heap, total) },
        None => ptr::null_mut(),
    }
}

/// Checks a pointer handed to `realloc`-like functions: null or ours, and in checked mode
/// a live block (`check::live_block_checked`: `realloc` reads the block and frees it, so a
/// block freed already is reported as the double free it is, not copied from and freed
/// again). Reports others (`EINVAL`) and returns false.
fn realloc_arg_ok(p: *mut u8, func: &str) -> bool {
    if p.is_null() {
        return true;
    }
    if checked_segment(p).is_some() {
        if !super::options::CHECK_FREE.load(core::sync::atomic::Ordering::Relaxed)
            || super::check::live_block_checked(p, " (realloc)")
        {
            return true;
        }
        set_errno(::libc::EINVAL);
        return false;
    }
    super::options::error(
        ::libc::EINVAL,
        format_args!("{func}: invalid pointer {p:p} (not allocated by shardalloc)"),
    );
    set_errno(::libc::EINVAL);
    false
}

/// `mi_realloc`: `realloc` without the glibc `size == 0` rule (returns a small block).
/// On failure returns NULL with `ENOMEM` and leaves `p` alone.
///
/// # Safety
/// `heap` as in [`malloc`]; `p` is null or a live block of ours.
pub(crate) unsafe fn mi_realloc(heap: Option<*mut RawHeap>, p: *mut u8, size: usize) -> *mut u8 {
    if !realloc_arg_ok(p, "realloc") {
        return ptr::null_mut();
    }
    let h = heap_or_default(heap);
    // SAFETY: `h` is the calling thread's initialised default heap, a heap of the calling
    // thread, or the static empty heap (this function's contract): a `RawHeap` that stays
    // allocated for this call.
    let owner = unsafe { (*h).owner };
    // SAFETY: `h` and `owner` as above (the core's `realloc` tolerates the empty heap: it
    // allocates nothing and touches no queue of it); `p` is null or a live block of ours
    // (this function's contract; its segment was checked by `realloc_arg_ok`); 1 is a
    // power of two.
    or_enomem(unsafe { crate::alloc::realloc(h, owner, p, usize::MAX, size, 1, false) })
}

/// `realloc` (glibc): `realloc(p, 0)` with `p != NULL` frees `p` and returns NULL.
///
/// # Safety
/// As [`mi_realloc`].
#[cfg(unix)] // (`exports.rs` only: the C runtime keeps its own `realloc` on Windows)
pub(crate) unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if size == 0 && !p.is_null() {
        // SAFETY: `p` is a live block of ours (this function's contract), given up by the
        // C caller: `realloc(p, 0)` frees it (glibc).
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: `None` is the default heap; `p` is null or a live block of ours (this
    // function's contract).
    unsafe { mi_realloc(None, p, size) }
}

/// `reallocarray` (glibc): overflow fails with `ENOMEM`, leaving `p` alone.
///
/// # Safety
/// As [`mi_realloc`].
#[cfg(unix)] // (`exports.rs` only: the C runtime keeps its own `realloc` on Windows)
pub(crate) unsafe fn reallocarray(p: *mut u8, count: usize, size: usize) -> *mut u8 {
    match count_size(count, size) {
        // SAFETY: `p` is null or a live block of ours (this function's contract).
        Some(total) => unsafe { realloc(p, total) },
        None => ptr::null_mut(),
    }
}

/// `mi_reallocf`: as `mi_realloc`, but frees `p` when it fails.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn reallocf(heap: Option<*mut RawHeap>, p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: `heap` and `p` are as `mi_realloc` requires (this function's contract is
    // `mi_realloc`'s).
    let q = unsafe { mi_realloc(heap, p, size) };
    if q.is_null() && !p.is_null() {
        // SAFETY: the re-allocation failed, so `p` is still a live block of ours (or, if
        // `realloc_arg_ok` rejected it, a pointer `free` reports and ignores); the C caller
        // gives it up: `mi_reallocf` frees it on failure.
        unsafe { free(p) };
    }
    q
}

/// `mi_rezalloc`: as `mi_realloc`, and the bytes beyond the old usable size are zeroed.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn rezalloc(heap: Option<*mut RawHeap>, p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: `heap` and `p` are as `realloc_aligned_at` requires (this function's
    // contract is `mi_realloc`'s, as is that one's).
    unsafe { realloc_aligned_at(heap, p, size, 1, 0, true) }
}

/// Checks an alignment for the `mi_*_aligned` functions: a power of two (else `EINVAL`)
/// up to `ALIGNMENT_MAX` (else `ENOMEM`).
fn alignment_ok(align: usize) -> bool {
    if !align.is_power_of_two() {
        super::options::error(
            ::libc::EINVAL,
            format_args!("aligned allocation: alignment {align} is not a power of two"),
        );
        set_errno(::libc::EINVAL);
        return false;
    }
    if align > ALIGNMENT_MAX {
        set_errno(::libc::ENOMEM);
        return false;
    }
    true
}

/// An alignment offset is possible below a segment size of alignment (see `raw_alloc_at`).
fn offset_ok(align: usize, offset: usize) -> bool {
    if align >= SEGMENT_SIZE && offset & (align - 1) != 0 {
        super::options::error(
            ::libc::EINVAL,
            format_args!(
                "aligned allocation: alignment {align} cannot be combined with offset {offset}"
            ),
        );
        set_errno(::libc::EINVAL);
        return false;
    }
    true
}

/// `mi_malloc_aligned_at` and friends: `size` bytes with `p + offset` aligned to `align`.
/// With an offset that is not a multiple of `align`, alignments of a segment size (4 MiB)
/// and more fail with `EINVAL`.
///
/// # Safety
/// As [`malloc`].
pub(crate) unsafe fn malloc_aligned_at(
    heap: Option<*mut RawHeap>,
    size: usize,
    align: usize,
    offset: usize,
    zero: bool,
) -> *mut u8 {
    if !alignment_ok(align) || !offset_ok(align, offset) {
        return ptr::null_mut();
    }
    // SAFETY: `heap` is as `raw_alloc_at` requires (this function's contract is
    // `malloc`'s); `align` is a power of two up to `ALIGNMENT_MAX` (`alignment_ok`).
    or_enomem(unsafe { raw_alloc_at(heap, size, align, offset, zero) })
}

/// `mi_realloc_aligned_at` and friends.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn realloc_aligned_at(
    heap: Option<*mut RawHeap>,
    p: *mut u8,
    size: usize,
    align: usize,
    offset: usize,
    zero: bool,
) -> *mut u8 {
    if !alignment_ok(align) || !offset_ok(align, offset) || !realloc_arg_ok(p, "realloc") {
        return ptr::null_mut();
    }
    // SAFETY: `heap` and `p` are as `raw_realloc_at` requires (this function's contract is
    // `mi_realloc`'s; `p`'s segment checked by `realloc_arg_ok`); `align` is a power of two
    // up to `ALIGNMENT_MAX` (`alignment_ok`).
    or_enomem(unsafe { raw_realloc_at(heap, p, size, align, offset, zero) })
}

/// `posix_memalign`: `EINVAL` (returned, errno untouched) unless `align` is a power of
/// two multiple of `sizeof(void*)`; `ENOMEM` when out of memory.
///
/// # Safety
/// `out` is null or writable.
pub(crate) unsafe fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    if out.is_null()
        || !align.is_power_of_two()
        || !align.is_multiple_of(core::mem::size_of::<usize>())
    {
        return ::libc::EINVAL;
    }
    if align > ALIGNMENT_MAX {
        return ::libc::ENOMEM;
    }
    // SAFETY: `None` is the default heap; `align` is a power of two up to `ALIGNMENT_MAX`
    // (checked above).
    let p = unsafe { raw_alloc_at(None, size, align, 0, false) };
    if p.is_null() {
        return ::libc::ENOMEM;
    }
    // SAFETY: `out` is non-null (checked above), so writable: `posix_memalign`'s contract
    // with its C caller (a pointer to a `void *`).
    unsafe { *out = p };
    0
}

/// `aligned_alloc` (C11): a non-power-of-two alignment fails with `EINVAL`.
pub(crate) fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    // SAFETY: `None` is the default heap, `malloc_aligned_at`'s only precondition.
    unsafe { malloc_aligned_at(None, size, align, 0, false) }
}

/// `memalign` (glibc): an alignment that is not a power of two is rounded up to one, as
/// glibc does; beyond `ALIGNMENT_MAX` fails with `EINVAL`.
#[cfg(unix)] // (`exports.rs` only: the C runtime keeps its own `realloc` on Windows)
pub(crate) fn memalign(align: usize, size: usize) -> *mut u8 {
    if align > ALIGNMENT_MAX {
        set_errno(::libc::EINVAL);
        return ptr::null_mut();
    }
    let align = align.max(1).next_power_of_two();
    // SAFETY: `None` is the default heap, `malloc_aligned_at`'s only precondition.
    unsafe { malloc_aligned_at(None, size, align, 0, false) }
}

/// `valloc`: page-aligned.
pub(crate) fn valloc(size: usize) -> *mut u8 {
    // SAFETY: `None` is the default heap, `malloc_aligned_at`'s only precondition.
    unsafe { malloc_aligned_at(None, size, os_page_size(), 0, false) }
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (at least one).
pub(crate) fn pvalloc(size: usize) -> *mut u8 {
    let page = os_page_size();
    let Some(rounded) = size.checked_add(page - 1) else {
        return enomem();
    };
    let rounded = (rounded & !(page - 1)).max(page);
    // SAFETY: `None` is the default heap, `malloc_aligned_at`'s only precondition.
    unsafe { malloc_aligned_at(None, rounded, page, 0, false) }
}

/// `free`: null is ignored; pointers shardalloc did not hand out are reported and ignored
/// (see `check.rs`); in checked mode (`show_errors`), double frees too.
///
/// # Safety
/// `p` is null or a block of ours not used afterwards (violations are detected as far as
/// `check.rs` says, not all).
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: `p` is null or a block of ours not used afterwards (this function's
    // contract, the same as `check::free`'s).
    unsafe { super::check::free(p) }
}

/// A sized free (`mi_free_size`, `free_sized`, sized `operator delete`): as [`free`]; the
/// size is a hint, which secure mode checks against the block (a size the block cannot
/// have been allocated with is reported; the block is still freed).
///
/// # Safety
/// As [`free`].
#[inline(always)]
pub(crate) unsafe fn free_sized(p: *mut u8, size: usize, aligned: bool) {
    #[cfg(feature = "secure")]
    if !p.is_null() {
        use crate::secure::{report, ErrorKind};
        // SAFETY: `default_heap()` is the calling thread's live default heap or the static
        // empty heap, both readable.
        let owner = unsafe { (*hosted::default_heap()).owner };
        match crate::free_check::secure_check(p, owner) {
            Err(kind) => return report(kind, p as usize, None),
            Ok(_) => {
                // SAFETY: `secure_check` found `p` to be a live block of ours.
                let usable = unsafe { crate::free::usable_size(p) };
                if !crate::free_check::size_fits(size, usable, aligned) {
                    report(ErrorKind::SizeMismatch, p as usize, Some(size));
                }
            }
        }
    }
    let _ = (size, aligned);
    // SAFETY: as this function's contract.
    unsafe { free(p) }
}

/// `malloc_usable_size`: 0 for null and for pointers that are not ours (secure mode: also
/// for pointers that are not a live block of ours, reported).
///
/// # Safety
/// `p` is null, not ours, or a live block of ours.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    #[cfg(feature = "secure")]
    if !p.is_null() {
        // SAFETY: as in `free_sized`.
        let owner = unsafe { (*hosted::default_heap()).owner };
        if crate::free_check::secure_check(p as *mut u8, owner).is_err() {
            crate::secure::report(crate::secure::ErrorKind::InvalidFree, p as usize, None);
            return 0;
        }
    }
    if checked_segment(p).is_none() {
        return 0;
    }
    // SAFETY: `p` lies in a live segment of ours (checked above), so by this function's
    // contract it is a live block of ours.
    unsafe { crate::free::usable_size(p) }
}

/// `mi_expand`: `p` when `size` fits in its block, else NULL (nothing moves).
///
/// # Safety
/// As [`usable_size`].
pub(crate) unsafe fn expand(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: `p` is null, not ours, or a live block of ours (this function's contract is
    // `usable_size`'s).
    if !p.is_null() && size <= unsafe { usable_size(p) } {
        p
    } else {
        ptr::null_mut()
    }
}

/// `mi_good_size`: the usable size a request of `size` bytes gets.
pub(crate) fn good_usable_size(size: usize) -> usize {
    if size <= LARGE_OBJ_SIZE_MAX {
        good_size(size)
    } else {
        let page = os_page_size();
        size.checked_add(page - 1).map_or(size, |s| s & !(page - 1))
    }
}

/// `strdup`-like: a copy of the NUL-terminated `s`, at most `n` bytes of it.
///
/// # Safety
/// `s` is null or a NUL-terminated string (or readable for `n` bytes).
pub(crate) unsafe fn strndup(heap: Option<*mut RawHeap>, s: *const u8, n: usize) -> *mut u8 {
    if s.is_null() {
        return ptr::null_mut();
    }
    let mut len = 0;
    // SAFETY: `s` is non-null, so a NUL-terminated string or readable for `n` bytes (this
    // function's contract): the loop reads no further than either (as `strnlen`).
    while len < n && unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    let Some(total) = len.checked_add(1) else {
        return enomem();
    };
    // SAFETY: `heap` is as `malloc` requires (this function's contract is `malloc`'s).
    let p = unsafe { malloc(heap, total) };
    if !p.is_null() {
        // SAFETY: `s` is readable for `len` bytes (`strnlen` found them before a NUL or
        // `n`); `p` is a fresh block of `len + 1` bytes, disjoint from `s`.
        unsafe {
            ptr::copy_nonoverlapping(s, p, len);
            *p.add(len) = 0;
        }
    }
    p
}

/// `mi_realpath`: into `resolved` if given, else into a new block of ours.
///
/// # Safety
/// `heap` as in [`malloc`]; `fname` is a NUL-terminated string; `resolved` is null or
/// holds `PATH_MAX` bytes.
pub(crate) unsafe fn realpath(
    heap: Option<*mut RawHeap>,
    fname: *const u8,
    resolved: *mut u8,
) -> *mut u8 {
    if !resolved.is_null() {
        // SAFETY: `fname` is a C string and `resolved` holds `PATH_MAX` bytes (this
        // function's contract), what `sys::realpath` requires.
        return unsafe { super::sys::realpath(fname, resolved) };
    }
    let mut buf = [0u8; super::sys::PATH_MAX];
    // SAFETY: `fname` is a C string (this function's contract); `buf` is a stack buffer
    // of `PATH_MAX` bytes.
    let r = unsafe { super::sys::realpath(fname, buf.as_mut_ptr()) };
    if r.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `heap` as this function's contract says; `buf` is readable for its whole
    // length (and `realpath` NUL-terminated it).
    unsafe { strndup(heap, buf.as_ptr(), buf.len()) }
}
