//! Benchmark binary: the shardbench workloads with shardalloc as the global allocator.

shardbench::bench_binary!("shardalloc", shardalloc::ShardAlloc, shardalloc::ShardAlloc::new();
direct = |size| {
    // SAFETY: 8 is a power of two.
    unsafe { shardalloc::alloc(size, 8, false) }
},
|p: *mut u8| {
    // SAFETY: p came from shardalloc::alloc and is freed once.
    unsafe { shardalloc::free(p) }
});
