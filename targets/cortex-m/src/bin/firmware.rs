//! shardalloc as the `#[global_allocator]` of a Cortex-M firmware, under QEMU.
//!
//! One binary runs every scenario in turn and prints `scenario NAME ok` after each, then
//! `ALL OK`, and exits through semihosting with success; any failed check prints
//! `FAIL: reason` and exits with failure (a hang is caught by the host's timeout).
//! tests/firmware.rs builds it for lm3s6965evb (Cortex-M3, 64 KiB SRAM) and microbit
//! (Cortex-M0, 16 KiB SRAM) and checks all of that.
//!
//! Scenarios: smoke (Box, Vec, String, BTreeMap, Rc), stress (seeded, content-checked,
//! with realloc), oom (alloc until null, free all, allocate again), irq (SysTick handler
//! allocates and frees while the main loop does, blocks passed both ways), frag
//! (alternating small/large fill, free the large, refill with mid sizes), region (a
//! second region through `add_region`).
//!
//! Without the `shardalloc` feature the same scenarios run on embedded-alloc's LlffHeap
//! (a check of the firmware itself; `region` is then skipped).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::alloc::{alloc, dealloc, realloc, Layout};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use critical_section::Mutex;
use shardalloc_cortex_m::{check, exit_ok, hprintln, stack, Rng, BOARD};

#[cfg(feature = "shardalloc")]
type Heap = shardalloc::embedded::Heap;
#[cfg(feature = "shardalloc")]
const ALLOCATOR: &str = "shardalloc::embedded::Heap";
#[cfg(not(feature = "shardalloc"))]
type Heap = embedded_alloc::LlffHeap;
#[cfg(not(feature = "shardalloc"))]
const ALLOCATOR: &str = "embedded_alloc::LlffHeap (firmware self-check)";

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// Per-board sizes. The microbit has 16 KiB of SRAM in all: heap, .bss and stack.
#[cfg(board = "microbit")]
mod cfg {
    /// All the heap memory there is (the microbit has no room for a second region).
    pub const HEAP_MEM_SIZE: usize = 10 * 1024;
    /// Given at start-up with `init`.
    pub const HEAP_SIZE: usize = HEAP_MEM_SIZE;
    pub const STRESS_LIVE: usize = 48;
    pub const STRESS_OPS: u32 = 2_500;
    pub const STRESS_MAX: u32 = 96;
    pub const TABLE: usize = 160;
    pub const SMOKE_VEC: u32 = 120;
    pub const SMOKE_MAP: u32 = 40;
    pub const IRQ_TARGET: u32 = 60;
    pub const IRQ_LIVE: usize = 32;
    pub const SYST_RELOAD: u32 = 4_000;
    pub const SEED: u32 = 0x5eed_0b17;
}
#[cfg(not(board = "microbit"))]
mod cfg {
    /// All the heap memory: the first `HEAP_SIZE` bytes are given at start-up with `init`,
    /// the rest by the `region` scenario (last) with `add_region`.
    pub const HEAP_MEM_SIZE: usize = 48 * 1024;
    pub const HEAP_SIZE: usize = 40 * 1024;
    pub const STRESS_LIVE: usize = 256;
    pub const STRESS_OPS: u32 = 6_000;
    pub const STRESS_MAX: u32 = 160;
    pub const TABLE: usize = 900;
    pub const SMOKE_VEC: u32 = 500;
    pub const SMOKE_MAP: u32 = 120;
    pub const IRQ_TARGET: u32 = 200;
    pub const IRQ_LIVE: usize = 96;
    pub const SYST_RELOAD: u32 = 4_000;
    pub const SEED: u32 = 0x5eed_3a11;
}
use cfg::*;

/// The heap's memory. Aligned to 256 (the small geometry's OS page, to which the heap
/// rounds its start up), so that what the heap can use does not depend on the size of the
/// statics before it; and so that the split between the two regions of the lm3s6965evb
/// falls on a segment boundary of the first (shardalloc aligns segments to the start of
/// the first region; a further region loses to that alignment up to one segment).
#[repr(C, align(256))]
struct HeapMem([MaybeUninit<u8>; HEAP_MEM_SIZE]);
static mut HEAP_MEM: HeapMem = HeapMem([MaybeUninit::uninit(); HEAP_MEM_SIZE]);

