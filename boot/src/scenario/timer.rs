//! What the timer-interrupt scenarios (`irq`, `xirq`) share: the state a CPU's timer
//! handler keeps between interrupts, and the time limit of their main flows.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use super::check::Block;
use crate::apic;
use crate::rng::Rng;

/// What the handler of one CPU keeps between interrupts: a ring of live blocks.
pub struct IrqState<const RING: usize> {
    pub ring: [Option<Block>; RING],
    pub rng: Rng,
    pub tag: u64,
}

/// The handler state of one CPU.
pub struct PerCpuIrq<const RING: usize>(pub UnsafeCell<Option<IrqState<RING>>>);

// SAFETY: slot `i` is touched only by CPU `i`, either in its timer handler (interrupts off)
// or by its main flow with interrupts off (setup and teardown): never concurrently.
unsafe impl<const RING: usize> Sync for PerCpuIrq<RING> {}

impl<const RING: usize> PerCpuIrq<RING> {
    pub const fn new() -> Self {
        PerCpuIrq(UnsafeCell::new(None))
    }
}

/// The time after which the main flows stop whatever they saw, so that a handler that
/// never runs fails the scenario's checks instead of hanging the run.
pub struct Deadline(AtomicU64);

impl Deadline {
    /// Seconds from `arm` to the deadline.
    pub const SECS: u64 = 30;

    pub const fn new() -> Self {
        Deadline(AtomicU64::new(0))
    }

    /// Sets the deadline `SECS` from now.
    pub fn arm(&self, tsc_per_us: u64) {
        self.0.store(
            apic::rdtsc() + Self::SECS * 1_000_000 * tsc_per_us,
            Ordering::SeqCst,
        );
    }

    pub fn passed(&self) -> bool {
        apic::rdtsc() > self.0.load(Ordering::Relaxed)
    }
}
