//! `oom`: allocate until the frames run out. The allocation APIs must return null (and
//! `try_reserve` an error), nothing may panic; then everything is freed, every CPU's heap
//! collected, the frames must be back in the frame allocator, and allocating works again.
//! Before running out, at least 95% of the free memory must have been handed out, in a
//! mix of sizes and in small blocks of one size.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use super::check::{fill, verify};
use crate::{heap, mem, smp};

/// Sizes tried in turn, each until it fails: big first, then smaller to fill the gaps.
const SIZES: [usize; 6] = [4 << 20, 256 << 10, 16 << 10, 1024, 64, 16];
/// Sizes of the small-block rounds (those of them that fill memory in at most
/// `SMALL_MAX_BLOCKS` blocks, so that big memories take no longer than small ones).
const SMALL_SIZES: [usize; 3] = [16, 64, 1024];
const SMALL_MAX_BLOCKS: usize = 2 << 20;
/// What must be handed out before out of memory, in thousandths of the free memory. A
/// correct allocator hands out 99% or more (segment and page metadata, page tables of
/// the window, the heaps themselves take the rest), in big blocks and in small ones alike;
/// one that wastes more than a twentieth (half, say, or a size class twice too big) fails.
const MIN_USE_PERMILLE: u64 = 950;

/// A chain of live blocks: each block's first word links the next, the second holds its
/// size (so the chain needs no memory of its own).
struct Chain {
    head: *mut u8,
    count: usize,
    bytes: usize,
}

impl Chain {
    fn push(&mut self, p: *mut u8, size: usize) {
        // SAFETY: p is a live block of `size` >= 16 bytes, 8-aligned.
        unsafe {
            (p as *mut *mut u8).write(self.head);
            (p as *mut usize).add(1).write(size);
        }
        self.head = p;
        self.count += 1;
        self.bytes += size;
    }

    fn free_all(&mut self) {
        while !self.head.is_null() {
            // SAFETY: chain blocks are live; their header says the next and the size.
            unsafe {
                let p = self.head;
                self.head = (p as *const *mut u8).read();
                let size = (p as *const usize).add(1).read();
                if size > 64 {
                    verify(p.add(16), 48, size as u64, "oom block");
                }
                alloc::alloc::dealloc(p, Layout::from_size_align(size, 8).unwrap());
            }
        }
        self.count = 0;
        self.bytes = 0;
    }
}

