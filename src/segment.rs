//! Segments: aligned chunks from the page source that hold pages and their metadata.
//!
//! A segment is `SEGMENT_SIZE`-aligned, so the segment of a block pointer `p` is
//! `(p - 1) & !SEGMENT_MASK` — no lock, no search. Its header (this struct and the array
//! of page metadata) sits at its start; pages follow. Kinds:
//! - small: 64 pages of 64 KiB, medium: 8 pages of 512 KiB (page 0 shrunk by the header);
//! - large: one page filling the segment;
//! - huge: one page of one block, the segment sized to fit it.
//!
//! Memory inside a segment is committed page by page as pages are claimed, and purged
//! (decommitted or reset) a short delay after a page empties. Empty segments go back to
//! the source through [`Os`] (which may cache their region a while).
//!
//! This layer knows no heap. It works for an owner described by a [`SegmentsTld`] (its
//! queues of segments with free pages, its list of segments, its [`Os`]), as mimalloc's
//! segment functions take a `mi_segments_tld_t`: [`page_alloc`] hands out a claimed page,
//! [`page_free`] takes one back. What a page holds, and which heap, is the caller's
//! business. Abandoning and reclaiming segments is in `abandon`.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::list::{Linked, Links, List};
use crate::os::Os;
use crate::page::Page;
use crate::size_class::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SegmentKind {
    Small,
    Medium,
    Large,
    Huge,
}

/// The owner token of abandoned segments.
pub(crate) const ABANDONED: usize = 0;
/// The owner token of a thread that has no segments yet. It is never a segment's owner:
/// owners are `SegmentsTld` addresses (aligned, so never 1) and abandoned segments have
/// `ABANDONED` — a thread without segments must never see an abandoned segment as its own.
pub(crate) const NO_OWNER: usize = 1;

/// Segment header.
///
/// Invariants (checked by [`Segment::check`] in debug builds):
/// - `used` = pages with `segment_in_use`, `used <= capacity`;
/// - the segment is in its owner's free queue (`in_free_queue`) iff it is small/medium,
///   owned, and `used < capacity`;
/// - `owner == ABANDONED` iff the segment is abandoned, and then `ctx` is null; otherwise
///   `owner` is the address of `*ctx`;
/// - `purge_mask` bits are set only for pages not in use;
/// - `committed` = the bytes of the region counted as committed in `os.stats`.
#[repr(C)]
pub(crate) struct Segment {
    /// Owner token (the owning `SegmentsTld`'s address); `ABANDONED` when abandoned. Read
    /// by every `free`.
    pub owner: AtomicUsize,
    /// Pages are `1 << page_shift` bytes (small, medium); `usize::BITS - 1` for large and
    /// huge segments, so that every pointer maps to page 0.
    pub page_shift: usize,
    /// `SEGMENT_COOKIE ^ address`, to recognise a segment header.
    pub cookie: usize,
    pub kind: SegmentKind,
    /// Number of pages, and how many are in use.
    pub capacity: usize,
    pub used: usize,
    /// Bytes from the segment start to its end.
    pub segment_size: usize,
    /// Bytes of the header (page-size aligned); page 0 starts after it.
    pub info_size: usize,
    /// The region to give back to the source (may start before the segment, for huge
    /// alignments).
    pub region: *mut u8,
    pub region_size: usize,
    /// Bytes of the region counted as committed.
    pub committed: usize,
    pub os: *const Os,
    /// The owner's segment data (null when abandoned).
    pub ctx: *mut SegmentsTld,
    /// Links in the owner's free queue (small/medium segments with free pages).
    free_links: Links<Segment>,
    pub in_free_queue: bool,
    /// Links in the owner's list of all its segments.
    all_links: Links<Segment>,
    /// Link in the domain's abandoned list.
    pub abandoned_next: *mut Segment,
    /// Pages waiting to be purged, and when (domain time).
    pub purge_mask: u64,
    pub purge_expire: u64,
    /// Page metadata; really `capacity` entries (the header is sized for them).
    pages: [Page; 1],
}

const SEGMENT_COOKIE: usize = 0x5a4d_a110_c5e9_0d17;

/// Marker: a segment in its owner's queue of segments with free pages.
pub(crate) enum FreeQueue {}
/// Marker: a segment in its owner's list of all its segments.
pub(crate) enum AllSegments {}

// SAFETY: returns the segment's `free_links` field, used by no other kind.
unsafe impl Linked<FreeQueue> for Segment {
    unsafe fn links(node: *mut Self) -> *mut Links<Self> {
        // SAFETY: `node` is live (the trait's contract); no reference is made.
        unsafe { ptr::addr_of_mut!((*node).free_links) }
    }
}

// SAFETY: returns the segment's `all_links` field, used by no other kind.
unsafe impl Linked<AllSegments> for Segment {
    unsafe fn links(node: *mut Self) -> *mut Links<Self> {
        // SAFETY: `node` is live (the trait's contract); no reference is made.
        unsafe { ptr::addr_of_mut!((*node).all_links) }
    }
}

/// The segment of a block pointer.
#[inline(always)]
pub(crate) fn ptr_segment(p: *const u8) -> *mut Segment {
    ((p as usize).wrapping_sub(1) & !SEGMENT_MASK) as *mut Segment
}

