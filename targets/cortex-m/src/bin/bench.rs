//! Benchmark on a Cortex-M3 under QEMU: shardalloc against embedded-alloc's `LlffHeap` and
//! `TlsfHeap`, `talc` and (feature `rusty`, where its 64 KiB segment fits) `rusty_alloc`,
//! each on the same heap size, one after another in one run (each is a static used
//! once, through its `GlobalAlloc` implementation, on the same memory).
//!
//! Instructions are counted with SysTick: QEMU 7.2 does not model the DWT cycle counter
//! (DWT->CYCCNT reads 0 on lm3s6965evb), but with `-icount` every guest instruction
//! advances the virtual clock by the same amount, and SysTick counts that clock:
//! - lm3s6965evb, `-icount shift=0` (1 ns per instruction), system clock set to QEMU's
//!   fastest (RCC2 SYSDIV2 = 0: 5 ns): one tick = 5 instructions;
//! - mps2-an385 (feature `mps2`), `-icount shift=3` (8 ns per instruction), fixed 25 MHz
//!   clock (40 ns): one tick = 5 instructions.
//!
//! A single call is timed to within one tick (5 instructions); means are over thousands
//! of calls. The cost of the timing itself (two SysTick reads around an empty call) is
//! measured and subtracted. Two runs print the same figures.
//!
//! Lines `result <allocator> <metric> <value>` are for bench.sh; a table follows.
#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::RefCell;
use core::hint::black_box;
use core::ptr::{null_mut, read_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
use critical_section::Mutex;
use shardalloc_cortex_m::{exit_ok, fail, hprintln, Rng, BOARD};

// ---- sizes ----------------------------------------------------------------------------

#[cfg(not(board = "mps2-an385"))]
mod cfg {
    /// lm3s6965evb: 64 KiB of SRAM in all.
    pub const HEAP: usize = 32 * 1024;
    pub const TABLE: usize = 2048;
    pub const CLOCK: &str = "SysTick at 200 MHz under -icount shift=0 (5 instructions a tick)";
}
#[cfg(board = "mps2-an385")]
mod cfg {
    pub const HEAP: usize = 64 * 1024;
    pub const TABLE: usize = 4096;
    pub const CLOCK: &str = "SysTick at 25 MHz under -icount shift=3 (5 instructions a tick)";
}
use cfg::*;

const INSN_PER_TICK: u32 = 5;
/// alloc+free pairs of the mixed small-size workload, with this many blocks live.
const PAIRS: usize = 4000;
const PAIR_WINDOW: usize = 32;
/// Timed operations of the worst-call workload.
const WORST_OPS: usize = 1000;
const WORST_LIVE: [usize; 2] = [100, 2000];
const SEED: u32 = 0x00c0_ffee;

// ---- the allocators -------------------------------------------------------------------

/// The heap memory: every allocator gets the same bytes, one after the other.
#[repr(C, align(16))]
struct Arena([u8; HEAP]);
static mut ARENA: Arena = Arena([0; HEAP]);

/// An allocator under test: `GlobalAlloc`, plus how it is given its memory.
trait Peer: GlobalAlloc + Sync + 'static {
    const NAME: &'static str;
    /// Gives the heap `size` bytes from `start`; Err(reason) if it cannot use them.
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str>;
    /// At a fill's first null: where the heap's memory is (size-class rounding, free
    /// blocks in pages, metadata, in no block), given the bytes requested and live, for the
    /// allocators that can tell.
    fn usage_at_null(&self, _requested: usize) -> Option<[usize; 4]> {
        None
    }
}

#[cfg(feature = "shardalloc")]
static SHARD: shardalloc::embedded::Heap = shardalloc::embedded::Heap::empty();
#[cfg(feature = "shardalloc")]
impl Peer for shardalloc::embedded::Heap {
    const NAME: &'static str = "shardalloc";
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str> {
        unsafe { self.init(start, size) };
        Ok(())
    }
    fn usage_at_null(&self, requested: usize) -> Option<[usize; 4]> {
        let u = self.usage();
        // (the live blocks hold the requests rounded up to their size classes)
        Some([u.live - requested, u.free_in_pages, u.headers, u.unused])
    }
}

