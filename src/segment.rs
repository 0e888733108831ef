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
//! the source, after a short stay in the domain's cache of regions (sources without
//! reserve, up to 64 MiB). A dying thread abandons its segments to the domain and another
//! thread reclaims them (`abandon`).

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::abandon::{try_reclaim_one, Reclaim, RECLAIM_MAX};
use crate::domain::Domain;
use crate::heap::{RawHeap, Tld};
use crate::page::Page;
use crate::size_class::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SegmentKind {
    Small,
    Medium,
    Large,
    Huge,
}

/// Segment header.
///
/// Invariants (checked by [`Segment::check`] in debug builds):
/// - `used` = pages with `segment_in_use`, `used <= capacity`;
/// - the segment is in its owner's free queue iff it is small/medium, owned, and
///   `used < capacity`;
/// - `thread_id == 0` iff the segment is abandoned (then `tld` is null);
/// - `purge_mask` bits are set only for pages not in use.
#[repr(C)]
pub(crate) struct Segment {
    /// Owner token (the owning `Tld`'s address); 0 when abandoned. Read by every `free`.
    pub thread_id: AtomicUsize,
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
    pub domain: *const Domain,
    /// The owning thread's data (null when abandoned).
    pub tld: *mut Tld,
    /// Links in the owner's free queue (small/medium segments with free pages).
    pub next: *mut Segment,
    pub prev: *mut Segment,
    pub in_free_queue: bool,
    /// Links in the owner's list of all its segments.
    pub all_next: *mut Segment,
    pub all_prev: *mut Segment,
    /// Link in the domain's abandoned list.
    pub abandoned_next: *mut Segment,
    /// Pages waiting to be purged, and when (domain time).
    pub purge_mask: u64,
    pub purge_expire: u64,
    /// Page metadata; really `capacity` entries (the header is sized for them).
    pub pages: [Page; 1],
}

const SEGMENT_COOKIE: usize = 0x5a4d_a110_c5e9_0d17;

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
    // SAFETY: the segment map says a live segment starts here (hosted), so its header is
    // readable; the cookie tells a segment header from other memory.
    if unsafe { (*segment).is_valid_cookie() } {
        Some(segment)
    } else {
        None
    }
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
        unsafe { (self.pages.as_ptr() as *mut Page).add(idx) }
    }

    pub(crate) fn is_valid_cookie(&self) -> bool {
        self.cookie == SEGMENT_COOKIE ^ (self as *const Segment as usize)
    }

    /// Size of page `idx`'s memory and its start, excluding the header for page 0.
    fn page_area(&self, idx: usize) -> (*mut u8, usize) {
        let base = self as *const Segment as *mut u8;
        match self.kind {
            SegmentKind::Small | SegmentKind::Medium => {
                let psize = 1usize << self.page_shift;
                let start = base.wrapping_add(idx * psize);
                if idx == 0 {
                    (start.wrapping_add(self.info_size), psize - self.info_size)
                } else {
                    (start, psize)
                }
            }
            SegmentKind::Large | SegmentKind::Huge => (
                base.wrapping_add(self.info_size),
                self.segment_size - self.info_size,
            ),
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
            // SAFETY: i < capacity.
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
        let small_or_medium = matches!(self.kind, SegmentKind::Small | SegmentKind::Medium);
        if !self.tld.is_null() {
            assert_eq!(
                self.in_free_queue,
                small_or_medium && self.used < self.capacity,
                "free queue membership"
            );
        }
    }
}

/// A doubly linked queue of segments (through `next`/`prev`).
pub(crate) struct SegmentQueue {
    pub first: *mut Segment,
    pub last: *mut Segment,
}

impl SegmentQueue {
    pub(crate) const fn new() -> Self {
        SegmentQueue {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
        }
    }

    /// # Safety
    /// `s` is live and in no queue.
    pub(crate) unsafe fn push(&mut self, s: *mut Segment) {
        // SAFETY: caller guarantees `s` is live and unlinked.
        unsafe {
            (*s).next = ptr::null_mut();
            (*s).prev = self.last;
            if self.last.is_null() {
                self.first = s;
            } else {
                (*self.last).next = s;
            }
            self.last = s;
            (*s).in_free_queue = true;
        }
    }

