//! Kernels: one heap per CPU, safe against interrupts.
//!
//! The kernel tells shardalloc the current CPU and how to keep an interrupt handler from
//! entering the allocator while this CPU is inside it ([`CpuLocal`]). Frees from any CPU
//! are allowed: a block freed on another CPU goes to its page's `thread_free` list with one
//! CAS.

use crate::sync::{AtomicPtr, Ordering};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::collect::{heap_collect, Collect};
use crate::domain::Domain;
use crate::heap::{heap_check, OwnedHeap, RawHeap};
use crate::segment::{ptr_segment, NO_OWNER};
use crate::source::PageSource;
use crate::stats::Stats;
use crate::thread::thread_data_alloc;

/// The kernel's side of per-CPU heaps.
///
/// # Safety
/// Implementors guarantee that `cpu_index` is stable while `without_interrupts` runs (the
/// code is not migrated to another CPU), that two CPUs never report the same index at
/// the same time, and that nothing else that can allocate (an interrupt handler, another
/// task preempting this one) runs on this CPU during `f`.
pub unsafe trait CpuLocal: Sync {
    /// Index of the current CPU, `< N` for a `PerCpuAlloc<_, N>`.
    fn cpu_index(&self) -> usize;
    /// Runs `f` so that nothing else on this CPU can enter the allocator meanwhile.
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// The default for simple kernels: every CPU shares heap 0 behind a spin lock, with
/// interrupts disabled while it is held (on x86_64 with the `frames` feature; elsewhere
/// the lock alone, so an interrupt handler must not allocate).
pub struct SingleCpu {
    lock: spin::Mutex<()>,
}

impl SingleCpu {
    /// The default (a free spin lock).
    pub const fn new() -> Self {
        SingleCpu {
            lock: spin::Mutex::new(()),
        }
    }
}

impl Default for SingleCpu {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: index 0 is only used under the lock, so one CPU at a time; interrupts are off
// while the lock is held (x86_64), so no handler on this CPU can enter meanwhile.
unsafe impl CpuLocal for SingleCpu {
    fn cpu_index(&self) -> usize {
        0
    }

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(all(feature = "frames", target_arch = "x86_64"))]
        {
            x86_64::instructions::interrupts::without_interrupts(|| {
                let _g = self.lock.lock();
                f()
            })
        }
        #[cfg(not(all(feature = "frames", target_arch = "x86_64")))]
        {
            let _g = self.lock.lock();
            f()
        }
    }
}

/// The global allocator for kernels: one heap per CPU (up to `N`), frees from any CPU.
pub struct PerCpuAlloc<C: CpuLocal, const N: usize> {
    domain: Domain,
    cpu: C,
    heaps: [AtomicPtr<RawHeap>; N],
}

impl<C: CpuLocal, const N: usize> PerCpuAlloc<C, N> {
    /// An allocator taking memory from `source`.
    ///
    /// Once it has allocated, it must neither move nor be dropped (its heaps point into
    /// it): put it in a `static` (as `#[global_allocator]` does) or leak it.
    pub const fn new(source: &'static dyn PageSource, cpu: C) -> Self {
        PerCpuAlloc {
            domain: Domain::new(source),
            cpu,
            heaps: [const { AtomicPtr::new(ptr::null_mut()) }; N],
        }
    }

    /// The shared state: statistics, options, memory limit.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// A snapshot of the statistics (other CPUs' block counts may lag by up to 256 KiB
    /// each, see `Stats`).
    pub fn stats(&self) -> Stats {
        self.cpu.without_interrupts(|| {
            let idx = self.cpu.cpu_index();
            if idx < N {
                let heap = self.heaps[idx].load(Ordering::Acquire);
                if !heap.is_null() {
                    // SAFETY: the current CPU owns its heap and thread data.
                    unsafe { (*(*heap).tld).flush_stats() };
                }
            }
        });
        self.domain.stats()
    }

    /// The current CPU's heap, made on first use. Null when out of memory or when the
    /// CPU index is out of range.
    ///
    /// Must run inside `without_interrupts`.
    fn heap(&self) -> *mut RawHeap {
        let idx = self.cpu.cpu_index();
        if idx >= N {
            return ptr::null_mut();
        }
        let heap = self.heaps[idx].load(Ordering::Acquire);
        if !heap.is_null() {
            return heap;
        }
        // SAFETY: a `PerCpuAlloc` that allocates neither moves nor is dropped afterwards
        // (the contract documented on `new`), so its domain lives as long as the heaps
        // made from it, which is what `'static` asks of the thread data.
        let domain: &'static Domain = unsafe { &*(&self.domain as *const Domain) };
        // only this CPU touches its slot, with interrupts off
        let td = thread_data_alloc(domain);
        if td.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `td` is fresh; its heap field is initialised.
        let heap = unsafe { ptr::addr_of_mut!((*td).heap) };
        self.heaps[idx].store(heap, Ordering::Release);
        heap
    }

