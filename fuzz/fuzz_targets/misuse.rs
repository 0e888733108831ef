//! Misuse (double, interior, foreign frees, heap overflows) that a checking build must
//! report, never crash on (see `shardalloc_fuzz::misuse`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardalloc_fuzz::misuse::run(data));
