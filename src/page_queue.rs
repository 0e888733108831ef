//! A heap's page queues: putting pages in and out of the queue of their size class (and
//! the full and huge queues), keeping the direct table in step, moving pages to and from
//! the full queue, and giving a page back to its segment.

use crate::heap::{empty_page, page_sync_stats, queue_bin_of, RawHeap};
use crate::page::{Delayed, Page, FLAG_IN_FULL};
use crate::segment;
use crate::size_class::*;

impl RawHeap {
    /// Points the direct-table entries of `bin` at its queue's first page.
    #[inline]
    pub(crate) fn direct_update(&mut self, bin: usize) {
        if bin >= BIN_HUGE {
            return;
        }
        let bsize = bin_size(bin);
        if bsize > SMALL_SIZE_MAX {
            return;
        }
        let first = self.pages[bin].first();
        let page = if first.is_null() { empty_page() } else { first };
        let start = if bin == 1 {
            0
        } else {
            bin_size(bin - 1) / WORD + 1
        };
        let end = bsize / WORD;
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
        // SAFETY: as the caller guarantees.
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
        // SAFETY: as the caller guarantees.
        unsafe { self.pages[bin].list.push_back(page) };
        self.page_count += 1;
        self.direct_update(bin);
    }

    /// # Safety
    /// `page` is in this heap's queue `bin`.
    pub(crate) unsafe fn queue_remove(&mut self, page: *mut Page, bin: usize) {
        // SAFETY: as the caller guarantees.
        unsafe { self.pages[bin].list.remove(page) };
        self.page_count -= 1;
        self.direct_update(bin);
    }
}

/// Moves a page without room to the full queue, where remote frees notify the heap.
///
/// # Safety
/// `page` is in `heap`'s queue `bin`, and `heap` is the calling thread's.
pub(crate) unsafe fn page_to_full(heap: *mut RawHeap, page: *mut Page, bin: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert!(!(*page).in_full());
        (*heap).queue_remove(page, bin);
        (*page).flags |= FLAG_IN_FULL;
        (*heap).queue_push(page);
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        // a remote free may have landed just before the state switched
        (*page).collect(false);
        if (*page).immediate_available() {
            page_unfull(heap, page);
        }
    }
}

/// Moves a page that has room again from the full queue back to its bin.
///
/// # Safety
/// `page` belongs to `heap`, which is the calling thread's.
pub(crate) unsafe fn page_unfull(heap: *mut RawHeap, page: *mut Page) {
    // SAFETY: as the caller guarantees.
    unsafe {
        (*page).use_delayed_free(Delayed::NoDelayedFree, false);
        if !(*page).in_full() {
            return;
        }
        (*heap).queue_remove(page, BIN_FULL);
        (*page).flags &= !FLAG_IN_FULL;
        let bin = queue_bin_of(page);
        (*heap).queue_push_back(page, bin);
    }
}

/// Takes `page` out of the heap and gives it back to its segment.
///
/// # Safety
/// `page` is in `heap`'s queue `bin`, `heap` is the calling thread's, and all the page's
/// blocks are free (or the heap is being destroyed).
pub(crate) unsafe fn page_free(heap: *mut RawHeap, page: *mut Page, bin: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        (*heap).queue_remove(page, bin);
        (*page).used = 0;
        page_sync_stats(page, &mut *(*heap).tld);
        segment::page_free(page); // also clears its heap

    }
}
