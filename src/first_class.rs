//! First-class heaps — the one implementation behind the Rust [`Heap`](crate::Heap) and
//! mimalloc's `mi_heap_*`:
//! - per-thread heaps (`RawHeap`): made, deleted and destroyed by the thread that owns
//!   them, and their blocks visited; delete hands the heap's live blocks to the thread's
//!   backing heap, destroy frees them all at once, without looking at them;
//! - shared heaps ([`SharedHeap`], mimalloc v3's heaps): any thread may allocate from one,
//!   through its own part (a per-thread heap made on first use and found without a lock);
//!   any thread may delete or destroy it. A part of another thread is released by its
//!   owner (only the owner may touch its pages): at that thread's next part lookup,
//!   collection or exit. A thread that exits while a shared heap lives takes its part's
//!   live blocks along as `delete` would: they stay valid and leave the heap.
//!
//! Blocks of any heap may be freed by any thread, before or after.
//!
//! Kernels (no `std`) have no first-class heaps yet: there, this module is unused.
#![cfg_attr(not(feature = "std"), allow(dead_code))]

use crate::sync::Ordering;
use core::ptr::{self, addr_of_mut};

use crate::alloc::malloc_aligned;
use crate::free::{free, heap_delayed_free};
use crate::heap::{for_each_page, OwnedHeap, RawHeap};
#[cfg(feature = "std")]
use crate::heap::{SharedHeap, SHARED_DELETED, SHARED_DESTROYED, SHARED_LIVE};
use crate::page::{Delayed, Page};
use crate::page_queue::page_free;
use crate::size_class::{SMALL_PAGE_SIZE, WORD};

/// A new heap of the thread whose backing heap is `backing`; its struct is a block of the
/// backing heap. Null when out of memory.
pub(crate) fn heap_new(backing: OwnedHeap) -> *mut RawHeap {
    // SAFETY: the token proves `backing` is the calling thread's initialised heap.
    let mem = unsafe {
        malloc_aligned(
            backing.as_ptr(),
            core::mem::size_of::<RawHeap>(),
            core::mem::align_of::<RawHeap>(),
            false,
        )
    } as *mut RawHeap;
    if !mem.is_null() {
        // SAFETY: a fresh block, big and aligned enough for a `RawHeap`, ours alone; the
        // thread context is the calling thread's (the token).
        unsafe { RawHeap::init(mem, backing.tld()) };
    }
    mem
}

/// Deletes a first-class heap: its live blocks move to the thread's backing heap (they stay
/// valid), and its struct is freed.
///
/// # Safety
/// `heap` is a first-class heap (not the backing heap); it is not used afterwards.
pub(crate) unsafe fn heap_delete(heap: OwnedHeap) {
    // SAFETY: the token proves the heap's thread context is live and ours.
    let backing = unsafe { (*heap.tld()).heap_backing };
    debug_assert!(heap.as_ptr() != backing);
    // SAFETY: the backing heap of our thread is initialised and ours.
    heap_absorb(unsafe { OwnedHeap::new(backing) }, heap);
    // SAFETY: the heap has no page left (absorbed), is not the backing heap, and is not
    // used afterwards (caller).
    unsafe { heap_release(heap) };
}

/// Destroys a first-class heap: every page is freed at once (its blocks with it), and its
/// struct is freed.
///
/// # Safety
/// `heap` is a first-class heap (not the backing heap); neither it nor any of its blocks
/// is used afterwards.
pub(crate) unsafe fn heap_destroy(heap: OwnedHeap) {
    for_each_page(heap, |page, _| {
        // SAFETY: a page in our heap's queues is live; its state is atomic.
        unsafe { (*page).use_delayed_free(Delayed::NeverDelayedFree, false) }
    });
    // SAFETY: the token proves the heap is live; the list head is atomic.
    unsafe { &(*heap.as_ptr()).thread_delayed_free }.store(ptr::null_mut(), Ordering::Relaxed);
    // SAFETY: every page is in its queue `bin`, and no block of the heap is used
    // afterwards (caller).
    for_each_page(heap, |page, bin| unsafe { page_free(heap, page, bin) });
    // SAFETY: the heap has no page left, and is not used afterwards (caller).
    unsafe { heap_release(heap) };
}

