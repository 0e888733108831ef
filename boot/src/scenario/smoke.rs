//! `smoke`: the common collections and layouts, on the BSP.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;

pub fn run(_args: &super::Args) {
    // README's set-up for a blog_os-style kernel, as a second allocator (boot/src/adopt.rs)
    let st = crate::adopt::check();
    println!(
        "smoke: README's OffsetPageTable set-up: {} pages mapped, {} commits, {} regions live",
        st.mapped_pages, st.commits, st.regions
    );
    assert!(st.commits > 0, "smoke: the example's source mapped nothing");

    let b = Box::new(0x1234_5678u64);
    assert_eq!(*b, 0x1234_5678);
    drop(b);

    let mut v: Vec<u32> = Vec::new();
    for i in 0..100_000 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    let mut s = String::new();
    for i in 0..1000 {
        s.push_str(itoa(i, &mut [0; 20]));
        s.push(' ');
    }
    assert!(s.starts_with("0 1 2 3 "));
    assert!(s.ends_with(" 998 999 "));

    let mut m = BTreeMap::new();
    for i in 0..10_000u64 {
        m.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i);
    }
    assert_eq!(m.len(), 10_000);
    for i in (0..10_000u64).step_by(2) {
        assert_eq!(m.remove(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), Some(i));
    }
    assert_eq!(m.len(), 5_000);
    drop(m);

    // Every size class region and alignment, up to 4 MiB alignment and 16 MiB size (less
    // when memory is small: a quarter of the free memory).
    let big = (crate::mem::PHYS.free_frames() * 4096 / 4).min(16 << 20);
    for shift in 0..=22 {
        let align = 1usize << shift;
        for &size in &[1usize, 24, 1000, 4096, 70_000, 600_000, 3 << 20, big] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: the layout has non-zero size.
            let p = unsafe { alloc::alloc::alloc(l) };
            assert!(!p.is_null(), "alloc({size}, align {align}) failed");
            assert_eq!(
                p as usize % align,
                0,
                "alloc({size}, align {align}) misaligned: {p:p}"
            );
            // SAFETY: p is a live block of `size` bytes.
            unsafe {
                p.add(size - 1).write(0x5A);
                p.write(0xA5);
                assert_eq!(p.read(), 0xA5);
                assert_eq!(p.add(size - 1).read(), if size == 1 { 0xA5 } else { 0x5A });
                alloc::alloc::dealloc(p, l);
            }
        }
    }

    // Zeroed allocations read as zero, also after reuse of dirty memory.
    for size in [8usize, 512, 8192, 100_000, 2 << 20] {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size; the block is written within bounds and freed once.
        unsafe {
            let p = alloc::alloc::alloc(l);
            assert!(!p.is_null());
            core::ptr::write_bytes(p, 0xEE, size);
            alloc::alloc::dealloc(p, l);
            let z = alloc::alloc::alloc_zeroed(l);
            assert!(!z.is_null());
            let s = core::slice::from_raw_parts(z, size);
            assert!(s.iter().all(|&b| b == 0), "alloc_zeroed({size}) not zero");
            alloc::alloc::dealloc(z, l);
        }
    }

    // realloc keeps the contents, growing and shrinking across size classes.
    let mut l = Layout::from_size_align(16, 16).unwrap();
    // SAFETY: non-zero size.
    let mut p = unsafe { alloc::alloc::alloc(l) };
    assert!(!p.is_null());
    // SAFETY: p has 16 bytes.
    unsafe { core::ptr::write_bytes(p, 7, 16) };
    for &new in &[100usize, 5000, 80_000, 1 << 20, 300, 17, 9 << 20, 64] {
        // SAFETY: p is live with layout l; new > 0.
        let q = unsafe { alloc::alloc::realloc(p, l, new) };
        assert!(!q.is_null(), "realloc to {new} failed");
        assert_eq!(q as usize % 16, 0);
        let keep = l.size().min(new);
        // SAFETY: q has at least `keep` initialised bytes, then `new` bytes in all.
        unsafe {
            assert!(
                core::slice::from_raw_parts(q, keep).iter().all(|&b| b == 7),
                "realloc lost data"
            );
            core::ptr::write_bytes(q, 7, new);
        }
        p = q;
        l = Layout::from_size_align(new, 16).unwrap();
    }
    // SAFETY: p is live with layout l.
    unsafe { alloc::alloc::dealloc(p, l) };
    println!("smoke: Box, Vec, String, BTreeMap, alignments to 4 MiB, zeroed, realloc: fine");
    grow_and_keep();
    lazy_decommit();
    grow_in_place();
}

