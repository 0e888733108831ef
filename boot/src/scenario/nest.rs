//! `nest`: allocation and free at nested interrupt levels while the main flows allocate
//! and free too. On every CPU the LAPIC timer's handler (level 1) turns interrupts on and
//! raises a self-IPI (`VEC_SOFT`), whose handler (level 2) turns them on and raises
//! another (`VEC_SOFT_HIGH`, level 3): the LAPIC delivers each inside the one before (a
//! higher priority class). Each level allocates, checks and frees blocks of its own, and
//! swaps blocks with the other levels of its CPU through exchange slots, so every level
//! frees blocks that another level allocated (with the kernel's 4 levels, level 3 uses the
//! heap that is shared with interrupts off; levels 0-2 their own heaps, interrupts on).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::check::{fill, verify};
use super::timer::Deadline;
use crate::cpu::{self, MAX_CPUS};
use crate::rng::Rng;
use crate::{apic, heap, idt, smp};

/// Timer interrupts each CPU must handle (each runs levels 1, 2 and 3).
const TICKS: usize = 60;
/// LAPIC timer count: 1 ms with QEMU's 1 GHz APIC bus clock divided by 16.
const TIMER_COUNT: u32 = 62_500;
const LEVELS: usize = 4;

/// `XCHG[cpu][l]`: a block (a leaked `Box<[u64; 8]>`) waiting for level `l` of `cpu` to
/// free it.
static XCHG: [[AtomicPtr<u64>; LEVELS]; MAX_CPUS] =
    [const { [const { AtomicPtr::new(ptr::null_mut()) }; LEVELS] }; MAX_CPUS];
/// Allocator operations done at each level (all CPUs).
static OPS: [AtomicUsize; LEVELS] = [const { AtomicUsize::new(0) }; LEVELS];
/// Frees of blocks allocated at another level.
static CROSS_LEVEL: AtomicUsize = AtomicUsize::new(0);
/// Deepest level seen in a handler.
static DEEPEST: AtomicUsize = AtomicUsize::new(0);
static TICKS_HANDLED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static ACTIVE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static SEED: AtomicU64 = AtomicU64::new(0);
static DEADLINE: Deadline = Deadline::new();

pub fn run(args: &super::Args) {
    SEED.store(args.seed, Ordering::SeqCst);
    for o in &OPS {
        o.store(0, Ordering::SeqCst);
    }
    CROSS_LEVEL.store(0, Ordering::SeqCst);
    DEEPEST.store(0, Ordering::SeqCst);
    DEADLINE.arm(args.tsc_per_us);
    idt::set_soft_hook(idt::VEC_SOFT, Some(on_soft));
    idt::set_soft_hook(idt::VEC_SOFT_HIGH, Some(on_soft_high));
    idt::set_timer_hook(Some(on_timer));
    smp::run_on_all(worker);
    idt::set_timer_hook(None);
    idt::set_soft_hook(idt::VEC_SOFT, None);
    idt::set_soft_hook(idt::VEC_SOFT_HIGH, None);
    heap::collect_all(true);
    let ops: [usize; LEVELS] = core::array::from_fn(|l| OPS[l].load(Ordering::SeqCst));
    let cross = CROSS_LEVEL.load(Ordering::SeqCst);
    let deepest = DEEPEST.load(Ordering::SeqCst);
    println!(
        "nest: {} cpus; allocator ops at level 0: {}, level 1: {}, level 2: {}, level 3: {}; {} frees of another level's blocks; deepest level {}",
        smp::online(),
        ops[0],
        ops[1],
        ops[2],
        ops[3],
        cross,
        deepest
    );
    for (l, &n) in ops.iter().enumerate() {
        assert!(n > 0, "nest: no allocator operations at level {l}");
    }
    assert_eq!(deepest, 3, "nest: the interrupts did not nest three deep");
    assert!(cross > 0, "nest: no block freed by another level");
    for (c, t) in TICKS_HANDLED[..smp::online()].iter().enumerate() {
        let t = t.load(Ordering::SeqCst);
        assert!(
            t >= TICKS,
            "nest: cpu {c} handled {t} timer interrupts ({TICKS} expected)"
        );
    }
}

