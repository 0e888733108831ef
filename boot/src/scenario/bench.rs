//! `bench`: the same workloads on shardalloc (the kernel's global allocator) and on the
//! no_std peers — `talc` 5.1 with interrupts off around every call (the interrupt-safe way
//! to use it in a kernel) and plain, `linked_list_allocator` 0.10, `buddy_system_allocator`
//! 0.13 — each peer over its own fixed region of memory from the page source, committed
//! before the bench starts, in the same boot.
//!
//! The count is the TSC: booted with `-icount shift=0,sleep=off`
//! (`targets/x86_64-qemu/bench.sh`, which adds `icount` to the command line) the TSC counts
//! guest instructions, so two boots print the same table; under plain TCG it counts
//! emulated cycles, which overweight what QEMU emulates slowly. The table gives
//! shardalloc's count per allocator call and, for each peer, peer / shardalloc (above 1:
//! shardalloc needs fewer). After a warm-up run, each workload runs twice on each
//! allocator: once counted from start to end (the second table: the workload's own
//! instructions included), once with every allocator call counted on its own
//! ([`Counted`], the same wrapper for every allocator; the first table).
//!
//! Workloads that run on every CPU at once (cross-CPU frees, buffers allocated in an
//! interrupt handler and freed on another CPU) run on QEMU's single-threaded TCG, whose
//! vCPUs take turns; every allocator runs under the same turns. A spin-wait (`pause`)
//! ends a vCPU's turn in QEMU, so waiting for a lock held by a vCPU that is not running
//! costs the waiter a few instructions per turn, not a whole turn. A call during which
//! another vCPU started a call is left out of the first table (see [`inside`]).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;
use shardalloc::PageSource;

use super::check::{fill, verify, Block};
use crate::cpu::MAX_CPUS;
use crate::rng::Rng;
use crate::{apic, heap, idt, mem, smp};

type Talc = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Manual>;

static LINKED_LIST: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
static TALC: Talc = Talc::new(talc::source::Manual);
static BUDDY: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::new();

/// A peer made safe against interrupt handlers that allocate, as a kernel must use it
/// (and as shardalloc's `PerCpuAlloc` is without masking on its fast paths): interrupts
/// off around every call. The plain peers take their spin lock only, which deadlocks if
/// an interrupt handler on the same CPU allocates while the lock is held.
struct IrqSafe<A: 'static>(&'static A);

// SAFETY: forwards to the inner allocator, with interrupts off around each call.
unsafe impl<A: GlobalAlloc> GlobalAlloc for IrqSafe<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        x86_64::instructions::interrupts::without_interrupts(|| unsafe { self.0.alloc(l) })
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        x86_64::instructions::interrupts::without_interrupts(|| unsafe { self.0.dealloc(p, l) })
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        x86_64::instructions::interrupts::without_interrupts(|| unsafe { self.0.realloc(p, l, n) })
    }
}

static TALC_IRQ: IrqSafe<Talc> = IrqSafe(&TALC);

/// The count (TSC) inside the counted allocator calls of the current workload, less
/// `SPAN_EMPTY` per call: what [`Counted`] measured.
static INSIDE: AtomicU64 = AtomicU64::new(0);
/// Allocator calls counted into `INSIDE`.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Allocator calls left out: another vCPU ran while they did (see [`inside`]).
static SKIPPED: AtomicU64 = AtomicU64::new(0);
/// The CPU that last started a counted call.
static RUNNING: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether [`allocator`] hands out the counted allocators.
static COUNTING: AtomicBool = AtomicBool::new(false);
/// The count of an empty span (two TSC reads with nothing between), measured at the start.
static SPAN_EMPTY: AtomicU64 = AtomicU64::new(0);
/// Buckets of the counted calls by their count (`verbose`: where a workload's instructions
/// go): bucket `k` holds the calls that counted `[2^k, 2^(k+1))` (bucket 0 also 0), as the
/// number of calls and their sum.
static HIST_CALLS: [AtomicU64; HIST_BUCKETS] = [const { AtomicU64::new(0) }; HIST_BUCKETS];
static HIST_SUM: [AtomicU64; HIST_BUCKETS] = [const { AtomicU64::new(0) }; HIST_BUCKETS];
const HIST_BUCKETS: usize = 24;

/// The count of running `f`: from a TSC read just before it to one just after.
#[inline(always)]
fn span<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let t0 = apic::rdtsc();
    let r = f();
    (r, apic::rdtsc() - t0)
}