    /// # Safety
    /// `s` is in this queue.
    pub(crate) unsafe fn remove(&mut self, s: *mut Segment) {
        // SAFETY: `s` and its neighbours are live members of this queue.
        unsafe {
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.first = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                (*next).prev = prev;
            }
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).in_free_queue = false;
        }
    }
}

/// What a thread keeps about its segments.
pub(crate) struct SegmentsTld {
    /// Small and medium segments with free pages.
    pub small_free: SegmentQueue,
    pub medium_free: SegmentQueue,
    /// All segments owned by the thread.
    pub all: *mut Segment,
    pub count: usize,
}

impl SegmentsTld {
    pub(crate) const fn new() -> Self {
        SegmentsTld {
            small_free: SegmentQueue::new(),
            medium_free: SegmentQueue::new(),
            all: ptr::null_mut(),
            count: 0,
        }
    }

    pub(crate) fn queue_for(&mut self, kind: SegmentKind) -> Option<&mut SegmentQueue> {
        match kind {
            SegmentKind::Small => Some(&mut self.small_free),
            SegmentKind::Medium => Some(&mut self.medium_free),
            _ => None,
        }
    }

    /// # Safety
    /// `s` is live, owned by this thread, and in no list.
    pub(crate) unsafe fn link(&mut self, s: *mut Segment) {
        // SAFETY: as the caller guarantees.
        unsafe {
            (*s).all_prev = ptr::null_mut();
            (*s).all_next = self.all;
            if !self.all.is_null() {
                (*self.all).all_prev = s;
            }
        }
        self.all = s;
        self.count += 1;
    }

