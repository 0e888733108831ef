//! Debug mode from Rust (feature `debug-mode`): fill patterns, the padding canary and the
//! reports of `shardalloc::debug_mode`. Built and run by `tests/debug_mode.rs` (`cargo test
//! --features debug-mode --test debug_mode_rust`); without the feature this file is empty.
#![cfg(feature = "debug-mode")]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use shardalloc::debug_mode::{self, Report, ReportKind, FREED, UNINIT};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

// The last report, kept by the hook without allocating.
static KIND: AtomicUsize = AtomicUsize::new(usize::MAX);
static ADDR: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);
static HOOKED: AtomicUsize = AtomicUsize::new(0);
// the tests share the hook and its record: one at a time
static SERIAL: Mutex<()> = Mutex::new(());

fn hook(r: &Report) {
    KIND.store(r.kind as usize, SeqCst);
    ADDR.store(r.addr, SeqCst);
    SIZE.store(r.size, SeqCst);
    HOOKED.fetch_add(1, SeqCst);
}

/// Runs `f` with the hook installed; returns the reports it made (count, last one).
fn reports_of(f: impl FnOnce()) -> (usize, Option<Report>) {
    debug_mode::set_report_hook(Some(hook));
    let before = HOOKED.load(SeqCst);
    let count_before = debug_mode::report_count();
    f();
    let n = HOOKED.load(SeqCst) - before;
    assert_eq!(
        debug_mode::report_count() - count_before,
        n,
        "every report reaches the hook"
    );
    debug_mode::set_report_hook(None);
    if n == 0 {
        return (0, None);
    }
    let kind = match KIND.load(SeqCst) {
        0 => ReportKind::BufferOverflow,
        1 => ReportKind::DoubleFree,
        2 => ReportKind::InvalidFree,
        _ => ReportKind::InteriorFree,
    };
    (
        n,
        Some(Report {
            kind,
            addr: ADDR.load(SeqCst),
            size: SIZE.load(SeqCst),
        }),
    )
}

#[test]
fn fresh_blocks_are_filled_and_zeroed_ones_zero() {
    let _g = SERIAL.lock().unwrap();
    for &size in &[1usize, 8, 13, 100, 1000, 1020, 1024, 5000, 70_000, 300_000] {
        // SAFETY: a fresh block of `size` bytes, read within its size, then freed once.
        unsafe {
            let p = shardalloc::alloc(size, 8, false);
            assert!(!p.is_null());
            let s = std::slice::from_raw_parts(p, size);
            assert!(
                s.iter().all(|&b| b == UNINIT),
                "malloc({size}) not filled with 0xD0"
            );
            assert_eq!(
                shardalloc::usable_size(p),
                size,
                "usable size is the requested one"
            );
            shardalloc::free(p);
            let z = shardalloc::alloc(size, 8, true);
            let s = std::slice::from_raw_parts(z, size);
            assert!(s.iter().all(|&b| b == 0), "zeroed({size}) not zero");
            shardalloc::free(z);
        }
    }
}

#[test]
fn freed_blocks_are_filled() {
    let _g = SERIAL.lock().unwrap();
    // SAFETY: reading a freed block is a use after free in general; here the page stays
    // (another block of it is live) and debug mode's fill is what is checked.
    unsafe {
        let keep = shardalloc::alloc(200, 8, false);
        let p = shardalloc::alloc(200, 8, false);
        shardalloc::free(p);
        let s = std::slice::from_raw_parts(p.add(8), 192);
        assert!(
            s.iter().all(|&b| b == FREED),
            "freed block not filled with 0xDF"
        );
        shardalloc::free(keep);
    }
}

