//! The heap: its struct (page queues per size class, the direct table for small sizes,
//! the delayed-free list, retired pages), the per-thread context that the heaps of one
//! thread share ([`Tld`]), the empty heap, statistics synchronisation and the invariant
//! check. Queue operations are in `page_queue`; allocation in `alloc`, frees in `free`,
//! collection in `collect`, first-class heap operations in `first_class`.
//!
//! A heap is owned by one thread (hosted) or one CPU (kernel). Only its owner allocates
//! from it; any thread may free into it. A [`SharedHeap`] (hosted first-class heaps, C's
//! `mi_heap_t`) is what every thread may allocate from: each thread that does gets its own
//! `RawHeap` for it, a *part* (mimalloc v3's "theap").

#[cfg(feature = "std")]
use crate::sync::{AtomicBool, AtomicU8, AtomicUsize};
use crate::sync::{AtomicPtr, Ordering};
use core::ptr::{self, addr_of, NonNull};

use crate::domain::Domain;
use crate::list::List;
use crate::page::{Block, Page, PageQueue};
use crate::segment::{ptr_segment, SegmentKind, SegmentsTld, NO_OWNER};
use crate::size_class::*;

/// Per-thread (per-CPU) context of the heaps: its segments, its heaps, its clock and its
/// pending statistics. It lives in the thread's data (`thread`), which never moves.
pub(crate) struct Tld {
    /// The segment layer's context; its address is the thread's owner token.
    pub segments: SegmentsTld,
    domain: *const Domain,
    /// The thread's default heap (backing heap of first-class heaps; reclaimed pages of
    /// exited threads go to it).
    pub heap_backing: *mut RawHeap,
    /// All heaps of the thread, linked through `RawHeap::next`.
    pub heaps: *mut RawHeap,
    /// Allocation slow-path events of this thread.
    pub heartbeat: u64,
    /// Bytes allocated / freed (as counted at page synchronisations) not yet added to the
    /// domain's statistics.
    pub stat_allocated: i64,
    pub stat_freed: i64,
    /// The shared heap whose part this thread used last, and that part (null: none): the
    /// one-entry cache that keeps allocation from a shared heap lock-free.
    /// Invariant: `cache_part` is a live part of this thread, of `cache_shared`.
    #[cfg(feature = "std")]
    pub cache_shared: *const SharedHeap,
    #[cfg(feature = "std")]
    pub cache_part: *mut RawHeap,
    /// Set by another thread that deleted or destroyed a shared heap of which this thread
    /// has a part: the part is released at this thread's next part lookup, collection or
    /// exit (only the owner may touch its pages).
    #[cfg(feature = "std")]
    pub reap: AtomicBool,
    /// For the context of a thread's part of a heap in an arena (thread data of the
    /// arena's domain, used by one thread): that thread's own context (null otherwise).
    #[cfg(feature = "std")]
    pub host: *mut Tld,
    /// A thread's parts of heaps in arenas: the contexts whose `host` is this one, linked
    /// through `guest_next`. Only the thread itself walks or changes the list.
    #[cfg(feature = "std")]
    pub guests: *mut Tld,
    #[cfg(feature = "std")]
    pub guest_next: *mut Tld,
}

impl Tld {
    /// A context for the heaps of one thread of `domain` (with no heap yet).
    pub(crate) fn new(domain: &'static Domain) -> Self {
        Tld {
            segments: SegmentsTld::new(&domain.os),
            domain,
            heap_backing: ptr::null_mut(),
            heaps: ptr::null_mut(),
            heartbeat: 0,
            stat_allocated: 0,
            stat_freed: 0,
            #[cfg(feature = "std")]
            cache_shared: ptr::null(),
            #[cfg(feature = "std")]
            cache_part: ptr::null_mut(),
            #[cfg(feature = "std")]
            reap: AtomicBool::new(false),
            #[cfg(feature = "std")]
            host: ptr::null_mut(),
            #[cfg(feature = "std")]
            guests: ptr::null_mut(),
            #[cfg(feature = "std")]
            guest_next: ptr::null_mut(),
        }
    }

    /// The owner token of the thread (the token of its segments).
    #[inline(always)]
    pub(crate) fn owner(&self) -> usize {
        self.segments.owner()
    }

