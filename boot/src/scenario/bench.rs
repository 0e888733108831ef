//! `bench`: the same workloads on shardalloc (the kernel's global allocator) and on the
//! no_std peers — `linked_list_allocator` 0.10, `talc` 5.1, `buddy_system_allocator` 0.13 —
//! each peer over a fixed region of memory from the page source, in the same boot. Time is
//! TSC cycles (best of 3 runs after a warm-up); the table gives peer/shardalloc ratios
//! (above 1: shardalloc is faster).
//! Under TCG the absolute numbers mean little, the ratios something.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use shardalloc::PageSource;

use super::check::{fill, verify, Block};
use crate::cpu::MAX_CPUS;
use crate::rng::Rng;
use crate::{apic, heap, mem, smp};

type Talc = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Manual>;

static LINKED_LIST: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
static TALC: Talc = Talc::new(talc::source::Manual);
static BUDDY: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::new();

/// A peer made safe against interrupt handlers that allocate, as a kernel must use it
/// (and as shardalloc's `PerCpuAlloc` is): interrupts off around every call. The plain
/// peers above take their spin lock only, which deadlocks if an interrupt handler on the
/// same CPU allocates while the lock is held.
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

const NAMES: [&str; 5] = ["shardalloc", "linked_list", "talc", "buddy", "talc+irqoff"];
const PEERS: usize = NAMES.len();

fn allocator(i: usize) -> &'static dyn GlobalAlloc {
    match i {
        0 => heap::global(),
        1 => &LINKED_LIST,
        2 => &TALC,
        3 => &BUDDY,
        _ => &TALC_IRQ,
    }
}

/// The allocator the current (multi-CPU) workload runs on.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(0);

/// Timed runs per workload and allocator; the fastest counts.
const RUNS: usize = 3;

type Workload = fn(&dyn GlobalAlloc, &mut Rng);

const WORKLOADS: [(&str, Workload); 5] = [
    ("alloc-free pairs", pairs),
    ("churn (512 live)", churn),
    ("realloc growth", growth),
    ("mixed sizes", mixed),
    ("all CPUs, cross-CPU free", |_, _| cross_cpu()),
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
    println!(
        "bench: peers get {} KiB each; {} CPUs; largest block {} KiB",
        region >> 10,
        smp::online(),
        LARGE.load(Ordering::SeqCst) >> 10
    );
    if args.verbose {
        let t0 = apic::rdtsc();
        for i in 0..100_000u64 {
            x86_64::instructions::interrupts::without_interrupts(|| core::hint::black_box(i));
        }
        let t1 = apic::rdtsc();
        for i in 0..100_000u64 {
            core::hint::black_box(crate::cpu::current() as u64 + i);
        }
        let t2 = apic::rdtsc();
        println!(
            "bench: without_interrupts(): {} cycles; cpu::current(): {} cycles",
            (t1 - t0) / 100_000,
            (t2 - t1) / 100_000
        );
    }
    let mut cycles = [[0u64; PEERS]; WORKLOADS.len()];
    for (w, &(_, f)) in WORKLOADS.iter().enumerate() {
        for (a, slot) in cycles[w].iter_mut().enumerate() {
            CURRENT.store(a, Ordering::SeqCst);
            // A warm-up run first (untimed): the peers' regions are committed up front,
            // shardalloc commits as it goes; the timed runs start from a warm heap. The
            // best of RUNS timed runs counts (TCG timing is noisy).
            f(allocator(a), &mut Rng::new(args.seed ^ w as u64));
            let s0 = mem::SOURCE.stats();
            *slot = u64::MAX;
            for _ in 0..RUNS {
                let t0 = apic::rdtsc();
                f(allocator(a), &mut Rng::new(args.seed ^ w as u64));
                *slot = (*slot).min(apic::rdtsc() - t0);
            }
            let s1 = mem::SOURCE.stats();
            if a == 0 && args.verbose {
                println!(
                    "bench: {}: page source, {RUNS} runs: {} commits, {} decommits, {} TLB shootdowns",
                    WORKLOADS[w].0,
                    s1.commits - s0.commits,
                    s1.decommits - s0.decommits,
                    s1.shootdowns - s0.shootdowns
                );
            }
        }
    }
    println!("bench: Mcycles on shardalloc, and peer / shardalloc ratios:");
    println!(
        "  {:<28} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "workload", "shardalloc", NAMES[1], NAMES[2], NAMES[3], NAMES[4]
    );
    for (w, &(name, _)) in WORKLOADS.iter().enumerate() {
        let base = cycles[w][0].max(1);
        let r = |a: usize| cycles[w][a] as f64 / base as f64;
        println!(
            "  {:<28} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
            name,
            base as f64 / 1e6,
            r(1),
            r(2),
            r(3),
            r(4)
        );
    }
    let geo = |a: usize| {
        let mut l = 0.0f64;
        for c in &cycles {
            l += ln(c[a] as f64 / c[0].max(1) as f64);
        }
        exp(l / cycles.len() as f64)
    };
    println!(
        "  {:<28} {:>12} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
        "geometric mean",
        "",
        geo(1),
        geo(2),
        geo(3),
        geo(4)
    );
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
fn pairs(a: &dyn GlobalAlloc, rng: &mut Rng) {
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
}

/// 50 000 random alloc/free operations over 512 slots, sizes 8..2048 (mostly small).
fn churn(a: &dyn GlobalAlloc, rng: &mut Rng) {
    let mut slots: Vec<(*mut u8, Layout)> = Vec::with_capacity(512);
    slots.resize(512, (ptr::null_mut(), layout(8)));
    for _ in 0..50_000 {
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
            // SAFETY: live block with its layout.
            unsafe { a.dealloc(p, l) };
        }
    }
}

/// 300 buffers grown by realloc from 8 bytes to 16 KiB, 64 live at a time.
fn growth(a: &dyn GlobalAlloc, _rng: &mut Rng) {
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
}

/// 20 000 random alloc/free/realloc over 256 slots with content checks, sizes up to
/// `LARGE`.
fn mixed(a: &dyn GlobalAlloc, rng: &mut Rng) {
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
    for b in slots.into_iter().flatten() {
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
}

static MAILBOX: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
/// Blocks posted to each mailbox and not yet taken: producers wait (draining their own
/// mailbox meanwhile) while their neighbour has more than `MAX_PENDING`, so the live set
/// stays bounded however the CPUs are scheduled.
static PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
const MAX_PENDING: usize = 256;
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Every CPU at once: allocate 16..1024 bytes, post to the next CPU, which frees them.
fn cross_cpu() {
    DONE.store(0, Ordering::SeqCst);
    smp::run_on_all(cross_cpu_worker);
}

fn cross_cpu_worker(cpu: usize) {
    let a = allocator(CURRENT.load(Ordering::SeqCst));
    let n = smp::online();
    let next = (cpu + 1) % n;
    let to = &MAILBOX[next];
    let mut rng = Rng::new(SEED.load(Ordering::SeqCst) ^ 0xB00 ^ cpu as u64);
    let drain = |a: &dyn GlobalAlloc| {
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
    };
    for round in 0..400 {
        for _ in 0..32 {
            let size = rng.size(16, 1024);
            while PENDING[next].load(Ordering::SeqCst) > MAX_PENDING {
                drain(a);
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
                PENDING[next].fetch_add(1, Ordering::SeqCst);
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
        if round % 4 == 3 {
            drain(a);
        }
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    while DONE.load(Ordering::SeqCst) < n {
        drain(a);
        core::hint::spin_loop();
    }
    drain(a);
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
