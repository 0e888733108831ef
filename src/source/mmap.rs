//! The unix page source: anonymous `mmap`.
//!
//! Linux overcommits: a fresh mapping takes physical memory only when touched, so the
//! source reports memory as committed and the OS commits it page by page on first use.
//! Purging uses `madvise(MADV_DONTNEED)`, after which the range reads as zero again and
//! the resident memory falls at once.

use crate::sync::{AtomicUsize, Ordering};
use core::ptr::{self, NonNull};

use super::{PageSource, Region, SourceConfig};

/// Anonymous memory from `mmap`.
pub struct Mmap;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

fn page_size() -> usize {
    let p = PAGE_SIZE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
    PAGE_SIZE.store(p, Ordering::Relaxed);
    p
}

/// Aligned allocations are first tried at a hint address inside an area of address space
/// that nothing else uses in practice (as mimalloc does), where every hint is aligned: the
/// kernel then mostly gives exactly the hinted, aligned range in one call, instead of an
/// over-sized mapping trimmed with two more calls.
///
/// Consecutive hints leave an unmapped gap of one alignment between regions, so that the
/// kernel never merges two regions into one mapping (VMA). With the regions adjacent, every
/// segment of the process was one growing mapping: each new segment's `mmap` extended it
/// while other threads faulted pages in (Linux locks the one mapping for the change and
/// for each fault), and all faults went through the one mapping's lock. A mapping per region
/// cut the time of the thread-churn workloads by 5-10 % (`benches/`: larson 0.91, stress32
/// 0.94, rptest 0.95, scale-8 0.89 of before, medians of 7-15 alternating runs), with
/// the same page faults and median peak RSS (README, Performance: sh8bench's upper quartile
/// rose, its RSS set by thread timing). The address space used doubles: the area (2 TiB to
/// 4 TiB) holds 256 Ki segments of 4 MiB before the hints wrap around.
/// (64-bit address spaces only: a 32-bit one has no such empty area.)
#[cfg(target_pointer_width = "64")]
const HINT_BASE: usize = 2 << 40; // 2 TiB
#[cfg(target_pointer_width = "64")]
const HINT_AREA: usize = 4 << 40; // where the hints end: the area is 2 TiB .. 4 TiB
#[cfg(target_pointer_width = "64")]
static HINT: AtomicUsize = AtomicUsize::new(HINT_BASE);

#[cfg(not(target_pointer_width = "64"))]
fn aligned_hint(_size: usize, _align: usize) -> Option<usize> {
    None
}

#[cfg(target_pointer_width = "64")]
fn aligned_hint(size: usize, align: usize) -> Option<usize> {
    if align < (1 << 20) || size > (1 << 30) {
        return None;
    }
    // (one alignment more: the gap that keeps regions in mappings of their own)
    let step = ((size + align - 1) & !(align - 1)) + align;
    let mut h = HINT.fetch_add(step, Ordering::Relaxed);
    if h + step > HINT_AREA {
        // wrap around; a stale hint just fails over to the trimming path
        HINT.store(HINT_BASE, Ordering::Relaxed);
        h = HINT_BASE;
    }
    Some((h + align - 1) & !(align - 1))
}

/// # Safety
/// Plain anonymous mapping; no preconditions beyond `size > 0`.
unsafe fn map(size: usize) -> Option<*mut u8> {
    // SAFETY: `size > 0` (the `# Safety` contract); a null hint asks for no address.
    unsafe { map_at(ptr::null_mut(), size) }
}

/// # Safety
/// `size > 0`; `hint` is only a hint (no MAP_FIXED), nothing there is replaced.
unsafe fn map_at(hint: *mut u8, size: usize) -> Option<*mut u8> {
    // SAFETY: anonymous private mapping; without MAP_FIXED the kernel never replaces an
    // existing mapping, it picks another address when the hint is taken.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        Some(p as *mut u8)
    }
}

// SAFETY: every region is a fresh private anonymous mapping (disjoint from everything
// else, zeroed, readable and writable); `decommit`/`reset` only advise on the given range;
// nothing here allocates.
unsafe impl PageSource for Mmap {
    fn config(&self) -> SourceConfig {
        let p = page_size();
        SourceConfig {
            page_size: p,
            alloc_granularity: p,
            has_reserve: false,
            decommit_zeroes: true,
        }
    }

