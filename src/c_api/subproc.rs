//! Sub-processes (`mi_subproc_*`): fully separate allocation domains in one process.
//!
//! A sub-process is a [`Domain`] of its own over the OS source, with its own main heap.
//! A thread joins one with `mi_subproc_add_current_thread`: it is done in the process's
//! domain as at its exit (its segments that hold live blocks are abandoned there, its
//! blocks stay valid and any thread may free them), and from then on `malloc`, the heaps it
//! makes (`mi_heap_new`) and `mi_heap_main()` take memory from the sub-process's domain
//! only. Segments abandoned by the sub-process's threads are reclaimed by its threads
//! only. `mi_subproc_destroy` gives all of the sub-process's memory back to the OS, blocks
//! and all (mimalloc's semantics); shardalloc refuses (with an error message) while a
//! thread of the sub-process is still running, since that thread's next allocation would
//! use freed memory.
//!
//! The sub-process's struct (its domain and main heap) is a region of its own from the
//! OS; the id is its address. Live sub-processes are kept in a list, so that ids are
//! checked before use.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use super::options::{error, warning};
use crate::domain::Domain;
use crate::global::hosted::{self, DOMAIN};
use crate::heap::SharedHeap;

/// mimalloc's `mi_subproc_id_t` (a struct holding one pointer, passed by value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SubprocId {
    id: *mut c_void,
}

/// What the main sub-process's id points to.
static MAIN_SUBPROC: u8 = 0;

/// A sub-process other than the main one.
///
/// Invariants: `domain` is the first field (a thread's domain pointer is the id of the
/// sub-process it is in); `main` is `domain`'s main heap (`is_main`), the `shared` of the
/// backing heap of every thread in the sub-process; the struct lies at the start of a
/// region of [`region_size`] bytes from [`DOMAIN`]'s source, committed, and is in
/// [`LIVE`] from `mi_subproc_new` until `mi_subproc_destroy`.
#[repr(C)]
struct Subproc {
    domain: Domain,
    main: SharedHeap,
    next: *mut Subproc,
}

/// The head of the list of live sub-processes.
struct LiveList(*mut Subproc);
// SAFETY: the list and the `next` links are only read and written under the mutex.
unsafe impl Send for LiveList {}

static LIVE: spin::Mutex<LiveList> = spin::Mutex::new(LiveList(ptr::null_mut()));

/// Bytes of a sub-process's region (whole OS pages).
fn region_size() -> usize {
    DOMAIN.os.round_to_alloc(core::mem::size_of::<Subproc>())
}

impl SubprocId {
    fn main() -> SubprocId {
        SubprocId {
            id: &MAIN_SUBPROC as *const u8 as *mut c_void,
        }
    }

    fn of(sp: *mut Subproc) -> SubprocId {
        SubprocId { id: sp.cast() }
    }

    /// Whether this is the main sub-process's id (NULL means it too, as in mimalloc).
    pub(crate) fn is_main(self) -> bool {
        self.id.is_null() || self.id == SubprocId::main().id
    }

    /// The live sub-process this id names (None for the main one or an unknown id).
    fn live(self) -> Option<&'static Subproc> {
        let list = LIVE.lock();
        let mut sp = list.0;
        while !sp.is_null() {
            if sp as *mut c_void == self.id {
                // SAFETY: a member of the live list: its struct lives until
                // `mi_subproc_destroy` unlinks it (the caller's contract is not to destroy
                // a sub-process while using it, as in mimalloc).
                return Some(unsafe { &*sp });
            }
            // SAFETY: members of the list are live (invariant), read under the lock.
            sp = unsafe { (*sp).next };
        }
        None
    }

    /// The domain this id names: the process's for the main id.
    pub(crate) fn domain(self) -> Option<&'static Domain> {
        if self.is_main() {
            Some(&DOMAIN)
        } else {
            self.live().map(|sp| &sp.domain)
        }
    }
}

#[no_mangle]
pub extern "C" fn mi_subproc_main() -> SubprocId {
    SubprocId::main()
}

/// The calling thread's sub-process.
#[no_mangle]
pub extern "C" fn mi_subproc_current() -> SubprocId {
    let d = hosted::thread_domain();
    if ptr::eq(d, &DOMAIN) {
        SubprocId::main()
    } else {
        // a thread's domain other than the process's is a sub-process's first field
        SubprocId {
            id: d as *const Domain as *mut c_void,
        }
    }
}

