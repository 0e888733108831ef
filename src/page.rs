//! One page: blocks of one size, and its three free lists (free-list sharding).
//!
//! - `free`: allocation pops from here (the fast path).
//! - `local_free`: frees by the owning thread go here, so the allocation fast path has
//!   one branch and the slow path (where collection happens) runs regularly.
//! - `thread_free`: frees from other threads, pushed with one CAS. Its two low bits hold
//!   the delayed-free state (see [`Delayed`]).

#[cfg(not(feature = "embedded"))]
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr;

use crate::heap::RawHeap; // the one back-edge: a page knows its owning heap (see lib.rs)
use crate::list::{Linked, Links, List};
#[cfg(feature = "secure")]
use crate::secure::{self, Divisor, ErrorKind, Keys};
use crate::size_class::{bin, BIN_FULL, WORD};

/// A free block: its first word links to the next free block (encoded with the page's
/// keys in secure mode: read and write it through [`Page::next_of`] and
/// [`Page::set_next`]).
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
#[cfg_attr(feature = "embedded", allow(dead_code))] // (no remote frees: see `Page`)
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

#[cfg(not(feature = "embedded"))]
const DELAYED_MASK: usize = 3;

/// 64-bit targets: the top 16 bits of `Page::xthread_free` count the blocks pushed on the
/// remote-free list since the owner last took it or counted its blocks out of `used`
/// (65,535: not known), and bits 2-47 hold the head block's address
/// (hosted: user-space addresses, below 2^47; a kernel's (`target_os = "none"`) are
/// sign-extended from bit 47: x86-64 higher-half addresses). A remote free adds one as it
/// pushes, in the same CAS; so the owner collects the list without walking it to count its
/// blocks: blocks that other threads freed, on another CPU's cache lines (larson: 12 % of its
/// CPU time was that walk, at thread exit). A page holds at most 8,192 blocks (64 KiB of
/// 8-byte blocks); only double frees push more, and the count then stays at its maximum.
#[cfg(all(not(feature = "embedded"), target_pointer_width = "64"))]
const TF_COUNT_SHIFT: u32 = 48;
#[cfg(all(not(feature = "embedded"), target_pointer_width = "64"))]
const TF_COUNT_ONE: usize = 1 << TF_COUNT_SHIFT;
/// (32-bit targets: no count bits, and no count: `tf_count` is always None.)
#[cfg(not(feature = "embedded"))]
const TF_COUNT_MASK: usize = if cfg!(target_pointer_width = "64") {
    !((1usize << 48) - 1)
} else {
    0
};
/// The bits of the head block's address.
#[cfg(not(feature = "embedded"))]
const TF_BLOCK_MASK: usize = if cfg!(target_pointer_width = "64") {
    ((1usize << 48) - 1) & !DELAYED_MASK
} else {
    !DELAYED_MASK
};

#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_block(tf: usize) -> *mut Block {
    #[cfg(all(target_pointer_width = "64", target_os = "none"))]
    return ((((tf << 16) as isize) >> 16) as usize & !DELAYED_MASK) as *mut Block;
    #[cfg(not(all(target_pointer_width = "64", target_os = "none")))]
    return (tf & TF_BLOCK_MASK) as *mut Block;
}
/// Whether the remote-free list is empty (one test of the address bits).
#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_is_empty(tf: usize) -> bool {
    tf & TF_BLOCK_MASK == 0
}
/// The number of blocks on the remote-free list, when known (64-bit targets).
#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_count(tf: usize) -> Option<usize> {
    #[cfg(target_pointer_width = "64")]
    return match tf >> TF_COUNT_SHIFT {
        0xffff => None,
        n => Some(n),
    };
    #[cfg(not(target_pointer_width = "64"))]
    return {
        let _ = tf;
        None
    };
}
#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_delayed(tf: usize) -> Delayed {
    match tf & DELAYED_MASK {
        0 => Delayed::UseDelayedFree,
        1 => Delayed::DelayedFreeing,
        2 => Delayed::NoDelayedFree,
        _ => Delayed::NeverDelayedFree,
    }
}
/// `tf` with the delayed-free state `d`, its list (and count) unchanged.
#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_with_delayed(tf: usize, d: Delayed) -> usize {
    (tf & !DELAYED_MASK) | d as usize
}
/// `tf` with `block` pushed: `block` the head, the count one more (at its maximum, "not
/// known", it stays there).
#[cfg(not(feature = "embedded"))]
#[inline(always)]
fn tf_push(tf: usize, block: *mut Block) -> usize {
    debug_assert_eq!(tf_block(block as usize), block, "not a 48-bit address");
    #[cfg(target_pointer_width = "64")]
    {
        // (an empty list's count is 0: collecting leaves the delayed state alone)
        let keep = tf & (TF_COUNT_MASK | DELAYED_MASK);
        let (more, over) = keep.overflowing_add(TF_COUNT_ONE);
        let keep = if over { keep } else { more };
        (block as usize & TF_BLOCK_MASK) | keep
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        block as usize | (tf & DELAYED_MASK)
    }
}

/// Whether addresses `a` and `b` lie in the same `SEGMENT_SIZE`-aligned chunk (a block and
/// the page metadata or free blocks of its segment do; huge segments keep their one block
/// in their first chunk).
///
/// The small geometry aligns segments to a phase (`segment::ptr_segment`) and has no
/// such test: always true there (its heaps are fixed memory, with no OS to fault).
#[inline(always)]
fn same_segment(a: usize, b: usize) -> bool {
    cfg!(feature = "small") || (a ^ b) < crate::size_class::SEGMENT_SIZE
}

/// The `page_start` of the empty page ([`Page::EMPTY_DIRECT`]): an address whose bits
/// 16–47 are not zero, so that [`Page::has_free_direct`] fails for its null `free` (a
/// page in use has such bits too: it starts at or above 4 MiB). Never dereferenced: the
/// empty page has no blocks.
#[cfg(not(feature = "small"))]
pub(crate) const EMPTY_PAGE_START: *mut u8 = ptr::without_provenance_mut(usize::MAX << 16);

/// `Page::flags` bits. They share one byte so that `free` tests both with one compare.
pub(crate) const FLAG_IN_FULL: u8 = 1;
pub(crate) const FLAG_HAS_ALIGNED: u8 = 2;
/// The low bit of `Page::xheap` (heaps are word-aligned): a copy of `FLAG_HAS_ALIGNED` that
/// any thread may read. A remote free must not read `flags`, which the owner writes
/// meanwhile (`FLAG_IN_FULL`: a data race); one atomic load of `xheap` tells it whether the
/// pointer is a block start, without the division that finds the block start of an
/// aligned pointer. Set by the owner before it hands out the first pointer into a block
/// (so a thread that got such a pointer sees it), cleared with `FLAG_HAS_ALIGNED` when the
/// page has no live block.
#[cfg(not(feature = "embedded"))]
pub(crate) const XHEAP_ALIGNED: usize = 1;
/// `embedded`: the page's one block is a run of `embedded::Heap`, cut into chunks of any
/// size (`global/embedded_runs.rs`); its frees go there, not to the page (a page flag, so
/// that the free fast path, which tests `flags != 0`, leaves such frees to the slow path).
#[cfg(feature = "embedded")]
pub(crate) const FLAG_RUN: u8 = 4;
/// A solo page (`alloc::malloc_solo`, the kernel's growing buffers): a small page with one
/// block (`reserved == 1`) whose size grows in place through the page's area, committed
/// as it grows (`alloc::solo_grow`). It lives in its heap's huge queue (`queue_bin_of`), as
/// a huge page's one block does, so no size class allocates from it, and it goes back to
/// its segment when its block is freed; its frees take the slow path (`flags != 0`).
#[cfg(not(feature = "small"))]
pub(crate) const FLAG_SOLO: u8 = 8;

/// Small geometry: the bit of `Page::retire_expire` that says the page ran out and left
/// the full queue again (see there).
#[cfg(feature = "small")]
pub(crate) const RETIRE_RECYCLED: u8 = 0x80;

/// Free lists grow lazily, at most this many bytes of blocks at a time. (Small geometry:
/// 256, so that the call that takes a fresh page links at most 32 blocks, where a whole
/// page of 8-byte blocks is 64 or 128: a bound on the worst single call.) Hosted: 4 KiB,
/// an OS page, as the OS faults memory in on first touch (see `MIN_EXTEND`). Without
/// `std` (the kernel's frames source, a region): 64 KiB, a whole small page, as the
/// memory is mapped when committed and linking more blocks at once costs no memory; the
/// kernel bench (targets/x86_64-qemu/bench.sh) counted slab 43.9 -> 38.9 instructions per
/// call, cross-CPU free 35.5 -> 32.1, IRQ/other CPU frees 37.3 -> 35.0 (16 KiB: slab
/// 39.9, 8 KiB: 42.0). The price is the longest single call: a fresh small page of its
/// smallest blocks links all of them at once.
const MAX_EXTEND_SIZE: usize = if cfg!(feature = "small") {
    256
} else if cfg!(feature = "std") {
    4 * 1024
} else {
    crate::size_class::SMALL_PAGE_SIZE
};
/// The fewest blocks a free list grows by. Hosted: one, as mimalloc v3 (v2 took four): a
/// hosted OS faults memory in on first touch, and linking blocks of an OS page or more
/// touches a page per block, for blocks the program may never take (mstress, 10% of whose
/// blocks are 257 B to 512 KiB: 15-24% fewer page faults, peak RSS 0-14% lower;
/// large-realloc 25% fewer faults; tests/extend_touch.rs). The price: blocks of 1 KiB and
/// up come a few at a time, one slow-path call each (rptest, 16 B to 16 KiB: 3.3% more
/// instructions). Four elsewhere: secure mode shuffles each extension (mimalloc's secure
/// builds extend by at least 8 per secure level), and a kernel's or firmware's memory does
/// not fault in on first touch (the kernel's frames are mapped when committed).
const MIN_EXTEND: usize = if cfg!(all(feature = "std", not(feature = "secure"))) {
    1
} else {
    4
};

