//! Kernels: one heap per CPU and interrupt level, safe against interrupts without masking
//! them on the fast path.
//!
//! The kernel tells shardalloc the current CPU, how deep in nested interrupt handlers the
//! caller is, and how to keep interrupts out of a critical section ([`CpuLocal`]). A
//! `PerCpuAlloc<C, CPUS, LEVELS>` keeps one heap per (CPU, level) for the levels
//! `0..LEVELS - 1` (0: task context, 1: an interrupt handler, 2: a handler that interrupted
//! a handler, ...). Code at one level of a CPU is only ever interrupted by deeper levels,
//! which use other heaps, so the fast paths (a pop from a page's free list, a push onto
//! its local free list) run with interrupts on. Interrupts are masked only on the slow
//! paths, which reach state the heaps share (the page source, the segment cache, the
//! thread-data cache, each behind a spin lock), and for every call at level
//! `LEVELS - 1` and deeper, which share the last heap of the CPU. With `LEVELS == 1` (the
//! default) every call masks interrupts: one heap per CPU.
//!
//! Frees from any CPU and level are allowed: a block of another heap goes to its page's
//! `thread_free` list with one CAS, with interrupts on. The first remote free into a full
//! page (onto the owning heap's delayed list, in two steps) masks them: the page's owner
//! waits for a remote free that is between its two steps, and if the owner interrupted
//! that free on the same CPU it would wait forever (masking those costs less than telling
//! the heaps of this CPU from the others').

use crate::sync::{AtomicPtr, Ordering};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::collect::{heap_collect, Collect};
use crate::domain::Domain;
use crate::free::LocalFree;
use crate::heap::{empty_heap, heap_check, OwnedHeap, RawHeap};
use crate::segment::{ptr_segment, SegmentKind, NO_OWNER};
use crate::size_class::{
    padded, MAX_ALIGN_SIZE, MEDIUM_OBJ_SIZE_MAX, MIN_OS_PAGE, SMALL_OBJ_SIZE_MAX, SMALL_SIZE_MAX,
    WORD,
};
use crate::source::PageSource;
use crate::stats::Stats;
use crate::thread::thread_data_alloc;

/// Blocks of a usable size below this that move to grow (`realloc`) get four times their
/// size, larger ones twice (`alloc::realloc_growth_size`).
const GROWTH_QUAD_MAX: usize = 4 << 10;
/// Blocks of a usable size below this that move to grow by less than double (a buffer
/// appended to in small steps, not a `Vec` doubling its capacity) also get four times
/// their size: at most 48 KiB of headroom.
const GROWTH_QUAD_STEPS_MAX: usize = 16 << 10;

/// The kernel's side of per-CPU heaps.
///
/// # Safety
/// Implementors guarantee:
/// - `cpu_index` is the calling CPU's, below the `CPUS` of every `PerCpuAlloc<_, CPUS, _>`
///   that uses the implementation (the fast paths index the heap table with it unchecked;
///   debug builds check), two CPUs never report the same index at the same time, and code
///   inside the allocator is not moved to another CPU;
/// - `without_interrupts(f)` runs `f` so that nothing else that can allocate (an interrupt
///   handler, another task preempting this one) runs on this CPU during `f`;
/// - `interrupt_level` is the caller's nesting depth on this CPU: 0 in task context, one
///   more in each interrupt handler than in the code it interrupted. While the allocator
///   runs at (cpu, level), everything else that runs on that CPU until it returns runs
///   at a greater level and has returned before it resumes: the kernel does not switch
///   tasks under a task that is inside the allocator (a kernel that switches tasks from
///   an interrupt handler while tasks allocate must use `LEVELS == 1`, which never asks
///   for the level and masks interrupts around every call).
pub unsafe trait CpuLocal: Sync {
    /// Index of the current CPU, `< CPUS` for a `PerCpuAlloc<_, CPUS, _>`.
    fn cpu_index(&self) -> usize;
    /// Runs `f` so that nothing else on this CPU can enter the allocator meanwhile.
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R;
    /// The caller's interrupt nesting depth (0: task context). Only asked when
    /// `LEVELS > 1`; the default says 0 always, which is right only for a kernel whose
    /// interrupt handlers never allocate.
    #[inline(always)]
    fn interrupt_level(&self) -> usize {
        0
    }
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

/// The global allocator for kernels: one heap per CPU (up to `CPUS`) and interrupt level
/// (up to `LEVELS`, see the module documentation), frees from any CPU and level.
pub struct PerCpuAlloc<C: CpuLocal, const CPUS: usize, const LEVELS: usize = 1> {
    domain: Domain,
    cpu: C,
    /// `heaps[cpu][level]`, made on first use: the static empty heap until then (whose
    /// direct table holds only the empty page and whose owner token is `NO_OWNER`, so
    /// the fast paths miss on it without a test of their own). Slot `[c][l]` is written
    /// only by code at (c, l), or at (c, ≥ l) with interrupts off for the last level.
    heaps: [[AtomicPtr<RawHeap>; LEVELS]; CPUS],
}

/// Where a call runs: its heap slot. (Whether the slot is private to one level, so that
/// the fast paths run with interrupts on: `unmasked_slot`.)
#[derive(Clone, Copy)]
struct Context {
    cpu: usize,
    level: usize,
}

impl<C: CpuLocal, const CPUS: usize, const LEVELS: usize> PerCpuAlloc<C, CPUS, LEVELS> {
    const LEVELS_OK: () = assert!(LEVELS >= 1, "PerCpuAlloc needs at least one level");

    /// An allocator taking memory from `source`.
    ///
    /// Once it has allocated, it must neither move nor be dropped (its heaps point into
    /// it): put it in a `static` (as `#[global_allocator]` does) or leak it.
    pub const fn new(source: &'static dyn PageSource, cpu: C) -> Self {
        Self::with_clock(source, cpu, None)
    }

