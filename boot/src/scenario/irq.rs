//! `irq`: the LAPIC timer's interrupt handler allocates and frees on every CPU while the
//! main flow of that CPU allocates and frees too. Blocks also change hands between the two:
//! the handler frees blocks the main flow allocated, and the other way round.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::check::{fill, verify, Block};
use super::timer::{Deadline, IrqState, PerCpuIrq};
use crate::cpu::{self, MAX_CPUS};
use crate::rng::Rng;
use crate::{apic, heap, idt, smp};

/// Timer interrupts each CPU must take while its main flow runs.
const TICKS: usize = 150;
/// LAPIC timer count (bus clock / 16): 1 ms with QEMU's 1 GHz APIC bus clock.
const TIMER_COUNT: u32 = 62_500;
const RING: usize = 8;

static STATE: [PerCpuIrq<RING>; MAX_CPUS] = [const { PerCpuIrq::new() }; MAX_CPUS];
static TICKS_SEEN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Interrupts whose handler found the CPU's state set up (and so did its allocations).
static TICKS_HANDLED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Main flow → handler: a block the handler frees.
static TO_IRQ: [AtomicPtr<u64>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
/// Handler → main flow: a block the main flow frees.
static TO_MAIN: [AtomicPtr<u64>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
static SEED: AtomicU64 = AtomicU64::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(0);
static HANDLER_OPS: AtomicUsize = AtomicUsize::new(0);
static MAIN_OPS: AtomicUsize = AtomicUsize::new(0);
static DEADLINE: Deadline = Deadline::new();

const TAG_BOX: u64 = 0x5EED_0000_0000_0000;

pub fn run(args: &super::Args) {
    SEED.store(args.seed, Ordering::SeqCst);
    HANDLER_OPS.store(0, Ordering::SeqCst);
    LARGE.store(
        super::stress::largest_block().min(64 << 10),
        Ordering::SeqCst,
    );
    MAIN_OPS.store(0, Ordering::SeqCst);
    DEADLINE.arm(args.tsc_per_us);
    idt::set_timer_hook(Some(on_timer));
    smp::run_on_all(worker);
    idt::set_timer_hook(None);
    heap::collect_all(true);
    let sum = |a: &[AtomicUsize]| -> usize {
        a[..smp::online()]
            .iter()
            .map(|t| t.load(Ordering::SeqCst))
            .sum()
    };
    let (ticks, handled) = (sum(&TICKS_SEEN), sum(&TICKS_HANDLED));
    let handler_ops = HANDLER_OPS.load(Ordering::SeqCst);
    println!(
        "irq: {} timer interrupts on {} cpus ({} handled); {} allocator ops in handlers, {} in main flows",
        ticks,
        smp::online(),
        handled,
        handler_ops,
        MAIN_OPS.load(Ordering::SeqCst)
    );
    // Every handled interrupt allocates a vector and a ring block and frees the vector.
    assert!(
        handled > 0 && handler_ops >= 3 * handled,
        "irq: {handler_ops} allocator ops in {handled} handled timer interrupts (at least 3 each expected)"
    );
    for (c, t) in TICKS_HANDLED[..smp::online()].iter().enumerate() {
        let t = t.load(Ordering::SeqCst);
        assert!(
            t >= TICKS,
            "irq: cpu {c} handled {t} timer interrupts ({TICKS} expected)"
        );
    }
}

fn worker(cpu: usize) {
    let seed = SEED.load(Ordering::SeqCst) ^ (cpu as u64 + 7).wrapping_mul(0x2545_F491);
    TICKS_SEEN[cpu].store(0, Ordering::SeqCst);
    TICKS_HANDLED[cpu].store(0, Ordering::SeqCst);
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off and the timer not started: only we touch the slot.
        unsafe {
            *STATE[cpu].0.get() = Some(IrqState {
                ring: [None; RING],
                rng: Rng::new(seed),
                tag: 0,
            })
        };
    });
    apic::timer_start(idt::VEC_TIMER, TIMER_COUNT);

    let mut rng = Rng::new(!seed);
    let mut live: Vec<Block> = Vec::new();
    let mut tag = (cpu as u64) << 44;
    let mut ops = 0;
    while TICKS_HANDLED[cpu].load(Ordering::SeqCst) < TICKS || ops < 2000 {
        if DEADLINE.passed() {
            println!("irq: cpu {cpu}: stopped after {} s", Deadline::SECS);
            break;
        }
        // Hand a block to the handler when its slot is empty.
        if TO_IRQ[cpu].load(Ordering::SeqCst).is_null() {
            let b = Box::new([TAG_BOX + ops as u64; 4]);
            if TO_IRQ[cpu]
                .compare_exchange(
                    ptr::null_mut(),
                    Box::into_raw(b) as *mut u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_err()
            {
                unreachable!("only this CPU fills its slot");
            }
        }
        // Free what the handler handed us.
        let p = TO_MAIN[cpu].swap(ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: the handler leaked a Box<[u64; 4]> into TO_MAIN; we own it now.
            let b = unsafe { Box::from_raw(p as *mut [u64; 4]) };
            assert!(
                b.iter().all(|&x| x == b[0]),
                "irq: block from the handler corrupt"
            );
        }
        if live.len() < 64 && (live.is_empty() || rng.below(2) == 0) {
            let layout = super::stress::random_layout(&mut rng, LARGE.load(Ordering::Relaxed));
            // SAFETY: non-zero size.
            let p = unsafe { alloc::alloc::alloc(layout) };
            assert!(!p.is_null());
            tag += 1;
            // SAFETY: fresh block of layout.size() bytes.
            unsafe { fill(p, layout.size(), tag) };
            live.push(Block {
                ptr: p,
                layout,
                tag,
            });
        } else {
            let b = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: b is live and filled with its tag.
            unsafe {
                verify(b.ptr, b.layout.size(), b.tag, "irq main flow");
                alloc::alloc::dealloc(b.ptr, b.layout);
            }
        }
        ops += 1;
    }
    apic::timer_stop();
    MAIN_OPS.fetch_add(ops, Ordering::SeqCst);
    for b in live {
        // SAFETY: b is live and filled with its tag.
        unsafe {
            verify(b.ptr, b.layout.size(), b.tag, "irq main flow");
            alloc::alloc::dealloc(b.ptr, b.layout);
        }
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: the timer is stopped and interrupts are off: only we touch the slot.
        let st = unsafe { (*STATE[cpu].0.get()).take() }.expect("irq state");
        for b in st.ring.iter().flatten() {
            // SAFETY: ring blocks are live and filled with their tag.
            unsafe {
                verify(b.ptr, b.layout.size(), b.tag, "irq ring");
                alloc::alloc::dealloc(b.ptr, b.layout);
            }
        }
        for slot in [&TO_IRQ[cpu], &TO_MAIN[cpu]] {
            let p = slot.swap(ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: both slots hold leaked Box<[u64; 4]>s or null.
                drop(unsafe { Box::from_raw(p as *mut [u64; 4]) });
            }
        }
    });
}