    /// # Safety
    /// `s` is in the list of all segments.
    pub(crate) unsafe fn unlink(&mut self, s: *mut Segment) {
        // SAFETY: as the caller guarantees.
        unsafe {
            let (prev, next) = ((*s).all_prev, (*s).all_next);
            if prev.is_null() {
                self.all = next;
            } else {
                (*prev).all_next = next;
            }
            if !next.is_null() {
                (*next).all_prev = prev;
            }
            (*s).all_next = ptr::null_mut();
            (*s).all_prev = ptr::null_mut();
        }
        self.count -= 1;
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

/// Allocates a segment from the domain's source and links it to `tld`.
/// For huge segments, `huge_size` is the block size and `huge_align` its alignment.
///
/// # Safety
/// `tld` is the calling thread's data.
unsafe fn segment_alloc(
    tld: &mut Tld,
    kind: SegmentKind,
    huge_size: usize,
    huge_align: usize,
) -> *mut Segment {
    let domain = tld.domain();
    let cfg = domain.config();
    let os_page = cfg.page_size.max(4096);
    let (capacity, page_shift) = match kind {
        SegmentKind::Small => (SMALL_PAGES_PER_SEGMENT, SMALL_PAGE_SHIFT),
        SegmentKind::Medium => (MEDIUM_PAGES_PER_SEGMENT, MEDIUM_PAGE_SHIFT),
        SegmentKind::Large | SegmentKind::Huge => (1, usize::BITS as usize - 1),
    };
    let header = size_of::<Segment>() + (capacity - 1) * size_of::<Page>();
    let mut info_size = align_up(header, os_page);
    let mut front = 0;
    let mut region_align = SEGMENT_SIZE;
    let segment_size = if kind == SegmentKind::Huge {
        if huge_align > SEGMENT_SIZE {
            // the block sits exactly one segment size into the segment (found through
            // `p - 1`), and the segment starts `align - SEGMENT_SIZE` into the region
            front = huge_align - SEGMENT_SIZE;
            region_align = huge_align;
            info_size = SEGMENT_SIZE;
        } else if huge_align > os_page {
            info_size = align_up(info_size, huge_align);
        }
        match info_size.checked_add(huge_size) {
            Some(s) if s <= isize::MAX as usize / 2 => {
                align_up(s, cfg.alloc_granularity.max(os_page))
            }
            _ => return ptr::null_mut(),
        }
    } else {
        SEGMENT_SIZE
    };
    let mut segment_size = segment_size;
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
        domain.cache_take(region_size, max)
    } else {
        None
    };
    let region = if let Some(c) = cached {
        if kind == SegmentKind::Huge {
            segment_size = c.size; // the block gets the whole region
        }
        // the region stays counted as reserved; its committed bytes are re-counted below
        domain.stats.committed.sub(c.committed as i64);
        domain.stats.reserved.sub(c.size as i64);
        crate::source::Region {
            // SAFETY: cached regions came from the source, never null.
            ptr: unsafe { NonNull::new_unchecked(c.ptr) },
            size: c.size,
            committed: true,
            zeroed: false,
        }
    } else {
        if !domain.reserve_within_limit(region_size) {
            // cached regions count against the limit: give them back and try again
            domain.cache_collect(true);
            if !domain.reserve_within_limit(region_size) {
                return ptr::null_mut();
            }
        }
        // SAFETY: size is a non-zero multiple of the allocation granularity, align a power
        // of two at least the OS page.
        let region = unsafe { domain.source.alloc(region_size, region_align, commit_all) };
        let Some(region) = region else {
            domain.unreserve(region_size);
            return ptr::null_mut();
        };
        region
    };
    let seg_ptr = region.ptr.as_ptr().wrapping_add(front);
    debug_assert_eq!(seg_ptr as usize & SEGMENT_MASK, 0);
    // A huge block (over 2 MiB) is touched in big pieces: large OS pages save most of its
    // page faults. Other segments keep small OS pages, so that touching a few blocks does
    // not make 2 MiB resident (measured: large pages too raised the peak RSS of mstress
    // from 25 to 82 MiB). A cached region may change its use, so it is told either way.
    let huge = kind == SegmentKind::Huge;
    if huge || cached.is_some() {
        // SAFETY: the segment range lies inside the region just obtained.
        unsafe {
            domain
                .source
                .advise_large_pages(NonNull::new_unchecked(seg_ptr), segment_size, huge)
        };
    }
    let mut zeroed = region.zeroed;
    let committed = region.committed;
    if !committed {
        // commit the header (and for huge segments, everything)
        let n = if commit_all { segment_size } else { info_size };
        // SAFETY: the range lies at the start of the live region just allocated.
        match unsafe { domain.source.commit(NonNull::new_unchecked(seg_ptr), n) } {
            Ok(z) => zeroed = z,
            Err(_) => {
                // SAFETY: giving back the region just allocated, unused.
                unsafe { domain.source.free(region.ptr, region.size) };
                domain.unreserve(region_size);
                return ptr::null_mut();
            }
        }
        domain.stats.committed.add(n as i64);
    } else {
        domain.stats.committed.add(segment_size as i64);
    }
    let segment = seg_ptr as *mut Segment;
    // SAFETY: the header range is committed and ours; we initialise every field.
    unsafe {
        if !zeroed {
            ptr::write_bytes(seg_ptr, 0, header);
        }
        ptr::write(
            segment,
            Segment {
                thread_id: AtomicUsize::new(tld.token()),
                page_shift,
                cookie: SEGMENT_COOKIE ^ seg_ptr as usize,
                kind,
                capacity,
                used: 0,
                segment_size,
                info_size,
                region: region.ptr.as_ptr(),
                region_size: region.size,
                domain,
                tld,
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                in_free_queue: false,
                all_next: ptr::null_mut(),
                all_prev: ptr::null_mut(),
                abandoned_next: ptr::null_mut(),
                purge_mask: 0,
                purge_expire: 0,
                pages: [Page::EMPTY],
            },
        );
        for i in 0..capacity {
            let page = (*segment).page(i);
            ptr::write(page, Page::EMPTY);
            let (start, _) = (*segment).page_area(i);
            (*page).segment_idx = i as u8;
            (*page).page_start = start;
            (*page).is_committed = commit_all || committed;
            (*page).is_zero_init = zeroed;
        }
        tld.segments.link(segment);
        if let Some(q) = tld.segments.queue_for(kind) {
            q.push(segment);
        }
    }
    #[cfg(feature = "std")]
    crate::segment_map::set(seg_ptr as usize, true);
    domain.stats.segments.add(1);
    domain.stats.reserved.add(region.size as i64);
    segment
}

/// Segment regions up to this size are cached for reuse when they empty; bigger ones go
/// back to the source at once (the faults of re-touching them dwarf the source calls).
const CACHE_SIZE_MAX: usize = 16 * SEGMENT_SIZE;

/// Gives an empty segment back to the source (or to the domain's cache of regions).
///
/// # Safety
/// `segment` is owned by `tld` (or by nobody: abandoned and popped by the caller, then
/// `tld` is the caller's), has no page in use, and nothing refers to it any more.
pub(crate) unsafe fn segment_free(segment: *mut Segment, tld: &mut Tld) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert_eq!((*segment).used, 0);
        let domain = &*(*segment).domain;
        if (*segment).in_free_queue {
            if let Some(q) = tld.segments.queue_for((*segment).kind) {
                q.remove(segment);
            }
        }
        if !(*segment).tld.is_null() {
            tld.segments.unlink(segment);
        }
        // committed accounting: pages decommitted (needing recommit) were subtracted
        let mut committed = (*segment).info_size;
        for i in 0..(*segment).capacity {
            let page = &*(*segment).page(i);
            if page.is_committed {
                committed += (*segment).page_area(i).1;
            } else {
                committed += page.partial_commit;
            }
        }
        if matches!((*segment).kind, SegmentKind::Large | SegmentKind::Huge) {
            committed = (*segment).segment_size.min(committed);
        }
        domain.stats.segments.sub(1);
        let (region, size) = ((*segment).region, (*segment).region_size);
        (*segment).cookie = 0;
        #[cfg(feature = "std")]
        crate::segment_map::set(segment as usize, false);
        if !domain.config().has_reserve
            && region == segment as *mut u8
            && size <= CACHE_SIZE_MAX
            && domain.purge_delay() >= 0
        {
            // keep it a while: the next segment reuses it without faulting memory in
            domain.cache_put(region, size, committed);
            return;
        }
        domain.stats.committed.sub(committed as i64);
        domain.stats.reserved.sub(size as i64);
        domain.source.free(NonNull::new_unchecked(region), size);
        domain.unreserve(size);
    }
}

