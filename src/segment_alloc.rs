//! Segments and their pages, from the source and back: allocating and freeing segments
//! (through [`Os`], which may cache their regions a while), claiming pages for an owner
//! ([`page_alloc`]) and taking them back ([`page_free_in`]), committing page memory as it is
//! needed, purging (decommitting or resetting) it a short delay after a page empties, and
//! moving huge segments with the source's `remap`.
//!
//! Like the rest of the segment layer it knows no heap: it works for the owner that a
//! [`SegmentsTld`] describes.

use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::list::Links;
use crate::os::{Os, HUGE_SPARE_MAX};
use crate::page::Page;
use crate::segment::{
    align_up, kind_for, ptr_segment, Segment, SegmentKind, SegmentsTld, ABANDONED,
};
use crate::size_class::*;
use crate::sync::{AtomicUsize, Ordering};

/// Segment regions up to this size are cached for reuse when they empty; bigger ones go
/// back to the source at once (the faults of re-touching them dwarf the source calls).
/// (None in the small geometry: its sources are plain memory, with no faults to save, and
/// a cached region is memory that other segments cannot get.)
const CACHE_SIZE_MAX: usize = 16 * SEGMENT_SIZE;
const CACHE_SEGMENTS: bool = !cfg!(feature = "small");
/// The large OS page (transparent huge page) of x86_64 and of aarch64 with 4 KiB pages:
/// cached regions of huge blocks are resized to multiples of it, so that a resize does not
/// split one (a split page faults in again 4 KiB at a time).
const LARGE_OS_PAGE: usize = 2 << 20;

/// A huge segment over a source that grows by remap reserves address space for this many
/// times its size (at least [`HUGE_RESERVE_MIN`]), committing its block's size only: its
/// block grows in place into it (see `segment_alloc_sized`).
const HUGE_GROWTH_RESERVE: usize = 8;
/// The least address space a huge segment reserves over a source that grows by remap: a
/// buffer that moved into a huge segment (from the largest medium size on, see
/// `alloc::realloc`) then grows in place to 16 MiB (32 MiB of address space for a 4 MiB
/// block, and so on).
const HUGE_RESERVE_MIN: usize = 16 << 20;
/// A huge segment with room reserved ahead commits (and its block grows) in steps of this
/// many bytes: the frames source keeps its window in 64 KiB granules and skips the pages of
/// a granule mapped whole at once (one bit), where a granule mapped in parts costs a page
/// table walk per page at every commit that touches it (~2,000 instructions a step).
const HUGE_COMMIT_STEP: usize = 64 << 10;

/// The most a huge block growing in its reserved room commits ahead of its new size (see
/// `huge_remap`): physical memory a growing buffer may hold unused, for fewer commits.
const HUGE_AHEAD_MAX: usize = 2 << 20;

/// The spare huge region (`Os::huge_spare`): the region of the last emptied huge segment,
/// kept with its header and its committed memory for the next huge block of any heap of
/// the allocator. Only over a source that reserves and grows by remap (a kernel's frames
/// source): a buffer grown to megabytes, dropped and grown again (a `Vec` per request)
/// then maps, unmaps and asks the source for nothing. Bounded: one per allocator, at most
/// `HUGE_SPARE_MAX` committed; it goes back to the source once no block used its memory
/// for a purge delay (any heap's slow path looks), with any heap's forced collection
/// (which an allocation that finds no memory makes before it fails), and when the domain
/// gives its memory back. While parked, its header is the emptied segment's (cookie
/// cleared: no pointer finds it), its `purge_expire` the time it goes back; whoever swaps
/// it out of `Os::huge_spare` owns it.
///
/// The most committed memory the spare holds is its limit, [`HUGE_SPARE_MAX`] by default
/// (16 MiB: a buffer grown to 8 MiB and its room ahead, `HUGE_AHEAD_MAX`, fit): an emptied
/// huge segment with more goes back to the source at once. A kernel with little RAM sets
/// less (`Domain::set_spare_limit`): a block that takes the spare keeps its committed
/// memory (for its growth) a purge delay long, in its heap's segment, where no other CPU's
/// heap can get it back.
const _: () = assert!(HUGE_SPARE_MAX >= 2 * HUGE_AHEAD_MAX);

/// What the size of a huge segment is rounded up to: the allocation granularity; over a
/// source of OS memory without reserve (`mmap`: memory faults in on first touch, and a
/// purge makes it read as zero), a large OS page, so that a huge segment (advised for
/// large OS pages) ends where one does. (Not over plain memory, a `RegionSource`, where
/// the rounding would be memory taken from the region for nothing.)
///
/// A huge block's header comes first, so a segment of exactly its block's size ends
/// 4 KiB into a large OS page; touching the block's last bytes faults that page in
/// 4 KiB at a time, and the kernel then keeps its page table: when the block grows (a
/// `Vec` doubling into a remapped segment) or its region is reused, the rest of that
/// 2 MiB faults in a 4 KiB page at a time too, 511 faults instead of one (large-realloc:
/// ~9,000 of its ~35,000 page faults). The rounding costs no memory until it is touched.
fn huge_grain(cfg: crate::source::SourceConfig) -> usize {
    let gran = cfg.alloc_granularity.max(cfg.page_size);
    if CACHE_SEGMENTS && !cfg.has_reserve && cfg.decommit_zeroes {
        gran.max(LARGE_OS_PAGE)
    } else {
        gran
    }
}

/// Allocates a segment for `ctx`'s owner. For huge segments, `huge_size` is the block
/// size and `huge_align` its alignment. Null when out of memory.
fn segment_alloc(
    ctx: &mut SegmentsTld,
    kind: SegmentKind,
    huge_size: usize,
    huge_align: usize,
) -> *mut Segment {
    segment_alloc_sized(ctx, kind, huge_size, huge_align, SMALL_PAGES_PER_SEGMENT)
}

