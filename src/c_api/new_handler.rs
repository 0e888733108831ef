//! C++ `operator new` semantics shared by the C++ symbols (`exports.rs`, unix) and
//! mimalloc's `mi_new*` (`mi.rs`, every platform).
//!
//! When out of memory, `new` calls the program's `std::new_handler` (if one is installed)
//! and retries, as the standard says; without a handler it must throw `std::bad_alloc`.
//! Rust cannot throw a C++ exception, so the throwing forms then print an error and abort
//! the process. The `nothrow` forms return NULL.

use super::semantics as s;

#[cold]
#[inline(never)]
fn new_failed(size: usize, align: usize) -> ! {
    super::fatal(format_args!(
        "operator new({size}, align {align}) failed: out of memory (std::bad_alloc cannot \
         be thrown from shardalloc; aborting)"
    ))
}

/// A C++ `std::new_handler`: may free memory and return, or throw (which aborts here).
type NewHandler = unsafe extern "C-unwind" fn();

/// The program's current `std::new_handler`, through libstdc++'s
/// `std::get_new_handler()` (looked up on the first failure; none without libstdc++).
/// (On Windows, in `libstdc++-6.dll` if the program has loaded it.)
fn current_new_handler() -> Option<NewHandler> {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    // 0: not looked up yet, 1: absent, else the address of std::get_new_handler
    static GET: AtomicUsize = AtomicUsize::new(0);
    let mut get = GET.load(Relaxed);
    if get == 0 {
        let f = super::sys::lookup_get_new_handler();
        get = if f.is_null() { 1 } else { f as usize };
        GET.store(get, Relaxed);
    }
    if get == 1 {
        return None;
    }
    // SAFETY: the symbol is `std::new_handler std::get_new_handler() noexcept`, and a
    // `new_handler` is a `void (*)()` (null when none is set).
    unsafe {
        let get: extern "C" fn() -> Option<NewHandler> = core::mem::transmute(get);
        get()
    }
}

/// Throwing `new`: a block; when out of memory, the new handler's turn and a retry, or
/// abort.
#[inline]
pub(crate) fn new_or_abort(size: usize, align: usize) -> *mut u8 {
    loop {
        let p = new_nothrow(size, align);
        if !p.is_null() {
            return p;
        }
        match current_new_handler() {
            // SAFETY: the program's handler, called as C++ would call it.
            Some(handler) => unsafe { handler() },
            None => new_failed(size, align),
        }
    }
}

/// `nothrow` `new`: a block or NULL.
#[inline]
pub(crate) fn new_nothrow(size: usize, align: usize) -> *mut u8 {
    if align <= crate::size_class::WORD {
        // SAFETY: `None` is the calling thread's default heap, `s::malloc`'s only
        // precondition.
        unsafe { s::malloc(None, size) }
    } else {
        // SAFETY: `None` is the calling thread's default heap, `s::malloc_aligned_at`'s
        // only precondition (it checks `align` itself).
        unsafe { s::malloc_aligned_at(None, size, align, 0, false) }
    }
}
