//! Benchmark binary: the shardbench workloads with buddy_system_allocator on a fixed region as the global allocator.

shardbench::bench_binary!(
    "buddy",
    shardbench::fixed::FixedRegion<shardbench::fixed::BuddyHeap>,
    shardbench::fixed::FixedRegion::new(shardbench::fixed::BuddyHeap::new())
);