/// Unlinks an emptied heap from its thread and frees its struct.
///
/// # Safety
/// The heap has no page, is not the backing heap, and is not used afterwards.
unsafe fn heap_release(heap: OwnedHeap) {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap and its thread context are live and ours.
    let (owner, tld) = unsafe { ((*h).owner, &mut *heap.tld()) };
    debug_assert!(h != tld.heap_backing);
    let mut link: *mut *mut RawHeap = addr_of_mut!(tld.heaps);
    // SAFETY: the thread's list of heaps holds live heaps of ours, linked through `next`.
    unsafe {
        debug_assert_eq!((*h).page_count, 0);
        while !(*link).is_null() {
            if *link == h {
                *link = (*h).next;
                break;
            }
            link = addr_of_mut!((**link).next);
        }
    }
    // SAFETY: the struct is a live block of our backing heap, and no longer used (caller).
    unsafe { free(h as *mut u8, owner) };
}

/// Gives all pages of `heap` to `into` (heaps of the same thread), so that `heap` can be
/// freed while its blocks stay valid.
fn heap_absorb(into: OwnedHeap, heap: OwnedHeap) {
    heap_delayed_free(heap, true);
    for_each_page(heap, |page, bin| {
        // SAFETY: both heaps are ours (tokens), and so is the page, in `heap`'s queue `bin`.
        unsafe {
            (*heap.as_ptr()).queue_remove(page, bin);
            (*page).xheap.store(into.as_ptr(), Ordering::Release);
            (*page).retire_expire = 0; // `into`'s retired range does not cover it
                                       // A remote free may have read the old heap just before the store and be
                                       // pushing to its delayed list: wait until it is done, so that from here on
                                       // only `into` is used, and the final pass below sees its block.
            while (*page).is_delayed_freeing() {
                core::hint::spin_loop();
            }
            (*into.as_ptr()).queue_push_back(page, bin);
        }
    });
    // a remote free may still have reached `heap`'s list in the meantime
    heap_delayed_free(heap, true);
}

// ---------------------------------------------------------------------------------------
// shared heaps
// (hosted only: kernels and firmware have no shared heaps)

#[cfg(feature = "std")]
pub(crate) use shared::*;

#[cfg(feature = "std")]
mod shared {
    use super::*;

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

    /// A new shared heap whose one part is `arena`, a heap in an arena that the calling
    /// thread (owner token `creator`) made; its struct is a block of the calling thread's
    /// backing heap. Null when out of memory.
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // heaps in arenas (C API)
    pub(crate) fn shared_new_in_arena(
        backing: OwnedHeap,
        arena: *mut RawHeap,
        creator: usize,
    ) -> *mut SharedHeap {
        let mem = shared_new(backing);
        if !mem.is_null() {
            // SAFETY: a fresh struct, ours alone; `arena` is a live heap (caller) that no
            // other thread uses yet.
            unsafe {
                ptr::write(mem, SharedHeap::new_in_arena(false, arena, creator));
                (*arena).shared = mem;
            }
        }
        mem
    }

    /// Forgets `shared` in the calling thread's part cache (before its struct is freed).
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // heaps in arenas (C API)
    pub(crate) fn cache_forget(backing: OwnedHeap, shared: *const SharedHeap) {
        // SAFETY: the token proves the thread context is live and ours.
        let tld = unsafe { &mut *backing.tld() };
        if tld.cache_shared == shared {
            tld.cache_shared = ptr::null();
            tld.cache_part = ptr::null_mut();
        }
    }