/// Claims a free page of `segment` for use.
///
/// # Safety
/// `segment` is owned by `tld` and has a page that is not in use.
unsafe fn segment_page_claim(segment: *mut Segment, tld: &mut Tld) -> *mut Page {
    // SAFETY: as the caller guarantees; the page array has `capacity` entries.
    unsafe {
        let seg = &mut *segment;
        let mut page = ptr::null_mut();
        for i in 0..seg.capacity {
            let p = seg.page(i);
            if !(*p).segment_in_use {
                page = p;
                break;
            }
        }
        debug_assert!(!page.is_null(), "segment in free queue without a free page");
        if page.is_null() {
            return page;
        }
        let idx = (*page).segment_idx as usize;
        let lazy = seg.kind == SegmentKind::Large;
        if !(*page).is_committed && !lazy {
            let domain = &*seg.domain;
            let (start, size) = seg.page_area(idx);
            match domain.source.commit(NonNull::new_unchecked(start), size) {
                Ok(zero) => {
                    (*page).is_committed = true;
                    (*page).is_zero_init = zero;
                    domain.stats.committed.add(size as i64);
                }
                Err(_) => return ptr::null_mut(),
            }
        }
        seg.purge_mask &= !(1u64 << idx);
        (*page).segment_in_use = true;
        seg.used += 1;
        if seg.used == seg.capacity && seg.in_free_queue {
            if let Some(q) = tld.segments.queue_for(seg.kind) {
                q.remove(segment);
            }
        }
        page
    }
}

/// Claims the first page of a segment just allocated; frees the segment when that fails
/// (out of memory committing the page), so that it does not linger empty.
///
/// # Safety
/// `s` is a fresh segment of `tld` with no page in use.
unsafe fn claim_fresh(s: *mut Segment, tld: &mut Tld) -> *mut Page {
    // SAFETY: as the caller guarantees.
    unsafe {
        let page = segment_page_claim(s, tld);
        if page.is_null() && (*s).used == 0 {
            segment_free(s, tld);
        }
        page
    }
}