/// A live block of the stress scenarios: where, its layout, the tag its pattern is
/// derived from.
#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    size: u16,
    align: u16,
    tag: u32,
}
const EMPTY: Slot = Slot {
    ptr: core::ptr::null_mut(),
    size: 0,
    align: 0,
    tag: 0,
};

static mut SLOTS: [Slot; STRESS_LIVE] = [EMPTY; STRESS_LIVE];
/// Pointers and sizes of the fill scenarios (oom, frag, region); in .bss, not on the heap.
static mut TABLE_PTRS: [*mut u8; TABLE] = [core::ptr::null_mut(); TABLE];
static mut TABLE_SIZES: [u16; TABLE] = [0; TABLE];

fn slots() -> &'static mut [Slot; STRESS_LIVE] {
    // SAFETY: used by the main context only, one scenario at a time.
    unsafe { &mut *core::ptr::addr_of_mut!(SLOTS) }
}
fn tget(i: usize) -> (*mut u8, usize) {
    // SAFETY: as above.
    unsafe {
        (
            (*core::ptr::addr_of!(TABLE_PTRS))[i],
            (*core::ptr::addr_of!(TABLE_SIZES))[i] as usize,
        )
    }
}
fn tset(i: usize, p: *mut u8, size: usize) {
    // SAFETY: as above.
    unsafe {
        (*core::ptr::addr_of_mut!(TABLE_PTRS))[i] = p;
        (*core::ptr::addr_of_mut!(TABLE_SIZES))[i] = size as u16;
    }
}

#[inline]
fn pattern(tag: u32, i: usize) -> u8 {
    (tag.wrapping_mul(0x9e37_79b1).rotate_left(7) as usize ^ i.wrapping_mul(31)) as u8
}
fn fill(p: *mut u8, len: usize, tag: u32) {
    for i in 0..len {
        unsafe { p.add(i).write_volatile(pattern(tag, i)) }
    }
}
fn verify(p: *const u8, len: usize, tag: u32, what: &str) {
    for i in 0..len {
        let got = unsafe { p.add(i).read_volatile() };
        check!(
            got == pattern(tag, i),
            "{what}: block {p:p} (tag {tag}, {len} bytes) corrupted at byte {i}: {got:#04x} != {:#04x}",
            pattern(tag, i)
        );
    }
}

fn scenario_ok(name: &str) {
    hprintln!("scenario {} ok", name);
}

/// used() must be back where it was: nothing leaked, the accounting is exact.
fn check_no_leak(what: &str, base: usize) {
    let used = HEAP.used();
    check!(
        used == base,
        "{what}: used() is {used} after freeing everything (was {base} before)"
    );
}

#[entry]
fn main() -> ! {
    stack::paint();
    let heap_start = core::ptr::addr_of_mut!(HEAP_MEM) as usize;
    // SAFETY: once, before any allocation; the array is used by nothing else.
    unsafe { HEAP.init(heap_start, HEAP_SIZE) };
    hprintln!(
        "firmware on {}: allocator {}, heap {} bytes at {:#010x} ({} more added by the region scenario)",
        BOARD,
        ALLOCATOR,
        HEAP_SIZE,
        heap_start,
        HEAP_MEM_SIZE - HEAP_SIZE
    );
    #[cfg(feature = "shardalloc")]
    {
        let m = Heap::metadata();
        hprintln!(
            "metadata: Heap static {} bytes, page {} bytes, segment headers small {} medium {} large {}",
            m.heap,
            m.page,
            m.small_segment_header,
            m.medium_segment_header,
            m.large_segment_header
        );
    }
    let base = HEAP.used();
    hprintln!("after init: used {} free {}", base, HEAP.free());
    check!(base == 0, "used() is {base} before the first allocation");
    check!(
        HEAP.free() <= HEAP_SIZE && HEAP.free() >= HEAP_SIZE / 2,
        "free() is {} for a heap of {HEAP_SIZE} bytes",
        HEAP.free()
    );

    smoke(base);
    scenario_ok("smoke");
    stress(base, SEED);
    scenario_ok("stress");
    let first_fill = oom(base);
    scenario_ok("oom");
    let mut p = cortex_m::Peripherals::take().unwrap();
    irq(base, &mut p.SYST);
    scenario_ok("irq");
    frag(base);
    scenario_ok("frag");
    #[cfg(all(feature = "shardalloc", not(board = "microbit")))]
    {
        region(base, first_fill);
        scenario_ok("region");
    }
    #[cfg(not(all(feature = "shardalloc", not(board = "microbit"))))]
    let _ = first_fill;

    let (stack_used, stack_room) = stack::used();
    hprintln!(
        "stack: deepest {} bytes of {} between .bss and the top of RAM",
        stack_used,
        stack_room
    );
    hprintln!("ALL OK");
    exit_ok()
}