/// The segment of `p` if `p` points into a live segment of this process (hosted builds
/// check the segment map first, so that `p` may be any pointer; elsewhere `p` must point
/// into mapped memory and only the cookie is checked).
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) fn checked_segment(p: *const u8) -> Option<*mut Segment> {
    if p.is_null() {
        return None;
    }
    let segment = ptr_segment(p);
    #[cfg(feature = "std")]
    if !crate::segment_map::contains(segment as usize) {
        return None;
    }
    // SAFETY: hosted, the segment map says a live segment starts here, so its header is
    // readable; elsewhere `p` points into mapped memory (the contract above), and so does
    // the start of its `SEGMENT_SIZE`-aligned chunk. The cookie tells a segment header from
    // other memory.
    if unsafe { (*segment).is_valid_cookie() } {
        Some(segment)
    } else {
        None
    }
}

/// Why a pointer is not inside a block of a page in use (see [`checked_page`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) enum NotInBlocks {
    /// Not in a live segment of ours.
    NotOurs,
    /// In a segment, but in its header or past its pages.
    NotInAPage,
    /// In a page that is not in use (a double free, say).
    PageNotInUse,
    /// In a page in use, but outside the blocks handed out so far.
    OutsideBlocks,
}

/// The page whose handed-out blocks contain `p`, checked: the one pointer → page lookup
/// for pointers that may be anything (`free` checks, `mi_heap_contains_block`, ...).
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) fn checked_page(p: *const u8) -> Result<*mut Page, NotInBlocks> {
    let segment = checked_segment(p).ok_or(NotInBlocks::NotOurs)?;
    // SAFETY: `checked_segment` found a live segment here (segment map and cookie), so its
    // header is readable for as long as this call looks at it.
    let seg = unsafe { &*segment };
    let idx = (p as usize - segment as usize) >> seg.page_shift;
    if idx >= seg.capacity {
        return Err(NotInBlocks::NotInAPage);
    }
    // SAFETY: `idx < capacity`, checked just above.
    let page = unsafe { seg.page(idx) };
    // SAFETY: the page metadata lies in the header of the live segment, `capacity` entries
    // of which it was sized for.
    let pg = unsafe { &*page };
    if !pg.segment_in_use {
        return Err(NotInBlocks::PageNotInUse);
    }
    if !pg.blocks_contain(p) {
        return Err(NotInBlocks::OutsideBlocks);
    }
    Ok(page)
}

impl Segment {
    /// The page containing block pointer `p`.
    ///
    /// # Safety
    /// `self` is a live segment and `p` points into one of its pages.
    #[inline(always)]
    pub(crate) unsafe fn page_of(&self, p: *const u8) -> *mut Page {
        let idx = (p as usize - self as *const Segment as usize) >> self.page_shift;
        debug_assert!(idx < self.capacity);
        // SAFETY: the header holds `capacity` pages and `idx < capacity`.
        unsafe { self.page(idx) }
    }

    /// # Safety
    /// `idx < capacity`.
    #[inline(always)]
    pub(crate) unsafe fn page(&self, idx: usize) -> *mut Page {
        // SAFETY: the header was sized for `capacity` pages; `pages` is its trailing array.
        unsafe { (ptr::addr_of!(self.pages) as *mut Page).add(idx) }
    }

    pub(crate) fn is_valid_cookie(&self) -> bool {
        self.cookie == SEGMENT_COOKIE ^ (self as *const Segment as usize)
    }

    /// Small and medium segments hold several pages and sit in free queues.
    fn has_queue(&self) -> bool {
        matches!(self.kind, SegmentKind::Small | SegmentKind::Medium)
    }

    /// Start and size of page `idx`'s memory (page 0 excludes the header).
    pub(crate) fn page_area(&self, idx: usize) -> (*mut u8, usize) {
        let base = self as *const Segment as *mut u8;
        if self.has_queue() {
            let psize = 1usize << self.page_shift;
            let start = base.wrapping_add(idx * psize);
            if idx == 0 {
                (start.wrapping_add(self.info_size), psize - self.info_size)
            } else {
                (start, psize)
            }
        } else {
            (
                base.wrapping_add(self.info_size),
                self.segment_size - self.info_size,
            )
        }
    }

    /// Checks the segment invariants (debug builds).
    ///
    /// # Safety
    /// Called by the segment's owner.
    pub(crate) unsafe fn check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        assert!(self.is_valid_cookie(), "segment cookie");
        assert!(self.used <= self.capacity);
        let mut used = 0;
        for i in 0..self.capacity {
            // SAFETY: i < capacity; the caller owns the segment, so no one writes its pages.
            let page = unsafe { &*self.page(i) };
            if page.segment_in_use {
                used += 1;
                assert!(
                    self.purge_mask & (1 << i) == 0,
                    "purge pending on a page in use"
                );
            }
        }
        assert_eq!(used, self.used, "segment used count");
        if self.ctx.is_null() {
            assert_eq!(self.owner.load(Ordering::Relaxed), ABANDONED);
        } else {
            assert_eq!(self.owner.load(Ordering::Relaxed), self.ctx as usize);
            assert_eq!(
                self.in_free_queue,
                self.has_queue() && self.used < self.capacity,
                "free queue membership"
            );
        }
    }
}

/// What an owner (a thread or CPU) keeps about its segments: the segment layer's whole
/// context. Its address is the owner token stored in the segments it owns, so it must not
/// move while it owns segments.
///
/// Invariants: `all` holds exactly the segments whose `ctx` is this, `count` of them;
/// `small_free`/`medium_free` hold those of them with `in_free_queue`.
pub(crate) struct SegmentsTld {
    small_free: List<Segment, FreeQueue>,
    medium_free: List<Segment, FreeQueue>,
    all: List<Segment, AllSegments>,
    count: usize,
    os: *const Os,
}

impl SegmentsTld {
    pub(crate) const fn new(os: &'static Os) -> Self {
        SegmentsTld {
            small_free: List::new(),
            medium_free: List::new(),
            all: List::new(),
            count: 0,
            os,
        }
    }