#[test]
fn one_byte_overflow_is_reported_with_address_and_size() {
    let _g = SERIAL.lock().unwrap();
    for &(size, align) in &[
        (13usize, 8usize),
        (24, 8),
        (1000, 8),
        (4000, 8),
        (100, 64),
        (3000, 4096),
    ] {
        // SAFETY: the write one past the end is the misuse under test; it lands in the
        // block's padding, which debug mode owns and checks.
        let (n, r) = reports_of(|| unsafe {
            let p = shardalloc::alloc(size, align, false);
            assert_eq!(p as usize % align, 0);
            *p.add(size) = 0x42;
            shardalloc::free(p);
            ADDR_EXPECTED.store(p as usize, SeqCst);
        });
        assert_eq!(
            n, 1,
            "overflow of malloc({size}, align {align}) not reported once"
        );
        let r = r.unwrap();
        assert_eq!(r.kind, ReportKind::BufferOverflow);
        assert_eq!(r.addr, ADDR_EXPECTED.load(SeqCst), "reported address");
        assert_eq!(r.size, size, "reported requested size");
    }
}
static ADDR_EXPECTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn writes_up_to_the_requested_end_are_not_reported() {
    let _g = SERIAL.lock().unwrap();
    let (n, _) = reports_of(|| {
        let mut v: Vec<u8> = Vec::new();
        for i in 0..100_000u32 {
            v.push(i as u8);
        }
        let mut b: Vec<Box<[u64]>> = (1..300).map(|n| vec![7u64; n].into_boxed_slice()).collect();
        b.retain(|x| x.len() % 3 != 0);
        drop(b);
        let s: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert_eq!(s.len(), 5000);
    });
    assert_eq!(n, 0, "correct programs report nothing");
}

#[test]
fn realloc_keeps_the_padding_right() {
    let _g = SERIAL.lock().unwrap();
    // SAFETY: blocks used within their current sizes; the last write is one past the end.
    let (n, r) = reports_of(|| unsafe {
        let mut p = shardalloc::alloc(10, 8, false);
        let mut size = 10;
        for &next in &[
            30usize, 25, 16, 2000, 1500, 100_000, 3_000_000, 5_000_000, 2_500_000, 40,
        ] {
            std::ptr::write_bytes(p, 0x11, size);
            p = shardalloc::realloc(p, next, 8, false);
            assert!(!p.is_null());
            assert_eq!(
                shardalloc::usable_size(p),
                next,
                "usable size after realloc to {next}"
            );
            let s = std::slice::from_raw_parts(p, size.min(next));
            assert!(s.iter().all(|&b| b == 0x11), "realloc lost contents");
            size = next;
        }
        *p.add(size) = 1;
        ADDR_EXPECTED.store(p as usize, SeqCst);
        shardalloc::free(p);
    });
    assert_eq!(n, 1);
    let r = r.unwrap();
    assert_eq!(
        (r.kind, r.addr, r.size),
        (ReportKind::BufferOverflow, ADDR_EXPECTED.load(SeqCst), 40)
    );
}

#[test]
fn double_and_interior_frees_are_reported_and_ignored() {
    let _g = SERIAL.lock().unwrap();
    // SAFETY: the second free and the interior free are the misuses under test; debug mode
    // reports them and leaves the block alone.
    unsafe {
        let keep = shardalloc::alloc(48, 8, false);
        let p = shardalloc::alloc(48, 8, false);
        shardalloc::free(p);
        let (n, r) = reports_of(|| shardalloc::free(p));
        assert_eq!(n, 1);
        assert_eq!(r.unwrap().kind, ReportKind::DoubleFree);
        assert_eq!(r.unwrap().addr, p as usize);
        // the block came back once: two allocations of its size give two blocks
        let a = shardalloc::alloc(48, 8, false);
        let b = shardalloc::alloc(48, 8, false);
        assert_ne!(a, b);
        let (n, r) = reports_of(|| shardalloc::free(a.add(8)));
        assert_eq!(n, 1);
        assert_eq!(r.unwrap().kind, ReportKind::InteriorFree);
        assert_eq!(r.unwrap().addr, a as usize + 8);
        let x = 5u64;
        let (n, r) = reports_of(|| shardalloc::free(&x as *const u64 as *mut u8));
        assert_eq!(n, 1);
        assert_eq!(r.unwrap().kind, ReportKind::InvalidFree);
        shardalloc::free(a);
        shardalloc::free(b);
        shardalloc::free(keep);
    }
}

