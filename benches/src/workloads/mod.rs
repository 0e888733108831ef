//! The workloads. Each is seeded and does the same operations on every run; the
//! multi-threaded ones use 4 real threads (the machine has 2 cores), but for those of
//! `threads` (32 threads, and 1 to 8 for scaling).

pub mod cache;
pub mod churn;
pub mod fixedheap;
pub mod large;
pub mod larson;
pub mod mstress;
pub mod rptest;
pub mod sh;
pub mod threads;
pub mod xmalloc;

/// Threads of the multi-threaded workloads.
pub const THREADS: usize = 4;