/// Adds the span of one allocator call to `INSIDE`, unless another vCPU ran meanwhile.
///
/// On single-threaded TCG the vCPUs take turns and the TSC is the machine's, so a call
/// during which this vCPU lost its turn would be charged the other vCPUs' instructions.
/// Every counted call first writes its CPU into `RUNNING`; when the call returns and finds
/// another CPU there, another vCPU started a call meanwhile, and the call is left out
/// (`SKIPPED`). (A vCPU that got the turn and gave it back before starting a call, as a
/// spin-wait's `pause` does, adds its few instructions.) On one CPU nothing is left out.
#[inline(always)]
fn inside<R>(f: impl FnOnce() -> R) -> R {
    let cpu = crate::cpu::current();
    RUNNING.store(cpu, Ordering::SeqCst);
    let (r, t) = span(f);
    if RUNNING.load(Ordering::SeqCst) == cpu {
        let t = t.saturating_sub(SPAN_EMPTY.load(Ordering::Relaxed));
        INSIDE.fetch_add(t, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        let k = ((u64::BITS - t.leading_zeros()) as usize)
            .saturating_sub(1)
            .min(HIST_BUCKETS - 1);
        HIST_CALLS[k].fetch_add(1, Ordering::Relaxed);
        HIST_SUM[k].fetch_add(t, Ordering::Relaxed);
    } else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Markers for an instruction profile of shardalloc's counted runs: a QEMU TCG plugin that
/// counts the instructions of every translation block only between a call of
/// `bench_profile_on` and one of `bench_profile_off` (their addresses from `nm`) sees
/// what shardalloc's counted calls ran, function by function
/// (`targets/x86_64-qemu/profile.sh`).
#[inline(never)]
#[no_mangle]
extern "C" fn bench_profile_on() {
    core::hint::black_box(&PROFILE_MARK).store(1, Ordering::SeqCst);
}
#[inline(never)]
#[no_mangle]
extern "C" fn bench_profile_off() {
    core::hint::black_box(&PROFILE_MARK).store(2, Ordering::SeqCst);
}
static PROFILE_MARK: AtomicU64 = AtomicU64::new(0);
fn profile_on() {
    bench_profile_on()
}
fn profile_off() {
    bench_profile_off()
}

/// An allocator whose calls are counted into `INSIDE`: the instructions inside
/// `alloc`/`dealloc`/`realloc` (the dynamic call and return included), not the workload's
/// own (its random numbers, its writes, its content checks). The same wrapper around
/// every allocator.
struct Counted(&'static (dyn GlobalAlloc + Sync));

// SAFETY: forwards to the inner allocator.
unsafe impl GlobalAlloc for Counted {
    #[inline(always)]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        inside(|| unsafe { self.0.alloc(l) })
    }
    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        inside(|| unsafe { self.0.dealloc(p, l) })
    }
    #[inline(always)]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        inside(|| unsafe { self.0.realloc(p, l, n) })
    }
}

const NAMES: [&str; 5] = ["shardalloc", "talc+irqoff", "talc", "linked_list", "buddy"];
const PEERS: usize = NAMES.len();
const SHARDALLOC: usize = 0;
const TALC_IRQOFF: usize = 1;
const TALC_PLAIN: usize = 2;
const LINKED: usize = 3;

/// The allocators wrapped in [`Counted`], in the order of `NAMES`.
static COUNTED: [Counted; PEERS] = [
    Counted(&heap::ALLOC),
    Counted(&TALC_IRQ),
    Counted(&TALC),
    Counted(&LINKED_LIST),
    Counted(&BUDDY),
];

/// Allocator `i` of `NAMES`, counted ([`Counted`]) while `COUNTING` is set.
fn allocator(i: usize) -> &'static dyn GlobalAlloc {
    if COUNTING.load(Ordering::Relaxed) {
        return &COUNTED[i];
    }
    match i {
        SHARDALLOC => heap::global(),
        TALC_IRQOFF => &TALC_IRQ,
        TALC_PLAIN => &TALC,
        LINKED => &LINKED_LIST,
        _ => &BUDDY,
    }
}

/// The allocator the current (multi-CPU) workload runs on.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
/// Largest block of `mixed`.
static LARGE: AtomicUsize = AtomicUsize::new(0);
/// Live objects of `many live objects`.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Final size of `Vec growth`.
static VEC_MAX: AtomicUsize = AtomicUsize::new(0);
/// Slots of `page buffers`.
static PAGE_SLOTS: AtomicUsize = AtomicUsize::new(0);
/// Allocator calls of the last multi-CPU workload, summed over the CPUs.
static MULTI_OPS: AtomicUsize = AtomicUsize::new(0);

/// A workload: runs on `a` and returns how many allocator calls it made.
type Workload = fn(&dyn GlobalAlloc, &mut Rng) -> usize;

const WORKLOADS: [(&str, Workload); 9] = [
    ("alloc-free pairs, 16-256 B", pairs),
    ("churn, 512 live, 8 B-2 KiB", churn),
    ("realloc growth 8 B to 16 KiB", growth),
    ("mixed sizes, content checks", mixed),
    ("many live objects of 4 sizes (slab)", many_live),
    ("page buffers 4-64 KiB, page-aligned", page_buffers),
    ("Vec growth by doubling", vec_growth),
    ("all CPUs, cross-CPU free", |_, _| cross_cpu()),
    ("IRQ allocates, other CPU frees", |_, _| irq_network()),
];

