//! The hosted allocator as the global allocator of an ordinary std program.
use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

#[test]
fn collections_work() {
    let b = Box::new(42u64);
    assert_eq!(*b, 42);
    let mut v: Vec<u32> = (0..100_000).collect();
    v.retain(|x| x % 3 == 0);
    assert_eq!(v.len(), 33_334);
    let s: String = (0..1000).map(|i| format!("{i},")).collect();
    assert!(s.starts_with("0,1,2,"));
    let mut m = BTreeMap::new();
    let mut h = HashMap::new();
    for i in 0..50_000u64 {
        m.insert(i, i * 2);
        h.insert(i.to_string(), i);
    }
    assert_eq!(m[&777], 1554);
    assert_eq!(h["4242"], 4242);
    shardalloc::check();
}

#[test]
fn large_and_aligned_layouts() {
    use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
    for shift in 0..=23 {
        let align = 1usize << shift;
        for size in [1usize, 8, 24, 100, 4096, 70_000, 3 << 20] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                assert!(shardalloc::usable_size(p) >= size);
                p.write_bytes(0xab, size);
                let q = realloc(p, layout, size * 2);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                assert!((0..size).all(|i| *q.add(i) == 0xab));
                dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
                let z = alloc_zeroed(layout);
                assert!((0..size).all(|i| *z.add(i) == 0));
                dealloc(z, layout);
            }
        }
    }
    shardalloc::check();
}

#[test]
fn zeroed_memory_is_zero_after_reuse() {
    use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
    for size in [8usize, 48, 1000, 20_000, 300_000, 5 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        unsafe {
            let mut ps = Vec::new();
            for _ in 0..8 {
                let p = alloc(layout);
                p.write_bytes(0xff, size);
                ps.push(p);
            }
            for p in ps {
                dealloc(p, layout);
            }
            for _ in 0..8 {
                let z = alloc_zeroed(layout);
                assert!((0..size).all(|i| *z.add(i) == 0), "size {size}");
                dealloc(z, layout);
            }
        }
    }
}

#[test]
fn threads_allocate_and_free_across() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let v: Vec<Box<[u8]>> = (0..10_000)
                    .map(|i| vec![t as u8; 1 + i % 300].into_boxed_slice())
                    .collect();
                v
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let v = h.join().unwrap();
        assert!(v.iter().all(|b| b.iter().all(|&x| x == t as u8)));
        drop(v); // freed by another thread than the allocating one
    }
    shardalloc::collect(true);
    shardalloc::check();
}
