//! Benchmark binary: the shardbench workloads with talc on a fixed region as the global allocator.

shardbench::bench_binary!(
    "talc",
    shardbench::fixed::FixedRegion<shardbench::fixed::TalcHeap>,
    shardbench::fixed::FixedRegion::new(shardbench::fixed::TalcHeap::new())
);
