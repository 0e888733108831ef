//! Benchmark binary: the shardbench workloads with C mimalloc v3 (crate mimalloc) as the global allocator.

shardbench::bench_binary!("mimalloc-v3", mimalloc::MiMalloc, mimalloc::MiMalloc;
direct = |size| {
    // SAFETY: mi_malloc accepts any size.
    unsafe { libmimalloc_sys::mi_malloc(size).cast() }
},
|p: *mut u8| {
    // SAFETY: p came from mi_malloc and is freed once.
    unsafe { libmimalloc_sys::mi_free(p.cast()) }
});
