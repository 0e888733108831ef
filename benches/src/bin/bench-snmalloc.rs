//! Benchmark binary: the shardbench workloads with snmalloc (crate snmalloc-rs) as the global allocator.

shardbench::bench_binary!("snmalloc", snmalloc_rs::SnMalloc, snmalloc_rs::SnMalloc);
