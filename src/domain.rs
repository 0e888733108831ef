//! The domain: what the heaps of one allocator share — the page source, the abandoned
//! segments of exited threads, statistics, options and the memory limit.
//!
//! A hosted process has one domain (behind [`ShardAlloc`](crate::ShardAlloc)); a kernel
//! has one for its per-CPU heaps; tests make their own over a [`RegionSource`]
//! (crate::source::RegionSource).

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use crate::heap::{ThreadData, Tld};
use crate::segment::Segment;
use crate::source::{PageSource, SourceConfig};
use crate::stats::{AtomicStats, Stats};

/// Shared state of one allocator instance. See the module documentation.
pub struct Domain {
    pub(crate) source: &'static dyn PageSource,
    pub(crate) stats: AtomicStats,
    abandoned: spin::Mutex<AbandonedList>,
    abandoned_count: AtomicUsize,
    /// Cache of thread data blocks of exited threads (reused by new threads).
    td_cache: spin::Mutex<TdCache>,
    segment_cache: spin::Mutex<SegmentCache>,
    /// Entries in `segment_cache` (read without the lock).
    cache_len: AtomicUsize,
    /// Purge delay in time units of `now()`; negative = never purge.
    purge_delay: AtomicI64,
    /// Most bytes that may be reserved from the source (0 = no limit), and how many are.
    limit: AtomicUsize,
    reserved: AtomicUsize,
    /// Milliseconds since some start; without a clock, time counts slow-path events.
    clock: Option<fn() -> u64>,
    ticks: AtomicUsize,
}

/// A segment region kept for reuse after its segment emptied.
#[derive(Clone, Copy)]
pub(crate) struct Cached {
    pub ptr: *mut u8,
    pub size: usize,
    /// Bytes of it counted in the `committed` statistic.
    pub committed: usize,
    pub expire: u64,
}

const CACHE_MAX: usize = 16;
/// Most bytes the segment cache holds (it keeps memory resident for a while).
const CACHE_BYTES_MAX: usize = 64 << 20;

/// Recently freed segment regions (sources without reserve only: their memory is always
/// committed, so a region can serve any new segment). Reusing one saves the source calls
/// and the page faults of fresh memory; after a delay they go back to the source.
struct SegmentCache {
    entries: [Cached; CACHE_MAX],
    len: usize,
    bytes: usize,
}

impl SegmentCache {
    /// Takes entry `i` out (the last entry moves into its place).
    fn remove(&mut self, i: usize) -> Cached {
        let e = self.entries[i];
        self.len -= 1;
        self.entries[i] = self.entries[self.len];
        self.bytes -= e.size;
        e
    }
}

struct AbandonedList {
    head: *mut Segment,
}

struct TdCache {
    head: *mut ThreadData,
    count: usize,
}

// SAFETY: the raw pointers in the lists are only touched under their mutex; the segments
// and thread data they point to are handed over whole (their owner gave them up).
unsafe impl Send for AbandonedList {}
// SAFETY: as above.
unsafe impl Send for TdCache {}
// SAFETY: the cached regions are owned by the cache alone, touched under its mutex.
unsafe impl Send for SegmentCache {}

const TD_CACHE_MAX: usize = 32;
/// Default purge delay, in milliseconds (with a clock).
pub const DEFAULT_PURGE_DELAY: i64 = 10;
/// Default purge delay without a clock, in allocation slow-path events (of all heaps).
pub const DEFAULT_PURGE_DELAY_TICKS: i64 = 1000;

impl Domain {
    /// A domain taking segments from `source`, with no clock: purge delays count
    /// allocation slow-path events instead of milliseconds.
    pub const fn new(source: &'static dyn PageSource) -> Self {
        Self::with_clock(source, None)
    }

