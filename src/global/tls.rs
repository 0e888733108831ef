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
//! - Windows on x86_64: a TLS index of our own (`TlsAlloc`), read straight from the
//!   thread's TEB (`gs:[0x1480 + 8 * index]`, the `TlsSlots` array that `TlsGetValue`
//!   reads) — two loads and a test instead of a call per access. (On `windows-gnu`,
//!   Rust's `thread_local!` calls `TlsGetValue` on every access.) A slot starts as null,
//!   which reads as the empty heap.
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
    // The owner token of the slot's heap (`NO_OWNER` for the empty heap), read by every
    // `free` to tell local frees: one load from `%fs` instead of two (heap, then its
    // `owner`).
    core::arch::global_asm!(
        ".pushsection .tdata.shardalloc_tls_owner,\"awT\",@progbits",
        ".p2align 3",
        ".globl shardalloc_tls_owner",
        ".hidden shardalloc_tls_owner",
        ".type shardalloc_tls_owner,@tls_object",
        ".size shardalloc_tls_owner,8",
        "shardalloc_tls_owner:",
        ".quad {no_owner}",
        ".popsection",
        no_owner = const crate::segment::NO_OWNER,
    );

    #[inline(always)]
    pub(super) fn owner() -> usize {
        let o: usize;
        // SAFETY: reads this thread's 8-byte owner slot, found as the heap slot in `get`;
        // `readonly pure` for the same reason (written only by `set`'s asm).
        unsafe {
            core::arch::asm!(
                "mov {o}, qword ptr [rip + shardalloc_tls_owner@GOTTPOFF]",
                "mov {o}, qword ptr fs:[{o}]",
                o = out(reg) o,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        o
    }

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

    pub(super) fn ready() -> bool {
        true
    }

    #[inline(always)]
    pub(super) fn set(heap: *mut RawHeap, owner: usize) {
        // SAFETY: writes this thread's two slots, found as in `get` and `owner`.
        unsafe {
            core::arch::asm!(
                "mov {off}, qword ptr [rip + shardalloc_tls_heap@GOTTPOFF]",
                "mov qword ptr fs:[{off}], {h}",
                "mov {off}, qword ptr [rip + shardalloc_tls_owner@GOTTPOFF]",
                "mov qword ptr fs:[{off}], {o}",
                off = out(reg) _,
                h = in(reg) heap,
                o = in(reg) owner,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(all(windows, target_arch = "x86_64"))]
mod imp {
    use crate::heap::{empty_heap, RawHeap};
    use crate::sync::{AtomicUsize, Ordering};
    use windows_sys::Win32::System::Threading::{
        TlsAlloc, TlsGetValue, TlsSetValue, TLS_OUT_OF_INDEXES,
    };

    /// Our TLS index; `usize::MAX` until the first `set` makes it (before that, every
    /// thread's heap is the empty heap).
    static INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);
    /// The TEB's `TlsSlots` array (64 slots) on x86_64; higher indices live elsewhere.
    const TEB_TLS_SLOTS: usize = 0x1480;
    const TEB_SLOTS: usize = 64;

    #[inline(always)]
    pub(super) fn get() -> *mut RawHeap {
        let index = INDEX.load(Ordering::Relaxed);
        let h: *mut RawHeap;
        if index < TEB_SLOTS {
            // SAFETY: `gs` holds the calling thread's TEB on x86_64 Windows; the slot of a
            // valid TLS index (< 64) is at `TlsSlots[index]`, which `TlsSetValue` writes.
            // `readonly`: the value changes only through `set`, a call the compiler cannot
            // see through.
            unsafe {
                core::arch::asm!(
                    "mov {h}, qword ptr gs:[{off}]",
                    h = lateout(reg) h,
                    off = in(reg) TEB_TLS_SLOTS + index * 8,
                    options(nostack, preserves_flags, readonly, pure),
                );
            }
        } else {
            h = get_slow(index);
        }
        if h.is_null() {
            empty_heap()
        } else {
            h
        }
    }

    #[cold]
    fn get_slow(index: usize) -> *mut RawHeap {
        if index == usize::MAX {
            return core::ptr::null_mut();
        }
        // SAFETY: a TLS index we allocated.
        unsafe { TlsGetValue(index as u32) as *mut RawHeap }
    }

    /// Makes our TLS index if it is not made yet; false when Windows has none left.
    pub(super) fn ready() -> bool {
        if INDEX.load(Ordering::Acquire) != usize::MAX {
            return true;
        }
        // SAFETY: no preconditions.
        let new = unsafe { TlsAlloc() };
        if new == TLS_OUT_OF_INDEXES {
            return false;
        }
        if INDEX
            .compare_exchange(
                usize::MAX,
                new as usize,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // another thread made it first
            // SAFETY: the index we just made, unused.
            unsafe { windows_sys::Win32::System::Threading::TlsFree(new) };
        }
        true
    }

    /// The owner token of the slot's heap (read through the heap: a TLS index of its own
    /// would cost as much).
    #[inline(always)]
    pub(super) fn owner() -> usize {
        // SAFETY: the slot's heap is live (or the static empty heap).
        unsafe { (*get()).owner }
    }

    pub(super) fn set(heap: *mut RawHeap, _owner: usize) {
        let index = INDEX.load(Ordering::Acquire);
        if index == usize::MAX {
            // no index yet: every thread's heap is still the empty heap
            debug_assert!(heap == empty_heap(), "tls::set before tls::ready");
            return;
        }
        // SAFETY: a TLS index we allocated; the empty heap is stored as null.
        unsafe {
            TlsSetValue(
                index as u32,
                if heap == empty_heap() {
                    core::ptr::null()
                } else {
                    heap as *const core::ffi::c_void
                },
            )
        };
    }
}

#[cfg(not(any(
    all(feature = "override", target_arch = "x86_64", target_os = "linux"),
    all(windows, target_arch = "x86_64")
)))]
mod imp {
    use core::cell::Cell;

