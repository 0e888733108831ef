//! The thread-local slot holding the calling thread's default heap.
//!
//! Two implementations:
//! - the C library (`override` on x86_64 Linux): a slot of our own in `.tdata`, read and
//!   written through `%fs` with an initial-exec (`@GOTTPOFF`) access — two instructions.
//!   In a shared object, `thread_local!` would use the general-dynamic model: a call to
//!   `__tls_get_addr` on every access (which may even call `malloc` the first time a
//!   thread touches a `dlopen`ed library's TLS). The library then carries `STATIC_TLS`,
//!   as C mimalloc does; its TLS block is a few bytes, which glibc's static TLS surplus
//!   holds, so `dlopen` still works.
//! - otherwise: a `const`-initialised `thread_local!` without destructor, which in an
//!   executable compiles to a direct `%fs` access and never allocates (std registers no
//!   destructor for it).
//!
//! Both start out as the empty heap, so the allocation fast path needs no "initialised?"
//! branch: the empty heap's pages are empty and send the first allocation to the slow
//! path.

use crate::heap::RawHeap;

#[cfg(all(feature = "override", target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use crate::heap::RawHeap;

    // The slot's initial value is the address of the empty heap: `.tdata` (not `.tbss`) so
    // that every thread's copy starts as `&EMPTY_HEAP`. The `.quad` is relocated by the
    // dynamic linker in the TLS initialisation image before any thread is made (glibc
    // copies the relocated image into each new thread's block), so this works in a shared
    // object as well as in an executable. The symbol is hidden: not exported from the
    // library, and unique to this crate.
    core::arch::global_asm!(
        ".pushsection .tdata.shardalloc_tls_heap,\"awT\",@progbits",
        ".p2align 3",
        ".globl shardalloc_tls_heap",
        ".hidden shardalloc_tls_heap",
        ".type shardalloc_tls_heap,@tls_object",
        ".size shardalloc_tls_heap,8",
        "shardalloc_tls_heap:",
        ".quad {empty}",
        ".popsection",
        empty = sym crate::heap::EMPTY_HEAP,
    );

    #[inline(always)]
    pub(super) fn get() -> *mut RawHeap {
        let h: *mut RawHeap;
        // SAFETY: reads this thread's 8-byte slot: the GOT entry holds the slot's offset
        // from the thread pointer (`%fs` base). `readonly pure`: the value changes only
        // through `set`, whose asm is not readonly (so the compiler does not reuse a read
        // across it).
        unsafe {
            core::arch::asm!(
                "mov {h}, qword ptr [rip + shardalloc_tls_heap@GOTTPOFF]",
                "mov {h}, qword ptr fs:[{h}]",
                h = out(reg) h,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        h
    }

    #[inline(always)]
    pub(super) fn set(heap: *mut RawHeap) {
        // SAFETY: writes this thread's slot, found as in `get`.
        unsafe {
            core::arch::asm!(
                "mov {off}, qword ptr [rip + shardalloc_tls_heap@GOTTPOFF]",
                "mov qword ptr fs:[{off}], {h}",
                off = out(reg) _,
                h = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use core::cell::Cell;

    use crate::heap::{empty_heap, RawHeap};

    std::thread_local! {
        static HEAP: Cell<*mut RawHeap> = const { Cell::new(empty_heap()) };
    }

    #[inline(always)]
    pub(super) fn get() -> *mut RawHeap {
        HEAP.with(|h| h.get())
    }

    #[inline(always)]
    pub(super) fn set(heap: *mut RawHeap) {
        HEAP.with(|h| h.set(heap))
    }
}

/// The calling thread's default heap (the empty heap before its first allocation).
#[inline(always)]
pub(crate) fn get() -> *mut RawHeap {
    imp::get()
}

/// Sets the calling thread's default heap.
#[inline]
pub(crate) fn set(heap: *mut RawHeap) {
    imp::set(heap)
}
