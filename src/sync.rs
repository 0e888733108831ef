//! The atomics of the core. Targets with compare-and-swap use `core`'s; targets without it
//! (Cortex-M0, `thumbv6m-none-eabi`) use `portable-atomic`'s, which implements it with
//! critical sections: Cargo.toml enables that for such targets, and the firmware links a
//! `critical-section` implementation (the board's HAL's, or `cortex-m`'s).
//!
//! 64-bit counters (the statistics) always come from `portable-atomic`: native where the
//! target has 64-bit atomics, a lock-based fallback on 32-bit targets.

#[cfg(target_has_atomic = "ptr")]
#[allow(unused_imports)] // AtomicBool: small geometry only
pub(crate) use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicUsize};
#[cfg(not(target_has_atomic = "ptr"))]
#[allow(unused_imports)]
pub(crate) use portable_atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;
pub(crate) use portable_atomic::AtomicI64;