/// A buffer that doubles from 8 KiB moves once, into a huge segment of its own
/// (`alloc::moves_to_huge`), which reserves address space ahead (16 MiB): every further
/// doubling to 4 MiB then grows it in place (the same address, its contents kept) by
/// committing the room behind it, no copy and no remap.
fn grow_in_place() {
    // `tag ^ i * 31` at byte `i`: a check of a byte tells a lost or moved byte
    let byte = |i: usize| 0x5a ^ (i as u8).wrapping_mul(31);
    let mut size = 8usize << 10;
    let mut l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: non-zero size.
    let mut p = unsafe { alloc::alloc::alloc(l) };
    assert!(!p.is_null());
    // SAFETY: `p` holds `size` bytes.
    unsafe { (0..size).for_each(|i| p.add(i).write(byte(i))) };
    let mut moves = 0;
    let mut first = core::ptr::null_mut();
    while size < 4 << 20 {
        let new = size * 2;
        // SAFETY: `p` is live with layout `l`; `new` is non-zero and fits a layout.
        let q = unsafe { alloc::alloc::realloc(p, l, new) };
        assert!(!q.is_null(), "smoke: realloc to {new} bytes failed");
        if q != p {
            moves += 1;
            first = q;
        }
        // SAFETY: `q` holds `new` bytes, the first `size` of them kept from `p`.
        unsafe {
            for i in [0, 4095, size / 2, size - 1] {
                assert_eq!(
                    q.add(i).read(),
                    byte(i),
                    "smoke: a growing buffer lost byte {i}"
                );
            }
            (size..new).for_each(|i| q.add(i).write(byte(i)));
        }
        (p, size, l) = (q, new, Layout::from_size_align(new, 8).unwrap());
    }
    assert!(
        moves == 1 && p == first,
        "smoke: a buffer doubling from 8 KiB to 4 MiB moved {moves} times (once expected)"
    );
    // SAFETY: `p` is live with layout `l`.
    unsafe { alloc::alloc::dealloc(p, l) };
    println!("smoke: a buffer doubling from 8 KiB to 4 MiB moved once, then grew in place");
}

/// A `Vec` grown by doubling past the medium sizes gets a huge segment of its own and grows
/// by remap; dropped, its region stays mapped (the allocator keeps its last emptied huge
/// segment's region, up to 16 MiB committed, as its spare; larger ones the page source
/// keeps, up to a sixteenth of RAM, `mem::init`), the next one reuses it without mapping
/// it again, and a forced collect gives it back.
fn grow_and_keep() {
    use crate::{heap, mem::SOURCE};
    let limit = crate::mem::PHYS.total_frames() * 4096 / 16;
    let bytes = (limit / 2).next_power_of_two() / 2; // fits the limit with its header
    assert!(
        bytes > 256 << 10,
        "smoke: too little memory for the kept-region check"
    );
    let grow = |tag: u8| {
        let mut v: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        while v.len() < bytes {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = tag ^ ((v.len() + i) as u8).wrapping_mul(31);
            }
            v.extend_from_slice(&chunk);
        }
        let bad = v
            .iter()
            .enumerate()
            .position(|(i, &b)| b != tag ^ (i as u8).wrapping_mul(31));
        assert_eq!(bad, None, "smoke: a growing Vec lost data");
    };
    heap::collect_all(true);
    let s0 = SOURCE.stats();
    assert_eq!(s0.kept, 0, "smoke: a forced collect left regions kept");
    grow(1);
    let s1 = SOURCE.stats();
    // (kept by the heap as its spare huge region, or by the source: mapped either way)
    assert!(
        s1.mapped_pages >= s0.mapped_pages + bytes / 4096,
        "smoke: the dropped Vec's region ({bytes} bytes) was not kept mapped: {s0:?} then {s1:?}"
    );
    grow(2);
    let s2 = SOURCE.stats();
    assert!(
        s2.mapped_pages <= s1.mapped_pages + bytes / 4096 / 4,
        "smoke: the second Vec did not reuse the kept region: {s1:?} then {s2:?}"
    );
    // A small buffer that takes the kept region (moving into a huge block at 16 KiB) keeps
    // its committed memory only a purge delay long: a forced collect decommits what the
    // block has not grown into, while the block and its region stay.
    let mut small: Vec<u8> = Vec::with_capacity(8192);
    small.resize(8192, 7);
    small.push(8); // 8 KiB -> 16 KiB: into a huge block
    heap::collect_all(true);
    let s2b = SOURCE.stats();
    assert!(
        s2b.regions == s2.regions && s2b.mapped_pages + bytes / 4096 / 2 <= s2.mapped_pages,
        "smoke: a small block in the kept region kept its memory past a forced collect: {s2:?} then {s2b:?}"
    );
    assert!(small[..8192].iter().all(|&b| b == 7) && small[8192] == 8);
    drop(small);
    heap::collect_all(true);
    let s3 = SOURCE.stats();
    assert!(
        s3.kept == 0 && s3.mapped_pages + bytes / 4096 <= s2.mapped_pages,
        "smoke: a forced collect did not give the kept region back: {s2:?} then {s3:?}"
    );
    println!(
        "smoke: a {} KiB Vec grown twice: {} pages kept mapped, {} mapped by the second, {} mapped after collect",
        bytes >> 10,
        s1.mapped_pages - s0.mapped_pages,
        s2.mapped_pages.saturating_sub(s1.mapped_pages),
        s3.mapped_pages
    );
}

