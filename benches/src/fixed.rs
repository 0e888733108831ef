//! The no_std peers (talc, rlsf, buddy_system_allocator, linked_list_allocator) as a
//! kernel uses them: one heap over a large fixed region, behind one spin lock.
//!
//! The region (4 GiB of address space) is reserved with `mmap(MAP_NORESERVE)` on the
//! first allocation, so only the pages a workload touches count in its RSS. The lock is
//! a test-and-test-and-set spin lock; because the benchmarks run 4 threads on 2 cores,
//! a waiter yields to the OS scheduler after a short spin (a pure spin lock would burn
//! whole time slices while the holder is descheduled, which measures the scheduler, not
//! the allocator).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of address space reserved for a fixed-region heap.
pub const REGION_SIZE: usize = 4 << 30;

/// A single-threaded heap over a region: what each no_std peer provides.
///
/// # Safety
/// `alloc` must return null or a block of at least `layout.size()` bytes aligned to
/// `layout.align()` inside the region, not overlapping any live block.
pub unsafe trait RegionHeap {
    /// Take the region `[base, base + size)`, called once before any allocation.
    ///
    /// # Safety
    /// The region is readable, writable and owned by the heap from now on.
    unsafe fn init(&mut self, base: *mut u8, size: usize);
    /// # Safety
    /// `layout.size() > 0`.
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8;
    /// # Safety
    /// `ptr` is live, from `alloc`/`realloc` of this heap with `layout`.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
    /// Grow or shrink in place if the heap can; the default always copies.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees GlobalAlloc::realloc's contract.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// A `RegionHeap` behind a spin lock, with its region mapped on first use.
pub struct FixedRegion<H> {
    locked: AtomicBool,
    ready: UnsafeCell<bool>,
    heap: UnsafeCell<H>,
}

// SAFETY: `ready` and `heap` are only touched while `locked` is held.
unsafe impl<H> Sync for FixedRegion<H> {}

impl<H: RegionHeap> FixedRegion<H> {
    pub const fn new(heap: H) -> Self {
        FixedRegion {
            locked: AtomicBool::new(false),
            ready: UnsafeCell::new(false),
            heap: UnsafeCell::new(heap),
        }
    }

    #[inline]
    fn lock(&self) -> Guard<'_, H> {
        let mut spins = 0u32;
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        // SAFETY: we hold the lock, so we are the only one touching `ready` and `heap`.
        unsafe {
            if !*self.ready.get() {
                let base = map_region(REGION_SIZE);
                (*self.heap.get()).init(base, REGION_SIZE);
                *self.ready.get() = true;
            }
        }
        Guard { owner: self }
    }
}

struct Guard<'a, H> {
    owner: &'a FixedRegion<H>,
}

impl<H> Guard<'_, H> {
    #[inline]
    fn heap(&mut self) -> &mut H {
        // SAFETY: the guard holds the lock, which gives exclusive access to the heap.
        unsafe { &mut *self.owner.heap.get() }
    }
}

impl<H> Drop for Guard<'_, H> {
    #[inline]
    fn drop(&mut self) {
        self.owner.locked.store(false, Ordering::Release);
    }
}

fn map_region(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let msg = b"fixed region: mmap failed\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    }
    p.cast()
}

// SAFETY: each method takes the lock and forwards to the heap, whose contract matches.
unsafe impl<H: RegionHeap> GlobalAlloc for FixedRegion<H> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc guarantees a non-zero size.
        unsafe { self.lock().heap().alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from this allocator with `layout`.
        unsafe { self.lock().heap().dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as GlobalAlloc::realloc.
        unsafe { self.lock().heap().realloc(ptr, layout, new_size) }
    }
}

// ---------------------------------------------------------------- talc

/// talc 5.1 with the `Manual` source: the region is claimed at init.
pub struct TalcHeap(talc::base::Talc<talc::source::Manual, talc::DefaultBinning>);

impl TalcHeap {
    pub const fn new() -> Self {
        TalcHeap(talc::base::Talc::new(talc::source::Manual))
    }
}

impl Default for TalcHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to talc, which only hands out memory from the claimed region.
unsafe impl RegionHeap for TalcHeap {
    unsafe fn init(&mut self, base: *mut u8, size: usize) {
        // SAFETY: the region is ours and given to talc for good.
        let ok = unsafe { self.0.claim(base, size) };
        assert!(ok.is_some(), "talc: claim failed");
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size, per the trait.
        unsafe { self.0.allocate(layout) }.map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr is live in this heap with `layout`.
        unsafe { self.0.deallocate(ptr, layout) }
    }
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as GlobalAlloc::realloc; talc's in-place routines take the same contract.
        unsafe {
            if new_size <= layout.size() {
                self.0.shrink(ptr, layout, new_size);
                return ptr;
            }
            if self.0.try_grow_in_place(ptr, layout, new_size) {
                return ptr;
            }
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

// ---------------------------------------------------------------- rlsf

/// rlsf 0.2 TLSF: 32-bit bitmaps, first level up to 32 B << 28 = 8 GiB blocks.
pub struct RlsfHeap(rlsf::Tlsf<'static, u32, u32, 28, 32>);

impl RlsfHeap {
    pub const fn new() -> Self {
        RlsfHeap(rlsf::Tlsf::new())
    }
}

impl Default for RlsfHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to rlsf, which only hands out memory from the inserted region.
unsafe impl RegionHeap for RlsfHeap {
    unsafe fn init(&mut self, base: *mut u8, size: usize) {
        let block = NonNull::slice_from_raw_parts(NonNull::new(base).unwrap(), size);
        // SAFETY: the region is ours for the rest of the process.
        let ok = unsafe { self.0.insert_free_block_ptr(block) };
        assert!(ok.is_some(), "rlsf: insert_free_block_ptr failed");
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr is live in this heap, allocated with this alignment.
        unsafe {
            self.0
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as GlobalAlloc::realloc; same alignment as the original allocation.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            self.0
                .reallocate(NonNull::new_unchecked(ptr), new_layout)
                .map_or(ptr::null_mut(), |p| p.as_ptr())
        }
    }
}

// ---------------------------------------------------------------- buddy_system_allocator

/// buddy_system_allocator 0.13: order 33 covers blocks up to 4 GiB.
pub struct BuddyHeap(buddy_system_allocator::Heap<33>);

impl BuddyHeap {
    pub const fn new() -> Self {
        BuddyHeap(buddy_system_allocator::Heap::empty())
    }
}

impl Default for BuddyHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the buddy heap, which only hands out memory from the added region.
unsafe impl RegionHeap for BuddyHeap {
    unsafe fn init(&mut self, base: *mut u8, size: usize) {
        // SAFETY: the region is ours for the rest of the process.
        unsafe { self.0.init(base as usize, size) }
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0.alloc(layout).map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr is live in this heap with `layout`.
        unsafe { self.0.dealloc(NonNull::new_unchecked(ptr), layout) }
    }
}

// ---------------------------------------------------------------- linked_list_allocator

/// linked_list_allocator 0.10: first fit over one free list.
pub struct LinkedListHeap(linked_list_allocator::Heap);

impl LinkedListHeap {
    pub const fn new() -> Self {
        LinkedListHeap(linked_list_allocator::Heap::empty())
    }
}

impl Default for LinkedListHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the heap, which only hands out memory from its region.
unsafe impl RegionHeap for LinkedListHeap {
    unsafe fn init(&mut self, base: *mut u8, size: usize) {
        // SAFETY: the region is ours for the rest of the process.
        unsafe { self.0.init(base, size) }
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr is live in this heap with `layout`.
        unsafe { self.0.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}