pub fn run(args: &super::Args) {
    SEED.store(args.seed, Ordering::SeqCst);
    static INIT: spin::Once<usize> = spin::Once::new();
    let region = *INIT.call_once(give_peers_memory);
    LARGE.store(
        super::stress::largest_block()
            .min(64 << 10)
            .min(region / 64),
        Ordering::SeqCst,
    );
    // ~480 bytes an object on average: a third of the region; fewer without `icount` (the
    // tests' boots, where linked_list's linear searches would take minutes)
    LIVE.store(
        (region / 1440).min(if args.icount { 20_000 } else { 4_000 }),
        Ordering::SeqCst,
    );
    // the largest power of two up to a quarter of the region, at most 8 MiB
    VEC_MAX.store(
        (1usize << (usize::BITS - 1 - (region / 4).leading_zeros())).min(if args.icount {
            8 << 20
        } else {
            4 << 20
        }),
        Ordering::SeqCst,
    );
    // a buffer is 5.75 pages on average, a slot is full half the time: a third of the region
    PAGE_SLOTS.store((region / (72 << 10)).clamp(8, 128), Ordering::SeqCst);
    let unit = if args.icount {
        "instructions"
    } else {
        "cycles"
    };
    println!(
        "bench: peers get {} KiB each; {} CPUs; largest block {} KiB; {} live objects; Vec to {} KiB; counting {unit}{}",
        region >> 10,
        smp::online(),
        LARGE.load(Ordering::SeqCst) >> 10,
        LIVE.load(Ordering::SeqCst),
        VEC_MAX.load(Ordering::SeqCst) >> 10,
        if args.icount { " (-icount: the TSC counts guest instructions)" } else { " (TSC)" }
    );
    if args.verbose {
        calls(args.icount);
        source_calls(args.icount);
    }
    // two TSC reads with nothing between: subtracted from every counted call
    let empty = (0..16).map(|_| span(|| ()).1).min().unwrap_or(0);
    SPAN_EMPTY.store(empty, Ordering::SeqCst);
    // per call: inside[w][a] in the calls (counted ones), whole[w][a] over the workload
    let mut inside = [[0f64; PEERS]; WORKLOADS.len()];
    let mut whole = [[0f64; PEERS]; WORKLOADS.len()];
    let mut ops = [0usize; WORKLOADS.len()];
    let mut skipped = [[0u64; PEERS]; WORKLOADS.len()];
    for (w, &(name, f)) in WORKLOADS.iter().enumerate() {
        if args
            .only
            .is_some_and(|o| !o.split(',').any(|o| name.contains(o)))
        {
            continue; // `ops[w]` stays 0: the tables leave it out
        }
        for a in 0..PEERS {
            CURRENT.store(a, Ordering::SeqCst);
            let rng = || Rng::new(args.seed ^ w as u64);
            // A warm-up run first (uncounted): the peers' regions are committed up front,
            // shardalloc commits as it goes; the counted runs start from a warm heap.
            f(allocator(a), &mut rng());
            let s0 = mem::SOURCE.stats();
            // the whole workload, then the same run with its calls counted
            let (n, t) = span(|| f(allocator(a), &mut rng()));
            whole[w][a] = t as f64 / n.max(1) as f64;
            INSIDE.store(0, Ordering::SeqCst);
            CALLS.store(0, Ordering::SeqCst);
            SKIPPED.store(0, Ordering::SeqCst);
            for k in 0..HIST_BUCKETS {
                HIST_CALLS[k].store(0, Ordering::SeqCst);
                HIST_SUM[k].store(0, Ordering::SeqCst);
            }
            COUNTING.store(true, Ordering::SeqCst);
            if a == SHARDALLOC {
                profile_on();
            }
            let n2 = f(allocator(a), &mut rng());
            if a == SHARDALLOC {
                profile_off();
            }
            COUNTING.store(false, Ordering::SeqCst);
            assert_eq!(n, n2, "bench: a workload made other calls when counted");
            let counted = CALLS.load(Ordering::SeqCst);
            skipped[w][a] = SKIPPED.load(Ordering::SeqCst);
            assert_eq!(
                counted + skipped[w][a],
                n as u64,
                "bench: {}: calls counted + left out != calls made",
                WORKLOADS[w].0
            );
            inside[w][a] = INSIDE.load(Ordering::SeqCst) as f64 / counted.max(1) as f64;
            if a == SHARDALLOC {
                ops[w] = n.max(1);
            }
            if args.verbose && (a == SHARDALLOC || a == TALC_IRQOFF) {
                // where the instructions go: calls by their count, as calls and share
                print!("bench: {}: {}: calls by count:", WORKLOADS[w].0, NAMES[a]);
                let total = INSIDE.load(Ordering::SeqCst).max(1);
                for k in 0..HIST_BUCKETS {
                    let c = HIST_CALLS[k].load(Ordering::SeqCst);
                    if c > 0 {
                        let sum = HIST_SUM[k].load(Ordering::SeqCst);
                        print!(
                            " [{}..{}) {} calls, {:.1} each, {}%;",
                            if k == 0 { 0 } else { 1u64 << k },
                            1u64 << (k + 1),
                            c,
                            sum as f64 / c as f64,
                            sum * 100 / total
                        );
                    }
                }
                println!();
            }
            let s1 = mem::SOURCE.stats();
            if a == SHARDALLOC && args.verbose {
                println!(
                    "bench: {}: page source, 2 runs: {} commits, {} decommits ({} lazy), {} TLB shootdowns, {} kept regions reused, {} lazy granules reused",
                    WORKLOADS[w].0,
                    s1.commits - s0.commits,
                    s1.decommits - s0.decommits,
                    s1.lazy_decommits - s0.lazy_decommits,
                    s1.shootdowns - s0.shootdowns,
                    s1.kept_reused - s0.kept_reused,
                    s1.lazy_reused - s0.lazy_reused
                );
            }
        }
    }
    print_table(&inside, &whole, &ops, unit, empty, &skipped);
}

