//! A heap's page queues: putting pages in and out of the queue of their size class (and
//! the full and huge queues), keeping the direct table in step, moving pages to and from
//! the full queue, and giving a page back to its segment.

use crate::heap::{empty_page, page_sync_stats, queue_bin_of, OwnedHeap, RawHeap};
use crate::page::{Delayed, Page, FLAG_IN_FULL};
use crate::segment_alloc as segment;
use crate::size_class::*;

impl RawHeap {
    /// Points the direct-table entries of `bin` at its queue's first page.
    #[inline]
    pub(crate) fn direct_update(&mut self, bin: usize) {
        if bin >= BIN_HUGE {
            return;
        }
        let bsize = bin_size(bin);
        let start = if bin == 1 {
            0
        } else {
            bin_size(bin - 1) / WORD + 1
        };
        if start >= PAGES_DIRECT {
            return;
        }
        let first = self.pages[bin].first();
        let page = if first.is_null() { empty_page() } else { first };
        // (the table ends inside a bin when `debug-mode` adds the padding's words)
        let end = (bsize / WORD).min(PAGES_DIRECT - 1);
        for w in start..=end {
            self.pages_direct[w] = page;
        }
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
        // SAFETY: `page` is live and in no queue (caller).
        unsafe { self.pages[bin].list.push_back(page) };
        self.page_count += 1;
        self.direct_update(bin);
    }

    /// # Safety
    /// `page` is in this heap's queue `bin`.
    pub(crate) unsafe fn queue_remove(&mut self, page: *mut Page, bin: usize) {
        // SAFETY: `page` is a member of queue `bin` (caller).
        unsafe { self.pages[bin].list.remove(page) };
        self.page_count -= 1;
        self.direct_update(bin);
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
        (*h).queue_push(page);
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        // a remote free may have landed just before the state switched
        (*page).collect(false);
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
        let bin = queue_bin_of(page);
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