    /// As [`new`](Self::new), with a millisecond clock for the purge delay (the memory of
    /// emptied pages goes back to the source after `set_purge_delay` milliseconds, 10 by
    /// default; without a clock, after a number of allocation slow-path events).
    pub const fn with_clock(
        source: &'static dyn PageSource,
        cpu: C,
        clock: Option<fn() -> u64>,
    ) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LEVELS_OK;
        PerCpuAlloc {
            domain: Domain::with_clock(source, clock),
            cpu,
            heaps: [const { [const { AtomicPtr::new(empty_heap()) }; LEVELS] }; CPUS],
        }
    }

    /// The shared state: statistics, options, memory limit.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The caller's slot. Stable while the call runs (the `CpuLocal` contract).
    #[inline(always)]
    fn context(&self) -> Context {
        let cpu = self.cpu.cpu_index();
        if LEVELS == 1 {
            return Context { cpu, level: 0 };
        }
        let level = self.cpu.interrupt_level();
        Context {
            cpu,
            level: if level < LEVELS - 1 {
                level
            } else {
                LEVELS - 1
            },
        }
    }

    /// The heap of `ctx` if it exists, else the empty heap (also for a CPU index out of
    /// range).
    #[inline(always)]
    fn heap_of(&self, ctx: Context) -> *mut RawHeap {
        match self.heaps.get(ctx.cpu) {
            Some(levels) => levels[ctx.level].load(Ordering::Relaxed),
            None => empty_heap(),
        }
    }

    /// The caller's heap slot when the caller's level has a heap of its own (then the fast
    /// paths run with interrupts on), else `None`. The fast paths' way to [`context`]
    /// (Self::context): the level first (a call at the last level or deeper, or any call
    /// with `LEVELS == 1`, reads nothing more), then the CPU, whose range `CpuLocal`
    /// guarantees: two loads and a compare on x86_64.
    #[inline(always)]
    fn unmasked_slot(&self) -> Option<&AtomicPtr<RawHeap>> {
        if LEVELS == 1 {
            return None;
        }
        let level = self.cpu.interrupt_level();
        if level >= LEVELS - 1 {
            return None;
        }
        let cpu = self.cpu.cpu_index();
        debug_assert!(
            cpu < CPUS,
            "CpuLocal::cpu_index {cpu} out of range (CPUS = {CPUS})"
        );
        // SAFETY: `cpu < CPUS` (the `CpuLocal` contract) and `level < LEVELS - 1`.
        Some(unsafe { self.heaps.get_unchecked(cpu).get_unchecked(level) })
    }

    /// Whether `heap` (from a slot) has been made: not the empty heap.
    #[inline(always)]
    fn is_made(heap: *mut RawHeap) -> bool {
        heap != empty_heap()
    }

    /// The heaps of the caller's CPU at the caller's level and deeper (the ones that are
    /// not in the middle of an operation while the caller runs with interrupts off), as
    /// owned-heap tokens for `f`.
    ///
    /// Must run inside `without_interrupts`.
    fn for_each_quiet_heap(&self, ctx: Context, mut f: impl FnMut(OwnedHeap)) {
        let Some(levels) = self.heaps.get(ctx.cpu) else {
            return;
        };
        for slot in &levels[ctx.level..] {
            let heap = slot.load(Ordering::Acquire);
            if Self::is_made(heap) {
                // SAFETY: a heap of this CPU at the caller's level or deeper: code at a
                // deeper level runs only while it interrupts the caller, which it cannot
                // now (interrupts are off), and has returned from every call it made.
                f(unsafe { OwnedHeap::new(heap) });
            }
        }
    }

    /// A snapshot of the statistics (other heaps' block counts may lag by up to 256 KiB
    /// each, see `Stats`).
    pub fn stats(&self) -> Stats {
        self.cpu.without_interrupts(|| {
            self.for_each_quiet_heap(self.context(), |heap| {
                // SAFETY: a quiet heap of this CPU: its thread data is ours for now.
                unsafe { (*heap.tld()).flush_stats() };
            });
        });
        self.domain.stats()
    }

    /// The caller's heap, made on first use. Null when out of memory or when the CPU
    /// index is out of range.
    ///
    /// Must run inside `without_interrupts`.
    fn heap(&self, ctx: Context) -> *mut RawHeap {
        let Some(levels) = self.heaps.get(ctx.cpu) else {
            return ptr::null_mut();
        };
        let heap = levels[ctx.level].load(Ordering::Acquire);
        if Self::is_made(heap) {
            return heap;
        }
        // SAFETY: a `PerCpuAlloc` that allocates neither moves nor is dropped afterwards
        // (the contract documented on `new`), so its domain lives as long as the heaps
        // made from it, which is what `'static` asks of the thread data.
        let domain: &'static Domain = unsafe { &*(&self.domain as *const Domain) };
        // only this context touches its slot, with interrupts off
        let td = thread_data_alloc(domain);
        if td.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `td` is fresh; its heap field is initialised.
        let heap = unsafe { ptr::addr_of_mut!((*td).heap) };
        levels[ctx.level].store(heap, Ordering::Release);
        heap
    }

    /// The owner token of the heap of `ctx` (`NO_OWNER` before it exists: the empty
    /// heap's).
    #[inline(always)]
    fn owner_of(&self, ctx: Context) -> usize {
        // SAFETY: a heap stays alive once made; the empty heap is a static.
        unsafe { (*self.heap_of(ctx)).owner }
    }

    /// Frees empty pages and purges memory of the calling context's heap and of the
    /// heaps of deeper interrupt levels of this CPU; `force` purges at once and returns
    /// emptied segments of other heaps too.
    pub fn collect(&self, force: bool) {
        self.cpu.without_interrupts(|| {
            let ctx = self.context();
            if self.heap(ctx).is_null() {
                return;
            }
            let mode = if force {
                Collect::Force
            } else {
                Collect::Normal
            };
            self.for_each_quiet_heap(ctx, |heap| heap_collect(heap, mode));
        })
    }

