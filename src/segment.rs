//! Segments: aligned chunks from the page source that hold pages and their metadata.
//!
//! A segment is `SEGMENT_SIZE`-aligned, so the segment of a block pointer `p` is
//! `(p - 1) & !SEGMENT_MASK` — no lock, no search. Its header (this struct and the array
//! of page metadata) sits at its start; pages follow. Kinds:
//! - small: 64 pages of 64 KiB, medium: 8 pages of 512 KiB (page 0 shrunk by the header);
//! - large: one page filling the segment;
//! - huge: one page of one block, the segment sized to fit it.
//!
//! This file is what a segment is: its header and its invariants, the lookups from a
//! pointer to its segment and page, and what an owner keeps about its segments
//! ([`SegmentsTld`]). Making, claiming and freeing them is in `segment_alloc`; abandoning
//! and reclaiming them in `abandon`.
//!
//! This layer knows no heap. It works for an owner described by a [`SegmentsTld`] (its
//! queues of segments with free pages, its list of segments, its [`Os`]), as mimalloc's
//! segment functions take a `mi_segments_tld_t`. What a page holds, and which heap, is
//! the caller's business.

use crate::sync::{AtomicUsize, Ordering};
use core::ptr;

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
/// - `used` = pages with `segment_in_use`, `used <= capacity - first_page`; pages before
///   `first_page` are never used;
/// - the segment is in its owner's free queue (`in_free_queue`) iff it is small/medium,
///   owned, and `used < capacity - first_page`;
/// - `owner == ABANDONED` iff the segment is abandoned; otherwise `owner` is the address of
///   its owner's [`SegmentsTld`]. The header keeps no pointer to that `SegmentsTld`: the
///   owner passes it down to every call that changes its lists (as mimalloc passes its
///   `mi_segments_tld_t`), so that no path reaches the owner's data behind a `&mut` that a
///   caller holds (a pointer kept here, derived from one `&mut SegmentsTld`, was invalidated
///   by the next `&mut` reborrow: Miri's Stacked Borrows reported it, scripts/miri.sh);
/// - `purge_mask` bits are set only for pages not in use;
/// - `committed` = the bytes of the region counted as committed in `os.stats`.
#[repr(C)]
pub(crate) struct Segment {
    /// Owner token (the owning `SegmentsTld`'s address); `ABANDONED` when abandoned. Read
    /// by every `free`.
    pub owner: AtomicUsize,
    /// `embedded`: the address of the heap (`heap::RawHeap`) that the segment's pages in
    /// use belong to (0 while none is): the one heap of the owner, recorded here once
    /// instead of in every page entry (read and written through `Page::heap` and
    /// `Page::set_heap`, in `heap.rs`). An address, as this layer does not name heaps.
    #[cfg(feature = "embedded")]
    pub heap: usize,
    /// Pages are `1 << page_shift` bytes (small, medium); `usize::BITS - 1` for large and
    /// huge segments, so that every pointer maps to page 0.
    pub page_shift: usize,
    /// `SEGMENT_COOKIE ^ address`, to recognise a segment header.
    pub cookie: usize,
    pub kind: SegmentKind,
    /// In the owner's free queue (see `free_links`). (Beside `kind` and `large_pages`: one
    /// padded word for the three.)
    pub in_free_queue: bool,
    /// The region was advised for large OS pages when the segment was made: huge segments,
    /// and every segment made while [`Os::large_os_pages`](crate::os::Os::large_os_pages)
    /// is on. The cache keeps the region's advice with it.
    pub large_pages: bool,
    /// Number of pages, and how many are in use.
    pub capacity: usize,
    pub used: usize,
    /// The first page that can hold blocks: 1 when the header leaves page 0 too little
    /// room for a block of its largest size class (the small geometry on 64-bit hosts).
    pub first_page: usize,
    /// Bytes from the segment start to its end.
    pub segment_size: usize,
    /// Bytes of the header (page-size aligned); page 0 starts after it.
    pub info_size: usize,
    /// Secure mode: bytes of each guard page (an OS page; 0 elsewhere, and when the source
    /// cannot protect memory). The last `guard` bytes of the header, between the metadata
    /// and page 0, are a guard page, and so are the last `guard` bytes of a large or huge
    /// segment, right after its page's blocks: an overflow off the end of a large or huge
    /// block, or off the start of page 0, faults instead of reaching other memory.
    pub guard: usize,
    /// The region to give back to the source (may start before the segment, for huge
    /// alignments).
    pub region: *mut u8,
    pub region_size: usize,
    /// Bytes of the region counted as committed.
    pub committed: usize,
    pub os: *const Os,
    /// Links in the owner's free queue (small/medium segments with free pages).
    pub free_links: Links<Segment>,
    /// Links in the owner's list of all its segments.
    pub all_links: Links<Segment>,
    /// Link in the domain's abandoned list.
    pub abandoned_next: *mut Segment,
    /// When the pages of `purge_mask` are due to be purged (domain time).
    pub purge_expire: u64,
    /// Pages waiting to be purged (after `purge_expire`: no padding before it on 32-bit).
    pub purge_mask: SliceBits,
    /// Small geometry: the slices (512-byte pages) in use by pages; a page is a run of
    /// slices, its metadata in the entry of its first slice (see `Page::span_offset`).
    /// Default geometry: the pages in use, and those the segment does not have (bit `i`
    /// clear iff `first_page <= i < capacity` and page `i` is not `segment_in_use`), so
    /// that a page claim takes the first clear bit in a few instructions, not a walk of the
    /// entries (a kernel's solo pages paid about 300 instructions for it), and walks of the
    /// pages in use (`slices_used & slice_mask(first_page, capacity)`) skip the others.
    pub slices_used: SliceBits,
    /// The page of each `SMALL_PAGE_SIZE` slice of the segment's first `SEGMENT_SIZE`
    /// bytes (default geometry), so that [`Segment::page_of`] is one table load: entry `i`
    /// is the page that holds the bytes `i << SMALL_PAGE_SHIFT..` of the segment (page 0
    /// of large and huge segments everywhere). Written with the header and again when the
    /// header moves (`fill_slice_pages`); read by every `free`.
    #[cfg(not(feature = "small"))]
    pub slice_pages: [*mut Page; SLICES],
    /// Page metadata; really `capacity` entries (the header is sized for them); read
    /// them with [`Segment::page`].
    pub pages: [Page; 0],
}