/// Page metadata. It lives in the segment header, not in the page's memory.
///
/// Invariants (checked by [`Page::check`] in debug builds):
/// - `used + |free| + |local_free| + (|thread_free| - count) == capacity <= reserved`,
///   where `count` (64-bit targets: the top bits of `xthread_free`) is the number of blocks
///   of `thread_free` that `used` still counts: the blocks pushed since the list was last
///   taken or counted out of `used` (`Page::thread_free_collect`); elsewhere, and in
///   secure and debug mode, `count == |thread_free|`. 65,535: not known (only double frees
///   push so many);
/// - `used - count` = blocks live in the page (blocks in `thread_free` were freed by other
///   threads);
/// - every block of the lists lies in `[page_start, page_start + capacity * block_size)`
///   at a multiple of `block_size`;
/// - `flags & FLAG_IN_FULL` iff the page is in its heap's full queue;
/// - a page with `segment_in_use == false` is in no queue and has no heap;
/// - secure mode: `handed == capacity * block_size` (0 in a page not in use), `area ==
///   reserved * block_size`, `div` tests divisibility by `block_size`.
#[cfg(not(feature = "small"))]
#[repr(C)]
pub(crate) struct Page {
    // --- the fields of the allocation fast path come first, in one cache line
    /// Blocks to allocate from.
    pub free: *mut Block,
    /// Blocks handed out and not yet collected back (see the invariants).
    pub used: BlockCount,
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
    pub capacity: BlockCount,
    /// Blocks that fit in the page.
    pub reserved: BlockCount,
    /// `used` as of the last statistics synchronisation.
    pub stat_used: BlockCount,
    /// Index of this page in its segment.
    pub segment_idx: u8,
    /// The page is handed out to a heap.
    pub segment_in_use: bool,
    /// Generic-malloc rounds left before a retired (empty) page is freed; 0 = not retired.
    /// Small geometry: bit 0 = retired (an empty page kept in its queue), and
    /// [`RETIRE_RECYCLED`] = the page ran out and got blocks back since it was last taken up
    /// by the generic path (its class churns: the class's next fresh page grows).
    pub retire_expire: u8,
    /// Small geometry: this entry is slice `span_offset` of the page that starts
    /// `span_offset` entries before it (0 for the page's own entry). Always 0 otherwise.
    pub span_offset: u8,
    /// Remote frees: block list | `Delayed` state in the low 2 bits | on 64-bit targets,
    /// in the top 16 bits (`TF_COUNT_SHIFT`), how many of the list's blocks `used` still
    /// counts (65,535: not known).
    pub xthread_free: AtomicUsize,
    /// The owning heap (null when abandoned or unused), with [`XHEAP_ALIGNED`] in its low
    /// bit. Remote frees read it to reach the heap's delayed-free list (the one upward
    /// reference of the core), and its tag to know whether a pointer may be inside a block.
    /// Only the page's owner writes it.
    pub xheap: AtomicPtr<RawHeap>,
    /// Links in the heap's page queue.
    pub links: Links<Page>,
    /// Secure mode: the keys that encode the links of this page's free lists.
    #[cfg(feature = "secure")]
    pub keys: Keys,
    /// Secure mode: `block_size`, for telling block starts without a division.
    #[cfg(feature = "secure")]
    pub div: Divisor,
    /// Secure mode: `reserved * block_size`, the bytes of the page's blocks.
    #[cfg(feature = "secure")]
    pub area: usize,
    /// Secure mode: `capacity`, the blocks handed out so far (0 in a page not in use):
    /// `free`'s check tests a pointer's offset, divided by `div` (a multiply, which gives
    /// a number above any count for an offset that is not a multiple of the block size),
    /// against it with one compare (`free_check::secure_check_in`). Atomic (relaxed: plain loads and stores)
    /// because the check runs on remote frees too, while the owner extends the page: a
    /// thread that got a block saw `handed` cover it (the block reached it after the
    /// store), and a larger value only widens what it accepts to blocks handed out since.
    #[cfg(feature = "secure")]
    pub handed: crate::sync::AtomicUsize,
    /// Secure mode: the offsets in a block of the second and third words that
    /// [`Page::written_after_free`] reads after the first (16 and 24; for blocks under 32
    /// bytes their last word instead): a load each, where telling the block sizes apart
    /// cost a compare and a branch on every allocation. Fixed while the page is in use.
    #[cfg(feature = "secure")]
    pub scrub_check: [u8; 2],
}
/// The small geometry's layout of the same fields (see the default one for their
/// meaning): pointers and sizes first, then the counts as 16 bits (a page holds at most
/// 6 KiB / 8 bytes of blocks), then the bytes: 44 bytes on 32-bit targets instead of 60,
/// for an entry per 512-byte slice in every segment header. There is no `partial_commit`:
/// pages are committed whole, slice by slice, when they are claimed (`span_claim`), so
/// only whole pages are ever committed ([`Page::partial_commit`] reads 0); no
/// `page_start` and no `segment_idx`: the entry's place in its segment's header gives
/// both (`Page::page_start`, `Page::segment_idx` in `segment.rs`). The fast-path fields
/// (`free`, `used`, `flags`) stay within the first 32 bytes.
///
/// With `embedded` (one heap, every free a local one inside a critical section) the entry
/// has no remote-free list and no heap pointer: no thread ever frees into another's page
/// (`thread_free` would stay empty), and all pages of a segment belong to the one heap of
/// the segment's owner, which the segment header records once (`Segment::heap`, read by
/// [`Page::heap`]); nor `stat_used` or `free_is_zero` (see [`Page::stat_used`],
/// [`Page::free_is_zero`]): 32 bytes on 32-bit targets.
#[cfg(feature = "small")]
#[repr(C)]
pub(crate) struct Page {
    pub free: *mut Block,
    pub local_free: *mut Block,
    pub block_size: usize,
    pub used: BlockCount,
    pub capacity: BlockCount,
    pub reserved: BlockCount,
    #[cfg(not(feature = "embedded"))]
    pub stat_used: BlockCount,
    pub flags: u8,
    #[cfg(not(feature = "embedded"))]
    pub free_is_zero: bool,
    pub is_committed: bool,
    pub is_zero_init: bool,
    pub segment_in_use: bool,
    pub retire_expire: u8,
    pub span_offset: u8,
    #[cfg(not(feature = "embedded"))]
    pub xthread_free: AtomicUsize,
    #[cfg(not(feature = "embedded"))]
    pub xheap: AtomicPtr<RawHeap>,
    pub links: Links<Page>,
}

