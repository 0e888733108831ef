//! A heap's page queues: putting pages in and out of the queue of their size class (and
//! the full and huge queues), keeping the direct table in step, moving pages to and from
//! the full queue, and giving a page back to its segment.

use crate::heap::{empty_page, page_sync_stats, queue_bin_of, OwnedHeap, RawHeap};
use crate::page::{Delayed, Page, FLAG_IN_FULL};
use crate::segment_alloc as segment;
use crate::size_class::*;

/// The direct-table entries of each bin below `BIN_HUGE`: `[start, end)` (empty for the
/// bins beyond the table), worked out at compile time so that moving a page to or from the
/// front of a queue costs no size-class arithmetic. (Each entry `w` goes to `bin(w * WORD)`:
/// bins below `MIN_BIN`, the tiny odd bins that `ALIGN2W` skips and those beyond the
/// table get none; the table may end inside a bin when `debug-mode` adds the padding's
/// words.)
const DIRECT_RANGE: [(u16, u16); BIN_HUGE] = {
    let mut t = [(0u16, 0u16); BIN_HUGE];
    let mut w = 0;
    while w < PAGES_DIRECT {
        let b = bin(w * WORD);
        if b < BIN_HUGE {
            if t[b].0 >= t[b].1 {
                t[b] = (w as u16, w as u16 + 1);
            } else {
                t[b].1 = w as u16 + 1;
            }
        }
        w += 1;
    }
    t
};
const _: () = assert!(PAGES_DIRECT <= u16::MAX as usize);

impl RawHeap {
    /// Points the direct-table entries of `bin` at its queue's first page.
    #[inline]
    pub(crate) fn direct_update(&mut self, bin: usize) {
        if bin >= BIN_HUGE {
            return;
        }
        let (start, end) = DIRECT_RANGE[bin];
        if start >= end {
            return;
        }
        let first = self.pages[bin].first();
        let page = if first.is_null() { empty_page() } else { first };
        // one bounds check and a plain store loop (a `RangeInclusive` loop with a check per
        // entry cost ~8 instructions an entry: 125 for the 16 entries of the 1 KiB class)
        self.pages_direct[start as usize..end as usize].fill(page);
    }

    /// Puts a page (in no queue) at the front of the queue that its flags and size select
    /// (where the direct table looks).
    ///
    /// # Safety
    /// `page` is live, in use by this heap's thread, and in no queue.
    pub(crate) unsafe fn queue_push(&mut self, page: *mut Page) {
        // SAFETY: `page` is live (caller).
        let bin = unsafe { queue_bin_of(page) };
        // SAFETY: `page` is live and in no queue.
        unsafe { self.pages[bin].list.push_front(page) };
        self.page_count += 1;
        self.direct_update(bin);
    }

    /// Puts a page (in no queue) at the back of its queue `bin`.
    ///
    /// # Safety
    /// `page` is live, in use by this heap's thread, in no queue, and belongs in `bin`.
    pub(crate) unsafe fn queue_push_back(&mut self, page: *mut Page, bin: usize) {
        // the direct table points at the first page: it changes only if the queue was empty
        let was_empty = self.pages[bin].list.is_empty();
        // SAFETY: `page` is live and in no queue (caller).
        unsafe { self.pages[bin].list.push_back(page) };
        self.page_count += 1;
        if was_empty {
            self.direct_update(bin);
        }
    }

    /// # Safety
    /// `page` is in this heap's queue `bin`.
    pub(crate) unsafe fn queue_remove(&mut self, page: *mut Page, bin: usize) {
        // the direct table points at the first page: it changes only if that one leaves
        // (pages leaving and rejoining the middle of a queue, as full pages do in a heap
        // with many pages of one class, cost no table update: 9% of a slab workload's
        // instructions)
        let was_first = self.pages[bin].first() == page;
        // SAFETY: `page` is a member of queue `bin` (caller).
        unsafe { self.pages[bin].list.remove(page) };
        self.page_count -= 1;
        if was_first {
            self.direct_update(bin);
        }
    }
}

/// Moves a page without room to the full queue, where remote frees notify the heap.
///
/// # Safety
/// `page` is in the heap's queue `bin`.
pub(crate) unsafe fn page_to_full(heap: OwnedHeap, page: *mut Page, bin: usize) {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap is ours, so are the pages in its queues (`page`
    // is one, caller); no other thread changes the queues or these fields of the page.
    unsafe {
        debug_assert!(!(*page).in_full());
        (*h).queue_remove(page, bin);
        (*page).flags |= FLAG_IN_FULL;
        // (`queue_push` without working out the bin: the full queue's, which has no
        // direct-table entries to update)
        (*h).pages[BIN_FULL].list.push_front(page);
        (*h).page_count += 1;
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        // a remote free may have landed just before the state switched
        Page::collect(page, false);
        if (*page).immediate_available() {
            page_unfull(heap, page);
        }
    }
}

/// Moves a page that has room again from the full queue back to its bin (and stops the
/// delayed frees into it).
///
/// # Safety
/// `page` is a page of the heap.
pub(crate) unsafe fn page_unfull(heap: OwnedHeap, page: *mut Page) {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap and its pages are ours (`page` is one, caller).
    unsafe {
        (*page).use_delayed_free(Delayed::NoDelayedFree, false);
        if !(*page).in_full() {
            return;
        }
        (*h).queue_remove(page, BIN_FULL);
        (*page).flags &= !FLAG_IN_FULL;
        // the bin of its block size: only pages of the size-class queues go to the full
        // queue (`page_to_full`), never huge ones (`queue_bin_of` would look at the
        // segment's kind for those)
        debug_assert!(queue_bin_of(page) != BIN_HUGE);
        let bin = (*page).bin();
        (*h).queue_push_back(page, bin);
    }
}

/// Takes `page` out of the heap and gives it back to its segment.
///
/// # Safety
/// `page` is in the heap's queue `bin`, and all its blocks are free (or the heap is being
/// destroyed: no block of it is used afterwards).
pub(crate) unsafe fn page_free(heap: OwnedHeap, page: *mut Page, bin: usize) {
    // SAFETY: the token proves the heap, its pages and its thread context are ours.
    unsafe {
        (*heap.as_ptr()).queue_remove(page, bin);
        (*page).used = 0;
        page_sync_stats(page, &mut *heap.tld());
    }
    // SAFETY: the page is out of every queue, in use, and its blocks are given up (caller);
    // its segment is owned by our heap's thread context, whose segment data this is (the
    // token proves the context ours, and no other reference to it is live here).
    unsafe { segment::page_free_in(Some(&mut (*heap.tld()).segments), page) }; // also clears its heap
}
