//! Collection of a heap: apply delayed and remote frees, free empty pages, purge expired
//! memory; forced collection purges at once and frees abandoned segments that emptied;
//! abandoning collection detaches every page from the heap (its thread is done).

use core::ptr;

use crate::abandon::abandoned_collect;
use crate::free::{heap_collect_retired, heap_delayed_free};
use crate::heap::{for_each_page, page_sync_stats, OwnedHeap};
use crate::page::{Delayed, Page};
use crate::page_queue::page_free;
use crate::segment_alloc::segments_purge;

/// How a heap collection goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collect {
    /// Free empty pages, purge what is due.
    Normal,
    /// Also purge everything unused at once, and collect abandoned segments.
    Force,
    /// The thread is done: also detach every page from the heap.
    Abandon,
}

/// Collects the heap (see [`Collect`]).
pub(crate) fn heap_collect(heap: OwnedHeap, mode: Collect) {
    let force = mode != Collect::Normal;
    if mode == Collect::Abandon {
        // no remote thread may use our delayed list from now on
        for_each_page(heap, |page, _| {
            // SAFETY: a page in our heap's queues is live; the state is atomic.
            unsafe { (*page).use_delayed_free(Delayed::NeverDelayedFree, false) }
        });
    }
    heap_delayed_free(heap, true);
    heap_collect_retired(heap, force);
    for_each_page(heap, |page, bin| {
        // SAFETY: a page in our heap's queues is live and ours (the token), and so is the
        // heap's thread context; a page with no block in use may be given back; the heap's
        // struct is ours. (`walk` reads a page's successor before this may unlink it.)
        unsafe {
            // Only a forced collection appends the owner's frees to the free list (a walk
            // of `local_free`): `used` is exact without it, and a page that stays in use
            // keeps both lists, abandoned or not (whoever allocates from it takes
            // `local_free` when `free` runs out). A dying thread skipping that walk
            // saved about half of its exit's instructions under mstress.
            Page::collect(page, mode == Collect::Force);
            if (*page).all_free() {
                page_free(heap, page, bin);
            } else {
                page_sync_stats(page, &mut *heap.tld());
                if mode == Collect::Abandon {
                    // the thread is done: the page leaves the heap (one walk with the
                    // collection, not a second one after it)
                    (*heap.as_ptr()).queue_remove(page, bin);
                    (*page).set_heap(ptr::null_mut());
                }
            }
        }
    });
    // SAFETY: the token proves the heap's thread context is live and ours.
    let tld = unsafe { &mut *heap.tld() };
    tld.flush_stats();
    // a dying thread leaves pending purges to whoever takes its segments over
    segments_purge(&mut tld.segments, mode == Collect::Force);
    let domain = tld.domain();
    // (not when abandoning: a dying thread should not walk every abandoned segment)
    if mode == Collect::Force && domain.abandoned.count() > 0 {
        abandoned_collect(&domain.abandoned);
    }
    // (not when abandoning: the segments a dying thread just emptied are for the threads
    // that come next)
    domain.os.cache_collect(mode == Collect::Force);
}
