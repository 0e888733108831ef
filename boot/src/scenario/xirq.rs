//! `xirq`: frees across CPUs while timer interrupts allocate and free.
//!
//! `PerCpuAlloc::dealloc` frees a block of another CPU's segment without holding interrupts
//! off (one CAS onto the page's `thread_free`, or the owning heap's delayed list when the
//! page is full). This scenario runs that path while the LAPIC timer fires on every CPU and
//! its handler allocates and frees on the same CPU, and while the owner of the blocks
//! allocates from the very pages they go back to:
//!
//! - the main flow of CPU `c` allocates blocks and posts them to CPU `c+1`, which frees them
//!   (cross-CPU, interrupts on); it also posts some to CPU `c+1`'s timer handler;
//! - the timer handler of CPU `c` replaces blocks of its own ring (allocates and frees on
//!   its heap), posts a block of its own to CPU `c+1`'s main flow, and frees what CPU
//!   `c-1` posted to it (a cross-CPU free inside an interrupt, which may have interrupted a
//!   cross-CPU free of the main flow).
//!
//! The CPUs run until each one's handler ran `TICKS` times and one of its interrupts landed
//! while its main flow was inside a cross-CPU `dealloc` (or it took `MAX_TICKS` interrupts). Checked: block
//! contents, every block sent is freed, the handlers did allocator work on every CPU,
//! cross-CPU frees happened in main flows and handlers and an interrupt landed inside one,
//! and the allocated bytes balance at the end.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::check::{fill, verify, Block};
use super::timer::{Deadline, IrqState, PerCpuIrq};
use crate::cpu::{self, MAX_CPUS};
use crate::rng::Rng;
use crate::{apic, heap, idt, smp};

/// Handled timer interrupts each CPU must take.
const TICKS: usize = 100;
/// Most interrupts a CPU waits for one that lands inside a cross-CPU free.
const MAX_TICKS: usize = 4000;
/// Rounds of the main flow at least.
const MIN_ROUNDS: usize = 50;
/// Blocks a main flow posts per round.
const PER_ROUND: usize = 16;
/// LAPIC timer count (bus clock / 16): 0.25 ms with QEMU's 1 GHz APIC bus clock.
const TIMER_COUNT: u32 = 15_625;
const RING: usize = 16;
/// Header of a posted block: next pointer, size, tag (bits 56.. = the allocating CPU).
const HEADER: usize = 24;
const MAX_PENDING: usize = 256;
const MAX_IRQ_PENDING: usize = 32;

/// Blocks for CPU `c`'s main flow (posted by CPU `c-1`'s main flow and timer handler).
static MAILBOX: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
static PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Blocks for CPU `c`'s timer handler (posted by CPU `c-1`'s main flow).
static IRQ_INBOX: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
static IRQ_PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// Set while CPU `c`'s main flow is inside `dealloc` of another CPU's block.
static IN_REMOTE_FREE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Interrupts of CPU `c` that landed inside such a `dealloc`.
static HITS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static HANDLED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static HANDLER_OPS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static HANDLER_REMOTE_FREES: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static MAIN_REMOTE_FREES: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

static SEED: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicUsize = AtomicUsize::new(0);
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
/// CPUs whose main flow has done what it must (see `worker`).
static SATISFIED: AtomicUsize = AtomicUsize::new(0);
static DEADLINE: Deadline = Deadline::new();

static STATE: [PerCpuIrq<RING>; MAX_CPUS] = [const { PerCpuIrq::new() }; MAX_CPUS];