    #[inline(always)]
    pub(crate) fn domain(&self) -> &'static Domain {
        // SAFETY: set from a `&'static Domain` at construction.
        unsafe { &*self.domain }
    }

    /// Adds the thread's pending statistics to the domain's.
    pub(crate) fn flush_stats(&mut self) {
        let stats = &self.domain().os.stats;
        stats.allocated.add(self.stat_allocated);
        stats.allocated.sub(self.stat_freed);
        self.stat_allocated = 0;
        self.stat_freed = 0;
    }
}

const _: () = assert!(
    BIN_HUGE <= 128,
    "`RawHeap::retired` has a bit per bin below BIN_HUGE"
);

/// Heap metadata.
///
/// Invariants (checked by [`heap_check`] in debug builds):
/// - `pages_direct[w]` is the first page of the queue of `bin(w * WORD)`, or the empty
///   page when that queue is empty;
/// - every page in `pages[b]` has this heap as owner (`xheap`) and `queue_bin_of(page) == b`;
///   `page_count` is the number of pages in all queues;
/// - `owner == tld.owner()`, and `NO_OWNER` for the empty heap (and dead heaps, whose
///   `tld` is null);
/// - a page with `retire_expire != 0` is alone in a queue whose bin's bit is set in
///   `retired`.
#[repr(C)]
pub(crate) struct RawHeap {
    /// Direct table for small sizes, indexed by size in words (first: the fast path).
    pub pages_direct: [*mut Page; PAGES_DIRECT],
    /// The owner token of the owning thread (`Tld::owner`).
    pub owner: usize,
    pub tld: *mut Tld,
    /// One queue per bin, plus the huge and full queues.
    pub pages: [PageQueue; BIN_FULL + 1],
    /// Blocks freed by other threads into full pages (see `Delayed`).
    pub thread_delayed_free: AtomicPtr<Block>,
    pub page_count: usize,
    /// The bins that may hold a retired page, one bit each (bit `b % 64` of word `b / 64`
    /// for bin `b`; bins below `BIN_HUGE` only): the countdown of retired pages
    /// (`free::heap_collect_retired`, on every fresh page) looks at these bins alone, where
    /// a range from the lowest to the highest such bin made it walk some 50 bins per fresh
    /// page under mstress.
    pub retired: [u64; 2],
    /// Next heap of the same thread.
    pub next: *mut RawHeap,
    /// The shared heap this heap is a part of (null: none). Hosted only.
    #[cfg(feature = "std")]
    pub shared: *const SharedHeap,
    /// Next part of the same shared heap (its list is under `SharedHeap::parts`' lock).
    #[cfg(feature = "std")]
    pub part_next: *mut RawHeap,
}

#[cfg(feature = "std")]
/// A heap that any thread may allocate from (hosted first-class heaps; C's `mi_heap_t`;
/// mimalloc v3's heaps). Each thread that allocates from it gets its own part, a
/// `RawHeap` of that thread, found through the thread's one-entry cache (`Tld::cache_*`)
/// or its list of heaps, so the allocation fast path takes no lock. The process's main
/// shared heap has the threads' backing heaps as its parts and is never released.
///
/// Invariants:
/// - `refs` counts the handle (until deleted or destroyed) and every part in `parts`;
///   the struct is freed when it reaches zero;
/// - every part in `parts` is an initialised heap with `shared` pointing here, whose
///   thread has not finished exiting (a thread unlinks its parts, under the lock, before
///   its data is freed); the main heap keeps no list;
/// - once `state` leaves `SHARED_LIVE` it never changes again, and no part is added.
pub(crate) struct SharedHeap {
    pub state: AtomicU8,
    pub refs: AtomicUsize,
    pub parts: spin::Mutex<PartList>,
    /// The main heap of the domain (its parts are the backing heaps).
    pub is_main: bool,
    /// A heap in an arena (C's `mi_heap_new_in_arena`): the arena's domain, from which
    /// every part takes its memory (null: not in an arena). A thread's part of it is a
    /// first-class heap of thread data of that domain whose context's `host` is the
    /// thread's own context (see `Tld::guests`).
    pub arena: *const Domain,
}

// SAFETY: the state, the count and the list are atomic or under the mutex; `arena` is
// written once, before the struct is shared, and only read after (a `&'static Domain`).
#[cfg(feature = "std")]
unsafe impl Sync for SharedHeap {}

#[cfg(feature = "std")]
/// The head of a shared heap's list of parts (linked through `RawHeap::part_next`).
pub(crate) struct PartList(pub *mut RawHeap);
// SAFETY: the list is only read or changed under its mutex; the parts it points to are
// heaps whose owners unlink them under the same mutex before freeing them.
#[cfg(feature = "std")]
unsafe impl Send for PartList {}