/// The count of single calls: 1000 allocations of 64 bytes, then their frees, then
/// 1000 alloc-free pairs, on each allocator (the loop's own count included: a few).
fn calls(icount: bool) {
    let mut ptrs = [ptr::null_mut::<u8>(); 1000];
    let l = layout(64);
    for a in 0..PEERS {
        let al = allocator(a);
        let mut c = [0u64; 3];
        for _ in 0..2 {
            // SAFETY: blocks freed once with their layout.
            unsafe {
                let t0 = apic::rdtsc();
                for p in ptrs.iter_mut() {
                    *p = al.alloc(l);
                }
                let t1 = apic::rdtsc();
                for &p in ptrs.iter() {
                    al.dealloc(p, l);
                }
                let t2 = apic::rdtsc();
                for _ in 0..1000 {
                    let p = al.alloc(l);
                    al.dealloc(core::hint::black_box(p), l);
                }
                let t3 = apic::rdtsc();
                c = [t1 - t0, t2 - t1, t3 - t2];
            }
        }
        println!(
            "bench: {}: {} per alloc {:.1}, per free {:.1}, per pair {:.1}",
            NAMES[a],
            if icount { "instructions" } else { "cycles" },
            c[0] as f64 / 1000.0,
            c[1] as f64 / 1000.0,
            c[2] as f64 / 1000.0
        );
    }
}

/// The count of the page source's own calls, per 4 KiB page: mapping 2 MiB (512 pages)
/// with one `commit`, decommitting it with one `decommit` (lazy: the pages stay mapped)
/// and unmapping it (`release_lazy`: frames given back, TLBs flushed), twice, the second
/// time counted.
fn source_calls(icount: bool) {
    const SIZE: usize = 2 << 20;
    // SAFETY: a page-multiple size and a power-of-two alignment; the region is only
    // committed, decommitted and freed here.
    let Some(r) = (unsafe { mem::SOURCE.alloc(SIZE, 4096, false) }) else {
        println!("bench: page source: no 2 MiB region to count its calls");
        return;
    };
    let mut c = [0u64; 3];
    for _ in 0..2 {
        let (free0, mapped0) = (mem::PHYS.free_frames(), mem::SOURCE.stats().mapped_pages);
        let t0 = apic::rdtsc();
        // SAFETY: the range is the region's own, which nothing else uses.
        let ok = unsafe { mem::SOURCE.commit(r.ptr, SIZE) }.is_ok();
        let t1 = apic::rdtsc();
        assert!(ok, "bench: the page source could not map 2 MiB");
        let mapped1 = mem::SOURCE.stats().mapped_pages;
        // every page is mapped and written (the write faults if it is not)
        for page in (0..SIZE).step_by(4096) {
            // SAFETY: inside the committed region, which nothing else uses.
            unsafe { r.ptr.as_ptr().add(page).write_volatile(1) };
        }
        let t2 = apic::rdtsc();
        // SAFETY: as above; nothing is live in the range.
        unsafe { mem::SOURCE.decommit(r.ptr, SIZE) };
        let t3 = apic::rdtsc();
        let lazy = mem::SOURCE.stats().lazy;
        mem::SOURCE.release_lazy();
        let t4 = apic::rdtsc();
        c = [t1 - t0, t3 - t2, t4 - t3];
        assert!(
            lazy >= SIZE,
            "bench: the page source's decommit of 2 MiB kept {lazy} bytes mapped (lazy), not all"
        );
        // (the page tables the commit may have added stay: at most a few frames)
        let (free1, mapped2) = (mem::PHYS.free_frames(), mem::SOURCE.stats().mapped_pages);
        assert!(
            mapped1 == mapped0 + SIZE / 4096 && mapped2 == mapped0 && free1 + 4 >= free0,
            "bench: the page source's commit/decommit of 2 MiB: mapped pages {mapped0} -> {mapped1} -> {mapped2}, free frames {free0} -> {free1}"
        );
    }
    // SAFETY: the region came from `alloc` with this size, and is no longer used.
    unsafe { mem::SOURCE.free(r.ptr, SIZE) };
    println!(
        "bench: page source: {} per 4 KiB page: commit {:.1}, decommit {:.1} (lazy: kept mapped), unmap {:.1} (release_lazy) (2 MiB at once)",
        if icount { "instructions" } else { "cycles" },
        c[0] as f64 / 512.0,
        c[1] as f64 / 512.0,
        c[2] as f64 / 512.0
    );
}