pub fn run(_args: &super::Args) {
    heap::collect_all(true);
    let free0 = mem::PHYS.free_frames();
    let mapped0 = mem::SOURCE.stats().mapped_pages;
    println!(
        "oom: {} frames free, {} pages mapped by the allocator",
        free0, mapped0
    );

    let mut regions_after_first = None;
    for round in 0..3 {
        let mut chain = Chain {
            head: ptr::null_mut(),
            count: 0,
            bytes: 0,
        };
        let mut failures = 0;
        for &size in &SIZES {
            loop {
                let l = Layout::from_size_align(size, 8).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { alloc::alloc::alloc(l) };
                if p.is_null() {
                    failures += 1;
                    break;
                }
                if size > 64 {
                    // SAFETY: p has `size` > 64 bytes.
                    unsafe { fill(p.add(16), 48, size as u64) };
                }
                chain.push(p, size);
            }
        }
        let free_at_oom = mem::PHYS.free_frames();
        // More ways to ask for memory that is not there, none of which may panic.
        let mut v: Vec<u8> = Vec::new();
        assert!(
            v.try_reserve(64 << 20).is_err(),
            "try_reserve of 64 MiB succeeded at OOM"
        );
        assert!(v.try_reserve(usize::MAX / 4).is_err());
        // Through the allocator object itself: the compiler may elide an unused
        // `alloc::alloc::alloc` and assume it succeeded.
        for (size, zeroed) in [
            (1usize << 40, false),
            (8 << 20, true),
            (isize::MAX as usize - 4095, false),
        ] {
            let l = Layout::from_size_align(size, 4096).unwrap();
            // SAFETY: non-zero size; a block that comes back is freed with its layout.
            let p = unsafe {
                if zeroed {
                    heap::ALLOC.alloc_zeroed(l)
                } else {
                    heap::ALLOC.alloc(l)
                }
            };
            if !p.is_null() {
                // SAFETY: as above.
                unsafe { heap::ALLOC.dealloc(p, l) };
                panic!("allocating {size} bytes at OOM succeeded");
            }
        }
        println!(
            "oom round {}: {} blocks ({} KiB) until out of memory ({} failures); {} frames left; try_reserve failed cleanly",
            round,
            chain.count,
            chain.bytes >> 10,
            failures,
            free_at_oom
        );
        check_use(chain.bytes, free0, None);
        chain.free_all();
        heap::collect_all(true);
        let free1 = mem::PHYS.free_frames();
        let st = mem::SOURCE.stats();
        // Page tables of the window that got built stay (a few frames per 2 MiB mapped).
        let bound = free0 / 100 + 64;
        println!(
            "oom round {}: after free + collect: {} frames free (start {}, bound {}), {} pages still mapped, {} regions; statistics:\n{}",
            round,
            free1,
            free0,
            bound,
            st.mapped_pages,
            st.regions,
            heap::ALLOC.stats()
        );
        assert!(
            free1 + bound >= free0,
            "frames did not come back: {} free after collect, {} before",
            free1,
            free0
        );
        // Running out must not leave segments behind: what stays after the first round
        // (the heaps' own metadata) stays the same in the next ones.
        match regions_after_first {
            None => regions_after_first = Some((st.regions, st.mapped_pages)),
            Some((regions, mapped)) => assert!(
                st.regions <= regions && st.mapped_pages <= mapped,
                "segments leak at OOM: {} regions / {} pages mapped after round {round}, {regions} / {mapped} after round 0",
                st.regions,
                st.mapped_pages
            ),
        }
    }

    // Small blocks only: one size, allocated until out of memory.
    let sizes = SMALL_SIZES
        .iter()
        .filter(|&&size| size == 1024 || free0 * 4096 / size <= SMALL_MAX_BLOCKS);
    for &size in sizes {
        let mut chain = Chain {
            head: ptr::null_mut(),
            count: 0,
            bytes: 0,
        };
        let l = Layout::from_size_align(size, 8).unwrap();
        loop {
            // SAFETY: non-zero size.
            let p = unsafe { alloc::alloc::alloc(l) };
            if p.is_null() {
                break;
            }
            if size > 64 {
                // SAFETY: p has `size` > 64 bytes.
                unsafe { fill(p.add(16), 48, size as u64) };
            }
            chain.push(p, size);
        }
        let permille = chain.bytes as u64 * 1000 / (free0 as u64 * 4096);
        println!(
            "oom small: {} blocks of {} bytes ({} KiB) until out of memory: {}.{}% of the {} KiB free",
            chain.count,
            size,
            chain.bytes >> 10,
            permille / 10,
            permille % 10,
            free0 * 4
        );
        check_use(chain.bytes, free0, Some(size));
        chain.free_all();
        heap::collect_all(true);
    }

    // And memory is usable again: half of it in 64 KiB blocks, checked and freed.
    let mut chain = Chain {
        head: ptr::null_mut(),
        count: 0,
        bytes: 0,
    };
    while chain.bytes < free0 * 4096 / 2 {
        let l = Layout::from_size_align(64 << 10, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc::alloc::alloc(l) };
        assert!(
            !p.is_null(),
            "alloc failed after recovery at {} KiB",
            chain.bytes >> 10
        );
        // SAFETY: p has 64 KiB.
        unsafe { fill(p.add(16), 48, (64 << 10) as u64) };
        chain.push(p, 64 << 10);
    }
    chain.free_all();
    heap::collect_all(true);
    let _ = smp::online();
}

/// Fails the run unless `bytes` handed out before out of memory (in blocks of
/// `block_size`, if one size) make at least `MIN_USE_PERMILLE` of the `free_frames` that
/// were free at the start. (It formats without allocating: the heap is full here.)
fn check_use(bytes: usize, free_frames: usize, block_size: Option<usize>) {
    struct InBlocks(Option<usize>);
    impl core::fmt::Display for InBlocks {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Some(size) => write!(f, " in {size}-byte blocks"),
                None => Ok(()),
            }
        }
    }
    let permille = bytes as u64 * 1000 / (free_frames as u64 * 4096);
    assert!(
        permille >= MIN_USE_PERMILLE,
        "oom: only {} KiB ({}.{}%) handed out{} before out of memory, of {} KiB free (at least {}.{}% expected)",
        bytes >> 10,
        permille / 10,
        permille % 10,
        InBlocks(block_size),
        free_frames * 4,
        MIN_USE_PERMILLE / 10,
        MIN_USE_PERMILLE % 10
    );
}