#[cfg(feature = "std")]
/// `SharedHeap::state`: allocation allowed.
pub(crate) const SHARED_LIVE: u8 = 0;
#[cfg(feature = "std")]
/// Deleted: the parts' live blocks move to their threads' backing heaps.
pub(crate) const SHARED_DELETED: u8 = 1;
#[cfg(feature = "std")]
/// Destroyed: the parts' blocks are freed.
pub(crate) const SHARED_DESTROYED: u8 = 2;

#[cfg(feature = "std")]
impl SharedHeap {
    /// A live shared heap with only its handle's reference.
    pub(crate) const fn new(is_main: bool) -> Self {
        SharedHeap {
            state: AtomicU8::new(SHARED_LIVE),
            refs: AtomicUsize::new(1),
            parts: spin::Mutex::new(PartList(ptr::null_mut())),
            is_main,
            arena: ptr::null(),
        }
    }

    /// A live heap in an arena, whose parts take memory from `arena`'s domain only.
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // heaps in arenas (C API)
    pub(crate) const fn new_in_arena(arena: &'static Domain) -> Self {
        let mut h = Self::new(false);
        h.arena = arena;
        h
    }
}

/// Proof that a heap is initialised and owned by the calling thread (or by the current CPU,
/// inside its interrupt guard): the heap layer's functions take one instead of repeating
/// "the caller owns the heap" as a safety contract. Only the `unsafe` [`OwnedHeap::new`]
/// makes one, and it is neither `Send` nor `Sync` (it holds a raw pointer), so it cannot
/// leave the thread that made it. Owning a heap means owning the pages in its queues and
/// its thread's context (`tld`) too.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct OwnedHeap(NonNull<RawHeap>);

impl OwnedHeap {
    /// # Safety
    /// `heap` is an initialised heap (not the empty heap, not a detached one) owned by
    /// the calling thread or CPU, and stays so while this token or a copy is used.
    #[inline(always)]
    pub(crate) unsafe fn new(heap: *mut RawHeap) -> Self {
        // SAFETY: an initialised heap is not null (the caller's contract).
        let h = unsafe { NonNull::new_unchecked(heap) };
        // SAFETY: as above, `heap` is a live heap, readable.
        debug_assert!(unsafe { (*heap).is_initialized() });
        OwnedHeap(h)
    }

    #[inline(always)]
    pub(crate) fn as_ptr(self) -> *mut RawHeap {
        self.0.as_ptr()
    }

    /// The context of the heap's thread (live while the heap is initialised).
    #[inline(always)]
    pub(crate) fn tld(self) -> *mut Tld {
        // SAFETY: the token proves the heap is live and ours; reading a field of it races
        // with no one.
        unsafe { (*self.as_ptr()).tld }
    }
}

/// A wrapper making a never-written static shareable.
#[repr(transparent)]
pub(crate) struct Immutable<T>(pub T);
// SAFETY: the wrapped statics (the empty page and heap) are never written: every path
// that would write first checks that it is not the empty page/heap (the empty page has no
// free block, the empty heap no `tld`).
unsafe impl<T> Sync for Immutable<T> {}

pub(crate) static EMPTY_PAGE: Immutable<Page> = Immutable(Page::EMPTY_DIRECT);

/// The page that empty direct-table entries point to: no free block, never written.
#[inline(always)]
pub(crate) const fn empty_page() -> *mut Page {
    addr_of!(EMPTY_PAGE.0) as *mut Page
}

const fn initial_queues() -> [PageQueue; BIN_FULL + 1] {
    let mut q = [PageQueue::new(0); BIN_FULL + 1];
    let mut i = 1;
    while i < BIN_HUGE {
        q[i] = PageQueue::new(bin_size(i));
        i += 1;
    }
    q[BIN_HUGE] = PageQueue::new(LARGE_OBJ_SIZE_MAX + WORD);
    q[BIN_FULL] = PageQueue::new(LARGE_OBJ_SIZE_MAX + 2 * WORD);
    q
}

