//! Benchmark binary: the shardbench workloads with the system allocator (glibc malloc) as the global allocator.

shardbench::bench_binary!("system", std::alloc::System, std::alloc::System;
direct = |size| {
    // SAFETY: malloc accepts any size.
    unsafe { libc::malloc(size).cast() }
},
|p: *mut u8| {
    // SAFETY: p came from malloc and is freed once.
    unsafe { libc::free(p.cast()) }
});
