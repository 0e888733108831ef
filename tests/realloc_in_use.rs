//! A block that `realloc` moves keeps the bytes its caller uses, not its whole usable size:
//! `GlobalAlloc::realloc` knows the old layout's size, and a huge block's usable size may
//! be far larger (here: a 16 MiB block shrunk in place to 10 MiB keeps 16 MiB usable).
//! The evidence does not depend on time: reading a page the process never touched costs a
//! minor page fault (the kernel maps its zero page), so a copy of the whole usable size
//! faults once per 4 KiB of the 6 MiB the program never wrote, a copy of the 10 MiB in use
//! (all resident) into a resident cached region faults about never. Transparent huge pages
//! are switched off for this process (`PR_SET_THP_DISABLE`), so that a page fault is 4 KiB.
//! Alone in its test binary: the fault counter and the cache are the process's.

use std::alloc::{alloc, dealloc, realloc, Layout};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::{minor_faults, touch_pages};

const MB: usize = 1 << 20;
const PAGE: usize = 4096;

fn word(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1157
}

/// Writes a word at the start of every page of `p[..to]`.
fn stamp(p: *mut u8, to: usize) {
    for off in (0..to).step_by(PAGE) {
        // SAFETY: `off < to <= size of the block`, 8-aligned (page offsets of an 8-aligned block).
        unsafe { (p.add(off) as *mut u64).write(word(off / PAGE)) };
    }
}

fn stamped(p: *const u8, to: usize) -> bool {
    (0..to)
        .step_by(PAGE)
        .all(|off| unsafe { (p.add(off) as *const u64).read() } == word(off / PAGE))
}

/// Reads one byte of every page of `p[..n]`.
fn read_pages(p: *const u8, n: usize) -> u64 {
    (0..n)
        .step_by(PAGE)
        .map(|off| unsafe { std::ptr::read_volatile(p.add(off)) } as u64)
        .sum()
}

#[test]
fn a_moved_huge_block_copies_only_its_bytes_in_use() {
    common::thp_off();

    // a region of 48 MiB, resident, that the cache will hold (it caches regions of up to
    // 16 segments, 64 MiB; freed below, once the block
    // and its neighbour are placed: they must not take it)
    let cached = Layout::from_size_align(48 * MB, 8).unwrap();
    let c = unsafe { alloc(cached) };
    assert!(!c.is_null());
    touch_pages(c, 48 * MB, 1);

    // a 16 MiB block, shrunk in place to 10 MiB: its last 6 MiB were never written
    let big = Layout::from_size_align(16 * MB, 8).unwrap();
    let p = unsafe { alloc(big) };
    assert!(!p.is_null());
    let p2 = unsafe { realloc(p, big, 10 * MB) };
    assert_eq!(p2, p, "a block shrunk by less than half stays in place");
    let in_use = Layout::from_size_align(10 * MB, 8).unwrap();
    stamp(p, 10 * MB);
    assert!(unsafe { shardalloc::usable_size(p) } >= 16 * MB);
    // a neighbour right after it (the next huge mapping usually lands there), so that the
    // block cannot grow where it is
    let near = Layout::from_size_align(8 * MB, 8).unwrap();
    let n = unsafe { alloc(near) };
    assert!(!n.is_null());
    touch_pages(n, 8 * MB, 2);

    // the resident region into the cache: growth moves the block there by a copy (a remap
    // would fault the new part in as fresh memory)
    unsafe { dealloc(c, cached) };

    let f0 = minor_faults();
    let q = unsafe { realloc(p, in_use, 24 * MB) };
    let faults = minor_faults() - f0;
    assert!(!q.is_null());
    let untouched = (6 * MB / PAGE) as i64; // what reading the unwritten tail costs
    eprintln!(
        "realloc 10 (16 usable) -> 24 MiB: {} ({p:p} -> {q:p}), {faults} minor faults \
         (a copy of the usable size: at least {untouched})",
        if q == p { "in place" } else { "moved" },
    );
    assert_ne!(
        q, p,
        "the block grew in place: the cached resident region was not used, so this run \
         cannot tell what a move copies"
    );
    assert!(stamped(q, 10 * MB), "contents lost moving the block");
    assert!(
        faults * 8 < untouched,
        "the move took {faults} page faults: it read the 6 MiB past the 10 MiB in use \
         (reading them takes {untouched})"
    );

    // Control: reading never-written pages of a fresh mapping does fault once per page, so
    // the count above tells a copy of the usable size from one of the bytes in use.
    // SAFETY: a private anonymous mapping of our own, read then unmapped below.
    let f = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            6 * MB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(f, libc::MAP_FAILED);
    let f0 = minor_faults();
    let sum = read_pages(f as *const u8, 6 * MB);
    let faults = minor_faults() - f0;
    eprintln!("control: reading 6 fresh MiB took {faults} minor faults (sum {sum})");
    assert!(
        faults >= untouched / 2,
        "reading 6 fresh MiB took only {faults} faults: the count cannot tell a copy here"
    );
    unsafe {
        assert_eq!(libc::munmap(f, 6 * MB), 0);
        dealloc(n, near);
        dealloc(q, Layout::from_size_align(24 * MB, 8).unwrap());
    }
}
