//! mimalloc's C API (`include/mimalloc.h`, the functions mimalloc 2.x had) on the
//! calling thread's default heap: basic, aligned, zero-initialised re-allocation, posix
//! and C++ (`mi_new*`) families, and process/thread control. Heaps are in `heaps.rs`,
//! options in `options.rs`, statistics in `stats.rs`.

use core::ffi::{c_char, c_int, c_void};
use core::ptr;

use super::semantics as s;
use crate::global::hosted;

type P = *mut c_void;

// ---------------------------------------------------------------------------------------
// basic

#[no_mangle]
pub unsafe extern "C" fn mi_malloc(size: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc(None, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_calloc(count: usize, size: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::calloc(None, count, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_realloc(p: P, size: usize) -> P {
    // SAFETY: `None` is the default heap; `p` is null or a live block of ours: the C
    // caller's contract for `mi_realloc` (include/mimalloc.h).
    unsafe { s::mi_realloc(None, p as *mut u8, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_expand(p: P, size: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::expand(p as *mut u8, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi__expand(p: P, size: usize) -> P {
    // SAFETY: `p` is null, not ours or a live block of ours: the C caller's contract for
    // `mi__expand`, the same as `mi_expand`'s.
    unsafe { mi_expand(p, size) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_free(p: P) {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::free(p as *mut u8) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_strdup(str: *const c_char) -> *mut c_char {
    // SAFETY: `None` is the default heap; `str` is null or a NUL-terminated string: the C
    // caller's contract for `mi_strdup`.
    unsafe { s::strndup(None, str as *const u8, usize::MAX) as *mut c_char }
}

#[no_mangle]
pub unsafe extern "C" fn mi_strndup(str: *const c_char, n: usize) -> *mut c_char {
    // SAFETY: `None` is the default heap; `str` is null or a NUL-terminated string or
    // readable for `n` bytes: the C caller's contract for `mi_strndup`.
    unsafe { s::strndup(None, str as *const u8, n) as *mut c_char }
}

#[no_mangle]
pub unsafe extern "C" fn mi_realpath(fname: *const c_char, resolved: *mut c_char) -> *mut c_char {
    // SAFETY: `None` is the default heap; `fname` is a C string and `resolved` null or a
    // buffer of `PATH_MAX` bytes: the C caller's contract for `realpath`/`mi_realpath`.
    unsafe { s::realpath(None, fname as *const u8, resolved as *mut u8) as *mut c_char }
}

#[no_mangle]
pub unsafe extern "C" fn mi_malloc_small(size: usize) -> P {
    // SAFETY: `mi_malloc` has no precondition (it is `unsafe` only as an `extern "C"`
    // allocator symbol).
    unsafe { mi_malloc(size) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_zalloc_small(size: usize) -> P {
    // SAFETY: `mi_zalloc` has no precondition (it is `unsafe` only as an `extern "C"`
    // allocator symbol).
    unsafe { mi_zalloc(size) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_zalloc(size: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::zalloc(None, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_mallocn(count: usize, size: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::mallocn(None, count, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_reallocn(p: P, count: usize, size: usize) -> P {
    match s::count_size(count, size) {
        // SAFETY: `p` is null or a live block of ours: the C caller's contract for
        // `mi_reallocn`, the same as `mi_realloc`'s.
        Some(total) => unsafe { mi_realloc(p, total) },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_reallocf(p: P, size: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::reallocf(None, p as *mut u8, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_usable_size(p: *const c_void) -> usize {
    // SAFETY: `p` is null, not ours or a live block of ours: the C caller's contract for
    // `mi_usable_size` (not a freed block).
    unsafe { s::usable_size(p as *const u8) }
}

#[no_mangle]
pub extern "C" fn mi_good_size(size: usize) -> usize {
    s::good_usable_size(size)
}

// ---------------------------------------------------------------------------------------
// aligned

#[no_mangle]
pub unsafe extern "C" fn mi_malloc_aligned(size: usize, align: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc_aligned_at(None, size, align, 0, false) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_malloc_aligned_at(size: usize, align: usize, offset: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc_aligned_at(None, size, align, offset, false) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_zalloc_aligned(size: usize, align: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc_aligned_at(None, size, align, 0, true) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_zalloc_aligned_at(size: usize, align: usize, offset: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc_aligned_at(None, size, align, offset, true) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_calloc_aligned(count: usize, size: usize, align: usize) -> P {
    match s::count_size(count, size) {
        // SAFETY: `None` is the calling thread's default heap, the only precondition of the
        // `semantics` allocation functions.
        Some(total) => unsafe { s::malloc_aligned_at(None, total, align, 0, true) as P },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_calloc_aligned_at(
    count: usize,
    size: usize,
    align: usize,
    offset: usize,
) -> P {
    match s::count_size(count, size) {
        // SAFETY: `None` is the calling thread's default heap, the only precondition of the
        // `semantics` allocation functions.
        Some(total) => unsafe { s::malloc_aligned_at(None, total, align, offset, true) as P },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_realloc_aligned(p: P, size: usize, align: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::realloc_aligned_at(None, p as *mut u8, size, align, 0, false) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_realloc_aligned_at(
    p: P,
    size: usize,
    align: usize,
    offset: usize,
) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::realloc_aligned_at(None, p as *mut u8, size, align, offset, false) as P }
}

// ---------------------------------------------------------------------------------------
// zero-initialised re-allocation

#[no_mangle]
pub unsafe extern "C" fn mi_rezalloc(p: P, size: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::rezalloc(None, p as *mut u8, size) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_recalloc(p: P, count: usize, size: usize) -> P {
    match s::count_size(count, size) {
        // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
        // `mi_*` functions taking a block (include/mimalloc.h).
        Some(total) => unsafe { s::rezalloc(None, p as *mut u8, total) as P },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_rezalloc_aligned(p: P, size: usize, align: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::realloc_aligned_at(None, p as *mut u8, size, align, 0, true) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_rezalloc_aligned_at(
    p: P,
    size: usize,
    align: usize,
    offset: usize,
) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { s::realloc_aligned_at(None, p as *mut u8, size, align, offset, true) as P }
}

#[no_mangle]
pub unsafe extern "C" fn mi_recalloc_aligned(p: P, count: usize, size: usize, align: usize) -> P {
    match s::count_size(count, size) {
        // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
        // `mi_*` functions taking a block (include/mimalloc.h).
        Some(total) => unsafe {
            s::realloc_aligned_at(None, p as *mut u8, total, align, 0, true) as P
        },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_recalloc_aligned_at(
    p: P,
    count: usize,
    size: usize,
    align: usize,
    offset: usize,
) -> P {
    match s::count_size(count, size) {
        // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
        // `mi_*` functions taking a block (include/mimalloc.h).
        Some(total) => unsafe {
            s::realloc_aligned_at(None, p as *mut u8, total, align, offset, true) as P
        },
        None => ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_aligned_recalloc(p: P, count: usize, size: usize, align: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for
    // `mi_aligned_recalloc`, the same as `mi_recalloc_aligned`'s.
    unsafe { mi_recalloc_aligned(p, count, size, align) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_aligned_offset_recalloc(
    p: P,
    count: usize,
    size: usize,
    align: usize,
    offset: usize,
) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for
    // `mi_aligned_offset_recalloc`, the same as `mi_recalloc_aligned_at`'s.
    unsafe { mi_recalloc_aligned_at(p, count, size, align, offset) }
}

// ---------------------------------------------------------------------------------------
// posix and friends

#[no_mangle]
pub unsafe extern "C" fn mi_cfree(p: P) {
    // mimalloc's "checked free": only pointers of ours are freed, others ignored quietly
    if !p.is_null() && crate::segment::checked_segment(p as *const u8).is_some() {
        // SAFETY: `p` lies in a live segment of ours (checked above), so by the C caller's
        // contract for `mi_cfree` (that of `free` for our pointers) a block of ours not used
        // afterwards.
        unsafe { s::free(p as *mut u8) }
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_malloc_size(p: *const c_void) -> usize {
    // SAFETY: `p` is null, not ours or a live block of ours: the C caller's contract for
    // `mi_malloc_size`, the same as `mi_usable_size`'s.
    unsafe { mi_usable_size(p) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_malloc_usable_size(p: *const c_void) -> usize {
    // SAFETY: `p` is null, not ours or a live block of ours: the C caller's contract for
    // `mi_malloc_usable_size`, the same as `mi_usable_size`'s.
    unsafe { mi_usable_size(p) }
}

#[no_mangle]
pub extern "C" fn mi_malloc_good_size(size: usize) -> usize {
    s::good_usable_size(size)
}

#[no_mangle]
pub unsafe extern "C" fn mi_posix_memalign(out: *mut P, align: usize, size: usize) -> c_int {
    // SAFETY: `out` is null or points to a writable `void *`: the C caller's contract for
    // `mi_posix_memalign`.
    unsafe { s::posix_memalign(out as *mut *mut u8, align, size) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_memalign(align: usize, size: usize) -> P {
    // SAFETY: `None` is the calling thread's default heap, the only precondition of the
    // `semantics` allocation functions.
    unsafe { s::malloc_aligned_at(None, size, align, 0, false) as P }
}

#[no_mangle]
pub extern "C" fn mi_valloc(size: usize) -> P {
    s::valloc(size) as P
}

#[no_mangle]
pub extern "C" fn mi_pvalloc(size: usize) -> P {
    s::pvalloc(size) as P
}

#[no_mangle]
pub extern "C" fn mi_aligned_alloc(align: usize, size: usize) -> P {
    s::aligned_alloc(align, size) as P
}

/// mimalloc's `mi_reallocarray`: overflow fails with `EOVERFLOW`; unlike glibc's
/// `reallocarray`, a zero size gives a small block.
#[no_mangle]
pub unsafe extern "C" fn mi_reallocarray(p: P, count: usize, size: usize) -> P {
    let Some(total) = count.checked_mul(size) else {
        super::set_errno(::libc::EOVERFLOW);
        return ptr::null_mut();
    };
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    unsafe { mi_realloc(p, total) }
}

/// NetBSD's `reallocarr`: `p` points to the pointer to re-allocate; 0 or an errno value.
#[no_mangle]
pub unsafe extern "C" fn mi_reallocarr(p: P, count: usize, size: usize) -> c_int {
    let op = p as *mut P;
    if op.is_null() {
        super::set_errno(::libc::EINVAL);
        return ::libc::EINVAL;
    }
    // SAFETY: `op` is non-null (checked above), so it points to a readable and writable
    // `void *` that is null or a live block of ours: the C caller's contract for
    // `reallocarr`.
    let old = unsafe { *op };
    // SAFETY: `old` is null or a live block of ours (as above).
    let q = unsafe { mi_reallocarray(old, count, size) };
    if q.is_null() {
        return super::sys::errno();
    }
    // SAFETY: `op` is writable (as above).
    unsafe { *op = q };
    0
}

/// C's `wchar_t`: 16 bits on Windows, 32 elsewhere.
#[cfg(windows)]
type WChar = u16;
#[cfg(not(windows))]
type WChar = u32;

#[no_mangle]
pub unsafe extern "C" fn mi_wcsdup(str: *const WChar) -> *mut WChar {
    if str.is_null() {
        return ptr::null_mut();
    }
    let mut len = 0;
    // SAFETY: `str` is non-null (checked above), so a NUL-terminated array of `wchar_t` (the C
    // caller's contract for `mi_wcsdup`): every element up to the NUL is readable.
    while unsafe { *str.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `None` is the calling thread's default heap, `s::malloc`'s only
    // precondition.
    let p = unsafe { s::malloc(None, (len + 1) * core::mem::size_of::<WChar>()) } as *mut WChar;
    if !p.is_null() {
        // SAFETY: `str` holds `len + 1` readable `wchar_t`s (with its NUL); `p` is a fresh
        // block of `(len + 1) * size_of::<wchar_t>()` bytes, disjoint from `str` and aligned for it.
        unsafe { ptr::copy_nonoverlapping(str, p, len + 1) };
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn mi_mbsdup(str: *const u8) -> *mut u8 {
    // SAFETY: `str` is null or a NUL-terminated string: the C caller's contract for
    // `mi_mbsdup`, the same as `mi_strdup`'s.
    unsafe { mi_strdup(str as *const c_char) as *mut u8 }
}

/// Windows' `_dupenv_s`: a copy of the environment variable `name` (NULL if unset).
#[no_mangle]
pub unsafe extern "C" fn mi_dupenv_s(
    buf: *mut *mut c_char,
    size: *mut usize,
    name: *const c_char,
) -> c_int {
    if buf.is_null() || name.is_null() {
        return ::libc::EINVAL;
    }
    if !size.is_null() {
        // SAFETY: `size` is non-null, so writable: the C caller's contract for
        // `_dupenv_s`.
        unsafe { *size = 0 };
    }
    // SAFETY: `name` is non-null (checked above), so a C string: the C caller's contract
    // for `_dupenv_s`.
    let v = unsafe { ::libc::getenv(name) };
    if v.is_null() {
        // SAFETY: `buf` is non-null (checked above), so writable: the C caller's contract
        // for `_dupenv_s`.
        unsafe { *buf = ptr::null_mut() };
        return 0;
    }
    // SAFETY: `v` is non-null: a value string of the environment, NUL-terminated.
    let copy = unsafe { mi_strdup(v) };
    // SAFETY: `buf` is writable (as above).
    unsafe { *buf = copy };
    if copy.is_null() {
        return ::libc::ENOMEM;
    }
    if !size.is_null() {
        // SAFETY: `copy` is the NUL-terminated copy just made; `size` is writable (as
        // above).
        unsafe { *size = ::libc::strlen(copy) + 1 };
    }
    0
}

/// Windows' `_wdupenv_s`: a copy of the wide environment variable `name` (NULL if unset),
/// `size` its length in characters with the NUL. Wide environments do not exist on unix:
/// there it is `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn mi_wdupenv_s(
    buf: *mut *mut WChar,
    size: *mut usize,
    name: *const WChar,
) -> c_int {
    if buf.is_null() || name.is_null() {
        return ::libc::EINVAL;
    }
    // SAFETY: `buf` is non-null (checked above), so writable: the C caller's contract for
    // `_wdupenv_s`.
    unsafe { *buf = ptr::null_mut() };
    if !size.is_null() {
        // SAFETY: `size` is non-null, so writable: the C caller's contract for
        // `_wdupenv_s`.
        unsafe { *size = 0 };
    }
    #[cfg(unix)]
    return ::libc::EINVAL;
    #[cfg(windows)]
    // SAFETY: `name` is a NUL-terminated wide string, `buf` and `size` (if non-null) are
    // writable: the C caller's contract, checked above for null.
    unsafe {
        wide_env_copy(buf, size, name)
    }
}

/// The Windows part of [`mi_wdupenv_s`], after its arguments were checked and cleared.
///
/// # Safety
/// As `mi_wdupenv_s`, with `buf` non-null.
#[cfg(windows)]
unsafe fn wide_env_copy(buf: *mut *mut u16, size: *mut usize, name: *const u16) -> c_int {
    use windows_sys::Win32::System::Environment::GetEnvironmentVariableW;
    loop {
        // SAFETY: `name` is a NUL-terminated wide string (the caller's contract); a null
        // buffer of length 0 asks for the length needed, with the NUL.
        let need = unsafe { GetEnvironmentVariableW(name, ptr::null_mut(), 0) } as usize;
        if need == 0 {
            return 0; // unset
        }
        // SAFETY: `None` is the calling thread's default heap, `s::malloc`'s only
        // precondition.
        let p = unsafe { s::malloc(None, need * 2) } as *mut u16;
        if p.is_null() {
            return ::libc::ENOMEM;
        }
        // SAFETY: `p` holds `need` u16s; `name` as above.
        let got = unsafe { GetEnvironmentVariableW(name, p, need as u32) } as usize;
        if got == 0 || got >= need {
            // changed meanwhile (or gone): try again with the new length
            // SAFETY: `p` is the block just allocated, unused.
            unsafe { s::free(p as *mut u8) };
            if got == 0 {
                return 0;
            }
            continue;
        }
        // SAFETY: `buf` (and `size`, if non-null) are writable (the caller's contract).
        unsafe {
            *buf = p;
            if !size.is_null() {
                *size = got + 1;
            }
        }
        return 0;
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_free_size(p: P, size: usize) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's
    // contract for `mi_free_size`, the same as `mi_free`'s (sizes and alignments are hints,
    // checked in secure mode).
    unsafe { s::free_sized(p as *mut u8, size, false) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_free_size_aligned(p: P, _size: usize, _align: usize) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's
    // contract for `mi_free_size_aligned`, the same as `mi_free`'s (sizes and alignments are
    // hints).
    unsafe { mi_free(p) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_free_aligned(p: P, _align: usize) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's
    // contract for `mi_free_aligned`, the same as `mi_free`'s (sizes and alignments are hints).
    unsafe { mi_free(p) }
}

// ---------------------------------------------------------------------------------------
// C++ semantics: `mi_new` fails by aborting (see exports.rs)

#[no_mangle]
pub extern "C" fn mi_new(size: usize) -> P {
    super::new_handler::new_or_abort(size, 1) as P
}

#[no_mangle]
pub extern "C" fn mi_new_aligned(size: usize, align: usize) -> P {
    super::new_handler::new_or_abort(size, align) as P
}

#[no_mangle]
pub extern "C" fn mi_new_nothrow(size: usize) -> P {
    super::new_handler::new_nothrow(size, 1) as P
}

#[no_mangle]
pub extern "C" fn mi_new_aligned_nothrow(size: usize, align: usize) -> P {
    super::new_handler::new_nothrow(size, align) as P
}

#[no_mangle]
pub extern "C" fn mi_new_n(count: usize, size: usize) -> P {
    match count.checked_mul(size) {
        Some(total) => super::new_handler::new_or_abort(total, 1) as P,
        None => super::fatal(format_args!("mi_new_n({count}, {size}): size overflows")),
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_new_realloc(p: P, size: usize) -> P {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for mimalloc's
    // `mi_*` functions taking a block (include/mimalloc.h).
    let q = unsafe { mi_realloc(p, size) };
    if q.is_null() {
        super::fatal(format_args!("mi_new_realloc({p:p}, {size}): out of memory"));
    }
    q
}

#[no_mangle]
pub unsafe extern "C" fn mi_new_reallocn(p: P, count: usize, size: usize) -> P {
    match count.checked_mul(size) {
        // SAFETY: `p` is null or a live block of ours: the C caller's contract for
        // `mi_new_reallocn`, the same as `mi_new_realloc`'s.
        Some(total) => unsafe { mi_new_realloc(p, total) },
        None => super::fatal(format_args!(
            "mi_new_reallocn({count}, {size}): size overflows"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// process and threads

#[no_mangle]
pub extern "C" fn mi_collect(force: bool) {
    run_deferred_free(force);
    hosted::collect(force);
    if force {
        super::arenas::collect();
    }
}

/// mimalloc's version scheme (`MI_MALLOC_VERSION`: major * 10000 + minor * 100 +
/// patch): the API level implemented, that of include/mimalloc.h (v3.4.3).
#[no_mangle]
pub extern "C" fn mi_version() -> c_int {
    30403
}

#[no_mangle]
pub extern "C" fn mi_process_init() {
    super::init::init();
}

#[no_mangle]
pub extern "C" fn mi_process_done() {
    super::init::done();
}

#[no_mangle]
pub extern "C" fn mi_thread_init() {
    let _ = hosted::heap_initialized();
}

#[no_mangle]
pub extern "C" fn mi_thread_done() {
    super::heaps::reset_default_to_backing();
    hosted::thread_done();
}

#[no_mangle]
pub extern "C" fn mi_is_in_heap_region(p: *const c_void) -> bool {
    hosted::is_in_heap_region(p as *const u8)
}

/// Whether `malloc` in this process is shardalloc's (preloaded or linked before libc),
/// rather than only the `mi_*` API (e.g. after `dlopen`; always on Windows).
#[no_mangle]
pub extern "C" fn mi_is_redirected() -> bool {
    super::sys::is_redirected()
}

/// `shardalloc.h`: the version of the library, major * 10000 + minor * 100 + patch.
#[no_mangle]
pub extern "C" fn shardalloc_version() -> c_int {
    100
}

type DeferredFreeFun = unsafe extern "C" fn(force: bool, heartbeat: u64, arg: *mut c_void);

static DEFERRED_FREE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
static DEFERRED_ARG: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
static DEFERRED_BEAT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Registers a function that `mi_collect` calls first, so the program can free memory it
/// holds back (mimalloc also calls it on allocation slow paths; shardalloc's core has no
/// hook there, so only collections call it).
#[no_mangle]
pub extern "C" fn mi_register_deferred_free(fun: Option<DeferredFreeFun>, arg: *mut c_void) {
    use core::sync::atomic::Ordering::Relaxed;
    DEFERRED_ARG.store(arg as usize, Relaxed);
    DEFERRED_FREE.store(fun.map_or(0, |f| f as usize), Relaxed);
}

pub(crate) fn run_deferred_free(force: bool) {
    use core::sync::atomic::Ordering::Relaxed;
    let f = DEFERRED_FREE.load(Relaxed);
    if f != 0 {
        let beat = DEFERRED_BEAT.fetch_add(1, Relaxed) + 1;
        // SAFETY: registered as an `mi_deferred_free_fun`.
        unsafe {
            let f: DeferredFreeFun = core::mem::transmute::<usize, DeferredFreeFun>(f);
            f(force, beat, DEFERRED_ARG.load(Relaxed) as *mut c_void);
        }
    }
}
