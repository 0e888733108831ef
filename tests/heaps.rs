//! First-class heaps: the `Allocator` trait, visiting, destroy, delete, and frees from
//! other threads.
use allocator_api2::vec::Vec as AVec;
use shardalloc::Heap;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// Held by the tests that read process-wide statistics or make many pages, so that they
/// do not disturb each other (the others make few pages).
static BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn vec_in_a_heap() {
    let heap = Heap::new();
    let mut v: AVec<u64, &Heap> = AVec::new_in(&heap);
    for i in 0..100_000 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    assert!(heap.contains(v.as_ptr() as *const u8));
    let other = Heap::new();
    assert!(!other.contains(v.as_ptr() as *const u8));
    drop(v);
    drop(other);
}

#[test]
fn visit_counts_live_blocks() {
    let heap = Heap::new();
    let mut ptrs = Vec::new();
    for i in 0..1000usize {
        ptrs.push(heap.alloc(16 + i % 200, 8));
    }
    let big = heap.alloc(3 << 20, 8);
    for p in ptrs.drain(..500) {
        unsafe { shardalloc::free(p) };
    }
    let mut n = 0;
    let mut bytes = 0;
    heap.visit_blocks(|_, size| {
        n += 1;
        bytes += size;
        true
    });
    assert_eq!(n, 501);
    assert!(bytes >= 3 << 20);
    for p in ptrs {
        assert!(heap.contains(p));
        unsafe { shardalloc::free(p) };
    }
    unsafe { shardalloc::free(big) };
    let mut n = 0;
    heap.visit_blocks(|_, _| {
        n += 1;
        true
    });
    assert_eq!(n, 0);
}

#[test]
fn destroy_frees_everything_at_once() {
    let _g = BIG.lock().unwrap_or_else(|e| e.into_inner());
    shardalloc::collect(true);
    let before = shardalloc::stats().pages.current;
    let heap = Heap::new();
    for i in 0..20_000usize {
        let p = heap.alloc(8 + i % 3000, 8);
        assert!(!p.is_null());
    }
    let _huge = heap.alloc(10 << 20, 4096);
    assert!(shardalloc::stats().pages.current > before);
    heap.destroy();
    shardalloc::collect(true);
    // other tests run in parallel: allow their pages, but ours (hundreds) are gone
    assert!(shardalloc::stats().pages.current < before + 50);
}

#[test]
fn delete_keeps_blocks_alive_in_the_default_heap() {
    let heap = Heap::new();
    let blocks: Vec<*mut u8> = (0..5000)
        .map(|i| {
            let p = heap.alloc(64, 8);
            unsafe { p.write_bytes(i as u8, 64) };
            p
        })
        .collect();
    heap.delete();
    shardalloc::check();
    for (i, p) in blocks.iter().enumerate() {
        assert!((0..64).all(|k| unsafe { *p.add(k) } == i as u8));
    }
    for p in blocks {
        unsafe { shardalloc::free(p) };
    }
    shardalloc::check();
}

#[test]
fn blocks_freed_by_other_threads() {
    let heap = Heap::new();
    let blocks: Vec<usize> = (0..20_000)
        .map(|i| heap.alloc(24 + i % 500, 8) as usize)
        .collect();
    let (a, b) = blocks.split_at(10_000);
    let (a, b) = (a.to_vec(), b.to_vec());
    let t1 = std::thread::spawn(move || {
        a.into_iter()
            .for_each(|p| unsafe { shardalloc::free(p as *mut u8) })
    });
    let t2 = std::thread::spawn(move || {
        b.into_iter()
            .for_each(|p| unsafe { shardalloc::free(p as *mut u8) })
    });
    t1.join().unwrap();
    t2.join().unwrap();
    heap.collect(true);
    let mut n = 0;
    heap.visit_blocks(|_, _| {
        n += 1;
        true
    });
    assert_eq!(n, 0, "blocks freed remotely are collected back");
    // and the heap allocates again
    assert!(!heap.alloc(100, 8).is_null());
}