static LLFF: embedded_alloc::LlffHeap = embedded_alloc::LlffHeap::empty();
impl Peer for embedded_alloc::LlffHeap {
    const NAME: &'static str = "LlffHeap";
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str> {
        unsafe { self.init(start, size) };
        Ok(())
    }
}

static TLSF: embedded_alloc::TlsfHeap = embedded_alloc::TlsfHeap::empty();
impl Peer for embedded_alloc::TlsfHeap {
    const NAME: &'static str = "TlsfHeap";
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str> {
        unsafe { self.init(start, size) };
        Ok(())
    }
}

/// talc behind a critical section, as embedded-alloc wraps its heaps (talc's own
/// `TalcLock` takes a `lock_api` spin lock, which is not safe against interrupts on one
/// core).
struct TalcCs(Mutex<RefCell<talc::base::Talc<talc::source::Manual, talc::DefaultBinning>>>);
static TALC: TalcCs = TalcCs(Mutex::new(RefCell::new(talc::base::Talc::new(
    talc::source::Manual,
))));
unsafe impl GlobalAlloc for TalcCs {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        critical_section::with(|cs| unsafe { self.0.borrow_ref_mut(cs).allocate(layout) })
            .map_or(null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        critical_section::with(|cs| unsafe { self.0.borrow_ref_mut(cs).deallocate(ptr, layout) })
    }
}
impl Peer for TalcCs {
    const NAME: &'static str = "talc";
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str> {
        critical_section::with(|cs| unsafe {
            self.0.borrow_ref_mut(cs).claim(start as *mut u8, size)
        })
        .map(|_| ())
        .ok_or("talc refused the region")
    }
}

/// rusty_alloc (small profile, single-threaded) behind a critical section, for the same
/// interrupt safety as the others.
#[cfg(feature = "rusty")]
struct RustyCs;
#[cfg(feature = "rusty")]
static RUSTY: RustyCs = RustyCs;
#[cfg(feature = "rusty")]
unsafe impl GlobalAlloc for RustyCs {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        critical_section::with(|_| unsafe { rusty_alloc_api::RustyAlloc.alloc(layout) })
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        critical_section::with(|_| unsafe { rusty_alloc_api::RustyAlloc.dealloc(ptr, layout) })
    }
}
#[cfg(feature = "rusty")]
impl Peer for RustyCs {
    const NAME: &'static str = "rusty_alloc";
    unsafe fn give(&'static self, start: usize, size: usize) -> Result<(), &'static str> {
        // SAFETY: the arena is this allocator's from now on.
        let region: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(start as *mut u8, size) };
        match rusty_alloc::prim::fixed::init_region(region) {
            Ok(()) => Ok(()),
            Err(rusty_alloc::prim::fixed::FERR_GEOMETRY) => {
                Err("its smallest region is one 64 KiB segment (small profile)")
            }
            Err(_) => Err("init_region refused the region"),
        }
    }
}

/// The bench allocates only through the allocators above; anything else is a bug.
struct NoGlobal;
unsafe impl GlobalAlloc for NoGlobal {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}
#[global_allocator]
static NO_GLOBAL: NoGlobal = NoGlobal;

// ---- timing ---------------------------------------------------------------------------

const SYST_CVR: *const u32 = 0xE000_E018 as *const u32;

#[inline(always)]
fn now() -> u32 {
    // SAFETY: SysTick's current-value register, read-only here.
    unsafe { read_volatile(SYST_CVR) }
}
#[inline(always)]
fn ticks(t0: u32, t1: u32) -> u32 {
    // SysTick counts down, 24 bits
    t0.wrapping_sub(t1) & 0x00ff_ffff
}