/// Extends the page's free list, committing the memory of the new blocks first when the
/// page is committed lazily (large pages on a source with reserve). False when out of
/// memory.
///
/// # Safety
/// The caller owns `page`; its `free` list is empty and `capacity < reserved`.
pub(crate) unsafe fn page_extend(page: *mut Page) -> bool {
    // SAFETY: as the caller guarantees; the range committed lies in the page's area.
    unsafe {
        let p = &mut *page;
        if !p.is_committed {
            let seg = &*ptr_segment(p.page_start);
            let domain = &*seg.domain;
            let os_page = domain.config().page_size.max(4096);
            let (start, area) = seg.page_area(p.segment_idx as usize);
            let blocks_end = (p.capacity as usize + p.extend_count()) * p.block_size;
            let need = ((blocks_end + os_page - 1) & !(os_page - 1)).min(area);
            if need > p.partial_commit {
                let from = start.add(p.partial_commit);
                match domain
                    .source
                    .commit(NonNull::new_unchecked(from), need - p.partial_commit)
                {
                    Ok(zero) => {
                        if !zero {
                            p.is_zero_init = false;
                        }
                        domain.stats.committed.add((need - p.partial_commit) as i64);
                        p.partial_commit = need;
                    }
                    Err(_) => return false,
                }
            }
            if p.partial_commit == area {
                p.is_committed = true;
                p.partial_commit = 0;
            }
        }
        p.extend_free();
        true
    }
}

/// Finds or makes a page for blocks of `block_size` and hands it to `heap`, initialised.
/// `huge = Some(align)` asks for a huge segment with its block aligned to `align`.
/// Null when out of memory.
///
/// # Safety
/// `heap` belongs to the calling thread, whose data is `tld`.
pub(crate) unsafe fn segment_page_alloc(
    heap: *mut RawHeap,
    tld: &mut Tld,
    block_size: usize,
    huge: Option<usize>,
) -> *mut Page {
    let kind = if huge.is_some() {
        SegmentKind::Huge
    } else {
        kind_for(block_size)
    };
    let huge_align = huge.unwrap_or(0);
    // SAFETY: the caller owns `heap` and `tld`; all segments reached are owned by `tld`.
    unsafe {
        let page = match kind {
            SegmentKind::Small | SegmentKind::Medium => {
                let mut reclaimed = 0;
                loop {
                    let first = tld
                        .segments
                        .queue_for(kind)
                        .map_or(ptr::null_mut(), |q| q.first);
                    if !first.is_null() {
                        break segment_page_claim(first, tld);
                    }
                    // before asking the source, take over segments of exited threads
                    // (segments that turn out empty are freed and do not count)
                    if reclaimed < RECLAIM_MAX {
                        match try_reclaim_one(tld.heap_backing, tld) {
                            Reclaim::Kept => {
                                reclaimed += 1;
                                continue;
                            }
                            Reclaim::Freed => continue,
                            Reclaim::None => {}
                        }
                    }
                    let s = segment_alloc(tld, kind, 0, 0);
                    if s.is_null() {
                        break ptr::null_mut();
                    }
                    break claim_fresh(s, tld);
                }
            }
            SegmentKind::Large | SegmentKind::Huge => {
                // no reclaimed segment serves a new large/huge page, but taking a few
                // over frees the emptied ones
                let mut reclaimed = 0;
                while reclaimed < RECLAIM_MAX {
                    match try_reclaim_one(tld.heap_backing, tld) {
                        Reclaim::Kept => reclaimed += 1,
                        Reclaim::Freed => {}
                        Reclaim::None => break,
                    }
                }
                let s = segment_alloc(tld, kind, block_size, huge_align);
                if s.is_null() {
                    ptr::null_mut()
                } else {
                    claim_fresh(s, tld)
                }
            }
        };
        if page.is_null() {
            return page;
        }
        let segment = ptr_segment((*page).page_start);
        let (_, psize) = (*segment).page_area((*page).segment_idx as usize);
        let bsize = if kind == SegmentKind::Huge {
            psize
        } else {
            block_size
        };
        (*page).init(heap, bsize, psize);
        if !page_extend(page) {
            // out of memory committing its first blocks: give the page back
            (*page).xheap.store(ptr::null_mut(), Ordering::Relaxed);
            segment_page_free_unused(page, tld);
            return ptr::null_mut();
        }
        let domain = tld.domain();
        domain.stats.pages.add(1);
        if kind == SegmentKind::Huge {
            domain.stats.huge.add(bsize as i64);
        }
        page
    }
}