    /// The owner token of this owner's segments.
    #[inline(always)]
    pub(crate) fn owner(&self) -> usize {
        self as *const SegmentsTld as usize
    }

    #[inline(always)]
    pub(crate) fn os(&self) -> &'static Os {
        // SAFETY: set from a `&'static Os` at construction.
        unsafe { &*self.os }
    }

    /// Whether this owner has no segment.
    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    fn free_queue(&mut self, kind: SegmentKind) -> Option<&mut List<Segment, FreeQueue>> {
        match kind {
            SegmentKind::Small => Some(&mut self.small_free),
            SegmentKind::Medium => Some(&mut self.medium_free),
            _ => None,
        }
    }

    /// Whether a segment of this owner has a free page of `kind` (small or medium).
    pub(crate) fn has_free_page(&self, kind: SegmentKind) -> bool {
        match kind {
            SegmentKind::Small => !self.small_free.is_empty(),
            SegmentKind::Medium => !self.medium_free.is_empty(),
            _ => false,
        }
    }

    /// # Safety
    /// `s` is a live segment of this owner in no free queue.
    unsafe fn free_queue_push(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a live segment of this owner (the `# Safety` contract), so its header
        // is readable; `kind` is fixed at its creation.
        let kind = unsafe { (*s).kind };
        if let Some(q) = self.free_queue(kind) {
            // SAFETY: `s` is live and in no free queue (the `# Safety` contract), as
            // `push_back` requires.
            unsafe { q.push_back(s) };
            // SAFETY: `s` is live and this owner's, so only the calling thread writes its
            // header; `push_back` left no reference to it behind.
            unsafe { (*s).in_free_queue = true };
        }
    }

    /// # Safety
    /// `s` is a live segment of this owner.
    unsafe fn free_queue_remove(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a live segment of this owner (the `# Safety` contract), so its header
        // is readable and only the calling thread writes it.
        let (queued, kind) = unsafe { ((*s).in_free_queue, (*s).kind) };
        if queued {
            if let Some(q) = self.free_queue(kind) {
                // SAFETY: `in_free_queue` says `s` is a member of its kind's queue (the
                // `SegmentsTld` invariants), as `remove` requires.
                unsafe { q.remove(s) };
            }
            // SAFETY: `s` is live and this owner's (the `# Safety` contract); `remove` left no reference
            // to it behind.
            unsafe { (*s).in_free_queue = false };
        }
    }

    /// Adds `s` to the list of this owner's segments (its `owner`/`ctx` are the caller's
    /// business).
    ///
    /// # Safety
    /// `s` is live and in no list of all segments.
    unsafe fn link(&mut self, s: *mut Segment) {
        // SAFETY: `s` is live and in no list of kind `AllSegments` (the `# Safety` contract),
        // as `push_front` requires.
        unsafe { self.all.push_front(s) };
        self.count += 1;
    }

    /// # Safety
    /// `s` is in this owner's list of all segments.
    unsafe fn unlink(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a member of `self.all` (the `# Safety` contract), as `remove`
        // requires.
        unsafe { self.all.remove(s) };
        self.count -= 1;
    }

    /// Takes `s` over: it becomes this owner's (in no free queue yet).
    ///
    /// # Safety
    /// `s` is a live segment that no one owns (abandoned, and popped by the caller).
    pub(crate) unsafe fn adopt(&mut self, s: *mut Segment) {
        let owner = self.owner();
        let ctx: *mut SegmentsTld = self;
        // SAFETY: `s` is live and the caller popped it from the abandoned list (the `# Safety`
        // contract), so no other thread writes its header (remote frees only read `owner`,
        // atomically, and fields fixed at creation) and no other reference to it is live.
        let seg = unsafe { &mut *s };
        debug_assert!(seg.ctx.is_null());
        seg.ctx = ctx;
        seg.owner.store(owner, Ordering::Release);
        // SAFETY: `s` is live and, abandoned until now, in no owner's list of all segments;
        // `seg` is not used any more.
        unsafe { self.link(s) };
    }

    /// Gives `s` up: it is abandoned (owned by no one) from now on.
    ///
    /// # Safety
    /// `s` is a segment of this owner.
    pub(crate) unsafe fn disown(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a live segment of this owner (the `# Safety` contract).
        unsafe { self.free_queue_remove(s) };
        // SAFETY: `s` is this owner's, so it is in its list of all segments (the `SegmentsTld`
        // invariants).
        unsafe { self.unlink(s) };
        // SAFETY: `s` is live and still the calling thread's until the `owner` store below
        // publishes it as abandoned, so no other thread writes its header meanwhile; the
        // list calls above left no reference to it behind.
        let seg = unsafe { &mut *s };
        seg.ctx = ptr::null_mut();
        seg.owner.store(ABANDONED, Ordering::Release);
    }

    /// Puts an owned small/medium segment with free pages into its free queue, if it is
    /// not there yet.
    ///
    /// # Safety
    /// `s` is a segment of this owner.
    pub(crate) unsafe fn requeue(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a live segment of this owner (the `# Safety` contract): only the
        // calling thread writes its header, so reading it races with no one.
        let (queued, used, capacity) = unsafe { ((*s).in_free_queue, (*s).used, (*s).capacity) };
        if !queued && used < capacity {
            // SAFETY: `s` is a live segment of this owner and in no free queue
            // (`in_free_queue` is false, the `SegmentsTld` invariants).
            unsafe { self.free_queue_push(s) };
        }
    }

    /// Calls `f` on each segment of the owner of `ctx`; `f` may free or give up (through
    /// `ctx`) the segment it is given, but no other. (It takes a raw pointer so that `f`
    /// may change the lists.)
    ///
    /// # Safety
    /// `ctx` is live and its owner is the calling thread.
    pub(crate) unsafe fn for_each(ctx: *mut SegmentsTld, f: impl FnMut(*mut Segment)) {
        // SAFETY: `ctx` is live and the calling thread's (the `# Safety` contract), so no
        // other thread writes it; no reference to it is made.
        let first = unsafe { (*ctx).all.first };
        // SAFETY: `first` is null or the first member of `ctx`'s list of all segments, which
        // is well formed (the `List` invariants); `f` removes at most the member it is given.
        unsafe { List::<Segment, AllSegments>::walk(first, f) }
    }
}