pub fn run(args: &super::Args) {
    let n = smp::online();
    SEED.store(args.seed, Ordering::SeqCst);
    SENT.store(0, Ordering::SeqCst);
    RECEIVED.store(0, Ordering::SeqCst);
    DONE.store(0, Ordering::SeqCst);
    SATISFIED.store(0, Ordering::SeqCst);
    DEADLINE.arm(args.tsc_per_us);
    for c in 0..MAX_CPUS {
        for a in [
            &HITS[c],
            &HANDLED[c],
            &HANDLER_OPS[c],
            &HANDLER_REMOTE_FREES[c],
            &MAIN_REMOTE_FREES[c],
            &PENDING[c],
            &IRQ_PENDING[c],
        ] {
            a.store(0, Ordering::SeqCst);
        }
    }
    heap::collect_all(true);
    let before = heap::ALLOC.stats();

    idt::set_timer_hook(Some(on_timer));
    smp::run_on_all(worker);
    idt::set_timer_hook(None);
    heap::collect_all(true);
    let after = heap::ALLOC.stats();

    let sum =
        |a: &[AtomicUsize]| -> usize { a[..n].iter().map(|x| x.load(Ordering::SeqCst)).sum() };
    let (sent, received) = (SENT.load(Ordering::SeqCst), RECEIVED.load(Ordering::SeqCst));
    let handler_ops = sum(&HANDLER_OPS);
    println!(
        "xirq: {} cpus, {} timer interrupts handled; {} allocator ops in handlers ({} cross-CPU frees); {} cross-CPU frees in main flows; {} interrupts inside a cross-CPU free; {} blocks sent, {} freed",
        n,
        sum(&HANDLED),
        handler_ops,
        sum(&HANDLER_REMOTE_FREES),
        sum(&MAIN_REMOTE_FREES),
        sum(&HITS),
        sent,
        received
    );
    if args.verbose {
        for c in 0..n {
            println!(
                "xirq: cpu {c}: {} interrupts handled, {} inside a cross-CPU free",
                HANDLED[c].load(Ordering::SeqCst),
                HITS[c].load(Ordering::SeqCst)
            );
        }
    }
    for c in 0..n {
        let (handled, ops) = (
            HANDLED[c].load(Ordering::SeqCst),
            HANDLER_OPS[c].load(Ordering::SeqCst),
        );
        // Every handled interrupt replaces two ring blocks: at least two allocations.
        assert!(
            handled >= TICKS && ops >= 2 * handled,
            "xirq: cpu {c}: {ops} allocator ops in {handled} handled timer interrupts (at least {TICKS} interrupts, 2 ops each, expected)"
        );
        if n > 1 {
            assert!(
                MAIN_REMOTE_FREES[c].load(Ordering::SeqCst) > 0,
                "xirq: cpu {c}: no cross-CPU frees in the main flow"
            );
            assert!(
                HITS[c].load(Ordering::SeqCst) > 0,
                "xirq: cpu {c}: none of its {handled} timer interrupts landed inside a cross-CPU free"
            );
        }
    }
    if n > 1 {
        assert!(
            sum(&HANDLER_REMOTE_FREES) > 0,
            "xirq: no cross-CPU frees in timer handlers"
        );
    }
    assert_eq!(sent, received, "xirq: blocks lost between CPUs");
    assert_eq!(
        after.allocated.current, before.allocated.current,
        "xirq: allocated bytes do not balance after every block was freed"
    );
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates a block of `size` >= HEADER bytes with its header and pattern.
fn new_block(cpu: usize, size: usize, tag: u64) -> *mut u8 {
    // SAFETY: size >= HEADER > 0.
    let p = unsafe { alloc::alloc::alloc(layout(size)) };
    assert!(!p.is_null(), "xirq: cpu {cpu}: alloc({size}) failed");
    let tag = ((cpu as u64) << 56) | (tag & ((1 << 56) - 1));
    // SAFETY: p has `size` >= HEADER bytes, 8-aligned.
    unsafe {
        (p as *mut usize).add(1).write(size);
        (p as *mut u64).add(2).write(tag);
        fill(p.add(HEADER), size - HEADER, tag);
    }
    p
}

fn block_size(rng: &mut Rng) -> usize {
    if rng.below(16) == 0 {
        rng.size(HEADER, 4096)
    } else {
        rng.size(HEADER, 256)
    }
}

/// Pushes `p` on a lock-free stack (safe from interrupt handlers: no lock).
fn push(list: &AtomicPtr<u8>, p: *mut u8) {
    let mut head = list.load(Ordering::Relaxed);
    loop {
        // SAFETY: p is a live block of ours; its first word is the link.
        unsafe { (p as *mut *mut u8).write(head) };
        match list.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Takes the whole list (so no ABA), checks every block, then frees them one after the
/// other; returns (blocks, of which cross-CPU). `mark` sets `IN_REMOTE_FREE` around each
/// cross-CPU `dealloc` (main flows only).
fn drain(cpu: usize, list: &AtomicPtr<u8>, mark: bool) -> (usize, usize) {
    let head = list.swap(ptr::null_mut(), Ordering::Acquire);
    let mut p = head;
    while !p.is_null() {
        // SAFETY: blocks on the list were pushed complete (Release/Acquire) and nobody else
        // reaches them once swapped out; the header says their size and tag.
        unsafe {
            let size = (p as *const usize).add(1).read();
            let tag = (p as *const u64).add(2).read();
            verify(p.add(HEADER), size - HEADER, tag, "xirq cross-cpu");
            p = (p as *const *mut u8).read();
        }
    }
    let (mut count, mut remote) = (0, 0);
    p = head;
    while !p.is_null() {
        // SAFETY: as above; checked, and ours to free.
        unsafe {
            let next = (p as *const *mut u8).read();
            let size = (p as *const usize).add(1).read();
            let from = ((p as *const u64).add(2).read() >> 56) as usize;
            if from != cpu {
                remote += 1;
                if mark {
                    IN_REMOTE_FREE[cpu].store(true, Ordering::SeqCst);
                }
            }
            alloc::alloc::dealloc(p, layout(size));
            if mark {
                IN_REMOTE_FREE[cpu].store(false, Ordering::SeqCst);
            }
            p = next;
        }
        count += 1;
    }
    (count, remote)
}

fn drain_mailbox(cpu: usize) -> usize {
    assert!(
        x86_64::instructions::interrupts::are_enabled(),
        "xirq: main flow frees with interrupts off"
    );
    let (count, remote) = drain(cpu, &MAILBOX[cpu], true);
    PENDING[cpu].fetch_sub(count, Ordering::SeqCst);
    MAIN_REMOTE_FREES[cpu].fetch_add(remote, Ordering::Relaxed);
    count
}

fn worker(cpu: usize) {
    let n = smp::online();
    let to = (cpu + 1) % n;
    let seed = SEED.load(Ordering::SeqCst) ^ (cpu as u64 + 3).wrapping_mul(0x9E37_79B9_7F4A);
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off and the timer not started: only we touch the slot.
        unsafe {
            *STATE[cpu].0.get() = Some(IrqState {
                ring: [None; RING],
                rng: Rng::new(seed),
                tag: 1 << 40,
            })
        };
    });
    apic::timer_start(idt::VEC_TIMER, TIMER_COUNT);

    let mut rng = Rng::new(!seed);
    let mut tag = 0u64;
    let mut received = 0;
    let mut round = 0;
    let mut satisfied = false;
    loop {
        for _ in 0..PER_ROUND {
            // Wait while the neighbour is far behind (draining our own mailbox meanwhile).
            while PENDING[to].load(Ordering::SeqCst) > MAX_PENDING {
                received += drain_mailbox(cpu);
                core::hint::spin_loop();
            }
            tag += 1;
            let p = new_block(cpu, block_size(&mut rng), tag);
            PENDING[to].fetch_add(1, Ordering::SeqCst);
            push(&MAILBOX[to], p);
            SENT.fetch_add(1, Ordering::Relaxed);
        }
        if n > 1 && IRQ_PENDING[to].load(Ordering::SeqCst) < MAX_IRQ_PENDING {
            tag += 1;
            let p = new_block(cpu, block_size(&mut rng), tag);
            IRQ_PENDING[to].fetch_add(1, Ordering::SeqCst);
            push(&IRQ_INBOX[to], p);
            SENT.fetch_add(1, Ordering::Relaxed);
        }
        received += drain_mailbox(cpu);
        round += 1;
        // Done when every CPU is: until then, keep feeding the next CPU (which only frees
        // cross-CPU while this one posts).
        let handled = HANDLED[cpu].load(Ordering::SeqCst);
        let hit = n == 1 || HITS[cpu].load(Ordering::SeqCst) > 0;
        if !satisfied && round >= MIN_ROUNDS && handled >= TICKS && (hit || handled >= MAX_TICKS) {
            satisfied = true;
            SATISFIED.fetch_add(1, Ordering::SeqCst);
        }
        if SATISFIED.load(Ordering::SeqCst) == n {
            break;
        }
        if DEADLINE.passed() {
            println!("xirq: cpu {cpu}: stopped after {} s", Deadline::SECS);
            break;
        }
    }
    apic::timer_stop();
    // Stop the handler's work for good (an interrupt still pending finds no state), and
    // free its ring.
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off: only we touch the slot.
        let st = unsafe { (*STATE[cpu].0.get()).take() }.expect("xirq state");
        for b in st.ring.iter().flatten() {
            // SAFETY: ring blocks are live and filled with their tag.
            unsafe {
                verify(b.ptr, b.layout.size(), b.tag, "xirq ring");
                alloc::alloc::dealloc(b.ptr, b.layout);
            }
        }
    });
    DONE.fetch_add(1, Ordering::SeqCst);
    // Nobody posts to us once every CPU is done (handlers included: they stopped above).
    loop {
        received += drain_mailbox(cpu);
        if DONE.load(Ordering::SeqCst) == n {
            received += drain_mailbox(cpu);
            break;
        }
        core::hint::spin_loop();
    }
    let (left, _) = drain(cpu, &IRQ_INBOX[cpu], false);
    IRQ_PENDING[cpu].fetch_sub(left, Ordering::SeqCst);
    received += left;
    RECEIVED.fetch_add(received, Ordering::SeqCst);
}