fn timer_init(syst: &mut cortex_m::peripheral::SYST) {
    #[cfg(not(board = "mps2-an385"))]
    unsafe {
        // lm3s6965: RCC2 with USERCC2 and SYSDIV2 = 0: QEMU's fastest system clock (5 ns)
        core::ptr::write_volatile(0x400F_E070 as *mut u32, (1 << 31) | (1 << 11));
    }
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00ff_ffff);
    syst.clear_current();
    syst.enable_counter();
}

/// Ticks of one `alloc`, with the pointer.
#[inline(never)]
fn timed_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> (*mut u8, u32) {
    compiler_fence(Ordering::SeqCst);
    let t0 = now();
    let layout = black_box(layout);
    let p = unsafe { a.alloc(layout) };
    let p = black_box(p);
    let t1 = now();
    compiler_fence(Ordering::SeqCst);
    (p, ticks(t0, t1))
}
/// Ticks of one `dealloc`.
#[inline(never)]
fn timed_free<A: GlobalAlloc>(a: &A, p: *mut u8, layout: Layout) -> u32 {
    compiler_fence(Ordering::SeqCst);
    let t0 = now();
    let (p, layout) = black_box((p, layout));
    unsafe { a.dealloc(p, layout) };
    black_box(());
    let t1 = now();
    compiler_fence(Ordering::SeqCst);
    ticks(t0, t1)
}
/// The same shape around nothing: the cost of the timing itself.
#[inline(never)]
fn timed_nothing(layout: Layout) -> (*mut u8, u32) {
    compiler_fence(Ordering::SeqCst);
    let t0 = now();
    let layout = black_box(layout);
    let p = black_box(layout.size() as *mut u8);
    let t1 = now();
    compiler_fence(Ordering::SeqCst);
    (p, ticks(t0, t1))
}

/// Overhead of a timed call, in instructions x 100 (mean over calls at varying phase).
fn overhead_x100() -> u32 {
    let mut rng = Rng::new(7);
    let mut sum = 0u32;
    const N: u32 = 2000;
    for _ in 0..N {
        let l = Layout::from_size_align(rng.range(8, 128) as usize, 4).unwrap();
        // vary the phase against the 5-instruction tick
        for _ in 0..(rng.next_u32() % 5) {
            cortex_m::asm::nop();
        }
        sum += timed_nothing(l).1;
    }
    sum * INSN_PER_TICK * 100 / N
}

// ---- tables (not on any heap) ---------------------------------------------------------

static mut PTRS: [*mut u8; TABLE] = [null_mut(); TABLE];
static mut SIZES: [u16; TABLE] = [0; TABLE];

fn tables() -> (&'static mut [*mut u8; TABLE], &'static mut [u16; TABLE]) {
    // SAFETY: one user at a time (the bench is single-threaded, no interrupts).
    unsafe {
        (
            &mut *core::ptr::addr_of_mut!(PTRS),
            &mut *core::ptr::addr_of_mut!(SIZES),
        )
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 4).unwrap()
}

fn free_all<A: GlobalAlloc>(a: &A, n: usize) {
    let (ptrs, sizes) = tables();
    for i in 0..n {
        if !ptrs[i].is_null() {
            unsafe { a.dealloc(ptrs[i], layout(sizes[i] as usize)) };
            ptrs[i] = null_mut();
        }
    }
}

// ---- results --------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Worst {
    /// live blocks reached (the target, or fewer when the heap could not hold them)
    live: usize,
    alloc: u32,
    free: u32,
    /// allocations that failed during the timed churn
    failed: u32,
}

#[derive(Clone, Copy, Default)]
struct Results {
    ran: bool,
    /// instructions x 100 per alloc+free pair, per alloc, per free
    pair_x100: u32,
    alloc_x100: u32,
    free_x100: u32,
    pair_failed: u32,
    worst: [Worst; 2],
    /// live bytes (requested) reached at the first null, and blocks
    small_fill: (usize, usize),
    mixed_fill: (usize, usize),
}

