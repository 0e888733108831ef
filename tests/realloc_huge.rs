//! Growing a huge block with `realloc` moves or extends its mapping (`mremap`) instead of
//! copying its bytes. The evidence does not depend on time: copying N bytes into memory
//! the process never touched costs one minor page fault per 4 KiB page written, moving
//! page tables costs none. Transparent huge pages are switched off for this process
//! (`PR_SET_THP_DISABLE`), so that a copy would fault once per 4 KiB and not per 2 MiB.
//! Alone in its test binary: the fault counter and the mappings are the process's.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::minor_faults;

const MB: usize = 1 << 20;
const PAGE: usize = 4096;

fn word(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// Writes a word at the start of every page of `p[from..to]`.
fn stamp(p: *mut u8, from: usize, to: usize) {
    for off in (from..to).step_by(PAGE) {
        // SAFETY: `off < to <= size of the block`, 8-aligned (page offsets of an 8-aligned block).
        unsafe { (p.add(off) as *mut u64).write(word(off / PAGE)) };
    }
}

fn stamped(p: *const u8, to: usize) -> bool {
    (0..to)
        .step_by(PAGE)
        .all(|off| unsafe { (p.add(off) as *const u64).read() } == word(off / PAGE))
}

/// Grows a 16 MiB block to 64 and 256 MiB; returns it, its size, and how many of the two
/// steps kept the address.
fn grow(what: &str) -> (*mut u8, usize, usize) {
    let mut size = 16 * MB;
    let mut p = unsafe { shardalloc::alloc(size, 8, false) };
    assert!(!p.is_null());
    stamp(p, 0, size); // every page of it resident
                       // a neighbour right after it (the next huge mapping usually lands there): the block
                       // can then not grow where it is and its pages move to a new place
    let neighbour = if what == "moved" {
        let n = unsafe { shardalloc::alloc(8 * MB, 8, false) };
        assert!(!n.is_null());
        stamp(n, 0, 8 * MB);
        n
    } else {
        std::ptr::null_mut()
    };
    let mut in_place = 0;
    for new_size in [64 * MB, 256 * MB] {
        let f0 = minor_faults();
        let q = unsafe { shardalloc::realloc(p, new_size, 8, false) };
        let faults = minor_faults() - f0;
        assert!(!q.is_null());
        let copy_faults = (size / PAGE) as i64; // what writing `size` fresh bytes costs
        eprintln!(
            "{what}: realloc {} -> {} MiB: {} ({:p} -> {:p}), {faults} minor faults \
             (a copy: at least {copy_faults})",
            size / MB,
            new_size / MB,
            if q == p { "grown in place" } else { "moved" },
            p,
            q
        );
        if q == p {
            in_place += 1;
        }
        assert!(
            stamped(q, size),
            "contents lost growing to {new_size} bytes"
        );
        assert!(
            faults * 16 < copy_faults,
            "realloc to {} MiB took {faults} page faults: it copied (a copy of {} MiB \
             takes {copy_faults})",
            new_size / MB,
            size / MB
        );
        assert!(unsafe { shardalloc::usable_size(q) } >= new_size);
        stamp(q, size, new_size);
        p = q;
        size = new_size;
    }
    assert!(stamped(p, size));
    if !neighbour.is_null() {
        assert!(stamped(neighbour, 8 * MB));
        unsafe { shardalloc::free(neighbour) };
    }
    (p, size, in_place)
}

#[test]
fn huge_realloc_grows_without_copying() {
    common::thp_off();

    let (p, size, in_place) = grow("in place");
    unsafe { shardalloc::free(p) };
    let (p, size2, moved_in_place) = grow("moved");
    assert_eq!(size, size2);
    eprintln!(
        "address kept: {in_place} of 2 steps without a neighbour, {moved_in_place} of 2 with one"
    );

    // Control: the same growth by hand (allocate, copy, free) does fault once per page,
    // so the fault count above tells a copy from a move on this machine.
    let f0 = minor_faults();
    let q = unsafe { shardalloc::alloc(2 * size, 8, false) };
    assert!(!q.is_null());
    unsafe { std::ptr::copy_nonoverlapping(p, q, size) };
    let faults = minor_faults() - f0;
    eprintln!(
        "control: a copy of {} MiB took {faults} minor faults",
        size / MB
    );
    assert!(
        faults >= (size / PAGE) as i64 / 2,
        "a copy of {size} bytes took only {faults} faults: the fault count cannot tell a copy here"
    );
    assert!(stamped(q, size));
    unsafe {
        shardalloc::free(p);
        shardalloc::free(q);
    }
}