    /// Frees the struct of a shared heap that has no part left and whose handle is given
    /// up (a heap in an arena, released by `arenas.rs`).
    ///
    /// # Safety
    /// `shared` came from `shared_new_in_arena`, nothing refers to it any more.
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // heaps in arenas (C API)
    pub(crate) unsafe fn shared_free(shared: *mut SharedHeap, owner: usize) {
        // SAFETY: as the caller guarantees: the handle's is the last reference.
        unsafe { shared_unref(shared, owner) }
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
            tld.heap_backing
        } else if !sh.arena.is_null() {
            // a heap in an arena: only its creator allocates from it
            // SAFETY: the token proves the backing heap is live and ours.
            if unsafe { (*backing.as_ptr()).owner } != sh.arena_creator {
                return ptr::null_mut();
            }
            sh.arena
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

    /// Makes the calling thread's part of the live shared heap `shared` and links it into the
    /// heap's list; null when out of memory or when the heap stopped being live meanwhile.
    fn part_new(backing: OwnedHeap, shared: *const SharedHeap) -> *mut RawHeap {
        let part = heap_new(backing);
        if part.is_null() {
            return part;
        }
        // SAFETY: `shared` is live (the caller holds its handle); `part` is a fresh heap of
        // ours. Under the lock: a heap that is deleted or destroyed meanwhile stores its state
        // before it takes the lock to walk the parts, so either it sees this part or this
        // sees its state.
        let linked = unsafe {
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
        };
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
            let tld = &mut *part.tld();
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
        // SAFETY: the token proves the heap is live and ours.
        let owner = unsafe { (*part.as_ptr()).owner };
        // SAFETY: a first-class heap of ours (parts are never backing heaps), unlinked from its
        // shared heap, not used afterwards (caller); when destroyed, its blocks are given up by
        // the program (the contract of `destroy`).
        unsafe {
            (*part.as_ptr()).shared = ptr::null();
            if destroy {
                heap_destroy(part);
            } else {
                heap_delete(part);
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
        released_default
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
                    if (*p).tld == me {
                        own = p;
                    } else {
                        (*(*p).tld).reap.store(true, Ordering::Release);
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
    pub(crate) unsafe fn shared_has_part(
        shared: *const SharedHeap,
        page_heap: *mut RawHeap,
    ) -> bool {
        if page_heap.is_null() {
            return false;
        }
        // SAFETY: live (caller).
        let sh = unsafe { &*shared };
        if !sh.arena.is_null() {
            return page_heap == sh.arena;
        }
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
            return Some(backing);
        }
        if !sh.arena.is_null() {
            // SAFETY: the token proves the backing heap is live and ours; the arena heap is
            // used by its creator only, which this thread then is.
            return (unsafe { (*backing.as_ptr()).owner } == sh.arena_creator)
                .then(|| unsafe { OwnedHeap::new(sh.arena) });
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
}

/// One page of a heap, as the visitor of [`heap_visit`] sees it (mimalloc's
/// `mi_heap_area_t`).
#[cfg_attr(not(feature = "override"), allow(dead_code))] // all fields are read by the C API
pub(crate) struct Area {
    /// Start of the page's blocks.
    pub blocks: *mut u8,
    /// Bytes of blocks the page can hold, and those made so far.
    pub reserved: usize,
    pub committed: usize,
    /// Blocks live in the page.
    pub used: usize,
    pub block_size: usize,
}

/// Calls `f(area, null)` once per page of `heap`, and with `blocks`, `f(area, block)` once
/// per live block of it; stops when `f` returns false. Returns whether all were visited.
/// Delayed and remote frees are applied first, so that the counts are exact. (`f` must not
/// allocate from or free into the heap.)
pub(crate) fn heap_visit(
    heap: OwnedHeap,
    blocks: bool,
    mut f: impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    heap_delayed_free(heap, true);
    let mut go_on = true;
    for_each_page(heap, |page, _| {
        if go_on {
            // SAFETY: a page in our heap's queues is live and ours; collecting with
            // `force` leaves every free block in `free`.
            unsafe {
                (*page).collect(true);
                go_on = page_visit(page, blocks, &mut f);
            }
        }
    });
    go_on
}

/// # Safety
/// The calling thread owns `page`, whose free lists are collected into `free`.
unsafe fn page_visit(
    page: *mut Page,
    blocks: bool,
    f: &mut impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    // SAFETY: the calling thread owns the page (caller); nothing else writes it while `f`
    // runs (`f` does not allocate from or free into the heap).
    let p = unsafe { &*page };
    let bsize = p.block_size;
    let cap = p.capacity as usize;
    let area = Area {
        blocks: p.page_start,
        reserved: p.reserved as usize * bsize,
        committed: cap * bsize,
        used: p.used as usize,
        block_size: bsize,
    };
    if !f(&area, ptr::null_mut()) {
        return false;
    }
    if !blocks || p.used == 0 {
        return true;
    }
    // one bit per block, set for free blocks: a 64 KiB page of 8-byte blocks has the most
    // (larger pages hold larger blocks)
    const MAX_BLOCKS: usize = SMALL_PAGE_SIZE / WORD;
    debug_assert!(cap <= MAX_BLOCKS);
    if cap > MAX_BLOCKS {
        return true;
    }
    let mut free_map = [0u64; MAX_BLOCKS / 64];
    let mut b = p.free;
    while !b.is_null() {
        let i = (b as usize - p.page_start as usize) / bsize;
        free_map[i / 64] |= 1 << (i % 64);
        // SAFETY: `b` is a free block of the page (its `free` list holds only those).
        b = unsafe { p.next_of(b) };
    }
    for i in 0..cap {
        if free_map[i / 64] & (1 << (i % 64)) == 0
            && !f(&area, p.page_start.wrapping_add(i * bsize))
        {
            return false;
        }
    }
    true
}