/// Entries of [`Segment::slice_pages`]: the small pages a segment has room for.
#[cfg(not(feature = "small"))]
pub(crate) const SLICES: usize = SEGMENT_SIZE >> SMALL_PAGE_SHIFT;

const SEGMENT_COOKIE: usize = 0x5a4d_a110_c5e9_0d17_u64 as usize; // truncated on 32-bit targets

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

/// A bit per page (slice) of a segment: `Segment::purge_mask`, `Segment::slices_used`. 64
/// bits (small geometry: 32, the 16 slices of a segment; 8 bytes less in every header).
#[cfg(not(feature = "small"))]
pub(crate) type SliceBits = u64;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub(crate) type SliceBits = u32;
#[cfg(feature = "small")]
const _: () = assert!(SMALL_PAGES_PER_SEGMENT <= SliceBits::BITS as usize);

/// The bits of slices `from..to` (small geometry), of pages `from..to` (default geometry):
/// of `Segment::slices_used`.
#[inline]
pub(crate) const fn slice_mask(from: usize, to: usize) -> SliceBits {
    let upto = if to >= SliceBits::BITS as usize {
        SliceBits::MAX
    } else {
        (1 << to) - 1
    };
    upto & !((1 << from) - 1)
}

/// Small geometry: the slices that a header of `header` bytes leaves no use of (as
/// `segment_alloc_sized` computes `first_page`, with the 16-byte pages of fixed memory).
#[cfg(feature = "small")]
const fn covered(header: usize) -> usize {
    let info = (header + MIN_OS_PAGE - 1) & !(MIN_OS_PAGE - 1);
    let at = info / SMALL_PAGE_SIZE;
    if (at + 1) * SMALL_PAGE_SIZE - info < 8 * WORD {
        at + 1
    } else {
        at
    }
}

