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
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { ::libc::sysconf(::libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
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
/// `heap` is `None` or a heap of the calling thread; `align` is a power of two.
#[inline(always)]
unsafe fn raw_alloc(heap: Option<*mut RawHeap>, size: usize, align: usize, zero: bool) -> *mut u8 {
    // SAFETY: as the caller guarantees.
    unsafe {
        match heap {
            None => hosted::alloc(size, align, zero),
            Some(h) => crate::global::heap_alloc(h, size, align, zero),
        }
    }
}

/// Zeroes the usable bytes of `p` from `from` on.
///
/// # Safety
/// `p` is a live block of ours.
unsafe fn zero_tail(p: *mut u8, from: usize) {
    // SAFETY: the usable size bytes of a live block are ours to write.
    unsafe {
        let usable = crate::free::usable_size(p);
        if usable > from {
            ptr::write_bytes(p.add(from), 0, usable - from);
        }
    }
}

/// Allocates `size` bytes such that `p + offset` is aligned to `align` (a power of two
/// up to `ALIGNMENT_MAX`). Null on failure (no errno).
///
/// # Safety
/// `heap` is `None` or a heap of the calling thread.
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
    // SAFETY: as the caller guarantees; the block is ours.
    unsafe {
        if adjust == 0 {
            let p = if align <= crate::size_class::WORD {
                raw_alloc(heap, if zero { zero_size(size) } else { size }, 1, zero)
            } else {
                raw_alloc(heap, size, align, zero)
            };
            if zero && !p.is_null() && align > crate::size_class::WORD {
                zero_tail(p, size);
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
        let b = raw_alloc(heap, total, align, zero);
        if b.is_null() {
            return b;
        }
        if ptr_segment(b.add(adjust)) != ptr_segment(b) {
            // cannot happen with the core's layouts (see above); never hand out a
            // pointer that `free` would not recognise
            free(b);
            return ptr::null_mut();
        }
        // `p` points inside the block: mark its page so that `free` and `usable_size`
        // find the block start. The page belongs to our heap (we just allocated from it).
        crate::alloc::mark_aligned(b);
        let p = b.add(adjust);
        if zero {
            zero_tail(p, size);
        }
        p
    }
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
    // SAFETY: as the caller guarantees.
    unsafe {
        if p.is_null() {
            return raw_alloc_at(heap, new_size, align, offset, zero);
        }
        let size = crate::free::usable_size(p);
        if new_size <= size
            && new_size >= size / 2
            && (p as usize).wrapping_add(offset) & (align - 1) == 0
        {
            return p;
        }
        let q = raw_alloc_at(heap, new_size, align, offset, false);
        if q.is_null() {
            return q;
        }
        let keep = size.min(new_size);
        ptr::copy_nonoverlapping(p, q, keep);
        if zero {
            zero_tail(q, keep);
        }
        free(p);
        q
    }
}

// ---------------------------------------------------------------------------------------
// the C semantics

/// `malloc`: a block of at least `size` bytes (16-byte aligned when `size` is a multiple
/// of 16); `malloc(0)` is a unique non-null block.
///
/// # Safety
/// `heap` is `None` or a heap of the calling thread.
#[inline(always)]
pub(crate) unsafe fn malloc(heap: Option<*mut RawHeap>, size: usize) -> *mut u8 {
    // SAFETY: as the caller guarantees.
    or_enomem(unsafe { raw_alloc(heap, size, 1, false) })
}

/// `mi_zalloc`: as `malloc`, with the whole usable block zeroed.
///
/// # Safety
/// As [`malloc`].
pub(crate) unsafe fn zalloc(heap: Option<*mut RawHeap>, size: usize) -> *mut u8 {
    // SAFETY: as the caller guarantees.
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
        // SAFETY: as the caller guarantees.
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
        // SAFETY: as the caller guarantees.
        Some(total) => unsafe { malloc(heap, total) },
        None => ptr::null_mut(),
    }
}

/// Checks a pointer handed to `realloc`-like functions: null or ours. Reports others
/// (`EINVAL`) and returns false.
fn realloc_arg_ok(p: *mut u8, func: &str) -> bool {
    if p.is_null() || checked_segment(p).is_some() {
        return true;
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
    // SAFETY: as the caller guarantees.
    unsafe {
        let h = heap_or_default(heap);
        or_enomem(crate::alloc::realloc(h, (*h).owner, p, size, 1, false))
    }
}

/// `realloc` (glibc): `realloc(p, 0)` with `p != NULL` frees `p` and returns NULL.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if size == 0 && !p.is_null() {
        // SAFETY: as the caller guarantees.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: as the caller guarantees.
    unsafe { mi_realloc(None, p, size) }
}

/// `reallocarray` (glibc): overflow fails with `ENOMEM`, leaving `p` alone.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn reallocarray(p: *mut u8, count: usize, size: usize) -> *mut u8 {
    match count_size(count, size) {
        // SAFETY: as the caller guarantees.
        Some(total) => unsafe { realloc(p, total) },
        None => ptr::null_mut(),
    }
}

/// `mi_reallocf`: as `mi_realloc`, but frees `p` when it fails.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn reallocf(heap: Option<*mut RawHeap>, p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: as the caller guarantees.
    unsafe {
        let q = mi_realloc(heap, p, size);
        if q.is_null() && !p.is_null() {
            free(p);
        }
        q
    }
}

