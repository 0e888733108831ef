//! Abandon and reclaim: an owner that is done (an exiting thread) hands its segments that
//! still hold live blocks to the domain's [`Abandoned`] list; other owners take them over
//! (and free those whose blocks were all freed meanwhile).
//!
//! Segment-level only: a reclaimed segment is handed back to the caller, whose live pages
//! it then adopts into a heap of its choice.

use crate::sync::{AtomicUsize, Ordering};
use core::ptr;

use crate::os::Os;
use crate::page::{Delayed, Page, FLAG_IN_FULL};
use crate::segment::{Segment, SegmentKind, SegmentsTld};
#[cfg(feature = "std")]
use crate::segment_alloc::segment_discard;
use crate::segment_alloc::{page_free_in, segment_purge};

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
    // SAFETY: `segment` is live and `ctx`'s, the calling thread's (the `# Safety` contract),
    // so no other thread writes its header; only read here, and the reference ends before
    // `disown` writes it.
    let seg = unsafe { &*segment };
    debug_assert!(seg.used > 0);
    // SAFETY: `os` was set at the segment's creation from its owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    // SAFETY: `segment` is a segment of `ctx` (the `# Safety` contract).
    unsafe { ctx.disown(segment) };
    os.stats.abandoned.fetch_add(1, Ordering::Relaxed);
    // SAFETY: just disowned, so no thread owns it, and the calling thread gives it up here.
    unsafe { abandoned.push(segment) };
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
    // SAFETY: popped, so abandoned and ours alone.
    unsafe { reclaim_segment(ctx, segment) }
}

/// [`reclaim_one`] of a segment the calling thread popped from the abandoned list.
///
/// # Safety
/// `segment` was popped from the abandoned list by the calling thread and is live.
unsafe fn reclaim_segment(ctx: &mut SegmentsTld, segment: *mut Segment) -> Reclaim {
    ctx.os().stats.reclaimed.fetch_add(1, Ordering::Relaxed);
    // SAFETY: popping gave us the abandoned segment to ourselves: live, owned by no one.
    unsafe { ctx.adopt(segment) };
    // SAFETY: the segment is live and now the calling thread's; `capacity` is fixed at its
    // creation.
    let take = |page: *mut Page| {
        // SAFETY: a page in use of our segment (`used_pages`); it has no heap, so only
        // remote frees touch it meanwhile, and only `xthread_free`, atomically.
        unsafe {
            // the page was never-delayed while abandoned; it has no heap to notify
            (*page).use_delayed_free(Delayed::NoDelayedFree, true);
            Page::collect(page, false);
            (*page).flags &= !FLAG_IN_FULL;
        }
        // SAFETY: the page is in use, in no heap queue, and all its blocks are free; its
        // segment is `ctx`'s (adopted above), and `ctx` is passed down.
        unsafe { (*page).all_free() && page_free_in(Some(&mut *ctx), page) }
    };
    // SAFETY: the segment is live and now the calling thread's (adopted above); `take`
    // frees a page only when it then returns true.
    if unsafe { used_pages(segment, take) } {
        return Reclaim::Freed; // that was its last page
    }
    // SAFETY: the segment is live (not freed above) and `ctx`'s.
    unsafe { ctx.requeue(segment) };
    // SAFETY: the segment is the calling thread's.
    unsafe { (*segment).check() };
    Reclaim::Kept(segment)
}

/// Takes over abandoned segments for `ctx`'s owner, which needs a page for blocks of
/// `block_size` in a segment of `kind`: as mimalloc's `mi_segment_try_reclaim`, only a
/// segment that helps is taken (one with a page of that block size with room, a page
/// whose blocks were all freed, or a free page slot of `kind`), and the first such one
/// ends the search; a segment whose blocks were all freed is freed on the way. At most
/// `tries` segments are looked at; those that do not help go back to the list (their
/// pages' remote frees collected). Each segment kept is given to `adopt` (its pages in use
/// have no heap: see `reclaim_one`). Returns how many were kept.
///
/// Taking over every abandoned segment until one has a free page (what this replaced)
/// made short-lived threads adopt segments full of other classes' pages, walk them again
/// at exit and abandon them again: live-churn adopted ~1,400 segments where mimalloc's
/// design takes ~260.
pub(crate) fn reclaim_suitable(
    ctx: &mut SegmentsTld,
    abandoned: &Abandoned,
    block_size: usize,
    kind: SegmentKind,
    tries: usize,
    mut adopt: impl FnMut(*mut Segment),
) -> usize {
    let mut keep: *mut Segment = ptr::null_mut();
    let mut kept = 0;
    for _ in 0..tries {
        let Some(segment) = abandoned.pop() else {
            break;
        };
        // SAFETY: popped, so live and the calling thread's alone (no owner): its header and
        // page entries are read through raw pointers; its pages have no heap, so only
        // remote frees touch them meanwhile, and only `xthread_free`, atomically (as in
        // `abandoned_collect`).
        let helps = unsafe { segment_helps(segment, block_size, kind) };
        if !helps {
            // SAFETY: popped by us and still live; in no list but `keep` from here.
            unsafe { (*segment).abandoned_next = keep };
            keep = segment;
            continue;
        }
        // SAFETY: popped by us, so abandoned and ours alone to take over.
        match unsafe { reclaim_segment(ctx, segment) } {
            Reclaim::Kept(segment) => {
                adopt(segment);
                kept += 1;
                break;
            }
            Reclaim::Freed | Reclaim::None => {}
        }
    }
    while !keep.is_null() {
        // SAFETY: the segments of `keep` were popped by us and are still live and ours
        // alone (abandoned, in no list but `keep`).
        let next = unsafe { (*keep).abandoned_next };
        // SAFETY: `keep` is abandoned (no owner), and the calling thread gives it up here.
        unsafe { abandoned.push(keep) };
        keep = next;
    }
    kept
}