/// Box, Vec, String, BTreeMap, Rc through the global allocator.
fn smoke(base: usize) {
    {
        let b = Box::new(0x1234_5678u32);
        check!(*b == 0x1234_5678, "Box content");
        let big = Box::new([7u8; 300]);
        check!(big.iter().all(|&x| x == 7), "Box<[u8; 300]> content");
        check!(HEAP.used() > base, "used() did not grow with live boxes");

        let mut v: Vec<u32> = Vec::new();
        for i in 0..SMOKE_VEC {
            v.push(i * 3);
        }
        check!(
            v.iter().enumerate().all(|(i, &x)| x == i as u32 * 3),
            "Vec content after growth"
        );
        v.truncate(10);
        v.shrink_to_fit();
        check!(v.len() == 10 && v[9] == 27, "Vec after shrink_to_fit");

        let mut s = String::new();
        for i in 0..40 {
            s.push_str(&format!("{i},"));
        }
        check!(
            s.starts_with("0,1,2,") && s.ends_with("38,39,"),
            "String content: {s}"
        );

        let mut m: BTreeMap<u32, String> = BTreeMap::new();
        for i in 0..SMOKE_MAP {
            m.insert(i.wrapping_mul(2_654_435_761) % 1000, format!("v{i}"));
        }
        for i in 0..SMOKE_MAP {
            let k = i.wrapping_mul(2_654_435_761) % 1000;
            // (a later i may have replaced the value of a colliding key)
            check!(m.contains_key(&k), "BTreeMap lookup {k}");
        }
        let mut last = None;
        for (k, _) in m.iter() {
            check!(last.is_none_or(|l| l < *k), "BTreeMap order");
            last = Some(*k);
        }
        for i in 0..SMOKE_MAP / 2 {
            m.remove(&(i.wrapping_mul(2_654_435_761) % 1000));
        }
        check!(
            m.len() <= (SMOKE_MAP / 2) as usize,
            "BTreeMap len after removes: {}",
            m.len()
        );

        let shared = Rc::new(RefCell::new(Vec::<u16>::new()));
        let others: Vec<Rc<RefCell<Vec<u16>>>> = (0..8).map(|_| Rc::clone(&shared)).collect();
        for (i, o) in others.iter().enumerate() {
            o.borrow_mut().push(i as u16);
        }
        check!(Rc::strong_count(&shared) == 9, "Rc count");
        check!(
            *shared.borrow() == [0, 1, 2, 3, 4, 5, 6, 7],
            "Rc<RefCell<Vec>> content"
        );
        drop(others);
        check!(Rc::strong_count(&shared) == 1, "Rc count after drop");

        // zeroed allocation
        let z: Vec<u64> = alloc::vec![0; 64];
        check!(z.iter().all(|&x| x == 0), "vec![0; 64] not zero");
    }
    check_no_leak("smoke", base);
}

/// A random size: mostly small, sometimes up to `max`.
fn stress_size(rng: &mut Rng, max: u32) -> usize {
    match rng.next_u32() % 8 {
        0..=4 => rng.range(1, 32) as usize,
        5 | 6 => rng.range(33, 96.min(max)) as usize,
        _ => rng.range(1, max) as usize,
    }
}
fn stress_align(rng: &mut Rng) -> usize {
    match rng.next_u32() % 16 {
        0 => 16,
        1 => 32,
        2..=5 => 8,
        6..=7 => 1,
        _ => 4,
    }
}