#[inline]
const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// The segment kind for blocks of `block_size`.
pub(crate) fn kind_for(block_size: usize) -> SegmentKind {
    if block_size <= SMALL_OBJ_SIZE_MAX {
        SegmentKind::Small
    } else if block_size <= MEDIUM_OBJ_SIZE_MAX {
        SegmentKind::Medium
    } else if block_size <= LARGE_OBJ_SIZE_MAX {
        SegmentKind::Large
    } else {
        SegmentKind::Huge
    }
}

/// Segment regions up to this size are cached for reuse when they empty; bigger ones go
/// back to the source at once (the faults of re-touching them dwarf the source calls).
const CACHE_SIZE_MAX: usize = 16 * SEGMENT_SIZE;

/// Allocates a segment for `ctx`'s owner. For huge segments, `huge_size` is the block
/// size and `huge_align` its alignment. Null when out of memory.
fn segment_alloc(
    ctx: &mut SegmentsTld,
    kind: SegmentKind,
    huge_size: usize,
    huge_align: usize,
) -> *mut Segment {
    let os = ctx.os();
    let cfg = os.config();
    let os_page = os.page_size();
    let (capacity, page_shift) = match kind {
        SegmentKind::Small => (SMALL_PAGES_PER_SEGMENT, SMALL_PAGE_SHIFT),
        SegmentKind::Medium => (MEDIUM_PAGES_PER_SEGMENT, MEDIUM_PAGE_SHIFT),
        SegmentKind::Large | SegmentKind::Huge => (1, usize::BITS as usize - 1),
    };
    let header = size_of::<Segment>() + (capacity - 1) * size_of::<Page>();
    let mut info_size = align_up(header, os_page);
    let mut front = 0;
    let mut region_align = SEGMENT_SIZE;
    let mut segment_size = SEGMENT_SIZE;
    if kind == SegmentKind::Huge {
        if huge_align > SEGMENT_SIZE {
            // the block sits exactly one segment size into the segment (found through
            // `p - 1`), and the segment starts `align - SEGMENT_SIZE` into the region
            front = huge_align - SEGMENT_SIZE;
            region_align = huge_align;
            info_size = SEGMENT_SIZE;
        } else if huge_align > os_page {
            info_size = align_up(info_size, huge_align);
        }
        segment_size = match info_size.checked_add(huge_size) {
            Some(s) if s <= isize::MAX as usize / 2 => {
                align_up(s, cfg.alloc_granularity.max(os_page))
            }
            _ => return ptr::null_mut(),
        };
    }
    let region_size = front + segment_size;
    // Small/medium/large segments are committed page by page when the source can reserve;
    // huge ones are needed whole at once.
    let commit_all = !cfg.has_reserve || kind == SegmentKind::Huge;
    // a recently emptied segment region, still resident (sources without reserve)
    let cached = if !cfg.has_reserve && front == 0 {
        let max = if kind == SegmentKind::Huge {
            region_size + region_size / 2
        } else {
            region_size
        };
        os.cache_take(region_size, max)
    } else {
        None
    };
    let from_cache = cached.is_some();
    let region = match cached {
        Some(r) => {
            if kind == SegmentKind::Huge {
                segment_size = r.size; // the block gets the whole region
            }
            r
        }
        // SAFETY: size is a non-zero multiple of the allocation granularity, align a power
        // of two at least the OS page.
        None => match unsafe { os.alloc(region_size, region_align, commit_all) } {
            Some(r) => r,
            None => return ptr::null_mut(),
        },
    };
    let seg_ptr = region.ptr.as_ptr().wrapping_add(front);
    debug_assert_eq!(seg_ptr as usize & SEGMENT_MASK, 0);
    // SAFETY: `seg_ptr` is inside the region, not null.
    let seg_nn = unsafe { NonNull::new_unchecked(seg_ptr) };
    // A huge block (over 2 MiB) is touched in big pieces: large OS pages save most of its
    // page faults. Other segments keep small OS pages, so that touching a few blocks does
    // not make 2 MiB resident (measured: large pages too raised the peak RSS of mstress
    // from 25 to 82 MiB). A cached region may change its use, so it is told either way.
    let huge = kind == SegmentKind::Huge;
    if huge || from_cache {
        // SAFETY: the segment range lies inside the region just obtained; it starts
        // `SEGMENT_SIZE`-aligned and `segment_size` is a multiple of the OS page.
        unsafe { os.advise_large_pages(seg_nn, segment_size, huge) };
    }
    let mut zeroed = region.zeroed;
    let mut committed = if region.committed { region.size } else { 0 };
    if !region.committed {
        // commit the header (and for huge segments, everything)
        let n = if commit_all { segment_size } else { info_size };
        // SAFETY: the range lies at the start of the segment, in the live region just
        // allocated; it starts `SEGMENT_SIZE`-aligned and `n` is a multiple of the OS page.
        match unsafe { os.commit(seg_nn, n) } {
            Some(z) => zeroed = z,
            None => {
                // SAFETY: giving back exactly the region just allocated, unused, with
                // nothing of it counted as committed.
                unsafe { os.free(region.ptr, region.size, 0) };
                return ptr::null_mut();
            }
        }
        committed = n;
    }
    let segment = seg_ptr as *mut Segment;
    // The header `[seg_ptr, seg_ptr + header)` is committed (`header <= info_size`, and at
    // least `info_size` bytes from `seg_ptr` were committed above or came committed) and
    // ours alone: the region was just obtained and the segment is not published (linked, or
    // put in the segment map) before every field is written.
    if !zeroed {
        // SAFETY: the header range is committed and writable, and ours alone (the region
        // was just obtained, the segment is not published yet).
        unsafe { ptr::write_bytes(seg_ptr, 0, header) };
    }
    // SAFETY: `segment` points to the committed header range, ours alone (not published
    // yet), and is `SEGMENT_SIZE`-aligned, so aligned for `Segment`.
    unsafe {
        ptr::write(
            segment,
            Segment {
                owner: AtomicUsize::new(ctx.owner()),
                page_shift,
                cookie: SEGMENT_COOKIE ^ seg_ptr as usize,
                kind,
                capacity,
                used: 0,
                segment_size,
                info_size,
                region: region.ptr.as_ptr(),
                region_size: region.size,
                committed,
                os,
                ctx,
                free_links: Links::new(),
                in_free_queue: false,
                all_links: Links::new(),
                abandoned_next: ptr::null_mut(),
                purge_mask: 0,
                purge_expire: 0,
                pages: [Page::EMPTY],
            },
        )
    };
    for i in 0..capacity {
        // SAFETY: the header was written just above; `i < capacity`, the number of pages
        // it was sized for. The temporary `&Segment` ends before the page is written.
        let (start, page) = unsafe { ((*segment).page_area(i).0, (*segment).page(i)) };
        // SAFETY: the page metadata lies in the committed header, ours alone (not published
        // yet), at a `Page`-aligned place (the `pages` array).
        unsafe {
            ptr::write(
                page,
                Page {
                    segment_idx: i as u8,
                    page_start: start,
                    is_committed: commit_all || region.committed,
                    is_zero_init: zeroed,
                    ..Page::EMPTY
                },
            )
        };
    }
    // SAFETY: the segment is fully written and new, so in no list of all segments.
    unsafe { ctx.link(segment) };
    // SAFETY: the segment is live, `ctx`'s (its `ctx` field), and in no free queue yet.
    unsafe { ctx.free_queue_push(segment) };
    #[cfg(feature = "std")]
    crate::segment_map::set(seg_ptr as usize, true);
    os.stats.segments.add(1);
    segment
}