#[test]
fn first_class_heaps_and_threads_keep_the_padding() {
    let _g = SERIAL.lock().unwrap();
    let (n, _) = reports_of(|| {
        let heap = shardalloc::Heap::new();
        let mut v = allocator_api2::vec::Vec::new_in(&heap);
        for i in 0..10_000u32 {
            v.push(i);
        }
        let boxes: Vec<Box<[u8]>> = (0..2000)
            .map(|i| vec![i as u8; i % 700 + 1].into_boxed_slice())
            .collect();
        // freed by another thread (remote frees)
        std::thread::spawn(move || drop(boxes)).join().unwrap();
        drop(v);
    });
    assert_eq!(n, 0);
}

// The core's error handler (`secure::set_error_handler`) is the one hook of every mode:
// without a report hook of debug mode's own, debug mode's reports reach it.
static CORE_KIND: AtomicUsize = AtomicUsize::new(0);
static CORE_ADDR: AtomicUsize = AtomicUsize::new(0);
static CORE_SIZE: AtomicUsize = AtomicUsize::new(0);
static CORE_CALLS: AtomicUsize = AtomicUsize::new(0);

fn core_handler(kind: shardalloc::secure::ErrorKind, addr: usize, size: Option<usize>) {
    use shardalloc::secure::ErrorKind as K;
    let k = match kind {
        K::BufferOverflow => 1,
        K::DoubleFree => 2,
        K::InvalidFree => 3,
        _ => 4,
    };
    CORE_KIND.store(k, SeqCst);
    CORE_ADDR.store(addr, SeqCst);
    CORE_SIZE.store(size.unwrap_or(usize::MAX), SeqCst);
    CORE_CALLS.fetch_add(1, SeqCst);
}

#[test]
fn reports_reach_the_core_error_handler_without_a_report_hook() {
    let _g = SERIAL.lock().unwrap();
    debug_mode::set_report_hook(None);
    shardalloc::secure::set_error_handler(Some(core_handler));
    let calls = CORE_CALLS.load(SeqCst);
    let errors = shardalloc::secure::error_count();
    let reports = debug_mode::report_count();
    // SAFETY: the write one past the end is the misuse under test (into the padding); the
    // second free is a double free, reported and ignored.
    let p = unsafe {
        let p = shardalloc::alloc(21, 8, false);
        *p.add(21) = 0x42;
        shardalloc::free(p);
        p
    };
    assert_eq!(
        CORE_CALLS.load(SeqCst) - calls,
        1,
        "the overflow reached the handler"
    );
    assert_eq!(CORE_KIND.load(SeqCst), 1, "reported as a buffer overflow");
    assert_eq!(CORE_ADDR.load(SeqCst), p as usize);
    assert_eq!(CORE_SIZE.load(SeqCst), 21, "with the requested size");
    // SAFETY: the misuse under test: a double free, reported and ignored.
    unsafe { shardalloc::free(p) };
    assert_eq!(CORE_CALLS.load(SeqCst) - calls, 2);
    assert_eq!(CORE_KIND.load(SeqCst), 2, "reported as a double free");
    assert_eq!(
        shardalloc::secure::error_count() - errors,
        2,
        "counted by the core"
    );
    assert_eq!(debug_mode::report_count() - reports, 2, "and by debug mode");
    // with a report hook of debug mode's own, that hook takes the report instead
    // SAFETY: as above: the write into the padding is the misuse under test.
    let (n, _) = reports_of(|| unsafe {
        let q = shardalloc::alloc(21, 8, false);
        *q.add(21) = 0x42;
        shardalloc::free(q);
    });
    assert_eq!(n, 1);
    assert_eq!(
        CORE_CALLS.load(SeqCst) - calls,
        2,
        "not also the core's handler"
    );
    shardalloc::secure::set_error_handler(None);
}