/// Count per call of each workload (rows) and allocator (columns, as `NAMES`).
type PerCall = [[f64; PEERS]; WORKLOADS.len()];

/// The geometric mean over the workloads that ran (`ops[w] > 0`) of peer `a` / shardalloc.
fn geo_mean(per: &PerCall, ops: &[usize], a: usize) -> f64 {
    let mut l = 0.0f64;
    let mut n = 0;
    for (c, _) in per.iter().zip(ops).filter(|(_, &o)| o > 0) {
        l += ln(c[a] / c[SHARDALLOC]);
        n += 1;
    }
    exp(l / n.max(1) as f64)
}

/// One table: shardalloc's count per call and peer / shardalloc for each workload.
fn print_one(per: &PerCall, ops: &[usize], unit: &str, what: &str) {
    print!("| workload | calls | shardalloc, {unit} {what} |");
    for name in &NAMES[1..] {
        print!(" {name} |");
    }
    println!();
    print!("|---|---:|---:|");
    for _ in 1..PEERS {
        print!("---:|");
    }
    println!();
    for w in (0..per.len()).filter(|&w| ops[w] > 0) {
        print!(
            "| {} | {} | {:.1} |",
            WORKLOADS[w].0, ops[w], per[w][SHARDALLOC]
        );
        for a in 1..PEERS {
            print!(" {:.2} |", per[w][a] / per[w][SHARDALLOC]);
        }
        println!();
    }
    print!(
        "| **geometric mean over the {} workloads** | | |",
        ops.iter().filter(|&&o| o > 0).count()
    );
    for a in 1..PEERS {
        print!(" **{:.2}** |", geo_mean(per, ops, a));
    }
    println!();
}

fn print_table(
    inside: &PerCall,
    whole: &PerCall,
    ops: &[usize],
    unit: &str,
    empty: u64,
    skipped: &[[u64; PEERS]; WORKLOADS.len()],
) {
    let ratio = |w: usize, a: usize| inside[w][a] / inside[w][SHARDALLOC];
    let geo = |a: usize| geo_mean(inside, ops, a);
    println!("bench: table begin");
    print_one(inside, ops, unit, "per call");
    println!("bench: table end");
    println!("bench: whole begin");
    print_one(whole, ops, unit, "per call, the workload's own included");
    println!("bench: whole end");
    println!(
        "bench: an empty span (two TSC reads) counts {empty}, subtracted from every counted call"
    );
    for (w, s) in skipped.iter().enumerate() {
        if s.iter().any(|&n| n > 0) {
            print!("bench: left out: {}:", WORKLOADS[w].0);
            for a in 0..PEERS {
                print!(" {} {} of {},", NAMES[a], s[a], ops[w]);
            }
            println!();
        }
    }
    // The targets of issue 14 (peer / shardalloc: how many times fewer shardalloc needs).
    let many = WORKLOADS
        .iter()
        .position(|(n, _)| n.starts_with("many live"))
        .unwrap();
    let worst = (0..inside.len())
        .filter(|&w| ops[w] > 0)
        .map(|w| (ratio(w, TALC_IRQOFF), WORKLOADS[w].0))
        .fold((f64::MAX, ""), |a, b| if b.0 < a.0 { b } else { a });
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("bench: targets begin");
    for (peer, want) in [(TALC_IRQOFF, 2.0), (TALC_PLAIN, 1.5), (LINKED, 3.0)] {
        let g = geo(peer);
        println!(
            "- geometric mean, {} / shardalloc = {g:.2} (target ≥ {want}): {}",
            NAMES[peer],
            met(g >= want)
        );
    }
    if ops[many] > 0 {
        let m = ratio(many, LINKED);
        println!(
            "- many live objects, linked_list / shardalloc = {m:.2} (target ≥ 10): {}",
            met(m >= 10.0)
        );
    }
    println!(
        "- lowest talc+irqoff / shardalloc over the workloads = {:.2} ({}) (target ≥ 1): {}",
        worst.0,
        worst.1,
        met(worst.0 >= 1.0)
    );
    println!("bench: targets end");
}

/// Gives each peer its own region from the page source (committed, never freed).
fn give_peers_memory() -> usize {
    let free = mem::PHYS.free_frames() * 4096;
    let size = (free / 8).clamp(2 << 20, 32 << 20) & !0xFFFF;
    let take = || {
        // SAFETY: a non-zero multiple of the page size, page-aligned.
        let r =
            unsafe { mem::SOURCE.alloc(size, 4096, true) }.expect("bench: no memory for the peers");
        r.ptr.as_ptr()
    };
    let (a, b, c) = (take(), take(), take());
    // SAFETY: each region is committed, `size` bytes long, used by this peer only, forever.
    unsafe {
        LINKED_LIST.lock().init(a, size);
        TALC.lock().claim(b, size).expect("talc claim");
        BUDDY.lock().init(c as usize, size);
    }
    size
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// 50 000 times: allocate 16..256 bytes, touch, free.
fn pairs(a: &dyn GlobalAlloc, rng: &mut Rng) -> usize {
    for _ in 0..50_000 {
        let l = layout(16 + rng.below(241) as usize);
        // SAFETY: non-zero size; freed with its layout.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_volatile(1);
            a.dealloc(p, l);
        }
    }
    100_000
}