/// Seeded random alloc/free/realloc over a table of `STRESS_LIVE` slots, every block
/// filled with a pattern from its tag and checked before it is freed or moved.
fn stress(base: usize, seed: u32) {
    hprintln!(
        "stress: seed {:#010x}, {} slots, {} ops, sizes 1..={}",
        seed,
        STRESS_LIVE,
        STRESS_OPS,
        STRESS_MAX
    );
    let mut rng = Rng::new(seed);
    let slots = slots();
    let mut live = 0usize;
    let mut peak_live = 0usize;
    let mut peak_used = 0usize;
    let mut reallocs = 0u32;
    let mut injected = false;
    for op in 0..STRESS_OPS {
        let i = rng.next_u32() as usize % STRESS_LIVE;
        let s = slots[i];
        if s.ptr.is_null() {
            let size = stress_size(&mut rng, STRESS_MAX);
            let align = stress_align(&mut rng);
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { alloc(layout) };
            check!(
                !p.is_null(),
                "stress op {op}: alloc({size}, align {align}) returned null with {live} live blocks, used {} free {}",
                HEAP.used(),
                HEAP.free()
            );
            check!(
                (p as usize).is_multiple_of(align),
                "stress: {p:p} not aligned to {align}"
            );
            check!(
                (p as usize) >= core::ptr::addr_of!(HEAP_MEM) as usize
                    && (p as usize) + size <= core::ptr::addr_of!(HEAP_MEM) as usize + HEAP_SIZE,
                "stress: block {p:p}+{size} outside the heap"
            );
            fill(p, size, op);
            if cfg!(feature = "inject-failure") && !injected && op >= STRESS_OPS / 2 {
                // a deliberate corruption: the check before its free must catch it
                unsafe { p.write_volatile(!pattern(op, 0)) };
                injected = true;
            }
            slots[i] = Slot {
                ptr: p,
                size: size as u16,
                align: align as u16,
                tag: op,
            };
            live += 1;
        } else if rng.next_u32().is_multiple_of(8) {
            // realloc: the common prefix must survive
            let old = Layout::from_size_align(s.size as usize, s.align as usize).unwrap();
            let new_size = stress_size(&mut rng, STRESS_MAX);
            verify(s.ptr, s.size as usize, s.tag, "stress before realloc");
            let p = unsafe { realloc(s.ptr, old, new_size) };
            check!(
                !p.is_null(),
                "stress op {op}: realloc to {new_size} returned null, used {}",
                HEAP.used()
            );
            check!(
                (p as usize).is_multiple_of(s.align as usize),
                "stress: realloc lost alignment {}",
                s.align
            );
            verify(
                p,
                (s.size as usize).min(new_size),
                s.tag,
                "stress after realloc",
            );
            fill(p, new_size, op);
            slots[i] = Slot {
                ptr: p,
                size: new_size as u16,
                align: s.align,
                tag: op,
            };
            reallocs += 1;
        } else {
            verify(s.ptr, s.size as usize, s.tag, "stress before free");
            unsafe {
                dealloc(
                    s.ptr,
                    Layout::from_size_align(s.size as usize, s.align as usize).unwrap(),
                )
            };
            slots[i] = EMPTY;
            live -= 1;
        }
        peak_live = peak_live.max(live);
        if op.is_multiple_of(64) {
            peak_used = peak_used.max(HEAP.used());
        }
    }
    for s in slots.iter_mut() {
        if !s.ptr.is_null() {
            verify(s.ptr, s.size as usize, s.tag, "stress at the end");
            unsafe {
                dealloc(
                    s.ptr,
                    Layout::from_size_align(s.size as usize, s.align as usize).unwrap(),
                )
            };
            *s = EMPTY;
        }
    }
    hprintln!(
        "stress: peak {} live blocks, {} reallocs, peak used() {}",
        peak_live,
        reallocs,
        peak_used
    );
    check_no_leak("stress", base);
}

/// Allocates `size`-byte blocks through `alloc::alloc::alloc` until it returns null (or
/// the table is full: a failure), appending to the table from `start`. Returns the new end.
fn fill_until_null(start: usize, size: usize, what: &str) -> usize {
    let layout = Layout::from_size_align(size, 4).unwrap();
    let mut n = start;
    loop {
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            return n;
        }
        check!(
            n < TABLE,
            "{what}: more than {TABLE} blocks without a null (used {})",
            HEAP.used()
        );
        fill(p, size, n as u32);
        tset(n, p, size);
        n += 1;
    }
}
fn free_table(range: core::ops::Range<usize>, what: &str) {
    for i in range {
        let (p, size) = tget(i);
        if !p.is_null() {
            verify(p, size, i as u32, what);
            unsafe { dealloc(p, Layout::from_size_align(size, 4).unwrap()) };
            tset(i, core::ptr::null_mut(), 0);
        }
    }
}

