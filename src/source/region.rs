//! A page source over a fixed range of memory: for MMU-less targets, and for tests that
//! need a capped source.

use core::ptr::NonNull;

use super::{PageSource, Region, SourceConfig};

/// Most disjoint free ranges the region tracks. Ranges coalesce on free, so this bounds
/// the fragmentation, not the number of allocations: with the segment sizes the core
/// asks for, a few dozen live regions leave far fewer holes.
/// (48 in the small geometry, where the table counts against a microcontroller's RAM: a
/// heap of 256 KiB holds at most 32 segments of 8 KiB, so at most 33 holes between them.)
const MAX_RANGES: usize = if cfg!(feature = "small") { 48 } else { 128 };

#[derive(Clone, Copy)]
struct Range {
    start: usize,
    end: usize,
}

struct State {
    /// Free ranges, sorted by address, disjoint and not adjacent.
    ranges: [Range; MAX_RANGES],
    len: usize,
    free_bytes: usize,
    /// Alignments are relative to this address: a region aligned to `align` starts at
    /// `a` with `(a - phase) % align == 0` (0: absolute alignment).
    phase: usize,
}

/// A page source that carves regions out of one fixed range of memory, first fit, and
/// takes them back (coalescing). It never commits or decommits: the memory is always
/// usable. Running out makes `alloc` return `None`. Its page is 4 KiB (16 bytes in the
/// small geometry).
pub struct RegionSource {
    state: spin::Mutex<State>,
    page_size: usize,
}

const PAGE: usize = crate::size_class::MIN_OS_PAGE;

impl RegionSource {
    /// A source with no memory yet (usable in a `static`); give it memory with
    /// [`add_memory`](Self::add_memory).
    pub const fn empty() -> Self {
        RegionSource {
            state: spin::Mutex::new(State {
                ranges: [Range { start: 0, end: 0 }; MAX_RANGES],
                len: 0,
                free_bytes: 0,
                phase: 0,
            }),
            page_size: PAGE,
        }
    }

    /// A source over `mem`.
    pub fn new(mem: &'static mut [u8]) -> Self {
        let s = Self::empty();
        // SAFETY: a `&'static mut` slice is valid for `'static` and exclusively ours.
        unsafe { s.add_memory(mem.as_mut_ptr(), mem.len()) };
        s
    }

    /// Adds `[ptr, ptr + len)` (trimmed to whole pages) to the memory handed out.
    ///
    /// # Safety
    /// The range is valid for reads and writes for `'static`, used by nothing else, and
    /// does not overlap memory already added.
    /// Returns the bytes added (after trimming).
    pub unsafe fn add_memory(&self, ptr: *mut u8, len: usize) -> usize {
        let mut state = self.state.lock();
        // whole pages, counted from the phase
        let phase = state.phase;
        let start = ((ptr as usize).wrapping_sub(phase).saturating_add(PAGE - 1) & !(PAGE - 1))
            .wrapping_add(phase);
        let end = ((ptr as usize).saturating_add(len).wrapping_sub(phase) & !(PAGE - 1))
            .wrapping_add(phase);
        if end > start && start >= ptr as usize {
            state.free(start, end - start);
            return end - start;
        }
        0
    }

    /// Bytes not handed out.
    pub fn free_bytes(&self) -> usize {
        self.state.lock().free_bytes
    }

    /// Makes alignments relative to `phase` from now on: a region aligned to `align`
    /// starts at `a` with `(a - phase) % align == 0`. The small geometry aligns segments to
    /// the start of the first memory given (see `embedded::Heap`), so that none of it is
    /// lost to alignment. Set it before adding memory; `phase` is a multiple of 16.
    pub fn set_phase(&self, phase: usize) {
        debug_assert_eq!(phase % 16, 0);
        self.state.lock().phase = phase;
    }
}

impl State {
    fn insert_at(&mut self, i: usize, r: Range) -> bool {
        if self.len == MAX_RANGES {
            return false;
        }
        self.ranges.copy_within(i..self.len, i + 1);
        self.ranges[i] = r;
        self.len += 1;
        true
    }

    fn remove_at(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<usize> {
        let phase = self.phase;
        for i in 0..self.len {
            let r = self.ranges[i];
            let a = (r.start.wrapping_sub(phase).wrapping_add(align - 1) & !(align - 1))
                .wrapping_add(phase);
            let Some(end) = a.checked_add(size) else {
                continue;
            };
            if a < r.start || end > r.end {
                continue;
            }
            // carve [a, end) out of r: up to two pieces remain
            let (head, tail) = (a > r.start, end < r.end);
            match (head, tail) {
                (false, false) => self.remove_at(i),
                (true, false) => self.ranges[i].end = a,
                (false, true) => self.ranges[i].start = end,
                (true, true) => {
                    if !self.insert_at(
                        i + 1,
                        Range {
                            start: end,
                            end: r.end,
                        },
                    ) {
                        continue; // no room to track the tail: try elsewhere
                    }
                    self.ranges[i].end = a;
                }
            }
            self.free_bytes -= size;
            return Some(a);
        }
        None
    }

    fn free(&mut self, start: usize, size: usize) {
        let end = start + size;
        let i = self.ranges[..self.len].partition_point(|r| r.end <= start);
        debug_assert!(
            i == self.len || self.ranges[i].start >= end,
            "double free of a region"
        );
        let merge_prev = i > 0 && self.ranges[i - 1].end == start;
        let merge_next = i < self.len && self.ranges[i].start == end;
        match (merge_prev, merge_next) {
            (true, true) => {
                self.ranges[i - 1].end = self.ranges[i].end;
                self.remove_at(i);
            }
            (true, false) => self.ranges[i - 1].end = end,
            (false, true) => self.ranges[i].start = start,
            (false, false) => {
                // if we cannot track it, the range is lost (never happens with
                // coalescing and fewer than MAX_RANGES live regions)
                if !self.insert_at(i, Range { start, end }) {
                    return;
                }
            }
        }
        self.free_bytes += size;
    }
}

// SAFETY: regions are carved from disjoint free ranges under the lock, so no two live
// regions overlap; the memory is always usable (never committed/decommitted); nothing
// here allocates.
unsafe impl PageSource for RegionSource {
    fn config(&self) -> SourceConfig {
        SourceConfig {
            page_size: self.page_size,
            alloc_granularity: self.page_size,
            has_reserve: false,
            decommit_zeroes: false,
        }
    }

    unsafe fn alloc(&self, size: usize, align: usize, _commit: bool) -> Option<Region> {
        let size = (size + PAGE - 1) & !(PAGE - 1);
        let start = self.state.lock().alloc(size, align.max(PAGE))?;
        Some(Region {
            ptr: NonNull::new(start as *mut u8)?,
            size,
            committed: true,
            zeroed: false,
        })
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize) {
        self.state.lock().free(ptr.as_ptr() as usize, size);
    }
}