/// As `segment_alloc`; a segment of small pages has `small_pages` of them (fewer than a
/// whole segment's only in the small geometry, where a heap's last segment may be short).
fn segment_alloc_sized(
    ctx: &mut SegmentsTld,
    kind: SegmentKind,
    huge_size: usize,
    huge_align: usize,
    small_pages: usize,
) -> *mut Segment {
    // The owner's spare huge region (its last emptied huge segment, its header kept and
    // committed as far as it was), when the block fits in it: no `alloc`, no `commit` up to
    // what it holds committed (the block grows into that room without committing,
    // `huge_grow_committed`), and the header is written only where it changes. (Its room
    // ahead may be less than a fresh reservation's: growth beyond it remaps.) A spare
    // exists only over a source that reserves and grows by remap, without guard pages;
    // its block starts after its header, at a page boundary: for alignments up to a page.
    if kind == SegmentKind::Huge
        && huge_align <= MIN_OS_PAGE
        && !ctx.os().huge_spare.load(Ordering::Relaxed).is_null()
    {
        let spare = huge_spare_take(ctx.os());
        if !spare.is_null() {
            // SAFETY: a spare taken is ours alone, and starts with the header of the
            // segment it was (see `HUGE_SPARE_MAX`); `info_size` is fixed in it.
            let (info_size, size) = unsafe { ((*spare).info_size, (*spare).region_size) };
            let segment_size = info_size
                .checked_add(huge_size)
                .map(|s| align_up(s, HUGE_COMMIT_STEP));
            #[cfg(feature = "secure")]
            let segment_size = segment_size.filter(|_| ctx.os().guard_size() == 0);
            match segment_size.filter(|&s| s <= size) {
                Some(segment_size) => {
                    // SAFETY: the spare is ours and holds `segment_size` bytes; a huge
                    // segment without front part or guard pages, its block after the
                    // spare's header.
                    let s = unsafe { huge_spare_revive(ctx, spare, segment_size) };
                    if !s.is_null() {
                        return s;
                    }
                }
                // not for this request: it stays for another
                // SAFETY: taken just above, unchanged.
                None => unsafe { huge_spare_put(ctx.os(), spare) },
            }
        }
    }
    let os = ctx.os();
    let cfg = os.config();
    let os_page = os.page_size();
    let (capacity, page_shift) = match kind {
        SegmentKind::Small => (small_pages, SMALL_PAGE_SHIFT),
        SegmentKind::Medium => (MEDIUM_PAGES_PER_SEGMENT, MEDIUM_PAGE_SHIFT),
        SegmentKind::Large | SegmentKind::Huge => (1, usize::BITS as usize - 1),
    };
    let header = size_of::<Segment>() + capacity * size_of::<Page>();
    // secure mode: a guard page ends the header, and one ends large and huge segments
    // (see `Segment::guard`)
    #[cfg(feature = "secure")]
    let guard = if cfg!(feature = "small") {
        0
    } else {
        os.guard_size()
    };
    #[cfg(not(feature = "secure"))]
    let guard = 0;
    let mut info_size = align_up(header, os_page) + guard;
    // The page in which the header ends (page 0, unless pages are smaller than the header)
    // is shrunk by it; when that leaves it no room for a block of its largest size class
    // (a quarter page), it is not used either. (Small geometry: pages are runs of slices
    // and a claim checks that its run holds a block, so the rest of the header's slice
    // serves whenever it holds a few words.)
    let least_rest = if cfg!(feature = "small") && kind == SegmentKind::Small {
        8 * WORD
    } else {
        (1usize << page_shift) / 4
    };
    let first_page_of = |info_size: usize| match kind {
        SegmentKind::Small | SegmentKind::Medium => {
            let psize = 1usize << page_shift;
            let header_page = info_size / psize;
            if (header_page + 1) * psize - info_size < least_rest {
                header_page + 1
            } else {
                header_page
            }
        }
        _ => 0,
    };
    let first_page = first_page_of(info_size);
    // Small geometry: no entries for the slices that the header covers (`Segment::page`):
    // a header without them that still covers as many slices is the header.
    #[cfg(feature = "small")]
    if first_page > 0 {
        let shorter = align_up(header - first_page * size_of::<Page>(), os_page) + guard;
        if first_page_of(shorter) == first_page {
            info_size = shorter;
        }
    }
    let mut front = 0;
    let mut region_align = SEGMENT_SIZE;
    let mut segment_size = if kind == SegmentKind::Small {
        small_pages << SMALL_PAGE_SHIFT
    } else {
        SEGMENT_SIZE
    };
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
        segment_size = match info_size
            .checked_add(huge_size)
            .and_then(|s| s.checked_add(guard))
        {
            Some(s) if s <= isize::MAX as usize / 2 => align_up(s, huge_grain(cfg)),
            _ => return ptr::null_mut(),
        };
    }
    // Small/medium/large segments are committed page by page when the source can reserve;
    // huge ones are needed whole at once.
    let commit_all = !cfg.has_reserve || kind == SegmentKind::Huge;
    // A huge segment over a source that grows regions by remapping (a kernel's page mapper)
    // reserves address space behind its block, so that the block grows in place by
    // committing what follows it (`huge_remap`), as a growing buffer does step after step:
    // no remap, no copy. Only address space is taken (committed: the block's own size).
    let mut region_size = front + segment_size;
    let mut reserved = false;
    if kind == SegmentKind::Huge
        && front == 0
        && guard == 0
        && cfg.has_reserve
        && os.source.grows_by_remap()
    {
        let ahead = align_up(
            segment_size
                .saturating_mul(HUGE_GROWTH_RESERVE)
                .max(HUGE_RESERVE_MIN),
            cfg.alloc_granularity.max(os_page),
        );
        if ahead > region_size && ahead <= isize::MAX as usize / 2 {
            region_size = ahead;
            reserved = true;
            // the block gets whole slices (see `HUGE_COMMIT_STEP`)
            segment_size = align_up(segment_size, HUGE_COMMIT_STEP).min(region_size);
        }
    }
    // a recently emptied segment region, still resident (sources without reserve)
    // (any cached region may serve, resized: a huge block's region becomes a segment of
    // small pages and the other way round, so that the cache holds no region that fits no
    // request; a huge block also takes a region up to half as large again, whole)
    let grows = kind == SegmentKind::Huge && core::mem::take(&mut ctx.huge_grows);
    let cached = if !cfg.has_reserve && front == 0 {
        // SAFETY: `region_size` is a non-zero multiple of the allocation granularity
        // (rounded up above), and so is a large OS page; `region_align` is `SEGMENT_SIZE`,
        // as every cached region is aligned.
        unsafe {
            os.cache_take_resized(
                region_size,
                region_align,
                LARGE_OS_PAGE,
                kind != SegmentKind::Huge,
                grows,
            )
        }
    } else {
        None
    };
    // whether the region's advice on large OS pages must change: a fresh huge segment is
    // advised (and with `Domain::set_large_os_pages`, any fresh segment), a fresh other
    // one keeps the default; a cached region was last advised as its last segment was
    // (`Segment::large_pages`)
    let huge = kind == SegmentKind::Huge;
    // large OS pages for this segment: a huge block's, and any segment's when the domain
    // asks for them (`Domain::set_large_os_pages`)
    let large_pages = huge || os.large_os_pages();
    let mut advise = large_pages;
    let region = match cached {
        Some((r, large)) => {
            if huge {
                segment_size = r.size; // the block gets the whole region
            }
            advise = large != large_pages;
            r
        }
        // SAFETY: size is a non-zero multiple of the allocation granularity, align a power
        // of two at least the OS page.
        None => match unsafe { os.alloc(region_size, region_align, commit_all && !reserved) } {
            Some(r) => r,
            // without the room ahead (address space or the memory limit may not allow it)
            // SAFETY: as above.
            None if reserved => match unsafe { os.alloc(segment_size, region_align, commit_all) } {
                Some(r) => r,
                None => return ptr::null_mut(),
            },
            None => return ptr::null_mut(),
        },
    };
    let seg_ptr = region.ptr.as_ptr().wrapping_add(front);
    debug_assert_eq!(
        (seg_ptr as usize).wrapping_sub(crate::segment::segment_phase()) & SEGMENT_MASK,
        0
    );
    // SAFETY: `seg_ptr` is inside the region, not null.
    let seg_nn = unsafe { NonNull::new_unchecked(seg_ptr) };
    // A huge block (over 2 MiB) is touched in big pieces: large OS pages save most of its
    // page faults. Other segments keep small OS pages by default, so that touching a few
    // blocks does not make 2 MiB resident (measured: large pages too raised the peak RSS of
    // mstress from 25 to 82 MiB); `Domain::set_large_os_pages` trades that memory for
    // fewer page faults. A cached region that changes its use is told so.
    if advise {
        // SAFETY: the segment range lies inside the region just obtained; it starts
        // `SEGMENT_SIZE`-aligned and `segment_size` is a multiple of the OS page.
        unsafe { os.advise_large_pages(seg_nn, segment_size, large_pages) };
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
    // (A segment of one page, large or huge, is its header struct alone, which is written
    // whole just below: nothing to zero. In the small geometry a header may hold page
    // entries that are not written.)
    if !zeroed && (capacity > 1 || cfg!(feature = "small")) {
        // SAFETY: the header range is committed and writable, and ours alone (the region
        // was just obtained, the segment is not published yet).
        unsafe { ptr::write_bytes(seg_ptr, 0, header) };
    }
    // SAFETY: `segment` points to the committed header range, ours alone (not published
    // yet), and is `SEGMENT_SIZE`-aligned, so aligned for `Segment`; once written, the
    // header gets the cookie of its address.
    unsafe {
        ptr::write(
            segment,
            Segment {
                owner: AtomicUsize::new(ctx.owner()),
                #[cfg(feature = "embedded")]
                heap: 0,
                page_shift,
                cookie: 0, // set below, at its address
                kind,
                capacity,
                first_page,
                used: 0,
                segment_size,
                info_size,
                guard,
                region: region.ptr.as_ptr(),
                region_size: region.size,
                committed,
                os,
                free_links: Links::new(),
                in_free_queue: false,
                large_pages,
                all_links: Links::new(),
                abandoned_next: ptr::null_mut(),
                purge_mask: 0,
                purge_expire: 0,
                #[cfg(feature = "small")]
                slices_used: 0,
                // (the pages it does not have count as in use: see the field)
                #[cfg(not(feature = "small"))]
                slices_used: !crate::segment::slice_mask(first_page, capacity),
                #[cfg(not(feature = "small"))]
                slice_pages: [ptr::null_mut(); crate::segment::SLICES],
                pages: [],
            },
        );
        (*segment).set_cookie();
        #[cfg(not(feature = "small"))]
        (*segment).fill_slice_pages();
    };
    // SAFETY: the header was written just above.
    let first_entry = unsafe { (*segment).first_entry() };
    for i in first_entry..capacity {
        // SAFETY: the header was written just above; `i < capacity`, the number of pages
        // it was sized for. The temporary `&Segment` ends before the page is written.
        #[cfg_attr(feature = "small", allow(unused_variables))] // (computed: `Page::page_start`)
        let (start, page) = unsafe { ((*segment).page_area(i).0, (*segment).page(i)) };
        // SAFETY: the page metadata lies in the committed header, ours alone (not published
        // yet), at a `Page`-aligned place (the `pages` array).
        unsafe {
            ptr::write(
                page,
                Page {
                    #[cfg(not(feature = "small"))]
                    segment_idx: i as u8,
                    #[cfg(not(feature = "small"))]
                    page_start: start,
                    is_committed: commit_all || region.committed,
                    is_zero_init: zeroed,
                    ..Page::EMPTY
                },
            )
        };
    }
    #[cfg(feature = "secure")]
    if guard > 0 {
        // SAFETY: the guard ranges are the last `guard` bytes of the header (after the
        // metadata, `guard <= info_size - header`) and of a large or huge segment (after
        // its page's area): page aligned, page sized, inside the live region, and no data
        // lives in them. (A source that cannot protect says so once, and later segments
        // then leave no room for guards: `Os::guard_size`.)
        unsafe { protect_guards(os, segment, true) };
    }
    // SAFETY: the segment is fully written and new, so in no list of all segments.
    unsafe { ctx.link(segment) };
    // SAFETY: the segment is live, `ctx`'s (its `owner` field), and in no free queue yet.
    unsafe { ctx.free_queue_push(segment) };
    #[cfg(feature = "std")]
    crate::segment_map::set(seg_ptr as usize, true);
    os.stats.segments.add(1);
    segment
}

