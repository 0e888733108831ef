//! Application processors: bring-up with INIT-SIPI-SIPI, a way to run a job on every CPU at
//! once, and the TLB shootdown the `frames` page source needs.
//!
//! CPUs come from the ACPI MADT (RSDP from the PVH start info). The BSP starts the APs one
//! at a time, each on its own stack, and gives them indices 1, 2, ... in MADT order. An idle
//! AP halts with interrupts on; [`run_on_all`] wakes it with an IPI.
//!
//! TLB shootdown uses NMIs: the page source unmaps pages while holding its lock with
//! interrupts off, and another CPU may be spinning on that lock with interrupts off too, so
//! an ordinary IPI could deadlock. An NMI is taken even then.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use x86_64::VirtAddr;

use crate::{acpi, apic, boot, cpu, idt};

static ONLINE: AtomicUsize = AtomicUsize::new(1);
static BOOTING_INDEX: AtomicUsize = AtomicUsize::new(0);
static AP_READY: AtomicBool = AtomicBool::new(false);

/// Number of CPUs running (the BSP and the started APs).
pub fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// Starts every AP the MADT lists (up to `cpu::MAX_CPUS` CPUs in all).
pub fn start_aps(rsdp: u64) {
    let list = match acpi::cpus(rsdp) {
        Ok(l) => l,
        Err(e) => {
            println!("smp: {e}; running on the BSP only");
            return;
        }
    };
    let bsp = apic::id();
    // SAFETY: the trampoline page (0x8000) is low RAM below the kernel that the frame
    // allocator never hands out, and no AP runs yet.
    unsafe { boot::install_ap_trampoline(ap_entry) };
    for &id in &list.ids[..list.count] {
        if id == bsp {
            continue;
        }
        let index = online();
        if index >= cpu::MAX_CPUS {
            println!(
                "smp: more than {} CPUs; the rest stay parked",
                cpu::MAX_CPUS
            );
            break;
        }
        BOOTING_INDEX.store(index, Ordering::SeqCst);
        AP_READY.store(false, Ordering::SeqCst);
        // SAFETY: the previous AP has signalled ready (it runs on its own stack by then), so
        // no AP reads the slot meanwhile.
        unsafe { boot::set_ap_stack(cpu::ap_stack_top(index)) };
        apic::send_ipi(id, apic::ICR_INIT);
        apic::delay_us(10_000);
        let vector = (boot::AP_TRAMPOLINE >> 12) as u32;
        for _ in 0..2 {
            apic::send_ipi(id, apic::ICR_SIPI | vector);
            apic::delay_us(200);
        }
        let mut waited_ms = 0;
        while !AP_READY.load(Ordering::SeqCst) && waited_ms < 2000 {
            apic::delay_us(1000);
            waited_ms += 1;
        }
        // A CPU the machine has but that does not come up fails the run: every scenario
        // that runs "on every CPU" would silently run on fewer.
        assert!(
            AP_READY.load(Ordering::SeqCst),
            "smp: CPU with LAPIC ID {id} did not start"
        );
        ONLINE.fetch_add(1, Ordering::SeqCst);
    }
}

extern "C" fn ap_entry() -> ! {
    let index = BOOTING_INDEX.load(Ordering::SeqCst);
    cpu::init_this_cpu(index, apic::id());
    idt::load();
    apic::enable();
    AP_READY.store(true, Ordering::SeqCst);
    ap_loop(index)
}

static JOB: AtomicUsize = AtomicUsize::new(0);
static JOB_GEN: AtomicUsize = AtomicUsize::new(0);
static JOB_DONE: AtomicUsize = AtomicUsize::new(0);

