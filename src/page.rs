//! One page: blocks of one size, and its three free lists (free-list sharding).
//!
//! - `free`: allocation pops from here (the fast path).
//! - `local_free`: frees by the owning thread go here, so the allocation fast path has
//!   one branch and the slow path (where collection happens) runs regularly.
//! - `thread_free`: frees from other threads, pushed with one CAS. Its two low bits hold
//!   the delayed-free state (see [`Delayed`]).

use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr;

use crate::heap::RawHeap; // the one back-edge: a page knows its owning heap (see lib.rs)
use crate::list::{Linked, Links, List};
use crate::size_class::{bin, BIN_FULL, WORD};

/// A free block: its first word links to the next free block.
#[repr(C)]
pub(crate) struct Block {
    pub next: *mut Block,
}

/// The delayed-free state in the low bits of `Page::xthread_free`.
///
/// A page that is full sits in the heap's full queue, where the owner does not look for
/// room. The first free into it from another thread goes to the heap's
/// `thread_delayed_free` list instead of the page (so the owner learns the page has room),
/// and switches the page to `NoDelayedFree`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub(crate) enum Delayed {
    /// Next remote free goes to the owning heap's delayed list.
    UseDelayedFree = 0,
    /// A remote thread is pushing onto the heap's delayed list right now; the heap and
    /// the page must stay alive until it switches to `NoDelayedFree`.
    DelayedFreeing = 1,
    /// Remote frees go to `thread_free`.
    NoDelayedFree = 2,
    /// As `NoDelayedFree`, and never switched to `UseDelayedFree` (abandoned page).
    NeverDelayedFree = 3,
}

const DELAYED_MASK: usize = 3;

#[inline(always)]
fn tf_block(tf: usize) -> *mut Block {
    (tf & !DELAYED_MASK) as *mut Block
}
#[inline(always)]
fn tf_delayed(tf: usize) -> Delayed {
    match tf & DELAYED_MASK {
        0 => Delayed::UseDelayedFree,
        1 => Delayed::DelayedFreeing,
        2 => Delayed::NoDelayedFree,
        _ => Delayed::NeverDelayedFree,
    }
}
#[inline(always)]
fn tf_make(block: *mut Block, d: Delayed) -> usize {
    block as usize | d as usize
}

/// `Page::flags` bits. They share one byte so that `free` tests both with one compare.
pub(crate) const FLAG_IN_FULL: u8 = 1;
pub(crate) const FLAG_HAS_ALIGNED: u8 = 2;

/// Free lists grow lazily, at most this many bytes of blocks at a time.
const MAX_EXTEND_SIZE: usize = 4 * 1024;
const MIN_EXTEND: usize = 4;

/// Page metadata. It lives in the segment header, not in the page's memory.
///
/// Invariants (checked by [`Page::check`] in debug builds):
/// - `used + |free| + |local_free| == capacity <= reserved`;
/// - `used - |thread_free|` = blocks live in the page (blocks in `thread_free` were
///   freed by other threads and are counted in `used` until collected);
/// - every block of the lists lies in `[page_start, page_start + capacity * block_size)`
///   at a multiple of `block_size`;
/// - `flags & FLAG_IN_FULL` iff the page is in its heap's full queue;
/// - a page with `segment_in_use == false` is in no queue and has no heap.
#[repr(C)]
pub(crate) struct Page {
    // --- the fields of the allocation fast path come first, in one cache line
    /// Blocks to allocate from.
    pub free: *mut Block,
    /// Blocks handed out and not yet collected back (see the invariants).
    pub used: u32,
    /// `FLAG_IN_FULL | FLAG_HAS_ALIGNED`.
    pub flags: u8,
    /// Every block in `free` reads as zero apart from its `next` word.
    pub free_is_zero: bool,
    /// The page's memory is usable (committed).
    pub is_committed: bool,
    /// The page's memory read as zero when it was (re)initialised.
    pub is_zero_init: bool,
    /// While `!is_committed`: bytes from `page_start` committed so far (large pages on a
    /// source with reserve commit as their free list grows, not all at once).
    pub partial_commit: usize,
    /// Frees by the owning thread.
    pub local_free: *mut Block,
    /// Size of every block of this page (for a huge page: the whole block).
    pub block_size: usize,
    /// Address of the first block.
    pub page_start: *mut u8,
    /// Blocks initialised so far (free list extended up to here).
    pub capacity: u32,
    /// Blocks that fit in the page.
    pub reserved: u32,
    /// `used` as of the last statistics synchronisation.
    pub stat_used: u32,
    /// Index of this page in its segment.
    pub segment_idx: u8,
    /// The page is handed out to a heap.
    pub segment_in_use: bool,
    /// Generic-malloc rounds left before a retired (empty) page is freed; 0 = not retired.
    pub retire_expire: u8,
    /// Small geometry: this entry is slice `span_offset` of the page that starts
    /// `span_offset` entries before it (0 for the page's own entry). Always 0 otherwise.
    pub span_offset: u8,
    /// Remote frees (block list | `Delayed` state in the low 2 bits).
    pub xthread_free: AtomicUsize,
    /// The owning heap (null when abandoned or unused). Remote frees read it to reach
    /// the heap's delayed-free list (the one upward reference of the core).
    pub xheap: AtomicPtr<RawHeap>,
    /// Links in the heap's page queue.
    pub links: Links<Page>,
}