/// Takes a page that is given back to its segment out of the statistics.
///
/// # Safety
/// `page` is a page of `seg` in use, all of its blocks free.
pub(crate) unsafe fn page_release_stats(page: *mut Page, seg: &Segment) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let domain = &*seg.domain;
        domain.stats.pages.sub(1);
        // blocks counted as allocated at the last synchronisation are gone now
        domain
            .stats
            .allocated
            .sub((*page).stat_used as i64 * (*page).block_size as i64);
        (*page).stat_used = 0;
        if seg.kind == SegmentKind::Huge {
            domain.stats.huge.sub((*page).block_size as i64);
        }
    }
}

/// Returns a page whose blocks are all free to its segment; frees the segment if it
/// becomes empty, else schedules the page's purge.
///
/// # Safety
/// `page` is in no queue, owned by the thread of `tld`, and all its blocks are free.
pub(crate) unsafe fn segment_page_free(page: *mut Page, tld: &mut Tld) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let segment = ptr_segment((*page).page_start);
        let seg = &mut *segment;
        let domain = &*seg.domain;
        page_release_stats(page, seg);
        let keep = (
            (*page).page_start,
            (*page).segment_idx,
            (*page).is_committed,
            (*page).partial_commit,
        );
        ptr::write(page, Page::EMPTY);
        (*page).page_start = keep.0;
        (*page).segment_idx = keep.1;
        (*page).is_committed = keep.2;
        (*page).partial_commit = keep.3;
        (*page).is_zero_init = false;
        seg.used -= 1;
        if seg.used == 0 {
            segment_free(segment, tld);
            return;
        }
        // schedule the purge of the page's memory
        let idx = keep.1 as usize;
        let delay = domain.purge_delay();
        if delay >= 0 && (keep.2 || keep.3 > 0) {
            seg.purge_mask |= 1u64 << idx;
            seg.purge_expire = domain.now().saturating_add(delay as u64);
            if delay == 0 {
                segment_purge(segment, true);
            }
        }
        if !seg.in_free_queue {
            if let Some(q) = tld.segments.queue_for(seg.kind) {
                q.push(segment);
            }
        }
    }
}

/// Gives back a page that was claimed but could not be initialised (no blocks).
///
/// # Safety
/// `page` is in use, in no queue, with no blocks handed out, owned by `tld`'s thread.
unsafe fn segment_page_free_unused(page: *mut Page, tld: &mut Tld) {
    // SAFETY: as the caller guarantees; counted in `pages` only once initialised, so
    // balance the subtraction that `segment_page_free` makes.
    unsafe {
        let seg = &*ptr_segment((*page).page_start);
        (*seg.domain).stats.pages.add(1);
        if seg.kind == SegmentKind::Huge {
            (*seg.domain).stats.huge.add((*page).block_size as i64);
        }
        segment_page_free(page, tld);
    }
}

/// Purges the pages in the segment's purge mask (if their delay expired, or `force`).
///
/// # Safety
/// The caller owns the segment.
pub(crate) unsafe fn segment_purge(segment: *mut Segment, force: bool) {
    // SAFETY: as the caller guarantees; the purged pages are not in use.
    unsafe {
        let seg = &mut *segment;
        if seg.purge_mask == 0 {
            return;
        }
        let domain = &*seg.domain;
        if !force && domain.now() < seg.purge_expire {
            return;
        }
        let cfg = domain.config();
        let mut mask = seg.purge_mask;
        while mask != 0 {
            let idx = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let page = &mut *seg.page(idx);
            debug_assert!(!page.segment_in_use);
            let (start, area) = seg.page_area(idx);
            let size = if page.is_committed {
                area
            } else {
                page.partial_commit
            };
            if size == 0 {
                continue;
            }
            let needs_recommit = domain.source.decommit(NonNull::new_unchecked(start), size);
            if needs_recommit {
                page.is_committed = false;
                page.partial_commit = 0;
                domain.stats.committed.sub(size as i64);
            } else if cfg.decommit_zeroes {
                page.is_zero_init = true;
            }
            domain
                .stats
                .purged
                .fetch_add(size as i64, Ordering::Relaxed);
        }
        seg.purge_mask = 0;
    }
}