/// The page source's lazy decommit: a decommit of whole 64 KiB granules keeps their pages
/// mapped (counted in `lazy`), a commit of them maps nothing, and a forced collect unmaps
/// them and gives their frames back.
fn lazy_decommit() {
    use crate::heap;
    use crate::mem::{PHYS, SOURCE};
    use shardalloc::PageSource;
    const SIZE: usize = 256 << 10;
    heap::collect_all(true);
    // SAFETY: a page-multiple size, page alignment; the region is used only here.
    let r = unsafe { SOURCE.alloc(SIZE, 4096, true) }.expect("smoke: no region for lazy");
    let s0 = SOURCE.stats();
    assert_eq!(s0.lazy, 0, "smoke: a forced collect left lazy granules");
    // SAFETY: the range is the region's own, committed, nothing live in it.
    unsafe { SOURCE.decommit(r.ptr, SIZE) };
    let s1 = SOURCE.stats();
    assert!(
        s1.lazy == SIZE && s1.mapped_pages == s0.mapped_pages,
        "smoke: a decommit of 4 whole granules did not keep them mapped (lazy): {s0:?} then {s1:?}"
    );
    // SAFETY: as above.
    assert!(unsafe { SOURCE.commit(r.ptr, SIZE) }.is_ok());
    // SAFETY: committed again, ours.
    unsafe { r.ptr.as_ptr().add(SIZE - 1).write_volatile(7) };
    let s2 = SOURCE.stats();
    assert!(
        s2.lazy == 0 && s2.lazy_reused == s1.lazy_reused + 4 && s2.mapped_pages == s0.mapped_pages,
        "smoke: committing lazy granules mapped pages again: {s1:?} then {s2:?}"
    );
    // SAFETY: as above.
    unsafe { SOURCE.decommit(r.ptr, SIZE) };
    let free0 = PHYS.free_frames();
    heap::collect_all(true);
    let s3 = SOURCE.stats();
    assert!(
        s3.lazy == 0
            && s3.mapped_pages + SIZE / 4096 <= s2.mapped_pages
            && PHYS.free_frames() >= free0 + SIZE / 4096,
        "smoke: a forced collect did not give lazy granules back: {s2:?} then {s3:?}"
    );
    // SAFETY: the region came from `alloc` with this size and is no longer used.
    unsafe { SOURCE.free(r.ptr, SIZE) };
    println!(
        "smoke: lazy decommit: {} KiB kept mapped, committed again with nothing to map, given back at a forced collect",
        SIZE >> 10
    );
}

fn itoa(mut n: u32, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).unwrap()
}