/// Takes the spare huge region (see [`HUGE_SPARE_MAX`]): its segment header, or null when
/// there is none. The caller owns it then (its region, with `committed` bytes counted as
/// committed), and gives it back to the source, revives it or puts it back.
fn huge_spare_take(os: &Os) -> *mut Segment {
    let s = os.huge_spare.swap(ptr::null_mut(), Ordering::Acquire);
    if !s.is_null() {
        os.huge_spare_committed.store(0, Ordering::Relaxed);
    }
    s as *mut Segment
}

/// Makes `segment` (a parked huge segment's header, its `purge_expire` the time it goes
/// back) the spare huge region, or gives its region back to the source when there is one
/// already.
///
/// # Safety
/// `segment` is the header of an emptied huge segment of `os` that is its region whole
/// (no front part, no guard pages), with `committed` bytes counted as committed; it is the
/// caller's alone and unused from now on.
unsafe fn huge_spare_put(os: &Os, segment: *mut Segment) {
    // SAFETY: the header is the caller's (the `# Safety` contract).
    let committed = unsafe { (*segment).committed };
    match os.huge_spare.compare_exchange(
        ptr::null_mut(),
        segment as *mut u8,
        Ordering::Release,
        Ordering::Relaxed,
    ) {
        // (a hint: whoever reads it may find the spare taken meanwhile)
        Ok(_) => os.huge_spare_committed.store(committed, Ordering::Relaxed),
        // SAFETY: the region, from `os`, counted with `committed` committed bytes, unused
        // (the `# Safety` contract), given back once.
        Err(_) => unsafe { huge_spare_free(os, segment) },
    }
}

/// Gives a spare huge region taken out of `Os::huge_spare` (or never put there) back to
/// the source.
///
/// # Safety
/// As [`huge_spare_put`].
unsafe fn huge_spare_free(os: &Os, segment: *mut Segment) {
    // SAFETY: the header is the caller's (the `# Safety` contract); a segment's region is
    // never null.
    unsafe {
        let (size, committed) = ((*segment).region_size, (*segment).committed);
        os.free(NonNull::new_unchecked(segment as *mut u8), size, committed);
    }
}

/// Revives the spare huge region `spare` (taken by the caller) as a segment of `ctx`, for
/// a block that needs `segment_size` bytes of segment: its header, kept when it was
/// parked, is written only where it changes, and memory is committed only past what it
/// holds committed. Null when there is no memory to commit (its region went back to the
/// source then).
///
/// # Safety
/// `spare` was taken by the caller ([`huge_spare_take`]) and holds `segment_size` bytes
/// (`<= region_size`); `ctx` is the calling thread's segment data, over the source the
/// spare came from.
unsafe fn huge_spare_revive(
    ctx: &mut SegmentsTld,
    spare: *mut Segment,
    segment_size: usize,
) -> *mut Segment {
    let os = ctx.os();
    let segment = spare;
    // SAFETY: a spare taken is a region of `os` nothing else uses, which starts with the
    // header of the huge segment it was, kept as that segment left it (`segment_free`):
    // live memory, committed (its header lies in its committed part), ours alone.
    let seg = unsafe { &mut *segment };
    debug_assert!(seg.kind == SegmentKind::Huge && seg.capacity == 1 && seg.used == 0);
    debug_assert!(seg.region == segment as *mut u8 && seg.guard == 0);
    debug_assert!(segment_size <= seg.region_size);
    let mut committed = seg.committed;
    if segment_size > committed {
        // SAFETY: `[committed, segment_size)` lies in the live region (`segment_size <=
        // region_size`), after its committed part; both ends are multiples of the OS page.
        let from = unsafe { NonNull::new_unchecked((segment as *mut u8).add(committed)) };
        // SAFETY: as just said.
        if unsafe { os.commit(from, segment_size - committed) }.is_none() {
            // SAFETY: ours, unused, counted with `committed` bytes (not changed above).
            unsafe { huge_spare_free(os, segment) };
            return ptr::null_mut();
        }
        committed = segment_size;
    }
    seg.owner.store(ctx.owner(), Ordering::Relaxed);
    seg.segment_size = segment_size;
    seg.committed = committed;
    seg.in_free_queue = false;
    seg.free_links = Links::new();
    seg.all_links = Links::new();
    seg.abandoned_next = ptr::null_mut();
    seg.purge_mask = 0;
    // The spare's committed memory beyond the block stays with it for its growth, a
    // purge delay long (then `segment_purge` decommits what the block has not grown into:
    // a long-lived small block does not keep the spare's megabytes).
    seg.purge_expire = 0;
    if committed > segment_size {
        let delay = os.purge_delay();
        if delay > 0 {
            seg.purge_expire = os.now().saturating_add(delay as u64).max(1);
        }
    }
    seg.set_cookie();
    // (its page was reset when it was freed: blank, committed, not known zero)
    // SAFETY: the header is written (`seg` is no longer used); the segment is new to `ctx`,
    // in no list.
    unsafe {
        ctx.link(segment);
        ctx.free_queue_push(segment);
    }
    #[cfg(feature = "std")]
    crate::segment_map::set(segment as usize, true);
    os.stats.segments.add(1);
    segment
}

