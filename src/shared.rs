//! Shared heaps ([`SharedHeap`], mimalloc v3's heaps; hosted only): any thread may
//! allocate from one, through its own part (a first-class heap of the thread, made on first
//! use and found without a lock; for a heap in an arena, a heap in thread data of the
//! arena's domain: a guest context of the thread); any thread may delete or destroy it. A
//! part of another thread is released by its owner (only the owner may touch its pages): at
//! that thread's next part lookup, collection or exit. A thread that exits while a shared
//! heap lives takes its part's live blocks along as `delete` would: they stay valid and
//! leave the heap.
//!
//! Above the thread-data layer: a part of a heap in an arena is thread data of its own.

use crate::sync::Ordering;
use core::ptr::{self, addr_of_mut};

use crate::alloc::malloc_aligned;
use crate::first_class::{heap_delete, heap_destroy, heap_new, heap_release};
use crate::free::free;
use crate::heap::{
    OwnedHeap, RawHeap, SharedHeap, Tld, SHARED_DELETED, SHARED_DESTROYED, SHARED_LIVE,
};
use crate::thread::{self, ThreadData};

/// A new shared heap; its struct is a block of the calling thread's backing heap (freed by
/// whichever thread drops the last reference). Null when out of memory.
pub(crate) fn shared_new(backing: OwnedHeap) -> *mut SharedHeap {
    // SAFETY: the token proves `backing` is the calling thread's initialised heap.
    let mem = unsafe {
        malloc_aligned(
            backing.as_ptr(),
            core::mem::size_of::<SharedHeap>(),
            core::mem::align_of::<SharedHeap>(),
            false,
        )
    } as *mut SharedHeap;
    if !mem.is_null() {
        // SAFETY: a fresh block, big and aligned enough, ours alone.
        unsafe { ptr::write(mem, SharedHeap::new(false)) };
    }
    mem
}

/// A new heap in an arena: its parts (one per thread that allocates from it) take
/// memory from `arena`'s domain only; its struct is a block of the calling thread's
/// backing heap. Null when out of memory.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // heaps in arenas (C API)
pub(crate) fn shared_new_in_arena(
    backing: OwnedHeap,
    arena: &'static crate::domain::Domain,
) -> *mut SharedHeap {
    let mem = shared_new(backing);
    if !mem.is_null() {
        // SAFETY: a fresh struct, ours alone, not yet shared.
        unsafe { ptr::write(mem, SharedHeap::new_in_arena(arena)) };
    }
    mem
}

/// Drops one reference to `shared`; the last one frees its struct.
///
/// # Safety
/// The caller holds a reference (the handle's or a part's) and gives it up; `owner` is the
/// calling thread's owner token (or `NO_OWNER`).
unsafe fn shared_unref(shared: *const SharedHeap, owner: usize) {
    // SAFETY: the caller's reference keeps the struct alive until this decrement.
    if unsafe { (*shared).refs.fetch_sub(1, Ordering::AcqRel) } == 1 {
        // SAFETY: no reference is left, so no thread uses the struct: a block of ours
        // (`shared_new`) that any thread may free.
        unsafe { free(shared as *mut u8, owner) };
    }
}

/// The calling thread's part of `shared` (the backing heap for the main heap), made on
/// first use; null when out of memory or when the heap is no longer live. The thread's
/// one-entry cache is set to it.
pub(crate) fn part_lookup(backing: OwnedHeap, shared: *const SharedHeap) -> *mut RawHeap {
    // SAFETY: the token proves the thread context is live and ours.
    let tld = unsafe { &mut *backing.tld() };
    // SAFETY: `shared` is a live shared heap: the caller holds its handle.
    let sh = unsafe { &*shared };
    let part = if sh.is_main {
        // the main heap of the thread's own domain only (a sub-process has its own)
        // SAFETY: the backing heap is live and ours; `shared` is set at its creation.
        if unsafe { (*tld.heap_backing).shared } != shared {
            return ptr::null_mut();
        }
        tld.heap_backing
    } else if !sh.arena.is_null() {
        if sh.state.load(Ordering::Acquire) != SHARED_LIVE {
            return ptr::null_mut();
        }
        let mut found = guest_part(tld, shared);
        if found.is_null() {
            found = arena_part_new(backing, shared);
            if found.is_null() {
                return ptr::null_mut();
            }
        }
        found
    } else {
        if sh.state.load(Ordering::Acquire) != SHARED_LIVE {
            return ptr::null_mut();
        }
        let mut found = ptr::null_mut();
        let mut h = tld.heaps;
        while !h.is_null() {
            // SAFETY: the thread's list holds live heaps of ours.
            unsafe {
                if (*h).shared == shared {
                    found = h;
                    break;
                }
                h = (*h).next;
            }
        }
        if found.is_null() {
            found = part_new(backing, shared);
            if found.is_null() {
                return ptr::null_mut();
            }
        }
        found
    };
    tld.cache_shared = shared;
    tld.cache_part = part;
    part
}

