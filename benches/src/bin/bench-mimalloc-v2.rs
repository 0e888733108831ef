//! Benchmark binary: the shardbench workloads with C mimalloc v2 (crate mimalloc, feature
//! `v2`) as the global allocator. Built on its own with `--features mimalloc-v2`, which
//! makes the `mimalloc` crate compile v2's sources instead of v3's.

shardbench::bench_binary!("mimalloc-v2", mimalloc::MiMalloc, mimalloc::MiMalloc;
direct = |size| {
    // SAFETY: mi_malloc accepts any size.
    unsafe { libmimalloc_sys::mi_malloc(size).cast() }
},
|p: *mut u8| {
    // SAFETY: p came from mi_malloc and is freed once.
    unsafe { libmimalloc_sys::mi_free(p.cast()) }
});