/// Bytes of the header of a segment of `kind`: the segment struct and its pages' metadata
/// (before rounding up to whole OS pages).
#[cfg_attr(not(feature = "embedded"), allow(dead_code))] // reported by `embedded::Heap::metadata`
pub(crate) const fn header_size(kind: SegmentKind) -> usize {
    let pages = match kind {
        SegmentKind::Small => SMALL_PAGES_PER_SEGMENT,
        SegmentKind::Medium => MEDIUM_PAGES_PER_SEGMENT,
        SegmentKind::Large | SegmentKind::Huge => 1,
    };
    let full = core::mem::size_of::<Segment>() + pages * core::mem::size_of::<Page>();
    // Small geometry: without the entries of the slices that the header covers (as
    // `segment_alloc_sized` lays it out; the sources of fixed memory have 16-byte pages).
    #[cfg(feature = "small")]
    if matches!(kind, SegmentKind::Small) {
        let first = covered(full);
        let shorter = full - first * core::mem::size_of::<Page>();
        if covered(shorter) == first {
            return shorter;
        }
    }
    full
}

/// The segment of a block pointer.
#[cfg(not(feature = "small"))]
#[inline(always)]
pub(crate) fn ptr_segment(p: *const u8) -> *mut Segment {
    ((p as usize).wrapping_sub(1) & !SEGMENT_MASK) as *mut Segment
}

/// The segment of a block pointer. In the small geometry, segments are aligned to their
/// size relative to a phase (`segment_phase`): a microcontroller's heap starts wherever
/// the linker put it, and aligning 8 KiB segments to absolute addresses would waste up to
/// 8 KiB of a 16 KiB heap. Three more instructions than the absolute mapping.
#[cfg(feature = "small")]
#[inline(always)]
pub(crate) fn ptr_segment(p: *const u8) -> *mut Segment {
    let phase = SEGMENT_PHASE.load(Ordering::Relaxed);
    (((p as usize).wrapping_sub(1).wrapping_sub(phase) & !SEGMENT_MASK).wrapping_add(phase))
        as *mut Segment
}

/// The phase of segment alignment (small geometry): segments start at addresses `a` with
/// `(a - phase) % SEGMENT_SIZE == 0`. Set once, before the first segment exists.
#[cfg(feature = "small")]
static SEGMENT_PHASE: AtomicUsize = AtomicUsize::new(0);
/// Whether `SEGMENT_PHASE` was set (by the first heap to take memory).
#[cfg(feature = "small")]
static PHASE_SET: crate::sync::AtomicBool = crate::sync::AtomicBool::new(false);

/// The phase of segment alignment (always 0 in the default geometry).
#[inline(always)]
pub(crate) fn segment_phase() -> usize {
    #[cfg(feature = "small")]
    return SEGMENT_PHASE.load(Ordering::Relaxed);
    #[cfg(not(feature = "small"))]
    0
}

/// Sets the phase of segment alignment to `start % SEGMENT_SIZE` if no phase was set yet,
/// and returns the phase in force (small geometry). Sources must then hand out segment
/// regions at that phase ([`RegionSource::set_phase`](crate::source::RegionSource)).
///
/// # Safety
/// No segment exists yet if the phase changes (the first call with a non-zero phase must
/// come before the first allocation).
#[cfg(feature = "small")]
pub(crate) unsafe fn adopt_segment_phase(start: usize) -> usize {
    if PHASE_SET.swap(true, Ordering::AcqRel) {
        return SEGMENT_PHASE.load(Ordering::Relaxed);
    }
    let phase = start & SEGMENT_MASK;
    SEGMENT_PHASE.store(phase, Ordering::Relaxed);
    phase
}

/// `no_std` builds (no segment map): the lowest and highest address at which a segment
/// header was made so far ([`Segment::set_cookie`]). [`checked_segment`] reads no cookie
/// outside `[lo, hi]`: a pointer that secure mode decodes from a corrupted link (e.g. a
/// delayed-free list's, which leads to another page, so that it cannot be bounded to the
/// block's own page) lands almost surely far outside it, where the memory may not be
/// mapped. Inside the span the source may have unmapped a freed segment (the frame
/// source does): a corrupted link decodes there with a chance of about span / 2^64.
#[cfg(not(feature = "std"))]
static SEGMENT_SPAN_LO: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(usize::MAX);
/// See [`SEGMENT_SPAN_LO`].
#[cfg(not(feature = "std"))]
static SEGMENT_SPAN_HI: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);