/// The calling thread's part of the heap in an arena `shared`, if it has one: found
/// among the thread's guest contexts (see `Tld::guests`).
fn guest_part(tld: &Tld, shared: *const SharedHeap) -> *mut RawHeap {
    let mut g = tld.guests;
    while !g.is_null() {
        // SAFETY: the thread's guest contexts are live thread data that only this
        // thread uses; their heaps lists hold live heaps.
        unsafe {
            let mut h = (*g).heaps;
            while !h.is_null() {
                if (*h).shared == shared {
                    return h;
                }
                h = (*h).next;
            }
            g = (*g).guest_next;
        }
    }
    ptr::null_mut()
}

/// The thread data (in the arena's domain) that a part of a heap in an arena lives in.
///
/// # Safety
/// `part` is a live part of a heap in an arena.
unsafe fn guest_td(part: *mut RawHeap) -> *mut ThreadData {
    // SAFETY: a part's context is live; a guest context's backing heap is the first
    // field of its thread data (`ThreadData` is `repr(C)` with `heap` first).
    unsafe { (*(*part).tld).heap_backing as *mut ThreadData }
}

/// Makes the calling thread's part of `shared`, a live heap in an arena: thread data of
/// the arena's domain (a guest context of the thread) holding a first-class heap, linked
/// into the heap's list. Null when out of memory (in the arena or for the thread data),
/// or when the heap stopped being live meanwhile.
fn arena_part_new(backing: OwnedHeap, shared: *const SharedHeap) -> *mut RawHeap {
    // SAFETY: `shared` is live (the caller holds its handle); `arena` is a
    // `&'static Domain` set at its creation.
    let domain: &'static crate::domain::Domain = unsafe { &*(*shared).arena };
    let td = thread::thread_data_alloc(domain);
    if td.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `td` is fresh thread data that only the calling thread uses: its backing
    // heap is initialised and ours.
    let part = heap_new(unsafe { OwnedHeap::new(addr_of_mut!((*td).heap)) });
    // SAFETY: `shared` is live (the caller holds its handle); `part` (if any) is a fresh
    // heap of `td`, ours.
    let linked = !part.is_null() && unsafe { part_link(shared, part) };
    if !linked {
        // SAFETY: `td` is ours, unused by anyone else, its heaps hold no block.
        unsafe {
            if !part.is_null() {
                (*part).shared = ptr::null();
            }
            guest_td_release(td);
        }
        return ptr::null_mut();
    }
    // SAFETY: `td`'s context is ours and lives until `guest_td_release`; the thread's
    // guest list is changed by this thread only.
    unsafe {
        let tld = backing.tld();
        (*td).tld.host = tld;
        (*td).tld.guest_next = (*tld).guests;
        (*tld).guests = addr_of_mut!((*td).tld);
    }
    part
}

/// Ends a guest context's thread data: its heaps are collected, its segments that still
/// hold live blocks are abandoned to the arena's domain (the blocks stay valid), and
/// the data goes back to the domain.
///
/// # Safety
/// `td` is thread data of an arena's domain used by the calling thread only, not in the
/// thread's guest list, and its heaps are not used afterwards.
unsafe fn guest_td_release(td: *mut ThreadData) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let domain = (*td).tld.domain();
        thread::thread_done(addr_of_mut!((*td).tld));
        thread::thread_data_free(domain, td);
    }
}

/// Takes the guest context `g` out of its host's list.
///
/// # Safety
/// `g` is a guest context of the calling thread, whose context is `host`.
unsafe fn guest_unlink(host: *mut Tld, g: *mut Tld) {
    // SAFETY: the list is the calling thread's (caller), its members live.
    unsafe {
        let mut link: *mut *mut Tld = addr_of_mut!((*host).guests);
        while !(*link).is_null() {
            if *link == g {
                *link = (*g).guest_next;
                break;
            }
            link = addr_of_mut!((**link).guest_next);
        }
        (*g).guest_next = ptr::null_mut();
    }
}