/// A first-class heap never takes over segments of exited threads: its visit sees only
/// its own blocks, and destroying it leaves other blocks alone.
#[test]
fn first_class_heaps_do_not_reclaim_foreign_blocks() {
    let _g = BIG.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..4u8 {
        // a thread leaves a few live blocks in each of many segments, then exits: its
        // segments are abandoned
        let left: Vec<usize> = std::thread::spawn(move || {
            let all: Vec<usize> = (0..40_000)
                .map(|_| unsafe { shardalloc::alloc(1000, 8, false) } as usize)
                .collect();
            let mut keep = Vec::new();
            for (i, p) in all.into_iter().enumerate() {
                if i % 500 == 0 {
                    unsafe { (p as *mut u8).write_bytes(round, 1000) };
                    keep.push(p);
                } else {
                    unsafe { shardalloc::free(p as *mut u8) };
                }
            }
            keep
        })
        .join()
        .unwrap();
        // a fresh thread makes a heap and allocates enough in it to need new segments
        std::thread::spawn(move || {
            let heap = Heap::new();
            let mine: Vec<*mut u8> = (0..40_000).map(|_| heap.alloc(1000, 8)).collect();
            let mut n = 0;
            heap.visit_blocks(|_, _| {
                n += 1;
                true
            });
            assert_eq!(
                n,
                mine.len(),
                "round {round}: the heap holds foreign blocks"
            );
            heap.destroy();
        })
        .join()
        .unwrap();
        for p in left {
            let p = p as *mut u8;
            assert!(
                (0..1000).all(|k| unsafe { *p.add(k) } == round),
                "round {round}: a block of the exited thread was overwritten"
            );
            unsafe { shardalloc::free(p) };
        }
    }
}

/// Per-heap figures (`Heap::stats`) and the statistics as JSON, from Rust: the figures
/// follow the live blocks, and the JSON holds them.
#[test]
fn heap_stats_and_json() {
    let _g = BIG.lock().unwrap_or_else(|e| e.into_inner());
    let heap = Heap::new();
    assert_eq!(heap.stats(), shardalloc::HeapStats::default());
    let mut ptrs: Vec<*mut u8> = (0..300).map(|i| heap.alloc(24 + i % 100, 8)).collect();
    let big = heap.alloc(1 << 20, 8);
    let st = heap.stats();
    assert_eq!(st.blocks, 301, "{st:?}");
    let sizes: usize = ptrs
        .iter()
        .map(|&p| unsafe { shardalloc::usable_size(p) })
        .sum::<usize>()
        + unsafe { shardalloc::usable_size(big) };
    assert_eq!(st.bytes, sizes, "{st:?}");
    assert!(st.pages >= 2 && st.committed >= st.bytes && st.reserved >= st.committed);
    for p in ptrs.drain(..150) {
        unsafe { shardalloc::free(p) };
    }
    unsafe { shardalloc::free(big) };
    let after = heap.stats();
    assert_eq!(after.blocks, 150, "{after:?}");
    let json = format!("{}", after.json());
    assert_eq!(
        json,
        format!(
            "{{\"pages\": {}, \"reserved\": {}, \"committed\": {}, \"blocks\": 150, \"bytes\": {}}}",
            after.pages, after.reserved, after.committed, after.bytes
        )
    );
    // the process's statistics as JSON: every counter, with the current figures
    let s = shardalloc::stats();
    let json = format!("{}", s.json());
    for key in [
        "allocated",
        "huge",
        "reserved",
        "committed",
        "segments",
        "pages",
        "threads",
        "purged",
        "abandoned",
        "reclaimed",
        "out_of_memory",
    ] {
        assert!(
            json.contains(&format!("\"{key}\": ")),
            "{key} missing: {json}"
        );
    }
    assert!(json.contains(&format!(
        "\"pages\": {{\"current\": {}, \"peak\": {}, \"total\": {}, \"freed\": {}}}",
        s.pages.current, s.pages.peak, s.pages.total, s.pages.freed
    )));
    assert_eq!(json.matches('{').count(), json.matches('}').count());
    for p in ptrs {
        unsafe { shardalloc::free(p) };
    }
}
