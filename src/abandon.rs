//! Abandon and reclaim: an owner that is done (an exiting thread) hands its segments that
//! still hold live blocks to the domain's [`Abandoned`] list; other owners take them over
//! (and free those whose blocks were all freed meanwhile).
//!
//! Segment-level only: a reclaimed segment is handed back to the caller, whose live pages
//! it then adopts into a heap of its choice.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::page::{Delayed, FLAG_IN_FULL};
use crate::segment::{page_free, segment_purge, Segment, SegmentsTld};

/// The abandoned segments of a domain: a stack under a spin lock.
///
/// Invariants: the list holds `count` segments, each with `owner == ABANDONED`, linked
/// through `abandoned_next`, and no one else touches them until they are popped.
pub(crate) struct Abandoned {
    head: spin::Mutex<AbandonedHead>,
    /// Segments in the list (read without the lock).
    count: AtomicUsize,
}

struct AbandonedHead(*mut Segment);

// SAFETY: the segments in the list belong to no thread (their owner gave them up); they
// are only touched under the mutex until popped.
unsafe impl Send for AbandonedHead {}

impl Abandoned {
    pub(crate) const fn new() -> Self {
        Abandoned {
            head: spin::Mutex::new(AbandonedHead(ptr::null_mut())),
            count: AtomicUsize::new(0),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// # Safety
    /// `segment` is abandoned: no thread owns it, and the caller gives it up.
    unsafe fn push(&self, segment: *mut Segment) {
        let mut head = self.head.lock();
        // SAFETY: the caller hands the segment over; only its link is touched.
        unsafe { (*segment).abandoned_next = head.0 };
        head.0 = segment;
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one abandoned segment; the caller then has it to itself.
    fn pop(&self) -> Option<*mut Segment> {
        if self.count() == 0 {
            return None;
        }
        let mut head = self.head.lock();
        let s = head.0;
        if s.is_null() {
            return None;
        }
        // SAFETY: segments in the list are live and only linked under the lock; once
        // unlinked the segment is exclusively ours.
        unsafe {
            head.0 = (*s).abandoned_next;
            (*s).abandoned_next = ptr::null_mut();
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(s)
    }

    /// Before `fork()`: takes the lock (released by `fork_release`).
    pub(crate) fn fork_lock(&self) {
        core::mem::forget(self.head.lock());
    }

    /// After `fork()`: releases the lock taken by `fork_lock`.
    ///
    /// # Safety
    /// `fork_lock` was called on this thread (in this process or its parent).
    pub(crate) unsafe fn fork_release(&self) {
        // SAFETY: `fork_lock` holds the lock with its guard forgotten.
        unsafe { self.head.force_unlock() };
    }
}

/// Gives a segment of `ctx`'s owner up to `abandoned`. Its pages in use must have been
/// detached from their heaps already (no heap, `NeverDelayedFree`). Pending purges stay
/// pending: whoever reclaims the segment (or a forced collection) does them, so that a
/// segment taken over at once is not faulted back in.
///
/// # Safety
/// `segment` is owned by `ctx`'s owner (the calling thread) and has pages in use.
pub(crate) unsafe fn segment_abandon(
    segment: *mut Segment,
    ctx: &mut SegmentsTld,
    abandoned: &Abandoned,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert!((*segment).used > 0);
        ctx.disown(segment);
        (*(*segment).os)
            .stats
            .abandoned
            .fetch_add(1, Ordering::Relaxed);
        abandoned.push(segment);
    }
}

/// What `reclaim_one` did.
pub(crate) enum Reclaim {
    /// No abandoned segment.
    None,
    /// A segment was taken over and still holds live blocks: the caller adopts its pages
    /// in use (they have no heap yet).
    Kept(*mut Segment),
    /// A segment was taken over and freed: all its blocks had been freed.
    Freed,
}

/// Most abandoned segments with live blocks an owner takes over at once.
pub(crate) const RECLAIM_MAX: usize = 8;

/// Takes over one abandoned segment, if any, for `ctx`'s owner: remote frees are
/// collected, pages that emptied are freed, and the segment is freed when none is left.
/// The pages still in use have no heap and use no delayed free; the caller must give each
/// to a heap (set its `xheap` and queue it) before it allocates or frees again.
pub(crate) fn reclaim_one(ctx: &mut SegmentsTld, abandoned: &Abandoned) -> Reclaim {
    let Some(segment) = abandoned.pop() else {
        return Reclaim::None;
    };
    ctx.os().stats.reclaimed.fetch_add(1, Ordering::Relaxed);
    // SAFETY: popping gave us the abandoned segment to ourselves; its pages in use have
    // no heap, so only remote frees (atomic) touch them meanwhile.
    unsafe {
        ctx.adopt(segment);
        let seg = &mut *segment;
        for i in 0..seg.capacity {
            let page = seg.page(i);
            if !(*page).segment_in_use {
                continue;
            }
            // the page was never-delayed while abandoned; it has no heap to notify
            (*page).use_delayed_free(Delayed::NoDelayedFree, true);
            (*page).collect(false);
            (*page).flags &= !FLAG_IN_FULL;
            if (*page).all_free() && page_free(page) {
                return Reclaim::Freed; // that was its last page
            }
        }
        ctx.requeue(segment);
        seg.check();
        Reclaim::Kept(segment)
    }
}

/// Collects the abandoned segments: frees those whose blocks were all freed meanwhile and
/// puts the others back, purged. Used by forced collection, so that memory freed by other
/// threads after its owner exited goes back to the source.
pub(crate) fn abandoned_collect(abandoned: &Abandoned) {
    let mut keep: *mut Segment = ptr::null_mut();
    for _ in 0..abandoned.count() {
        let Some(segment) = abandoned.pop() else {
            break;
        };
        // SAFETY: popped, so ours alone; its pages have no heap (only remote frees touch
        // them, atomically), and no owner: freed pages do not go to any free queue.
        unsafe {
            let seg = &mut *segment;
            let mut freed = false;
            for i in 0..seg.capacity {
                let page = seg.page(i);
                if !(*page).segment_in_use {
                    continue;
                }
                (*page).collect(false);
                if (*page).all_free() && page_free(page) {
                    freed = true;
                    break;
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
            abandoned.push(keep);
            keep = next;
        }
    }
}
