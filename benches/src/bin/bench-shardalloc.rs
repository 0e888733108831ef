//! Benchmark binary: the shardbench workloads with shardalloc as the global allocator.

shardbench::bench_binary!("shardalloc", shardalloc::ShardAlloc, shardalloc::ShardAlloc::new());
