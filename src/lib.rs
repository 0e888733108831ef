//! shardalloc: mimalloc's design (free-list sharding) in Rust, with a `#![no_std]` core on a
//! pluggable [`PageSource`].
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

pub mod source;
pub use source::{PageSource, Region, SourceConfig, SourceError};
