//! Windows only (run under Wine by tests/windows.rs): the `VirtualAlloc` page source's
//! contract, checked against what `VirtualQuery` says about the pages, and thread exit
//! through fiber-local storage for threads that Rust's std did not make.
#![cfg(windows)]

use core::ffi::c_void;
use core::ptr::NonNull;
use std::mem::MaybeUninit;

use shardalloc::source::{aligned_alloc_counts, VirtualAlloc};
use shardalloc::PageSource;
use windows_sys::Win32::System::Memory::{
    VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_COMMIT, MEM_FREE, MEM_RESERVE, PAGE_NOACCESS,
    PAGE_READWRITE,
};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

const MB: usize = 1 << 20;
static SRC: VirtualAlloc = VirtualAlloc;

fn query(p: *const u8) -> MEMORY_BASIC_INFORMATION {
    let mut m = MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
    let n = unsafe {
        VirtualQuery(
            p as *const c_void,
            m.as_mut_ptr(),
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    assert!(n != 0, "VirtualQuery({p:?}) failed");
    unsafe { m.assume_init() }
}

fn state(p: *const u8) -> u32 {
    query(p).State
}

#[test]
fn config_reports_reserve_and_the_allocation_granularity() {
    let c = SRC.config();
    eprintln!("{c:?}");
    assert_eq!(c.page_size, 4096);
    assert_eq!(c.alloc_granularity, 64 * 1024);
    assert!(c.has_reserve);
}

#[test]
fn reserve_commit_decommit_recommit() {
    let page = SRC.config().page_size;
    let r = unsafe { SRC.alloc(4 * MB, 4 * MB, false) }.expect("reserving 4 MiB");
    let p = r.ptr.as_ptr();
    assert_eq!(p as usize % (4 * MB), 0, "segment not aligned: {p:?}");
    assert!(!r.committed && r.zeroed && r.size == 4 * MB);
    assert_eq!(state(p), MEM_RESERVE, "reserved memory is committed");
    assert_eq!(state(unsafe { p.add(4 * MB - page) }), MEM_RESERVE);

    // first commit: zero pages
    let part = 16 * page;
    assert_eq!(unsafe { SRC.commit(r.ptr, part) }, Ok(true));
    assert_eq!(state(p), MEM_COMMIT);
    assert!(query(p).RegionSize >= part);
    assert_eq!(
        state(unsafe { p.add(part) }),
        MEM_RESERVE,
        "committed too much"
    );
    unsafe { p.write_bytes(0xab, part) };
    // committing committed pages keeps them, and says they are not zero
    assert_eq!(unsafe { SRC.commit(r.ptr, part) }, Ok(false));
    assert!((0..part).all(|i| unsafe { *p.add(i) } == 0xab));
    // a range that is partly committed is not reported zero either
    assert_eq!(unsafe { SRC.commit(r.ptr, 2 * part) }, Ok(false));

    // decommit: needs recommit; the pages are reserved only, then zero again
    assert!(unsafe { SRC.decommit(r.ptr, 2 * part) });
    assert_eq!(state(p), MEM_RESERVE);
    assert_eq!(unsafe { SRC.commit(r.ptr, part) }, Ok(true));
    assert!((0..part).all(|i| unsafe { *p.add(i) } == 0));

    // reset keeps the pages usable
    unsafe { p.write_bytes(1, part) };
    unsafe { SRC.reset(r.ptr, part) };
    assert_eq!(state(p), MEM_COMMIT);
    unsafe { p.write_bytes(2, part) };
    assert_eq!(unsafe { *p.add(part - 1) }, 2);

    // guard pages
    let guard = unsafe { NonNull::new_unchecked(p.add(page)) };
    assert!(unsafe { SRC.protect(guard, page, true) });
    assert_eq!(query(guard.as_ptr()).Protect, PAGE_NOACCESS);
    assert_eq!(
        query(p).Protect,
        PAGE_READWRITE,
        "protected the page before"
    );
    assert!(unsafe { SRC.protect(guard, page, false) });
    assert_eq!(query(guard.as_ptr()).Protect, PAGE_READWRITE);

    unsafe { SRC.free(r.ptr, r.size) };
    assert_eq!(state(p), MEM_FREE, "the reservation was not released");
}

#[test]
fn aligned_regions_are_aligned_disjoint_and_released() {
    let mut regions = Vec::new();
    for i in 0..64 {
        let (size, align) = if i % 4 == 0 {
            (12 * MB, 4 * MB)
        } else {
            (4 * MB, 4 * MB)
        };
        let r = unsafe { SRC.alloc(size, align, i % 2 == 0) }.expect("aligned region");
        assert_eq!(r.ptr.as_ptr() as usize % align, 0);
        assert_eq!(r.committed, i % 2 == 0);
        if r.committed {
            // committed in full: every page is writable
            for off in (0..size).step_by(64 * 1024) {
                unsafe { *r.ptr.as_ptr().add(off) = 1 };
            }
        }
        regions.push(r);
    }
    let mut spans: Vec<(usize, usize)> = regions
        .iter()
        .map(|r| (r.ptr.as_ptr() as usize, r.ptr.as_ptr() as usize + r.size))
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "regions overlap"
    );
    for r in &regions {
        unsafe { SRC.free(r.ptr, r.size) };
        assert_eq!(state(r.ptr.as_ptr()), MEM_FREE);
    }
    let (hint, alloc2, oversize) = aligned_alloc_counts();
    eprintln!("aligned regions: {hint} by hint, {alloc2} by VirtualAlloc2, {oversize} over-sized");
    assert!(hint + alloc2 + oversize >= 64);
}

/// The second way, `VirtualAlloc2` with an alignment requirement, where the system has it.
#[test]
fn virtual_alloc2_way() {
    let r = unsafe { SRC.alloc_aligned2_region(4 * MB, 4 * MB, true) };
    if !SRC.has_virtual_alloc2() {
        // older Windows: the way is off, and the others serve (the test above)
        eprintln!("this system has no VirtualAlloc2: the hint and the over-sized fallback serve");
        assert!(r.is_none());
        return;
    }
    eprintln!(
        "VirtualAlloc2 with a 4 MiB alignment: {:?}",
        r.map(|r| r.ptr)
    );
    if let Some(r) = r {
        assert_eq!(r.ptr.as_ptr() as usize % (4 * MB), 0);
        unsafe { r.ptr.as_ptr().write_bytes(3, 4 * MB) };
        unsafe { SRC.free(r.ptr, r.size) };
        assert_eq!(state(r.ptr.as_ptr()), MEM_FREE);
    }
}

/// The fallback that the other ways hide: an over-sized reservation whose aligned middle
/// is the region; `free` releases the whole reservation, ends included.
#[test]
fn oversized_fallback_releases_the_whole_reservation() {
    for commit in [false, true] {
        let r = unsafe { SRC.alloc_oversized_region(8 * MB, 4 * MB, commit) }.expect("fallback");
        let p = r.ptr.as_ptr();
        assert_eq!(p as usize % (4 * MB), 0);
        let base = query(p).AllocationBase as *const u8;
        assert!(base <= p);
        if commit {
            assert_eq!(state(p), MEM_COMMIT);
            unsafe { p.write_bytes(5, 8 * MB) };
        } else {
            assert_eq!(state(p), MEM_RESERVE);
        }
        if base < p {
            assert_eq!(
                state(base),
                MEM_RESERVE,
                "the unused head must stay uncommitted"
            );
        }
        unsafe { SRC.free(r.ptr, r.size) };
        assert_eq!(state(base), MEM_FREE);
        assert_eq!(state(p), MEM_FREE);
    }
}

/// Threads made with `CreateThread` (not Rust's std, so no std thread-local destructors)
/// still give their heaps back when they exit: the fiber-local-storage callback runs.
#[test]
fn native_threads_release_their_heaps_at_exit() {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{CreateThread, WaitForSingleObject, INFINITE};

    unsafe extern "system" fn body(arg: *mut c_void) -> u32 {
        let n = arg as usize;
        let mut v = Vec::new();
        for i in 0..n {
            let p = unsafe { shardalloc::alloc(16 + i * 8, 8, false) };
            assert!(!p.is_null());
            v.push(p);
        }
        // leave one in ten live: it is freed by the main thread after this one exits
        for (i, p) in v.into_iter().enumerate() {
            if i % 10 != 0 {
                unsafe { shardalloc::free(p) };
            } else {
                LEFT.lock().unwrap().push(p as usize);
            }
        }
        0
    }
    static LEFT: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    let before = shardalloc::stats().threads;
    const N: usize = 500;
    for _ in 0..N {
        let h = unsafe {
            CreateThread(
                std::ptr::null(),
                0,
                Some(body),
                100 as *mut c_void,
                0,
                std::ptr::null_mut(),
            )
        };
        assert!(!h.is_null(), "CreateThread failed");
        assert_eq!(unsafe { WaitForSingleObject(h, INFINITE) }, WAIT_OBJECT_0);
        unsafe { CloseHandle(h) };
    }
    let after = shardalloc::stats().threads;
    eprintln!(
        "threads: before {before:?}, after {after:?} ({} blocks left live)",
        LEFT.lock().unwrap().len()
    );
    assert!(
        after.total - before.total >= N as i64,
        "the native threads made no heaps"
    );
    // (other tests of this binary run meanwhile on libtest's threads, each with a heap:
    // a few more or fewer at the two reads; leaking would leave hundreds)
    assert!(
        after.current <= before.current + 8,
        "native threads did not release their heaps at exit: {} live thread heaps",
        after.current - before.current
    );
    for p in LEFT.lock().unwrap().drain(..) {
        unsafe { shardalloc::free(p as *mut u8) };
    }
    shardalloc::collect(true);
}
