//! The segment-region cache: regions of segments that emptied, kept a short while so that
//! the next segment reuses them without a call to the source and without faulting fresh
//! memory in.
//!
//! Only sources without reserve use it (their memory is always committed, so a cached
//! region can serve any new segment). This module is the data structure alone; [`Os`]
//! decides what goes in, and gives what comes out back to the source.
//!
//! [`Os`]: crate::os::Os

use crate::sync::{AtomicUsize, Ordering};
use core::ptr;

/// A segment region kept for reuse.
#[derive(Clone, Copy)]
pub(crate) struct Cached {
    pub ptr: *mut u8,
    pub size: usize,
    /// Bytes of it counted in the `committed` statistic.
    pub committed: usize,
    /// Domain time after which it goes back to the source.
    pub expire: u64,
}

const EMPTY: Cached = Cached {
    ptr: ptr::null_mut(),
    size: 0,
    committed: 0,
    expire: 0,
};

/// Most regions cached.
const CACHE_MAX: usize = 16;
/// Most bytes cached (the cache keeps memory resident for a while).
const CACHE_BYTES_MAX: usize = 64 << 20;

/// Invariants: `entries[..len]` are the cached regions, `bytes` is the sum of their sizes
/// and at most `CACHE_BYTES_MAX`.
struct Entries {
    entries: [Cached; CACHE_MAX],
    len: usize,
    bytes: usize,
}

// SAFETY: the cached regions are owned by the cache alone and only touched under its lock.
unsafe impl Send for Entries {}

impl Entries {
    /// Takes entry `i` out (the last entry moves into its place).
    fn remove(&mut self, i: usize) -> Cached {
        let e = self.entries[i];
        self.len -= 1;
        self.entries[i] = self.entries[self.len];
        self.bytes -= e.size;
        e
    }
}

/// See the module documentation.
pub(crate) struct RegionCache {
    inner: spin::Mutex<Entries>,
    /// `inner.len`, readable without the lock (the common case is an empty cache).
    len: AtomicUsize,
}

impl RegionCache {
    pub(crate) const fn new() -> Self {
        RegionCache {
            inner: spin::Mutex::new(Entries {
                entries: [EMPTY; CACHE_MAX],
                len: 0,
                bytes: 0,
            }),
            len: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Takes the smallest cached region of `min..=max` bytes.
    pub(crate) fn take(&self, min: usize, max: usize) -> Option<Cached> {
        if self.is_empty() {
            return None;
        }
        let mut c = self.inner.lock();
        let mut best: Option<usize> = None;
        for i in 0..c.len {
            let s = c.entries[i].size;
            if s >= min && s <= max && best.is_none_or(|b| s < c.entries[b].size) {
                best = Some(i);
            }
        }
        let e = c.remove(best?);
        self.len.store(c.len, Ordering::Relaxed);
        Some(e)
    }

    /// Keeps `entry`; returns the region that must go back to the source instead: `entry`
    /// itself when the cache holds too many bytes, or the entry evicted to make room.
    #[must_use]
    pub(crate) fn put(&self, entry: Cached) -> Option<Cached> {
        let mut c = self.inner.lock();
        if c.bytes + entry.size > CACHE_BYTES_MAX {
            return Some(entry);
        }
        if c.len < CACHE_MAX {
            let n = c.len;
            c.entries[n] = entry;
            c.len += 1;
            c.bytes += entry.size;
            self.len.store(c.len, Ordering::Relaxed);
            return None;
        }
        // full: the entry that expires first makes room
        let mut oldest = 0;
        for i in 1..CACHE_MAX {
            if c.entries[i].expire < c.entries[oldest].expire {
                oldest = i;
            }
        }
        let e = c.entries[oldest];
        c.entries[oldest] = entry;
        c.bytes = c.bytes - e.size + entry.size;
        Some(e)
    }

    /// Takes one region whose time ran out at `now` (any region with `force`).
    pub(crate) fn take_expired(&self, now: u64, force: bool) -> Option<Cached> {
        if self.is_empty() {
            return None;
        }
        let mut c = self.inner.lock();
        let i = (0..c.len).find(|&i| force || c.entries[i].expire <= now)?;
        let e = c.remove(i);
        self.len.store(c.len, Ordering::Relaxed);
        Some(e)
    }

    /// Before `fork()`: takes the lock (released by `fork_release`).
    pub(crate) fn fork_lock(&self) {
        core::mem::forget(self.inner.lock());
    }

    /// After `fork()`: releases the lock taken by `fork_lock`.
    ///
    /// # Safety
    /// `fork_lock` was called on this thread (in this process or its parent).
    pub(crate) unsafe fn fork_release(&self) {
        // SAFETY: `fork_lock` holds the lock with its guard forgotten.
        unsafe { self.inner.force_unlock() };
    }
}
