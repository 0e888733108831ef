//! Benchmark binary: the shardbench workloads with jemalloc (crate tikv-jemallocator) as the global allocator.

shardbench::bench_binary!(
    "jemalloc",
    tikv_jemallocator::Jemalloc,
    tikv_jemallocator::Jemalloc
);