fn sub_overhead(total_ticks: u64, calls: usize, ovh_x100: u32) -> u32 {
    let x100 = total_ticks * INSN_PER_TICK as u64 * 100 / calls as u64;
    x100.saturating_sub(ovh_x100 as u64) as u32
}

/// Mixed small sizes, 8..=128 bytes: `PAIRS` pairs of (free the oldest, allocate), with
/// `PAIR_WINDOW` blocks live.
fn bench_pairs<A: GlobalAlloc>(a: &A, r: &mut Results, ovh: u32) {
    let mut rng = Rng::new(SEED);
    let mut ring = [(null_mut::<u8>(), 0usize); PAIR_WINDOW];
    for slot in ring.iter_mut() {
        let size = rng.range(8, 128) as usize;
        let p = unsafe { a.alloc(layout(size)) };
        *slot = (p, size);
    }
    // a first pass untimed (warm: pages set up), then the timed one
    let mut ta = 0u64;
    let mut tf = 0u64;
    let mut failed = 0;
    for pass in 0..2 {
        for i in 0..PAIRS {
            let (old, old_size) = ring[i % PAIR_WINDOW];
            let size = rng.range(8, 128) as usize;
            if !old.is_null() {
                let t = timed_free(a, old, layout(old_size));
                if pass == 1 {
                    tf += t as u64;
                }
            }
            let (p, t) = timed_alloc(a, layout(size));
            if pass == 1 {
                ta += t as u64;
                if p.is_null() {
                    failed += 1;
                }
            }
            if !p.is_null() {
                unsafe { p.write_volatile(i as u8) };
            }
            ring[i % PAIR_WINDOW] = (p, size);
        }
    }
    for (p, size) in ring {
        if !p.is_null() {
            unsafe { a.dealloc(p, layout(size)) };
        }
    }
    r.alloc_x100 = sub_overhead(ta, PAIRS, ovh);
    r.free_x100 = sub_overhead(tf, PAIRS, ovh);
    r.pair_x100 = r.alloc_x100 + r.free_x100;
    r.pair_failed = failed;
}

/// The worst single alloc and free with `live` blocks of 8..=16 bytes live: set up
/// (with churn, so that the free space is fragmented), then `WORST_OPS` timed
/// (free a random block, allocate a random size).
fn bench_worst<A: GlobalAlloc>(a: &A, live: usize, seed: u32) -> Worst {
    let mut rng = Rng::new(seed);
    let (ptrs, sizes) = tables();
    let mut w = Worst {
        live: 0,
        ..Default::default()
    };
    let mut n = 0;
    while n < live.min(TABLE) {
        let size = rng.range(8, 16) as usize;
        let p = unsafe { a.alloc(layout(size)) };
        if p.is_null() {
            break;
        }
        ptrs[n] = p;
        sizes[n] = size as u16;
        n += 1;
    }
    if n < live {
        // could not hold them all: measure at what fits, with room for the churn
        let keep = n * 95 / 100;
        for i in keep..n {
            unsafe { a.dealloc(ptrs[i], layout(sizes[i] as usize)) };
            ptrs[i] = null_mut();
        }
        n = keep;
    }
    w.live = n;
    if n == 0 {
        return w;
    }
    for round in 0..3 * n + WORST_OPS {
        let i = rng.next_u32() as usize % n;
        let timed = round >= 3 * n;
        if !ptrs[i].is_null() {
            let t = timed_free(a, ptrs[i], layout(sizes[i] as usize));
            if timed {
                w.free = w.free.max(t);
            }
        }
        let size = rng.range(8, 16) as usize;
        let (p, t) = timed_alloc(a, layout(size));
        if timed {
            w.alloc = w.alloc.max(t);
            if p.is_null() {
                w.failed += 1;
            }
        }
        ptrs[i] = p;
        sizes[i] = size as u16;
    }
    free_all(a, n);
    w.alloc *= INSN_PER_TICK;
    w.free *= INSN_PER_TICK;
    w
}