/// A new sub-process, empty; the NULL id (with `ENOMEM`) when out of memory.
#[no_mangle]
pub extern "C" fn mi_subproc_new() -> SubprocId {
    let Some(region) = DOMAIN.os.alloc_committed(core::mem::size_of::<Subproc>()) else {
        super::set_errno(::libc::ENOMEM);
        return SubprocId {
            id: ptr::null_mut(),
        };
    };
    let sp = region.as_ptr() as *mut Subproc;
    // SAFETY: a fresh committed region of at least `size_of::<Subproc>()` bytes, page
    // aligned, ours alone; it never moves.
    unsafe {
        ptr::write(
            sp,
            Subproc {
                domain: hosted::os_domain(),
                main: SharedHeap::new(true),
                next: ptr::null_mut(),
            },
        );
        // the process's options that act on a domain
        (*sp).domain.set_purge_delay(DOMAIN.purge_delay());
    }
    let mut list = LIVE.lock();
    // SAFETY: `sp` is live and not yet in the list; the list is ours under the lock.
    unsafe { (*sp).next = list.0 };
    list.0 = sp;
    SubprocId::of(sp)
}

/// Destroys a sub-process: every heap and block of it is freed and its memory goes back
/// to the OS. Refused (an error message) while one of its threads is still running; the
/// main sub-process is never destroyed, as in mimalloc.
#[no_mangle]
pub extern "C" fn mi_subproc_destroy(subproc: SubprocId) {
    if subproc.is_main() {
        return;
    }
    let sp = {
        let mut list = LIVE.lock();
        let mut link: *mut *mut Subproc = &mut list.0;
        // SAFETY: the links of the live list, read and written under its lock.
        unsafe {
            while !(*link).is_null() && (*link) as *mut c_void != subproc.id {
                link = ptr::addr_of_mut!((**link).next);
            }
            let sp = *link;
            if sp.is_null() {
                drop(list);
                error(
                    ::libc::EINVAL,
                    format_args!("mi_subproc_destroy: unknown sub-process {:p}", subproc.id),
                );
                return;
            }
            let threads = (*sp).domain.stats().threads.current;
            if threads > 0 {
                drop(list);
                error(
                    ::libc::EBUSY,
                    format_args!(
                        "mi_subproc_destroy: sub-process {:p} still has {threads} running \
                         thread(s); not destroyed",
                        subproc.id
                    ),
                );
                return;
            }
            *link = (*sp).next;
            sp
        }
    };
    // SAFETY: `sp` was live and is now out of the list; it has no running thread, and by
    // mimalloc's contract for `mi_subproc_destroy` no block of it is used again.
    unsafe {
        crate::thread::discard_domain(&(*sp).domain);
        let size = region_size();
        // SAFETY: the struct's region from `mi_subproc_new`, committed in full; nothing
        // refers to it any more (no thread is in the sub-process, and its id is dead).
        DOMAIN
            .os
            .free(NonNull::new_unchecked(sp as *mut u8), size, size);
    }
}

/// Moves the calling thread into `subproc` (see the module's documentation). A thread
/// already in another sub-process stays there (a warning, as in mimalloc).
#[no_mangle]
pub extern "C" fn mi_subproc_add_current_thread(subproc: SubprocId) {
    if subproc.is_main() {
        if !ptr::eq(hosted::thread_domain(), &DOMAIN) {
            warning(format_args!(
                "mi_subproc_add_current_thread: the thread is in another sub-process"
            ));
        }
        return;
    }
    let Some(sp) = subproc.live() else {
        error(
            ::libc::EINVAL,
            format_args!(
                "mi_subproc_add_current_thread: unknown sub-process {:p}",
                subproc.id
            ),
        );
        return;
    };
    let cur = hosted::thread_domain();
    if !ptr::eq(cur, &DOMAIN) && !ptr::eq(cur, &sp.domain) {
        warning(format_args!(
            "mi_subproc_add_current_thread: unable to add the thread to sub-process {:p}: \
             it is in another sub-process",
            subproc.id
        ));
        return;
    }
    if !hosted::join_domain(&sp.domain, &sp.main) {
        error(
            ::libc::ENOMEM,
            format_args!(
                "mi_subproc_add_current_thread: out of memory joining sub-process {:p}",
                subproc.id
            ),
        );
    }
}

/// The statistics of a sub-process (with the calling thread's pending figures when it is
/// in it); None for an unknown id.
pub(crate) fn stats_of(subproc: SubprocId) -> Option<crate::stats::Stats> {
    let d = subproc.domain()?;
    if ptr::eq(hosted::thread_domain(), d) {
        hosted::stats(); // flushes the calling thread's pending figures into `d`
    }
    Some(d.stats())
}

/// Whether the calling thread is in `subproc`.
pub(crate) fn is_current(subproc: SubprocId) -> bool {
    subproc
        .domain()
        .is_some_and(|d| ptr::eq(hosted::thread_domain(), d))
}

/// The main heap of a sub-process (None for an unknown id).
pub(crate) fn main_heap(subproc: SubprocId) -> Option<*mut SharedHeap> {
    if subproc.is_main() {
        Some(ptr::addr_of!(hosted::MAIN_HEAP) as *mut SharedHeap)
    } else {
        subproc
            .live()
            .map(|sp| &sp.main as *const SharedHeap as *mut SharedHeap)
    }
}
