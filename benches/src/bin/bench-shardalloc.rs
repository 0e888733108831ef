//! Benchmark binary: the shardbench workloads with shardalloc as the global allocator.
//!
//! What `bench_binary!` generates, plus two switches for looking into a run (neither is
//! set by `run.sh` or the runner):
//! - `SHARDBENCH_PURGE_DELAY=MS`: the purge delay of the run (`Domain::set_purge_delay`;
//!   negative: never purge), to see how purging trades page faults for resident memory;
//! - `SHARDBENCH_STATS=1`: shardalloc's statistics after the workload, on stderr (segments
//!   made, bytes purged, segments abandoned and reclaimed...).

shardbench::bench_binary!("shardalloc", shardalloc::ShardAlloc, shardalloc::ShardAlloc::new();
direct = |size| {
    // SAFETY: 8 is a power of two.
    unsafe { shardalloc::alloc(size, 8, false) }
},
|p: *mut u8| {
    // SAFETY: p came from shardalloc::alloc and is freed once.
    unsafe { shardalloc::free(p) }
};
before = {
    if let Ok(ms) = std::env::var("SHARDBENCH_PURGE_DELAY") {
        let Ok(ms) = ms.parse::<i64>() else {
            eprintln!("SHARDBENCH_PURGE_DELAY={ms:?}: not a number of milliseconds");
            std::process::exit(2);
        };
        shardalloc::DOMAIN.set_purge_delay(ms);
    }
},
after = {
    if std::env::var_os("SHARDBENCH_STATS").is_some_and(|v| v != "0") {
        eprintln!("{}", shardalloc::stats());
    }
});
