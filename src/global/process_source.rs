//! The page source of the process's domain: the OS, preceded by the arenas a program
//! shares with `malloc` (C's non-exclusive `mi_reserve_os_memory` and
//! `mi_manage_os_memory` arenas, and `MIMALLOC_RESERVE_OS_MEMORY`), as mimalloc takes
//! memory from its arenas before asking the OS. With mimalloc's `disallow_os_alloc`, the
//! OS is not asked at all.
//!
//! An arena region behaves as its [`RegionSource`] does (always committed, never remapped,
//! never protected), except for purging: its memory cannot be given back to the OS here
//! (it may be the program's own, a device window), so `decommit` says "needs recommit"
//! without doing anything, and `commit` then reports it not zeroed. That keeps the
//! contract of a source whose `decommit_zeroes` holds for OS memory.

use core::ptr::{self, NonNull};

use crate::source::{PageSource, Region, RegionSource, SourceConfig, SourceError};
use crate::sync::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Most arenas the process source draws from.
const MAX_ARENAS: usize = 16;

/// One arena: its source and the range it covers (published before the source pointer).
struct Arena {
    source: AtomicPtr<RegionSource>,
    start: AtomicUsize,
    end: AtomicUsize,
}

/// The arenas, then the OS source `S`.
///
/// Invariants: `count` entries of `arenas` are published (non-null `source`, with `start`
/// and `end` set before it); their ranges are disjoint and never change.
pub(crate) struct ProcessSource<S: PageSource + 'static> {
    os: &'static S,
    arenas: [Arena; MAX_ARENAS],
    count: AtomicUsize,
    os_disallowed: AtomicBool,
}

impl<S: PageSource + 'static> ProcessSource<S> {
    pub(crate) const fn new(os: &'static S) -> Self {
        ProcessSource {
            os,
            arenas: [const {
                Arena {
                    source: AtomicPtr::new(ptr::null_mut()),
                    start: AtomicUsize::new(0),
                    end: AtomicUsize::new(0),
                }
            }; MAX_ARENAS],
            count: AtomicUsize::new(0),
            os_disallowed: AtomicBool::new(false),
        }
    }

    /// Adds an arena: `source` covers `[start, start + size)`, which no other arena and no
    /// OS region overlaps. False when the table is full.
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // arenas (C API)
    pub(crate) fn add_arena(
        &self,
        source: &'static RegionSource,
        start: usize,
        size: usize,
    ) -> bool {
        for a in &self.arenas {
            if a.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                a.end.store(start + size, Ordering::Relaxed);
                a.source
                    .store(source as *const RegionSource as *mut _, Ordering::Release);
                self.count.fetch_add(1, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Whether regions may come from the OS (mimalloc's `disallow_os_alloc` turns it off).
    #[cfg_attr(not(feature = "override"), allow(dead_code))] // options (C API)
    pub(crate) fn set_os_allowed(&self, allowed: bool) {
        self.os_disallowed.store(!allowed, Ordering::Relaxed);
    }

    /// The arena whose range holds `p`, if any.
    #[inline]
    fn arena_of(&self, p: NonNull<u8>) -> Option<&'static RegionSource> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let p = p.as_ptr() as usize;
        self.arenas.iter().find_map(|a| {
            let s = a.source.load(Ordering::Acquire);
            // SAFETY: a published source is a `&'static RegionSource` (`add_arena`).
            (!s.is_null()
                && p >= a.start.load(Ordering::Relaxed)
                && p < a.end.load(Ordering::Relaxed))
            .then(|| unsafe { &*s })
        })
    }
}

// SAFETY: arena regions come from their `RegionSource` (memory no one else uses until freed
// back to it, committed, at least `size` bytes, aligned as asked: its contract), the others
// from the OS source; every other call goes to the source the region came from (found by
// address: the arenas' ranges are disjoint from each other and from OS regions). `decommit`
// of an arena region returns "needs recommit" and then `commit` reports "not zeroed", so the
// `decommit_zeroes` promise (made for OS memory) is never relied on for arena memory.
// Nothing here allocates; the table is atomics.
unsafe impl<S: PageSource + 'static> PageSource for ProcessSource<S> {
    fn config(&self) -> SourceConfig {
        self.os.config()
    }

    unsafe fn alloc(&self, size: usize, align: usize, commit: bool) -> Option<Region> {
        if self.count.load(Ordering::Acquire) != 0 {
            for a in &self.arenas {
                let s = a.source.load(Ordering::Acquire);
                if s.is_null() {
                    continue;
                }
                // SAFETY: a published `&'static RegionSource`; the size and alignment are
                // as the caller guarantees (multiples of the OS page, which the arena's page
                // divides).
                if let Some(r) = unsafe { (*s).alloc(size, align, commit) } {
                    return Some(r);
                }
            }
        }
        if self.os_disallowed.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: the caller's guarantees, passed on.
        unsafe { self.os.alloc(size, align, commit) }
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize) {
        match self.arena_of(ptr) {
            // SAFETY: a region of that arena (found by address), given back once.
            Some(a) => unsafe { a.free(ptr, size) },
            // SAFETY: an OS region, given back once (the caller's guarantees).
            None => unsafe { self.os.free(ptr, size) },
        }
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, size: usize) -> Result<bool, SourceError> {
        match self.arena_of(ptr) {
            // arena memory is always usable; its contents are unknown
            Some(_) => Ok(false),
            // SAFETY: a range of an OS region (the caller's guarantees).
            None => unsafe { self.os.commit(ptr, size) },
        }
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        match self.arena_of(ptr) {
            // kept as it is; "needs recommit" so that it is not taken for zeroed
            Some(_) => true,
            // SAFETY: a range of an OS region holding no live data (the caller's guarantees).
            None => unsafe { self.os.decommit(ptr, size) },
        }
    }

    unsafe fn reset(&self, ptr: NonNull<u8>, size: usize) {
        if self.arena_of(ptr).is_none() {
            // SAFETY: a range of an OS region holding no live data (the caller's guarantees).
            unsafe { self.os.reset(ptr, size) }
        }
    }

    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
    ) -> Option<Region> {
        if self.arena_of(ptr).is_some() {
            return None;
        }
        // SAFETY: an OS region (the caller's guarantees).
        unsafe { self.os.remap(ptr, old_size, new_size, align) }
    }

    unsafe fn advise_large_pages(&self, ptr: NonNull<u8>, size: usize, large: bool) {
        if self.arena_of(ptr).is_none() {
            // SAFETY: a range of an OS region (the caller's guarantees).
            unsafe { self.os.advise_large_pages(ptr, size, large) }
        }
    }

    fn grows_by_remap(&self) -> bool {
        self.os.grows_by_remap()
    }

    fn splits_regions(&self, ptr: NonNull<u8>) -> bool {
        // an arena region is its `RegionSource`'s, which frees whole regions only
        self.arena_of(ptr).is_none() && self.os.splits_regions(ptr)
    }

    fn collect(&self, force: bool) {
        self.os.collect(force)
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, protect: bool) -> bool {
        if self.arena_of(ptr).is_some() {
            return false;
        }
        // SAFETY: a range of an OS region (the caller's guarantees).
        unsafe { self.os.protect(ptr, size, protect) }
    }
}
