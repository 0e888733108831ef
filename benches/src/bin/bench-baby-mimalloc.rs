//! Benchmark binary: the shardbench workloads with baby-mimalloc (mmap source, spin mutex) as the global allocator.

shardbench::bench_binary!(
    "baby-mimalloc",
    baby_mimalloc::MimallocMmapMutex,
    baby_mimalloc::new_mimalloc_mmap_mutex()
);