/// The context of the thread that uses `part`: its own, or its host's for a part of a
/// heap in an arena.
///
/// # Safety
/// `part` is a live part.
unsafe fn user_tld(part: *mut RawHeap) -> *mut Tld {
    // SAFETY: a live part's context is live.
    unsafe {
        let t = (*part).tld;
        if (*t).host.is_null() {
            t
        } else {
            (*t).host
        }
    }
}

/// Links the fresh heap `part` into `shared`'s list of parts (taking a reference) if the
/// heap is still live; false (nothing linked) otherwise.
///
/// # Safety
/// `shared` is live; `part` is a fresh heap of the calling thread, in no list of parts.
unsafe fn part_link(shared: *const SharedHeap, part: *mut RawHeap) -> bool {
    // SAFETY: as the caller guarantees. Under the lock: a heap that is deleted or destroyed
    // meanwhile stores its state before it takes the lock to walk the parts, so either it
    // sees this part or this sees its state.
    unsafe {
        (*part).shared = shared;
        let mut list = (*shared).parts.lock();
        if (*shared).state.load(Ordering::Acquire) == SHARED_LIVE {
            (*part).part_next = list.0;
            list.0 = part;
            (*shared).refs.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Makes the calling thread's part of the live shared heap `shared` and links it into the
/// heap's list; null when out of memory or when the heap stopped being live meanwhile.
fn part_new(backing: OwnedHeap, shared: *const SharedHeap) -> *mut RawHeap {
    let part = heap_new(backing);
    if part.is_null() {
        return part;
    }
    // SAFETY: `shared` is live (the caller holds its handle); `part` is a fresh heap of
    // ours.
    let linked = unsafe { part_link(shared, part) };
    if !linked {
        // SAFETY: a fresh first-class heap of ours with no page, not linked anywhere else.
        unsafe {
            (*part).shared = ptr::null();
            heap_release(OwnedHeap::new(part));
        }
        return ptr::null_mut();
    }
    part
}

/// Takes `part` out of its shared heap's list (under the heap's lock) and out of the
/// thread's cache. Returns the shared heap, whose reference the part still holds.
///
/// # Safety
/// `part` is a part of the calling thread, in its shared heap's list.
unsafe fn part_unlink(part: OwnedHeap) -> *const SharedHeap {
    let p = part.as_ptr();
    // SAFETY: the token proves the part and its thread context are live and ours; the
    // shared heap is alive while the part holds its reference.
    unsafe {
        let shared = (*p).shared;
        {
            let mut list = (*shared).parts.lock();
            let mut link: *mut *mut RawHeap = addr_of_mut!(list.0);
            while !(*link).is_null() {
                if *link == p {
                    *link = (*p).part_next;
                    break;
                }
                link = addr_of_mut!((**link).part_next);
            }
        }
        (*p).part_next = ptr::null_mut();
        let tld = &mut *user_tld(p);
        if tld.cache_part == p {
            tld.cache_shared = ptr::null();
            tld.cache_part = ptr::null_mut();
        }
        shared
    }
}

/// Releases the calling thread's `part` as its shared heap's state says (destroyed: its
/// blocks are freed; else they move to the backing heap), and drops its reference.
///
/// # Safety
/// `part` is a part of the calling thread, in its shared heap's list, not the thread's
/// default heap, and not used afterwards.
unsafe fn part_release(part: OwnedHeap) {
    // SAFETY: as the caller guarantees.
    let shared = unsafe { part_unlink(part) };
    // SAFETY: the part's reference keeps the shared heap alive.
    let destroy = unsafe { (*shared).state.load(Ordering::Acquire) } == SHARED_DESTROYED;
    let p = part.as_ptr();
    // SAFETY: the token proves the heap and its context are live and ours; the user's
    // context is the calling thread's (its own, or the host of an arena part's).
    let (user, guest) = unsafe {
        let user = user_tld(p);
        (user, (user != (*p).tld).then(|| guest_td(p)))
    };
    // SAFETY: the calling thread's context, live.
    let owner = unsafe { (*user).owner() };
    // SAFETY: a first-class heap of ours (parts are never backing heaps), unlinked from its
    // shared heap, not used afterwards (caller); when destroyed, its blocks are given up by
    // the program (the contract of `destroy`). An arena part's thread data is then
    // released: out of the thread's guest list, used by no one.
    unsafe {
        (*p).shared = ptr::null();
        if destroy {
            heap_destroy(part);
        } else {
            heap_delete(part);
        }
        if let Some(td) = guest {
            guest_unlink(user, addr_of_mut!((*td).tld));
            guest_td_release(td);
        }
        shared_unref(shared, owner);
    }
}

/// Releases the calling thread's parts of shared heaps that other threads deleted or
/// destroyed, if one flagged this thread. Returns whether `default` (the thread's default
/// heap) was among them: the caller then makes the backing heap the default again.
pub(crate) fn reap_parts(backing: OwnedHeap, default: *mut RawHeap) -> bool {
    // SAFETY: the token proves the thread context is live and ours.
    let tld = unsafe { &*backing.tld() };
    if !tld.reap.swap(false, Ordering::Acquire) {
        return false;
    }
    let mut released_default = false;
    let mut h = tld.heaps;
    while !h.is_null() {
        // SAFETY: the thread's list holds live heaps of ours; `next` is read before the
        // heap is released (which unlinks and frees it).
        unsafe {
            let next = (*h).next;
            let shared = (*h).shared;
            if !shared.is_null()
                && !(*shared).is_main
                && (*shared).state.load(Ordering::Acquire) != SHARED_LIVE
            {
                released_default |= h == default;
                // SAFETY: a part of ours in its heap's list; the caller stops using it as
                // the default (the return value).
                part_release(OwnedHeap::new(h));
            }
            h = next;
        }
    }
    // parts of heaps in arenas (never the default)
    let mut g = tld.guests;
    while !g.is_null() {
        // SAFETY: the thread's guest contexts are live and ours; `guest_next` is read
        // before the part's release frees the context.
        unsafe {
            let next = (*g).guest_next;
            let part = arena_part_of(g);
            let shared = (*part).shared;
            if (*shared).state.load(Ordering::Acquire) != SHARED_LIVE {
                // SAFETY: a part of ours in its heap's list, never the default.
                part_release(OwnedHeap::new(part));
            }
            g = next;
        }
    }
    released_default
}

/// The part (the one heap with a `shared` heap) of guest context `g`.
///
/// # Safety
/// `g` is a live guest context of the calling thread.
unsafe fn arena_part_of(g: *mut Tld) -> *mut RawHeap {
    // SAFETY: a live context's heaps list holds live heaps; a guest context holds its
    // backing heap and the part (`arena_part_new`).
    unsafe {
        let mut h = (*g).heaps;
        while !h.is_null() && (*h).shared.is_null() {
            h = (*h).next;
        }
        debug_assert!(!h.is_null(), "guest context without its part");
        h
    }
}

/// Deletes (`destroy == false`) or destroys a shared heap, from any thread: the calling
/// thread's part is released at once, the other threads are flagged to release theirs.
/// Returns whether the calling thread's default heap (`default`) was released. A heap that
/// is no longer live (deleted twice) is left alone.
///
/// # Safety
/// `shared` is a live shared heap that is not the main heap; the caller gives up its
/// handle (and, for destroy, every block of the heap); no thread allocates from it
/// meanwhile (mimalloc's contract).
pub(crate) unsafe fn shared_release(
    backing: OwnedHeap,
    shared: *mut SharedHeap,
    destroy: bool,
    default: *mut RawHeap,
) -> bool {
    let state = if destroy {
        SHARED_DESTROYED
    } else {
        SHARED_DELETED
    };
    // SAFETY: `shared` is live (caller): the handle's reference keeps it so.
    let sh = unsafe { &*shared };
    debug_assert!(!sh.is_main);
    if sh
        .state
        .compare_exchange(SHARED_LIVE, state, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    // SAFETY: the token proves the thread context is live and ours.
    let (me, owner) = unsafe { (backing.tld(), (*backing.as_ptr()).owner) };
    let mut own = ptr::null_mut();
    {
        let list = sh.parts.lock();
        let mut p = list.0;
        while !p.is_null() {
            // SAFETY: parts in the list are live heaps whose threads have not finished
            // exiting (they unlink under this lock first), so their thread data is live;
            // `reap` is atomic.
            unsafe {
                let user = user_tld(p);
                if user == me {
                    own = p;
                } else {
                    (*user).reap.store(true, Ordering::Release);
                }
                p = (*p).part_next;
            }
        }
    }
    let mut released_default = false;
    if !own.is_null() {
        released_default = own == default;
        // SAFETY: our own part, in the list; the caller stops using it as the default.
        unsafe { part_release(OwnedHeap::new(own)) };
    }
    // SAFETY: the caller gives up the handle's reference.
    unsafe { shared_unref(shared, owner) };
    released_default
}

/// Before the calling thread's exit: its parts of dead shared heaps are released, and its
/// parts of live ones leave their heaps' lists (their pages are then abandoned with the
/// thread's other heaps, their blocks leave the heap). Returns the parts that left (linked
/// through `part_next`), whose structs and references [`parts_free`] gives back after the
/// thread is done.
pub(crate) fn parts_thread_exit(backing: OwnedHeap) -> *mut RawHeap {
    // SAFETY: the token proves the thread context is live and ours.
    let tld = unsafe { &*backing.tld() };
    tld.reap.store(true, Ordering::Relaxed);
    reap_parts(backing, ptr::null_mut());
    // parts of live heaps in arenas: their live blocks stay valid in the arena (as
    // `delete`), and their thread data goes back to it now
    let tldp = backing.tld();
    // SAFETY: the token proves the context is live and ours; each guest is a live guest
    // context of ours whose part is in its (live) heap's list; the release takes the
    // guest out of the list (and frees it).
    unsafe {
        while !(*tldp).guests.is_null() {
            part_release(OwnedHeap::new(arena_part_of((*tldp).guests)));
        }
    }
    let mut left = ptr::null_mut();
    let mut h = tld.heaps;
    while !h.is_null() {
        // SAFETY: the thread's list holds live heaps of ours.
        unsafe {
            let next = (*h).next;
            let shared = (*h).shared;
            if !shared.is_null() && !(*shared).is_main {
                // SAFETY: a part of ours in its (live) heap's list; it stays a heap of this
                // thread (collected and detached with the others) until `parts_free`.
                part_unlink(OwnedHeap::new(h));
                (*h).part_next = left;
                left = h;
            }
            h = next;
        }
    }
    left
}

/// After the thread is done (its heaps detached): frees the structs of the parts that
/// [`parts_thread_exit`] returned and drops their references.
///
/// # Safety
/// `parts` came from `parts_thread_exit` of the calling thread, which is done; `owner` is
/// the token the thread now frees with (`NO_OWNER`).
pub(crate) unsafe fn parts_free(mut parts: *mut RawHeap, owner: usize) {
    while !parts.is_null() {
        // SAFETY: each is a detached heap struct of ours, a block of the thread's backing
        // heap (abandoned now: any thread may free it), holding a reference to `shared`.
        unsafe {
            let next = (*parts).part_next;
            let shared = (*parts).shared;
            free(parts as *mut u8, owner);
            shared_unref(shared, owner);
            parts = next;
        }
    }
}

/// Whether page-owning heap `page_heap` is a part of `shared` (for the main heap: a
/// backing heap). Any thread may ask.
///
/// # Safety
/// `shared` is a live shared heap; `page_heap` is null or the heap of a live page.
pub(crate) unsafe fn shared_has_part(shared: *const SharedHeap, page_heap: *mut RawHeap) -> bool {
    if page_heap.is_null() {
        return false;
    }
    // SAFETY: live (caller).
    let sh = unsafe { &*shared };
    if sh.is_main {
        // SAFETY: the heap of a live page is a live heap (its thread data lives while its
        // pages are not abandoned).
        return unsafe { (*page_heap).shared } == shared;
    }
    let list = sh.parts.lock();
    let mut p = list.0;
    while !p.is_null() {
        if p == page_heap {
            return true;
        }
        // SAFETY: parts in the list are live (see `SharedHeap`'s invariants).
        p = unsafe { (*p).part_next };
    }
    false
}

/// The calling thread's part of `shared` if it has one (no part is made).
pub(crate) fn part_peek(backing: OwnedHeap, shared: *const SharedHeap) -> Option<OwnedHeap> {
    // SAFETY: the token proves the thread context is live and ours.
    let tld = unsafe { &*backing.tld() };
    // SAFETY: `shared` is live (caller holds its handle).
    let sh = unsafe { &*shared };
    if sh.is_main {
        // SAFETY: the token proves the backing heap is live and ours.
        return (unsafe { (*backing.as_ptr()).shared } == shared).then_some(backing);
    }
    if !sh.arena.is_null() {
        let part = guest_part(tld, shared);
        // SAFETY: a part of the calling thread (one of its guest contexts' heaps), used
        // by this thread only.
        return (!part.is_null()).then(|| unsafe { OwnedHeap::new(part) });
    }
    let mut h = tld.heaps;
    while !h.is_null() {
        // SAFETY: the thread's list holds live heaps of ours.
        unsafe {
            if (*h).shared == shared {
                return Some(OwnedHeap::new(h));
            }
            h = (*h).next;
        }
    }
    None
}
