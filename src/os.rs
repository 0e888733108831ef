//! Domain accounting above the page source, as mimalloc's `os.c`: every call the core
//! makes into the [`PageSource`] goes through [`Os`], which keeps
//! - the memory limit (bytes reserved from the source, capped),
//! - the statistics of reserved, committed and purged bytes,
//! - the segment-region cache (`cache`),
//! - the clock and the purge delay.
//!
//! Nothing here knows segments, pages or heaps: it deals in regions and byte ranges.

use crate::sync::{AtomicIsize, AtomicPtr, AtomicUsize, Ordering};
use core::ptr::NonNull;

use crate::cache::{Cached, Due, RegionCache};
use crate::source::{PageSource, Region, SourceConfig};
use crate::stats::AtomicStats;

/// Default purge delay, in milliseconds (with a clock).
pub const DEFAULT_PURGE_DELAY: i64 = 10;
/// Default purge delay without a clock, in allocation slow-path events (of all heaps).
pub const DEFAULT_PURGE_DELAY_TICKS: i64 = 1000;

/// A page source with its accounting. See the module documentation.
///
/// Invariants: `reserved` = bytes of the live regions from `alloc` (cached ones included)
/// and never more than a non-zero `limit` (except when the limit was lowered below it);
/// `stats.reserved` and `stats.committed` count the same regions, `committed` by what each
/// caller reported committing.
pub(crate) struct Os {
    pub source: &'static dyn PageSource,
    pub stats: AtomicStats,
    cache: RegionCache,
    /// Purge delay in time units of `now()`; negative = never purge.
    purge_delay: AtomicIsize,
    /// Most bytes that may be reserved from the source (0 = no limit), and how many are.
    limit: AtomicUsize,
    reserved: AtomicUsize,
    /// Milliseconds since some start; without a clock, time counts slow-path events.
    clock: Option<fn() -> u64>,
    ticks: AtomicUsize,
    /// Purge delays a region stays resident in the cache (see `cache_delay`).
    cache_mult: AtomicUsize,
    /// The most bytes of live regions held recently (see `Os::note_live_at`).
    live_peak: LivePeak,
    /// Secure mode: whether the source protects memory (guard pages): `GUARDS_UNKNOWN`
    /// until the first guard page was asked for, then `GUARDS_YES` or `GUARDS_NO`.
    #[cfg(feature = "secure")]
    guards: crate::sync::AtomicU8,
    /// The spare huge region: the region of an emptied huge segment kept for the next huge
    /// block of any heap (null: none), and the bytes it holds committed (a hint for who
    /// looks without taking it). Taken by a swap; see `segment_alloc::huge_spare_take`.
    pub(crate) huge_spare: AtomicPtr<u8>,
    pub(crate) huge_spare_committed: AtomicUsize,
    /// The most committed memory the spare huge region may hold (see
    /// `Domain::set_spare_limit`; [`HUGE_SPARE_MAX`] at most).
    pub(crate) huge_spare_limit: AtomicUsize,
    /// 1: segments made from now on are advised for large OS pages, not only huge ones
    /// (see `Domain::set_large_os_pages`); 0: huge ones only.
    large_os_pages: AtomicUsize,
}

/// The most committed memory the spare huge region may hold, and its default limit (see
/// `segment_alloc`'s spare paths and `Domain::set_spare_limit`). 16 MiB: a buffer grown to
/// 8 MiB and its room ahead (`segment_alloc::HUGE_AHEAD_MAX`) fit.
pub(crate) const HUGE_SPARE_MAX: usize = 16 << 20;

#[cfg(feature = "secure")]
const GUARDS_UNKNOWN: u8 = 0;
#[cfg(feature = "secure")]
const GUARDS_YES: u8 = 1;
#[cfg(feature = "secure")]
const GUARDS_NO: u8 = 2;

/// Least and most purge delays a cached region stays resident (see `Os::cache_delay`); the
/// most is also how long it stays mapped once purged. With the default delay of 10 ms:
/// 100 ms to 1 s (mimalloc v3 purges after 1 s, v2 its arenas after 100 ms).
const CACHE_MULT_MIN: usize = 10;
const CACHE_MULT_MAX: usize = 100;
/// The cache's resident stage holds at most this fraction of the bytes in use, or this
/// fraction of what the program held lately beyond what it holds now, the larger (see
/// `Os::cache_trim`).
const CACHE_RESIDENT_DIV: usize = 16;
const CACHE_PEAK_DIV: usize = 2;
/// The recent peak of the bytes in use is the most of the last one or two windows of this
/// many purge delays (100 to 200 ms with the default delay).
const PEAK_WINDOW_MULT: u64 = CACHE_MULT_MIN as u64;

/// A cached region is split (`Os::cache_split`) only when the rest that stays cached is
/// at least as large as the part taken, or at least this large: a pile of small rests that
/// fit no request would hold address space (and resident memory) for nothing (the
/// replaced huge blocks of 5-25 MiB of tests/huge_reuse.rs reserved 1.4-1.6 times their
/// live bytes at the peak with every rest kept, 1.1-1.25 with this bound).
const SPLIT_REST_MIN: usize = 16 << 20;

