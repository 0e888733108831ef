//! Sequences of malloc/free/realloc/aligned/zeroed/first-class-heap operations on several
//! threads, checked against a shadow model (see `shardalloc_fuzz::ops`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardalloc_fuzz::ops::run(data));