/// Purges every segment of the thread whose purge delay expired (all with `force`).
///
/// # Safety
/// `tld` is the calling thread's data.
pub(crate) unsafe fn segments_purge(tld: &mut Tld, force: bool) {
    let mut s = tld.segments.all;
    while !s.is_null() {
        // SAFETY: `s` is in the owner's list, so live and owned.
        unsafe {
            segment_purge(s, force);
            s = (*s).all_next;
        }
    }
}

/// Resizes the huge block of `page` in place or by moving its segment with the source's
/// `remap` (no copy), so that its block holds `new_size` bytes. Returns the new block
/// address, or null when the source cannot (the block is then untouched).
///
/// # Safety
/// `page` is the page of a huge segment owned by the calling thread (data `tld`), whose
/// one block is live and owned by the caller; `heap` is the page's heap, and the page
/// sits in its `BIN_HUGE` queue.
pub(crate) unsafe fn huge_remap(
    heap: *mut RawHeap,
    page: *mut Page,
    tld: &mut Tld,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: as the caller guarantees; the segment header moves with the segment, so
    // every link into it (the heap queue, the thread's segment list, the segment map) is
    // undone before and redone after.
    unsafe {
        let segment = ptr_segment((*page).page_start);
        let seg = &mut *segment;
        let domain = &*seg.domain;
        if seg.region != segment as *mut u8 {
            return ptr::null_mut(); // alignment front part: keep it simple, copy instead
        }
        let cfg = domain.config();
        let gran = cfg.alloc_granularity.max(cfg.page_size).max(4096);
        let Some(want) = seg.info_size.checked_add(new_size) else {
            return ptr::null_mut();
        };
        let new_seg_size = (want + gran - 1) & !(gran - 1);
        let old_seg_size = seg.segment_size;
        let old_region_size = seg.region_size;
        if new_seg_size > old_region_size
            && !domain.reserve_within_limit(new_seg_size - old_region_size)
        {
            return ptr::null_mut();
        }
        (*heap).huge_queue_remove(page);
        tld.segments.unlink(segment);
        #[cfg(feature = "std")]
        crate::segment_map::set(segment as usize, false);
        let moved = domain.source.remap(
            NonNull::new_unchecked(segment as *mut u8),
            old_region_size,
            new_seg_size,
            SEGMENT_SIZE,
        );
        let (new_seg, region_size) = match moved {
            Some(r) => (r.ptr.as_ptr() as *mut Segment, r.size),
            None => {
                if new_seg_size > old_region_size {
                    domain.unreserve(new_seg_size - old_region_size);
                }
                (segment, old_region_size)
            }
        };
        let seg = &mut *new_seg;
        let page = seg.page(0);
        if moved.is_some() {
            if region_size < old_region_size {
                domain.unreserve(old_region_size - region_size);
            }
            seg.cookie = SEGMENT_COOKIE ^ new_seg as usize;
            seg.region = new_seg as *mut u8;
            seg.region_size = region_size;
            seg.segment_size = new_seg_size;
            let old_bsize = (*page).block_size;
            let (start, psize) = seg.page_area(0);
            (*page).page_start = start;
            (*page).block_size = psize;
            let delta = psize as i64 - old_bsize as i64;
            domain.stats.huge.add(delta);
            domain.stats.allocated.add(delta * (*page).stat_used as i64);
            domain
                .stats
                .reserved
                .add(region_size as i64 - old_region_size as i64);
            domain
                .stats
                .committed
                .add(new_seg_size as i64 - old_seg_size as i64);
        }
        #[cfg(feature = "std")]
        crate::segment_map::set(new_seg as usize, true);
        tld.segments.link(new_seg);
        (*heap).huge_queue_push(page);
        if moved.is_some() {
            (*page).page_start
        } else {
            ptr::null_mut()
        }
    }
}