/// The most bytes of live (not cached) regions held in the last one or two windows of
/// time: a sliding maximum over two buckets, `cur` since `start` and `prev` the window
/// before. Updated with relaxed atomics on slow paths (a region mapped or taken out of the
/// cache, the cache trimmed); a race loses at most one update, which only makes the
/// cache's bound a little tighter or looser for a moment (a heuristic, never a safety
/// matter).
struct LivePeak {
    cur: AtomicUsize,
    prev: AtomicUsize,
    start: crate::sync::AtomicI64,
}

impl LivePeak {
    const fn new() -> Self {
        LivePeak {
            cur: AtomicUsize::new(0),
            prev: AtomicUsize::new(0),
            start: crate::sync::AtomicI64::new(0),
        }
    }

    /// Moves the buckets on to `now` (windows of `window`), and returns the recent peak
    /// with `live` counted in.
    fn note(&self, live: usize, now: u64, window: u64) -> usize {
        let start = self.start.load(Ordering::Relaxed) as u64;
        if now >= start.saturating_add(window) {
            // a new window: the last one becomes `prev`, unless it ended long ago
            let last = if now >= start.saturating_add(window.saturating_mul(2)) {
                0
            } else {
                self.cur.load(Ordering::Relaxed)
            };
            self.prev.store(last, Ordering::Relaxed);
            self.cur.store(live, Ordering::Relaxed);
            self.start
                .store(now.min(i64::MAX as u64) as i64, Ordering::Relaxed);
            return last.max(live);
        }
        self.cur.fetch_max(live, Ordering::Relaxed);
        self.cur
            .load(Ordering::Relaxed)
            .max(self.prev.load(Ordering::Relaxed))
            .max(live)
    }
}

impl Os {
    pub(crate) const fn new(source: &'static dyn PageSource, clock: Option<fn() -> u64>) -> Self {
        Os {
            source,
            stats: AtomicStats::new(),
            cache: RegionCache::new(),
            purge_delay: AtomicIsize::new(if clock.is_some() {
                DEFAULT_PURGE_DELAY as isize
            } else {
                DEFAULT_PURGE_DELAY_TICKS as isize
            }),
            limit: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            clock,
            ticks: AtomicUsize::new(0),
            cache_mult: AtomicUsize::new(CACHE_MULT_MIN),
            live_peak: LivePeak::new(),
            #[cfg(feature = "secure")]
            guards: crate::sync::AtomicU8::new(GUARDS_UNKNOWN),
            huge_spare: AtomicPtr::new(core::ptr::null_mut()),
            huge_spare_committed: AtomicUsize::new(0),
            huge_spare_limit: AtomicUsize::new(HUGE_SPARE_MAX),
            large_os_pages: AtomicUsize::new(0),
        }
    }

    /// Secure mode: the size of a guard page (the OS page), or 0 once the source turned
    /// out to protect no memory (the region source, a kernel's frames without `protect`):
    /// segments then spend no room on guards.
    #[cfg(feature = "secure")]
    #[inline]
    pub(crate) fn guard_size(&self) -> usize {
        if self.guards.load(Ordering::Relaxed) == GUARDS_NO {
            0
        } else {
            self.page_size()
        }
    }