/// Gives an empty segment back to the source (or to the region cache). Its owner, if any,
/// forgets it: `ctx` is the segment's owner data (`None` for an abandoned segment), passed
/// down by the caller (the header keeps no pointer to it, see [`Segment`]).
///
/// # Safety
/// `segment` has no page in use, and is owned by the calling thread or by no one
/// (abandoned and popped by the caller); nothing refers to it any more. `ctx` is the
/// segment's owner's data (`None` when it is abandoned).
unsafe fn segment_free(ctx: Option<&mut SegmentsTld>, segment: *mut Segment) {
    // SAFETY: `segment` is live and the calling thread's or popped by it (the `# Safety`
    // contract), so no other thread writes its header; this shared reference ends before
    // the owner lists write it.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.used, 0);
    debug_assert_eq!(
        seg.owner.load(Ordering::Relaxed),
        ctx.as_deref().map_or(ABANDONED, SegmentsTld::owner)
    );
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let (region, size, committed) = (seg.region, seg.region_size, seg.committed);
    let large = seg.large_pages; // advised for large OS pages at its creation
    #[cfg(feature = "secure")]
    if seg.guard > 0 {
        // the region may serve another segment (the cache), with its guards elsewhere
        // SAFETY: the segment's guard pages, in its live region, hold no data.
        unsafe { protect_guards(os, segment, false) };
    }
    // An emptied huge segment of an owner that is its region whole, over a source that
    // reserves and grows by remap, becomes the spare huge region (see `HUGE_SPARE_MAX`)
    // if there is none, with its committed memory, at most its limit of it (`Domain::
    // set_spare_limit`, `HUGE_SPARE_MAX` by default), and if
    // emptied memory may be kept at all (a purge delay of 0 purges at once)
    let spare = large
        && seg.guard == 0
        && region == segment as *mut u8
        && committed <= os.huge_spare_limit.load(Ordering::Relaxed)
        && ctx.is_some()
        && os.purge_delay() != 0
        && os.huge_spare.load(Ordering::Relaxed).is_null()
        && os.config().has_reserve
        && os.source.grows_by_remap();
    let mut ctx = ctx;
    if let Some(ctx) = ctx.as_deref_mut() {
        #[cfg(feature = "small")]
        ctx.source_grew();
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
    if spare {
        // Committed memory goes back once no block used it for a purge delay: a segment
        // whose committed tail was waiting for its purge (`huge_purge_tail`) keeps that
        // time (a spare taken by small blocks one after the other, none growing into it,
        // is not kept for ever); else from now.
        // SAFETY: the header is live and ours (the `# Safety` contract); the region is
        // unused from now on, `committed` bytes of it counted as committed.
        unsafe {
            if (*segment).purge_expire == 0 {
                let delay = os.purge_delay();
                (*segment).purge_expire = if delay < 0 {
                    u64::MAX
                } else {
                    os.now().saturating_add(delay as u64).max(1)
                };
            }
            huge_spare_put(os, segment);
        }
        return;
    }
    // SAFETY: a segment's region is a region from the source (or the cache), never null.
    let region_nn = unsafe { NonNull::new_unchecked(region) };
    if CACHE_SEGMENTS
        && !os.config().has_reserve
        && region == segment as *mut u8
        && size <= CACHE_SIZE_MAX
    {
        // keep it a while: the next segment reuses it without faulting memory in (with a
        // negative purge delay, "never purge", it stays resident until it is reused or a
        // forced collection gives it back, as mimalloc keeps its arenas' memory)
        // SAFETY: `region`/`size` are exactly the segment's region from `os`, counted with
        // `committed` committed bytes, and unused from now on: the segment has no page in
        // use and nothing refers to it (the `# Safety` contract).
        unsafe { os.cache_put(region_nn, size, committed, large) };
    } else {
        // SAFETY: `region`/`size` are exactly the segment's region from `os`, counted with
        // `committed` committed bytes, and unused from now on (the `# Safety` contract).
        unsafe { os.free(region_nn, size, committed) };
    }
}

/// Gives an abandoned segment back to the source with whatever blocks it still holds:
/// the end of a domain that is destroyed (C's `mi_subproc_destroy`).
///
/// # Safety
/// `segment` was popped from its domain's abandoned list by the calling thread, and none
/// of its blocks is used again (its domain has no thread left, and its blocks die with it).
#[cfg(feature = "std")]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) unsafe fn segment_discard(segment: *mut Segment) {
    // SAFETY: popped by the calling thread, so live and ours alone; the reference ends
    // before the header is written.
    let seg = unsafe { &*segment };
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let (region, size, committed, used) = (seg.region, seg.region_size, seg.committed, seg.used);
    os.stats.segments.sub(1);
    os.stats.pages.sub(used as i64);
    // SAFETY: the header is live and ours alone (popped); no reference into it is live.
    unsafe { (*segment).cookie = 0 };
    crate::segment_map::set(segment as usize, false);
    // SAFETY: a segment's region is a region from the source (or the cache), never null;
    // `region`/`size` are exactly it, counted with `committed` committed bytes, and unused
    // from now on (the `# Safety` contract).
    unsafe { os.free(NonNull::new_unchecked(region), size, committed) };
}