    unsafe fn alloc(&self, size: usize, align: usize, _commit: bool) -> Option<Region> {
        let hint = aligned_hint(size, align).unwrap_or(0) as *mut u8;
        // SAFETY: size > 0 by the caller's contract.
        let p = unsafe { map_at(hint, size)? };
        if p as usize & (align - 1) == 0 {
            return Some(Region {
                ptr: NonNull::new(p)?,
                size,
                committed: true,
                zeroed: true,
            });
        }
        // Not aligned: map `size + align` and trim the ends.
        // SAFETY: unmapping the mapping we just made.
        unsafe { libc::munmap(p as *mut libc::c_void, size) };
        let total = size.checked_add(align)?;
        // SAFETY: `total > size > 0` (`size > 0` by the caller's contract).
        let p = unsafe { map(total)? };
        let start = (p as usize + align - 1) & !(align - 1);
        let head = start - p as usize;
        let tail = total - head - size;
        // SAFETY: the head and tail are parts of our mapping outside the kept range.
        unsafe {
            if head > 0 {
                libc::munmap(p as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + size) as *mut libc::c_void, tail);
            }
        }
        Some(Region {
            ptr: NonNull::new(start as *mut u8)?,
            size,
            committed: true,
            zeroed: true,
        })
    }

    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
    ) -> Option<Region> {
        let old = ptr.as_ptr() as *mut libc::c_void;
        // SAFETY: `old` is exactly one of our mappings; without MREMAP_MAYMOVE the kernel
        // only grows or shrinks it where it is.
        let p = unsafe { libc::mremap(old, old_size, new_size, 0) };
        if p != libc::MAP_FAILED {
            return Some(Region {
                ptr,
                size: new_size,
                committed: true,
                zeroed: false,
            });
        }
        // Move: reserve an aligned place for the new size, then move the pages there
        // (page tables are moved, no bytes are copied).
        // SAFETY: `new_size` is a non-zero multiple of the page size and `align` a power of
        // two at least the page size (the trait's caller obligations), as `alloc` requires;
        // the fresh mapping is replaced whole by the moved one below.
        let target = unsafe { self.alloc(new_size, align, false)? };
        // SAFETY: both ranges are ours; MREMAP_FIXED replaces the reservation at `target`.
        let p = unsafe {
            libc::mremap(
                old,
                old_size,
                new_size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.ptr.as_ptr() as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            // SAFETY: the reservation is unused.
            unsafe { libc::munmap(target.ptr.as_ptr() as *mut libc::c_void, new_size) };
            return None;
        }
        Some(Region {
            ptr: target.ptr,
            size: new_size,
            committed: true,
            zeroed: false,
        })
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller returns exactly a mapping of ours.
        unsafe { libc::munmap(ptr.as_ptr() as *mut libc::c_void, size) };
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the range is inside one of our mappings and holds no live data.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, libc::MADV_DONTNEED) };
        false
    }

    unsafe fn reset(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the range is inside one of our mappings and holds no live data (the
        // trait's caller obligations); MADV_FREE only lets the kernel drop the contents and
        // keeps the range usable.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, libc::MADV_FREE) };
    }

    unsafe fn advise_large_pages(&self, ptr: NonNull<u8>, size: usize, large: bool) {
        #[cfg(target_os = "linux")]
        {
            let advice = if large {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            };
            // SAFETY: the range is inside one of our mappings; this is only advice.
            unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, advice) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (ptr, size, large);
    }

    fn splits_regions(&self, _ptr: NonNull<u8>) -> bool {
        // every region is anonymous memory mapped here: `munmap`, `madvise` and `mremap`
        // take any page range of it, whichever `mmap` calls mapped its parts. `mremap` of a
        // range that spans two mappings the kernel did not merge (their advice differs)
        // fails with EFAULT, and `remap` then returns None, as it may.
        true
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, protect: bool) -> bool {
        let prot = if protect {
            libc::PROT_NONE
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // SAFETY: the range is inside one of our mappings.
        unsafe { libc::mprotect(ptr.as_ptr() as *mut libc::c_void, size, prot) == 0 }
    }
}