/// Gives an empty segment back to the source (or to the region cache). Its owner, if any,
/// forgets it: `ctx` is the segment's owner data (`None` for an abandoned segment), passed
/// by the caller so that a caller holding it as `&mut` hands that reference down instead
/// of having the segment reach it behind its back.
///
/// # Safety
/// `segment` has no page in use, and is owned by the calling thread or by no one
/// (abandoned and popped by the caller); nothing refers to it any more. `ctx` is the
/// segment's `ctx` (`None` when that is null).
unsafe fn segment_free(ctx: Option<&mut SegmentsTld>, segment: *mut Segment) {
    // SAFETY: `segment` is live and the calling thread's or popped by it (the `# Safety`
    // contract), so no other thread writes its header; this shared reference ends before
    // the owner lists write it.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.used, 0);
    debug_assert_eq!(seg.ctx.is_null(), ctx.is_none());
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let (region, size, committed) = (seg.region, seg.region_size, seg.committed);
    if let Some(ctx) = ctx {
        // SAFETY: `segment` is a live segment of `ctx` (the `# Safety` contract).
        unsafe { ctx.free_queue_remove(segment) };
        // SAFETY: being `ctx`'s, it is in `ctx`'s list of all segments (its invariants).
        unsafe { ctx.unlink(segment) };
    }
    os.stats.segments.sub(1);
    // SAFETY: the header is live, the calling thread's or popped by it (the `# Safety`
    // contract); no reference into it is live.
    unsafe { (*segment).cookie = 0 };
    #[cfg(feature = "std")]
    crate::segment_map::set(segment as usize, false);
    // SAFETY: a segment's region is a region from the source (or the cache), never null.
    let region_nn = unsafe { NonNull::new_unchecked(region) };
    if !os.config().has_reserve
        && region == segment as *mut u8
        && size <= CACHE_SIZE_MAX
        && os.purge_delay() >= 0
    {
        // keep it a while: the next segment reuses it without faulting memory in
        // SAFETY: `region`/`size` are exactly the segment's region from `os`, counted with
        // `committed` committed bytes, and unused from now on: the segment has no page in
        // use and nothing refers to it (the `# Safety` contract).
        unsafe { os.cache_put(region_nn, size, committed) };
    } else {
        // SAFETY: `region`/`size` are exactly the segment's region from `os`, counted with
        // `committed` committed bytes, and unused from now on (the `# Safety` contract).
        unsafe { os.free(region_nn, size, committed) };
    }
}

