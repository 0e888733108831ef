//! A fresh page of blocks of an OS page or more (4 KiB and up) links one block into its
//! free list at a time, as mimalloc v3 does: handing out its first block touches that
//! block's OS page only, not the pages of three more blocks the program may never take
//! (issue 11: with four blocks linked at a time, mstress, 10% of whose blocks are 257 B to
//! 512 KiB, made 15-24% more page faults).
//!
//! Residency, not times: `mincore` says which OS pages of the page's memory are resident
//! after the first block of a class was handed out (and nothing written to it), in memory
//! that was fresh from the OS (a forced collection first gives cached regions back, and
//! transparent huge pages are off for the process: `PR_SET_THP_DISABLE`). Alone in its
//! test binary: the cache and the segments are the process's.
//! (Not in secure mode, whose free lists grow by four blocks at least, shuffled.)
#![cfg(all(target_os = "linux", not(feature = "secure")))]

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;

const PAGE: usize = 4096;

/// Whether the OS page at `addr` (page aligned) is resident.
fn resident(addr: usize) -> bool {
    let mut vec = [0u8; 1];
    // SAFETY: one page-aligned page of a live mapping of ours (a block of the allocator's
    // page, inside its segment); `vec` has room for its one entry.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, PAGE, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore({addr:#x}) failed");
    vec[0] & 1 != 0
}

#[test]
fn first_block_of_a_large_class_touches_one_os_page() {
    common::thp_off();
    // A thread of its own, so that its heap has no page of these classes yet; cached
    // regions go back first, so that its segments are fresh mappings (nothing resident).
    std::thread::spawn(|| {
        shardalloc::collect(true);
        // small pages (64 KiB) of 8 KiB blocks, medium pages (512 KiB) of 64 KiB blocks
        for size in [8 << 10, 64 << 10] {
            // SAFETY: 8 is a power of two; the block is freed once below.
            let b = unsafe { shardalloc::alloc(size, 8, false) } as usize;
            assert_ne!(b, 0);
            assert_eq!(b % PAGE, 0, "a block of {size} bytes not page aligned");
            // the block itself: its free-list link was written (so the check below looks
            // at memory that the extension really touched, and at fresh memory)
            assert!(resident(b), "{size}-byte block: its own page is not resident");
            // the next blocks of its page: not linked yet, not touched
            let untouched: Vec<usize> = (1..4)
                .map(|i| b + i * size)
                .filter(|&p| !resident(p))
                .collect();
            assert_eq!(
                untouched.len(),
                3,
                "{size}-byte blocks: handing out the first block made the pages of the next \
                 ones resident (the free list grew by more than one block): untouched {untouched:x?}"
            );
            // SAFETY: from `alloc` above, freed once.
            unsafe { shardalloc::free(b as *mut u8) };
        }
    })
    .join()
    .unwrap();
}
