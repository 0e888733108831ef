//! The libc, glibc and C++ allocation symbols. Each is a forward into `semantics.rs`,
//! which owns what they mean.
//!
//! C++ `operator new`, when out of memory, calls the program's `std::new_handler` (if
//! one is installed) and retries, as the standard says; without a handler it must throw
//! `std::bad_alloc`. Rust cannot throw a C++ exception, so the throwing forms then print
//! an error and abort the process; a handler that throws also aborts (the exception
//! cannot unwind through this library, built with `panic = "abort"`). The `nothrow`
//! forms return NULL.

use core::ffi::c_void;

use super::new_handler::{new_nothrow, new_or_abort};
use super::semantics as s;

// ---------------------------------------------------------------------------------------
// C and POSIX

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: `None` is the calling thread's default heap, `s::malloc`'s only
    // precondition.
    unsafe { s::malloc(None, size) as *mut c_void }
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's contract
    // for `free`, documented in include/README-capi.md (pointers that are not ours are
    // caught by `check.rs`).
    unsafe { s::free(p as *mut u8) }
}

#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: `None` is the calling thread's default heap, `s::calloc`'s only
    // precondition.
    unsafe { s::calloc(None, count, size) as *mut c_void }
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for `realloc`
    // (pointers that are not ours are rejected by `realloc_arg_ok`).
    unsafe { s::realloc(p as *mut u8, size) as *mut c_void }
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for
    // `reallocarray` (pointers that are not ours are rejected by `realloc_arg_ok`).
    unsafe { s::reallocarray(p as *mut u8, count, size) as *mut c_void }
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    // SAFETY: `out` is null or points to a writable `void *`: the C caller's contract for
    // `posix_memalign`.
    unsafe { s::posix_memalign(out as *mut *mut u8, align, size) }
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    s::aligned_alloc(align, size) as *mut c_void
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    s::memalign(align, size) as *mut c_void
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    s::valloc(size) as *mut c_void
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    s::pvalloc(size) as *mut c_void
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: `p` is null, not ours (then 0) or a live block of ours: the C caller's
    // contract for `malloc_usable_size` (not a freed block).
    unsafe { s::usable_size(p as *const u8) }
}

#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's contract
    // for `free`, which this function shares (pointers that are not ours are caught by
    // `check.rs`).
    unsafe { s::free(p as *mut u8) }
}

/// C23 (glibc 2.39+): the size is a hint (checked in secure mode).
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's contract
    // for `free`, which this function shares (pointers that are not ours are caught by
    // `check.rs`).
    unsafe { s::free_sized(p as *mut u8, size, false) }
}

/// C23 (glibc 2.39+).
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's contract
    // for `free`, which this function shares (pointers that are not ours are caught by
    // `check.rs`).
    unsafe { s::free(p as *mut u8) }
}

/// glibc: there is nothing to trim beyond what a forced collection gives back.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> i32 {
    crate::global::hosted::collect(true);
    1
}

// ---------------------------------------------------------------------------------------
// glibc's internal names (used by some programs and by glibc's own hooks)

#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    // SAFETY: our `malloc` has no precondition (it is `unsafe` only as an `extern "C"`
    // allocator symbol).
    unsafe { malloc(size) }
}

#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: `p` is null or a block of ours not used afterwards: the C caller's contract
    // for `free`, which glibc's `__libc_free` shares.
    unsafe { free(p) }
}

#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: our `calloc` has no precondition (it is `unsafe` only as an `extern "C"`
    // allocator symbol).
    unsafe { calloc(count, size) }
}

#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: `p` is null or a live block of ours: the C caller's contract for `realloc`,
    // which glibc's `__libc_realloc` shares.
    unsafe { realloc(p, size) }
}

#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

#[no_mangle]
pub unsafe extern "C" fn __posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    // SAFETY: `out` is null or points to a writable `void *`: the C caller's contract for
    // `posix_memalign`, which `__posix_memalign` shares.
    unsafe { posix_memalign(out, align, size) }
}

// ---------------------------------------------------------------------------------------
// C++ (Itanium ABI names; x86_64: size_t is `m`, std::align_val_t is a size_t enum)

/// operator new(size_t)
#[no_mangle]
pub extern "C" fn _Znwm(size: usize) -> *mut c_void {
    new_or_abort(size, 1) as *mut c_void
}

/// operator new[](size_t)
#[no_mangle]
pub extern "C" fn _Znam(size: usize) -> *mut c_void {
    new_or_abort(size, 1) as *mut c_void
}

/// operator new(size_t, const std::nothrow_t&)
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, _nt: *const c_void) -> *mut c_void {
    new_nothrow(size, 1) as *mut c_void
}

/// operator new[](size_t, const std::nothrow_t&)
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(size: usize, _nt: *const c_void) -> *mut c_void {
    new_nothrow(size, 1) as *mut c_void
}

/// operator new(size_t, std::align_val_t)
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_or_abort(size, align) as *mut c_void
}

/// operator new[](size_t, std::align_val_t)
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_or_abort(size, align) as *mut c_void
}

/// operator new(size_t, std::align_val_t, const std::nothrow_t&)
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _nt: *const c_void,
) -> *mut c_void {
    new_nothrow(size, align) as *mut c_void
}

/// operator new[](size_t, std::align_val_t, const std::nothrow_t&)
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _nt: *const c_void,
) -> *mut c_void {
    new_nothrow(size, align) as *mut c_void
}

/// Every `operator delete` form: the size and alignment are hints we do not need.
macro_rules! deletes {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: `p` is null or a block from our `operator new` not used afterwards:
            // the C++ caller's contract for `operator delete`.
            unsafe { s::free(p as *mut u8) }
        }
    )*};
}

/// The sized `operator delete` forms: secure mode checks the size (`free_sized`).
macro_rules! sized_deletes {
    ($($name:ident($($arg:ident: $ty:ty),*) $aligned:literal;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void, size: usize $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: `p` is null or a block from our `operator new` not used afterwards:
            // the C++ caller's contract for `operator delete`.
            unsafe { s::free_sized(p as *mut u8, size, $aligned) }
        }
    )*};
}

sized_deletes! {
    _ZdlPvm() false;
    _ZdaPvm() false;
    _ZdlPvmSt11align_val_t(align: usize) true;
    _ZdaPvmSt11align_val_t(align: usize) true;
}

deletes! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvSt11align_val_t(align: usize);
    _ZdaPvSt11align_val_t(align: usize);
    _ZdlPvRKSt9nothrow_t(nt: *const c_void);
    _ZdaPvRKSt9nothrow_t(nt: *const c_void);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void);
}
