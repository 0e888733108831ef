//! The local APIC (xAPIC, memory-mapped at 0xFEE00000, identity-mapped uncached by the
//! boot trampoline), the PIT as a delay source, and the TSC.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x86_64::instructions::port::Port;

const LAPIC: u64 = 0xFEE0_0000;
const ID: u32 = 0x20;
const EOI: u32 = 0xB0;
const SVR: u32 = 0xF0;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const TIMER_INIT: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIV: u32 = 0x3E0;

fn read(reg: u32) -> u32 {
    // SAFETY: the LAPIC register page is identity-mapped (uncached) by the boot page tables;
    // `reg` is one of the register offsets above, a 4-byte aligned MMIO register.
    unsafe { core::ptr::read_volatile((LAPIC + reg as u64) as *const u32) }
}

fn write(reg: u32, val: u32) {
    // SAFETY: as in `read`; writes to these registers only affect this CPU's LAPIC.
    unsafe { core::ptr::write_volatile((LAPIC + reg as u64) as *mut u32, val) }
}

/// Enables the calling CPU's LAPIC (spurious vector register).
pub fn enable() {
    write(SVR, 0x100 | crate::idt::VEC_SPURIOUS as u32);
}

/// Masks every line of the legacy 8259 PICs (the LAPIC does interrupts here).
pub fn mask_legacy_pic() {
    // SAFETY: writing the interrupt mask registers of both 8259s (ports 0x21, 0xA1) only
    // masks their lines; nothing else uses them.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
}

/// LAPIC ID of the calling CPU.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Signals the end of the current interrupt.
pub fn eoi() {
    write(EOI, 0);
}

fn wait_icr_idle() {
    while read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Sends an IPI: `low` is the ICR low word (vector, delivery mode, shorthand),
/// `dest` the destination LAPIC ID (ignored with a shorthand).
pub fn send_ipi(dest: u32, low: u32) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        wait_icr_idle();
        write(ICR_HIGH, dest << 24);
        write(ICR_LOW, low);
        wait_icr_idle();
    });
}

/// Sends interrupt `vector` to the calling CPU (delivered once interrupts are on).
pub fn send_self(vector: u8) {
    send_ipi(id(), ICR_FIXED | vector as u32);
}

/// ICR: INIT, level assert.
pub const ICR_INIT: u32 = 0x0000_4500;
/// ICR: STARTUP (SIPI); or the vector (page number of the trampoline) in.
pub const ICR_SIPI: u32 = 0x0000_4600;
/// ICR: NMI delivery.
pub const ICR_NMI: u32 = 0x0000_0400;
/// ICR: fixed delivery (or the vector in).
pub const ICR_FIXED: u32 = 0x0000_0000;

/// Starts the LAPIC timer in periodic mode: one interrupt `vector` every `count` ticks of
/// the bus clock divided by 16.
pub fn timer_start(vector: u8, count: u32) {
    write(TIMER_DIV, 0x3); // divide by 16
    write(LVT_TIMER, (1 << 17) | vector as u32); // periodic
    write(TIMER_INIT, count);
}

/// Stops the LAPIC timer.
pub fn timer_stop() {
    write(LVT_TIMER, 1 << 16); // masked
    write(TIMER_INIT, 0);
}

/// Busy-waits `us` microseconds on PIT channel 2 (mode 0, gate through port 0x61).
fn pit_delay_us(mut us: u64) {
    const PIT_HZ: u64 = 1_193_182;
    while us > 0 {
        let chunk = us.min(50_000);
        us -= chunk;
        let ticks = (chunk * PIT_HZ / 1_000_000).clamp(1, 0xFFFF) as u16;
        // SAFETY: ports 0x61 (speaker/gate control), 0x43 (PIT mode) and 0x42 (channel 2
        // counter) belong to the PIT; only this function uses channel 2, on one CPU at a time
        // (it is called from the BSP during bring-up and calibration only).
        unsafe {
            let mut ctl: Port<u8> = Port::new(0x61);
            let v = ctl.read();
            ctl.write((v & !0x02) & !0x01); // gate low, speaker off
            Port::<u8>::new(0x43).write(0b1011_0000); // ch 2, lo/hi byte, mode 0, binary
            let mut ch2: Port<u8> = Port::new(0x42);
            ch2.write(ticks as u8);
            ch2.write((ticks >> 8) as u8);
            ctl.write((v & !0x02) | 0x01); // gate high: count
            while ctl.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            ctl.write(v & !0x03);
        }
    }
}

/// Busy-waits `us` microseconds on the calling CPU's LAPIC timer (one-shot, masked,
/// divide by 1), taking QEMU's APIC bus clock of 1 GHz. Only for bring-up: it stops the
/// timer's periodic mode.
fn lapic_delay_us(mut us: u64) {
    while us > 0 {
        let chunk = us.min(4_000_000);
        us -= chunk;
        write(TIMER_DIV, 0b1011); // divide by 1
        write(LVT_TIMER, 1 << 16); // one-shot, masked
        write(TIMER_INIT, (chunk * 1000) as u32);
        while read(TIMER_CURRENT) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// The PIT does not count here (e.g. `-machine microvm`): delays use the LAPIC timer.
static LAPIC_CLOCK: AtomicBool = AtomicBool::new(false);

/// Busy-waits `us` microseconds (PIT, or the LAPIC timer where the PIT does not count).
pub fn delay_us(us: u64) {
    if LAPIC_CLOCK.load(Ordering::Relaxed) {
        lapic_delay_us(us)
    } else {
        pit_delay_us(us)
    }
}

/// TSC ticks per microsecond, measured over 10 ms of the PIT; where the PIT does not
/// count (the 10 ms pass in under a quarter of the time the LAPIC timer takes), of the
/// LAPIC timer, which then also serves [`delay_us`]. Call on the BSP, LAPIC enabled.
pub fn calibrate_tsc() -> u64 {
    let t0 = rdtsc();
    pit_delay_us(10_000);
    let t1 = rdtsc();
    lapic_delay_us(10_000);
    let t2 = rdtsc();
    let (pit, lapic) = (t1 - t0, t2 - t1);
    let per_us = if pit * 4 < lapic {
        LAPIC_CLOCK.store(true, Ordering::Relaxed);
        (lapic / 10_000).max(1)
    } else {
        (pit / 10_000).max(1)
    };
    TSC_PER_MS.store(per_us * 1000, Ordering::Relaxed);
    per_us
}

/// TSC ticks per millisecond (1 GHz until `calibrate_tsc` measured it).
static TSC_PER_MS: AtomicU64 = AtomicU64::new(1_000_000);

/// Milliseconds since boot, from the TSC: the allocator's clock for its purge delay.
pub fn millis() -> u64 {
    rdtsc() / TSC_PER_MS.load(Ordering::Relaxed)
}

/// The time stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