    /// Secure mode: makes a range inaccessible (`on`, a guard page) or accessible again,
    /// through the source's `protect`; remembers whether the source can (see
    /// [`Os::guard_size`]). Returns whether it did.
    ///
    /// # Safety
    /// The range lies inside a live region from `alloc`, page aligned and page sized, and
    /// holds no live data while it is protected.
    #[cfg(feature = "secure")]
    pub(crate) unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, on: bool) -> bool {
        // SAFETY: the `# Safety` contract is the source's.
        let ok = unsafe { self.source.protect(ptr, size, on) };
        if on {
            let _ = self.guards.compare_exchange(
                GUARDS_UNKNOWN,
                if ok { GUARDS_YES } else { GUARDS_NO },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        ok
    }

    #[inline]
    pub(crate) fn config(&self) -> SourceConfig {
        self.source.config()
    }

    /// The OS page size, at least `MIN_OS_PAGE` (4 KiB; 16 bytes in the small geometry).
    #[inline]
    pub(crate) fn page_size(&self) -> usize {
        self.config().page_size.max(crate::size_class::MIN_OS_PAGE)
    }

    /// Domain time: milliseconds with a clock, else a count of slow-path events.
    pub(crate) fn now(&self) -> u64 {
        match self.clock {
            Some(c) => c(),
            None => self.ticks.load(Ordering::Relaxed) as u64,
        }
    }

    /// Advances clock-less time (called on allocation slow paths).
    pub(crate) fn tick(&self) {
        if self.clock.is_none() {
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn purge_delay(&self) -> i64 {
        self.purge_delay.load(Ordering::Relaxed) as i64
    }

    pub(crate) fn set_purge_delay(&self, delay: i64) {
        // (an `isize` holds any sensible delay; clamping keeps "never" negative)
        let delay = delay.clamp(isize::MIN as i64, isize::MAX as i64) as isize;
        self.purge_delay.store(delay, Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether segments made from now on are advised for large OS pages (huge segments
    /// always are).
    #[inline]
    pub(crate) fn large_os_pages(&self) -> bool {
        self.large_os_pages.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn set_large_os_pages(&self, on: bool) {
        self.large_os_pages.store(on as usize, Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed)
    }

    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more as reserved if that stays within the limit.
    pub(crate) fn reserve_within_limit(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let prev = self.reserved.fetch_add(bytes, Ordering::Relaxed);
        if limit != 0 && prev.saturating_add(bytes) > limit {
            self.reserved.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(crate) fn unreserve(&self, bytes: usize) {
        self.reserved.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A region of at least `size` bytes aligned to `align` from the source, within the
    /// limit (cached regions are given back first when they stand in the way). A committed
    /// region counts as committed in full. `None` when out of memory or past the limit.
    ///
    /// # Safety
    /// `size` is a non-zero multiple of the allocation granularity, `align` a power of two
    /// at least the OS page size.
    pub(crate) unsafe fn alloc(&self, size: usize, align: usize, commit: bool) -> Option<Region> {
        if !self.reserve_within_limit(size) {
            self.cache_collect(true);
            if !self.reserve_within_limit(size) {
                return None;
            }
        }
        // SAFETY: `size` is a non-zero multiple of the allocation granularity and `align` a
        // power of two at least the page size (the `# Safety` contract), as the source's
        // `alloc` requires of its callers.
        let Some(region) = (unsafe { self.source.alloc(size, align, commit) }) else {
            self.unreserve(size);
            return None;
        };
        if region.size != size {
            // the source rounded up: count what it really gave
            self.reserved.fetch_add(region.size, Ordering::Relaxed);
            self.unreserve(size);
        }
        self.stats.reserved.add(region.size as i64);
        if region.committed {
            self.stats.committed.add(region.size as i64);
        }
        self.note_live_at(self.now());
        Some(region)
    }

    /// `bytes` rounded up to whole allocation units of the source (its granularity, at
    /// least an OS page): the size of a region [`alloc_committed`](Self::alloc_committed)
    /// hands out.
    pub(crate) fn round_to_alloc(&self, bytes: usize) -> usize {
        let cfg = self.config();
        let gran = cfg.alloc_granularity.max(cfg.page_size);
        (bytes + gran - 1) & !(gran - 1)
    }

    /// A committed, page-aligned region of `round_to_alloc(bytes)` bytes for the
    /// allocator's own structures (thread data, a sub-process); None when out of memory.
    /// It goes back with `free(ptr, round_to_alloc(bytes), round_to_alloc(bytes))`.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn alloc_committed(&self, bytes: usize) -> Option<NonNull<u8>> {
        let size = self.round_to_alloc(bytes);
        // SAFETY: `size` is a multiple of the granularity, the alignment the OS page.
        let region = unsafe { self.alloc(size, self.config().page_size, true) }?;
        // SAFETY: the range is the region just allocated.
        if !region.committed && unsafe { self.commit(region.ptr, size) }.is_none() {
            // SAFETY: giving back the unused region.
            unsafe { self.free(region.ptr, region.size, 0) };
            return None;
        }
        debug_assert!(region.size >= bytes);
        Some(region.ptr)
    }

    /// Gives a region back to the source; `committed` is how many of its bytes are counted
    /// as committed.
    ///
    /// # Safety
    /// `ptr`/`size` are exactly a live region from `alloc`, unused from now on.
    pub(crate) unsafe fn free(&self, ptr: NonNull<u8>, size: usize, committed: usize) {
        self.stats.committed.sub(committed as i64);
        self.stats.reserved.sub(size as i64);
        // SAFETY: `ptr`/`size` are exactly a live region from `alloc`, so from
        // `self.source`, given back once and unused from now on (the `# Safety` contract).
        unsafe { self.source.free(ptr, size) };
        self.unreserve(size);
    }

    /// Commits a range; `Some(zeroed)` on success.
    ///
    /// # Safety
    /// The range lies inside a live region from `alloc`; `ptr` is page aligned and `size` a
    /// non-zero multiple of the page size.
    pub(crate) unsafe fn commit(&self, ptr: NonNull<u8>, size: usize) -> Option<bool> {
        // SAFETY: the range is page aligned, page-sized, and inside one live region of
        // `self.source` (the `# Safety` contract), as the source's `commit` requires.
        let zeroed = unsafe { self.source.commit(ptr, size) }.ok()?;
        self.stats.committed.add(size as i64);
        Some(zeroed)
    }

    /// Purges a range that holds no live data; returns whether it needs a recommit (it is
    /// then no longer counted as committed).
    ///
    /// # Safety
    /// The range lies inside a live region from `alloc` and holds no live data; `ptr` is
    /// page aligned and `size` a non-zero multiple of the page size.
    pub(crate) unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the range is page aligned, page-sized, inside one live region of
        // `self.source`, and holds no live data (the `# Safety` contract), as the source's
        // `decommit` requires.
        let needs_recommit = unsafe { self.source.decommit(ptr, size) };
        if needs_recommit {
            self.stats.committed.sub(size as i64);
        }
        self.stats.purged.fetch_add(size as i64, Ordering::Relaxed);
        needs_recommit
    }

    /// Resizes a whole committed region with the source's `remap` (the limit is checked
    /// for growth). On success the old region is gone and the new one is counted
    /// (reserved and committed in full); `None` leaves everything as it was.
    ///
    /// # Safety
    /// `ptr`/`old_size` are exactly a live, fully committed region from `alloc` that counts
    /// `old_committed` committed bytes; `new_size` is a non-zero multiple of the allocation
    /// granularity and `align` a power of two at least the page size. On success the old
    /// region is neither used nor freed any more.
    pub(crate) unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        old_committed: usize,
        new_size: usize,
        align: usize,
    ) -> Option<Region> {
        if new_size > old_size && !self.reserve_within_limit(new_size - old_size) {
            return None;
        }
        // SAFETY: `ptr`/`old_size` are exactly a live committed region of `self.source`,
        // the sizes and `align` are as the source's callers guarantee, and on success the
        // old region is not used again (the `# Safety` contract).
        let moved = unsafe { self.source.remap(ptr, old_size, new_size, align) };
        let Some(r) = moved else {
            if new_size > old_size {
                self.unreserve(new_size - old_size);
            }
            return None;
        };
        // `reserved` now holds max(old, new) bytes for it: bring it to `r.size`
        let held = old_size.max(new_size);
        if r.size > held {
            self.reserved.fetch_add(r.size - held, Ordering::Relaxed);
        } else {
            self.unreserve(held - r.size);
        }
        self.stats.reserved.add(r.size as i64 - old_size as i64);
        self.stats
            .committed
            .add(r.size as i64 - old_committed as i64);
        Some(r)
    }

    /// Tells the source whether the range will hold large blocks.
    ///
    /// # Safety
    /// The range lies inside a live region from `alloc`; `ptr` is page aligned and `size` a
    /// non-zero multiple of the page size.
    pub(crate) unsafe fn advise_large_pages(&self, ptr: NonNull<u8>, size: usize, large: bool) {
        // SAFETY: the range is page aligned, page-sized, and inside one live region of
        // `self.source` (the `# Safety` contract), as the source's method requires.
        unsafe { self.source.advise_large_pages(ptr, size, large) }
    }

    /// Whether the cache holds a resident region of at least `size` bytes, one that
    /// [`Os::cache_take_resized`] would serve a request of `size` bytes with, whole, split
    /// or shrunk, without growing it into fresh memory.
    pub(crate) fn cache_has_resident(&self, size: usize) -> bool {
        self.cache.has_resident(size)
    }

    /// A cached region of `min..=max` bytes (sources without reserve), the smallest (the
    /// largest with `largest`), and whether it was last advised for large OS pages. It
    /// stays counted as reserved, and counts as committed in full from now on. With
    /// `split = Some((keep, at))`, a region larger than `keep` bytes is split where the
    /// source allows (see [`Os::cache_split`]): the caller gets its first `keep` bytes.
    /// `purged`: a purged region may serve (else resident ones only).
    fn cache_take_ex(
        &self,
        min: usize,
        max: usize,
        largest: bool,
        large: bool,
        split: Option<(usize, usize)>,
        purged: bool,
    ) -> Option<(Region, bool)> {
        let mut c = self.cache.take(min, max, largest, large, purged)?;
        let node = crate::cache::node_of(&c) as usize;
        if let Some((keep, at)) = split {
            // SAFETY: `c` was just taken out of the cache; `keep` and `at` are the caller's.
            unsafe { self.cache_split(&mut c, keep, at) };
        }
        // SAFETY: `c` was taken out of the cache (and split), ours alone and unused.
        if large && !unsafe { self.drop_node_page(&mut c, node) } {
            return None;
        }
        Some(self.cache_taken(c))
    }

    /// A purged region taken for a huge block: purges the large OS page (2 MiB) around the
    /// page that held its node (`node`), when that lies in `c`. That page was kept while
    /// the rest was purged, and a large OS page with one page in it keeps its page table:
    /// the block would fault the other 511 pages in 4 KiB at a time (one fault with the
    /// page table gone: the kernel frees an emptied one when a purge covers all of it).
    /// Returns false when the region is no longer usable (a purge that needed a recommit
    /// that failed): it was given back to the source.
    ///
    /// # Safety
    /// `c` was taken out of the cache, ours alone and unused; `node` is where its node was.
    unsafe fn drop_node_page(&self, c: &mut Cached, node: usize) -> bool {
        const LARGE_PAGE: usize = 2 << 20;
        let from = node & !(LARGE_PAGE - 1);
        let start = c.ptr as usize;
        if !c.purged || from < start || from + LARGE_PAGE > start + c.size {
            return true;
        }
        // SAFETY: inside a cached region: not null.
        let at = unsafe { NonNull::new_unchecked(from as *mut u8) };
        if self.config().has_reserve || !self.source.splits_regions(at) {
            return true;
        }
        // SAFETY: the range lies inside the region, which is ours and unused (the
        // `# Safety` contract); page aligned and sized.
        if unsafe { self.decommit(at, LARGE_PAGE) } {
            c.committed -= LARGE_PAGE;
            // SAFETY: as just said.
            if unsafe { self.commit(at, LARGE_PAGE) }.is_none() {
                // SAFETY: taken out of the cache, ours alone and unused.
                unsafe { self.free_cached(*c) };
                return false;
            }
            c.committed += LARGE_PAGE;
        }
        true
    }

    /// Counts a region taken out of the cache as live: committed in full, in the recent
    /// peak; a purged one tells the resident stage to last longer.
    fn cache_taken(&self, c: Cached) -> (Region, bool) {
        if c.purged {
            // purged too early: it was needed again (and now faults back in)
            let m = self.cache_mult.load(Ordering::Relaxed);
            self.cache_mult
                .store((m * 2).min(CACHE_MULT_MAX), Ordering::Relaxed);
        }
        self.stats.committed.add(c.size as i64 - c.committed as i64);
        self.note_live_at(self.now());
        let region = Region {
            // SAFETY: cached regions came from the source, never null.
            ptr: unsafe { NonNull::new_unchecked(c.ptr) },
            size: c.size,
            committed: true,
            zeroed: false,
        };
        (region, c.large)
    }

    /// Splits the region `c`, just taken out of the cache, when it is larger than `keep`
    /// bytes and the source allows (`splits_regions`; the whole region counted as
    /// committed): `c` keeps its first `keep` bytes, the part from `at` on goes back into
    /// the cache as a region of its own, at the stage and age `c` had (its memory is as
    /// resident as it was), and what lies between goes back to the source. Instead of
    /// shrinking a cached region by `remap`, which gives its whole tail back to the OS for
    /// the next large block to fault in again (large-realloc: a 32 MiB buffer's region
    /// shrunk to 6 MiB for the next buffer, which then grew back to 32 MiB a page fault at
    /// a time). Returns whether it split.
    ///
    /// # Safety
    /// `c` was taken out of the cache (ours alone, unused); `keep <= at` are multiples of
    /// the OS page, `keep` non-zero, and `at` a multiple of the alignment of cached
    /// regions (so the rest starts aligned as they do).
    unsafe fn cache_split(&self, c: &mut Cached, keep: usize, at: usize) -> bool {
        debug_assert!(keep > 0 && keep <= at);
        if keep >= c.size || c.committed != c.size {
            return false;
        }
        if at < c.size && c.size - at < keep.min(SPLIT_REST_MIN) {
            return false; // a rest this small would rarely fit a request: shrink instead
        }
        // SAFETY: cached regions came from the source, never null.
        if !self
            .source
            .splits_regions(unsafe { NonNull::new_unchecked(c.ptr) })
        {
            return false;
        }
        if at < c.size {
            let rest = Cached {
                ptr: c.ptr.wrapping_add(at),
                size: c.size - at,
                committed: c.size - at,
                ..*c
            };
            // SAFETY: the rest is a region of its own now (the source splits regions),
            // ours alone and unused (`c` was taken out of the cache: the `# Safety`
            // contract); it starts aligned as cached regions are, and is writable where
            // its node goes (the source has no reserve: its memory is always usable, a
            // purged page faults in).
            unsafe { self.cache.put(rest) };
        }
        let gap = at.min(c.size) - keep;
        if gap > 0 {
            // SAFETY: `[keep, at)` is a region of its own now (the source splits regions),
            // inside `c` (ours alone and unused), committed in full; page aligned and sized.
            unsafe { self.free(NonNull::new_unchecked(c.ptr.add(keep)), gap, gap) };
        }
        c.size = keep;
        c.committed = keep;
        true
    }

    /// Joins to the live region `start`/`size` (committed in full, ours) the cached region
    /// that starts where it ends, or its first `need` bytes rounded up to `align` when it
    /// is larger (split, see [`Os::cache_split`]), where the source splits and joins
    /// regions. Returns how many bytes the region grew by (its memory: as resident as it
    /// was in the cache, no page moves, no call to the source) and whether they were last
    /// advised for large OS pages; None when no cached region there has `need` bytes.
    ///
    /// # Safety
    /// `start`/`size` are exactly a live region from `alloc` (or a join of them), committed
    /// in full; on success the caller's region is `size +` the bytes returned, and it
    /// counts that many more bytes committed. `align` is the alignment of cached regions.
    pub(crate) unsafe fn cache_join(
        &self,
        start: NonNull<u8>,
        size: usize,
        need: usize,
        align: usize,
    ) -> Option<(usize, bool)> {
        if need == 0 || self.cache.is_empty() || !self.source.splits_regions(start) {
            return None;
        }
        let end = start.as_ptr().wrapping_add(size);
        let mut c = self.cache.take_at(end)?;
        // SAFETY: a cached region, never null.
        let joinable = self
            .source
            .splits_regions(unsafe { NonNull::new_unchecked(end) });
        if !joinable || c.size < need || c.committed != c.size {
            // SAFETY: taken out of the cache just above, unchanged and unused.
            unsafe { self.cache.put(c) };
            return None;
        }
        let node = crate::cache::node_of(&c) as usize;
        let at = need.div_ceil(align).saturating_mul(align);
        // SAFETY: taken out of the cache just above; `at` (non-zero: `need` is) is a
        // multiple of `align`, the alignment of cached regions.
        unsafe { self.cache_split(&mut c, at, at) };
        // SAFETY: as above (a huge block grows into it).
        if !unsafe { self.drop_node_page(&mut c, node) } {
            return None;
        }
        let (r, large) = self.cache_taken(c);
        Some((r.size, large))
    }

    /// A cached region of at least `size` bytes (aligned to `align`) for a huge block: the
    /// smallest one of `size..=size * 3 / 2` bytes, whole; else the smallest larger one,
    /// split where the source allows (its rest stays cached, resident: [`Os::cache_split`])
    /// or else shrunk with the source's `remap`; else the largest one of at least half the
    /// size, joined with the cached region that follows it where the source allows
    /// ([`Os::cache_join`]), or else grown with `remap` (in place, or moved: its pages move,
    /// nothing is copied and nothing faults in again). Resized regions get `size` rounded
    /// up to `grain` (a large OS page, so that resizing does not split one). A program that
    /// replaces huge blocks of varying sizes then reuses their memory instead of mapping and
    /// faulting in every block, and the cache does not fill up with regions that fit no
    /// request. (`exact`: a region of `size` bytes exactly, for a segment that is not huge;
    /// it is split or resized, never joined, and it prefers regions not advised for large
    /// OS pages; a huge block's prefers those that were, see `RegionCache::take`.)
    ///
    /// `grows`: the huge block is a growing one moving out of its region (see
    /// `SegmentsTld::huge_grows`): a resident region of up to twice `size` that would be
    /// shrunk is taken whole instead, and the block grows into it in place. Shrunk, its
    /// tail went back to the OS, and the block's next growth step faulted the same bytes
    /// in fresh (large-realloc: a `Vec` copied from 8 to 16 MiB into a cached 34 MiB
    /// region shrunk to 18 MiB, then remapped to 34 MiB when it doubled again, 16 MiB of
    /// fresh huge pages each round; ~70 of the run's ~190 MiB of fresh memory).
    ///
    /// Resident regions come first, in every one of these ways, and purged ones only when
    /// no resident one serves: a purged region faults all its memory in again (4 KiB at a
    /// time where it held small OS pages, ~6 us a page on this machine), where splitting,
    /// joining or growing a resident one faults in at most the part that is new. (With
    /// purged regions taken first in each way, large-realloc's 4 MiB segments took purged
    /// regions while resident ones of huge blocks could have been split for them.)
    ///
    /// # Safety
    /// `size` and `grain` are non-zero multiples of the allocation granularity, `align` a
    /// power of two at least the page size that cached regions are aligned to.
    pub(crate) unsafe fn cache_take_resized(
        &self,
        size: usize,
        align: usize,
        grain: usize,
        exact: bool,
        grows: bool,
    ) -> Option<(Region, bool)> {
        if self.cache.is_empty() {
            return None;
        }
        // SAFETY: the caller's contract, passed on.
        if let Some(r) =
            unsafe { self.cache_take_resized_in(size, align, grain, exact, grows, false) }
        {
            return Some(r);
        }
        // SAFETY: as above.
        unsafe { self.cache_take_resized_in(size, align, grain, exact, grows, true) }
    }

    /// One pass of [`Os::cache_take_resized`]: over resident regions only, or (`purged`)
    /// over resident and purged ones.
    ///
    /// # Safety
    /// As for `cache_take_resized`.
    unsafe fn cache_take_resized_in(
        &self,
        size: usize,
        align: usize,
        grain: usize,
        exact: bool,
        grows: bool,
        purged: bool,
    ) -> Option<(Region, bool)> {
        let fit = if exact {
            size
        } else {
            size.saturating_add(size / 2)
        };
        if let Some(r) = self.cache_take_ex(size, fit, false, !exact, None, purged) {
            return Some(r);
        }
        let target = size.div_ceil(grain).saturating_mul(grain);
        // (the rest starts where a segment may: at a multiple of `align`)
        let split_at = size.div_ceil(align).saturating_mul(align);
        let keep = if exact { size } else { target.min(split_at) };
        if let Some((r, large)) = self.cache_take_ex(
            fit + 1,
            usize::MAX,
            false,
            !exact,
            Some((keep, split_at)),
            purged,
        ) {
            if r.size == keep {
                return Some((r, large)); // split: the rest stayed cached
            }
            if grows && !exact && !purged && r.size <= size.saturating_mul(2) {
                return Some((r, large)); // whole: the block grows into it
            }
            // SAFETY: `r` is a whole committed region from `alloc` (taken out of the cache,
            // counted committed in full), ours alone; `target` is a multiple of the
            // granularity and `align` as the caller says.
            match unsafe { self.remap(r.ptr, r.size, r.size, target, align) } {
                Some(shrunk) => return Some((shrunk, large)),
                None => {
                    // SAFETY: taken out of the cache just above, unused.
                    unsafe { self.cache_put(r.ptr, r.size, r.size, large) };
                    return None;
                }
            }
        }
        let (r, large) = self.cache_take_ex(size / 2, size - 1, true, !exact, None, purged)?;
        if !exact {
            // SAFETY: `r` is a whole region, committed in full, ours alone (taken out of
            // the cache); `align` is the caller's.
            let joined = unsafe { self.cache_join(r.ptr, r.size, size - r.size, align) };
            if let Some((joined, joined_large)) = joined {
                // (the caller advises a huge block's region whole for large OS pages when
                // the flag says that some of it was not)
                let grown = Region {
                    size: r.size + joined,
                    ..r
                };
                return Some((grown, large && joined_large));
            }
        }
        // SAFETY: as above.
        match unsafe { self.remap(r.ptr, r.size, r.size, target, align) } {
            Some(grown) => Some((grown, large)),
            None => {
                // SAFETY: taken out of the cache just above, unused.
                unsafe { self.cache_put(r.ptr, r.size, r.size, large) };
                None
            }
        }
    }

    /// Keeps an unused region for reuse: resident for ten purge delays, then purged and
    /// mapped for a hundred (see `cache`). `large`: the region was last advised for large
    /// OS pages.
    ///
    /// # Safety
    /// As for `free`: the region is exactly one from `alloc`, unused from now on; and it is
    /// committed (the source has no reserve).
    pub(crate) unsafe fn cache_put(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        committed: usize,
        large: bool,
    ) {
        let now = self.now();
        let entry = Cached {
            ptr: ptr.as_ptr(),
            size,
            committed,
            expire: now.saturating_add(self.cache_delay(false)),
            since: now,
            purged: false,
            large,
        };
        // SAFETY: the region is ours, unused and committed (the `# Safety` contract), and
        // starts page aligned, so it is writable and aligned for the cache's node.
        unsafe { self.cache.put(entry) };
        self.cache_trim(now);
    }

    /// Bounds the cache's resident stage by the memory in use: while the bytes of its
    /// regions of at most a segment's size (`cache::TRIM_SIZE_MAX`: the larger ones held
    /// huge blocks and keep their time) exceed `1 / CACHE_RESIDENT_DIV` of the bytes of
    /// live (not cached) regions, and
    /// `1 / CACHE_PEAK_DIV` of what the live regions held at their recent peak beyond what
    /// they hold now, its oldest region is purged once it has been cached for one purge
    /// delay, as the emptied pages of a live segment are (rather than the ten to a hundred
    /// delays of a cache within its bound); it stays mapped, so that reusing it costs page
    /// faults but no mapping call. Without the bound, the segments that exiting threads
    /// emptied stayed resident on top of what the program held (peak RSS of mstress 23.6
    /// -> 37 MiB).
    ///
    /// The second term keeps resident part of what threads that come and go give up and
    /// take again soon: with the first alone, the segments of a round of exiting threads
    /// were purged 10 ms later and faulted in again by the next round (mimalloc's
    /// test-stress: 1.1 GiB purged by this trim, 1.0 GiB of it taken again, ~110K page
    /// faults, and half the run's time in the kernel). Since the bytes it allows are bytes
    /// the program held a moment ago, the cache adds to the peak only what a partly
    /// touched live segment holds less than its size; once the peak is more than two
    /// windows old the first term alone holds again.
    fn cache_trim(&self, now: u64) {
        let delay = self.purge_delay();
        if delay < 0 {
            return; // never purge
        }
        let before = now.saturating_sub(delay as u64);
        loop {
            let resident = self.cache.trimmable_bytes();
            let live = self.reserved().saturating_sub(self.cache.bytes().1);
            let peak = self.note_live_at(now);
            if resident
                <= (live / CACHE_RESIDENT_DIV).max(peak.saturating_sub(live) / CACHE_PEAK_DIV)
            {
                return;
            }
            let Some(e) = self.cache.take_oldest_resident(before) else {
                return;
            };
            // SAFETY: taken out of the cache, resident.
            unsafe { self.cache_purge(e, now) };
        }
    }

    /// Counts the bytes of live regions now into the recent peak (see `LivePeak`), and
    /// returns that peak. Called where live regions grow (a region mapped or taken out of
    /// the cache) and where the cache is trimmed.
    fn note_live_at(&self, now: u64) -> usize {
        let live = self.reserved().saturating_sub(self.cache.bytes().1);
        let window = (self.purge_delay().max(1) as u64).saturating_mul(PEAK_WINDOW_MULT);
        self.live_peak.note(live, now, window)
    }

    /// Purges a region taken out of the cache's resident stage (all but the OS page that
    /// holds its node) and puts it back as purged; gives it back to the source when
    /// purged memory would need a recommit.
    ///
    /// # Safety
    /// `e` was taken out of the cache, resident.
    unsafe fn cache_purge(&self, mut e: Cached, now: u64) {
        let keep = self.page_size();
        if e.size > keep {
            // the node's page is kept: the first, or the last of a region of a huge block
            // (see `cache::node_of`)
            let from = if crate::cache::node_at_end(&e) {
                0
            } else {
                keep
            };
            // SAFETY: taken out of the cache, so ours alone and unused; the range without
            // the node's page lies inside the region, page aligned and sized.
            let needs_recommit =
                unsafe { self.decommit(NonNull::new_unchecked(e.ptr.add(from)), e.size - keep) };
            if needs_recommit {
                // no longer usable as it is (the cache serves committed memory)
                e.committed -= e.size - keep;
                // SAFETY: taken out of the cache, so ours alone and unused.
                unsafe { self.free_cached(e) };
                return;
            }
        }
        e.purged = true;
        e.expire = now.saturating_add(self.cache_delay(true));
        // SAFETY: taken out of the cache, so ours alone and unused; its node's page was kept
        // committed.
        unsafe { self.cache.put(e) };
    }

    /// How long a region stays in the cache's resident stage or, once purged, in its purged
    /// stage ([`CACHE_MULT_MAX`] purge delays), in domain time.
    ///
    /// The resident stage adapts to how the program reuses memory, between
    /// [`CACHE_MULT_MIN`] and [`CACHE_MULT_MAX`] purge delays: it doubles when a region is
    /// taken that was purged (purging it was a mistake: it faults back in), and halves
    /// when a purged region goes back to the source unused (purging it was right). So a
    /// program whose threads come and go at a slower beat than ten purge delays keeps its
    /// segments resident between them, and one that stopped needing them gets its memory
    /// back after ten purge delays, as before.
    fn cache_delay(&self, purged: bool) -> u64 {
        let delay = self.purge_delay();
        if delay < 0 && !purged {
            return u64::MAX; // never purge: resident until reused or a forced collection
        }
        let delay = delay.max(1) as u64;
        let mult = if purged {
            CACHE_MULT_MAX
        } else {
            self.cache_mult.load(Ordering::Relaxed)
        };
        delay.saturating_mul(mult as u64)
    }

    /// Moves the cache on: regions resident for their time are purged (and stay mapped),
    /// purged ones whose time ran out go back to the source; with `force`, every cached
    /// region goes back at once.
    pub(crate) fn cache_collect(&self, force: bool) {
        // (the source collects last, so that what the cache gives back now is collected
        // too: a source that keeps freed or decommitted memory mapped for reuse)
        if self.cache.is_empty() {
            self.source.collect(force);
            return; // the common case, without touching the lock
        }
        let now = self.now();
        while let Some((e, due)) = self.cache.take_due(now, force) {
            if due == Due::Purge {
                // SAFETY: taken out of the cache, resident.
                unsafe { self.cache_purge(e, now) };
                continue;
            }
            if !force {
                // unused through its purged stage: purging it was right
                let m = self.cache_mult.load(Ordering::Relaxed);
                self.cache_mult
                    .store((m / 2).max(CACHE_MULT_MIN), Ordering::Relaxed);
            }
            // SAFETY: taken out of the cache, so ours alone and unused.
            unsafe { self.free_cached(e) };
        }
        if !force {
            self.cache_trim(now);
        }
        self.source.collect(force);
    }

    /// # Safety
    /// `e` was taken out of the cache.
    unsafe fn free_cached(&self, e: Cached) {
        // SAFETY: cached regions are regions from `alloc` (`cache_put`), never null.
        let ptr = unsafe { NonNull::new_unchecked(e.ptr) };
        // SAFETY: `e` is exactly a region from `alloc` with its committed count, put in the
        // cache unused and taken out of it by the caller (the `# Safety` contract), so no
        // one else has it.
        unsafe { self.free(ptr, e.size, e.committed) }
    }

    /// Before `fork()`: takes the cache's lock.
    pub(crate) fn fork_lock(&self) {
        self.cache.fork_lock();
    }

    /// After `fork()`: releases the lock taken by `fork_lock`.
    ///
    /// # Safety
    /// `fork_lock` was called on this thread (in this process or its parent).
    pub(crate) unsafe fn fork_release(&self) {
        // SAFETY: `fork_lock` on this thread (the `# Safety` contract) took the cache's lock
        // and forgot its guard, as `RegionCache::fork_release` requires.
        unsafe { self.cache.fork_release() }
    }
}