/// Marker: a page is in (at most) one of its heap's page queues.
pub(crate) enum InQueue {}

// SAFETY: `links` returns the page's one `links` field.
unsafe impl Linked<InQueue> for Page {
    #[inline(always)]
    unsafe fn links(node: *mut Self) -> *mut Links<Self> {
        // SAFETY: `node` is live (the trait's contract); no reference is made.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

impl Page {
    /// An unused page (also the sentinel that empty direct-table entries point to).
    pub(crate) const EMPTY: Page = Page {
        free: ptr::null_mut(),
        used: 0,
        flags: 0,
        free_is_zero: false,
        is_committed: false,
        is_zero_init: false,
        partial_commit: 0,
        local_free: ptr::null_mut(),
        block_size: 0,
        page_start: ptr::null_mut(),
        capacity: 0,
        reserved: 0,
        stat_used: 0,
        segment_idx: 0,
        segment_in_use: false,
        retire_expire: 0,
        span_offset: 0,
        xthread_free: AtomicUsize::new(Delayed::NoDelayedFree as usize),
        xheap: AtomicPtr::new(ptr::null_mut()),
        links: Links::new(),
    };

    #[inline(always)]
    pub(crate) fn heap(&self) -> *mut RawHeap {
        self.xheap.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn in_full(&self) -> bool {
        self.flags & FLAG_IN_FULL != 0
    }

    #[inline(always)]
    pub(crate) fn all_free(&self) -> bool {
        self.used == 0
    }

    /// Blocks are available without collecting.
    #[inline(always)]
    pub(crate) fn immediate_available(&self) -> bool {
        !self.free.is_null()
    }

    /// The queue bin this page belongs to (given its flags and size).
    #[inline]
    pub(crate) fn bin(&self) -> usize {
        if self.in_full() {
            BIN_FULL
        } else {
            bin(self.block_size)
        }
    }

    /// The start of the block that contains `p` (for pointers moved by aligned
    /// allocation).
    #[inline]
    pub(crate) fn block_of(&self, p: *mut u8) -> *mut Block {
        let diff = p as usize - self.page_start as usize;
        let adjust = diff % self.block_size;
        p.wrapping_sub(adjust) as *mut Block
    }

    /// Initialises the page for blocks of `block_size` over `page_size` bytes from
    /// `page_start` (already set), owned by `heap`. The caller then extends its free list
    /// (`alloc::page_extend`).
    ///
    /// # Safety
    /// The page is claimed from its segment and in no queue.
    pub(crate) unsafe fn init(&mut self, heap: *mut RawHeap, block_size: usize, page_size: usize) {
        debug_assert!(self.segment_in_use);
        debug_assert!(block_size >= WORD && block_size % WORD == 0);
        self.block_size = block_size;
        let reserved = page_size / block_size;
        debug_assert!(reserved >= 1 && reserved <= u32::MAX as usize);
        self.reserved = reserved as u32;
        self.capacity = 0;
        self.used = 0;
        self.stat_used = 0;
        self.flags = 0;
        self.retire_expire = 0;
        self.free = ptr::null_mut();
        self.local_free = ptr::null_mut();
        self.free_is_zero = false;
        self.links = Links::new();
        self.xthread_free
            .store(Delayed::NoDelayedFree as usize, Ordering::Release);
        self.xheap.store(heap, Ordering::Release);
    }

    /// How many blocks the next `extend_free` adds.
    pub(crate) fn extend_count(&self) -> usize {
        let extend = (MAX_EXTEND_SIZE / self.block_size).max(MIN_EXTEND);
        extend.min((self.reserved - self.capacity) as usize)
    }

    /// Adds up to `MAX_EXTEND_SIZE` bytes of fresh blocks to the (empty) `free` list, in
    /// address order.
    ///
    /// # Safety
    /// The blocks it adds are committed, `free` is empty and `capacity < reserved`.
    pub(crate) unsafe fn extend_free(&mut self) {
        debug_assert!(self.free.is_null());
        debug_assert!(self.capacity < self.reserved);
        let bsize = self.block_size;
        let extend = self.extend_count();
        let start = self.page_start.wrapping_add(self.capacity as usize * bsize);
        // SAFETY: blocks `capacity .. capacity + extend` lie inside the committed page,
        // are unused (never handed out since the page was initialised), and each is at
        // least one word, so writing their `next` words is in bounds and races with no one.
        unsafe {
            let mut block = start as *mut Block;
            for i in 1..extend {
                let next = start.add(i * bsize) as *mut Block;
                (*block).next = next;
                block = next;
            }
            (*block).next = ptr::null_mut();
        }
        self.free = start as *mut Block;
        // fresh blocks of zeroed memory read as zero but for the `next` word
        self.free_is_zero = self.is_zero_init;
        self.capacity += extend as u32;
    }

    /// Moves the remote frees (`thread_free`) onto `local_free`.
    ///
    /// # Safety
    /// Called by the page's owner (or by a thread that owns the page's abandoned segment).
    unsafe fn thread_free_collect(&mut self) {
        let mut tf = self.xthread_free.load(Ordering::Relaxed);
        loop {
            if tf_block(tf).is_null() {
                return;
            }
            let new = tf_make(ptr::null_mut(), tf_delayed(tf));
            match self.xthread_free.compare_exchange_weak(
                tf,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(cur) => tf = cur,
            }
        }
        let head = tf_block(tf);
        let mut count: u32 = 1;
        // SAFETY: the list was taken whole by the CAS above; its blocks are blocks of this
        // page freed by other threads (pushed with release ordering, read after acquire).
        unsafe {
            let mut tail = head;
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                count += 1;
                debug_assert!(
                    count <= self.capacity,
                    "thread_free list longer than the page"
                );
            }
            (*tail).next = self.local_free;
        }
        self.local_free = head;
        debug_assert!(self.used >= count, "more remote frees than blocks in use");
        self.used -= count;
    }

    /// When `free` is empty, makes the owner's frees (`local_free`) the blocks to allocate
    /// from; returns whether it did. The owner's part of collecting, without the atomic
    /// remote frees.
    #[inline(always)]
    pub(crate) fn take_local_free(&mut self) -> bool {
        if !self.free.is_null() || self.local_free.is_null() {
            return false;
        }
        self.free = self.local_free;
        self.local_free = ptr::null_mut();
        self.free_is_zero = false;
        true
    }

    /// Collects the page's free lists: remote frees onto `local_free`, and `local_free`
    /// onto `free` when `free` is empty (or always, with `force`).
    ///
    /// # Safety
    /// Called by the page's owner.
    pub(crate) unsafe fn collect(&mut self, force: bool) {
        // SAFETY: the calling thread owns the page (the `# Safety` contract), as
        // `thread_free_collect` requires.
        unsafe { self.thread_free_collect() };
        if self.local_free.is_null() || self.take_local_free() {
            return;
        }
        if force {
            // append `free` after `local_free`
            let mut tail = self.local_free;
            // SAFETY: `local_free` is a list of this page's blocks, owned by the caller.
            unsafe {
                while !(*tail).next.is_null() {
                    tail = (*tail).next;
                }
                (*tail).next = self.free;
            }
            self.free = self.local_free;
            self.local_free = ptr::null_mut();
            self.free_is_zero = false;
        }
    }

    /// Sets the delayed-free state, waiting while a remote thread is in `DelayedFreeing`.
    /// `NeverDelayedFree` is only overridden with `override_never`.
    pub(crate) fn use_delayed_free(&self, delay: Delayed, override_never: bool) {
        let mut tf = self.xthread_free.load(Ordering::Acquire);
        loop {
            let old = tf_delayed(tf);
            if old == Delayed::DelayedFreeing {
                // a remote thread is pushing to our delayed list: it finishes in a moment
                core::hint::spin_loop();
                tf = self.xthread_free.load(Ordering::Acquire);
                continue;
            }
            if old == delay || (old == Delayed::NeverDelayedFree && !override_never) {
                return;
            }
            let new = tf_make(tf_block(tf), delay);
            match self.xthread_free.compare_exchange_weak(
                tf,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(cur) => tf = cur,
            }
        }
    }

    /// Whether a remote free is between choosing the delayed list and finishing with it.
    pub(crate) fn is_delayed_freeing(&self) -> bool {
        tf_delayed(self.xthread_free.load(Ordering::Acquire)) == Delayed::DelayedFreeing
    }

    /// Pushes `block`, freed by a thread that does not own the page, onto `thread_free`
    /// with one CAS. Returns false instead when the page is full and its heap waits for
    /// news (`UseDelayedFree`): then the state is now `DelayedFreeing`, and the caller
    /// pushes the block onto the heap's delayed list and calls `delayed_freeing_done`.
    ///
    /// # Safety
    /// `block` is a live block of this page, given up by the caller.
    #[inline]
    pub(crate) unsafe fn thread_free_push(&self, block: *mut Block) -> bool {
        let mut tf = self.xthread_free.load(Ordering::Relaxed);
        loop {
            let use_delayed = tf_delayed(tf) == Delayed::UseDelayedFree;
            let new = if use_delayed {
                tf_make(tf_block(tf), Delayed::DelayedFreeing)
            } else {
                // SAFETY: the block is ours to write until the CAS publishes it.
                unsafe { (*block).next = tf_block(tf) };
                tf_make(block, tf_delayed(tf))
            };
            match self.xthread_free.compare_exchange_weak(
                tf,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return !use_delayed,
                Err(cur) => tf = cur,
            }
        }
    }

    /// Ends the `DelayedFreeing` state that a `thread_free_push` returning false began:
    /// remote frees go to `thread_free` again.
    pub(crate) fn delayed_freeing_done(&self) {
        // nobody else changes the state while we are `DelayedFreeing`
        let mut tf = self.xthread_free.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(tf_delayed(tf), Delayed::DelayedFreeing);
            let new = tf_make(tf_block(tf), Delayed::NoDelayedFree);
            match self.xthread_free.compare_exchange_weak(
                tf,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(cur) => tf = cur,
            }
        }
    }

    #[cfg_attr(not(feature = "override"), allow(dead_code))] // used by checked mode (C API)
    /// The first block of `thread_free` (acquire: the pushing threads wrote the blocks'
    /// links before their release CAS).
    pub(crate) fn thread_free_list(&self) -> *mut Block {
        tf_block(self.xthread_free.load(Ordering::Acquire))
    }

    #[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
    /// Whether `p` lies in the blocks handed out so far (`capacity` blocks from
    /// `page_start`).
    #[inline]
    pub(crate) fn blocks_contain(&self, p: *const u8) -> bool {
        let start = self.page_start as usize;
        let end = start + self.capacity as usize * self.block_size;
        (p as usize) >= start && (p as usize) < end
    }

    /// Makes the page unused again, keeping what describes its memory (start, index,
    /// commit state); its memory no longer reads as zero.
    pub(crate) fn reset(&mut self) {
        *self = Page {
            page_start: self.page_start,
            segment_idx: self.segment_idx,
            is_committed: self.is_committed,
            partial_commit: self.partial_commit,
            ..Page::EMPTY
        };
    }

    /// Checks the page invariants (debug builds).
    ///
    /// # Safety
    /// Called by the page's owner.
    pub(crate) unsafe fn check(&self) {
        if !cfg!(any(debug_assertions, feature = "debug-mode")) {
            return;
        }
        assert!(self.segment_in_use, "page in a queue but not in use");
        assert!(self.used <= self.capacity && self.capacity <= self.reserved);
        let end = self.page_start as usize + self.capacity as usize * self.block_size;
        let mut n = 0u32;
        for list in [self.free, self.local_free] {
            let mut b = list;
            while !b.is_null() {
                let a = b as usize;
                assert!(
                    a >= self.page_start as usize && a < end,
                    "free list block {a:#x} outside the page"
                );
                assert_eq!((a - self.page_start as usize) % self.block_size, 0);
                n += 1;
                assert!(n <= self.capacity, "free list cycle");
                // SAFETY: the lists hold blocks of this page, owned by the caller.
                b = unsafe { (*b).next };
            }
        }
        assert_eq!(
            self.used + n,
            self.capacity,
            "used + |free| + |local_free| == capacity"
        );
    }
}

/// A queue of pages with blocks of one size class (or the full or huge queue) of a heap.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct PageQueue {
    pub list: List<Page, InQueue>,
    /// The block size of the size class (for the huge and full queues, a marker above
    /// every class).
    pub block_size: usize,
}

impl PageQueue {
    pub(crate) const fn new(block_size: usize) -> Self {
        PageQueue {
            list: List::new(),
            block_size,
        }
    }

    #[inline(always)]
    pub(crate) fn first(&self) -> *mut Page {
        self.list.first
    }
}