/// Widens the span of segment headers to `segment` (see [`SEGMENT_SPAN_LO`]).
#[cfg(not(feature = "std"))]
fn note_segment_span(segment: usize) {
    // (relaxed: the header is published to other threads by whatever publishes the
    // segment's blocks, which orders these stores before any check of its blocks)
    if segment < SEGMENT_SPAN_LO.load(Ordering::Relaxed) {
        SEGMENT_SPAN_LO.fetch_min(segment, Ordering::Relaxed);
    }
    if segment > SEGMENT_SPAN_HI.load(Ordering::Relaxed) {
        SEGMENT_SPAN_HI.fetch_max(segment, Ordering::Relaxed);
    }
}

/// Whether a segment header may start at `segment`: inside the span of those made so far.
#[cfg(not(feature = "std"))]
fn in_segment_span(segment: usize) -> bool {
    segment >= SEGMENT_SPAN_LO.load(Ordering::Relaxed)
        && segment <= SEGMENT_SPAN_HI.load(Ordering::Relaxed)
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
    // Elsewhere, no map: a chunk outside the span of the segments made so far is no
    // segment, and its cookie is not read (a pointer decoded from a corrupted link, say,
    // which lands anywhere in the address space: see `note_segment_span`).
    #[cfg(not(feature = "std"))]
    if !in_segment_span(segment as usize) {
        return None;
    }
    // SAFETY: hosted, the segment map says a live segment starts here, so its header is
    // readable; elsewhere `p` points into mapped memory (the contract above), and so does
    // the start of its `SEGMENT_SIZE`-aligned chunk. The cookie tells a segment header from
    // other memory.
    if unsafe { Segment::cookie_valid_raw(segment) } {
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
    unsafe { checked_page_in(p, segment) }
}

/// [`checked_page`] of a pointer whose segment the caller has already found (the C
/// `free`, through the segment map): the rest of the checks, without a second lookup.
///
/// # Safety
/// `segment` is a live segment (its header readable while this call runs), and `p` lies
/// after its start (as for the segment `ptr_segment(p)` finds).
#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn checked_page_in(
    p: *const u8,
    segment: *mut Segment,
) -> Result<*mut Page, NotInBlocks> {
    // SAFETY: the segment is live (caller).
    let seg = unsafe { &*segment };
    let idx = (p as usize - segment as usize) >> seg.page_shift;
    if idx >= seg.capacity || (cfg!(feature = "small") && idx < seg.first_page) {
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

/// Small geometry: a page entry does not store where its blocks start (4 bytes of every
/// slice's entry) nor its index; the layout of its segment, whose header holds the entry,
/// gives them.
#[cfg(feature = "small")]
impl Page {
    /// Index of this page (its entry) in its segment: from the entry's address.
    #[inline]
    pub(crate) fn segment_idx(&self) -> usize {
        segment_idx_of(self)
    }

    /// Address of the first block: `Segment::page_area(segment_idx).0`, read through the
    /// raw header pointer (no `&Segment` is made: the caller may hold `&mut` to the entry).
    #[inline]
    pub(crate) fn page_start(&self) -> *mut u8 {
        page_start_of(self)
    }
}

/// [`Page::segment_idx`] from the entry's address alone (no reference to the entry).
#[cfg(feature = "small")]
#[inline]
pub(crate) fn segment_idx_of(page: *const Page) -> usize {
    let segment = ptr_segment(page as *const u8) as usize;
    let first = segment + core::mem::offset_of!(Segment, pages);
    // SAFETY: an entry lies in the live header of its segment (see `page_start_of`), whose
    // `first_page` is fixed while it lives; the read makes no reference.
    let first_page = unsafe { (*(segment as *const Segment)).first_page };
    (page as usize - first) / core::mem::size_of::<Page>() + first_page
}

/// [`Page::page_start`] from the entry's address alone (no reference to the entry: a
/// thread that does not own the page may ask, e.g. `free::usable_size`).
#[cfg(feature = "small")]
#[inline]
pub(crate) fn page_start_of(page: *const Page) -> *mut u8 {
    let segment = ptr_segment(page as *const u8);
    let base = segment as usize;
    // SAFETY: a page entry (other than the `Page::EMPTY` sentinel, whose blocks are never
    // asked for) lies in the live header of its segment, which `ptr_segment` finds from
    // any address inside it; these fields are written when the header is and not
    // changed while the entry is in use; the reads make no reference.
    let (kind, page_shift, info_size) =
        unsafe { ((*segment).kind, (*segment).page_shift, (*segment).info_size) };
    let idx = segment_idx_of(page);
    if matches!(kind, SegmentKind::Small | SegmentKind::Medium) && idx != info_size >> page_shift {
        (base + (idx << page_shift)) as *mut u8
    } else {
        // the page in which the header ends, and the one page of a large or huge segment
        (base + info_size) as *mut u8
    }
}

impl Segment {
    /// Marks the header as a segment's at its (new) address.
    pub(crate) fn set_cookie(&mut self) {
        self.cookie = SEGMENT_COOKIE ^ (self as *const Segment as usize);
        #[cfg(not(feature = "std"))]
        note_segment_span(self as *const Segment as usize);
    }

    /// [`Segment::page_of`] without a reference to the header: every read is of a field
    /// that is fixed while the segment lives (the slice table; small geometry: the page
    /// shift, the first entry, a page's `span_offset` while it is in use), through the raw
    /// pointer, so that a thread that does not own the segment may ask while the owner
    /// writes the header's other fields (a `&Segment` would be a read of all of them: a
    /// data race under Rust's memory model, which Miri reports).
    ///
    /// # Safety
    /// `seg` is a live segment and `p` points into one of its pages (in use, when the
    /// calling thread does not own the segment).
    #[inline(always)]
    pub(crate) unsafe fn page_of_raw(seg: *const Segment, p: *const u8) -> *mut Page {
        // Default geometry: one load from the slice table, where `(p - seg) >> page_shift`
        // then a multiplication by the size of `Page` took four instructions more. The
        // slice is `p`'s offset into its `SEGMENT_SIZE`-aligned chunk: `p` lies in the
        // segment's first chunk, or exactly at its end (a huge block aligned to more than
        // a segment starts there: offset 0 then, page 0, its page).
        #[cfg(not(feature = "small"))]
        {
            let slice = (p as usize >> SMALL_PAGE_SHIFT) & (SLICES - 1);
            // SAFETY: the slice table is written when the header is (at creation or a
            // move) and fixed while the segment lives (caller); an array place indexed in
            // bounds (masked), no reference made.
            unsafe { (*seg).slice_pages[slice] }
        }
        #[cfg(feature = "small")]
        // Small geometry: a page spans several slices; the entry of a later slice says how
        // far back the page's own entry is (two more instructions).
        // SAFETY: `page_shift` and `first_page` are fixed while the segment lives; the
        // entry of `p`'s slice lies in the header (`p` is in one of its pages, caller), and
        // its `span_offset` is fixed while that page is in use (the owner changes it only
        // when it claims or releases the page) and never reaches before the page's own
        // entry.
        unsafe {
            let base = seg as usize;
            let idx = (p as usize - base) >> (*seg).page_shift;
            let entry = (base
                + core::mem::offset_of!(Segment, pages)
                + (idx - (*seg).first_page) * core::mem::size_of::<Page>())
                as *mut Page;
            entry.sub((*entry).span_offset as usize)
        }
    }

    /// The page containing block pointer `p`.
    ///
    /// # Safety
    /// `self` is a live segment and `p` points into one of its pages.
    #[inline(always)]
    pub(crate) unsafe fn page_of(&self, p: *const u8) -> *mut Page {
        // SAFETY: `self` is live and `p` in one of its pages (this function's contract),
        // what `page_of_raw` asks.
        let page = unsafe { Segment::page_of_raw(self, p) };
        #[cfg(not(feature = "small"))]
        debug_assert!(
            page == {
                let idx = (p as usize - self as *const Segment as usize) >> self.page_shift;
                // SAFETY: (debug check) the header holds `capacity` pages.
                unsafe { self.page(idx.min(self.capacity - 1)) }
            },
            "slice table out of date"
        );
        #[cfg(feature = "small")]
        debug_assert!(
            ((p as usize - self as *const Segment as usize) >> self.page_shift) < self.capacity
        );
        page
    }

    /// Writes [`Segment::slice_pages`] for the header at its (new) address, from
    /// `page_shift` and `capacity` (which must be set).
    #[cfg(not(feature = "small"))]
    pub(crate) fn fill_slice_pages(&mut self) {
        // Slice `s` belongs to page `s >> (page_shift - SMALL_PAGE_SHIFT)`; a slice past the
        // last page, which no block lies in, gets the last page, so every entry points into
        // the header. Filled a page's run of slices at a time (a huge segment is remapped
        // on every growth step of a large buffer: a per-slice shift and bound cost a
        // kernel's `Vec` growth ~15% more instructions).
        let last = self.capacity - 1;
        if last == 0 {
            // large and huge segments (whose `page_shift` may exceed the segment's size)
            // SAFETY: the header holds at least one page.
            let page = unsafe { self.page(0) };
            self.slice_pages.fill(page);
            return;
        }
        debug_assert!(self.page_shift >= SMALL_PAGE_SHIFT);
        let per_page = 1usize << (self.page_shift - SMALL_PAGE_SHIFT);
        // (the address of entry `i` is that of entry 0 plus `i` entries, as `page` computes;
        // taken before `slice_pages` is borrowed for writing)
        // SAFETY: the header holds at least one page.
        let first = unsafe { self.page(0) };
        for (idx, run) in self.slice_pages.chunks_mut(per_page).enumerate() {
            // `min(idx, last) < capacity`, the pages the header was sized for: an address
            // inside the header (only stored here, not dereferenced)
            run.fill(first.wrapping_add(idx.min(last)));
        }
    }

    /// Whether a page can still be claimed here (small and medium segments).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        #[cfg(feature = "small")]
        return self.slices_used != slice_mask(self.first_page, self.capacity);
        #[cfg(not(feature = "small"))]
        return self.used < self.usable_pages();
    }

    /// # Safety
    /// `idx < capacity`.
    #[inline(always)]
    pub(crate) unsafe fn page(&self, idx: usize) -> *mut Page {
        // The page table is written through the pointer this returns, and it runs past the
        // `Segment` struct (a trailing array sized at run time): a pointer derived from
        // `&self` would allow neither (it grants reads of `size_of::<Segment>()` bytes), so
        // the address is computed as an integer and cast back: the pointer takes the
        // provenance of the segment's memory, exposed when the segment was found or made
        // from its address (`ptr_segment`, the page source), which covers the whole header
        // (Miri checks this: scripts/miri.sh).
        let base = self as *const Segment as usize + core::mem::offset_of!(Segment, pages);
        // Small geometry: the header has no entries for the slices before `first_page`,
        // which it covers (see `first_entry`).
        #[cfg(feature = "small")]
        let idx = {
            debug_assert!(idx >= self.first_page, "entry {idx} before the first page");
            idx.wrapping_sub(self.first_page)
        };
        (base.wrapping_add(idx.wrapping_mul(core::mem::size_of::<Page>()))) as *mut Page
    }

    /// The first page that has an entry in the header: 0 (small geometry: `first_page`;
    /// a segment header that covers whole slices stores no entries for them, 32 bytes a
    /// slice on 32-bit targets).
    #[inline(always)]
    pub(crate) fn first_entry(&self) -> usize {
        if cfg!(feature = "small") {
            self.first_page
        } else {
            0
        }
    }

    pub(crate) fn is_valid_cookie(&self) -> bool {
        self.cookie == SEGMENT_COOKIE ^ (self as *const Segment as usize)
    }

    /// [`Segment::is_valid_cookie`] without a reference to the header: threads that do not
    /// own the segment check it while its owner writes page entries that lie inside the
    /// `Segment` struct (a `&Segment` would claim to read them: a data race, which Miri's
    /// `remote_frees_while_the_owner_allocates` reported on `free`'s debug check).
    ///
    /// # Safety
    /// `seg` points to readable memory of at least a `Segment` header's first words.
    #[inline(always)]
    pub(crate) unsafe fn cookie_valid_raw(seg: *const Segment) -> bool {
        // SAFETY: readable (caller); a read of the `cookie` field alone, which is written
        // only when the segment is made, moved or freed, never while blocks of it live.
        unsafe { (*seg).cookie == SEGMENT_COOKIE ^ (seg as usize) }
    }

    /// Pages that can hold blocks.
    #[inline]
    pub(crate) fn usable_pages(&self) -> usize {
        self.capacity - self.first_page
    }

    /// Small and medium segments hold several pages and sit in free queues.
    fn has_queue(&self) -> bool {
        matches!(self.kind, SegmentKind::Small | SegmentKind::Medium)
    }

    /// Start and size of page `idx`'s memory (page 0 excludes the header).
    pub(crate) fn page_area(&self, idx: usize) -> (*mut u8, usize) {
        // an address, cast back below: the blocks are written through these pointers, which
        // must not derive from `&self` (see `page`)
        let base = self as *const Segment as usize;
        if self.has_queue() {
            let psize = 1usize << self.page_shift;
            let start = base.wrapping_add(idx * psize);
            // the page in which the header ends (page 0 unless pages are smaller than the
            // header, as the small geometry's slices): it starts after the header; pages
            // before it are never used
            let header_page = self.info_size / psize;
            if idx == header_page {
                (
                    base.wrapping_add(self.info_size) as *mut u8,
                    (idx + 1) * psize - self.info_size,
                )
            } else {
                (start as *mut u8, psize)
            }
        } else {
            // (large and huge: the guard page at the segment's end is not the page's)
            (
                base.wrapping_add(self.info_size) as *mut u8,
                self.segment_size - self.info_size - self.guard,
            )
        }
    }

    /// Checks the segment invariants (debug builds).
    ///
    /// # Safety
    /// Called by the segment's owner.
    pub(crate) unsafe fn check(&self) {
        if !cfg!(any(debug_assertions, feature = "debug-mode")) {
            return;
        }
        assert!(self.is_valid_cookie(), "segment cookie");
        assert!(self.used <= self.usable_pages());
        let mut used = 0;
        for i in self.first_entry()..self.capacity {
            // SAFETY: i < capacity; the caller owns the segment, so no one writes its pages.
            let page = unsafe { &*self.page(i) };
            #[cfg(not(feature = "small"))]
            assert_eq!(
                self.slices_used & (1 << i) != 0,
                page.segment_in_use || i < self.first_page,
                "pages in use mask"
            );
            if page.segment_in_use {
                used += 1;
                assert!(
                    self.purge_mask & (1 << i) == 0,
                    "purge pending on a page in use"
                );
            }
        }
        assert_eq!(used, self.used, "segment used count");
        #[cfg(not(feature = "small"))]
        assert_eq!(
            !self.slices_used & !slice_mask(self.first_page, self.capacity),
            0,
            "pages the segment does not have count as in use"
        );
        let owner = self.owner.load(Ordering::Relaxed);
        assert_ne!(owner, NO_OWNER, "segment owned by no-owner token");
        if owner != ABANDONED {
            assert_eq!(
                self.in_free_queue,
                self.has_queue() && self.has_room(),
                "free queue membership"
            );
        }
    }
}

/// What an owner (a thread or CPU) keeps about its segments: the segment layer's whole
/// context. Its address is the owner token stored in the segments it owns, so it must not
/// move while it owns segments.
///
/// Invariants: `all` holds exactly the segments whose `owner` is this one's address
/// ([`SegmentsTld::owner`]), `count` of them;
/// `small_free`/`medium_free` hold those of them with `in_free_queue`.
pub(crate) struct SegmentsTld {
    small_free: List<Segment, FreeQueue>,
    medium_free: List<Segment, FreeQueue>,
    all: List<Segment, AllSegments>,
    count: usize,
    os: *const Os,
    /// Small geometry: the source failed to give a segment of this many slices since a
    /// segment was last given back or memory added (`SMALL_PAGES_PER_SEGMENT + 1`: no
    /// failure known), so a page that finds no room asks it only for shorter ones: out of
    /// memory costs one request, not one per segment length.
    #[cfg(feature = "small")]
    pub(crate) source_fails_from: usize,
    /// Small geometry: slices the next page of small blocks should span at least (set by
    /// the allocation path when a page of the class ran out, taken by the next page claim;
    /// 0: the class's shortest page).
    #[cfg(feature = "small")]
    pub(crate) span_grow: usize,
    /// The next huge segment is for a huge block that grows out of its region (set by
    /// `segment_alloc::huge_remap` when the block moves into a resident cached region,
    /// taken by the next huge segment, cleared by `realloc` after its allocation): it may
    /// take a cached region up to twice its size whole (see `Os::cache_take_resized`).
    pub(crate) huge_grows: bool,
}

impl SegmentsTld {
    pub(crate) const fn new(os: &'static Os) -> Self {
        SegmentsTld {
            small_free: List::new(),
            medium_free: List::new(),
            all: List::new(),
            count: 0,
            os,
            #[cfg(feature = "small")]
            source_fails_from: SMALL_PAGES_PER_SEGMENT + 1,
            #[cfg(feature = "small")]
            span_grow: 0,
            huge_grows: false,
        }
    }

    /// Small geometry: the source may give segments of any length again (memory was given
    /// back or added).
    #[cfg(feature = "small")]
    #[inline]
    pub(crate) fn source_grew(&mut self) {
        self.source_fails_from = SMALL_PAGES_PER_SEGMENT + 1;
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

    pub(crate) fn free_queue(
        &mut self,
        kind: SegmentKind,
    ) -> Option<&mut List<Segment, FreeQueue>> {
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
    pub(crate) unsafe fn free_queue_push(&mut self, s: *mut Segment) {
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
    pub(crate) unsafe fn free_queue_remove(&mut self, s: *mut Segment) {
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

    /// Adds `s` to the list of this owner's segments (its `owner` is the caller's
    /// business).
    ///
    /// # Safety
    /// `s` is live and in no list of all segments.
    pub(crate) unsafe fn link(&mut self, s: *mut Segment) {
        // SAFETY: `s` is live and in no list of kind `AllSegments` (the `# Safety` contract),
        // as `push_front` requires.
        unsafe { self.all.push_front(s) };
        self.count += 1;
    }

    /// # Safety
    /// `s` is in this owner's list of all segments.
    pub(crate) unsafe fn unlink(&mut self, s: *mut Segment) {
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
        // SAFETY: `s` is live and the caller popped it from the abandoned list (the `# Safety`
        // contract), so no other thread writes its header (remote frees only read `owner`,
        // atomically, and fields fixed at creation) and no other reference to it is live.
        let seg = unsafe { &*s };
        debug_assert_eq!(seg.owner.load(Ordering::Relaxed), ABANDONED);
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
        unsafe { (*s).owner.store(ABANDONED, Ordering::Release) };
    }

    /// Puts an owned small/medium segment with free pages into its free queue, if it is
    /// not there yet.
    ///
    /// # Safety
    /// `s` is a segment of this owner.
    pub(crate) unsafe fn requeue(&mut self, s: *mut Segment) {
        // SAFETY: `s` is a live segment of this owner (the `# Safety` contract): only the
        // calling thread writes its header, so reading it races with no one.
        let (queued, room) = unsafe { ((*s).in_free_queue, (*s).has_room()) };
        if !queued && room {
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
pub(crate) const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// The segment kind for blocks of `block_size`.
pub(crate) fn kind_for(block_size: usize) -> SegmentKind {
    // the small geometry's segments hold pages of every size up to large blocks, as runs
    // of slices
    if block_size <= SMALL_OBJ_SIZE_MAX
        || (cfg!(feature = "small") && block_size <= LARGE_OBJ_SIZE_MAX)
    {
        SegmentKind::Small
    } else if block_size <= MEDIUM_OBJ_SIZE_MAX {
        SegmentKind::Medium
    } else if block_size <= LARGE_OBJ_SIZE_MAX {
        SegmentKind::Large
    } else {
        SegmentKind::Huge
    }
}