/// The timer hook: runs in the interrupt handler, interrupts off.
fn on_timer() {
    let cpu = cpu::current();
    TICKS_SEEN[cpu].fetch_add(1, Ordering::SeqCst);
    // SAFETY: in the handler, interrupts are off: this CPU's slot is ours (see PerCpuIrq).
    let Some(st) = (unsafe { &mut *STATE[cpu].0.get() }) else {
        return;
    };
    TICKS_HANDLED[cpu].fetch_add(1, Ordering::SeqCst);
    let mut ops = 0;

    // A short-lived vector.
    let n = 1 + st.rng.below(200) as usize;
    let v: Vec<u64> = (0..n as u64).map(|i| i ^ 0xABCD).collect();
    assert!(
        v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0xABCD),
        "irq: vector corrupt"
    );
    drop(v);
    ops += 2;

    // Replace one ring block: frees a block allocated in an earlier interrupt.
    let i = st.rng.below(RING as u64) as usize;
    if let Some(b) = st.ring[i].take() {
        // SAFETY: ring blocks are live and filled with their tag.
        unsafe {
            verify(b.ptr, b.layout.size(), b.tag, "irq ring");
            alloc::alloc::dealloc(b.ptr, b.layout);
        }
        ops += 1;
    }
    let layout =
        super::stress::random_layout(&mut st.rng, LARGE.load(Ordering::Relaxed).min(32 << 10));
    // SAFETY: non-zero size.
    let p = unsafe { alloc::alloc::alloc(layout) };
    assert!(!p.is_null(), "irq: alloc in handler failed");
    st.tag += 1;
    let tag = ((cpu as u64) << 56) | st.tag;
    // SAFETY: fresh block.
    unsafe { fill(p, layout.size(), tag) };
    st.ring[i] = Some(Block {
        ptr: p,
        layout,
        tag,
    });
    ops += 1;

    // Free the main flow's block, and hand it one of ours.
    let q = TO_IRQ[cpu].swap(ptr::null_mut(), Ordering::SeqCst);
    if !q.is_null() {
        // SAFETY: the main flow leaked a Box<[u64; 4]> into TO_IRQ.
        let b = unsafe { Box::from_raw(q as *mut [u64; 4]) };
        assert!(
            b.iter().all(|&x| x == b[0]) && b[0] & TAG_BOX == TAG_BOX,
            "irq: block from main corrupt"
        );
        ops += 1;
    }
    if TO_MAIN[cpu].load(Ordering::SeqCst).is_null() {
        let b = Box::new([st.tag; 4]);
        TO_MAIN[cpu].store(Box::into_raw(b) as *mut u64, Ordering::SeqCst);
        ops += 1;
    }
    HANDLER_OPS.fetch_add(ops, Ordering::Relaxed);
}