/// Claims the first free page of `segment` (committing it unless it is a large page,
/// which commits as its blocks are made). Null when out of memory.
///
/// # Safety
/// `segment` is a segment of `ctx`, the calling thread's, and has a page that is not in
/// use.
unsafe fn page_claim(ctx: &mut SegmentsTld, segment: *mut Segment) -> *mut Page {
    // SAFETY: `segment` is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; this shared reference ends before anything writes it.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.ctx, ctx as *mut SegmentsTld);
    let Some(idx) = (0..seg.capacity).find(|&i| {
        // SAFETY: `i < capacity`; the page metadata lies in the live header.
        !unsafe { (*seg.page(i)).segment_in_use }
    }) else {
        debug_assert!(false, "segment in a free queue without a free page");
        return ptr::null_mut();
    };
    // SAFETY: `idx < capacity` (found above).
    let page = unsafe { seg.page(idx) };
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let kind = seg.kind;
    let (start, size) = seg.page_area(idx);
    // SAFETY: the page metadata lies in the header of the live segment, the calling
    // thread's; the page is not in use, so nothing else refers to it, and `seg` is no
    // longer used.
    let pg = unsafe { &mut *page };
    let mut newly_committed = 0;
    if !pg.is_committed && kind != SegmentKind::Large {
        // SAFETY: the page's area lies after the segment header, so it is not null.
        let start = unsafe { NonNull::new_unchecked(start) };
        // SAFETY: the page's area lies inside the segment's live region from `os`; page
        // areas start and end on OS page boundaries (the header size is page aligned).
        match unsafe { os.commit(start, size) } {
            Some(zero) => {
                pg.is_committed = true;
                pg.is_zero_init = zero;
                newly_committed = size;
            }
            None => return ptr::null_mut(),
        }
    }
    pg.segment_in_use = true;
    // SAFETY: the segment is live and the calling thread's; `pg` is no longer used, so this
    // is the only reference into its header.
    let seg = unsafe { &mut *segment };
    seg.committed += newly_committed;
    seg.purge_mask &= !(1u64 << idx);
    seg.used += 1;
    if seg.used == seg.capacity {
        // SAFETY: `segment` is a live segment of `ctx` (the `# Safety` contract); `seg` is
        // no longer used.
        unsafe { ctx.free_queue_remove(segment) };
    }
    os.stats.pages.add(1);
    if kind == SegmentKind::Huge {
        os.stats.huge.add(size as i64);
    }
    page
}

/// Claims a page for blocks of `block_size` from a segment of `ctx`'s owner with a free
/// page, or from a new segment. `huge_align = Some(align)` asks for a huge segment whose
/// one block is aligned to `align`. The page is in use and otherwise blank (no blocks);
/// its usable size is [`page_size`]. Null when out of memory.
///
/// Reclaiming abandoned segments first is the caller's policy (see `abandon`).
pub(crate) fn page_alloc(
    ctx: &mut SegmentsTld,
    block_size: usize,
    huge_align: Option<usize>,
) -> *mut Page {
    let kind = if huge_align.is_some() {
        SegmentKind::Huge
    } else {
        kind_for(block_size)
    };
    let queued = match ctx.free_queue(kind) {
        Some(q) => q.first,
        None => ptr::null_mut(),
    };
    if !queued.is_null() {
        // SAFETY: segments in `ctx`'s free queues are `ctx`'s and have a free page (the
        // `SegmentsTld` and `Segment` invariants); `ctx` is the calling thread's (a `&mut`).
        return unsafe { page_claim(ctx, queued) };
    }
    let s = segment_alloc(ctx, kind, block_size, huge_align.unwrap_or(0));
    if s.is_null() {
        return s as *mut Page;
    }
    // SAFETY: `s` is a fresh segment of `ctx` with every page free.
    let page = unsafe { page_claim(ctx, s) };
    if page.is_null() {
        // out of memory committing its first page: do not keep it empty
        // SAFETY: `s` is `ctx`'s and has no page in use (its one claim failed); nothing
        // but `ctx`'s lists refers to it, and `ctx` is passed down.
        unsafe { segment_free(Some(ctx), s) };
    }
    page
}

/// The usable size of a claimed page's memory.
///
/// # Safety
/// `page` is a page of a live segment.
pub(crate) unsafe fn page_size(page: *const Page) -> usize {
    // SAFETY: `page` is a page of a live segment (the `# Safety` contract), so its metadata
    // lies in that segment's header; only fields fixed while the segment lives are read.
    let pg = unsafe { &*page };
    // SAFETY: `page_start` lies in the page's segment, past its start, so `ptr_segment`
    // gives that live segment, whose header is readable.
    let seg = unsafe { &*ptr_segment(pg.page_start) };
    seg.page_area(pg.segment_idx as usize).1
}

/// Makes sure the first `bytes` of the page's memory are committed (pages committed
/// lazily: large pages on a source with reserve). False when out of memory.
///
/// # Safety
/// The calling thread owns the page's segment; the page is in use.
pub(crate) unsafe fn page_commit(page: *mut Page, bytes: usize) -> bool {
    let (page_start, idx, partial) = {
        // SAFETY: the page is in use in a segment of the calling thread (the `# Safety`
        // contract): its metadata lies in that live segment's header, and no other thread
        // writes these fields. The reference ends before the header is borrowed.
        let p = unsafe { &*page };
        if p.is_committed {
            return true;
        }
        (p.page_start, p.segment_idx as usize, p.partial_commit)
    };
    // SAFETY: `page_start` lies in the page's segment, live and the calling thread's (the
    // `# Safety` contract), so no other thread writes its header; no other reference into
    // it is live.
    let seg = unsafe { &mut *ptr_segment(page_start) };
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let (start, area) = seg.page_area(idx);
    let need = align_up(bytes, os.page_size()).min(area);
    let grown = if need > partial {
        // SAFETY: `partial < need <= area`: the offset stays inside the page's area.
        let from = unsafe { start.add(partial) };
        // SAFETY: `from` lies inside the page's area, after the segment header: not null.
        let from = unsafe { NonNull::new_unchecked(from) };
        // SAFETY: `[from, from + need - partial)` lies in the page's area, inside the
        // segment's live region from `os`; `partial` and `need` are multiples of the OS page
        // (or the area's size, one too), so the range is page aligned.
        let Some(zero) = (unsafe { os.commit(from, need - partial) }) else {
            return false;
        };
        seg.committed += need - partial;
        Some(zero)
    } else {
        None
    };
    // SAFETY: as for the first reference to the page; `seg` is no longer used, so this is
    // the only reference into the header.
    let p = unsafe { &mut *page };
    if let Some(zero) = grown {
        if !zero {
            p.is_zero_init = false;
        }
        p.partial_commit = need;
    }
    if p.partial_commit == area {
        p.is_committed = true;
        p.partial_commit = 0;
    }
    true
}