    /// The current CPU's owner token (`NO_OWNER` before its heap exists).
    #[inline]
    fn current_owner(&self) -> usize {
        let idx = self.cpu.cpu_index();
        let heap = if idx < N {
            self.heaps[idx].load(Ordering::Relaxed)
        } else {
            ptr::null_mut()
        };
        if heap.is_null() {
            NO_OWNER
        } else {
            // SAFETY: a CPU's heap stays alive.
            unsafe { (*heap).owner }
        }
    }

    /// Frees empty pages and purges memory of the calling CPU's heap; `force` purges at
    /// once and returns emptied segments of other CPUs' exited heaps too.
    pub fn collect(&self, force: bool) {
        self.cpu.without_interrupts(|| {
            let heap = self.heap();
            if heap.is_null() {
                return;
            }
            let mode = if force {
                Collect::Force
            } else {
                Collect::Normal
            };
            // SAFETY: the current CPU's heap (initialised by `heap()`), and nothing else on
            // this CPU runs meanwhile (`without_interrupts`).
            heap_collect(unsafe { OwnedHeap::new(heap) }, mode);
        })
    }

    /// The usable size of a block of this allocator.
    ///
    /// # Safety
    /// `p` is a live block allocated by this allocator.
    pub unsafe fn usable_size(&self, p: *const u8) -> usize {
        // SAFETY: `p` is a live block of this allocator (caller).
        unsafe { crate::free::usable_size(p) }
    }

    /// Checks the current CPU's heap invariants (debug builds; a no-op in release).
    pub fn check(&self) {
        self.cpu.without_interrupts(|| {
            let heap = self.heap();
            if !heap.is_null() {
                // SAFETY: the current CPU's initialised heap, with interrupts held off.
                heap_check(unsafe { OwnedHeap::new(heap) });
            }
        })
    }
}

impl<C: CpuLocal, const N: usize> PerCpuAlloc<C, N> {
    /// Allocates for `layout` from the current CPU's heap, with interrupts held off.
    fn alloc_layout(&self, layout: Layout, zero: bool) -> *mut u8 {
        self.cpu.without_interrupts(|| {
            let heap = self.heap();
            if heap.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: the current CPU's heap, and nothing else on this CPU enters the
            // allocator meanwhile (`without_interrupts`); a `Layout`'s alignment is a power
            // of two.
            unsafe { super::heap_alloc(heap, layout.size(), layout.align(), zero) }
        })
    }
}

// SAFETY: every heap is used by its CPU only, with interrupts off (the `CpuLocal`
// contract); frees from other CPUs take the atomic path; blocks are as large and aligned
// as the layout asks (see `alloc::malloc_aligned`).
unsafe impl<C: CpuLocal, const N: usize> GlobalAlloc for PerCpuAlloc<C, N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, true)
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        if p.is_null() {
            return;
        }
        // A block of a segment another CPU owns is freed with one CAS, which is safe from
        // any context: no need to hold interrupts off. The owner check uses the current
        // CPU's token read without the guard: if it is stale (we moved to another CPU),
        // "not ours" stays a correct decision (the atomic path serves the owner too),
        // and "ours" is checked again under the guard below.
        // SAFETY: `p` is a live block of ours (GlobalAlloc contract), so its segment
        // header is readable.
        let owner = unsafe { (*ptr_segment(p)).owner.load(Ordering::Relaxed) };
        if owner != self.current_owner() {
            // SAFETY: `NO_OWNER` owns no segment: this takes the atomic path.
            unsafe { crate::free::free(p, NO_OWNER) };
            return;
        }
        self.cpu.without_interrupts(|| {
            let owner = self.current_owner();
            // SAFETY: `p` is a live block of ours (GlobalAlloc contract).
            unsafe { crate::free::free(p, owner) }
        })
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.cpu.without_interrupts(|| {
            let heap = self.heap();
            if heap.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: the current CPU owns `heap`; `p` is live with `layout`.
            unsafe { super::heap_realloc(heap, (*heap).owner, p, layout, new_size) }
        })
    }
}
