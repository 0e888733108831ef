//! A zeroing `realloc` (`shardalloc::realloc(.., zero = true)`, mimalloc's `mi_rezalloc`) of a
//! block from a zeroing allocation: the bytes past the old size read as zero, also when the
//! block grows within itself (in place) and when it shrank in place before. Found by the
//! `ops` fuzz target in secure mode (`fuzz/regressions/secure/ops-rezalloc-tail`): zeroing
//! allocations zeroed only the requested bytes, and the in-place path returned the block
//! with the rest of it as the last user left it.

/// Dirties freed blocks of every size class up to 1 KiB, so that the next allocations of
/// those classes reuse blocks full of 0xAA.
fn dirty_blocks(usable: usize) {
    let mut held = Vec::new();
    for _ in 0..64 {
        // SAFETY: 1 is a power of two.
        let p = unsafe { shardalloc::alloc(usable, 1, false) };
        assert!(!p.is_null());
        // SAFETY: `p` is a live block of at least `usable` bytes.
        let n = unsafe { shardalloc::usable_size(p) };
        // SAFETY: as above, `n` usable bytes.
        unsafe { std::ptr::write_bytes(p, 0xAA, n) };
        held.push(p);
    }
    for p in held {
        // SAFETY: live blocks from above, freed once.
        unsafe { shardalloc::free(p) };
    }
}

fn all_zero(p: *const u8, from: usize, to: usize) -> bool {
    // SAFETY: callers pass a live block with at least `to` usable bytes.
    unsafe { std::slice::from_raw_parts(p.add(from), to - from) }
        .iter()
        .all(|&b| b == 0)
}

#[test]
fn rezalloc_in_place_grows_into_zeros() {
    for size in [9usize, 24, 100, 200, 520, 1000, 3000] {
        for align in [1usize, 64] {
            dirty_blocks(size);
            // SAFETY: `align` is a power of two.
            let p = unsafe { shardalloc::alloc(size, align, true) };
            assert!(!p.is_null());
            // SAFETY: live block.
            let usable = unsafe { shardalloc::usable_size(p) };
            assert!(
                all_zero(p, 0, usable),
                "zeroed block of {size} (align {align}) not zero to its usable size {usable}"
            );
            // the program writes its `size` bytes
            // SAFETY: `size` bytes of the live block.
            unsafe { std::ptr::write_bytes(p, 0x55, size) };
            // grows within the block (in place) when there is room
            // SAFETY: a live block from a zeroing allocation, with its alignment.
            let q = unsafe { shardalloc::realloc(p, usable, align, true) };
            assert!(!q.is_null());
            assert!(
                all_zero(q, size, usable),
                "rezalloc {size} -> {usable} (align {align}): tail not zero"
            );
            // shrinks in place, the program writes, grows again
            let small = usable / 2 + 1;
            // SAFETY: `usable` bytes of the live block `q`.
            unsafe { std::ptr::write_bytes(q, 0x77, usable) };
            // SAFETY: as above.
            let r = unsafe { shardalloc::realloc(q, small, align, true) };
            assert!(!r.is_null());
            // SAFETY: `small` bytes of the live block `r`.
            unsafe { std::ptr::write_bytes(r, 0x66, small) };
            // SAFETY: as above.
            let s = unsafe { shardalloc::realloc(r, usable, align, true) };
            assert!(!s.is_null());
            assert!(
                all_zero(s, small, usable),
                "rezalloc {usable} -> {small} -> {usable} (align {align}): tail not zero"
            );
            // and moving to grow: zeros past the old size up to the new usable size
            // SAFETY: as above.
            let t = unsafe { shardalloc::realloc(s, 4 * usable, align, true) };
            assert!(!t.is_null());
            // SAFETY: live block.
            let tu = unsafe { shardalloc::usable_size(t) };
            assert!(
                all_zero(t, usable, tu),
                "rezalloc {usable} -> {}: tail not zero",
                4 * usable
            );
            // SAFETY: live block, freed once.
            unsafe { shardalloc::free(t) };
        }
    }
}