/// Gives a page whose blocks are all free (or forgotten) back to its segment: it is no
/// longer counted, its metadata is reset, its memory's purge is scheduled, and the
/// segment is freed when this was its last page in use. Returns whether the segment was
/// freed.
///
/// # Safety
/// `page` is in use and in no heap queue; its segment is owned by the calling thread or
/// abandoned and popped by it; no block of the page is used afterwards; the caller holds
/// no reference to the segment's owner's [`SegmentsTld`] (it is reached through the
/// segment; a caller that holds it uses [`page_free_in`]).
pub(crate) unsafe fn page_free(page: *mut Page) -> bool {
    // SAFETY: `page` is in use (the `# Safety` contract), so its metadata lies in the
    // header of a live segment; `page_start` is fixed while the segment lives.
    let segment = ptr_segment(unsafe { (*page).page_start });
    // SAFETY: the segment is live and the calling thread's or popped by it (the `# Safety`
    // contract), so no other thread writes its header. A set `ctx` is its owner's data, so
    // the calling thread's, live while it owns segments, and not referenced by the caller.
    let ctx = unsafe { (*segment).ctx.as_mut() };
    // SAFETY: the `# Safety` contract, and `ctx` is the segment's owner data.
    unsafe { page_free_in(ctx, page) }
}