/// The timer hook: runs in the interrupt handler, interrupts off.
fn on_timer() {
    let cpu = cpu::current();
    // SAFETY: in the handler, interrupts are off: this CPU's slot is ours (see PerCpuIrq).
    let Some(st) = (unsafe { &mut *STATE[cpu].0.get() }) else {
        return;
    };
    HANDLED[cpu].fetch_add(1, Ordering::SeqCst);
    if IN_REMOTE_FREE[cpu].load(Ordering::SeqCst) {
        HITS[cpu].fetch_add(1, Ordering::SeqCst);
    }
    let n = smp::online();
    let mut ops = 0;

    // Replace two ring blocks: allocations and frees on this CPU's heap, in the size
    // classes the other CPUs free into.
    for _ in 0..2 {
        let i = st.rng.below(RING as u64) as usize;
        if let Some(b) = st.ring[i].take() {
            // SAFETY: ring blocks are live and filled with their tag.
            unsafe {
                verify(b.ptr, b.layout.size(), b.tag, "xirq ring");
                alloc::alloc::dealloc(b.ptr, b.layout);
            }
            ops += 1;
        }
        let l = layout(block_size(&mut st.rng));
        // SAFETY: non-zero size.
        let p = unsafe { alloc::alloc::alloc(l) };
        assert!(!p.is_null(), "xirq: alloc in handler failed");
        st.tag += 1;
        let tag = ((cpu as u64) << 56) | st.tag;
        // SAFETY: fresh block of l.size() bytes.
        unsafe { fill(p, l.size(), tag) };
        st.ring[i] = Some(Block {
            ptr: p,
            layout: l,
            tag,
        });
        ops += 1;
    }

    if n > 1 {
        // A block of this CPU's heap for the next CPU's main flow to free.
        let to = (cpu + 1) % n;
        if PENDING[to].load(Ordering::SeqCst) < MAX_PENDING {
            st.tag += 1;
            let p = new_block(cpu, block_size(&mut st.rng), st.tag);
            PENDING[to].fetch_add(1, Ordering::SeqCst);
            push(&MAILBOX[to], p);
            SENT.fetch_add(1, Ordering::Relaxed);
            ops += 1;
        }
        // What the previous CPU's main flow posted here: cross-CPU frees in the handler.
        let (count, remote) = drain(cpu, &IRQ_INBOX[cpu], false);
        IRQ_PENDING[cpu].fetch_sub(count, Ordering::SeqCst);
        RECEIVED.fetch_add(count, Ordering::SeqCst);
        HANDLER_REMOTE_FREES[cpu].fetch_add(remote, Ordering::Relaxed);
        ops += count;
    }
    HANDLER_OPS[cpu].fetch_add(ops, Ordering::Relaxed);
}
