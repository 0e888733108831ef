//! Benchmark binary: the shardbench workloads with the system allocator (glibc malloc) as the global allocator.

shardbench::bench_binary!("system", std::alloc::System, std::alloc::System);
