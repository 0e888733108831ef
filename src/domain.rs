//! The domain: what the heaps of one allocator share — the page source with its
//! accounting ([`Os`]: limit, statistics, region cache, clock, purge delay), the
//! abandoned segments of exited threads ([`Abandoned`]), and a cache of thread-data blocks.
//!
//! A hosted process has one domain (behind [`ShardAlloc`](crate::ShardAlloc)); a kernel
//! has one for its per-CPU heaps; tests make their own over a
//! [`RegionSource`](crate::source::RegionSource).

use core::ptr::{self, NonNull};

use crate::abandon::{abandoned_collect, Abandoned};
use crate::os::Os;
use crate::source::PageSource;
use crate::stats::Stats;

/// Shared state of one allocator instance. See the module documentation.
pub struct Domain {
    pub(crate) os: Os,
    pub(crate) abandoned: Abandoned,
    /// Blocks of exited threads' data, reused by new threads.
    thread_blocks: spin::Mutex<BlockCache>,
}

/// A stack of unused blocks of one size, linked through their first word.
///
/// Invariant: `head` starts a list of `count` blocks, none used by anyone.
struct BlockCache {
    head: *mut FreeBlock,
    count: usize,
}

struct FreeBlock {
    next: *mut FreeBlock,
}

// SAFETY: the cached blocks are unused and owned by the cache alone, touched under its lock.
unsafe impl Send for BlockCache {}

/// Most thread-data blocks kept for reuse.
const THREAD_BLOCKS_MAX: usize = 32;

impl Domain {
    /// A domain taking segments from `source`, with no clock: purge delays count
    /// allocation slow-path events instead of milliseconds.
    pub const fn new(source: &'static dyn PageSource) -> Self {
        Self::with_clock(source, None)
    }