/// Walks the pages in use of `segment`, a segment the calling thread popped from the
/// abandoned list, collecting each page's remote frees first, and calls `f` with each
/// until it returns true (then true).
///
/// # Safety
/// `segment` was popped from the abandoned list by the calling thread and is live; `f`
/// may free the page it is given only if it then returns true.
unsafe fn collect_used_pages(segment: *mut Segment, mut f: impl FnMut(*mut Page) -> bool) -> bool {
    let walk = |page: *mut Page| {
        // SAFETY: a page in use of the popped segment (`used_pages`).
        unsafe { Page::collect(page, false) };
        f(page)
    };
    // SAFETY: as this function's contract.
    unsafe { used_pages(segment, walk) }
}

/// Walks the pages in use of `segment` and calls `f` with each until it returns true
/// (then true): the walk of [`reclaim_segment`] and [`collect_used_pages`].
///
/// # Safety
/// `segment` is live and the calling thread's alone (popped from the abandoned list, or
/// adopted after that); `f` may free the page it is given only if it then returns true.
/// Its pages have no heap, so only remote frees touch them meanwhile, and only
/// `xthread_free`, atomically: `f` reaches the entry through the raw pointer (no
/// `&mut Page`).
unsafe fn used_pages(segment: *mut Segment, mut f: impl FnMut(*mut Page) -> bool) -> bool {
    // (default geometry: the bits of the pages in use)
    #[cfg(not(feature = "small"))]
    {
        // SAFETY: live and ours alone (caller); `f` may free only the page it is given,
        // which clears that page's bit, a bit already taken from `mask`.
        let mut mask = unsafe {
            (*segment).slices_used
                & crate::segment::slice_mask((*segment).first_page, (*segment).capacity)
        };
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            // SAFETY: a bit of a page in use: `i < capacity`; the `&Segment` ends at once.
            let page = unsafe { (*segment).page(i) };
            if f(page) {
                return true;
            }
        }
        false
    }
    #[cfg(feature = "small")]
    {
        // SAFETY: live and ours alone (caller); `capacity` is fixed at the segment's creation.
        let (first, capacity) = unsafe { ((*segment).first_entry(), (*segment).capacity) };
        for i in first..capacity {
            // SAFETY: `i < capacity`; the temporary `&Segment` ends at once.
            let page = unsafe { (*segment).page(i) };
            // SAFETY: the page metadata lies in the header of the live segment; a read of a
            // field only its owner (the calling thread) writes.
            if unsafe { (*page).segment_in_use } && f(page) {
                return true;
            }
        }
        false
    }
}

/// Whether taking over `segment` gives a page for blocks of `block_size` in a segment of
/// `kind`: a page of that size with room, a page all of whose blocks were freed (it is
/// freed on reclaim), or a free page slot in a segment of that kind. Collects each page's
/// remote frees.
///
/// # Safety
/// `segment` was popped from the abandoned list by the calling thread and is live.
unsafe fn segment_helps(segment: *mut Segment, block_size: usize, kind: SegmentKind) -> bool {
    // SAFETY: live and popped by us (caller); `kind`, `used`, `capacity` and the first
    // entry are fixed while nobody owns it.
    let (first, capacity, used, skind) = unsafe {
        (
            (*segment).first_entry(),
            (*segment).capacity,
            (*segment).used,
            (*segment).kind,
        )
    };
    if skind == kind && used < capacity - first {
        return true;
    }
    let mut helps = false;
    // SAFETY: popped by the calling thread and live (caller); `f` frees nothing.
    unsafe {
        collect_used_pages(segment, |page| {
            // SAFETY: a page in use of the popped segment (`collect_used_pages`).
            helps |= (*page).all_free()
                || ((*page).block_size == block_size
                    && ((*page).immediate_available()
                        || !(*page).local_free.is_null()
                        || (*page).capacity < (*page).reserved));
            false
        })
    };
    helps
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
        // SAFETY: popped by the calling thread, so live and its alone; `f` frees a page
        // only when it then returns true.
        let freed = unsafe {
            collect_used_pages(segment, |page| {
                // SAFETY: the page is in use, in no heap queue, and all its blocks are free;
                // its segment was popped by the calling thread and has no owner (`None`).
                (*page).all_free() && page_free_in(None, page)
            })
        };
        if !freed {
            // SAFETY: popped by the calling thread, which has it alone.
            unsafe { segment_purge(segment, true) };
            // SAFETY: still live (not freed) and ours alone; no reference into it is live.
            unsafe { (*segment).abandoned_next = keep };
            keep = segment;
        }
    }
    while !keep.is_null() {
        // SAFETY: the segments of `keep` were popped by us and are still live and ours
        // alone (abandoned, in no list but `keep`).
        let next = unsafe { (*keep).abandoned_next };
        // SAFETY: `keep` is abandoned (no owner), and the calling thread gives it up here.
        unsafe { abandoned.push(keep) };
        keep = next;
    }
}

/// Gives every abandoned segment back to the source, live blocks and all: the end of a
/// domain that is destroyed.
///
/// # Safety
/// No thread of the domain is left, and no block of its segments is used again.
#[cfg(feature = "std")]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) unsafe fn abandoned_discard(abandoned: &Abandoned) {
    while let Some(segment) = abandoned.pop() {
        // SAFETY: popped by the calling thread; its blocks are not used again (caller).
        unsafe { segment_discard(segment) };
    }
}
