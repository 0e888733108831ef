//! Domain accounting above the page source, as mimalloc's `os.c`: every call the core
//! makes into the [`PageSource`] goes through [`Os`], which keeps
//! - the memory limit (bytes reserved from the source, capped),
//! - the statistics of reserved, committed and purged bytes,
//! - the segment-region cache (`cache`),
//! - the clock and the purge delay.
//!
//! Nothing here knows segments, pages or heaps: it deals in regions and byte ranges.

use crate::sync::{AtomicIsize, AtomicUsize, Ordering};
use core::ptr::NonNull;

use crate::cache::{Cached, RegionCache};
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
        }
    }

    #[inline]
    pub(crate) fn config(&self) -> SourceConfig {
        self.source.config()
    }

    /// The OS page size, at least `MIN_OS_PAGE` (4 KiB; 256 bytes in the small geometry).
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
        Some(region)
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

    /// A cached region of `min..=max` bytes (sources without reserve). It stays counted as
    /// reserved, and counts as committed in full from now on.
    pub(crate) fn cache_take(&self, min: usize, max: usize) -> Option<Region> {
        let c = self.cache.take(min, max)?;
        self.stats.committed.add(c.size as i64 - c.committed as i64);
        Some(Region {
            // SAFETY: cached regions came from the source, never null.
            ptr: unsafe { NonNull::new_unchecked(c.ptr) },
            size: c.size,
            committed: true,
            zeroed: false,
        })
    }

    /// Keeps an unused region for reuse a while (ten purge delays), or gives it back to
    /// the source when the cache is full (evicting the oldest).
    ///
    /// # Safety
    /// As for `free`: the region is exactly one from `alloc`, unused from now on.
    pub(crate) unsafe fn cache_put(&self, ptr: NonNull<u8>, size: usize, committed: usize) {
        let delay = self.purge_delay().max(1) as u64;
        let entry = Cached {
            ptr: ptr.as_ptr(),
            size,
            committed,
            expire: self.now().saturating_add(delay * 10),
        };
        if let Some(e) = self.cache.put(entry) {
            // SAFETY: the cache handed it back, so it is ours and unused.
            unsafe { self.free_cached(e) };
        }
    }

    /// Gives cached regions whose delay ran out (all with `force`) back to the source.
    pub(crate) fn cache_collect(&self, force: bool) {
        if self.cache.is_empty() {
            return; // the common case, without touching the lock
        }
        let now = self.now();
        while let Some(e) = self.cache.take_expired(now, force) {
            // SAFETY: taken out of the cache, so ours alone and unused.
            unsafe { self.free_cached(e) };
        }
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
