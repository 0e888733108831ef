//! Benchmark binary: the shardbench workloads with linked_list_allocator on a fixed region as the global allocator.

shardbench::bench_binary!(
    "linked-list",
    shardbench::fixed::FixedRegion<shardbench::fixed::LinkedListHeap>,
    shardbench::fixed::FixedRegion::new(shardbench::fixed::LinkedListHeap::new())
);