/// Fills the heap until `alloc` returns null (512-, then 64-, then 8-byte blocks), checks
/// that used() is high, frees everything, checks used() is back, and fills again.
/// Returns the bytes reached.
fn oom(base: usize) -> usize {
    let mut fills = [0usize; 2];
    let mut counts = [[0usize; 3]; 2];
    for round in 0..2 {
        let a = fill_until_null(0, 512, "oom");
        let b = fill_until_null(a, 64, "oom");
        let c = fill_until_null(b, 8, "oom");
        // after a null, the heap still answers: a huge request fails, a free lets the
        // next allocation succeed
        // (black_box: the compiler may otherwise drop an unused allocation and take it
        // as successful)
        let huge_layout = Layout::from_size_align(HEAP_SIZE * 2, 4).unwrap();
        let huge = core::hint::black_box(unsafe { alloc(huge_layout) });
        check!(
            huge.is_null(),
            "oom: alloc of twice the heap did not return null"
        );
        let used = HEAP.used();
        counts[round] = [a, b - a, c - b];
        fills[round] = used;
        hprintln!(
            "oom round {}: null after {} x 512 + {} x 64 + {} x 8 bytes; used {} ({}% of {}), free {}",
            round,
            a,
            b - a,
            c - b,
            used,
            used * 100 / HEAP_SIZE,
            HEAP_SIZE,
            HEAP.free()
        );
        check!(a > 0, "oom: not even one 512-byte block");
        check!(
            used * 100 >= HEAP_SIZE * 60,
            "oom: alloc returned null with used() only {used} of {HEAP_SIZE} bytes"
        );
        check!(
            used >= a * 512 + (b - a) * 64 + (c - b) * 8,
            "oom: used() {used} below the bytes handed out"
        );
        // free one 512-byte block: a 512-byte allocation works again
        free_table(0..1, "oom");
        let again = unsafe { alloc(Layout::from_size_align(512, 4).unwrap()) };
        check!(!again.is_null(), "oom: no 512-byte block after freeing one");
        tset(0, again, 512);
        fill(again, 512, 0);
        free_table(0..c, "oom");
        check_no_leak("oom", base);
    }
    check!(
        counts[1][0] >= counts[0][0] * 9 / 10,
        "oom: after recovery only {} x 512 bytes fit (first time {})",
        counts[1][0],
        counts[0][0]
    );
    fills[0]
}

// ---- irq ------------------------------------------------------------------------------

static IRQ_ON: AtomicBool = AtomicBool::new(false);
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);
static IRQ_ALLOCS: AtomicU32 = AtomicU32::new(0);
/// Blocks allocated by the handler, freed by the main loop ...
static TO_MAIN: Mutex<RefCell<Option<Box<[u32]>>>> = Mutex::new(RefCell::new(None));
/// ... and allocated by the main loop, freed by the handler.
static TO_IRQ: Mutex<RefCell<Option<Vec<u8>>>> = Mutex::new(RefCell::new(None));
/// A failure seen in the handler (reported by the main loop).
static IRQ_FAIL: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    if !IRQ_ON.load(Ordering::Relaxed) {
        return;
    }
    let n = IRQ_COUNT.load(Ordering::Relaxed);
    // a Box and a Vec that live only inside the handler
    let b = Box::new([n; 6]);
    let mut v: Vec<u16> = Vec::with_capacity(4 + (n as usize % 40));
    for i in 0..v.capacity() {
        v.push(i as u16 ^ n as u16);
    }
    if b.iter().any(|&x| x != n) || v.iter().enumerate().any(|(i, &x)| x != i as u16 ^ n as u16) {
        IRQ_FAIL.store(1, Ordering::Relaxed);
    }
    drop(v);
    drop(b);
    critical_section::with(|cs| {
        // free what the main loop handed over (allocated in thread mode)
        if let Some(v) = TO_IRQ.borrow_ref_mut(cs).take() {
            if v.iter()
                .enumerate()
                .any(|(i, &x)| x != (i as u8).wrapping_add(v.len() as u8))
            {
                IRQ_FAIL.store(2, Ordering::Relaxed);
            }
            drop(v);
        }
        // hand the main loop a block to free
        let mut to_main = TO_MAIN.borrow_ref_mut(cs);
        if to_main.is_none() {
            let len = 1 + (n as usize % 24);
            let blk: Box<[u32]> = (0..len as u32).map(|i| i.wrapping_mul(n)).collect();
            *to_main = Some(blk);
        }
    });
    // (no read-modify-write atomics on Cortex-M0; only this handler writes it)
    IRQ_ALLOCS.store(IRQ_ALLOCS.load(Ordering::Relaxed) + 3, Ordering::Relaxed);
    IRQ_COUNT.store(n + 1, Ordering::Relaxed);
}

