//! Benchmark binary: the shardbench workloads with rusty_alloc (crate rusty_alloc-api, a
//! pure-Rust remake of mimalloc v2.4.5) as the global allocator.

shardbench::bench_binary!("rusty_alloc", rusty_alloc_api::RustyAlloc, rusty_alloc_api::RustyAlloc);