    use crate::heap::{empty_heap, RawHeap};

    std::thread_local! {
        static HEAP: Cell<*mut RawHeap> = const { Cell::new(empty_heap()) };
        /// The owner token of `HEAP` (see the C library's `shardalloc_tls_owner`).
        static OWNER: Cell<usize> = const { Cell::new(crate::segment::NO_OWNER) };
    }

    #[inline(always)]
    pub(super) fn owner() -> usize {
        OWNER.with(|o| o.get())
    }

    #[inline(always)]
    pub(super) fn get() -> *mut RawHeap {
        HEAP.with(|h| h.get())
    }

    pub(super) fn ready() -> bool {
        true
    }

    #[inline(always)]
    pub(super) fn set(heap: *mut RawHeap, owner: usize) {
        HEAP.with(|h| h.set(heap));
        OWNER.with(|o| o.set(owner));
    }
}

/// The calling thread's default heap (the empty heap before its first allocation).
#[inline(always)]
pub(crate) fn get() -> *mut RawHeap {
    imp::get()
}

/// Makes the slot usable (Windows: our TLS index); false when it cannot be made, and then
/// the thread must keep the empty heap.
pub(crate) fn ready() -> bool {
    imp::ready()
}

/// The owner token of the calling thread's default heap (`(*get()).owner`, kept in a slot
/// of its own where that saves a load on every `free`).
#[inline(always)]
pub(crate) fn owner() -> usize {
    let o = imp::owner();
    // SAFETY: the default heap is live (or the static empty heap).
    debug_assert_eq!(o, unsafe { (*get()).owner }, "owner slot out of step");
    o
}

/// Sets the calling thread's default heap (after [`ready`] returned true once), and with it
/// the owner slot. A heap's owner token does not change while it is a default heap (it
/// is cleared by `detach`, after the thread's slot went back to the empty heap).
#[inline]
pub(crate) fn set(heap: *mut RawHeap) {
    // SAFETY: callers pass a live heap of the calling thread, or the empty heap.
    imp::set(heap, unsafe { (*heap).owner })
}
