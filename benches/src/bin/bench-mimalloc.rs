//! Benchmark binary: the shardbench workloads with C mimalloc (crate mimalloc) as the global allocator.

shardbench::bench_binary!("mimalloc", mimalloc::MiMalloc, mimalloc::MiMalloc);