/// The heap of threads that have not allocated yet: all its direct entries point to the
/// empty page, so the fast path falls through to the generic path, which sees the null
/// `tld` and returns null — the caller then initialises the thread and retries.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) static EMPTY_HEAP: Immutable<RawHeap> = Immutable(RawHeap {
    pages_direct: [addr_of!(EMPTY_PAGE.0) as *mut Page; PAGES_DIRECT],
    owner: NO_OWNER,
    tld: ptr::null_mut(),
    pages: initial_queues(),
    thread_delayed_free: AtomicPtr::new(ptr::null_mut()),
    page_count: 0,
    retired: [0; 2],
    next: ptr::null_mut(),
    #[cfg(feature = "std")]
    shared: ptr::null(),
    #[cfg(feature = "std")]
    part_next: ptr::null_mut(),
});

#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) const fn empty_heap() -> *mut RawHeap {
    addr_of!(EMPTY_HEAP.0) as *mut RawHeap
}

/// `embedded`: a page's heap is its segment's (see `Segment::heap`): one heap owns every
/// segment, so the page entries do not record it.
#[cfg(feature = "embedded")]
impl Page {
    /// The owning heap (null while the page's segment has no page in use by a heap).
    #[inline(always)]
    pub(crate) fn heap(&self) -> *mut RawHeap {
        // SAFETY: a page entry (other than the `Page::EMPTY` sentinel, which is never asked
        // for its heap: only pages of a heap's queues and pages of live blocks are) lies in
        // the header of its segment, which `ptr_segment` finds from any address inside it;
        // the header lives as long as the entry.
        unsafe { (*ptr_segment(self as *const Page as *const u8)).heap as *mut RawHeap }
    }

    /// Gives the page to `heap` (null: to no heap), which all other pages of its segment
    /// in use by a heap belong to as well (checked in debug builds).
    #[inline(always)]
    pub(crate) fn set_heap(&self, heap: *mut RawHeap) {
        let segment = ptr_segment(self as *const Page as *const u8);
        // SAFETY: as in `heap`; the caller owns the segment (it owns the page it gives to
        // a heap: one owner, inside a critical section), so no one else writes the field.
        unsafe {
            debug_assert!(
                heap.is_null() || (*segment).heap == 0 || (*segment).heap == heap as usize,
                "embedded: pages of one segment in two heaps"
            );
            (*segment).heap = heap as usize;
        }
    }
}

impl RawHeap {
    /// Initialises a heap of the thread of `tld` and links it into the thread's heaps.
    ///
    /// # Safety
    /// `heap` is writable memory for a `RawHeap`, used by no one else; `tld` is the calling
    /// thread's.
    pub(crate) unsafe fn init(heap: *mut RawHeap, tld: *mut Tld) {
        // SAFETY: `tld` is the calling thread's context (caller), so no one else uses it.
        let tld_ref = unsafe { &mut *tld };
        let value = RawHeap {
            pages_direct: [empty_page(); PAGES_DIRECT],
            owner: tld_ref.owner(),
            tld,
            pages: initial_queues(),
            thread_delayed_free: AtomicPtr::new(ptr::null_mut()),
            page_count: 0,
            retired: [0; 2],
            next: tld_ref.heaps,
            #[cfg(feature = "std")]
            shared: ptr::null(),
            #[cfg(feature = "std")]
            part_next: ptr::null_mut(),
        };
        // SAFETY: `heap` is writable memory for a `RawHeap` that no one else uses (caller).
        unsafe { ptr::write(heap, value) };
        tld_ref.heaps = heap;
    }

    /// Whether the heap can allocate: false for the empty heap and for heaps whose thread
    /// is done.
    #[inline(always)]
    pub(crate) fn is_initialized(&self) -> bool {
        !self.tld.is_null()
    }

    #[cfg_attr(not(feature = "std"), allow(dead_code))] // used on thread exit (hosted)
    /// Makes a heap inert (its thread is done): allocation from it returns null, and it
    /// owns nothing.
    pub(crate) fn detach(&mut self) {
        self.tld = ptr::null_mut();
        self.owner = NO_OWNER;
        self.pages_direct = [empty_page(); PAGES_DIRECT];
    }

    /// Pushes a block of `page` freed into that full page by another thread (lock-free
    /// stack; the link as `Page::set_delayed_next` stores it).
    ///
    /// Raw pointers, no references: remote frees call this while the heap's owner writes
    /// the heap and the page's entry (a `&RawHeap` or `&Page` would claim to read all of
    /// them: a data race); only the heap's atomic list head and the page's keys are read.
    ///
    /// # Safety
    /// `heap` is live; `block` is a block of `page`, a page in use of that heap, given up
    /// by the caller.
    pub(crate) unsafe fn push_delayed(heap: *const RawHeap, page: *const Page, block: *mut Block) {
        // SAFETY: the heap is live (caller); a borrow of its atomic field alone.
        let list = unsafe { &(*heap).thread_delayed_free };
        let mut head = list.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it; the page is in use.
            unsafe { Page::set_delayed_next(page, block, head) };
            match list.compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(cur) => head = cur,
            }
        }
    }
}