/// SysTick fires every few thousand cycles; its handler allocates and frees a Box and a
/// Vec, frees a block the main loop allocated and allocates one the main loop frees;
/// meanwhile the main loop runs a content-checked alloc/free churn.
fn irq(base: usize, syst: &mut cortex_m::peripheral::SYST) {
    IRQ_COUNT.store(0, Ordering::Relaxed);
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYST_RELOAD);
    syst.clear_current();
    IRQ_ON.store(true, Ordering::SeqCst);
    syst.enable_interrupt();
    syst.enable_counter();

    let mut rng = Rng::new(SEED ^ 0x1234_5678);
    let slots = &mut slots()[..IRQ_LIVE];
    let mut main_ops = 0u32;
    let mut from_irq = 0u32;
    let limit = 400_000u32;
    while IRQ_COUNT.load(Ordering::Relaxed) < IRQ_TARGET || main_ops < 2_000 {
        check!(
            main_ops < limit,
            "irq: SysTick handler ran {} times in {main_ops} main-loop operations",
            IRQ_COUNT.load(Ordering::Relaxed)
        );
        let f = IRQ_FAIL.load(Ordering::Relaxed);
        check!(f == 0, "irq: the handler saw a corrupted block (check {f})");
        let i = rng.next_u32() as usize % IRQ_LIVE;
        let s = slots[i];
        if s.ptr.is_null() {
            let size = stress_size(&mut rng, 64);
            let p = unsafe { alloc(Layout::from_size_align(size, 4).unwrap()) };
            check!(
                !p.is_null(),
                "irq: main-loop alloc({size}) returned null, used {}",
                HEAP.used()
            );
            fill(p, size, main_ops);
            slots[i] = Slot {
                ptr: p,
                size: size as u16,
                align: 4,
                tag: main_ops,
            };
        } else {
            verify(s.ptr, s.size as usize, s.tag, "irq main loop");
            unsafe { dealloc(s.ptr, Layout::from_size_align(s.size as usize, 4).unwrap()) };
            slots[i] = EMPTY;
        }
        if main_ops.is_multiple_of(16) {
            // take the handler's block (allocated in handler mode) and free it here
            let got = critical_section::with(|cs| TO_MAIN.borrow_ref_mut(cs).take());
            if let Some(b) = got {
                let n = b.len() as u32;
                let k = if n > 1 { b[1] } else { 0 };
                check!(
                    b.iter()
                        .enumerate()
                        .all(|(i, &x)| x == (i as u32).wrapping_mul(k)),
                    "irq: block from the handler corrupted ({n} words)"
                );
                from_irq += 1;
                drop(b);
            }
            // hand the handler a block to free
            let len = 1 + (main_ops as usize % 40);
            let v: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_add(len as u8))
                .collect();
            let old = critical_section::with(|cs| TO_IRQ.borrow_ref_mut(cs).replace(v));
            drop(old);
        }
        main_ops += 1;
    }
    syst.disable_interrupt();
    syst.disable_counter();
    IRQ_ON.store(false, Ordering::SeqCst);
    let f = IRQ_FAIL.load(Ordering::Relaxed);
    check!(f == 0, "irq: the handler saw a corrupted block (check {f})");
    for s in slots.iter_mut() {
        if !s.ptr.is_null() {
            verify(s.ptr, s.size as usize, s.tag, "irq at the end");
            unsafe { dealloc(s.ptr, Layout::from_size_align(s.size as usize, 4).unwrap()) };
            *s = EMPTY;
        }
    }
    critical_section::with(|cs| {
        TO_MAIN.borrow_ref_mut(cs).take();
        TO_IRQ.borrow_ref_mut(cs).take();
    });
    let n = IRQ_COUNT.load(Ordering::Relaxed);
    hprintln!(
        "irq: handler ran {} times ({} allocations in it), main loop {} operations, {} blocks freed across contexts",
        n,
        IRQ_ALLOCS.load(Ordering::Relaxed),
        main_ops,
        from_irq
    );
    check!(
        n > 0 && from_irq > 0,
        "irq: handler ran {n} times, {from_irq} blocks came from it"
    );
    check_no_leak("irq", base);
}