    /// A domain with a millisecond clock for purge delays.
    pub const fn with_clock(source: &'static dyn PageSource, clock: Option<fn() -> u64>) -> Self {
        Domain {
            source,
            stats: AtomicStats::new(),
            abandoned: spin::Mutex::new(AbandonedList {
                head: ptr::null_mut(),
            }),
            abandoned_count: AtomicUsize::new(0),
            td_cache: spin::Mutex::new(TdCache {
                head: ptr::null_mut(),
                count: 0,
            }),
            segment_cache: spin::Mutex::new(SegmentCache {
                entries: [Cached {
                    ptr: ptr::null_mut(),
                    size: 0,
                    committed: 0,
                    expire: 0,
                }; CACHE_MAX],
                len: 0,
                bytes: 0,
            }),
            cache_len: AtomicUsize::new(0),
            purge_delay: AtomicI64::new(if clock.is_some() {
                DEFAULT_PURGE_DELAY
            } else {
                DEFAULT_PURGE_DELAY_TICKS
            }),
            limit: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            clock,
            ticks: AtomicUsize::new(0),
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Resets peaks and totals of the statistics.
    pub fn reset_stats(&self) {
        self.stats.reset()
    }

    /// Sets the purge delay (ms with a clock, else slow-path events); 0 purges at once,
    /// negative never.
    pub fn set_purge_delay(&self, delay: i64) {
        self.purge_delay.store(delay, Ordering::Relaxed)
    }

    pub fn purge_delay(&self) -> i64 {
        self.purge_delay.load(Ordering::Relaxed)
    }

    /// Caps the bytes reserved from the page source (0 = no cap). Allocations that would
    /// go beyond it fail (return null) instead.
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes currently reserved from the source.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    pub(crate) fn config(&self) -> SourceConfig {
        self.source.config()
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

    /// Takes a cached region of `min..=max` bytes (the smallest that fits).
    pub(crate) fn cache_take(&self, min: usize, max: usize) -> Option<Cached> {
        if self.cache_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut c = self.segment_cache.lock();
        let mut best: Option<usize> = None;
        for i in 0..c.len {
            let s = c.entries[i].size;
            if s >= min && s <= max && best.is_none_or(|b| s < c.entries[b].size) {
                best = Some(i);
            }
        }
        let i = best?;
        let e = c.remove(i);
        self.cache_len.store(c.len, Ordering::Relaxed);
        Some(e)
    }

    /// Keeps an emptied segment's region for reuse (evicting the oldest when full).
    ///
    /// # Safety
    /// The region (exactly as allocated from the source) is unused; the cache owns it.
    pub(crate) unsafe fn cache_put(&self, ptr: *mut u8, size: usize, committed: usize) {
        let delay = self.purge_delay().max(1) as u64;
        // cached regions wait ten purge delays (100 ms by default) before going back
        let entry = Cached {
            ptr,
            size,
            committed,
            expire: self.now().saturating_add(delay * 10),
        };
        let evicted = {
            let mut c = self.segment_cache.lock();
            if c.bytes + size > CACHE_BYTES_MAX {
                Some(entry) // too much cached already: back to the source at once
            } else if c.len < CACHE_MAX {
                let n = c.len;
                c.entries[n] = entry;
                c.len += 1;
                c.bytes += size;
                self.cache_len.store(c.len, Ordering::Relaxed);
                None
            } else {
                // the oldest expires first
                let mut oldest = 0;
                for i in 1..CACHE_MAX {
                    if c.entries[i].expire < c.entries[oldest].expire {
                        oldest = i;
                    }
                }
                let e = c.entries[oldest];
                c.entries[oldest] = entry;
                c.bytes = c.bytes - e.size + size;
                Some(e)
            }
        };
        if let Some(e) = evicted {
            // SAFETY: the evicted region is the cache's alone.
            unsafe { self.cache_release(e) };
        }
    }

    /// Gives cached regions whose delay expired (all with `force`) back to the source.
    pub(crate) fn cache_collect(&self, force: bool) {
        if self.cache_len.load(Ordering::Relaxed) == 0 {
            return; // the common case, without touching the lock
        }
        let now = self.now();
        loop {
            let e = {
                let mut c = self.segment_cache.lock();
                let mut found = None;
                for i in 0..c.len {
                    if force || c.entries[i].expire <= now {
                        found = Some(i);
                        break;
                    }
                }
                let Some(i) = found else { return };
                let e = c.remove(i);
                self.cache_len.store(c.len, Ordering::Relaxed);
                e
            };
            // SAFETY: taken out of the cache, so ours alone.
            unsafe { self.cache_release(e) };
        }
    }

    /// # Safety
    /// `e` was taken out of the cache.
    unsafe fn cache_release(&self, e: Cached) {
        self.stats.committed.sub(e.committed as i64);
        self.stats.reserved.sub(e.size as i64);
        // SAFETY: the region is exactly as the source handed it out, unused.
        unsafe { self.source.free(NonNull::new_unchecked(e.ptr), e.size) };
        self.unreserve(e.size);
    }

    pub(crate) fn abandoned_count(&self) -> usize {
        self.abandoned_count.load(Ordering::Relaxed)
    }

    /// # Safety
    /// `segment` is abandoned: no thread owns it, and the caller gives it up.
    pub(crate) unsafe fn push_abandoned(&self, segment: *mut Segment) {
        let mut list = self.abandoned.lock();
        // SAFETY: the caller hands the segment over; we only touch its link.
        unsafe { (*segment).abandoned_next = list.head };
        list.head = segment;
        self.abandoned_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one abandoned segment; the caller then owns it.
    pub(crate) fn pop_abandoned(&self) -> Option<*mut Segment> {
        if self.abandoned_count() == 0 {
            return None;
        }
        let mut list = self.abandoned.lock();
        let s = list.head;
        if s.is_null() {
            return None;
        }
        // SAFETY: segments in the list are live and only linked under the lock.
        list.head = unsafe { (*s).abandoned_next };
        // SAFETY: as above; the segment is now exclusively ours.
        unsafe { (*s).abandoned_next = ptr::null_mut() };
        self.abandoned_count.fetch_sub(1, Ordering::Relaxed);
        Some(s)
    }

    /// Makes a thread's data (its `Tld` and backing heap), from the cache or the source.
    /// Null when out of memory.
    ///
    /// # Safety
    /// The domain outlives the thread data (it lives in a `static`, or at least stays put
    /// until every heap made from it is done).
    pub(crate) unsafe fn thread_data_alloc(&self) -> *mut ThreadData {
        let mut td = {
            let mut cache = self.td_cache.lock();
            let td = cache.head;
            if !td.is_null() {
                // SAFETY: cached entries are unused thread data blocks linked by `next_free`.
                cache.head = unsafe { (*td).next_free };
                cache.count -= 1;
            }
            td
        };
        if td.is_null() {
            let cfg = self.config();
            let gran = cfg.alloc_granularity.max(cfg.page_size);
            let size = (core::mem::size_of::<ThreadData>() + gran - 1) & !(gran - 1);
            if !self.reserve_within_limit(size) {
                return ptr::null_mut();
            }
            // SAFETY: size is a multiple of the granularity, align the OS page size.
            let Some(region) = (unsafe { self.source.alloc(size, cfg.page_size, true) }) else {
                self.unreserve(size);
                return ptr::null_mut();
            };
            if !region.committed {
                // SAFETY: the range is the region just allocated.
                if unsafe { self.source.commit(region.ptr, size) }.is_err() {
                    // SAFETY: giving back the unused region.
                    unsafe { self.source.free(region.ptr, region.size) };
                    self.unreserve(size);
                    return ptr::null_mut();
                }
            }
            td = region.ptr.as_ptr() as *mut ThreadData;
            debug_assert!(region.size >= core::mem::size_of::<ThreadData>());
        }
        // SAFETY: `td` is a usable block of `size_of::<ThreadData>()` bytes, ours alone.
        unsafe { ThreadData::init(td, self) };
        self.stats.threads.add(1);
        td
    }

    /// Returns the data of a thread that is done (after its segments were abandoned).
    ///
    /// # Safety
    /// `td` came from `thread_data_alloc` of this domain and is no longer used.
    pub(crate) unsafe fn thread_data_free(&self, td: *mut ThreadData) {
        self.stats.threads.sub(1);
        let mut cache = self.td_cache.lock();
        if cache.count < TD_CACHE_MAX {
            // SAFETY: `td` is ours now; we link it through its `next_free` field.
            unsafe { (*td).next_free = cache.head };
            cache.head = td;
            cache.count += 1;
            return;
        }
        drop(cache);
        let cfg = self.config();
        let gran = cfg.alloc_granularity.max(cfg.page_size);
        let size = (core::mem::size_of::<ThreadData>() + gran - 1) & !(gran - 1);
        // SAFETY: `td` is a region of exactly `size` bytes from `alloc` above.
        unsafe {
            self.source
                .free(NonNull::new_unchecked(td as *mut u8), size)
        };
        self.unreserve(size);
    }

    /// Frees abandoned segments whose blocks were all freed since their thread exited, and
    /// gives cached segment regions back to the source.
    pub fn collect_abandoned(&self) {
        // A temporary thread data gives the collection an owner token.
        // SAFETY: the thread data is freed again before we return.
        let td = unsafe { self.thread_data_alloc() };
        if td.is_null() {
            return;
        }
        // SAFETY: `td` is fresh and ours; abandoned segments popped become ours.
        unsafe {
            let tld: &mut Tld = &mut (*td).tld;
            crate::abandon::abandoned_collect(tld);
            debug_assert!(tld.segments.all.is_null());
            self.thread_data_free(td);
        }
        self.cache_collect(true);
    }
}

impl Domain {
    /// Before `fork()`: takes the domain's locks, so that the child cannot inherit a lock
    /// held by a thread that does not exist there. Pair with `fork_parent`/`fork_child`.
    pub fn fork_prepare(&self) {
        core::mem::forget(self.abandoned.lock());
        core::mem::forget(self.td_cache.lock());
        core::mem::forget(self.segment_cache.lock());
    }

    /// After `fork()`, in the parent: releases the locks taken by `fork_prepare`.
    pub fn fork_parent(&self) {
        // SAFETY: `fork_prepare` on this thread holds both locks (their guards forgotten).
        unsafe {
            self.segment_cache.force_unlock();
            self.td_cache.force_unlock();
            self.abandoned.force_unlock();
        }
    }

    /// After `fork()`, in the child: releases the locks taken by `fork_prepare` (the
    /// child's only thread is the one that took them).
    pub fn fork_child(&self) {
        self.fork_parent()
    }
}
