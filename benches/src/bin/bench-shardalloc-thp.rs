//! Benchmark binary: shardalloc with large OS pages for every segment
//! (`Domain::set_large_os_pages(true)`, C: `MIMALLOC_ALLOW_LARGE_OS_PAGES=1`), set before
//! the workload starts: the same build as `bench-shardalloc`, trading resident memory for
//! fewer page faults as C mimalloc's huge-page-advised arenas do. The runner's
//! `shardalloc-thp` column. Turned on before `main`, from `.init_array`, so that the main
//! thread's first segment has them too (Rust's runtime allocates before `main`).

/// Runs before the Rust runtime's first allocation (the dynamic loader calls `.init_array`
/// entries before `main`; ELF targets. Elsewhere `before` turns it on, after the runtime's
/// first allocations.)
extern "C" fn large_os_pages_on() {
    shardalloc::DOMAIN.set_large_os_pages(true);
}
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static LARGE_OS_PAGES_ON: extern "C" fn() = large_os_pages_on;

shardbench::bench_binary!("shardalloc-thp", shardalloc::ShardAlloc, shardalloc::ShardAlloc::new();
direct = |size| {
    // SAFETY: 8 is a power of two.
    unsafe { shardalloc::alloc(size, 8, false) }
},
|p: *mut u8| {
    // SAFETY: p came from shardalloc::alloc and is freed once.
    unsafe { shardalloc::free(p) }
};
before = {
    if cfg!(not(target_os = "linux")) {
        large_os_pages_on();
    }
    assert!(shardalloc::DOMAIN.large_os_pages(), "large OS pages were not turned on");
},
after = {
    if std::env::var_os("SHARDBENCH_STATS").is_some_and(|v| v != "0") {
        eprintln!("{}", shardalloc::stats());
    }
});