/// 50 000 random alloc/free operations over 512 slots, sizes 8..2048 (mostly small).
fn churn(a: &dyn GlobalAlloc, rng: &mut Rng) -> usize {
    let mut ops = 0;
    let mut slots: Vec<(*mut u8, Layout)> = Vec::with_capacity(512);
    slots.resize(512, (ptr::null_mut(), layout(8)));
    for _ in 0..50_000 {
        ops += 1;
        let i = rng.below(512) as usize;
        let (p, l) = slots[i];
        // SAFETY: a non-null slot holds a live block with its layout.
        unsafe {
            if p.is_null() {
                let l = layout(rng.size(8, 2048));
                let p = a.alloc(l);
                assert!(!p.is_null());
                p.write_volatile(1);
                slots[i] = (p, l);
            } else {
                a.dealloc(p, l);
                slots[i] = (ptr::null_mut(), l);
            }
        }
    }
    for &(p, l) in &slots {
        if !p.is_null() {
            ops += 1;
            // SAFETY: live block with its layout.
            unsafe { a.dealloc(p, l) };
        }
    }
    ops
}

/// 300 buffers grown by realloc from 8 bytes to 16 KiB, 64 live at a time.
fn growth(a: &dyn GlobalAlloc, _rng: &mut Rng) -> usize {
    let mut ops = 0;
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(64);
    for k in 0..300 {
        let mut l = layout(8);
        // SAFETY: every block is used within its size and freed once with its layout.
        unsafe {
            let mut p = a.alloc(l);
            assert!(!p.is_null());
            p.write(k as u8);
            while l.size() < 16 << 10 {
                let new = l.size() + l.size() / 2 + 8;
                p = a.realloc(p, l, new);
                ops += 1;
                assert!(!p.is_null());
                assert_eq!(p.read(), k as u8, "realloc lost data");
                l = layout(new);
            }
            if live.len() == 64 {
                let (q, ql) = live.swap_remove(k % 64);
                a.dealloc(q, ql);
            }
            live.push((p, l));
        }
    }
    for (p, l) in live {
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(p, l) };
    }
    ops + 600
}

/// 20 000 random alloc/free/realloc over 256 slots with content checks, sizes up to
/// `LARGE`.
fn mixed(a: &dyn GlobalAlloc, rng: &mut Rng) -> usize {
    let large = LARGE.load(Ordering::SeqCst);
    let mut slots: Vec<Option<Block>> = (0..256).map(|_| None).collect();
    let mut tag = 0;
    for _ in 0..20_000 {
        let i = rng.below(256) as usize;
        // SAFETY: blocks in slots are live, filled with their tag, freed once.
        unsafe {
            match slots[i].take() {
                None => {
                    let l = super::stress::random_layout(rng, large);
                    let l = Layout::from_size_align(l.size(), l.align().min(64)).unwrap();
                    let p = a.alloc(l);
                    assert!(
                        !p.is_null(),
                        "bench mixed: alloc({l:?}) failed on {}",
                        NAMES[CURRENT.load(Ordering::SeqCst)]
                    );
                    tag += 1;
                    fill(p, l.size(), tag);
                    slots[i] = Some(Block {
                        ptr: p,
                        layout: l,
                        tag,
                    });
                }
                Some(b) if rng.below(3) == 0 => {
                    let new = super::stress::random_layout(rng, large).size();
                    let q = a.realloc(b.ptr, b.layout, new);
                    assert!(!q.is_null(), "bench mixed: realloc failed");
                    tag += 1;
                    fill(q, new, tag);
                    slots[i] = Some(Block {
                        ptr: q,
                        layout: Layout::from_size_align(new, b.layout.align()).unwrap(),
                        tag,
                    });
                }
                Some(b) => {
                    verify(b.ptr, b.layout.size().min(64), b.tag, "bench mixed");
                    a.dealloc(b.ptr, b.layout);
                }
            }
        }
    }
    let mut ops = 20_000;
    for b in slots.into_iter().flatten() {
        ops += 1;
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
    ops
}

/// A kernel's slab caches: `LIVE` objects of four sizes (inodes, dentries, sockets,
/// tasks) allocated, then each in turn replaced by a fresh object twice over (in random
/// order), then all freed.
fn many_live(a: &dyn GlobalAlloc, rng: &mut Rng) -> usize {
    const SIZES: [usize; 4] = [64, 192, 640, 1024];
    let n = LIVE.load(Ordering::SeqCst);
    let mut objs: Vec<(*mut u8, usize)> = Vec::with_capacity(n);
    let mut ops = 0;
    // SAFETY: every block is touched within its size and freed once with its layout.
    unsafe {
        for i in 0..n {
            let size = SIZES[i % 4];
            let p = a.alloc(layout(size));
            assert!(
                !p.is_null(),
                "bench many-live: {} failed allocation {i} of {n}",
                NAMES[CURRENT.load(Ordering::SeqCst)]
            );
            p.write_volatile(1);
            objs.push((p, size));
        }
        for _ in 0..2 * n {
            let i = rng.below(n as u64) as usize;
            let (p, size) = objs[i];
            a.dealloc(p, layout(size));
            let size = SIZES[rng.below(4) as usize];
            let q = a.alloc(layout(size));
            assert!(!q.is_null(), "bench many-live: alloc failed");
            q.write_volatile(1);
            objs[i] = (q, size);
        }
        for &(p, size) in &objs {
            a.dealloc(p, layout(size));
        }
        ops += 6 * n;
    }
    ops
}

/// Page-aligned buffers of 1, 2, 4 and 16 pages: 20 000 random alloc/free over
/// `PAGE_SLOTS` (128 with enough memory) slots, the first word of each page written.
fn page_buffers(a: &dyn GlobalAlloc, rng: &mut Rng) -> usize {
    const PAGES: [usize; 4] = [1, 2, 4, 16];
    let n = PAGE_SLOTS.load(Ordering::SeqCst);
    let mut slots: Vec<Option<(*mut u8, Layout)>> = (0..n).map(|_| None).collect();
    let mut ops = 0;
    for _ in 0..20_000 {
        let i = rng.below(n as u64) as usize;
        ops += 1;
        // SAFETY: every block is touched within its size and freed once with its layout.
        unsafe {
            match slots[i].take() {
                Some((p, l)) => a.dealloc(p, l),
                None => {
                    let pages = PAGES[rng.below(4) as usize];
                    let l = Layout::from_size_align(pages * 4096, 4096).unwrap();
                    let p = a.alloc(l);
                    assert!(
                        !p.is_null(),
                        "bench page buffers: {} failed to allocate {l:?}",
                        NAMES[CURRENT.load(Ordering::SeqCst)]
                    );
                    for k in 0..pages {
                        p.add(k * 4096).write_volatile(1);
                    }
                    slots[i] = Some((p, l));
                }
            }
        }
    }
    for (p, l) in slots.into_iter().flatten() {
        ops += 1;
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(p, l) };
    }
    ops
}

