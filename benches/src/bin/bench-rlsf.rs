//! Benchmark binary: the shardbench workloads with rlsf (TLSF) on a fixed region as the global allocator.

shardbench::bench_binary!(
    "rlsf",
    shardbench::fixed::FixedRegion<shardbench::fixed::RlsfHeap>,
    shardbench::fixed::FixedRegion::new(shardbench::fixed::RlsfHeap::new())
);