    /// The calling CPU goes offline (hot-unplug): its heaps, at every level, are collected
    /// and given up, as an exiting thread's are in hosted programs. Their segments that
    /// still hold live blocks go to the domain's abandoned list, from which the heaps of
    /// the other CPUs (or of this one when it comes back: its next allocation makes a new
    /// heap) take them over when they need pages (`abandon::reclaim_suitable`, and
    /// `reclaim_one` for huge blocks); their thread data goes back to the domain. The
    /// CPU's live blocks stay valid and may be freed, resized and read from any CPU, before
    /// and after they are taken over.
    ///
    /// Call it in task context (level 0) on the CPU that goes offline; at a deeper level it
    /// does nothing (the code it interrupted may be inside the allocator on this CPU's
    /// heaps).
    pub fn cpu_offline(&self) {
        self.cpu.without_interrupts(|| {
            let ctx = self.context();
            if ctx.level != 0 {
                return;
            }
            let Some(levels) = self.heaps.get(ctx.cpu) else {
                return;
            };
            for slot in levels {
                let heap = slot.load(Ordering::Acquire);
                if !Self::is_made(heap) {
                    continue;
                }
                // from now on this CPU's calls see the empty heap (and make a new one)
                slot.store(empty_heap(), Ordering::Release);
                // SAFETY: a heap of this CPU at level 0 or deeper: no call of this CPU is
                // in the allocator while its task context is here with interrupts off
                // (`for_each_quiet_heap`), and the slot no longer leads to it. It is the
                // backing heap of thread data made by `heap` (its `tld` field), which no
                // one else uses: its segments go to the domain (`thread_done`, which
                // detaches their pages first, so that remote frees never touch the heap
                // again), then the thread data goes back to the domain it came from.
                unsafe {
                    let tld = (*heap).tld;
                    crate::thread::thread_done(tld);
                    let td = (heap as *mut u8)
                        .sub(core::mem::offset_of!(crate::thread::ThreadData, heap))
                        as *mut crate::thread::ThreadData;
                    crate::thread::thread_data_free(&self.domain, td);
                }
            }
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

    /// Checks the invariants of the calling context's heap and of the heaps of deeper
    /// interrupt levels of this CPU (debug builds; a no-op in release).
    pub fn check(&self) {
        self.cpu
            .without_interrupts(|| self.for_each_quiet_heap(self.context(), heap_check))
    }

    /// Allocates for `layout` from the caller's heap, with interrupts held off.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout, zero: bool) -> *mut u8 {
        self.cpu.without_interrupts(|| {
            let heap = self.heap(self.context());
            if heap.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: the caller's heap, and nothing else on this CPU enters the allocator
            // meanwhile (`without_interrupts`); a `Layout`'s alignment is a power of two.
            unsafe { super::heap_alloc(heap, layout.size(), layout.align(), zero) }
        })
    }

    /// The fast path's miss for a word-aligned `layout`: the page's own frees, still with
    /// interrupts on (`local_free` is written only by this heap's context), else the
    /// generic path. Called, not jumped to (`alloc` passes the result through
    /// `black_box`): with frame pointers (as the kernel builds), a function without a
    /// call sets up its frame on entry, and `alloc`'s only call then gets the frame set
    /// up on its own path, where a hit sets up none (3 instructions fewer a hit, 4 more
    /// a miss).
    ///
    /// A larger alignment (that divides a size above the small ones, see `alloc`) goes to
    /// [`alloc_page_multiple`](Self::alloc_page_multiple).
    ///
    /// # Safety
    /// `heap` is the calling context's slot's heap (the empty heap before it is made);
    /// `layout.align() <= WORD`, or `layout.align() <= MIN_OS_PAGE` divides
    /// `layout.size() > SMALL_SIZE_MAX`.
    #[inline(never)]
    unsafe fn alloc_miss(&self, layout: Layout, heap: *mut RawHeap) -> *mut u8 {
        if layout.align() > WORD {
            // SAFETY: as this function's contract.
            return unsafe { self.alloc_page_multiple(heap, layout) };
        }
        // SAFETY: the caller's heap (or the empty heap), which no other code enters until
        // this call returns (the `CpuLocal` contract).
        let p = unsafe { crate::alloc::malloc_local(heap, layout.size(), WORD) };
        if !p.is_null() {
            return p;
        }
        // SAFETY: as the caller's contract; the fast paths missed.
        unsafe { self.alloc_generic(heap, layout) }
    }

    /// Allocates `size` bytes (word-aligned) through the generic path, with interrupts held
    /// off, after the fast paths missed: straight to `malloc_generic`, without trying the
    /// direct table's page and its own frees again as [`alloc_slow`](Self::alloc_slow)'s
    /// `malloc` would (nothing else allocates from this heap between the two: interrupt
    /// handlers use the heaps of deeper levels; remote frees wait in `thread_free`, which
    /// the generic path collects). About 50 instructions fewer per slow allocation.
    ///
    /// The caller's first allocation (its slot still holds the empty heap) goes to
    /// [`alloc_slow`](Self::alloc_slow), which makes the heap.
    ///
    /// # Safety
    /// `heap` is the calling context's slot's heap (the empty heap before it is made);
    /// `layout.align() <= WORD`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_generic(&self, heap: *mut RawHeap, layout: Layout) -> *mut u8 {
        if !Self::is_made(heap) {
            return self.alloc_slow(layout, false);
        }
        let size = layout.size();
        // SAFETY: the caller's heap (caller), which nothing else on this CPU enters
        // meanwhile (`without_interrupts`); no alignment beyond the word's.
        self.cpu.without_interrupts(|| unsafe {
            if size <= SMALL_SIZE_MAX {
                crate::alloc::malloc_small_miss(heap, size, false)
            } else {
                crate::alloc::malloc(heap, size, false)
            }
        })
    }

    /// The aligned fast path's miss for a block larger than the small sizes whose size is
    /// a multiple of its alignment (at most the OS page's: page-sized buffers): blocks of
    /// its class are aligned to it in pages that start at an OS page boundary, so a block
    /// as the generic path gives it ([`alloc_generic`](Self::alloc_generic)) is taken when
    /// aligned, as `alloc::malloc_aligned` does, without its way there (the masked
    /// `alloc_slow`, the tests of `malloc_aligned`, the fast path tried again): about 80
    /// instructions fewer a miss. A misaligned one (a page after a segment's header) is
    /// freed and the aligned slow path runs.
    ///
    /// # Safety
    /// `heap` is the calling context's slot's heap (the empty heap before it is made);
    /// `layout.align() <= MIN_OS_PAGE` divides `layout.size()`.
    #[inline(never)]
    unsafe fn alloc_page_multiple(&self, heap: *mut RawHeap, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract; a non-zero size, word-aligned.
        let p = unsafe {
            self.alloc_generic(heap, Layout::from_size_align_unchecked(layout.size(), WORD))
        };
        if p as usize & (layout.align() - 1) == 0 {
            return p; // (or null: out of memory)
        }
        // SAFETY: `p` was just allocated with this size (its layout's alignment plays no
        // part in the free).
        unsafe { self.dealloc(p, layout) };
        self.alloc_slow(layout, false)
    }

    /// `dealloc` into a page with flags (full, or holding aligned blocks): a page that
    /// does not empty takes the free onto its `local_free`, and a full one goes back to
    /// its queue when it has enough blocks free, with interrupts on (the heap's own
    /// queues, which no other code changes meanwhile: the `CpuLocal` contract), else
    /// [`dealloc_slow`](Self::dealloc_slow). Out of line, and called with
    /// nothing to keep across the call: `dealloc`'s only call (see `alloc_miss`).
    ///
    /// # Safety
    /// As `dealloc_slow`; `page` is the page of `p`, owned by the caller's heap `heap`.
    #[inline(never)]
    unsafe fn dealloc_flagged(&self, p: *mut u8, page: *mut crate::page::Page, heap: *mut RawHeap) {
        // SAFETY: the caller's page (caller), which no other code enters until this call
        // returns (the `CpuLocal` contract); `p` is given up.
        if unsafe { crate::free::free_flagged_try(page, p) } {
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { self.dealloc_slow(p, heap) }
    }

    /// `dealloc` of a block of another heap: one CAS onto its page's `thread_free`, with
    /// interrupts on, unless the page is full and its owner waits for news (see
    /// `free::free_remote_try`), else [`dealloc_slow`](Self::dealloc_slow). Out of line
    /// (a tail call): the local fast path in `dealloc` then sets up no frame.
    ///
    /// # Safety
    /// As `dealloc_slow`; `p` is a block of `page`, not a page of the caller's heap `heap`.
    #[inline(never)]
    unsafe fn dealloc_remote(&self, p: *mut u8, page: *mut crate::page::Page, heap: *mut RawHeap) {
        // SAFETY: `p` is a live block of `page`, given up, not the caller's heap's (caller).
        if unsafe { crate::free::free_remote_try(page, p) } {
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { self.dealloc_slow(p, heap) }
    }

    /// Frees `p` when the fast path could not, with interrupts held off: a free into the
    /// caller's heap that needs bookkeeping, or a remote free into a full page (onto its
    /// heap's delayed list), or any remote free at the last level. Those are masked:
    /// when the owner is a heap of this CPU that the caller interrupted, a full page's
    /// owner may wait for a remote free between its two steps, forever if the free could
    /// be interrupted by it (see the module documentation); masking them all costs a few
    /// instructions where telling the heaps of this CPU apart cost a look at each of them.
    ///
    /// # Safety
    /// `p` is a live block of this allocator, given up by the caller; `heap` is the
    /// caller's slot's heap (the empty heap before it is made) when the caller's level
    /// has a heap of its own, null otherwise.
    #[inline(never)]
    unsafe fn dealloc_slow(&self, p: *mut u8, heap: *mut RawHeap) {
        self.cpu.without_interrupts(|| {
            // (the fast path passes the heap it looked at; the last level works it out)
            // SAFETY: a heap stays alive once made; the empty heap is a static.
            let mine = if heap.is_null() {
                self.owner_of(self.context())
            } else {
                unsafe { (*heap).owner }
            };
            // SAFETY: `p` is live (caller), so its segment header is readable.
            let owner = unsafe { (*ptr_segment(p)).owner.load(Ordering::Relaxed) };
            // (`p` is not null: a block of ours)
            if owner == mine {
                // (never `NO_OWNER`: no segment has that owner)
                // SAFETY: `p` is a live block of the caller's heap, which nothing else on
                // this CPU enters meanwhile.
                unsafe { crate::free::free_nonnull(p, owner) }
            } else {
                // SAFETY: `NO_OWNER` owns no segment: this takes the atomic path.
                unsafe { crate::free::free_nonnull(p, NO_OWNER) }
            }
        })
    }
}

// SAFETY: every heap is used by its (CPU, level) only: levels below `LEVELS - 1` are never
// re-entered (deeper levels use other heaps, the `CpuLocal` contract), the last level only
// with interrupts off; state shared between heaps is reached only with interrupts off (slow
// paths, remote frees through a heap's delayed list), except a page's `thread_free`, a
// lock-free stack whose pushes make nobody wait. Blocks are as large and aligned as the layout asks (see
// `alloc::malloc_aligned`).
unsafe impl<C: CpuLocal, const CPUS: usize, const LEVELS: usize> GlobalAlloc
    for PerCpuAlloc<C, CPUS, LEVELS>
{
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // (the slot's heap is the empty heap until the first slow path makes it: the fast
        // paths below then miss, and `alloc_generic` or `alloc_slow` makes it)
        if let Some(slot) = self.unmasked_slot() {
            let heap = slot.load(Ordering::Relaxed);
            if layout.align() <= WORD {
                let p = if layout.size() <= SMALL_SIZE_MAX {
                    // SAFETY: the caller's heap (or the empty heap), which no other code
                    // enters until this call returns (the `CpuLocal` contract); the size is
                    // small.
                    unsafe { crate::alloc::malloc_small_try(heap, layout.size()) }
                } else {
                    // SAFETY: as above; medium and large sizes take the head page of their
                    // queue (null for larger ones).
                    unsafe { crate::alloc::malloc_queue_try(heap, layout.size(), false) }
                };
                if !p.is_null() {
                    return p;
                }
            } else if layout.align() <= MIN_OS_PAGE {
                // page-aligned buffers and the like: a block of their class when it happens
                // to be aligned (see `alloc::malloc_aligned` for the others)
                // (or the page's own frees, when the first is aligned)
                // SAFETY: as above; a `Layout`'s alignment is a power of two.
                let p = unsafe {
                    crate::alloc::malloc_try_aligned_local(heap, layout.size(), layout.align())
                };
                if !p.is_null() {
                    return p;
                }
                if layout.size() <= SMALL_SIZE_MAX || layout.size() & (layout.align() - 1) != 0 {
                    return self.alloc_slow(layout, false);
                }
            } else {
                return self.alloc_slow(layout, false);
            }
            // SAFETY: `heap` is the caller's slot's heap (as above), the fast path missed;
            // the alignment is the word's, or one that divides a size above the small ones.
            let p = unsafe { self.alloc_miss(layout, heap) };
            // (not a tail call, and the only call: see `alloc_miss`)
            return core::hint::black_box(p);
        }
        self.alloc_slow(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_slow(layout, true)
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // (never null: `p` is a block of ours, the GlobalAlloc contract)
        debug_assert!(!p.is_null(), "GlobalAlloc::dealloc of null");
        let mut heap = ptr::null_mut();
        if let Some(slot) = self.unmasked_slot() {
            heap = slot.load(Ordering::Relaxed);
            // SAFETY: `p` is a live block of ours (GlobalAlloc contract); the heap is the
            // caller's, which no other code enters until this call returns, or the empty
            // heap (a static), whose owner token `NO_OWNER` owns no segment.
            match unsafe { crate::free::free_local_try(p, (*heap).owner) } {
                LocalFree::Done => return,
                LocalFree::Flagged(page) => {
                    // SAFETY: as above; `page` is the page of `p`, the caller's.
                    unsafe { self.dealloc_flagged(p, page, heap) };
                    // (not a tail call: see `alloc_miss`)
                    return core::hint::black_box(());
                }
                LocalFree::Remote(page) => {
                    // the common remote free inline (one CAS), the rest out of line
                    // SAFETY: as above; `p` is a block of `page`, not the caller's heap's.
                    if unsafe { crate::free::free_remote_once(page, p) } {
                        return;
                    }
                    // SAFETY: as above.
                    return unsafe { self.dealloc_remote(p, page, heap) };
                }
                LocalFree::No => {}
            }
        }
        // SAFETY: as above; `heap` is the slot's heap when the level has one, else null.
        unsafe { self.dealloc_slow(p, heap) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is a live block of ours (GlobalAlloc contract).
        let size = unsafe { crate::free::usable_size(p) };
        // in place when it shrinks by at most half, and whenever it grows within its usable
        // size (the headroom a growing block got when it moved, below)
        if new_size <= size && (new_size >= size / 2 || new_size >= layout.size()) {
            return p; // `p` is aligned for `layout`, which keeps its alignment
        }
        // SAFETY: as above; `size` is the usable size of `p` (a huge block holds more
        // than 8 KiB, a solo block at least 4 KiB)
        unsafe {
            if new_size > size && size >= GROW_MIN {
                if size >= GROW_IN_PLACE_MIN {
                    return self.realloc_grow_huge(p, layout, new_size, size);
                }
                if SOLO && new_size / 2 < size {
                    return self.realloc_grow_solo(p, layout, new_size, size);
                }
            }
            self.realloc_move(p, layout, new_size, size)
        }
    }
}

/// Solo blocks (`alloc::malloc_solo`) exist: not in the small geometry.
const SOLO: bool = !cfg!(feature = "small");

/// The least usable size of a block that may grow in place (`realloc_grow_huge`): a huge
/// block holds more than 8 KiB, a solo block at least an OS page.
const GROW_IN_PLACE_MIN: usize = if SOLO {
    MIN_OS_PAGE
} else {
    SMALL_OBJ_SIZE_MAX / 2
};

/// The least usable size of a growing block that `realloc` sends elsewhere than
/// `realloc_move`: one that may grow in place, or become solo (`realloc_grow_solo`).
const GROW_MIN: usize = if SOLO {
    SOLO_MIN / 4
} else {
    GROW_IN_PLACE_MIN
};

/// The least size with headroom (`grown`) of a block that moves to grow into a solo block
/// of its own page (`PerCpuAlloc::realloc_solo`) instead of a size class: a block that
/// grew before ([`grew_before`]) and grows again by less than double, a buffer built up
/// step by step. (Blocks that double, as `Vec`'s, and blocks resized once keep to the size
/// classes and huge blocks: a solo block costs a page claim when the heap has no spare.)
const SOLO_MIN: usize = 2048;

/// Whether a block of usable size `size` holding `layout` has more room than its size
/// class gives (`good_size`): it grew before, by `realloc`'s headroom.
#[cfg(not(feature = "small"))]
#[inline(always)]
fn grew_before(layout: Layout, size: usize) -> bool {
    crate::size_class::good_size(layout.size()) < size
}

/// The least usable size of a doubling buffer that moves into its heap's spare huge region
/// (see `PerCpuAlloc::realloc_move`).
const SPARE_MOVE_MIN: usize = 1024;
/// The least memory the spare huge region holds committed for a doubling buffer to move
/// into it before 8 KiB: a big buffer's region (one grown to several megabytes), for a
/// buffer likely to grow as big again. Smaller spares wait for a block that becomes huge
/// by the usual rules. (With 1 MiB, the kernel's `run=all` on 24 MiB and 4 CPUs ran out of
/// memory in its stress scenario in about one boot in four: a small block that moved into
/// a spare of several megabytes kept them committed in its CPU's heap for a purge delay,
/// out of the other CPUs' reach. The kernel now bounds the spare by RAM,
/// `Domain::set_spare_limit`.)
const SPARE_MOVE_COMMITTED: usize = 4 << 20;

impl<C: CpuLocal, const CPUS: usize, const LEVELS: usize> PerCpuAlloc<C, CPUS, LEVELS> {
    /// A huge block of the caller's heap growing into memory its segment has committed
    /// already (a spare region's, room committed ahead of a growing buffer): the header
    /// changes, nothing else, so with interrupts on (only this context writes its heap's
    /// segments, as the fast paths; no lock, no source call). Else [`realloc_move`]
    /// (Self::realloc_move), a tail call. A function of its own, entered for blocks that
    /// may be huge (more than 8 KiB) and grow, that saves no registers: a `Vec` doubling
    /// through a spare region takes it at every other step, about 70 instructions fewer
    /// a step than inside `realloc_move` (its saved registers, the calls for the page's
    /// area and the statistics).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `size` is the usable size of `p`, at least
    /// `GROW_IN_PLACE_MIN`, and `new_size > size`.
    #[inline(never)]
    unsafe fn realloc_grow_huge(
        &self,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        size: usize,
    ) -> *mut u8 {
        debug_assert!(size >= GROW_IN_PLACE_MIN && new_size > size);
        let segment = ptr_segment(p);
        // SAFETY: `p` is live (GlobalAlloc contract), so is its segment's header, whose
        // kind is fixed.
        if !cfg!(feature = "debug-mode")
            && layout.align() <= MAX_ALIGN_SIZE
            && unsafe { (*segment).kind } == SegmentKind::Huge
        {
            if let Some(slot) = self.unmasked_slot() {
                let heap = slot.load(Ordering::Relaxed);
                // SAFETY: as above; a heap stays alive once made (the empty heap is a
                // static whose owner token owns no segment); a huge segment has one page,
                // whose block starts at its `page_start` (unless `p` points into it,
                // aligned); the segment is the caller's heap's (its owner token), so the
                // caller's context is the only writer of its header.
                unsafe {
                    let page = (*segment).page(0);
                    if Self::is_made(heap)
                        && (*segment).owner.load(Ordering::Relaxed) == (*heap).owner
                        && (*page).page_start() == p
                        && crate::segment_alloc::huge_grow_committed(page, padded(new_size))
                    {
                        return p;
                    }
                }
            }
        }
        // a solo block growing by less than double (in a small segment): in place when
        // its page has the room
        // SAFETY: as above.
        if SOLO && new_size / 2 < size && unsafe { (*segment).kind } == SegmentKind::Small {
            // SAFETY: the caller's contract.
            return unsafe { self.realloc_grow_solo(p, layout, new_size, size) };
        }
        // SAFETY: the caller's contract.
        unsafe { self.realloc_move(p, layout, new_size, size) }
    }

    /// A block of at least `SOLO_MIN / 4` bytes, not huge, growing by less than double (a
    /// buffer built up in steps): in place when it is a solo block of the caller's heap
    /// whose page has the room, else into a new solo block when it grew before (see
    /// `realloc_solo`), else [`realloc_move`](Self::realloc_move). Out of line, so that
    /// `realloc`, `realloc_grow_huge` and `realloc_move` save no registers for it; the
    /// common step (a solo block of a page after its segment's first growing into memory
    /// committed already) makes no call, so saves none either: the rest is
    /// [`realloc_grow_solo_slow`](Self::realloc_grow_solo_slow), a tail call.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `size` is the usable size of `p`, at least
    /// `SOLO_MIN / 4`, and `size < new_size < 2 * size`.
    #[inline(never)]
    unsafe fn realloc_grow_solo(
        &self,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        size: usize,
    ) -> *mut u8 {
        #[cfg(not(feature = "small"))]
        if size >= MIN_OS_PAGE && layout.align() <= MAX_ALIGN_SIZE {
            if let Some(slot) = self.unmasked_slot() {
                let heap = slot.load(Ordering::Relaxed);
                let segment = ptr_segment(p);
                // SAFETY: as in `solo_grow_in_place`.
                unsafe {
                    if (*segment).owner.load(Ordering::Relaxed) == (*heap).owner {
                        let page = (*segment).page_of(p);
                        if (*page).flags & crate::page::FLAG_SOLO != 0
                            && (*page).page_start() == p
                            && crate::alloc::solo_grow_committed(heap, page, new_size)
                        {
                            return p;
                        }
                    }
                }
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.realloc_grow_solo_slow(p, layout, new_size, size) }
    }

    /// The rest of [`realloc_grow_solo`](Self::realloc_grow_solo).
    ///
    /// # Safety
    /// As `realloc_grow_solo`.
    #[inline(never)]
    unsafe fn realloc_grow_solo_slow(
        &self,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        size: usize,
    ) -> *mut u8 {
        #[cfg(not(feature = "small"))]
        {
            // SAFETY: the caller's contract; a block of at least 4 KiB that grows.
            if size >= MIN_OS_PAGE
                && layout.align() <= MAX_ALIGN_SIZE
                && unsafe { self.solo_grow_in_place(p, new_size) }
            {
                return p;
            }
            // A block that grew before and grows again by less than double (from
            // `SOLO_MIN / 4`: its headroom, four or two times its size, is at least
            // `SOLO_MIN`) moves into a solo block.
            if layout.align() <= WORD
                && new_size <= crate::alloc::SOLO_SIZE_MAX
                && grew_before(layout, size)
            {
                if let Some(slot) = self.unmasked_slot() {
                    // SAFETY: the caller's contract; the caller's slot.
                    let q = unsafe { self.realloc_solo(slot, p, layout, new_size) };
                    if !q.is_null() {
                        return q;
                    }
                }
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.realloc_move(p, layout, new_size, size) }
    }

    /// Frees `p`, the old block of a `realloc` that moved, as `dealloc` does, with the heap
    /// that the caller looked up already: its own page's fast path, a flagged page's, one
    /// CAS onto another heap's page, else the slow path.
    ///
    /// # Safety
    /// `p` is a live block of this allocator, given up by the caller; `heap` is the
    /// caller's slot's heap (or the empty heap), which no other code enters until this
    /// call returns (the `CpuLocal` contract).
    #[inline(always)]
    unsafe fn free_moved(&self, p: *mut u8, heap: *mut RawHeap) {
        // SAFETY: as this function's contract; the empty heap's owner token owns no
        // segment, so its frees take the remote or slow path.
        unsafe {
            match crate::free::free_local_try(p, (*heap).owner) {
                LocalFree::Done => {}
                LocalFree::Flagged(page) => self.dealloc_flagged(p, page, heap),
                LocalFree::Remote(page) => {
                    if !crate::free::free_remote_once(page, p) {
                        self.dealloc_remote(p, page, heap)
                    }
                }
                LocalFree::No => self.dealloc_slow(p, heap),
            }
        }
    }

    /// The move of `p` into a block of `grown` bytes by the fast paths of `alloc` and
    /// `dealloc`, inlined, the caller's heap looked up once (about 25 instructions fewer a
    /// move than calling them); their slow paths as they take them. Null (nothing done)
    /// when the allocation's fast path misses.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `slot` is the caller's heap slot (`unmasked_slot`),
    /// `layout.align() <= WORD`, `grown >= new_size`.
    #[inline(always)]
    unsafe fn move_by_fast_paths(
        &self,
        slot: &AtomicPtr<RawHeap>,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        grown: usize,
    ) -> *mut u8 {
        let heap = slot.load(Ordering::Relaxed);
        // SAFETY: the caller's heap (or the empty heap, on which both miss), which no other
        // code enters until this call returns (the `CpuLocal` contract); the alignment the
        // word's, which every block has.
        let q = unsafe {
            if grown <= SMALL_SIZE_MAX {
                crate::alloc::malloc_small_try(heap, grown)
            } else {
                crate::alloc::malloc_queue_try(heap, grown, false)
            }
        };
        if !q.is_null() {
            // SAFETY: `p` holds `layout.size()` bytes and `q` at least `new_size`; distinct
            // blocks; `p` is given up by the caller, and freed as `dealloc` frees it (the
            // heap is the caller's slot's, the empty heap's owner token owns no segment).
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.free_moved(p, heap);
            }
        }
        q
    }

    /// Moves `p`, growing to `new_size` bytes, into a solo block (`alloc::malloc_solo`: a
    /// small page of its own, committed as far as the block reaches), where its next
    /// growth steps stay in place ([`solo_grow_in_place`](Self::solo_grow_in_place)) up
    /// to the page's size instead of moving through the size classes: a buffer built up
    /// in steps from a few bytes to tens of kilobytes copied its bytes at 2, 8 and 32 KiB
    /// of headroom, now once into the solo block. Null (nothing done) when no solo block
    /// could be made (the heap not made yet, out of memory): the caller moves `p` by the
    /// size classes.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `slot` is the caller's heap slot (`unmasked_slot`),
    /// `layout.align() <= WORD`, `size < new_size <= SOLO_SIZE_MAX`.
    #[cfg(not(feature = "small"))]
    #[inline(never)]
    unsafe fn realloc_solo(
        &self,
        slot: &AtomicPtr<RawHeap>,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
    ) -> *mut u8 {
        let heap = slot.load(Ordering::Relaxed);
        if !Self::is_made(heap) {
            return ptr::null_mut();
        }
        let q = self.cpu.without_interrupts(|| {
            // SAFETY: the caller's heap, with interrupts held off (the page claim reaches
            // the segments and the source); `0 < new_size <= SOLO_SIZE_MAX`.
            unsafe { crate::alloc::malloc_solo(heap, new_size) }
        });
        if !q.is_null() {
            // SAFETY: `p` holds `layout.size()` bytes and `q` at least `new_size`; distinct
            // blocks; `p` is given up by the caller, and freed as `dealloc` frees it (the
            // heap looked up once).
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.free_moved(p, heap);
            }
        }
        q
    }

    /// Grows `p` in place to `new_size` bytes when it is a solo block of the caller's heap
    /// (`alloc::solo_grow`: its page's only block, the room behind it unused) and its page
    /// has the room. False (nothing done) otherwise.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `p` holds at least `MIN_OS_PAGE` bytes.
    #[cfg(not(feature = "small"))]
    #[inline]
    unsafe fn solo_grow_in_place(&self, p: *mut u8, new_size: usize) -> bool {
        let Some(slot) = self.unmasked_slot() else {
            return false;
        };
        let heap = slot.load(Ordering::Relaxed);
        let segment = ptr_segment(p);
        // SAFETY: `p` is live (GlobalAlloc contract), so is its segment's header (its kind
        // is fixed, its owner atomic) and, for a small segment, its page; a heap stays
        // alive once made (the empty heap is a static whose owner token owns no segment);
        // a segment of the caller's heap (its owner token) has its page entries written by
        // the caller's context alone.
        unsafe {
            if (*segment).owner.load(Ordering::Relaxed) != (*heap).owner {
                return false;
            }
            let page = (*segment).page_of(p);
            if (*page).flags & crate::page::FLAG_SOLO == 0 || (*page).page_start() != p {
                return false;
            }
            // Into committed memory with interrupts on: the page and the heap's statistics
            // are the caller's context's alone (only deeper levels, with other heaps,
            // interrupt it). A commit reaches the source: with interrupts off.
            crate::alloc::solo_grow(heap, page, new_size, false)
                || self
                    .cpu
                    .without_interrupts(|| crate::alloc::solo_grow(heap, page, new_size, true))
        }
    }

    /// The part of `realloc` after the in-place test: out of line (a tail call), so that a
    /// block that stays where it is (a growing buffer inside its headroom) saves no
    /// registers: about 12 instructions fewer a call.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `size` is the usable size of `p`.
    #[inline(never)]
    unsafe fn realloc_move(
        &self,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        size: usize,
    ) -> *mut u8 {
        // A small block (below the spare's least size, so none of the special cases below
        // applies: neither huge nor becoming one) growing by the headroom rule below, or
        // shrinking below half, first and alone (about 12 instructions fewer a move).
        if size < SPARE_MOVE_MIN && new_size < SMALL_OBJ_SIZE_MAX / 2 && layout.align() <= WORD {
            if let Some(slot) = self.unmasked_slot() {
                const _: () = assert!(SPARE_MOVE_MIN <= GROWTH_QUAD_MAX);
                let grown = if new_size > size {
                    new_size.max(size * 4)
                } else {
                    new_size
                };
                // SAFETY: the caller's contract; the caller's slot; `grown >= new_size`.
                let q = unsafe { self.move_by_fast_paths(slot, p, layout, new_size, grown) };
                if !q.is_null() {
                    return q;
                }
            }
        }
        // A buffer of 1 KiB or more that doubles, while the allocator holds a spare huge
        // region of several megabytes (the last big buffer's, mapped, its header kept: see
        // `segment_alloc::HUGE_SPARE_MAX`), moves into it at once: that move costs about what a move
        // between two size classes does, and it is the buffer's last copy (it then grows in
        // place through the committed room), where the size classes would copy it again at
        // 4, 8 and 16 KiB. Without a spare, the usual rules below (a huge segment from
        // 8 KiB on).
        // (the spare's size is a hint: another CPU may take the spare meanwhile; the block
        // then becomes huge the usual way)
        if size >= SPARE_MOVE_MIN
            && new_size / 2 >= size
            && new_size < MEDIUM_OBJ_SIZE_MAX
            && self.domain.os.huge_spare_committed.load(Ordering::Relaxed) >= SPARE_MOVE_COMMITTED
            && layout.align() <= MAX_ALIGN_SIZE
        {
            let heap = match self.unmasked_slot() {
                Some(slot) => slot.load(Ordering::Relaxed),
                None => empty_heap(),
            };
            if Self::is_made(heap) {
                let q = self.cpu.without_interrupts(|| {
                    // SAFETY: the caller's heap, with interrupts held off; a huge block
                    // (`huge_align` given) of at least `new_size` bytes.
                    unsafe { crate::alloc::malloc_huge(heap, new_size, MAX_ALIGN_SIZE) }
                });
                if !q.is_null() {
                    // SAFETY: `q` is a live huge block of the caller's heap (as the start
                    // of `realloc_grow_huge`); `p` holds `layout.size()` bytes and `q` at
                    // least `new_size`; distinct blocks; `p` is given up by the caller.
                    unsafe {
                        // it moved because it doubles: its room ahead in the spare's
                        // committed memory at once (as its next growth step would take
                        // it), not at its next doubling
                        let page = (*ptr_segment(q)).page(0);
                        if (*page).page_start() == q {
                            crate::segment_alloc::huge_grow_committed(page, padded(new_size));
                        }
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        // (freed as `dealloc` frees it, the heap looked up once)
                        self.free_moved(p, heap);
                    }
                    return q;
                }
            }
        }
        let slot = self.unmasked_slot();
        if new_size >= MEDIUM_OBJ_SIZE_MAX
            || crate::alloc::moves_to_huge(size, new_size)
            // (a huge block holds more than 8 KiB)
            // SAFETY: `p` is live, so is its segment's header, whose kind is fixed
            || (size >= SMALL_OBJ_SIZE_MAX / 2
                && unsafe { (*ptr_segment(p)).kind } == SegmentKind::Huge)
            || slot.is_none()
        {
            // a huge block may be resized by its page source without a copy, and a block
            // growing to the largest medium size or beyond, or a doubling buffer, may
            // become one (see `alloc::realloc`)
            return self.cpu.without_interrupts(|| {
                let heap = self.heap(self.context());
                if heap.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: the caller's heap, with interrupts held off; `p` is live with
                // `layout`.
                unsafe { super::heap_realloc(heap, (*heap).owner, p, layout, new_size) }
            });
        }
        // With headroom when it grows (see `alloc::realloc_growth_size`): the next steps of
        // a growing buffer then fit in place. Below 4 KiB four times the old size (at most
        // 12 KiB of headroom), so that a buffer growing from a few bytes (a string built
        // up, a `Vec` pushed to) moves at every other doubling, not at every one; below
        // 16 KiB too when it grows by less than double (a buffer growing in steps of half
        // its size moved at 10 and 23 KiB with twice, copying 7 and 15 KiB: now once, at
        // 10 KiB; a doubling caller asks for its own headroom). (Here and not in
        // `alloc::realloc`: the C API's secure sized free expects a block less than twice
        // its request, and C's `realloc` knows no old size to grow in place up to.)
        let quad = size < GROWTH_QUAD_MAX
            || (size < GROWTH_QUAD_STEPS_MAX && new_size < size.saturating_mul(2));
        let grown = if quad && new_size > size {
            new_size.max(size * 4)
        } else {
            crate::alloc::realloc_growth_size(size, new_size)
        };
        if let (Some(slot), true) = (slot, layout.align() <= WORD) {
            // SAFETY: the caller's contract; `slot` is the caller's, `grown >= new_size`.
            let q = unsafe { self.move_by_fast_paths(slot, p, layout, new_size, grown) };
            if !q.is_null() {
                return q;
            }
        }
        // SAFETY: `grown >= new_size`, at most `MEDIUM_OBJ_SIZE_MAX` above it, so it makes a
        // layout with `layout.align()` as `new_size` does (GlobalAlloc contract).
        let new = unsafe { Layout::from_size_align_unchecked(grown, layout.align()) };
        // SAFETY: a non-zero size (GlobalAlloc contract).
        let mut q = unsafe { self.alloc(new) };
        if q.is_null() && grown > new_size {
            // SAFETY: as above, without the headroom.
            q = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        }
        if !q.is_null() {
            // SAFETY: `p` holds `layout.size()` bytes and `q` at least `new_size`; they are
            // distinct blocks; `p` is given up by the caller.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}