/// A `Vec<u8>` filled to `VEC_MAX` bytes, its capacity doubled by `realloc` from 64 bytes
/// as Rust's `Vec` does (every new byte written), then dropped; three times.
fn vec_growth(a: &dyn GlobalAlloc, _rng: &mut Rng) -> usize {
    let max = VEC_MAX.load(Ordering::SeqCst);
    let mut ops = 0;
    for round in 0..3u8 {
        // SAFETY: the buffer is used within its capacity and freed once with its layout.
        unsafe {
            let mut cap = 64;
            let mut p = a.alloc(layout(cap));
            assert!(!p.is_null());
            ptr::write_bytes(p, round, cap);
            while cap < max {
                p = a.realloc(p, layout(cap), cap * 2);
                assert!(
                    !p.is_null(),
                    "bench Vec growth: {} failed to grow to {} bytes",
                    NAMES[CURRENT.load(Ordering::SeqCst)],
                    cap * 2
                );
                assert_eq!(p.add(cap - 1).read(), round, "realloc lost data");
                ptr::write_bytes(p.add(cap), round, cap);
                cap *= 2;
                ops += 1;
            }
            a.dealloc(p, layout(cap));
            ops += 2;
        }
    }
    ops
}

static MAILBOX: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
/// Blocks posted to each mailbox and not yet taken: producers wait (draining their own
/// mailbox meanwhile) while their neighbour has more than `MAX_PENDING`, so the live set
/// stays bounded however the CPUs are scheduled.
static PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
const MAX_PENDING: usize = 256;
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Posts block `p` of `size` bytes to `cpu`'s mailbox (word 0 links the next, word 1
/// holds the size).
///
/// # Safety
/// `p` is a live block of at least 16 bytes, given up to the receiver.
unsafe fn post(cpu: usize, p: *mut u8, size: usize) {
    PENDING[cpu].fetch_add(1, Ordering::SeqCst);
    let to = &MAILBOX[cpu];
    // SAFETY: the block is ours until the CAS publishes it.
    unsafe {
        (p as *mut usize).add(1).write(size);
        let mut head = to.load(Ordering::Relaxed);
        loop {
            (p as *mut *mut u8).write(head);
            match to.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
}

/// Frees every block in `cpu`'s mailbox; returns how many.
fn drain(a: &dyn GlobalAlloc, cpu: usize) -> usize {
    let mut p = MAILBOX[cpu].swap(ptr::null_mut(), Ordering::Acquire);
    let mut taken = 0;
    while !p.is_null() {
        taken += 1;
        // SAFETY: mailbox blocks are live, complete (Release/Acquire), ours once taken;
        // word 0 links the next, word 1 holds the size.
        unsafe {
            let next = (p as *const *mut u8).read();
            let size = (p as *const usize).add(1).read();
            a.dealloc(p, layout(size));
            p = next;
        }
    }
    PENDING[cpu].fetch_sub(taken, Ordering::SeqCst);
    taken
}

/// Every CPU at once: allocate 16..1024 bytes, post to the next CPU, which frees them.
fn cross_cpu() -> usize {
    DONE.store(0, Ordering::SeqCst);
    MULTI_OPS.store(0, Ordering::SeqCst);
    smp::run_on_all(cross_cpu_worker);
    MULTI_OPS.load(Ordering::SeqCst)
}

fn cross_cpu_worker(cpu: usize) {
    let a = allocator(CURRENT.load(Ordering::SeqCst));
    let n = smp::online();
    let next = (cpu + 1) % n;
    let mut rng = Rng::new(SEED.load(Ordering::SeqCst) ^ 0xB00 ^ cpu as u64);
    let mut ops = 0;
    for round in 0..400 {
        for _ in 0..32 {
            let size = rng.size(16, 1024);
            while PENDING[next].load(Ordering::SeqCst) > MAX_PENDING {
                ops += drain(a, cpu);
                core::hint::spin_loop();
            }
            // SAFETY: non-zero size; the block is posted whole, then freed by the receiver.
            unsafe {
                let p = a.alloc(layout(size));
                assert!(
                    !p.is_null(),
                    "bench cross-cpu: {} failed to allocate {size} bytes",
                    NAMES[CURRENT.load(Ordering::SeqCst)]
                );
                ops += 1;
                post(next, p, size);
            }
        }
        if round % 4 == 3 {
            ops += drain(a, cpu);
        }
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    while DONE.load(Ordering::SeqCst) < n {
        ops += drain(a, cpu);
        core::hint::spin_loop();
    }
    ops += drain(a, cpu);
    MULTI_OPS.fetch_add(ops, Ordering::SeqCst);
}

/// Packets of the network-style workload.
const PACKETS: usize = 20_000;
/// The interrupt handler's generator (touched only in the handler, on the BSP).
static IRQ_RNG: AtomicU64 = AtomicU64::new(0);

/// A network card's path: the receive interrupt allocates a buffer (64..1514 bytes) and a
/// 64-byte descriptor and hands both to a task on another CPU, which frees them. The BSP's
/// main flow raises the interrupt (a self-IPI) `PACKETS` times; the other CPUs drain
/// (with one CPU, the BSP drains between interrupts).
fn irq_network() -> usize {
    DONE.store(0, Ordering::SeqCst);
    MULTI_OPS.store(0, Ordering::SeqCst);
    IRQ_RNG.store(SEED.load(Ordering::SeqCst) ^ 0x4E7, Ordering::SeqCst);
    idt::set_soft_hook(idt::VEC_SOFT, Some(on_packet));
    smp::run_on_all(irq_network_worker);
    idt::set_soft_hook(idt::VEC_SOFT, None);
    MULTI_OPS.load(Ordering::SeqCst) + 4 * PACKETS
}

/// The receive interrupt (on the BSP).
fn on_packet() {
    let a = allocator(CURRENT.load(Ordering::Relaxed));
    let to = if smp::online() > 1 { 1 } else { 0 };
    let mut rng = Rng::new(IRQ_RNG.fetch_add(1, Ordering::Relaxed));
    let size = 64 + rng.below(1451) as usize;
    // SAFETY: non-zero sizes; the blocks are posted whole and freed by the receiver.
    unsafe {
        let buf = a.alloc(layout(size));
        let desc = a.alloc(layout(64));
        assert!(
            !buf.is_null() && !desc.is_null(),
            "bench irq: allocation failed"
        );
        buf.add(size - 1).write_volatile(1);
        post(to, buf, size);
        post(to, desc, 64);
    }
}

fn irq_network_worker(cpu: usize) {
    let a = allocator(CURRENT.load(Ordering::SeqCst));
    let n = smp::online();
    if cpu == 0 {
        for _ in 0..PACKETS {
            let to = if n > 1 { 1 } else { 0 };
            while PENDING[to].load(Ordering::SeqCst) > MAX_PENDING {
                if n == 1 {
                    drain(a, 0);
                }
                core::hint::spin_loop();
            }
            apic::send_self(idt::VEC_SOFT);
        }
        DONE.store(1, Ordering::SeqCst);
        drain(a, 0);
    } else {
        while DONE.load(Ordering::SeqCst) == 0 {
            if cpu == 1 {
                drain(a, 1);
            }
            core::hint::spin_loop();
        }
        if cpu == 1 {
            drain(a, 1);
        }
    }
}

/// ln(x) for x > 0, good to ~1e-10 (no libm here): x = m·2^e, ln m by atanh series.
fn ln(x: f64) -> f64 {
    if x <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let m = f64::from_bits((bits & !(0x7FF << 52)) | (1023 << 52)); // in [1, 2)
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let (mut term, mut sum) = (t, 0.0);
    for k in 0..40 {
        sum += term / (2 * k + 1) as f64;
        term *= t2;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

/// e^x by range reduction and Taylor series.
fn exp(x: f64) -> f64 {
    let k = (x / core::f64::consts::LN_2) as i64;
    let r = x - k as f64 * core::f64::consts::LN_2;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..30 {
        term *= r / i as f64;
        sum += term;
    }
    sum * f64::from_bits(((k + 1023).clamp(1, 2046) as u64) << 52)
}
