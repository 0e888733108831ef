//! The physical frame allocator: 4 KiB frames of usable RAM above the kernel image.
//!
//! Frames come from two places: a free list (a stack threaded through the free frames
//! themselves, reached through the identity map) of frames that were given back, and
//! untouched ranges of RAM that are handed out front to back. So setting it up touches no
//! memory, and freeing is O(1).
//!
//! Invariant: `free_frames() == free_len + Σ (end - next) / 4096` over the ranges, and a frame
//! is either on the free list, in an untouched range, or owned by exactly one user.

use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use x86_64::PhysAddr;

const FRAME: u64 = 4096;
const MAX_RANGES: usize = 64;
/// End of the free list.
const NIL: u64 = u64::MAX;

#[derive(Clone, Copy)]
struct Range {
    next: u64,
    end: u64,
}

struct Inner {
    free_head: u64,
    free_len: usize,
    ranges: [Range; MAX_RANGES],
    nranges: usize,
    total: usize,
    /// Frames at or above this address are not identity-mapped and never handed out.
    limit: u64,
}

/// A frame allocator over the usable RAM. Shared by all CPUs through a spin lock (taken with
/// interrupts off, so an interrupt handler that allocates cannot deadlock against its CPU).
pub struct PhysFrames {
    inner: spin::Mutex<Inner>,
}

impl PhysFrames {
    pub const fn new() -> Self {
        PhysFrames {
            inner: spin::Mutex::new(Inner {
                free_head: NIL,
                free_len: 0,
                ranges: [Range { next: 0, end: 0 }; MAX_RANGES],
                nranges: 0,
                total: 0,
                limit: 0,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        x86_64::instructions::interrupts::without_interrupts(|| f(&mut self.inner.lock()))
    }

    /// Sets the end of the identity map: frames at or above it are never handed out.
    pub fn set_limit(&self, limit: u64) {
        self.with(|s| s.limit = limit);
    }

    /// Adds the RAM `[start, end)` (rounded inwards to frames), clipped to the limit.
    /// Ranges must be added in increasing address order and must not overlap.
    pub fn add_range(&self, start: u64, end: u64) {
        self.with(|s| {
            let start = start.div_ceil(FRAME) * FRAME;
            let end = end.min(s.limit) / FRAME * FRAME;
            if end <= start || s.nranges == MAX_RANGES {
                return;
            }
            s.ranges[s.nranges] = Range { next: start, end };
            s.nranges += 1;
            s.total += ((end - start) / FRAME) as usize;
        });
    }

    /// Takes one frame, or `None` when all are used.
    pub fn allocate(&self) -> Option<PhysFrame> {
        self.with(|s| {
            let addr = if s.free_head != NIL {
                let a = s.free_head;
                // SAFETY: `a` is a free frame below the identity-map limit; its first word
                // holds the next free frame (written by `deallocate`).
                s.free_head = unsafe { (a as *const u64).read_volatile() };
                s.free_len -= 1;
                a
            } else {
                let r = s.ranges[..s.nranges].iter_mut().find(|r| r.next < r.end)?;
                let a = r.next;
                r.next += FRAME;
                a
            };
            Some(PhysFrame::containing_address(PhysAddr::new(addr)))
        })
    }

    /// Gives a frame back.
    ///
    /// # Safety
    /// The frame came from [`allocate`](Self::allocate), is not in use (not mapped anywhere,
    /// no TLB of any CPU still maps it), and is given back once.
    pub unsafe fn deallocate(&self, frame: PhysFrame) {
        self.with(|s| {
            let a = frame.start_address().as_u64();
            // SAFETY: the frame is identity-mapped (below the limit) and unused (caller).
            unsafe { (a as *mut u64).write_volatile(s.free_head) };
            s.free_head = a;
            s.free_len += 1;
        })
    }

    /// Frames that can be allocated now.
    pub fn free_frames(&self) -> usize {
        self.with(|s| {
            s.free_len
                + s.ranges[..s.nranges]
                    .iter()
                    .map(|r| ((r.end - r.next) / FRAME) as usize)
                    .sum::<usize>()
        })
    }

    /// All frames this allocator manages.
    pub fn total_frames(&self) -> usize {
        self.with(|s| s.total)
    }
}

/// A handle to a `'static` [`PhysFrames`], as the `x86_64` crate's paging code wants it.
#[derive(Clone, Copy)]
pub struct Frames(pub &'static PhysFrames);

// SAFETY: `allocate` hands out each frame once until it is given back, and only frames of
// usable RAM that nothing else uses.
unsafe impl FrameAllocator<Size4KiB> for Frames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.0.allocate()
    }
}

impl FrameDeallocator<Size4KiB> for Frames {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // SAFETY: forwarded from the caller of deallocate_frame (same contract).
        unsafe { self.0.deallocate(frame) }
    }
}