// ---- frag -----------------------------------------------------------------------------

/// Fills the heap with alternating 16- and 256-byte blocks until null, frees every
/// 256-byte one, then allocates 96-byte blocks until null: no null may come while the
/// live bytes are under half the heap.
fn frag(base: usize) {
    const SMALL: usize = 16;
    const LARGE: usize = 256;
    const MID: usize = 96;
    let mut n = 0;
    'fill: loop {
        for size in [SMALL, LARGE] {
            let p = unsafe { alloc(Layout::from_size_align(size, 4).unwrap()) };
            if p.is_null() {
                break 'fill;
            }
            check!(n < TABLE, "frag: more than {TABLE} blocks without a null");
            fill(p, size, n as u32);
            tset(n, p, size);
            n += 1;
        }
    }
    let full = HEAP.used();
    let mut freed = 0;
    for i in 0..n {
        if tget(i).1 == LARGE {
            free_table(i..i + 1, "frag");
            freed += 1;
        }
    }
    let after_free = HEAP.used();
    // refill with mid sizes
    let mut mids = 0;
    let mut requested_live = 0usize;
    for i in 0..n {
        let live_bytes = HEAP.used();
        if tget(i).0.is_null() {
            let p = unsafe { alloc(Layout::from_size_align(MID, 4).unwrap()) };
            if p.is_null() {
                check!(
                    (live_bytes + MID) * 2 >= HEAP_SIZE,
                    "frag: alloc({MID}) returned null with only {live_bytes} live bytes of {HEAP_SIZE}"
                );
                break;
            }
            fill(p, MID, i as u32);
            tset(i, p, MID);
            mids += 1;
            requested_live += MID;
        }
    }
    // keep going past the table's holes while the heap gives
    let end = fill_until_null(n, MID, "frag");
    mids += end - n;
    let reached = HEAP.used();
    hprintln!(
        "frag: {} blocks (16/256) reached used {}; {} x 256 freed -> used {}; {} x 96 refilled -> live bytes reached {} ({}% of heap)",
        n,
        full,
        freed,
        after_free,
        mids,
        reached,
        reached * 100 / HEAP_SIZE
    );
    let _ = requested_live;
    check!(
        reached * 2 >= HEAP_SIZE,
        "frag: only {reached} live bytes reached after the refill"
    );
    free_table(0..end, "frag");
    check_no_leak("frag", base);
}

// ---- region ---------------------------------------------------------------------------

/// A second region through `add_region`: a 64-byte fill afterwards reaches further than
/// the first region alone allowed.
#[cfg(all(feature = "shardalloc", not(board = "microbit")))]
fn region(base: usize, first_fill: usize) {
    const REGION2_SIZE: usize = HEAP_MEM_SIZE - HEAP_SIZE;
    let start = core::ptr::addr_of_mut!(HEAP_MEM) as usize + HEAP_SIZE;
    // SAFETY: the rest of the array, given to nothing before, handed over once.
    unsafe { HEAP.add_region(start, REGION2_SIZE) };
    let free = HEAP.free();
    hprintln!(
        "region: added {} bytes at {:#010x}; free() now {}",
        REGION2_SIZE,
        start,
        free
    );
    let n = fill_until_null(0, 64, "region");
    let used = HEAP.used();
    let mut in_second = 0;
    for p in (0..n).map(|i| tget(i).0) {
        if (p as usize) >= start && (p as usize) < start + REGION2_SIZE {
            in_second += 1;
        }
    }
    hprintln!(
        "region: {} x 64 bytes until null, used {} (first region alone: {}), {} blocks in the second region",
        n,
        used,
        first_fill,
        in_second
    );
    check!(in_second > 0, "region: no block came from the added region");
    check!(
        used > first_fill,
        "region: the fill reached {used} bytes, no more than the first region alone ({first_fill})"
    );
    free_table(0..n, "region");
    check_no_leak("region", base);
}