fn ap_loop(index: usize) -> ! {
    let mut seen = 0;
    loop {
        x86_64::instructions::interrupts::disable();
        let gen = JOB_GEN.load(Ordering::SeqCst);
        if gen == seen {
            // `sti; hlt`: a wake-up IPI sent after the check above still ends the halt.
            x86_64::instructions::interrupts::enable_and_hlt();
            continue;
        }
        x86_64::instructions::interrupts::enable();
        seen = gen;
        let job = JOB.load(Ordering::SeqCst);
        // SAFETY: JOB only ever holds a `fn(usize)` stored by run_on_all before it bumped
        // JOB_GEN.
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(job) };
        f(index);
        JOB_DONE.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f(cpu_index)` on every online CPU at the same time (the BSP included) and returns
/// when all have finished. Called from the BSP only.
pub fn run_on_all(f: fn(usize)) {
    assert_eq!(cpu::current(), 0, "run_on_all is for the BSP");
    let n = online();
    JOB.store(f as usize, Ordering::SeqCst);
    JOB_DONE.store(0, Ordering::SeqCst);
    JOB_GEN.fetch_add(1, Ordering::SeqCst);
    for i in 1..n {
        apic::send_ipi(cpu::apic_id(i), apic::ICR_FIXED | idt::VEC_WAKE as u32);
    }
    f(0);
    while JOB_DONE.load(Ordering::SeqCst) < n - 1 {
        core::hint::spin_loop();
    }
}

static SHOOTDOWN_ACKS: AtomicUsize = AtomicUsize::new(0);
static SHOOTDOWN_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Makes every other CPU flush its TLB, and waits until all did. The `frames` page source
/// calls it after unmapping pages and before giving their frames back.
pub fn tlb_shootdown(_start: VirtAddr, _size: usize) {
    let n = online();
    if n <= 1 {
        return;
    }
    let me = cpu::current();
    let _one_at_a_time = SHOOTDOWN_LOCK.lock();
    SHOOTDOWN_ACKS.store(0, Ordering::SeqCst);
    for i in (0..n).filter(|&i| i != me) {
        apic::send_ipi(cpu::apic_id(i), apic::ICR_NMI);
    }
    while SHOOTDOWN_ACKS.load(Ordering::SeqCst) < n - 1 {
        core::hint::spin_loop();
    }
}

/// The NMI handler: flush this CPU's TLB and say so.
pub fn on_nmi() {
    x86_64::instructions::tlb::flush_all();
    SHOOTDOWN_ACKS.fetch_add(1, Ordering::SeqCst);
}

static OVERLAP_STOP: AtomicBool = AtomicBool::new(false);
static OVERLAP_RESULT: AtomicUsize = AtomicUsize::new(0);
static OVERLAP_COUNTERS: [AtomicUsize; cpu::MAX_CPUS] =
    [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];
static OVERLAP_WINDOW: AtomicU64 = AtomicU64::new(0);
static OVERLAP_WINDOWS: AtomicUsize = AtomicUsize::new(0);

/// Changes in one window that show the CPUs run at the same time.
pub const OVERLAP_THRESHOLD: usize = 1000;

/// Whether the CPUs really run at the same time: in windows of `us` microseconds (TSC)
/// the BSP reads counters that the other CPUs increment meanwhile, and counts how often it
/// sees their sum change. Where the vCPUs take turns on one host thread (`-accel
/// tcg,thread=single`), the BSP runs a window alone and sees (almost) nothing change;
/// where they overlap (`thread=multi`, or hardware), it sees thousands of changes, as soon
/// as the host runs two of their threads at once (on a busy host not in every window: up
/// to `windows` windows are tried, until one reaches `OVERLAP_THRESHOLD`).
/// Returns the most changes seen in a window (0 on one CPU).
pub fn measure_overlap(us: u64, windows: usize, tsc_per_us: u64) -> usize {
    if online() < 2 {
        return 0;
    }
    OVERLAP_STOP.store(false, Ordering::SeqCst);
    OVERLAP_RESULT.store(0, Ordering::SeqCst);
    OVERLAP_WINDOW.store(us * tsc_per_us, Ordering::SeqCst);
    OVERLAP_WINDOWS.store(windows.max(1), Ordering::SeqCst);
    run_on_all(|cpu| {
        if cpu != 0 {
            // One writer per counter: a plain store is enough.
            let c = &OVERLAP_COUNTERS[cpu];
            let mut n = c.load(Ordering::Relaxed);
            while !OVERLAP_STOP.load(Ordering::Relaxed) {
                n += 1;
                c.store(n, Ordering::Relaxed);
            }
            return;
        }
        let sum = || -> usize {
            OVERLAP_COUNTERS[1..online()]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum()
        };
        let window = OVERLAP_WINDOW.load(Ordering::SeqCst);
        let mut best = 0;
        for _ in 0..OVERLAP_WINDOWS.load(Ordering::SeqCst) {
            let end = apic::rdtsc() + window;
            let (mut last, mut changes) = (sum(), 0);
            while apic::rdtsc() < end {
                let s = sum();
                if s != last {
                    changes += 1;
                    last = s;
                }
            }
            best = best.max(changes);
            if best >= OVERLAP_THRESHOLD {
                break;
            }
        }
        OVERLAP_RESULT.store(best, Ordering::SeqCst);
        OVERLAP_STOP.store(true, Ordering::SeqCst);
    });
    OVERLAP_RESULT.load(Ordering::SeqCst)
}
