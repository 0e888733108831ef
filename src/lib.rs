//! shardalloc: mimalloc's design (free-list sharding) in Rust, with a `#![no_std]` core on
//! a pluggable [`PageSource`].
//!
//! # Layers
//!
//! Each file imports only files of the layers below it, or earlier in its own row
//! (checked by `tests/layers.rs`):
//!
//! | layer | files |
//! |---|---|
//! | C API | `c_api/` (feature `override`) |
//! | which heap serves the caller | `global/hosted.rs` (+ `global/tls.rs`), `global/percpu.rs`, `global/embedded.rs` (+ `global/embedded_runs.rs`), `global/mod.rs` |
//! | thread data | `thread.rs`: a thread's (CPU's) data, thread exit; `shared.rs`: heaps shared by threads (hosted) |
//! | first-class heaps | `first_class.rs`: new, delete, destroy, visit |
//! | allocation | `alloc.rs`: malloc fast and generic paths, fresh pages, huge, aligned, realloc |
//! | collection | `collect.rs` |
//! | free | `free_check.rs` (the checks of every `free`: cheap default ones, secure mode's), `debug_mode.rs`: fill patterns, padding canaries and free checks of debug mode (feature `debug-mode`), `free.rs`: the whole free path, `usable_size`, the checks of checked mode |
//! | heap | `heap.rs` (heap and thread-context structs, `OwnedHeap`), `page_queue.rs` (queues) |
//! | domain | `domain.rs`: what the heaps of one allocator share |
//! | segment | `segment.rs` (header, lookups, owner's queues), `segment_alloc.rs` (segments and pages from the source and back, commit, purge), `abandon.rs` |
//! | page | `page.rs`: one page and its three free lists |
//! | accounting | `cache.rs` (region cache), `os.rs` (limit, statistics, clock) |
//! | page source | `source/` |
//! | leaves | `sync.rs` (atomics), `size_class.rs`, `stats.rs`, `list.rs`, `segment_map.rs` (hosted), `secure.rs` (error hook; secure mode's link encoding and randomness) |
//!
//! The one deliberate back-edge: a page records its owning heap (`page.rs` names
//! `heap::RawHeap`), because a remote free into a full page must reach that heap's
//! delayed-free list (mimalloc's `xheap`). Nothing else points up.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

// Debug mode (feature `debug-mode`) keeps the core's invariant checks in optimised builds
// too: within this crate `debug_assert!` and `debug_assert_eq!` are `assert!` then (these
// definitions shadow the prelude's for every module below).
#[cfg(feature = "debug-mode")]
macro_rules! debug_assert {
    ($($t:tt)*) => { assert!($($t)*) };
}
#[cfg(feature = "debug-mode")]
macro_rules! debug_assert_eq {
    ($($t:tt)*) => { assert_eq!($($t)*) };
}

// The small geometry is for fixed memory (microcontrollers): the hosted allocator's map of
// live segments (one bit per possible segment of the address space) would not fit.
#[cfg(all(feature = "small", feature = "std"))]
compile_error!(
    "shardalloc's features `small`/`embedded` are for `no_std` targets: build with \
     `default-features = false` (the `std` feature is the hosted allocator)"
);

// Secure mode's encoded links, block-start checks and zeroing are written for the default
// geometry's pages; the small geometry's inline fast paths (`embedded::Heap`) push and pop
// raw links, so the two together would report valid frees as corrupt. Refused until the
// small geometry's fast paths go through the encoded links.
#[cfg(all(feature = "small", feature = "secure"))]
compile_error!(
    "shardalloc's feature `secure` is not available with `small`/`embedded` yet (the \
     embedded fast paths do not encode free-list links): build one or the other"
);

// leaves
mod list;
pub mod secure;
#[cfg(feature = "std")]
mod segment_map;
pub mod size_class;
mod stats;
mod sync;
// page source and accounting
mod cache;
mod os;
pub mod source;
// page, segment, domain
mod abandon;
mod domain;
mod page;
mod segment;
mod segment_alloc;
// heap layer and the data paths
mod alloc;
mod collect;
#[cfg(feature = "debug-mode")]
pub mod debug_mode;
mod first_class;
mod free;
mod free_check;
mod heap;
mod page_queue;
#[cfg(feature = "std")]
mod shared;
mod thread;
// which heap serves the caller, and the C API
#[cfg(feature = "override")]
mod c_api;
mod global;

pub use domain::Domain;
#[cfg(feature = "embedded")]
pub use global::embedded;
#[cfg(not(feature = "embedded"))]
pub use global::percpu::{CpuLocal, PerCpuAlloc, SingleCpu};
pub use os::{DEFAULT_PURGE_DELAY, DEFAULT_PURGE_DELAY_TICKS};
pub use source::{PageSource, Region, SourceConfig, SourceError};
pub use stats::{StatCount, Stats};

#[cfg(all(feature = "std", any(unix, windows)))]
pub use global::hosted::{
    alloc, check, collect, free, is_in_heap_region, realloc, stats, thread_done, usable_size, Heap,
    HeapStats, ShardAlloc, DOMAIN,
};