/// Claims the first free page of `segment` (committing it unless it is a large page or
/// `lazy`, which commit as their blocks are made or grow: `page_commit`). Null when out of
/// memory.
///
/// # Safety
/// `segment` is a segment of `ctx`, the calling thread's, and has a page that is not in
/// use.
unsafe fn page_claim(ctx: &mut SegmentsTld, segment: *mut Segment, lazy: bool) -> *mut Page {
    // SAFETY: `segment` is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; this shared reference ends before anything writes it.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.owner.load(Ordering::Relaxed), ctx.owner());
    // (default geometry: the first clear bit of the pages in use; small geometry, whose
    // pages are runs of slices claimed elsewhere: the first entry not in use)
    #[cfg(not(feature = "small"))]
    let idx = {
        let free = !seg.slices_used;
        if free == 0 {
            debug_assert!(false, "segment in a free queue without a free page");
            return ptr::null_mut();
        }
        free.trailing_zeros() as usize
    };
    #[cfg(feature = "small")]
    let Some(idx) = (seg.first_page..seg.capacity).find(|&i| {
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
    if !pg.is_committed && kind != SegmentKind::Large && !lazy {
        // (a solo page freed before its purge keeps its first `partial` bytes committed)
        let partial = pg.partial_commit();
        // SAFETY: the page's area lies after the segment header, so it is not null, and
        // `partial` is less than its size (or the page would be committed).
        let start = unsafe { NonNull::new_unchecked(start.add(partial)) };
        // SAFETY: the page's area lies inside the segment's live region from `os`; page
        // areas start and end on OS page boundaries (the header size is page aligned), and
        // `partial` is a multiple of the OS page.
        match unsafe { os.commit(start, size - partial) } {
            Some(zero) => {
                pg.is_committed = true;
                pg.is_zero_init = zero && partial == 0;
                // SAFETY: the page is ours and not in use.
                unsafe { Page::set_partial_commit(pg, 0) };
                newly_committed = size - partial;
            }
            None => return ptr::null_mut(),
        }
    }
    pg.segment_in_use = true;
    // SAFETY: the segment is live and the calling thread's; `pg` is no longer used, so this
    // is the only reference into its header.
    let seg = unsafe { &mut *segment };
    seg.committed += newly_committed;
    seg.purge_mask &= !(1 << idx);
    #[cfg(not(feature = "small"))]
    {
        seg.slices_used |= 1 << idx;
    }
    seg.used += 1;
    if seg.used == seg.usable_pages() {
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
    #[cfg(feature = "small")]
    if kind == SegmentKind::Small {
        return span_alloc(ctx, block_size);
    }
    let queued = match ctx.free_queue(kind) {
        Some(q) => q.first,
        None => ptr::null_mut(),
    };
    if !queued.is_null() {
        // SAFETY: segments in `ctx`'s free queues are `ctx`'s and have a free page (the
        // `SegmentsTld` and `Segment` invariants); `ctx` is the calling thread's (a `&mut`).
        return unsafe { page_claim(ctx, queued, false) };
    }
    let s = segment_alloc(ctx, kind, block_size, huge_align.unwrap_or(0));
    if s.is_null() {
        return s as *mut Page;
    }
    // SAFETY: `s` is a fresh segment of `ctx` with every page free.
    let page = unsafe { page_claim(ctx, s, false) };
    if page.is_null() {
        // out of memory committing its first page: do not keep it empty
        // SAFETY: `s` is `ctx`'s and has no page in use (its one claim failed); nothing
        // but `ctx`'s lists refers to it, and `ctx` is passed down.
        unsafe { segment_free(Some(ctx), s) };
    }
    page
}

/// Claims a small page for a solo block (`alloc::malloc_solo`: one block that grows in
/// place through the page) without committing it: its block commits what it holds
/// (`page_commit`), so that a solo block costs its own size in memory, not the page's.
/// Null when out of memory.
#[cfg(not(feature = "small"))]
pub(crate) fn page_alloc_solo(ctx: &mut SegmentsTld) -> *mut Page {
    let queued = match ctx.free_queue(SegmentKind::Small) {
        Some(q) => q.first,
        None => ptr::null_mut(),
    };
    if !queued.is_null() {
        // SAFETY: as in `page_alloc`.
        return unsafe { page_claim(ctx, queued, true) };
    }
    let s = segment_alloc(ctx, SegmentKind::Small, SMALL_OBJ_SIZE_MAX, 0);
    if s.is_null() {
        return s as *mut Page;
    }
    // SAFETY: `s` is a fresh segment of `ctx` with every page free (a lazy claim commits
    // nothing, so it does not fail).
    unsafe { page_claim(ctx, s, true) }
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
    let seg = unsafe { &*ptr_segment(pg.page_start()) };
    #[cfg(feature = "small")]
    if seg.kind == SegmentKind::Small {
        return span_area(seg, pg.segment_idx(), span_len(seg, pg.segment_idx()));
    }
    seg.page_area(pg.segment_idx()).1
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
        (p.page_start(), p.segment_idx(), p.partial_commit())
    };
    // SAFETY: `page_start` lies in the page's segment, live and the calling thread's (the
    // `# Safety` contract), so no other thread writes its header; no other reference into
    // it is live.
    let seg = unsafe { &mut *ptr_segment(page_start) };
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let (start, area) = seg.page_area(idx);
    // (the small geometry commits pages whole: it keeps no partial count)
    let need = if cfg!(feature = "small") {
        area
    } else {
        align_up(bytes, os.page_size()).min(area)
    };
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
    // SAFETY: as for the first reference to the page; `seg` is no longer used. Raw
    // accesses, no `&mut Page`: the page is in use, and remote frees CAS its
    // `xthread_free` meanwhile.
    unsafe {
        if let Some(zero) = grown {
            if !zero {
                (*page).is_zero_init = false;
            }
        }
        let committed = if grown.is_some() { need } else { partial };
        if committed == area {
            (*page).is_committed = true;
            Page::set_partial_commit(page, 0);
        } else {
            Page::set_partial_commit(page, committed);
        }
    }
    true
}

/// Gives a page whose blocks are all free (or forgotten) back to its segment: it is no
/// longer counted, its metadata is reset, its memory's purge is scheduled, and the
/// segment is freed when this was its last page in use. Returns whether the segment was
/// freed.
///
/// `ctx` is the segment's owner's data: `Some` of the calling thread's (whose segment it
/// is), or `None` for a segment that is abandoned and that the calling thread popped.
///
/// # Safety
/// `page` is in use and in no heap queue; its segment is owned by `ctx` or abandoned and
/// popped by the calling thread (`ctx` is `None`); no block of the page is used afterwards.
pub(crate) unsafe fn page_free_in(ctx: Option<&mut SegmentsTld>, page: *mut Page) -> bool {
    // SAFETY: the page is in use and its segment the calling thread's or popped by it (the
    // `# Safety` contract): its metadata lies in that live segment's header and no other
    // thread touches it (all its blocks are free, so no remote free is under way). The
    // reference ends before the header is borrowed.
    let pg = unsafe { &mut *page };
    let segment = ptr_segment(pg.page_start());
    // SAFETY: the segment is live; `os` was set at creation from the owner's `&'static Os`,
    // and `kind` is fixed at creation (neither lies in the page metadata).
    let (os, kind): (&'static Os, _) = unsafe { (&*(*segment).os, (*segment).kind) };
    debug_assert_eq!(
        // SAFETY: as above; `owner` is atomic.
        unsafe { (*segment).owner.load(Ordering::Relaxed) },
        ctx.as_deref().map_or(ABANDONED, SegmentsTld::owner),
        "page_free_in: ctx is not the segment's owner"
    );
    // the page's statistics: blocks counted as allocated at its last synchronisation
    // are gone now
    os.stats.pages.sub(1);
    os.stats
        .allocated
        .sub(pg.stat_used() as i64 * pg.block_size as i64);
    if kind == SegmentKind::Huge {
        os.stats.huge.sub(pg.block_size as i64);
    }
    // SAFETY: as above: the page is ours and no block of it is in use.
    unsafe { Page::reset(pg) };
    let idx = pg.segment_idx();
    let dirty = pg.is_committed || pg.partial_commit() > 0;
    #[cfg(feature = "small")]
    if kind == SegmentKind::Small {
        // SAFETY: the segment is live and the calling thread's or popped by it; `pg` is no
        // longer used, so no reference into the header is alive.
        unsafe { span_release(segment, idx) };
    }
    // SAFETY: the segment is live and the calling thread's or popped by it, so no other
    // thread writes its header; `pg` is no longer used, so this is the only reference into it.
    let seg = unsafe { &mut *segment };
    #[cfg(not(feature = "small"))]
    {
        seg.slices_used &= !(1 << idx);
    }
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
        seg.purge_mask |= 1 << idx;
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
            if seg.kind == SegmentKind::Huge && seg.purge_expire != 0 {
                // SAFETY: as this function's contract; `seg` is no longer used.
                unsafe { huge_purge_tail(segment, force) };
            }
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
    // The committed parts of pages that lie side by side go to the source in one call (the
    // pages a thread emptied are mostly neighbours: one `madvise` for the run instead of
    // one per page; mimalloc's test-stress made ~2,300 such calls, one per 64 KiB page).
    let mut run = PurgeRun {
        start: ptr::null_mut(),
        size: 0,
        pages: 0,
    };
    while mask != 0 {
        let idx = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        // SAFETY: purge mask bits are page indices below `capacity`; the temporary
        // `&Segment` ends before the page is read.
        let (page, (start, area)) = unsafe { ((*segment).page(idx), (*segment).page_area(idx)) };
        // SAFETY: the page metadata lies in the live header; the page is not in use (purge
        // mask bits are only set for pages not in use), so nothing else refers to it; the
        // reference ends here.
        let size = unsafe {
            debug_assert!(!(*page).segment_in_use);
            if (*page).is_committed {
                area
            } else {
                (*page).partial_commit()
            }
        };
        if size == 0 {
            continue;
        }
        if run.size > 0 && run.start.wrapping_add(run.size) == start {
            run.size += size;
            run.pages |= 1u64 << idx;
            continue;
        }
        // SAFETY: the run holds the committed parts of pages of the purge mask (the
        // calling thread's segment, the `# Safety` contract).
        decommitted += unsafe { purge_run(segment, os, &run, decommit_zeroes) };
        run = PurgeRun {
            start,
            size,
            pages: 1u64 << idx,
        };
    }
    // SAFETY: as above.
    decommitted += unsafe { purge_run(segment, os, &run, decommit_zeroes) };
    // SAFETY: as for the first reference to the header; no page reference is live.
    let seg = unsafe { &mut *segment };
    seg.committed -= decommitted;
    seg.purge_mask = 0;
}

/// Decommits the committed memory of a huge segment past its block (what a block that
/// took a spare region got with it, see `huge_spare_revive`) once its purge delay ran out
/// (`purge_expire`, not 0), or with `force`.
///
/// # Safety
/// The calling thread owns the huge segment (or popped it); no reference into its header
/// is live.
unsafe fn huge_purge_tail(segment: *mut Segment, force: bool) {
    // SAFETY: the segment is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; no other reference into it is live.
    let seg = unsafe { &mut *segment };
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    if !force && os.now() < seg.purge_expire {
        return;
    }
    seg.purge_expire = 0;
    let (end, committed) = (seg.segment_size, seg.committed.min(seg.region_size));
    if committed <= end || seg.region != segment as *mut u8 || seg.guard != 0 {
        return;
    }
    // SAFETY: `[end, committed)` lies in the segment's live region (the segment is its
    // region), past its block, committed, and holds no data; both ends are multiples of
    // the OS page.
    let needs_recommit = unsafe {
        os.decommit(
            NonNull::new_unchecked((segment as *mut u8).add(end)),
            committed - end,
        )
    };
    if needs_recommit {
        seg.committed = end;
    }
}

/// Adjacent committed ranges of pages not in use, purged together (see `segment_purge`).
struct PurgeRun {
    start: *mut u8,
    size: usize,
    /// The pages whose committed parts make up the run (bits of the purge mask).
    pages: u64,
}

/// Purges a run of `segment_purge` with one call to the source and updates its pages;
/// returns the bytes that need a recommit now (no longer committed). An empty run does
/// nothing.
///
/// # Safety
/// The calling thread owns `segment` (or popped it); `run` is empty or covers exactly the
/// committed parts of its `pages`, adjacent, which are pages of `segment` not in use.
unsafe fn purge_run(
    segment: *mut Segment,
    os: &'static Os,
    run: &PurgeRun,
    decommit_zeroes: bool,
) -> usize {
    if run.size == 0 {
        return 0;
    }
    // SAFETY: the run's start is a page area's start, after the segment header: not null.
    let start = unsafe { NonNull::new_unchecked(run.start) };
    // SAFETY: the range is the committed parts of adjacent pages not in use (the
    // `# Safety` contract): inside the segment's live region, page aligned (page areas, or
    // the first `partial_commit` bytes of the last one, multiples of the OS page), and no
    // live data is in it.
    let needs_recommit = unsafe { os.decommit(start, run.size) };
    let mut pages = run.pages;
    while pages != 0 {
        let idx = pages.trailing_zeros() as usize;
        pages &= pages - 1;
        // SAFETY: `idx` is a page of the segment not in use (the `# Safety` contract), and
        // the calling thread owns the segment: nothing else refers to the page metadata,
        // which lies in the live header.
        let page = unsafe { &mut *(*segment).page(idx) };
        if needs_recommit {
            page.is_committed = false;
            // SAFETY: the page is ours and not in use (above).
            unsafe { Page::set_partial_commit(page, 0) };
        } else if decommit_zeroes {
            page.is_zero_init = true;
        }
    }
    if needs_recommit {
        run.size
    } else {
        0
    }
}

/// Gives the spare huge region (see [`HUGE_SPARE_MAX`]) back to the source if no block used
/// its memory for a purge delay, or with `force`.
pub(crate) fn huge_spare_release(os: &Os, force: bool) {
    if os.huge_spare.load(Ordering::Relaxed).is_null() {
        return;
    }
    let s = huge_spare_take(os);
    if s.is_null() {
        return;
    }
    // SAFETY: taken: ours alone, its header kept (`huge_spare_put`'s contract).
    unsafe {
        if force || os.now() >= (*s).purge_expire {
            huge_spare_free(os, s);
        } else {
            huge_spare_put(os, s);
        }
    }
}

/// Purges every segment of `ctx`'s owner whose purge delay ran out (all with `force`), and
/// the spare huge region likewise.
pub(crate) fn segments_purge(ctx: &mut SegmentsTld, force: bool) {
    huge_spare_release(ctx.os(), force);
    let purge = |s: *mut Segment| {
        // SAFETY: `for_each` hands out segments of `ctx`, the calling thread's.
        unsafe { segment_purge(s, force) }
    };
    // SAFETY: `ctx` is live and the calling thread's (a `&mut`); purging changes no list.
    unsafe { SegmentsTld::for_each(ctx, purge) };
}

/// Grows the huge block of `page` into the address space its segment reserved behind it
/// (see `segment_alloc_sized`), committing what it covers now: the segment header stays
/// where it is, so nothing that links to it changes (its page may stay in its heap's
/// queue). `None` when the segment has no such room for `new_size` bytes (then
/// [`huge_remap`] may still resize it), `Some(false)` when the room is there but the
/// source has no memory to commit it, `Some(true)` when the block holds `new_size` bytes
/// now.
///
/// (The first try of [`huge_remap`], and `alloc::realloc`'s before it takes the page out
/// of its queue: a `Vec` doubling to 8 MiB grows here at every other step.)
///
/// # Safety
/// `page` is the page of a live huge segment owned by the calling thread, whose one block
/// is live and owned by the caller; no reference into the segment header is live.
pub(crate) unsafe fn huge_grow_reserved(page: *mut Page, new_size: usize) -> Option<bool> {
    // SAFETY: `page` is the page of a live segment (the `# Safety` contract); `page_start`
    // is fixed while the segment stays where it is.
    let segment = ptr_segment(unsafe { (*page).page_start() });
    // SAFETY: the segment is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; this shared reference ends before it is written.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.kind, SegmentKind::Huge);
    if seg.region != segment as *mut u8 {
        return None; // alignment front part: no room reserved
    }
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let cfg = os.config();
    let gran = cfg.alloc_granularity.max(cfg.page_size).max(MIN_OS_PAGE);
    let want = seg
        .info_size
        .checked_add(new_size)?
        .checked_add(seg.guard)?;
    let new_seg_size = align_up(want, huge_grain(cfg).max(gran));
    let (region_size, committed) = (seg.region_size, seg.committed);
    // (Not with guard pages, which sit at the end.)
    let stepped = align_up(new_seg_size, HUGE_COMMIT_STEP).min(region_size);
    if !(region_size > seg.segment_size
        && new_seg_size >= seg.segment_size
        && new_seg_size <= region_size
        && seg.guard == 0)
    {
        return None;
    }
    // A block that grows here tends to grow again (a `Vec` doubling): it gets its new
    // size again ahead, at most `HUGE_AHEAD_MAX` (so a doubling buffer commits at every
    // other doubling up to 2 MiB, and the steps between stay in place at the top of
    // `realloc`: ~45 instructions instead of ~470 under QEMU's count); without the
    // memory for that, only what it asked for.
    let ahead = align_up(
        new_seg_size.saturating_add(new_seg_size.min(HUGE_AHEAD_MAX)),
        HUGE_COMMIT_STEP,
    )
    .min(region_size);
    let mut new_seg_size = stepped;
    for target in [ahead, stepped] {
        if target <= committed {
            new_seg_size = target;
            break;
        }
        // SAFETY: `[committed, target)` lies inside the segment's live region
        // (`target <= region_size`, and the segment is its region: checked above),
        // after its committed part; both ends are multiples of the OS page.
        let at = unsafe { NonNull::new_unchecked((segment as *mut u8).add(committed)) };
        // SAFETY: as just said.
        if unsafe { os.commit(at, target - committed) }.is_some() {
            new_seg_size = target;
            break;
        }
        if target == stepped {
            return Some(false);
        }
    }
    // SAFETY: the segment is the calling thread's and no reference into its header is
    // live (the `# Safety` contract; `seg` is no longer used): the links to its page (a
    // heap queue) are raw pointers, and neither they nor the header move.
    let seg = unsafe { &mut *segment };
    seg.committed = committed.max(new_seg_size);
    seg.segment_size = new_seg_size;
    let psize = seg.page_area(0).1;
    // SAFETY: the page's metadata lies in the live header; its block is the caller's.
    huge_set_block_size(os, unsafe { &mut *page }, psize);
    Some(true)
}

/// Grows the huge block of `page` to hold `new_size` bytes within the memory its segment
/// has committed already (a spare region's, or room committed ahead): only the segment
/// header and the statistics change, no call to the source, so the caller needs no lock
/// and may run with interrupts on. It takes room ahead as far as it is committed: three
/// times its new size, at most `HUGE_AHEAD_MAX` ([`huge_grow_reserved`], which commits,
/// takes once its new size): memory committed already, which a block that stops growing
/// keeps while it lives instead of giving it back a purge delay later, for a doubling
/// buffer a step here every third doubling instead of every other (the kernel bench's
/// `Vec` growth through a spare region: 4 steps a round instead of 5, 127.7 -> 122.6
/// instructions per call). False when the committed memory does not hold `new_size`
/// bytes (then [`huge_grow_reserved`] may commit more).
///
/// # Safety
/// `page` is the page of a live huge segment owned by the calling context, whose one
/// block is live and owned by the caller; no reference into the segment header is live.
#[inline(always)]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn huge_grow_committed(page: *mut Page, new_size: usize) -> bool {
    // SAFETY: `page` is the page of a live segment (the `# Safety` contract); `page_start`
    // is fixed while the segment stays where it is.
    let segment = ptr_segment(unsafe { (*page).page_start() });
    // SAFETY: the segment is live and the calling context's (the `# Safety` contract), so
    // nothing else writes its header; no other reference into it is live.
    let seg = unsafe { &mut *segment };
    debug_assert_eq!(seg.kind, SegmentKind::Huge);
    let committed = seg.committed.min(seg.region_size);
    let Some(want) = seg.info_size.checked_add(new_size) else {
        return false;
    };
    // (whole slices, as `huge_grow_reserved`'s steps; a guard page would sit at the end)
    let stepped = align_up(want, HUGE_COMMIT_STEP);
    if seg.region != segment as *mut u8
        || seg.guard != 0
        || stepped > committed
        || stepped < seg.segment_size
    {
        return false;
    }
    let ahead = align_up(
        stepped.saturating_add(stepped.saturating_mul(3).min(HUGE_AHEAD_MAX)),
        HUGE_COMMIT_STEP,
    );
    seg.segment_size = ahead.min(committed);
    if seg.segment_size >= committed {
        seg.purge_expire = 0; // no committed tail left to purge (see `huge_purge_tail`)
    }
    // (`page_area(0)` of a huge segment without a guard page, written out: no call)
    let psize = seg.segment_size - seg.info_size;
    debug_assert_eq!(psize, seg.page_area(0).1);
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &Os = unsafe { &*seg.os };
    // SAFETY: the page's metadata lies in the live header (`seg` is no longer used); its
    // block is the caller's.
    huge_set_block_size(os, unsafe { &mut *page }, psize);
    true
}

/// Sets the block size of a huge segment's page to `psize` (its block grew or moved) and
/// moves the statistics of huge and allocated bytes by the difference.
#[inline(always)]
fn huge_set_block_size(os: &Os, pg: &mut Page, psize: usize) {
    let delta = psize as i64 - pg.block_size as i64;
    pg.block_size = psize;
    os.stats.huge.add(delta);
    os.stats.allocated.add(delta * pg.stat_used() as i64);
}

/// Resizes the huge block of `page` by moving or resizing its segment with the source's
/// `remap` (no copy), so that its block holds `new_size` bytes. Returns the page at its
/// new place (its block starts at its `page_start`), or null when the source cannot, or
/// when a growth would fault in fresh memory while the cache holds a resident region of
/// the new size (the caller then copies the block, into that region); the page is then
/// untouched.
///
/// # Safety
/// `page` is the page of a huge segment owned by `ctx` (the calling thread's), whose one
/// block is live and owned by the caller, and the page is in no queue (the segment header,
/// and so the page, may move).
pub(crate) unsafe fn huge_remap(
    ctx: &mut SegmentsTld,
    page: *mut Page,
    new_size: usize,
) -> *mut Page {
    // SAFETY: `page` is the page of a live segment (the `# Safety` contract); `page_start`
    // is fixed while the segment stays where it is.
    let segment = ptr_segment(unsafe { (*page).page_start() });
    // growth into the reserved room first (the header stays where it is)
    // SAFETY: the `# Safety` contract, which asks more than `huge_grow_reserved`'s; no
    // reference into the header is live yet.
    match unsafe { huge_grow_reserved(page, new_size) } {
        Some(true) => return page,
        Some(false) => return ptr::null_mut(),
        None => {}
    }
    // SAFETY: the segment is live and the calling thread's (the `# Safety` contract), so no
    // other thread writes its header; this shared reference ends before it is unlinked.
    let seg = unsafe { &*segment };
    debug_assert_eq!(seg.kind, SegmentKind::Huge);
    debug_assert_eq!(seg.owner.load(Ordering::Relaxed), ctx.owner());
    if seg.region != segment as *mut u8 {
        return ptr::null_mut(); // alignment front part: keep it simple, copy instead
    }
    // SAFETY: `os` was set at creation from the owner's `&'static Os`.
    let os: &'static Os = unsafe { &*seg.os };
    let cfg = os.config();
    let gran = cfg.alloc_granularity.max(cfg.page_size).max(MIN_OS_PAGE);
    let Some(want) = seg
        .info_size
        .checked_add(new_size)
        .and_then(|s| s.checked_add(seg.guard))
    else {
        return ptr::null_mut();
    };
    let new_seg_size = align_up(want, huge_grain(cfg).max(gran));
    let (region_size, committed) = (seg.region_size, seg.committed);
    // Growth into the cached region that follows the segment's (a source that splits and
    // joins regions, see `Os::cache_join`): its memory becomes the block's as it is, still
    // resident, where a remap would move the block to fresh memory that faults in (the
    // rest of a cached region that a smaller huge block took the start of follows it).
    if new_seg_size > region_size && committed == region_size && seg.guard == 0 {
        // SAFETY: the segment is its region (checked above), live, committed in full and
        // ours (the `# Safety` contract); `SEGMENT_SIZE` is the alignment of cached
        // regions.
        let joined = unsafe {
            os.cache_join(
                NonNull::new_unchecked(segment as *mut u8),
                region_size,
                new_seg_size - region_size,
                SEGMENT_SIZE,
            )
        };
        if let Some((grown, large)) = joined {
            if !large {
                // SAFETY: the joined range is now the segment region's tail: inside it,
                // OS-page aligned and sized (cached regions are).
                unsafe {
                    os.advise_large_pages(
                        NonNull::new_unchecked((segment as *mut u8).add(region_size)),
                        grown,
                        true,
                    )
                };
            }
            // SAFETY: the segment is the calling thread's and its page in no queue (the
            // `# Safety` contract): no other reference into its header is live (`seg` is
            // no longer used).
            let seg = unsafe { &mut *segment };
            seg.region_size = region_size + grown;
            seg.committed = committed + grown;
            seg.segment_size = seg.region_size; // the block gets the whole region
            let psize = seg.page_area(0).1;
            // SAFETY: the page's metadata lies in the live header; its block is the caller's.
            huge_set_block_size(os, unsafe { &mut *page }, psize);
            return page;
        }
    }
    // Growth beyond that, when the cache holds a resident region of the new size: the
    // caller moves the block there by a copy (this returns null), as mimalloc's `realloc`
    // moves a block into arena memory it had touched before. A remap would fault its new
    // part in as fresh memory that the kernel zeroes, while the cached region stays unused:
    // large-realloc's growing vectors faulted in 218 of the ~330 MiB of fresh pages its run
    // took from the kernel (`perf record -e kmem:mm_page_alloc`), and its time in the
    // kernel went mostly to zeroing them (`clear_page_erms`).
    // (The block then takes a larger resident region whole, to grow on in it, see
    // `SegmentsTld::huge_grows`.)
    if CACHE_SEGMENTS
        && new_seg_size > region_size
        && !cfg.has_reserve
        && os.cache_has_resident(new_seg_size)
    {
        ctx.huge_grows = true;
        return ptr::null_mut();
    }
    if new_seg_size > region_size && committed < region_size {
        // the rest of the reserved room first: `remap` keeps a region's committed pages
        // SAFETY: as above, `[committed, region_size)` lies inside the live region.
        let at = unsafe { NonNull::new_unchecked((segment as *mut u8).add(committed)) };
        // SAFETY: as just said.
        if unsafe { os.commit(at, region_size - committed) }.is_none() {
            return ptr::null_mut();
        }
        // SAFETY: as above, no other reference into the header is live.
        unsafe { (*segment).committed = region_size };
    }
    // SAFETY: as above (a read through the pointer: `seg` is no longer used).
    let committed = unsafe { (*segment).committed };
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
    // secure mode: the guard at the segment's end would end up inside the resized block
    #[cfg(feature = "secure")]
    // SAFETY: the segment's guard pages, in its live region, hold no data.
    unsafe {
        protect_guards(os, segment, false)
    };
    let moved = unsafe { os.remap(seg_nn, region_size, committed, new_seg_size, SEGMENT_SIZE) };
    let Some(r) = moved else {
        #[cfg(feature = "secure")]
        // SAFETY: the segment is unchanged where it was; its guards hold no data.
        unsafe {
            protect_guards(os, segment, true)
        };
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
    seg.set_cookie();
    #[cfg(not(feature = "small"))]
    seg.fill_slice_pages();
    seg.region = new_seg as *mut u8;
    seg.region_size = r.size;
    seg.committed = r.size;
    seg.segment_size = new_seg_size;
    // SAFETY: a huge segment has one page: `0 < capacity`.
    let page = unsafe { seg.page(0) };
    #[cfg_attr(feature = "small", allow(unused_variables))] // (computed: `Page::page_start`)
    let (start, psize) = seg.page_area(0);
    // SAFETY: the page metadata lies in the moved header; the page is in no queue and its
    // block is the caller's (the `# Safety` contract), so nothing else refers to it; `seg`
    // is no longer used.
    let pg = unsafe { &mut *page };
    #[cfg(not(feature = "small"))]
    {
        pg.page_start = start;
    }
    huge_set_block_size(os, pg, psize);
    #[cfg(feature = "secure")]
    // SAFETY: the moved segment's guard pages (its new end) hold no data.
    unsafe {
        protect_guards(os, new_seg, true)
    };
    #[cfg(feature = "std")]
    crate::segment_map::set(new_seg as usize, true);
    // SAFETY: the segment is live at `new_seg`, and in no list of all segments (unlinked
    // before the move).
    unsafe { ctx.link(new_seg) };
    page
}

/// Secure mode: protects (`on`) or opens the guard pages of `segment` (see
/// [`Segment::guard`]): the end of its header, and the end of a large or huge segment.
///
/// # Safety
/// `segment` is live and its header written; no data lives in its guard ranges.
#[cfg(feature = "secure")]
unsafe fn protect_guards(os: &Os, segment: *mut Segment, on: bool) {
    // SAFETY: the segment is live (the `# Safety` contract); the reference ends here.
    let (guard, info_size, segment_size, kind) = unsafe {
        let s = &*segment;
        (s.guard, s.info_size, s.segment_size, s.kind)
    };
    if guard == 0 {
        return;
    }
    let base = segment as *mut u8;
    let mut ranges = [info_size - guard, usize::MAX];
    if matches!(kind, SegmentKind::Large | SegmentKind::Huge) {
        ranges[1] = segment_size - guard;
    }
    for off in ranges {
        if off == usize::MAX {
            continue;
        }
        // SAFETY: `off` is a page-aligned offset inside the live segment (the header and
        // segment sizes are multiples of the OS page, `guard` is one), so the range is a
        // page of its region, not null; no data lives there (the `# Safety` contract).
        unsafe { os.protect(NonNull::new_unchecked(base.wrapping_add(off)), guard, on) };
    }
}

// ---------------------------------------------------------------------------------------
// small geometry: pages as runs of slices

/// Slices (512 bytes) of a page of blocks of `block_size` in the small geometry: the
/// fewest that hold a block and leave at most an eighth unused (small pages keep many size
/// classes live in a small heap; the waste bound keeps a fill efficient).
#[cfg(feature = "small")]
fn span_slices(block_size: usize, at_least: usize) -> usize {
    let least = block_size.div_ceil(SMALL_PAGE_SIZE).max(at_least).max(1);
    (least..least + 8)
        .find(|&k| (k * SMALL_PAGE_SIZE) % block_size <= k * SMALL_PAGE_SIZE / 8)
        .unwrap_or(least)
}

/// Longest page (in slices) that a size class grows to when its pages keep running out
/// (see `SegmentsTld::span_grow`): 2 KiB.
#[cfg(feature = "small")]
const SPAN_GROW_MAX: usize = 2;

/// Bytes of the page of `k` slices from slice `idx` (the first slice loses the header).
#[cfg(feature = "small")]
fn span_area(seg: &Segment, idx: usize, k: usize) -> usize {
    let (_, first) = seg.page_area(idx);
    first + (k - 1) * SMALL_PAGE_SIZE
}

/// Slices of the page whose entry is `idx`: its own and the following entries that point
/// back to it.
#[cfg(feature = "small")]
fn span_len(seg: &Segment, idx: usize) -> usize {
    let mut k = 1;
    // SAFETY: `idx + k < capacity`: entries of the live header.
    while idx + k < seg.capacity && unsafe { (*seg.page(idx + k)).span_offset } as usize == k {
        k += 1;
    }
    k
}

/// Where in `seg` a page of `k` slices for blocks of `block_size` fits best: the first
/// place in the shortest maximal run of free slices that holds it, and that run's length.
/// Best fit keeps the long runs of free slices for long pages (the runs of
/// `embedded::Heap` and blocks of a few KiB), where the first fit in address order cut
/// them up with pages of one slice (the mixed fill of the Cortex-M bench: 80.4 % of
/// LlffHeap's live bytes with runs and first fit, 81.1 % with best fit).
#[cfg(feature = "small")]
fn span_find(seg: &Segment, k: usize, block_size: usize) -> Option<(usize, usize)> {
    if k > seg.capacity {
        return None;
    }
    // The free slices as bits (in 32 bits: a segment has at most 32 slices; bits past
    // `capacity` are not free, so no run leaves the segment), taken one maximal run at a
    // time: a few instructions per run, at most 16 runs.
    let mut free =
        (!seg.slices_used & crate::segment::slice_mask(seg.first_page, seg.capacity)) as u32;
    let mut best: Option<(usize, usize)> = None;
    while free != 0 {
        let start = free.trailing_zeros() as usize;
        let len = (!(free >> start)).trailing_zeros() as usize;
        if len >= k && best.is_none_or(|(_, l)| len < l) {
            // (A run shortened by the header must keep 3/4 of its length or hold a few
            // blocks: a page of a block or two in a scrap of a slice would cost its class
            // another page soon.)
            if let Some(i) = (start..=start + len - k).find(|&i| {
                let area = span_area(seg, i, k);
                area >= block_size
                    && (area * 4 >= k * SMALL_PAGE_SIZE * 3 || area >= 4 * block_size)
            }) {
                debug_assert_eq!(seg.slices_used & crate::segment::slice_mask(i, i + k), 0);
                best = Some((i, len));
                if len == k {
                    break; // none fits better
                }
            }
        }
        free &= !(crate::segment::slice_mask(start, start + len) as u32);
    }
    best
}

#[cfg(feature = "small")]
const _: () = assert!(
    SMALL_PAGES_PER_SEGMENT <= 32,
    "span_find keeps a segment's slices in 32 bits"
);

/// Claims a page of slices for blocks of `block_size` (small geometry): best fit over the
/// owner's segments with free slices, else in a new segment. Null when out of memory.
#[cfg(feature = "small")]
fn span_alloc(ctx: &mut SegmentsTld, block_size: usize) -> *mut Page {
    // A class whose pages keep running out gets a longer page (fewer trips through the
    // slow path), while memory lasts; otherwise, and when that fails, the shortest one
    // that wastes at most an eighth (many size classes live in a small heap, each holding
    // a page); when memory is short, the fewest slices that hold one block, whatever they
    // waste (a page of 5 slices for two blocks of 1280 bytes may no longer fit where a page
    // of 3 slices for one does).
    let shortest = span_slices(block_size, 1);
    let grow = core::mem::take(&mut ctx.span_grow).min(SPAN_GROW_MAX);
    if grow > shortest {
        let page = span_alloc_k(ctx, span_slices(block_size, grow), block_size);
        if !page.is_null() {
            return page;
        }
    }
    let page = span_alloc_k(ctx, shortest, block_size);
    let fewest = block_size.div_ceil(SMALL_PAGE_SIZE).max(1);
    if !page.is_null() || fewest >= shortest {
        return page;
    }
    span_alloc_k(ctx, fewest, block_size)
}

/// [`span_alloc`] of a page of `k` slices.
#[cfg(feature = "small")]
fn span_alloc_k(ctx: &mut SegmentsTld, k: usize, block_size: usize) -> *mut Page {
    let mut s = ctx
        .free_queue(SegmentKind::Small)
        .map_or(ptr::null_mut(), |q| q.first);
    // best fit over the segments with free slices (`span_find`): a number of segments
    // bounded by the heap's size, not by the blocks live
    let mut best: Option<(*mut Segment, usize, usize)> = None;
    while !s.is_null() {
        // SAFETY: segments of the owner's free queue are live and the calling thread's.
        if let Some((idx, len)) = span_find(unsafe { &*s }, k, block_size) {
            if best.is_none_or(|(_, _, l)| len < l) {
                best = Some((s, idx, len));
                if len == k {
                    break; // none fits better
                }
            }
        }
        // SAFETY: `s` is a member of the free queue.
        s = unsafe { crate::list::List::<Segment, crate::segment::FreeQueue>::next(s) };
    }
    if let Some((s, idx, _)) = best {
        // SAFETY: `s` is `ctx`'s, slices `idx..idx + k` are free.
        return unsafe { span_claim(ctx, s, idx, k) };
    }
    // A new segment; when no whole one fits any more, a shorter one (the end of the heap's
    // memory, less than a segment from its last grid point, still serves).
    // (Lengths the source failed to give since memory last came back are not asked again.)
    let mut s = ptr::null_mut();
    for slices in (k..ctx.source_fails_from.min(SMALL_PAGES_PER_SEGMENT + 1)).rev() {
        s = segment_alloc_sized(ctx, SegmentKind::Small, 0, 0, slices);
        if !s.is_null() {
            break;
        }
        ctx.source_fails_from = slices;
    }
    if s.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a fresh segment of ours.
    let found = span_find(unsafe { &*s }, k, block_size);
    let page = match found {
        // SAFETY: `s` is `ctx`'s, slices `idx..idx + k` are free.
        Some((idx, _)) => unsafe { span_claim(ctx, s, idx, k) },
        None => ptr::null_mut(), // larger than a segment holds: cannot happen below LARGE
    };
    if page.is_null() {
        // SAFETY: `s` is `ctx`'s and has no page in use.
        unsafe { segment_free(Some(ctx), s) };
    }
    page
}

/// Claims slices `idx..idx + k` of `segment` as one page (committing what is not).
///
/// # Safety
/// `segment` is a segment of `ctx`, the calling thread's; those slices are free.
#[cfg(feature = "small")]
unsafe fn span_claim(
    ctx: &mut SegmentsTld,
    segment: *mut Segment,
    idx: usize,
    k: usize,
) -> *mut Page {
    // The header is reached through `segment` (raw) for every access, never through a
    // `&mut Segment` held across them: in the small geometry the first page entries lie
    // inside the `Segment` struct's bytes, so a write to an entry (through `Segment::page`'s
    // pointer) would invalidate such a reference (Miri's aliasing models report it).
    // SAFETY: the segment is live and ours (the contract), so no other thread reads or
    // writes its header; `idx + j < capacity` (the run was found inside the segment) and
    // those entries are not in use, so only we refer to them; the shared references made
    // for the `page_area`/`page`/`has_room` calls end with each call; `os` was set at
    // creation from the owner's `&'static Os`; the commit is of a slice of the segment's
    // live region from `os`, page aligned.
    unsafe {
        let os: &'static Os = &*(*segment).os;
        for j in 0..k {
            let (start, size) = (*segment).page_area(idx + j);
            let entry = (*segment).page(idx + j);
            if !(*entry).is_committed {
                match os.commit(NonNull::new_unchecked(start), size) {
                    Some(zero) => {
                        (*entry).is_committed = true;
                        (*entry).is_zero_init = zero;
                        (*segment).committed += size;
                    }
                    None => return ptr::null_mut(), // nothing marked yet: a clean failure
                }
            }
        }
        let head_zero = (0..k).all(|j| (*(*segment).page(idx + j)).is_zero_init);
        for j in 1..k {
            (*(*segment).page(idx + j)).span_offset = j as u8;
        }
        let head = (*segment).page(idx);
        let mask = crate::segment::slice_mask(idx, idx + k);
        (*head).is_zero_init = head_zero;
        (*head).segment_in_use = true;
        (*segment).slices_used |= mask;
        (*segment).purge_mask &= !mask;
        (*segment).used += 1;
        if !(*segment).has_room() {
            ctx.free_queue_remove(segment);
        }
        os.stats.pages.add(1);
        head
    }
}

/// Frees the slices of the page whose entry is `idx` (its metadata already reset).
#[cfg(feature = "small")]
unsafe fn span_release(segment: *mut Segment, idx: usize) {
    // Through the raw pointer, as in `span_claim` (entries may lie inside the struct).
    // SAFETY: the segment is live and the calling thread's (caller); `idx + j < capacity`
    // (`span_len` stays inside): entries of its header, which only this thread touches.
    unsafe {
        let k = span_len(&*segment, idx);
        for j in 1..k {
            (*(*segment).page(idx + j)).span_offset = 0;
        }
        (*segment).slices_used &= !crate::segment::slice_mask(idx, idx + k);
    }
}