/// [`page_free`] with the segment's owner data passed by the caller (`None` for an
/// abandoned segment), for a caller that holds it as `&mut`.
///
/// # Safety
/// As for `page_free`, but for the last condition: `ctx` is the page's segment's `ctx`
/// (`None` when that is null).
pub(crate) unsafe fn page_free_in(ctx: Option<&mut SegmentsTld>, page: *mut Page) -> bool {
    // SAFETY: the page is in use and its segment the calling thread's or popped by it (the
    // `# Safety` contract): its metadata lies in that live segment's header and no other
    // thread touches it (all its blocks are free, so no remote free is under way). The
    // reference ends before the header is borrowed.
    let pg = unsafe { &mut *page };
    let segment = ptr_segment(pg.page_start);
    // SAFETY: the segment is live; `os` was set at creation from the owner's `&'static Os`,
    // and `kind` is fixed at creation (neither lies in the page metadata).
    let (os, kind): (&'static Os, _) = unsafe { (&*(*segment).os, (*segment).kind) };
    // the page's statistics: blocks counted as allocated at its last synchronisation
    // are gone now
    os.stats.pages.sub(1);
    os.stats
        .allocated
        .sub(pg.stat_used as i64 * pg.block_size as i64);
    if kind == SegmentKind::Huge {
        os.stats.huge.sub(pg.block_size as i64);
    }
    pg.reset();
    let idx = pg.segment_idx as usize;
    let dirty = pg.is_committed || pg.partial_commit > 0;
    // SAFETY: the segment is live and the calling thread's or popped by it, so no other
    // thread writes its header; `pg` is no longer used, so this is the only reference into it.
    let seg = unsafe { &mut *segment };
    seg.used -= 1;
    if seg.used == 0 {
        // SAFETY: that was its last page in use; the segment is `ctx`'s or popped by the
        // calling thread, and nothing refers to it any more (`seg` is no longer used).
        unsafe { segment_free(ctx, segment) };
        return true;
    }
    // schedule the purge of the page's memory
    let delay = os.purge_delay();
    if delay >= 0 && dirty {
        seg.purge_mask |= 1u64 << idx;
        seg.purge_expire = os.now().saturating_add(delay as u64);
        if delay == 0 {
            // SAFETY: the segment is the calling thread's or popped by it; `seg` is no
            // longer used.
            unsafe { segment_purge(segment, true) };
        }
    }
    if let Some(ctx) = ctx {
        // SAFETY: the segment is a live segment of `ctx` (the `# Safety` contract).
        unsafe { ctx.requeue(segment) };
    }
    false
}

/// Purges the pages in the segment's purge mask (if their delay ran out, or `force`).
///
/// # Safety
/// The calling thread owns the segment (or popped it from the abandoned list).
pub(crate) unsafe fn segment_purge(segment: *mut Segment, force: bool) {
    let (mask, os) = {
        // SAFETY: the segment is live and the calling thread's or popped by it (the
        // `# Safety` contract), so no other thread writes its header; the reference ends
        // before the pages are borrowed.
        let seg = unsafe { &*segment };
        if seg.purge_mask == 0 {
            return;
        }
        // SAFETY: `os` was set at creation from the owner's `&'static Os`.
        let os: &'static Os = unsafe { &*seg.os };
        if !force && os.now() < seg.purge_expire {
            return;
        }
        (seg.purge_mask, os)
    };
    let decommit_zeroes = os.config().decommit_zeroes;
    let mut mask = mask;
    let mut decommitted = 0;
    while mask != 0 {
        let idx = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        // SAFETY: purge mask bits are page indices below `capacity`; the temporary
        // `&Segment` ends before the page is borrowed.
        let (page, (start, area)) = unsafe { ((*segment).page(idx), (*segment).page_area(idx)) };
        // SAFETY: the page metadata lies in the live header; the page is not in use (purge
        // mask bits are only set for pages not in use), so nothing else refers to it.
        let page = unsafe { &mut *page };
        debug_assert!(!page.segment_in_use);
        let size = if page.is_committed {
            area
        } else {
            page.partial_commit
        };
        if size == 0 {
            continue;
        }
        // SAFETY: the page's area lies after the segment header: not null.
        let start = unsafe { NonNull::new_unchecked(start) };
        // SAFETY: the range is the committed part of a page not in use: inside the
        // segment's live region, page aligned (a page area, or its first `partial_commit`
        // bytes, a multiple of the OS page), and no live data is in it.
        if unsafe { os.decommit(start, size) } {
            page.is_committed = false;
            page.partial_commit = 0;
            decommitted += size;
        } else if decommit_zeroes {
            page.is_zero_init = true;
        }
    }
    // SAFETY: as for the first reference to the header; no page reference is live.
    let seg = unsafe { &mut *segment };
    seg.committed -= decommitted;
    seg.purge_mask = 0;
}

/// Purges every segment of `ctx`'s owner whose purge delay ran out (all with `force`).
pub(crate) fn segments_purge(ctx: &mut SegmentsTld, force: bool) {
    let purge = |s: *mut Segment| {
        // SAFETY: `for_each` hands out segments of `ctx`, the calling thread's.
        unsafe { segment_purge(s, force) }
    };
    // SAFETY: `ctx` is live and the calling thread's (a `&mut`); purging changes no list.
    unsafe { SegmentsTld::for_each(ctx, purge) };
}

/// Resizes the huge block of `page` by moving or resizing its segment with the source's
/// `remap` (no copy), so that its block holds `new_size` bytes. Returns the page at its
/// new place (its block starts at its `page_start`), or null when the source cannot (the
/// page is then untouched).
///
/// # Safety
/// `page` is the page of a huge segment owned by the calling thread, whose one block is
/// live and owned by the caller, and the page is in no queue (the segment header, and so
/// the page, may move); the caller holds no reference to the thread's [`SegmentsTld`].
pub(crate) unsafe fn huge_remap(page: *mut Page, new_size: usize) -> *mut Page {
    // SAFETY: `page` is the page of a live segment (the `# Safety` contract); `page_start`
    // is fixed while the segment stays where it is.
    let segment = ptr_segment(unsafe { (*page).page_start });
    // SAFETY: the segment is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; this shared reference ends before it is unlinked.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.kind, SegmentKind::Huge);
    if seg.region != segment as *mut u8 {
        return ptr::null_mut(); // alignment front part: keep it simple, copy instead
    }
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let cfg = os.config();
    let gran = cfg.alloc_granularity.max(cfg.page_size).max(4096);
    let Some(want) = seg.info_size.checked_add(new_size) else {
        return ptr::null_mut();
    };
    let new_seg_size = align_up(want, gran);
    let (region_size, committed) = (seg.region_size, seg.committed);
    // SAFETY: the segment is the calling thread's, so its `ctx` is that thread's data, live
    // while it owns segments, and not referenced by the caller (the `# Safety` contract).
    let ctx = unsafe { &mut *seg.ctx };
    // Every link into the segment header (the owner's segment list, the segment map) is
    // undone before it moves and redone after.
    // SAFETY: the segment is `ctx`'s, so in its list of all segments (its invariants).
    unsafe { ctx.unlink(segment) };
    #[cfg(feature = "std")]
    crate::segment_map::set(segment as usize, false);
    // SAFETY: `segment` is the address of a live segment: not null.
    let seg_nn = unsafe { NonNull::new_unchecked(segment as *mut u8) };
    // SAFETY: with no front part, the segment is exactly its region (checked above), from
    // `os`, committed in full (huge segments are) and counted with `committed` bytes; the
    // caller's block may move (the `# Safety` contract) and nothing links to the header.
    let moved = unsafe { os.remap(seg_nn, region_size, committed, new_seg_size, SEGMENT_SIZE) };
    let Some(r) = moved else {
        #[cfg(feature = "std")]
        crate::segment_map::set(segment as usize, true);
        // SAFETY: the remap failed, so the segment is still live where it was, and it was
        // unlinked just above.
        unsafe { ctx.link(segment) };
        return ptr::null_mut();
    };
    let new_seg = r.ptr.as_ptr() as *mut Segment;
    // SAFETY: the source moved the whole region, header included, to `r.ptr`, committed;
    // the segment is still the calling thread's, and no reference into its old or new
    // place is live.
    let seg = unsafe { &mut *new_seg };
    seg.cookie = SEGMENT_COOKIE ^ new_seg as usize;
    seg.region = new_seg as *mut u8;
    seg.region_size = r.size;
    seg.committed = r.size;
    seg.segment_size = new_seg_size;
    // SAFETY: a huge segment has one page: `0 < capacity`.
    let page = unsafe { seg.page(0) };
    let (start, psize) = seg.page_area(0);
    // SAFETY: the page metadata lies in the moved header; the page is in no queue and its
    // block is the caller's (the `# Safety` contract), so nothing else refers to it; `seg`
    // is no longer used.
    let pg = unsafe { &mut *page };
    let old_bsize = pg.block_size;
    pg.page_start = start;
    pg.block_size = psize;
    let delta = psize as i64 - old_bsize as i64;
    os.stats.huge.add(delta);
    os.stats.allocated.add(delta * pg.stat_used as i64);
    #[cfg(feature = "std")]
    crate::segment_map::set(new_seg as usize, true);
    // SAFETY: the segment is live at `new_seg`, and in no list of all segments (unlinked
    // before the move).
    unsafe { ctx.link(new_seg) };
    page
}