/// Some allocator work at the caller's level: a vector, a block with checked contents,
/// and a swap with the next level's exchange slot.
fn work(rng: &mut Rng, level: usize) {
    let cpu = cpu::current();
    assert_eq!(cpu::level(), level, "nest: level bookkeeping is off");
    DEEPEST.fetch_max(level, Ordering::SeqCst);
    // A few sizes only: every (CPU, level) heap keeps a page per size class it uses, and
    // this scenario runs on 24 MiB machines with 4 CPUs (16 heaps).
    let n = [4, 32][rng.below(2) as usize];
    let v: Vec<u64> = (0..n as u64).map(|i| i ^ 0x5A5A).collect();
    assert!(
        v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0x5A5A),
        "nest: vector corrupt at level {level}"
    );
    drop(v);
    let size = [24, 200, 1000, 3000][rng.below(4) as usize];
    let align = if rng.below(8) == 0 { 64 } else { 8 };
    let layout = core::alloc::Layout::from_size_align(size, align).unwrap();
    // SAFETY: non-zero size; the block is filled, checked and freed once.
    unsafe {
        let p = alloc::alloc::alloc(layout);
        assert!(!p.is_null(), "nest: alloc at level {level} failed");
        let tag = rng.next();
        fill(p, layout.size(), tag);
        verify(p, layout.size(), tag, "nest block");
        alloc::alloc::dealloc(p, layout);
    }
    // Give a block to the next level, free the one waiting for us.
    let tag = ((cpu as u64) << 8) | level as u64;
    let b = Box::into_raw(Box::new([tag; 8])) as *mut u64;
    let old = XCHG[cpu][(level + 1) % LEVELS].swap(b, Ordering::SeqCst);
    let mine = XCHG[cpu][level].swap(ptr::null_mut(), Ordering::SeqCst);
    let mut ops = 6;
    for p in [old, mine] {
        if !p.is_null() {
            // SAFETY: the slots hold leaked `Box<[u64; 8]>`s, each taken once.
            let b = unsafe { Box::from_raw(p as *mut [u64; 8]) };
            assert!(
                b.iter().all(|&x| x == b[0]) && b[0] >> 8 == cpu as u64,
                "nest: exchanged block corrupt"
            );
            if (b[0] & 0xFF) as usize != level {
                CROSS_LEVEL.fetch_add(1, Ordering::Relaxed);
            }
            ops += 1;
        }
    }
    OPS[level].fetch_add(ops, Ordering::Relaxed);
}

fn handler_rng(level: usize) -> Rng {
    Rng::new(SEED.load(Ordering::Relaxed) ^ apic::rdtsc() ^ (level as u64) << 32)
}

/// Level 1: the timer. Interrupts on while it works, so that level 2 nests in it.
fn on_timer() {
    let cpu = cpu::current();
    if ACTIVE[cpu].load(Ordering::SeqCst) == 0 {
        return;
    }
    TICKS_HANDLED[cpu].fetch_add(1, Ordering::SeqCst);
    let mut rng = handler_rng(1);
    x86_64::instructions::interrupts::enable();
    work(&mut rng, 1);
    apic::send_self(idt::VEC_SOFT);
    work(&mut rng, 1);
    x86_64::instructions::interrupts::disable();
}

/// Level 2: raised by level 1; raises level 3 in turn.
fn on_soft() {
    let mut rng = handler_rng(2);
    x86_64::instructions::interrupts::enable();
    work(&mut rng, 2);
    apic::send_self(idt::VEC_SOFT_HIGH);
    work(&mut rng, 2);
    x86_64::instructions::interrupts::disable();
}

/// Level 3: raised by level 2 (interrupts stay off).
fn on_soft_high() {
    let mut rng = handler_rng(3);
    work(&mut rng, 3);
}

fn worker(cpu: usize) {
    let mut rng = Rng::new(SEED.load(Ordering::SeqCst) ^ (cpu as u64 + 3).wrapping_mul(0x9E37));
    TICKS_HANDLED[cpu].store(0, Ordering::SeqCst);
    ACTIVE[cpu].store(1, Ordering::SeqCst);
    apic::timer_start(idt::VEC_TIMER, TIMER_COUNT);
    let mut ops = 0;
    while TICKS_HANDLED[cpu].load(Ordering::SeqCst) < TICKS || ops < 200 {
        if DEADLINE.passed() {
            println!("nest: cpu {cpu}: stopped after {} s", Deadline::SECS);
            break;
        }
        work(&mut rng, 0);
        ops += 1;
    }
    apic::timer_stop();
    x86_64::instructions::interrupts::without_interrupts(|| {
        ACTIVE[cpu].store(0, Ordering::SeqCst);
        for slot in &XCHG[cpu] {
            let p = slot.swap(ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: the slots hold leaked `Box<[u64; 8]>`s or null.
                drop(unsafe { Box::from_raw(p as *mut [u64; 8]) });
            }
        }
    });
}