    /// A domain with a millisecond clock for purge delays.
    pub const fn with_clock(source: &'static dyn PageSource, clock: Option<fn() -> u64>) -> Self {
        Domain {
            os: Os::new(source, clock),
            abandoned: Abandoned::new(),
            thread_blocks: spin::Mutex::new(BlockCache {
                head: ptr::null_mut(),
                count: 0,
            }),
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.os.stats.snapshot()
    }

    /// Resets peaks and totals of the statistics.
    pub fn reset_stats(&self) {
        self.os.stats.reset()
    }

    /// Sets the purge delay (ms with a clock, else slow-path events); 0 purges at once,
    /// negative never.
    pub fn set_purge_delay(&self, delay: i64) {
        self.os.set_purge_delay(delay)
    }

    /// The purge delay (see [`set_purge_delay`](Domain::set_purge_delay)).
    pub fn purge_delay(&self) -> i64 {
        self.os.purge_delay()
    }

    /// Caps the committed memory of the spare huge region (the last emptied huge segment,
    /// kept mapped for the next huge block; over sources that grow by remap, as a kernel's
    /// frames source): 16 MiB by default, which is also the most it can be. An emptied
    /// huge segment holding more goes back to the source at once. A kernel with little RAM
    /// sets less: a spare taken by a small block stays with that block's heap, committed,
    /// until its purge delay runs out (and that heap's slow path looks), memory that the
    /// other CPUs' heaps cannot get back when they run short.
    pub fn set_spare_limit(&self, bytes: usize) {
        self.os.huge_spare_limit.store(
            bytes.min(crate::os::HUGE_SPARE_MAX),
            crate::sync::Ordering::Relaxed,
        )
    }

    /// Caps the bytes reserved from the page source (0 = no cap). Allocations that would
    /// go beyond it fail (return null) instead.
    pub fn set_limit(&self, bytes: usize) {
        self.os.set_limit(bytes)
    }

    /// Large OS pages for every segment made from now on (off by default; huge blocks,
    /// over 2 MiB, always get them): the page source advises each new segment region for
    /// them (`PageSource::advise_large_pages`; Linux: `madvise(MADV_HUGEPAGE)`, so a first
    /// touch maps 2 MiB where transparent huge pages are on in `madvise` or `always` mode),
    /// as C mimalloc's `allow_large_os_pages` option and its arenas' huge-page advice do.
    /// It trades memory for page faults: touching one block of a segment's 2 MiB half
    /// makes all of it resident. `benches/run.sh`'s `shardalloc-thp` column measures both
    /// (at 11af934, over its 18 workloads: 0.86 of the default's time, 2.18 times its peak
    /// resident memory). Segments made earlier keep their advice, also when another thread
    /// takes them over; a cached region gets the advice of the segment made in it.
    pub fn set_large_os_pages(&self, on: bool) {
        self.os.set_large_os_pages(on)
    }

    /// Whether new segments get large OS pages (see [`set_large_os_pages`](Domain::set_large_os_pages)).
    pub fn large_os_pages(&self) -> bool {
        self.os.large_os_pages()
    }

    /// The cap on reserved bytes (0 = none).
    pub fn limit(&self) -> usize {
        self.os.limit()
    }

    /// Bytes currently reserved from the source.
    pub fn reserved(&self) -> usize {
        self.os.reserved()
    }

    /// Frees abandoned segments whose blocks were all freed since their thread exited, and
    /// gives cached segment regions back to the source.
    pub fn collect_abandoned(&self) {
        abandoned_collect(&self.abandoned);
        self.os.cache_collect(true);
    }

    /// Gives the domain's segments back to the source: its abandoned segments (with
    /// whatever blocks they still hold) and its cached segment regions (its cached
    /// thread-data blocks: `thread::discard_domain`).
    ///
    /// # Safety
    /// No thread allocates from the domain any more (every thread that did is done with
    /// it), and no block it handed out is used again.
    #[cfg(feature = "std")]
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
    pub(crate) unsafe fn discard_all(&self) {
        // SAFETY: as this function's contract.
        unsafe { crate::abandon::abandoned_discard(&self.abandoned) };
        self.os.cache_collect(true);
    }

    /// A cached thread-data block, if any.
    #[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
    pub(crate) fn thread_block_take(&self) -> Option<NonNull<u8>> {
        let mut cache = self.thread_blocks.lock();
        let b = NonNull::new(cache.head)?;
        // SAFETY: cached blocks are unused and linked through their first word.
        cache.head = unsafe { (*b.as_ptr()).next };
        cache.count -= 1;
        Some(b.cast())
    }

    /// Keeps an unused thread-data block for reuse; false when the cache is full (the
    /// caller then gives it back to the source).
    ///
    /// # Safety
    /// `block` is an unused thread-data block of this domain, at least a word, aligned.
    pub(crate) unsafe fn thread_block_put(&self, block: NonNull<u8>) -> bool {
        let mut cache = self.thread_blocks.lock();
        if cache.count >= THREAD_BLOCKS_MAX {
            return false;
        }
        let b = block.as_ptr() as *mut FreeBlock;
        // SAFETY: the block is ours now (caller); we link it through its first word.
        unsafe { (*b).next = cache.head };
        cache.head = b;
        cache.count += 1;
        true
    }

    /// Before `fork()`: takes the domain's locks, so that the child cannot inherit a lock
    /// held by a thread that does not exist there. Pair with `fork_parent`/`fork_child`.
    pub fn fork_prepare(&self) {
        self.abandoned.fork_lock();
        core::mem::forget(self.thread_blocks.lock());
        self.os.fork_lock();
    }

    /// After `fork()`, in the parent: releases the locks taken by `fork_prepare`.
    ///
    /// # Safety
    /// The calling thread called `fork_prepare` on this domain and has not released its
    /// locks since (as `pthread_atfork` handlers guarantee).
    pub unsafe fn fork_parent(&self) {
        // SAFETY: `fork_prepare` on this thread holds the three locks with their guards
        // forgotten (the caller's contract), so no one else is inside them.
        unsafe {
            self.os.fork_release();
            self.thread_blocks.force_unlock();
            self.abandoned.fork_release();
        }
    }

    /// After `fork()`, in the child: releases the locks taken by `fork_prepare` (the
    /// child's only thread is the one that took them).
    ///
    /// # Safety
    /// As [`fork_parent`](Domain::fork_parent), in the child process.
    pub unsafe fn fork_child(&self) {
        // SAFETY: the child's only thread is the one that called `fork_prepare` (caller).
        unsafe { self.fork_parent() }
    }
}
