//! `smp`: every CPU allocates, and the blocks are freed on the next CPU (cross-CPU frees
//! through lock-free mailboxes); the allocator's statistics must account for the blocks
//! while they live and balance once all are freed.
//!
//! Phase 1: every CPU allocates blocks and posts them to its neighbour without freeing any;
//! then (all heaps collected) `allocated.current` must have grown by at least their bytes.
//! Phase 2: every CPU frees what it was sent, while also allocating and sending more,
//! all CPUs at once. At the end (heaps collected) `allocated.current` is back where it
//! started, and the allocated and freed totals grew by the same amount.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::check::{fill, verify};
use crate::cpu::MAX_CPUS;
use crate::rng::Rng;
use crate::{heap, smp};

const HOLD: usize = 1000;
const ROUNDS: usize = 200;
const PER_ROUND: usize = 32;
/// Header of a block in a mailbox: next pointer, size, tag (the pattern follows).
const HEADER: usize = 24;

static SEED: AtomicU64 = AtomicU64::new(0);
static MAILBOX: [AtomicPtr<u8>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
/// Blocks posted to each mailbox and not yet taken (see `send`).
static PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
const MAX_PENDING: usize = 512;
static PRODUCERS_DONE: AtomicUsize = AtomicUsize::new(0);
static SENT: AtomicUsize = AtomicUsize::new(0);
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// The rare big blocks go up to this size.
static LARGE: AtomicUsize = AtomicUsize::new(0);

pub fn run(args: &super::Args) {
    SEED.store(args.seed, Ordering::SeqCst);
    PRODUCERS_DONE.store(0, Ordering::SeqCst);
    SENT.store(0, Ordering::SeqCst);
    RECEIVED.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    LARGE.store(
        super::stress::largest_block().min(128 << 10),
        Ordering::SeqCst,
    );
    heap::collect_all(true);
    let before = heap::ALLOC.stats();

    smp::run_on_all(hold);
    heap::collect_all(true);
    let held = heap::ALLOC.stats();
    let bytes = BYTES.load(Ordering::SeqCst) as i64;
    let grew = held.allocated.current - before.allocated.current;
    println!(
        "smp: phase 1: {} blocks ({} bytes) posted across CPUs; allocated.current grew by {}",
        SENT.load(Ordering::SeqCst),
        bytes,
        grew
    );
    assert!(
        grew >= bytes,
        "allocated.current grew by {grew} for {bytes} bytes of live blocks"
    );
    assert!(
        grew <= bytes + bytes / 4 + 16 * HOLD as i64 * smp::online() as i64,
        "allocated.current grew by {grew}: far more than the {bytes} bytes live"
    );

    smp::run_on_all(exchange);
    heap::collect_all(true);
    let after = heap::ALLOC.stats();
    let (sent, received) = (SENT.load(Ordering::SeqCst), RECEIVED.load(Ordering::SeqCst));
    println!(
        "smp: {} cpus sent {} blocks ({} KiB) to their neighbours, {} received and freed",
        smp::online(),
        sent,
        BYTES.load(Ordering::SeqCst) >> 10,
        received
    );
    println!(
        "smp: allocated.current {} (before {}), total +{}, freed +{}; statistics:\n{}",
        after.allocated.current,
        before.allocated.current,
        after.allocated.total - before.allocated.total,
        after.allocated.freed - before.allocated.freed,
        after
    );
    assert_eq!(sent, received, "blocks lost between CPUs");
    assert_eq!(
        after.allocated.current, before.allocated.current,
        "allocated bytes do not balance after every block was freed"
    );
    assert_eq!(
        after.allocated.total - before.allocated.total,
        after.allocated.freed - before.allocated.freed,
        "allocated and freed totals differ"
    );
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn rng_for(cpu: usize, phase: u64) -> Rng {
    Rng::new(SEED.load(Ordering::SeqCst) ^ (0xC0FFEE + cpu as u64) ^ (phase << 32))
}

/// Allocates a block with a header and a pattern, and posts it to CPU `to`.
fn send(cpu: usize, to: usize, rng: &mut Rng, tag: u64) {
    let big = LARGE.load(Ordering::Relaxed);
    let size = if rng.below(50) == 0 {
        rng.size(HEADER, big)
    } else {
        rng.size(HEADER, 2048)
    };
    // SAFETY: size >= HEADER > 0.
    let p = unsafe { alloc::alloc::alloc(layout(size)) };
    assert!(!p.is_null(), "cpu {cpu}: alloc({size}) failed");
    // SAFETY: p has `size` >= HEADER bytes, 8-aligned.
    unsafe {
        (p as *mut usize).add(1).write(size);
        (p as *mut u64).add(2).write(tag);
        fill(p.add(HEADER), size - HEADER, tag);
    }
    BYTES.fetch_add(size, Ordering::Relaxed);
    PENDING[to].fetch_add(1, Ordering::SeqCst);
    push(&MAILBOX[to], p);
    SENT.fetch_add(1, Ordering::Relaxed);
}

fn hold(cpu: usize) {
    let to = (cpu + 1) % smp::online();
    let mut rng = rng_for(cpu, 1);
    for i in 0..HOLD {
        send(
            cpu,
            to,
            &mut rng,
            ((cpu as u64) << 40) | (1 << 32) | i as u64,
        );
    }
}

fn exchange(cpu: usize) {
    let n = smp::online();
    let to = (cpu + 1) % n;
    let mut rng = rng_for(cpu, 2);
    let mut tag = ((cpu as u64) << 40) | (2 << 32);
    let mut received = 0;
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            // Wait while the neighbour is far behind (draining our own mailbox meanwhile),
            // so the live set stays bounded however the CPUs are scheduled.
            while PENDING[to].load(Ordering::SeqCst) > MAX_PENDING {
                received += drain(cpu);
                core::hint::spin_loop();
            }
            tag += 1;
            send(cpu, to, &mut rng, tag);
        }
        received += drain(cpu);
    }
    PRODUCERS_DONE.fetch_add(1, Ordering::SeqCst);
    loop {
        received += drain(cpu);
        if PRODUCERS_DONE.load(Ordering::SeqCst) == n {
            // Everything pushed to us happened before its producer counted itself done.
            received += drain(cpu);
            break;
        }
        core::hint::spin_loop();
    }
    RECEIVED.fetch_add(received, Ordering::SeqCst);
}

fn push(mailbox: &AtomicPtr<u8>, p: *mut u8) {
    let mut head = mailbox.load(Ordering::Relaxed);
    loop {
        // SAFETY: p is our live block; its first word is the link.
        unsafe { (p as *mut *mut u8).write(head) };
        match mailbox.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Takes the whole mailbox at once (so no ABA), checks and frees every block.
fn drain(cpu: usize) -> usize {
    let mut p = MAILBOX[cpu].swap(ptr::null_mut(), Ordering::Acquire);
    let mut count = 0;
    while !p.is_null() {
        // SAFETY: blocks in the mailbox were pushed complete (Release/Acquire), nobody else
        // can reach them once swapped out; the header says their size and tag.
        unsafe {
            let next = (p as *const *mut u8).read();
            let size = (p as *const usize).add(1).read();
            let tag = (p as *const u64).add(2).read();
            verify(p.add(HEADER), size - HEADER, tag, "smp cross-cpu");
            alloc::alloc::dealloc(p, layout(size));
            p = next;
        }
        count += 1;
    }
    PENDING[cpu].fetch_sub(count, Ordering::SeqCst);
    count
}