/// Seeds of each fill: the figures are means over them (one fill's first null depends
/// on which request comes when memory runs out: a seed alone moves a figure by a few
/// percent of the heap, and a mean of 16 still moved by ~3 % of the heap for a change that
/// moved the mean of 200 by 0.3 %).
const FILL_SEEDS: u32 = 64;

/// [`bench_fill`] with `FILL_SEEDS` seeds from `seed`: the mean requested bytes live and
/// blocks at the first null; prints the mean of where the heap's memory was then (for the
/// allocators that can tell) as `usage <name> <key> ...`.
fn bench_fills<A: Peer>(
    a: &A,
    seed: u32,
    size_of: fn(&mut Rng) -> usize,
    what: &str,
    key: &str,
) -> (usize, usize) {
    let (mut bytes, mut blocks, mut parts, mut told) = (0, 0, [0usize; 4], true);
    for i in 0..FILL_SEEDS {
        let (b, n, u) = bench_fill(a, seed ^ i.wrapping_mul(0x9e37_79b9), size_of, what);
        bytes += b;
        blocks += n;
        match u {
            Some(u) => (0..4).for_each(|k| parts[k] += u[k]),
            None => told = false,
        }
    }
    let n = FILL_SEEDS as usize;
    if told {
        hprintln!(
            "usage {} {} requested {} rounding {} free_in_pages {} headers {} unused {}",
            A::NAME,
            key,
            bytes / n,
            parts[0] / n,
            parts[1] / n,
            parts[2] / n,
            parts[3] / n
        );
    }
    (bytes / n, blocks / n)
}

/// Allocates sizes from `size_of` until the first null; returns (requested bytes live,
/// blocks, where the memory is: `Peer::usage_at_null`), then frees everything.
fn bench_fill<A: Peer>(
    a: &A,
    seed: u32,
    size_of: fn(&mut Rng) -> usize,
    what: &str,
) -> (usize, usize, Option<[usize; 4]>) {
    let mut rng = Rng::new(seed);
    let (ptrs, sizes) = tables();
    let mut n = 0;
    let mut bytes = 0;
    loop {
        let size = size_of(&mut rng);
        let p = unsafe { a.alloc(layout(size)) };
        if p.is_null() {
            break;
        }
        if n == TABLE {
            fail(format_args!(
                "{what}: more than {TABLE} blocks without a null"
            ));
        }
        ptrs[n] = p;
        sizes[n] = size as u16;
        n += 1;
        bytes += size;
    }
    let usage = a.usage_at_null(bytes);
    free_all(a, n);
    (bytes, n, usage)
}
fn small_size(rng: &mut Rng) -> usize {
    rng.range(8, 32) as usize
}
fn mixed_size(rng: &mut Rng) -> usize {
    match rng.next_u32() % 20 {
        0..=13 => rng.range(8, 64) as usize,
        14..=18 => rng.range(65, 512) as usize,
        _ => rng.range(513, 2048) as usize,
    }
}

fn run<A: Peer>(a: &'static A, ovh: u32) -> Results {
    let mut r = Results::default();
    let start = core::ptr::addr_of_mut!(ARENA) as usize;
    // SAFETY: the arena is this allocator's alone from now on (the previous one is never
    // used again).
    if let Err(why) = unsafe { a.give(start, HEAP) } {
        hprintln!("result {} skipped {}", A::NAME, why);
        return r;
    }
    r.ran = true;
    bench_pairs(a, &mut r, ovh);
    for (k, &live) in WORST_LIVE.iter().enumerate() {
        r.worst[k] = bench_worst(a, live, SEED ^ live as u32);
    }
    r.small_fill = bench_fills(a, SEED ^ 0x5a5a, small_size, "small fill", "small_fill");
    r.mixed_fill = bench_fills(a, SEED ^ 0xa5a5, mixed_size, "mixed fill", "mixed_fill");
    let n = A::NAME;
    hprintln!("result {} pair_x100 {}", n, r.pair_x100);
    hprintln!("result {} alloc_x100 {}", n, r.alloc_x100);
    hprintln!("result {} free_x100 {}", n, r.free_x100);
    hprintln!("result {} pair_failed {}", n, r.pair_failed);
    for (k, w) in r.worst.iter().enumerate() {
        let tag = WORST_LIVE[k];
        hprintln!("result {} worst{}_live {}", n, tag, w.live);
        hprintln!("result {} worst{}_alloc {}", n, tag, w.alloc);
        hprintln!("result {} worst{}_free {}", n, tag, w.free);
        hprintln!("result {} worst{}_failed {}", n, tag, w.failed);
    }
    hprintln!("result {} small_fill_bytes {}", n, r.small_fill.0);
    hprintln!("result {} small_fill_blocks {}", n, r.small_fill.1);
    hprintln!("result {} mixed_fill_bytes {}", n, r.mixed_fill.0);
    hprintln!("result {} mixed_fill_blocks {}", n, r.mixed_fill.1);
    r
}

