//! Abandon and reclaim: a dying thread hands its segments that still hold live blocks to
//! the domain; other threads take them over (and free those that emptied meanwhile).

use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::{RawHeap, Tld};
use crate::page::{Delayed, Page};
use crate::segment::{
    page_release_stats, segment_free, segment_page_free, segment_purge, Segment, SegmentKind,
};

/// Hands a segment of the exiting thread to the domain. Its pages must have been
/// detached from their heaps (no heap, `NeverDelayedFree`).
///
/// # Safety
/// `segment` is owned by `tld`, and has pages in use.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn segment_abandon(segment: *mut Segment, tld: &mut Tld) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert!((*segment).used > 0);
        // pending purges stay pending: the thread that reclaims the segment (or a forced
        // collection) does them, so a segment that is taken over at once is not faulted
        // back in
        if (*segment).in_free_queue {
            if let Some(q) = tld.segments.queue_for((*segment).kind) {
                q.remove(segment);
            }
        }
        tld.segments.unlink(segment);
        (*segment).tld = ptr::null_mut();
        (*segment).thread_id.store(0, Ordering::Release);
        let domain = &*(*segment).domain;
        domain.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        domain.push_abandoned(segment);
    }
}

/// Takes over one abandoned segment, if any: its pages go to `heap`, empty pages are
/// freed. `heap` must be the thread's backing heap: a first-class heap must only ever
/// hold its own blocks, or destroying it would free blocks of others (as mimalloc's
/// `no_reclaim` heaps). Returns what happened.
///
/// # Safety
/// `heap` belongs to the calling thread, whose data is `tld`.
pub(crate) unsafe fn try_reclaim_one(heap: *mut RawHeap, tld: &mut Tld) -> Reclaim {
    let Some(segment) = tld.domain().pop_abandoned() else {
        return Reclaim::None;
    };
    tld.domain().stats.reclaimed.fetch_add(1, Ordering::Relaxed);
    // SAFETY: popping gave us exclusive ownership of the abandoned segment.
    if unsafe { segment_reclaim(segment, heap, tld) } {
        Reclaim::Kept
    } else {
        Reclaim::Freed
    }
}

/// What `try_reclaim_one` did.
pub(crate) enum Reclaim {
    /// No abandoned segment.
    None,
    /// A segment was taken over and still holds live blocks.
    Kept,
    /// A segment was taken over and freed: all its blocks had been freed.
    Freed,
}

/// Most abandoned segments with live blocks a thread takes over at once.
pub(crate) const RECLAIM_MAX: usize = 8;

/// Returns whether the segment is still alive (false: it was empty and is freed).
///
/// # Safety
/// `segment` was popped from the abandoned list by the caller; `heap` and `tld` are the
/// caller's.
unsafe fn segment_reclaim(segment: *mut Segment, heap: *mut RawHeap, tld: &mut Tld) -> bool {
    // SAFETY: we own the segment now; its pages in use have no heap.
    unsafe {
        let seg = &mut *segment;
        debug_assert!(seg.tld.is_null());
        seg.thread_id.store(tld.token(), Ordering::Release);
        seg.tld = tld;
        tld.segments.link(segment);
        // while we take over, it is in no queue; pages that turn out empty are freed below
        for i in 0..seg.capacity {
            let page = seg.page(i);
            if !(*page).segment_in_use {
                continue;
            }
            (*page).xheap.store(heap, Ordering::Release);
            (*page).use_delayed_free(Delayed::NoDelayedFree, true);
            (*page).collect(false);
            (*page).flags &= !crate::page::FLAG_IN_FULL;
            if (*page).all_free() {
                // `segment_page_free` may free the segment when this was its last page
                let last = seg.used == 1;
                (*page).xheap.store(ptr::null_mut(), Ordering::Relaxed);
                segment_page_free(page, tld);
                if last {
                    return false;
                }
            } else {
                (*heap).page_queue_push(page);
            }
        }
        let small_or_medium = matches!(seg.kind, SegmentKind::Small | SegmentKind::Medium);
        if small_or_medium && seg.used < seg.capacity && !seg.in_free_queue {
            if let Some(q) = tld.segments.queue_for(seg.kind) {
                q.push(segment);
            }
        }
        seg.check();
        true
    }
}

/// Collects abandoned segments: frees those whose blocks were all freed meanwhile and
/// puts the others back. Used by forced collection, so that memory freed by other
/// threads after its owner exited goes back to the source.
///
/// # Safety
/// `tld` is the calling thread's data.
pub(crate) unsafe fn abandoned_collect(tld: &mut Tld) {
    let domain = tld.domain();
    let mut keep: *mut Segment = ptr::null_mut();
    let n = domain.abandoned_count();
    for _ in 0..n {
        let Some(segment) = domain.pop_abandoned() else {
            break;
        };
        // SAFETY: popped, so exclusively ours; its pages have no heap.
        unsafe {
            let seg = &mut *segment;
            let mut freed = false;
            for i in 0..seg.capacity {
                let page = seg.page(i);
                if !(*page).segment_in_use {
                    continue;
                }
                (*page).collect(false);
                if (*page).all_free() {
                    let last = seg.used == 1;
                    page_release_stats(page, seg);
                    ptr::write(
                        page,
                        Page {
                            page_start: (*page).page_start,
                            segment_idx: (*page).segment_idx,
                            is_committed: (*page).is_committed,
                            partial_commit: (*page).partial_commit,
                            ..Page::EMPTY
                        },
                    );
                    seg.used -= 1;
                    if last {
                        segment_free(segment, tld);
                        freed = true;
                        break;
                    }
                }
            }
            if !freed {
                segment_purge(segment, true);
                seg.abandoned_next = keep;
                keep = segment;
            }
        }
    }
    while !keep.is_null() {
        // SAFETY: the segments of `keep` were popped by us and are still abandoned.
        unsafe {
            let next = (*keep).abandoned_next;
            domain.push_abandoned(keep);
            keep = next;
        }
    }
}
