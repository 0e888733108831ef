//! The kernel's global allocator: shardalloc's [`PerCpuAlloc`], one heap per CPU and
//! interrupt level, over the `frames` page source.

use core::alloc::GlobalAlloc;
use shardalloc::{CpuLocal, PerCpuAlloc};

use crate::cpu::{self, MAX_CPUS};
use crate::mem::SOURCE;

/// The kernel's side of per-CPU heaps: the CPU index and the interrupt level come from the
/// GS base, and "nothing else enters the allocator on this CPU" means interrupts off
/// (there is no preemption other than interrupts).
pub struct KernelCpus;

/// Heaps per CPU: the main flow, an interrupt handler, a handler that interrupted a
/// handler, and one shared (with interrupts off) by everything deeper.
pub const LEVELS: usize = 4;

// SAFETY: `cpu::current` is fixed per CPU (set once in init_this_cpu, distinct indices, code
// never migrates); with interrupts off nothing else runs on the CPU (NMIs only flush the
// TLB and never allocate); `cpu::level` is raised by one in every interrupt handler and
// restored before it returns, and the kernel switches no tasks (an interrupt handler
// returns to the code it interrupted), so everything that runs while code at level `l` is
// inside the allocator runs at a level above `l` and has returned before it resumes.
unsafe impl CpuLocal for KernelCpus {
    #[inline(always)]
    fn cpu_index(&self) -> usize {
        cpu::current()
    }

    /// As `x86_64::instructions::interrupts::without_interrupts`, with `f` called from
    /// one place: that function calls it in two branches (interrupts on, off), so the
    /// compiler keeps `f` out of line and the allocator's slow paths paid a call and a
    /// closure on the stack. `cli` with interrupts off already changes nothing.
    #[inline(always)]
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        use x86_64::instructions::interrupts;
        let enabled = interrupts::are_enabled();
        interrupts::disable();
        let r = f();
        if enabled {
            interrupts::enable();
        }
        r
    }

    #[inline(always)]
    fn interrupt_level(&self) -> usize {
        cpu::level()
    }
}

/// The global allocator.
#[global_allocator]
pub static ALLOC: PerCpuAlloc<KernelCpus, MAX_CPUS, LEVELS> =
    PerCpuAlloc::with_clock(&SOURCE, KernelCpus, Some(crate::apic::millis));

/// Bounds the spare huge region as the page source's keep limit (a sixteenth of RAM); each
/// CPU's heap is made on its first allocation, and the page source was initialised by
/// `mem::init`.
///
/// A block that takes the spare (the last emptied huge segment, kept for the next huge
/// block) keeps its committed memory in its CPU's heap for a purge delay, beyond the reach
/// of the other CPUs' heaps: with the default 16 MiB, on 24 MiB and 4 CPUs the `stress`
/// scenario found a 64 KiB block holding 6 MiB of a buffer `smoke` had grown, and another
/// CPU out of memory (about one boot in eight).
pub fn init() {
    ALLOC
        .domain()
        .set_spare_limit(crate::mem::PHYS.total_frames() * 4096 / 16);
}

pub fn name() -> &'static str {
    "shardalloc PerCpuAlloc (a heap per CPU and interrupt level)"
}

/// The global allocator as a `dyn GlobalAlloc`, for the benchmarks.
pub fn global() -> &'static dyn GlobalAlloc {
    &ALLOC
}

/// Runs `collect(force)` of every CPU's heap (on every CPU at once).
pub fn collect_all(force: bool) {
    if force {
        crate::smp::run_on_all(|_| ALLOC.collect(true));
    } else {
        crate::smp::run_on_all(|_| ALLOC.collect(false));
    }
}