/// `v / 100` to one decimal, rounded: (integer part, tenths).
fn x100(v: u32) -> (u32, u32) {
    let tenths = (v + 5) / 10;
    (tenths / 10, tenths % 10)
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().unwrap();
    timer_init(&mut cp.SYST);
    hprintln!(
        "bench on {}: heap {} bytes for each allocator; {}",
        BOARD,
        HEAP,
        CLOCK
    );
    hprintln!("fill seeds {}", FILL_SEEDS);
    let ovh = overhead_x100();
    let (o0, o1) = x100(ovh);
    hprintln!(
        "timing overhead {}.{} instructions per timed call (subtracted)",
        o0,
        o1
    );
    #[cfg(feature = "shardalloc")]
    {
        let m = shardalloc::embedded::Heap::metadata();
        hprintln!(
            "metadata shardalloc: Heap static {} bytes, page entry {} bytes, header of an 8 KiB segment {} bytes (rounded up to 16)",
            m.heap,
            m.page,
            m.small_segment_header
        );
    }

    let mut all: [(&str, Results); 5] = [("", Results::default()); 5];
    let mut k = 0;
    #[cfg(feature = "shardalloc")]
    {
        all[k] = ("shardalloc", run(&SHARD, ovh));
        k += 1;
    }
    all[k] = ("LlffHeap", run(&LLFF, ovh));
    k += 1;
    all[k] = ("TlsfHeap", run(&TLSF, ovh));
    k += 1;
    all[k] = ("talc", run(&TALC, ovh));
    k += 1;
    #[cfg(feature = "rusty")]
    {
        all[k] = ("rusty_alloc", run(&RUSTY, ovh));
        k += 1;
    }
    #[cfg(not(feature = "rusty"))]
    hprintln!("result rusty_alloc skipped not built (feature rusty; bench.sh builds it)");

    hprintln!("");
    hprintln!(
        "| allocator | insns/pair (8-128 B) | alloc | free | worst alloc/free @{} live | worst alloc/free @{} live (live reached) | small fill: live bytes (blocks) | mixed fill: live bytes (blocks) |",
        WORST_LIVE[0],
        WORST_LIVE[1]
    );
    hprintln!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in all[..k].iter() {
        if !r.ran {
            hprintln!("| {} | skipped | | | | | | |", name);
            continue;
        }
        let (p0, p1) = x100(r.pair_x100);
        let (a0, a1) = x100(r.alloc_x100);
        let (f0, f1) = x100(r.free_x100);
        hprintln!(
            "| {} | {}.{} | {}.{} | {}.{} | {} / {} | {} / {} ({}) | {} ({}) | {} ({}) |",
            name,
            p0,
            p1,
            a0,
            a1,
            f0,
            f1,
            r.worst[0].alloc,
            r.worst[0].free,
            r.worst[1].alloc,
            r.worst[1].free,
            r.worst[1].live,
            r.small_fill.0,
            r.small_fill.1,
            r.mixed_fill.0,
            r.mixed_fill.1
        );
    }
    hprintln!("BENCH DONE");
    exit_ok()
}