/// The type of a page's block counts (`used`, `capacity`, `reserved`): 32 bits (small
/// geometry: 16, see its `Page`).
#[cfg(not(feature = "small"))]
pub(crate) type BlockCount = u32;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub(crate) type BlockCount = u16;

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
        #[cfg(not(feature = "embedded"))]
        free_is_zero: false,
        is_committed: false,
        is_zero_init: false,
        #[cfg(not(feature = "small"))]
        partial_commit: 0,
        local_free: ptr::null_mut(),
        block_size: 0,
        #[cfg(not(feature = "small"))]
        page_start: ptr::null_mut(),
        capacity: 0,
        reserved: 0,
        #[cfg(not(feature = "embedded"))]
        stat_used: 0,
        #[cfg(not(feature = "small"))]
        segment_idx: 0,
        segment_in_use: false,
        retire_expire: 0,
        span_offset: 0,
        #[cfg(not(feature = "embedded"))]
        xthread_free: AtomicUsize::new(Delayed::NoDelayedFree as usize),
        #[cfg(not(feature = "embedded"))]
        xheap: AtomicPtr::new(ptr::null_mut()),
        links: Links::new(),
        #[cfg(feature = "secure")]
        keys: Keys::ZERO,
        #[cfg(feature = "secure")]
        div: Divisor::ONE,
        #[cfg(feature = "secure")]
        area: 0,
        #[cfg(feature = "secure")]
        handed: crate::sync::AtomicUsize::new(0),
        #[cfg(feature = "secure")]
        scrub_check: [WORD as u8; 2],
    };

    /// The page that empty direct-table entries point to (`heap::EMPTY_PAGE`): an unused
    /// page whose `page_start` is [`EMPTY_PAGE_START`] (see [`Page::has_free_direct`]).
    pub(crate) const EMPTY_DIRECT: Page = Page {
        #[cfg(not(feature = "small"))]
        page_start: EMPTY_PAGE_START,
        ..Page::EMPTY
    };

    /// Address of the first block. (Small geometry: defined in `segment.rs`, from the
    /// segment's layout: its entries do not store it.)
    #[cfg(not(feature = "small"))]
    #[inline(always)]
    pub(crate) fn page_start(&self) -> *mut u8 {
        self.page_start
    }

    /// Every block in `free` reads as zero apart from its `next` word. (`embedded`: never
    /// known, so never true: its memory is the firmware's RAM, which its source never
    /// reports zeroed; a zeroed allocation then writes the zeros.)
    #[inline(always)]
    pub(crate) fn free_is_zero(&self) -> bool {
        #[cfg(not(feature = "embedded"))]
        return self.free_is_zero;
        #[cfg(feature = "embedded")]
        false
    }

    /// Sets [`Page::free_is_zero`] (`embedded`: not kept; false is always safe).
    ///
    /// # Safety
    /// `page` is a live page entry of the calling thread (its owner).
    #[inline(always)]
    pub(crate) unsafe fn set_free_is_zero(page: *mut Page, zero: bool) {
        #[cfg(not(feature = "embedded"))]
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract); a raw write, no reference to the entry (other threads change its
        // atomic fields meanwhile).
        unsafe {
            (*page).free_is_zero = zero;
        }
        #[cfg(feature = "embedded")]
        let _ = (page, zero);
    }

    /// `used` as of the last statistics synchronisation. (`embedded`: not kept, always 0:
    /// no one can read the embedded heap's statistics, and `Heap::used` counts live blocks
    /// from `used` itself.)
    #[inline(always)]
    pub(crate) fn stat_used(&self) -> BlockCount {
        #[cfg(not(feature = "embedded"))]
        return self.stat_used;
        #[cfg(feature = "embedded")]
        0
    }

    /// Index of this page in its segment. (Small geometry: defined in `segment.rs`, from
    /// the entry's address.)
    #[cfg(not(feature = "small"))]
    #[inline(always)]
    pub(crate) fn segment_idx(&self) -> usize {
        self.segment_idx as usize
    }

    /// While `!is_committed`: bytes from `page_start` committed so far (0 in the small
    /// geometry, which commits pages whole).
    #[inline(always)]
    pub(crate) fn partial_commit(&self) -> usize {
        #[cfg(not(feature = "small"))]
        return self.partial_commit;
        #[cfg(feature = "small")]
        0
    }

    /// Sets [`Page::partial_commit`] (the small geometry has no partly committed pages:
    /// only 0 may be set there).
    ///
    /// # Safety
    /// `page` is a live page entry of the calling thread (its owner).
    #[inline(always)]
    pub(crate) unsafe fn set_partial_commit(page: *mut Page, bytes: usize) {
        #[cfg(not(feature = "small"))]
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract); a raw write, no reference to the entry (other threads change its
        // atomic fields meanwhile).
        unsafe {
            (*page).partial_commit = bytes;
        }
        #[cfg(feature = "small")]
        {
            let _ = page;
            debug_assert_eq!(bytes, 0, "a partly committed page in the small geometry");
        }
    }

    /// The owning heap (null when abandoned or unused). (`embedded`: defined in
    /// `heap.rs`, from the segment header.)
    #[cfg(not(feature = "embedded"))]
    #[inline(always)]
    pub(crate) fn heap(&self) -> *mut RawHeap {
        self.xheap
            .load(Ordering::Relaxed)
            .map_addr(|a| a & !XHEAP_ALIGNED)
    }

    /// Gives the page to `heap` (null: to no heap), keeping its `XHEAP_ALIGNED` tag (a
    /// page that changes heaps keeps its blocks). Called by the page's owner only (the one
    /// writer of `xheap`). (`embedded`: defined in `heap.rs`.)
    #[cfg(not(feature = "embedded"))]
    #[inline(always)]
    pub(crate) fn set_heap(&self, heap: *mut RawHeap) {
        debug_assert!(heap.addr() & XHEAP_ALIGNED == 0, "a heap is word-aligned");
        let tag = self.xheap.load(Ordering::Relaxed).addr() & XHEAP_ALIGNED;
        self.xheap
            .store(heap.map_addr(|a| a | tag), Ordering::Release);
    }

    /// Sets or clears the `XHEAP_ALIGNED` tag (with `FLAG_HAS_ALIGNED`, by the owner).
    #[cfg(not(feature = "embedded"))]
    #[inline(always)]
    pub(crate) fn set_aligned_tag(&self, on: bool) {
        let heap = self.heap();
        self.xheap.store(
            heap.map_addr(|a| a | if on { XHEAP_ALIGNED } else { 0 }),
            Ordering::Release,
        );
    }

    /// Whether `page` may hold pointers into blocks (its `XHEAP_ALIGNED` tag), for any
    /// thread: no reference to the entry is made (its owner writes it meanwhile).
    ///
    /// # Safety
    /// `page` is a page entry in use.
    #[cfg(not(feature = "embedded"))]
    #[inline(always)]
    pub(crate) unsafe fn has_aligned_raw(page: *const Page) -> bool {
        // SAFETY: the entry is in use (caller); a borrow of its atomic field alone.
        unsafe { (*page).xheap.load(Ordering::Relaxed).addr() & XHEAP_ALIGNED != 0 }
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

    /// The allocation fast path's test: `free` holds a block to pop. It also checks the
    /// head (not in the small geometry): a head outside the page's segment is a link that
    /// an overflow or a write after free overwrote. One test does both (an empty list's
    /// null also fails it), so it costs two instructions more than the null test it
    /// replaces; the slow path tells the two apart ([`Page::has_free`] is false for a
    /// non-null head only when it is corrupted, reported there). (`free - 1`, as
    /// `segment::ptr_segment`: a huge block aligned to more than a segment starts one
    /// segment size into its own.) Secure mode's pop stores the decoded link of the block
    /// it hands out as the head without a test of its own: this test is its check (a
    /// changed link decodes to an address far away, `secure::Keys`, outside the segment
    /// but by a 2^-40-ish chance), so that a corrupted link is reported before it is
    /// followed, one allocation later.
    #[inline(always)]
    pub(crate) fn has_free(&self) -> bool {
        #[cfg(not(any(feature = "small", feature = "bench-unchecked")))]
        {
            same_segment(
                (self.free as usize).wrapping_sub(1),
                self as *const Page as usize,
            )
        }
        #[cfg(any(feature = "small", feature = "bench-unchecked"))]
        !self.free.is_null()
    }

    /// [`Page::has_free`] for a page of the direct table (`alloc::malloc_small`: blocks of
    /// at most `SMALL_SIZE_MAX` bytes, so a small page, which lies in one
    /// `SMALL_PAGE_SIZE`-aligned slot of its segment), one instruction cheaper in the default
    /// build: bits 16–47 of the head of `free` are compared with those of `page_start`, two
    /// 32-bit loads at byte 2 of each field (little-endian) and one compare, where
    /// `has_free`'s test takes a copy, an `xor` and a compare of the head already loaded.
    /// A small page's blocks share those bits with its `page_start` (its slot is 64 KiB,
    /// `SMALL_PAGE_SHIFT == 16`), so a true answer says the head lies in the page's own slot
    /// (for the 48-bit addresses of x86_64 and aarch64): a stricter test than `has_free`'s
    /// (the head's segment) for every head whose top 16 bits are right (those of a user
    /// program's addresses are 0, a higher-half kernel's all 1; a head that an overflow made
    /// with bits 16–47 right and the top bits wrong, one in 2^32 random values, is
    /// non-canonical and faults when the pop reads it: not reported). An empty list's null
    /// fails it: a page in use starts at or above 4 MiB (a segment is 4 MiB-aligned and not
    /// at 0), so its bits 16–47 are not zero, and the empty page's `page_start` is
    /// [`EMPTY_PAGE_START`]. A false answer sends the allocation to the slow path, which
    /// tells the cases apart with `has_free` (a head in the segment but not in this
    /// page's slot, which no small page has, would be popped there). Elsewhere (the small
    /// geometry, big-endian or 32-bit targets, Miri, which cannot read a part of a pointer
    /// as an integer) it is `has_free`.
    ///
    /// # Safety
    /// `page` is a page of the direct table of the calling thread's heap (or the empty
    /// page): readable, its `free` and `page_start` written by the calling thread only.
    #[inline(always)]
    pub(crate) unsafe fn has_free_direct(page: *const Page) -> bool {
        #[cfg(all(
            not(any(feature = "small", feature = "bench-unchecked", miri)),
            target_endian = "little",
            target_pointer_width = "64"
        ))]
        // SAFETY: the page entry is readable (caller); each read is 4 bytes inside a
        // pointer field of it (bytes 2–5 of 8), unaligned reads of plain memory.
        unsafe {
            use crate::size_class::{SMALL_OBJ_SIZE_MAX, SMALL_PAGE_SHIFT, SMALL_SIZE_MAX};
            const _: () = assert!(SMALL_PAGE_SHIFT == 16 && SMALL_SIZE_MAX <= SMALL_OBJ_SIZE_MAX);
            let head = (ptr::addr_of!((*page).free) as *const u8).add(2) as *const u32;
            let start = (ptr::addr_of!((*page).page_start) as *const u8).add(2) as *const u32;
            head.read_unaligned() == start.read_unaligned()
        }
        #[cfg(not(all(
            not(any(feature = "small", feature = "bench-unchecked", miri)),
            target_endian = "little",
            target_pointer_width = "64"
        )))]
        // SAFETY: the page entry is readable (caller).
        unsafe {
            (*page).has_free()
        }
    }

    /// The slow path's half of [`Page::has_free`]: when the head of `free` is corrupted,
    /// reports it, drops the list (its blocks are lost, never followed) and returns true.
    ///
    /// # Safety
    /// `page` is a live page entry of the calling thread (its owner).
    #[inline]
    pub(crate) unsafe fn drop_corrupt_head(page: *mut Page) -> bool {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            if (*page).free.is_null() || (*page).has_free() {
                return false;
            }
            (*page).corrupt_link((*page).free);
            (*page).free = ptr::null_mut();
            true
        }
    }

    /// Whether `page` (null or a page of the calling thread's heap) is an empty solo page
    /// (`FLAG_SOLO`): the heap's spare, which `alloc::malloc_solo` takes up again.
    #[cfg(not(feature = "small"))]
    pub(crate) fn is_spare_solo(page: *mut Page) -> bool {
        // SAFETY: a page of the caller's heap (caller): live, its fields written by the
        // caller alone (`used` counts remote frees until they are collected).
        !page.is_null() && unsafe { (*page).flags & FLAG_SOLO != 0 && (*page).used == 0 }
    }

    /// The queue bin this page belongs to (given its flags and size).
    #[inline(always)]
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
        let diff = p as usize - self.page_start() as usize;
        let adjust = diff % self.block_size;
        p.wrapping_sub(adjust) as *mut Block
    }

    /// The link stored in free block `b` of this page. Secure mode decodes it and checks
    /// that it is null or a block start of this page: a link that is not (an overflow or
    /// a write after free changed it) is reported and read as null (the rest of the list
    /// is lost, never followed).
    ///
    /// # Safety
    /// `b` is a free block of this page, which the caller may read.
    #[inline(always)]
    pub(crate) unsafe fn next_of(&self, b: *mut Block) -> *mut Block {
        // SAFETY: `b` is a readable block of the page (caller).
        let raw = unsafe { (*b).next };
        #[cfg(feature = "secure")]
        {
            let next = self.keys.decode(raw as usize);
            if next != 0 && !self.in_area(next) {
                return self.corrupt_link(b);
            }
            next as *mut Block
        }
        // Default build: a link that leaves the block's segment (an overflow wrote over
        // it) is reported and not followed. (The allocation fast path reads links without
        // this; it checks the block it pops instead, see `alloc::page_pop`.)
        #[cfg(not(feature = "secure"))]
        {
            if !cfg!(feature = "bench-unchecked")
                && !raw.is_null()
                && !same_segment(raw as usize - 1, b as usize - 1)
            {
                return self.corrupt_link(b);
            }
            raw
        }
    }

    /// Reports a corrupted link found in free block `b`; returns null, for the list to
    /// end there.
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupt_link(&self, b: *mut Block) -> *mut Block {
        crate::secure::report(
            crate::secure::ErrorKind::CorruptFreeList,
            b as usize,
            Some(self.block_size),
        );
        ptr::null_mut()
    }

    /// Stores `next` as the link of free block `b` of this page (encoded in secure mode).
    ///
    /// # Safety
    /// `b` is a block of this page that the caller may write.
    #[inline(always)]
    pub(crate) unsafe fn set_next(&self, b: *mut Block, next: *mut Block) {
        // SAFETY: the caller may write `b`; `self` is a page.
        unsafe { (*b).next = Page::encode_link(self, next) };
    }

    /// `next` as a link of `page`'s lists stores it: encoded with the page's keys in secure
    /// mode, as it is otherwise. Reads nothing but the keys (any thread may call it).
    ///
    /// # Safety
    /// `page` is a page in use (its keys are fixed meanwhile).
    #[inline(always)]
    pub(crate) unsafe fn encode_link(page: *const Page, next: *mut Block) -> *mut Block {
        #[cfg(feature = "secure")]
        // SAFETY: the page is live (caller); a read of its keys field alone.
        return unsafe { (*page).keys }.encode(next as usize) as *mut Block;
        #[cfg(not(feature = "secure"))]
        {
            let _ = page;
            next
        }
    }

    /// Stores `next` as the link of block `b` of this page on its heap's delayed list
    /// (`RawHeap::push_delayed`, a list of blocks of many pages). Secure mode writes two
    /// words: the first is `b`'s own address encoded with this page's keys — it decodes
    /// into the page, as a free block's link does, so that secure mode's check of every
    /// free sees the block as free (a double free of a block on the delayed list is
    /// caught), and no free-list link is ever its own block (lists have no cycles), which
    /// tells it from those ([`Page::is_delayed_block`]) — and the second is `next`, encoded
    /// with this page's keys (secure mode's blocks are at least two words:
    /// `size_class::MIN_BIN`). Otherwise the first word is `next`, plain.
    ///
    /// # Safety
    /// `b` is a block of this page that the caller may write.
    /// A raw `page`: the caller is a thread that does not own the page (as
    /// `thread_free_push`), or its owner.
    ///
    /// # Safety
    /// `page` is a page in use; `b` is a block of it that the caller may write.
    #[inline(always)]
    pub(crate) unsafe fn set_delayed_next(page: *const Page, b: *mut Block, next: *mut Block) {
        #[cfg(feature = "secure")]
        // SAFETY: the caller may write `b`, a block of at least two words (`MIN_BIN`); the
        // page's keys and block size are fixed while it is in use.
        unsafe {
            debug_assert!((*page).block_size >= 2 * WORD);
            let keys = (*page).keys;
            let w = b as *mut usize;
            w.write(keys.encode(b as usize));
            w.add(1).write(keys.encode(next as usize));
        }
        #[cfg(not(feature = "secure"))]
        // SAFETY: the caller may write `b`.
        unsafe {
            let _ = page;
            (*b).next = next
        };
    }

    /// The link that [`Page::set_delayed_next`] stored in block `b`: `Some(next)`, or, in
    /// secure mode, `None` when block `b` does not carry the delayed list's mark (its first
    /// word was written after the block was freed). The caller checks `next` before it
    /// follows it (a write after free may have changed it; secure mode's encoding makes
    /// such a change decode far away, outside every segment).
    ///
    /// # Safety
    /// `b` is a block of this page on its heap's delayed list, which the caller may read.
    #[inline(always)]
    pub(crate) unsafe fn delayed_next_of(&self, b: *mut Block) -> Option<*mut Block> {
        #[cfg(feature = "secure")]
        // SAFETY: `b` is a readable block of at least two words (caller, `MIN_BIN`).
        unsafe {
            if !self.is_delayed_block(b) {
                return None;
            }
            Some(self.keys.decode((b as *const usize).add(1).read()) as *mut Block)
        }
        #[cfg(not(feature = "secure"))]
        // SAFETY: `b` is readable (caller).
        Some(unsafe { (*b).next })
    }

    /// Secure mode: whether block `b`'s first word is the delayed list's mark (see
    /// [`Page::set_delayed_next`]): `b` is on its heap's delayed list, free. (A live
    /// block's first word is the mark by a 2^-64 chance: the keys are secret.)
    ///
    /// # Safety
    /// `b` is a block of this page, readable.
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) unsafe fn is_delayed_block(&self, b: *mut Block) -> bool {
        // SAFETY: `b` is readable (caller).
        self.keys.decode(unsafe { (*b).next } as usize) == b as usize
    }

    /// Secure mode: whether `p` lies in the page's blocks (reserved ones included: they
    /// lie in the page, never in metadata). For a decoded link this is the whole check: a
    /// changed link decodes to an address far away (see `secure::Keys`), and an attacker
    /// without the keys cannot make it decode into the page.
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) fn in_area(&self, p: usize) -> bool {
        p.wrapping_sub(self.page_start() as usize) < self.area
    }

    /// Secure mode: zeroes a block being freed — whole up to [`Page::SCRUB_FULL_MAX`]
    /// bytes, else the words [`Page::check_scrubbed`] samples — so that reads after free
    /// see no old data (in blocks up to that size) and a write after free is caught when
    /// the block is handed out again. It may zero the link word too (blocks up to
    /// [`Page::SCRUB_INLINE_MAX`]): the caller writes the block's link after it.
    /// A raw `page` (remote frees scrub too: as `thread_free_push`).
    ///
    /// # Safety
    /// `page` is a page in use; `b` is a block of it given up by the caller.
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) unsafe fn scrub(page: *const Page, b: *mut Block) {
        // SAFETY: the page is live (caller); its block size is fixed while it is in use.
        let bs = unsafe { (*page).block_size };
        if bs <= Self::SCRUB_INLINE_MAX {
            // SAFETY: the block is the caller's to write, `bs` bytes.
            return unsafe { zero_small(b as *mut u8, bs) };
        }
        // SAFETY: as this function's contract.
        unsafe { Page::scrub_large(page, b) }
    }

    /// [`Page::scrub`] of a block larger than [`Page::SCRUB_INLINE_MAX`]: one `memset`,
    /// in tail position (the caller's frame can end with a jump to it), but for blocks
    /// over [`Page::SCRUB_CHUNK`] bytes (out of line). It writes nothing in the block's
    /// first word, so it may run after the block's link was written.
    ///
    /// # Safety
    /// `page` is a page in use; `b` is a block of it given up by the caller, larger than
    /// [`Page::SCRUB_INLINE_MAX`].
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) unsafe fn scrub_large(page: *const Page, b: *mut Block) {
        // SAFETY: the page is live (caller); its block size is fixed while it is in use.
        let bs = unsafe { (*page).block_size };
        // SAFETY: the block is the caller's to write, `bs` bytes long.
        let p = unsafe { (b as *mut u8).add(WORD) };
        if bs > Self::SCRUB_FULL_MAX {
            // SAFETY: as above: words 1, 2 and 3 of the block.
            return unsafe { ptr::write_bytes(p, 0, (Self::SCRUB_CHECK_WORDS - 1) * WORD) };
        }
        // (`bs`, a multiple of a word above `SCRUB_INLINE_MAX`, is at least
        // `SCRUB_INLINE_MAX + WORD`: `zero`'s `n` is at least 256)
        const _: () = assert!(Page::SCRUB_INLINE_MAX >= 256);
        // SAFETY: as above: the block's bytes after its first word.
        unsafe { zero(p, bs - WORD) };
    }

    /// Secure mode: blocks up to this size are zeroed by inline stores (at most sixteen
    /// 16-byte ones, overlapping), not by a call to `memset`: fewer instructions for these
    /// sizes (no call, no `memset` dispatch, no out-of-line free around it), and no call
    /// on the path of `free`.
    #[cfg(feature = "secure")]
    pub(crate) const SCRUB_INLINE_MAX: usize = 256;

    /// Secure mode: the most bytes [`Page::scrub`] gives one `memset`. glibc's x86_64
    /// `memset` switches to `rep stosb` above 2 KiB (`x86_rep_stosb_threshold`), which is
    /// no faster than its vector loop at these sizes but which callgrind counts as one
    /// instruction per byte: two calls below the threshold cost the same on the machine
    /// and keep `benches/secure.sh`'s counts to what the machine does.
    #[cfg(feature = "secure")]
    pub(crate) const SCRUB_CHUNK: usize = 2048;

    /// Secure mode: blocks up to this size are zeroed whole when freed. Zeroing larger
    /// ones costs more than their allocation does (`benches/secure.sh`: mstress, whose
    /// blocks reach 512 KiB, took 4.9 times the instructions with every block zeroed).
    #[cfg(feature = "secure")]
    pub(crate) const SCRUB_FULL_MAX: usize = 4096;

    /// Secure mode: words checked for a write after free when a block is handed out (the
    /// link word and the three after it: a sampled check, a few instructions).
    #[cfg(feature = "secure")]
    pub(crate) const SCRUB_CHECK_WORDS: usize = 4;

    /// Secure mode, as a block is handed out: its words after the link (up to
    /// [`Page::SCRUB_CHECK_WORDS`]) are still zero, else a write after free is reported;
    /// then its link word is cleared, so that no fresh block shows an address.
    ///
    /// # Safety
    /// `b` was just taken from this page's `free` list by its owner.
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) unsafe fn check_scrubbed(&self, b: *mut Block) {
        // SAFETY: `b` was taken from this page's `free` list (caller).
        if unsafe { self.written_after_free(b) } {
            secure::report(ErrorKind::WriteAfterFree, b as usize, Some(self.block_size));
        }
        // SAFETY: as above.
        unsafe { (b as *mut usize).write(0) };
    }

    /// Secure mode: whether free block `b`'s words after the link (up to
    /// [`Page::SCRUB_CHECK_WORDS`]) are not all zero: written after it was freed.
    ///
    /// # Safety
    /// `b` is a free block of this page, which the caller may read.
    #[cfg(feature = "secure")]
    #[inline(always)]
    pub(crate) unsafe fn written_after_free(&self, b: *mut Block) -> bool {
        let w = b as *const u8;
        // (secure mode's blocks are at least two words: `size_class::MIN_BIN`)
        debug_assert!(self.block_size >= 2 * WORD);
        let [o2, o3] = self.scrub_check;
        debug_assert!(
            o2 as usize <= self.block_size - WORD && o3 as usize <= self.block_size - WORD
        );
        // SAFETY: words 1, 2 and 3 of a block of ours, or its last word for those of a
        // block of fewer words (`scrub_check`): all inside the block, word-aligned.
        let acc = unsafe {
            (w.add(WORD) as *const usize).read()
                | (w.add(o2 as usize) as *const usize).read()
                | (w.add(o3 as usize) as *const usize).read()
        };
        acc != 0
    }

    /// Initialises the page for blocks of `block_size` over `page_size` bytes from
    /// `page_start` (already set), owned by `heap`. The caller then extends its free list
    /// (`alloc::page_extend`).
    ///
    /// # Safety
    /// The page is claimed from its segment and in no queue.
    pub(crate) unsafe fn init(
        page: *mut Page,
        heap: *mut RawHeap,
        block_size: usize,
        page_size: usize,
    ) {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            debug_assert!((*page).segment_in_use);
            debug_assert!(block_size >= WORD && block_size % WORD == 0);
            (*page).block_size = block_size;
            let reserved = page_size / block_size;
            debug_assert!(reserved >= 1 && reserved <= BlockCount::MAX as usize);
            (*page).reserved = reserved as BlockCount;
            (*page).capacity = 0;
            (*page).used = 0;
            #[cfg(not(feature = "embedded"))]
            {
                (*page).stat_used = 0;
            }
            (*page).flags = 0;
            (*page).retire_expire = 0;
            (*page).free = ptr::null_mut();
            (*page).local_free = ptr::null_mut();
            Page::set_free_is_zero(page, false);
            (*page).links = Links::new();
            #[cfg(feature = "secure")]
            {
                (*page).keys = Keys::random();
                (*page).div = Divisor::new(block_size);
                (*page).area = reserved * block_size;
                (*page).handed.store(0, crate::sync::Ordering::Relaxed);
                let last = block_size - WORD;
                (*page).scrub_check = [last.min(2 * WORD) as u8, last.min(3 * WORD) as u8];
            }
            #[cfg(not(feature = "embedded"))]
            (*page)
                .xthread_free
                .store(Delayed::NoDelayedFree as usize, Ordering::Release);
            // a fresh page: no pointer into a block yet (`flags` is 0), so no tag
            #[cfg(not(feature = "embedded"))]
            (*page).xheap.store(heap, Ordering::Release);
            #[cfg(feature = "embedded")]
            (*page).set_heap(heap);
        }
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
    pub(crate) unsafe fn extend_free(page: *mut Page) {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            debug_assert!((*page).free.is_null());
            debug_assert!((*page).capacity < (*page).reserved);
            let bsize = (*page).block_size;
            let extend = (*page).extend_count();
            let start = (*page)
                .page_start()
                .wrapping_add((*page).capacity as usize * bsize);
            #[cfg(not(feature = "secure"))]
            // SAFETY: blocks `capacity .. capacity + extend` lie inside the committed page,
            // are unused (never handed out since the page was initialised), and each is at
            // least one word, so writing their `next` words is in bounds and races with no one.
            {
                let mut block = start as *mut Block;
                for i in 1..extend {
                    let next = start.add(i * bsize) as *mut Block;
                    (*block).next = next;
                    block = next;
                }
                (*block).next = ptr::null_mut();
            }
            #[cfg(not(feature = "secure"))]
            {
                (*page).free = start as *mut Block;
            }
            #[cfg(feature = "secure")]
            // SAFETY: as above: the blocks are in the committed page and ours alone.
            {
                (*page).free = Page::extend_free_shuffled(page, start, extend);
            }
            // fresh blocks of zeroed memory read as zero but for the `next` word
            Page::set_free_is_zero(page, (*page).is_zero_init);
            (*page).capacity += extend as BlockCount;
            #[cfg(feature = "secure")]
            {
                (*page)
                    .handed
                    .store((*page).capacity as usize, crate::sync::Ordering::Relaxed);
            }
        }
    }

    /// Secure mode's [`Page::extend_free`] linking: the `n` fresh blocks from `start` in a
    /// random order (block `(first + k * stride) % n` is the `k`-th, `stride` a random
    /// number coprime to `n`), with the words that `check_scrubbed` reads zeroed when the
    /// memory may hold old data. Returns the first block.
    ///
    /// One random word gives `first` and `stride` (each half of it scaled to its range by a
    /// multiply and a shift, not a division), and the walk keeps the block's address, not
    /// its index: a step is an add and, past the end, a subtract of the blocks' span (it
    /// multiplied the index by the block size for every block). (With two `random()` calls,
    /// two divisions and a multiply per block, this function took 12.0 million of larson's
    /// 195.6 million instructions at `--quick`, and 11.4 of live-churn's 117.5.)
    ///
    /// # Safety
    /// As `extend_free`: the `n` blocks from `start` are in the committed page, ours alone.
    #[cfg(feature = "secure")]
    unsafe fn extend_free_shuffled(page: *mut Page, start: *mut u8, n: usize) -> *mut Block {
        fn gcd(mut a: usize, mut b: usize) -> usize {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        }
        const HALF: u32 = usize::BITS / 2;
        // (`n` is at most `MAX_EXTEND_SIZE / WORD` blocks, far below 2^HALF: the products
        // below do not overflow)
        debug_assert!(n >= 1 && n < 1 << HALF);
        let r = secure::random();
        let lo = r & ((1 << HALF) - 1);
        let hi = r >> HALF;
        // `first` in `0..n`, `stride` in `1..n` (1 when `n == 1`)
        let first = (lo * n) >> HALF;
        let mut stride = 1 + ((hi * (n - 1)) >> HALF);
        while gcd(stride, n) != 1 {
            stride -= 1;
        }
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        let (bsize, keys, scrub, [o2, o3]) = unsafe {
            (
                (*page).block_size,
                (*page).keys,
                !(*page).is_zero_init,
                (*page).scrub_check,
            )
        };
        let span = n * bsize;
        let step = stride * bsize;
        // block `w`'s scrubbed words and its link to `next`
        let link = |w: *mut u8, next: usize| {
            // SAFETY: `w` is the start of one of the `n` blocks from `start`, which are ours
            // (caller); `scrub_check`'s offsets are those of words inside a block.
            unsafe {
                if scrub {
                    // the words that `written_after_free` reads (the link is written below)
                    (w.add(WORD) as *mut usize).write(0);
                    (w.add(o2 as usize) as *mut usize).write(0);
                    (w.add(o3 as usize) as *mut usize).write(0);
                }
                (w as *mut usize).write(keys.encode(next));
            }
        };
        // the offset from `start` of block `(first + k * stride) % n`, kept from one `k` to
        // the next
        let mut off = first * bsize;
        let head = start.wrapping_add(off);
        let mut w = head;
        for _ in 1..n {
            off += step;
            if off >= span {
                off -= span;
            }
            let next = start.wrapping_add(off);
            link(w, next as usize);
            w = next;
        }
        link(w, 0);
        head as *mut Block
    }

    /// Collects the remote frees (`thread_free`): they move onto the page's own lists, or
    /// (not `force`, while `free` and `local_free` both hold blocks) are counted out of
    /// `used` and stay on the list; either way `used` counts them no more.
    ///
    /// # Safety
    /// Called by the page's owner (or by a thread that owns the page's abandoned segment).
    #[cfg(not(feature = "embedded"))]
    #[inline(never)]
    unsafe fn thread_free_collect(page: *mut Page, force: bool) {
        // SAFETY: the caller owns the page (the `# Safety` contract), as `check` requires.
        unsafe { Page::thread_free_collect_inner(page, force) };
        // (debug builds: the invariants, the remote-free list's count included)
        // SAFETY: as above; no reference to the entry outlives the call.
        unsafe { (*page).check() };
    }

    /// [`thread_free_collect`](Self::thread_free_collect) without the check.
    ///
    /// # Safety
    /// As `thread_free_collect`.
    #[cfg(not(feature = "embedded"))]
    #[inline(always)]
    unsafe fn thread_free_collect_inner(page: *mut Page, force: bool) {
        // (secure and debug mode: the walk collects every block)
        #[cfg(any(feature = "secure", feature = "debug-mode"))]
        let _ = force;
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            let mut tf = (*page).xthread_free.load(Ordering::Relaxed);
            loop {
                if tf_is_empty(tf) {
                    return;
                }
                // While the page has blocks in `free` and in `local_free` (nowhere to put a
                // third list without walking one), the remote frees are counted out of
                // `used` and stay on the list, its count cleared: they are collected when
                // `free` runs out (or by a forced collection, which must leave every free
                // block in `free`). So `used` is exact at once, and a page whose last
                // blocks its owner then frees is empty at once.
                #[cfg(not(any(feature = "secure", feature = "debug-mode")))]
                if !force && !(*page).free.is_null() && !(*page).local_free.is_null() {
                    match tf_count(tf) {
                        Some(0) => return, // counted out already
                        Some(c) if c <= (*page).used as usize => {
                            match (*page).xthread_free.compare_exchange_weak(
                                tf,
                                tf & !TF_COUNT_MASK,
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            ) {
                                Ok(_) => {
                                    (*page).used -= c as BlockCount;
                                    return;
                                }
                                Err(cur) => {
                                    tf = cur;
                                    continue;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                // (an empty list has no count either)
                let new = tf & DELAYED_MASK;
                match (*page).xthread_free.compare_exchange_weak(
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
            // (at least the head: a page with remote frees has blocks)
            let capacity = (*page).capacity.max(1);
            // With the count the pushes kept (the blocks pushed since the list was last
            // counted out, see above), the list is collected without a walk of its blocks
            // (not in secure mode, which checks every link, nor in debug mode): it becomes
            // `local_free` when that is empty, or `local_free` moves to an empty `free`
            // first; when both lists hold blocks and these are the last blocks in use, the
            // page starts afresh, empty (its free lists grow again from its start). Else
            // (forced) the walk below. A count above `used` is a double free's: the walk
            // reports the cycle such a list has, and cuts it.
            #[cfg(not(any(feature = "secure", feature = "debug-mode")))]
            let counted = match tf_count(tf) {
                Some(count) if count <= (*page).used as usize && count <= capacity as usize => {
                    let count = count as BlockCount;
                    if (*page).local_free.is_null() {
                        (*page).local_free = head;
                        (*page).used -= count;
                        return;
                    }
                    if (*page).free.is_null() {
                        (*page).free = (*page).local_free;
                        Page::set_free_is_zero(page, false);
                        (*page).local_free = head;
                        (*page).used -= count;
                        return;
                    }
                    if count == (*page).used {
                        (*page).free = ptr::null_mut();
                        (*page).local_free = ptr::null_mut();
                        (*page).used = 0;
                        (*page).capacity = 0;
                        // (its blocks were written: what grows anew is not zero)
                        (*page).is_zero_init = false;
                        Page::set_free_is_zero(page, false);
                        return;
                    }
                    Some(count)
                }
                _ => None,
            };
            #[cfg(any(feature = "secure", feature = "debug-mode"))]
            let counted: Option<BlockCount> = None;
            // (counted down from the page's capacity: one test a block, where counting up
            // and comparing with the capacity took three more instructions a remote free)
            let mut left: BlockCount = capacity - 1;
            // SAFETY: the list was taken whole by the CAS above; its blocks are blocks of this
            // page freed by other threads (pushed with release ordering, read after acquire).
            {
                let mut tail = head;
                loop {
                    // (the default build reads these links unchecked: remote frees are the
                    // hot path of producer/consumer programs, and this walk runs once per
                    // remote free; the count bound below still stops a cycle)
                    #[cfg(not(feature = "secure"))]
                    let next = (*tail).next;
                    #[cfg(feature = "secure")]
                    let next = (*page).next_of(tail);
                    if next.is_null() {
                        break;
                    }
                    if left == 0 {
                        // longer than the page: a cycle, from a block freed twice by other
                        // threads (reported; the list is cut here, never walked forever)
                        (*page).corrupt_link(tail);
                        break;
                    }
                    tail = next;
                    left -= 1;
                }
                (*page).set_next(tail, (*page).local_free);
            }
            // (the walk's length, when the pushes' count is not known: only double frees
            // make it so, and blocks counted out before may then be counted twice: `used`
            // stops at 0, as for any double free)
            let count = counted.unwrap_or(capacity - left);
            (*page).local_free = head;
            if (*page).used >= count {
                (*page).used -= count;
            } else {
                // more remote frees than blocks in use: double frees (reported above or by
                // the checks of `free`)
                (*page).used = 0;
            }
        }
    }

    /// Whether blocks freed by other threads wait on `thread_free` (a relaxed look: one
    /// that arrives a moment later is collected on a later slow path, as ever).
    #[cfg(not(feature = "small"))]
    #[inline(always)]
    pub(crate) fn thread_free_pending(&self) -> bool {
        !tf_is_empty(self.xthread_free.load(Ordering::Relaxed))
    }

    /// When `free` is empty, makes the owner's frees (`local_free`) the blocks to allocate
    /// from; returns whether it did. The owner's part of collecting, without the atomic
    /// remote frees.
    ///
    /// # Safety
    /// `page` is a live page entry of the calling thread (its owner).
    #[inline(always)]
    pub(crate) unsafe fn take_local_free(page: *mut Page) -> bool {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            if !(*page).free.is_null() || (*page).local_free.is_null() {
                return false;
            }
            (*page).free = (*page).local_free;
            (*page).local_free = ptr::null_mut();
            Page::set_free_is_zero(page, false);
            true
        }
    }

    /// Collects the page's free lists: remote frees onto `local_free`, and `local_free`
    /// onto `free` when `free` is empty (or always, with `force`). Without `force`, remote
    /// frees may stay on `thread_free`, counted out of `used`, while the page has blocks in
    /// `free` and in `local_free` (see `thread_free_collect`).
    ///
    /// # Safety
    /// Called by the page's owner.
    #[inline(always)]
    pub(crate) unsafe fn collect(page: *mut Page, force: bool) {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            // SAFETY: the calling thread owns the page (the `# Safety` contract), as
            // `thread_free_collect` requires. (The look at the list inline, the collection
            // out of line: most calls find no remote frees.)
            #[cfg(not(feature = "embedded"))]
            if !tf_is_empty((*page).xthread_free.load(Ordering::Relaxed)) {
                Page::thread_free_collect(page, force);
            }
            #[cfg(feature = "embedded")]
            Page::thread_free_collect(page, force);
            if (*page).local_free.is_null() || Page::take_local_free(page) {
                return;
            }
            if force {
                // append `free` after `local_free`
                let mut tail = (*page).local_free;
                // SAFETY: `local_free` is a list of this page's blocks, owned by the caller.
                {
                    // (bounded: a list longer than the page has a cycle, from a double free;
                    // reported, and cut where the walk stops, by the link set below)
                    let mut left = (*page).capacity;
                    loop {
                        let next = (*page).next_of(tail);
                        if next.is_null() {
                            break;
                        }
                        if left == 0 {
                            (*page).corrupt_link(tail);
                            break;
                        }
                        tail = next;
                        left -= 1;
                    }
                    (*page).set_next(tail, (*page).free);
                }
                (*page).free = (*page).local_free;
                (*page).local_free = ptr::null_mut();
                Page::set_free_is_zero(page, false);
            }
        }
    }

    /// Sets the delayed-free state, waiting while a remote thread is in `DelayedFreeing`.
    /// `NeverDelayedFree` is only overridden with `override_never`.
    #[cfg(not(feature = "embedded"))]
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
            let new = tf_with_delayed(tf, delay);
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
    #[cfg(not(feature = "embedded"))]
    pub(crate) fn is_delayed_freeing(&self) -> bool {
        tf_delayed(self.xthread_free.load(Ordering::Acquire)) == Delayed::DelayedFreeing
    }

    /// Pushes `block`, freed by a thread that does not own the page, onto `thread_free`
    /// with one CAS. Returns false instead when the page is full and its heap waits for
    /// news (`UseDelayedFree`): then the state is now `DelayedFreeing`, and the caller
    /// pushes the block onto the heap's delayed list and calls `delayed_freeing_done`.
    ///
    /// A raw `page`, not `&self`: the caller is not the page's owner, which writes the
    /// entry's other fields meanwhile (a `&Page` would claim to read them all: a data race
    /// that Miri reports); only `xthread_free` (atomic) and the keys (fixed while the page
    /// is in use) are reached.
    ///
    /// # Safety
    /// `page` is a page in use and `block` a live block of it, given up by the caller.
    #[inline]
    #[cfg(not(feature = "embedded"))]
    pub(crate) unsafe fn thread_free_push(page: *const Page, block: *mut Block) -> bool {
        // SAFETY: the page is live (caller); a borrow of its atomic field alone.
        let xtf = unsafe { &(*page).xthread_free };
        let mut tf = xtf.load(Ordering::Relaxed);
        loop {
            let use_delayed = tf_delayed(tf) == Delayed::UseDelayedFree;
            let new = if use_delayed {
                tf_with_delayed(tf, Delayed::DelayedFreeing)
            } else {
                // SAFETY: the block is ours to write until the CAS publishes it; the keys
                // are fixed while the page is in use.
                unsafe { (*block).next = Page::encode_link(page, tf_block(tf)) };
                tf_push(tf, block)
            };
            match xtf.compare_exchange_weak(tf, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return !use_delayed,
                Err(cur) => tf = cur,
            }
        }
    }

    /// One try of [`thread_free_push_unless_delayed`](Self::thread_free_push_unless_delayed):
    /// one CAS, no loop (so that a caller's fast path can hold it inline as leaf code);
    /// false, having changed nothing, when it fails (another push or a collection came
    /// between, or the page waits for news): the caller then takes the loop.
    ///
    /// # Safety
    /// As `thread_free_push`.
    #[inline(always)]
    #[cfg(not(feature = "embedded"))]
    pub(crate) unsafe fn thread_free_push_once(page: *const Page, block: *mut Block) -> bool {
        // SAFETY: the page is live (caller); a borrow of its atomic field alone.
        let xtf = unsafe { &(*page).xthread_free };
        let tf = xtf.load(Ordering::Relaxed);
        if tf_delayed(tf) == Delayed::UseDelayedFree {
            return false;
        }
        // SAFETY: the block is ours to write until the CAS publishes it; the keys are fixed
        // while the page is in use.
        unsafe { (*block).next = Page::encode_link(page, tf_block(tf)) };
        let new = tf_push(tf, block);
        xtf.compare_exchange(tf, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// [`thread_free_push`](Self::thread_free_push) that never begins `DelayedFreeing`:
    /// returns false, having changed nothing, when the page is full and its heap waits for
    /// news (`UseDelayedFree`). A caller that pushes this way never makes the owner wait
    /// for it (`use_delayed_free` waits only while a remote free is `DelayedFreeing`), so
    /// it may be interrupted by the owner anywhere (`PerCpuAlloc`: with interrupts on).
    ///
    /// # Safety
    /// As `thread_free_push`.
    #[inline(always)]
    #[cfg(not(feature = "embedded"))]
    pub(crate) unsafe fn thread_free_push_unless_delayed(
        page: *const Page,
        block: *mut Block,
    ) -> bool {
        // SAFETY: the page is live (caller); a borrow of its atomic field alone.
        let xtf = unsafe { &(*page).xthread_free };
        let mut tf = xtf.load(Ordering::Relaxed);
        loop {
            if tf_delayed(tf) == Delayed::UseDelayedFree {
                return false;
            }
            // SAFETY: the block is ours to write until the CAS publishes it; the keys are
            // fixed while the page is in use.
            unsafe { (*block).next = Page::encode_link(page, tf_block(tf)) };
            let new = tf_push(tf, block);
            match xtf.compare_exchange_weak(tf, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(cur) => tf = cur,
            }
        }
    }

    /// Ends the `DelayedFreeing` state that a `thread_free_push` returning false began:
    /// remote frees go to `thread_free` again. (A raw `page`: as `thread_free_push`.)
    ///
    /// # Safety
    /// `page` is a page in use.
    #[cfg(not(feature = "embedded"))]
    pub(crate) unsafe fn delayed_freeing_done(page: *const Page) {
        // SAFETY: the page is live (caller); a borrow of its atomic field alone.
        let xtf = unsafe { &(*page).xthread_free };
        // nobody else changes the state while we are `DelayedFreeing`
        let mut tf = xtf.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(tf_delayed(tf), Delayed::DelayedFreeing);
            let new = tf_with_delayed(tf, Delayed::NoDelayedFree);
            match xtf.compare_exchange_weak(tf, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(cur) => tf = cur,
            }
        }
    }

    #[cfg_attr(not(feature = "override"), allow(dead_code))] // used by checked mode (C API)
    /// The first block of `thread_free` (acquire: the pushing threads wrote the blocks'
    /// links before their release CAS).
    #[cfg(not(feature = "embedded"))]
    pub(crate) fn thread_free_list(&self) -> *mut Block {
        tf_block(self.xthread_free.load(Ordering::Acquire))
    }

    // `embedded`: the entry has no remote-free list (see the small geometry's `Page`).
    // Every free is the owner's (one heap, inside a critical section), so what the
    // default build does with `thread_free` and the delayed-free state has nothing to do.

    /// `embedded`: no remote frees, nothing to collect.
    #[cfg(feature = "embedded")]
    #[inline(always)]
    unsafe fn thread_free_collect(_page: *mut Page, _force: bool) {}

    /// `embedded`: no remote frees, so no delayed-free state to set.
    #[cfg(feature = "embedded")]
    #[inline(always)]
    pub(crate) fn use_delayed_free(&self, _delay: Delayed, _override_never: bool) {}

    /// `embedded`: no remote free is ever under way.
    #[cfg(feature = "embedded")]
    #[inline(always)]
    pub(crate) fn is_delayed_freeing(&self) -> bool {
        false
    }

    #[cfg(feature = "embedded")]
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // as the default build's
    /// `embedded`: always empty.
    pub(crate) fn thread_free_list(&self) -> *mut Block {
        ptr::null_mut()
    }

    #[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
    /// Whether `p` lies in the blocks handed out so far (`capacity` blocks from
    /// `page_start`).
    #[inline]
    pub(crate) fn blocks_contain(&self, p: *const u8) -> bool {
        let start = self.page_start() as usize;
        let end = start + self.capacity as usize * self.block_size;
        (p as usize) >= start && (p as usize) < end
    }

    /// Makes the page unused again, keeping what describes its memory (start, index,
    /// commit state); its memory no longer reads as zero.
    ///
    /// # Safety
    /// `page` is a live page entry of the calling thread (its owner).
    pub(crate) unsafe fn reset(page: *mut Page) {
        // SAFETY: `page` is a live page entry that the calling thread owns (the `# Safety`
        // contract): its fields are reached through the raw pointer, no reference to the
        // entry is made (other threads change its atomic fields meanwhile).
        unsafe {
            *page = Page {
                #[cfg(not(feature = "small"))]
                page_start: (*page).page_start,
                #[cfg(not(feature = "small"))]
                segment_idx: (*page).segment_idx,
                is_committed: (*page).is_committed,
                #[cfg(not(feature = "small"))]
                partial_commit: (*page).partial_commit,
                ..Page::EMPTY
            };
        }
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
        #[cfg(feature = "secure")]
        assert_eq!(
            self.handed.load(crate::sync::Ordering::Relaxed),
            self.capacity as usize,
            "page.handed"
        );
        let end = self.page_start() as usize + self.capacity as usize * self.block_size;
        let mut n: BlockCount = 0;
        for list in [self.free, self.local_free] {
            let mut b = list;
            while !b.is_null() {
                let a = b as usize;
                assert!(
                    a >= self.page_start() as usize && a < end,
                    "free list block {a:#x} outside the page"
                );
                assert_eq!((a - self.page_start() as usize) % self.block_size, 0);
                n += 1;
                assert!(n <= self.capacity, "free list cycle");
                // SAFETY: the lists hold blocks of this page, owned by the caller.
                b = unsafe { self.next_of(b) };
            }
        }
        // The remote-free list: its count, when known, is the number of its blocks that
        // `used` still counts (the list from a head loaded once stays as it is: pushes put
        // new heads before it, and only the owner, the caller, takes it or clears its
        // count); the others were counted out of `used` while they stay on the list.
        #[allow(unused_mut)]
        let mut counted_out: BlockCount = 0;
        #[cfg(not(feature = "embedded"))]
        {
            let tf = self.xthread_free.load(Ordering::Acquire);
            if let Some(count) = tf_count(tf) {
                let mut len = 0usize;
                let mut b = tf_block(tf);
                while !b.is_null() && len <= self.capacity as usize {
                    len += 1;
                    // SAFETY: as above: blocks of this page, freed and pushed by other
                    // threads (release CAS), read after the acquire load.
                    b = unsafe { self.next_of(b) };
                }
                // (a longer list has a cycle: a double free, reported when collected)
                if len <= self.capacity as usize {
                    assert!(count <= len, "thread_free count above its length");
                    counted_out = (len - count) as BlockCount;
                }
            }
        }
        assert_eq!(
            self.used + n + counted_out,
            self.capacity,
            "used + |free| + |local_free| + (|thread_free| - count) == capacity"
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

/// Secure mode: zeroes block `b`, link word included (`bs` a multiple of `WORD`, from
/// two words to [`Page::SCRUB_INLINE_MAX`]), with at most sixteen 16-byte stores that may
/// overlap, and no loop or call (what `memset` does for these sizes, inline). (Its callers
/// write the link after it. Leaving the link word out, as `scrub_large` does, took a test
/// of its own for blocks under 24 bytes and three more instructions on every free.)
///
/// # Safety
/// `b` is valid for writes of `bs` bytes.
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn zero_small(b: *mut u8, bs: usize) {
    type V = [u64; 2];
    const Z: V = [0, 0];
    debug_assert!(bs % WORD == 0 && (2 * WORD..=Page::SCRUB_INLINE_MAX).contains(&bs));
    // SAFETY: every store below lies in `[b, b + bs)` (`bs >= 16`: secure mode's blocks are
    // at least two words, `size_class::MIN_BIN`): the stores from `b` cover at most `bs`
    // bytes from it, those ending at `e` at most `bs` bytes before it, and each group
    // covers `[b, e)` whole for the `bs` it runs at (two, four, eight and sixteen stores of
    // 16 bytes up to 32, 64, 128 and 256 bytes).
    unsafe {
        let e = b.add(bs);
        (b as *mut V).write_unaligned(Z);
        (e.sub(16) as *mut V).write_unaligned(Z);
        if bs <= 32 {
            return;
        }
        (b.add(16) as *mut V).write_unaligned(Z);
        (e.sub(32) as *mut V).write_unaligned(Z);
        if bs <= 64 {
            return;
        }
        (b.add(32) as *mut V).write_unaligned(Z);
        (b.add(48) as *mut V).write_unaligned(Z);
        (e.sub(48) as *mut V).write_unaligned(Z);
        (e.sub(64) as *mut V).write_unaligned(Z);
        if bs <= 128 {
            return;
        }
        (b.add(64) as *mut V).write_unaligned(Z);
        (b.add(80) as *mut V).write_unaligned(Z);
        (b.add(96) as *mut V).write_unaligned(Z);
        (b.add(112) as *mut V).write_unaligned(Z);
        (e.sub(80) as *mut V).write_unaligned(Z);
        (e.sub(96) as *mut V).write_unaligned(Z);
        (e.sub(112) as *mut V).write_unaligned(Z);
        (e.sub(128) as *mut V).write_unaligned(Z);
    }
}

/// Secure mode: zeroes `n >= 256` bytes from `p` (with `memset`: in pieces of at most
/// [`Page::SCRUB_CHUNK`]).
///
/// # Safety
/// `p` is valid for writes of `n >= 256` bytes.
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn zero(p: *mut u8, n: usize) {
    // hosted x86_64 with AVX2 (nearly every machine): 32-byte stores, 256 bytes a loop
    // round, no call to `memset` and no dispatch on the size in it (the blocks zeroed here
    // are those of 264 bytes to 4 KiB: `Page::scrub_large`). Until the first such block
    // has asked the CPU (`zero_probe`), and on a CPU without AVX2, out of line.
    debug_assert!(n >= 256);
    #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
    {
        if HAS_AVX2.load(crate::sync::Ordering::Relaxed) {
            // SAFETY: the CPU has AVX2 (`zero_probe` found it); the `n >= 256` bytes from
            // `p` are writable (caller).
            return unsafe { zero_avx2(p, n) };
        }
        // SAFETY: as this function's contract.
        unsafe { zero_probe(p, n) }
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64", not(miri))))]
    // SAFETY: as this function's contract.
    unsafe {
        zero_portable(p, n)
    }
}

/// Secure mode, hosted x86_64: the CPU has AVX2 (set by [`zero_probe`]; false until then).
#[cfg(all(feature = "secure", feature = "std", target_arch = "x86_64", not(miri)))]
static HAS_AVX2: crate::sync::AtomicBool = crate::sync::AtomicBool::new(false);

/// [`zero`] of at least 256 bytes while [`HAS_AVX2`] is false: asks the CPU (once it
/// says yes, `zero` goes to [`zero_avx2`] directly), then zeroes.
///
/// # Safety
/// As [`zero`].
#[cfg(all(feature = "secure", feature = "std", target_arch = "x86_64", not(miri)))]
#[inline(never)]
unsafe fn zero_probe(p: *mut u8, n: usize) {
    if std::arch::is_x86_feature_detected!("avx2") {
        HAS_AVX2.store(true, crate::sync::Ordering::Relaxed);
        // SAFETY: the CPU has AVX2 (just asked); `n >= 256` bytes from `p` are writable
        // (caller).
        return unsafe { zero_avx2(p, n) };
    }
    // SAFETY: as this function's contract.
    unsafe { zero_portable(p, n) }
}

/// [`zero`] by `memset`, in pieces of at most [`Page::SCRUB_CHUNK`].
///
/// # Safety
/// As [`zero`].
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn zero_portable(p: *mut u8, n: usize) {
    if n > Page::SCRUB_CHUNK {
        // SAFETY: as this function's contract.
        return unsafe { zero_chunks(p, n) };
    }
    // SAFETY: the `n` bytes from `p` are writable (caller).
    unsafe { ptr::write_bytes(p, 0, n) };
}

/// [`zero`] with AVX2: 32-byte stores, eight a loop round while more than 256 bytes are
/// left, then eight that end at `p + n` (overlapping what the loop zeroed). glibc's
/// `memset` zeroes these sizes with the same stores, four a round, after a dispatch on
/// the size and the CPU: in larson (blocks of 8 to 1000 bytes) it took 52 instructions a
/// block over 256 bytes, this 40.
///
/// # Safety
/// The CPU has AVX2; `n >= 256`; the `n` bytes from `p` are writable.
#[cfg(all(feature = "secure", feature = "std", target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx2")]
#[inline(never)]
unsafe fn zero_avx2(p: *mut u8, n: usize) {
    use core::arch::x86_64::{__m256i, _mm256_storeu_si256};
    debug_assert!(n >= 256);
    // the zero vector from an `asm!` block, which the compiler cannot see through: with
    // `_mm256_setzero_si256` it turned the stores below back into a call to `memset`
    let z: __m256i;
    // SAFETY: `vpxor` of a register with itself: reads and writes nothing else.
    unsafe {
        core::arch::asm!(
            "vpxor {0}, {0}, {0}",
            out(ymm_reg) z,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    let mut q = p;
    let mut left = n;
    // SAFETY: every store writes 32 bytes inside `[p, p + n)`: the loop's while more than
    // 256 bytes are left from `q`, the last eight in the 256 bytes before `p + n`
    // (`n >= 256`); unaligned stores (`storeu`).
    unsafe {
        // the 256 bytes from `$at`: eight 32-byte stores
        macro_rules! zero_256 {
            ($at:expr) => {{
                let v = $at as *mut __m256i;
                for k in 0..8 {
                    _mm256_storeu_si256(v.add(k), z);
                }
            }};
        }
        while left > 256 {
            zero_256!(q);
            q = q.add(256);
            left -= 256;
        }
        zero_256!(p.add(n - 256));
    }
}

/// [`zero`] of more than [`Page::SCRUB_CHUNK`] bytes, out of line (its loop keeps values
/// in saved registers, which [`zero`]'s callers then need not save).
///
/// # Safety
/// As [`zero`].
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
unsafe fn zero_chunks(mut p: *mut u8, mut n: usize) {
    while n > Page::SCRUB_CHUNK {
        // SAFETY: `SCRUB_CHUNK < n` bytes from `p` are writable (caller).
        unsafe { ptr::write_bytes(p, 0, Page::SCRUB_CHUNK) };
        // SAFETY: still inside (or one past) the caller's `n` bytes.
        p = unsafe { p.add(Page::SCRUB_CHUNK) };
        n -= Page::SCRUB_CHUNK;
    }
    // SAFETY: the `n` bytes left from `p` are writable (caller).
    unsafe { ptr::write_bytes(p, 0, n) };
}
