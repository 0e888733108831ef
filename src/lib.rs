//! shardalloc: mimalloc's design (free-list sharding) in Rust, with a `#![no_std]` core on
//! a pluggable [`PageSource`].
//!
//! Layers, dependencies pointing down:
//! - `global`: which heap serves the caller — [`ShardAlloc`] (hosted, thread-local heaps)
//!   or [`PerCpuAlloc`] (kernels, one heap per CPU);
//! - `alloc`, `free`: the malloc and free paths (fast and generic), aligned, realloc;
//! - `heap`: page queues per size class, the direct table for small sizes, collection;
//! - `page`: the three free lists of a page;
//! - `segment`: segment layout, pointer → segment → page, commit/purge; `abandon`:
//!   abandon/reclaim of the segments of exited threads;
//! - `source`: the [`PageSource`] trait and its backends.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

mod abandon;
mod alloc;
#[cfg(feature = "override")]
mod c_api;
mod domain;
mod free;
mod global;
mod heap;
mod page;
mod segment;
#[cfg(feature = "std")]
mod segment_map;
pub mod size_class;
pub mod source;
mod stats;

pub use domain::{Domain, DEFAULT_PURGE_DELAY, DEFAULT_PURGE_DELAY_TICKS};
pub use global::percpu::{CpuLocal, PerCpuAlloc, SingleCpu};
pub use source::{PageSource, Region, SourceConfig, SourceError};
pub use stats::{StatCount, Stats};

#[cfg(all(feature = "std", unix))]
pub use global::hosted::{
    alloc, check, collect, free, is_in_heap_region, realloc, stats, thread_done, usable_size, Heap,
    ShardAlloc, DOMAIN,
};
