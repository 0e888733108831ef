//! Poisons a free list of the Rust global allocator (`ShardAlloc`) the way a
//! use-after-free write does, then allocates on: run by `tests/poisoned_free_list.rs`.
//!
//! - With the `secure` feature the poisoned link is caught when it is decoded: the error
//!   is reported (address on stderr) and the process aborts (SIGABRT), never following it.
//! - Without it (the default build), the allocation fast path's head check catches a link
//!   that leaves the segment: reported, the list dropped, and the program runs on.
//!
//! Prints "POISONED" before the allocations that find the poison, and "SURVIVED" at the
//! end.

use shardalloc::ShardAlloc;

#[global_allocator]
static GLOBAL: ShardAlloc = ShardAlloc::new();

fn main() {
    // blocks of one size class, all on one page's lists
    let mut blocks: Vec<Box<[u64; 6]>> = (0..64).map(|i| Box::new([i; 6])).collect();
    let victims: Vec<*mut u64> = blocks
        .drain(..)
        .map(|b| Box::into_raw(b) as *mut u64)
        .collect();
    // free them all: each one's first word is now a free-list link
    for &v in &victims {
        // SAFETY: allocated by `Box::new` above, freed once.
        drop(unsafe { Box::from_raw(v as *mut [u64; 6]) });
    }
    // a use after free writes over the links (what a heap overflow does too)
    for &v in &victims {
        // SAFETY: none — this is the misuse under test. The memory stays mapped (the page
        // is retired, not given back), so the write itself does not fault.
        unsafe { std::ptr::write_volatile(v, 0x4141_4141_4141_4141) };
    }
    eprintln!("POISONED");
    // allocate the size class until its page's lists are used up
    let again: Vec<Box<[u64; 6]>> = (0..4096).map(|i| Box::new([i; 6])).collect();
    std::hint::black_box(&again);
    eprintln!("SURVIVED {} errors", shardalloc::secure::error_count());
}