/// The bin of the queue that holds (or will hold) `page`: by its flags and block size.
///
/// # Safety
/// `page` is a live page of a segment.
#[inline]
pub(crate) unsafe fn queue_bin_of(page: *mut Page) -> usize {
    // SAFETY: the page is live (caller); its flags and start change only under its owner.
    let page = unsafe { &*page };
    if page.in_full() {
        return BIN_FULL;
    }
    #[cfg(not(feature = "small"))]
    if page.flags & crate::page::FLAG_SOLO != 0 {
        return BIN_HUGE;
    }
    // SAFETY: a live page lies in the header of its live segment, whose kind never changes.
    let huge = unsafe { (*ptr_segment(page.page_start())).kind == SegmentKind::Huge };
    if huge {
        BIN_HUGE
    } else {
        page.bin()
    }
}

/// Calls `f(page, bin)` on every page of the heap; `f` may free or move the page it is
/// given (but no other).
pub(crate) fn for_each_page(heap: OwnedHeap, mut f: impl FnMut(*mut Page, usize)) {
    for bin in 0..=BIN_FULL {
        // SAFETY: the token proves the heap is ours, so its queues are well formed and no
        // one else changes them; `walk` reads a page's successor before `f` may unlink it.
        unsafe { List::walk((*heap.as_ptr()).pages[bin].first(), |page| f(page, bin)) };
    }
}

/// Bytes of `allocated` changes a thread gathers before it adds them to the domain's
/// shared counters (so that the allocation slow path of several threads does not fight
/// over one cache line of atomics).
#[cfg(not(feature = "embedded"))]
const STATS_BATCH: i64 = 256 << 10;

/// Brings the thread's pending `allocated` count up to date with the page's `used`.
///
/// # Safety
/// The caller owns `page`; `tld` is its thread's data.
#[inline]
pub(crate) unsafe fn page_sync_stats(page: *mut Page, tld: &mut Tld) {
    // (`embedded`: the pages keep no `stat_used`, see `Page::stat_used`)
    #[cfg(feature = "embedded")]
    let _ = (page, tld);
    #[cfg(not(feature = "embedded"))]
    {
        // SAFETY: the caller owns the page, so nothing else writes these fields; a raw
        // pointer, no `&mut Page` (remote frees CAS its `xthread_free` meanwhile).
        let (used, stat_used, block_size) =
            unsafe { ((*page).used, (*page).stat_used, (*page).block_size) };
        if used != stat_used {
            let delta = (used as i64 - stat_used as i64) * block_size as i64;
            // SAFETY: as above.
            unsafe { (*page).stat_used = used };
            if delta > 0 {
                tld.stat_allocated += delta;
            } else {
                tld.stat_freed -= delta;
            }
            if tld.stat_allocated + tld.stat_freed >= STATS_BATCH {
                tld.flush_stats();
            }
        }
    }
}

/// Checks the invariants of the heap, its pages and their segments (debug builds).
pub(crate) fn heap_check(heap: OwnedHeap) {
    if !cfg!(any(debug_assertions, feature = "debug-mode")) {
        return;
    }
    let h = heap.as_ptr();
    let mut count = 0;
    for_each_page(heap, |page, bin| {
        count += 1;
        // SAFETY: pages in our queues are live (their segments hold them) and ours, and
        // so are their segments: reading them races with no one.
        unsafe {
            assert_eq!((*page).heap(), h, "page in a queue of another heap");
            assert_eq!(queue_bin_of(page), bin, "page in the wrong queue");
            (*page).check();
            let segment = ptr_segment((*page).page_start());
            assert_eq!((*segment).owner.load(Ordering::Relaxed), (*h).owner);
            (*segment).check();
        }
    });
    // SAFETY: the token proves the heap is live and ours.
    let h = unsafe { &*h };
    assert_eq!(count, h.page_count, "heap page count");
    for w in 0..PAGES_DIRECT {
        let first = h.pages[bin(w * WORD)].first();
        let want = if first.is_null() { empty_page() } else { first };
        assert_eq!(h.pages_direct[w], want, "direct table entry {w}");
    }
}