/// `mi_rezalloc`: as `mi_realloc`, and the bytes beyond the old usable size are zeroed.
///
/// # Safety
/// As [`mi_realloc`].
pub(crate) unsafe fn rezalloc(heap: Option<*mut RawHeap>, p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: as the caller guarantees.
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
    // SAFETY: as the caller guarantees.
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
    // SAFETY: as the caller guarantees.
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
    // SAFETY: default heap; `align` checked.
    let p = unsafe { raw_alloc_at(None, size, align, 0, false) };
    if p.is_null() {
        return ::libc::ENOMEM;
    }
    // SAFETY: `out` is writable (checked non-null, the caller's contract).
    unsafe { *out = p };
    0
}

/// `aligned_alloc` (C11): a non-power-of-two alignment fails with `EINVAL`.
pub(crate) fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    // SAFETY: the default heap.
    unsafe { malloc_aligned_at(None, size, align, 0, false) }
}

/// `memalign` (glibc): an alignment that is not a power of two is rounded up to one, as
/// glibc does; beyond `ALIGNMENT_MAX` fails with `EINVAL`.
pub(crate) fn memalign(align: usize, size: usize) -> *mut u8 {
    if align > ALIGNMENT_MAX {
        set_errno(::libc::EINVAL);
        return ptr::null_mut();
    }
    let align = align.max(1).next_power_of_two();
    // SAFETY: the default heap.
    unsafe { malloc_aligned_at(None, size, align, 0, false) }
}

/// `valloc`: page-aligned.
pub(crate) fn valloc(size: usize) -> *mut u8 {
    // SAFETY: the default heap.
    unsafe { malloc_aligned_at(None, size, os_page_size(), 0, false) }
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (at least one).
pub(crate) fn pvalloc(size: usize) -> *mut u8 {
    let page = os_page_size();
    let Some(rounded) = size.checked_add(page - 1) else {
        return enomem();
    };
    let rounded = (rounded & !(page - 1)).max(page);
    // SAFETY: the default heap.
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
    // SAFETY: as the caller guarantees.
    unsafe { super::check::free(p) }
}

/// `malloc_usable_size`: 0 for null and for pointers that are not ours.
///
/// # Safety
/// `p` is null, not ours, or a live block of ours.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    if checked_segment(p).is_none() {
        return 0;
    }
    // SAFETY: a live block of ours (the caller's contract, segment checked).
    unsafe { crate::free::usable_size(p) }
}

/// `mi_expand`: `p` when `size` fits in its block, else NULL (nothing moves).
///
/// # Safety
/// As [`usable_size`].
pub(crate) unsafe fn expand(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: as the caller guarantees.
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
    // SAFETY: as the caller guarantees.
    unsafe {
        let len = ::libc::strnlen(s as *const ::libc::c_char, n);
        let Some(total) = len.checked_add(1) else {
            return enomem();
        };
        let p = malloc(heap, total);
        if !p.is_null() {
            ptr::copy_nonoverlapping(s, p, len);
            *p.add(len) = 0;
        }
        p
    }
}

/// `mi_realpath`: into `resolved` if given, else into a new block of ours.
///
/// # Safety
/// `fname` is a NUL-terminated string; `resolved` is null or holds `PATH_MAX` bytes.
pub(crate) unsafe fn realpath(
    heap: Option<*mut RawHeap>,
    fname: *const u8,
    resolved: *mut u8,
) -> *mut u8 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if !resolved.is_null() {
            return ::libc::realpath(fname as *const _, resolved as *mut _) as *mut u8;
        }
        let mut buf = [0u8; ::libc::PATH_MAX as usize + 1];
        let r = ::libc::realpath(fname as *const _, buf.as_mut_ptr() as *mut _);
        if r.is_null() {
            return ptr::null_mut();
        }
        strndup(heap, buf.as_ptr(), buf.len())
    }
}
