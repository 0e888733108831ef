//! shardalloc-kernel: a tiny x86_64 kernel that boots under QEMU (PVH), installs shardalloc
//! as its global allocator over the `frames` page source, brings up all CPUs, runs the
//! scenarios named on the command line (`run=smoke,stress` or `run=all`, `seed=N`), prints
//! to COM1 and leaves QEMU through `isa-debug-exit` (status 33 = success).
//!
//! Build and run: `targets/x86_64-qemu/run.sh -m 64M -smp 2 -append "run=all"`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "shardalloc-kernel is a bare-metal kernel: build it with \
         `cargo build --release -p shardalloc-kernel --target x86_64-unknown-none` \
         and boot it with targets/x86_64-qemu/run.sh"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
#[macro_use]
mod serial;
#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod adopt;
#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod phys;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod pvh;
#[cfg(target_os = "none")]
mod rng;
#[cfg(target_os = "none")]
mod scenario;
#[cfg(target_os = "none")]
mod smp;

/// The first Rust code, on the BSP, called by the long-mode trampoline with the physical
/// address of `hvm_start_info`.
#[cfg(target_os = "none")]
#[no_mangle]
pub extern "C" fn kernel_main(start_info: u32) -> ! {
    serial::init();
    cpu::init_this_cpu(0, apic::id());
    idt::init();
    idt::load();
    // SAFETY: `start_info` is what the PVH entry got in %ebx; nothing has touched low memory
    // yet (the .bss zeroing covers only the kernel image).
    let info = match unsafe { pvh::read(start_info as u64) } {
        Ok(i) => i,
        Err(e) => fail(e),
    };
    println!(
        "shardalloc-kernel: cmdline \"{}\"; debug assertions {}",
        info.cmdline(),
        if cfg!(debug_assertions) { "on" } else { "off" }
    );
    println!("memory map: {}", platform::MemoryMap(&info));
    println!("machine: {}", platform::probe(&info));
    mem::init(&info);
    apic::mask_legacy_pic();
    apic::enable();
    x86_64::instructions::interrupts::enable();
    let tsc_per_us = apic::calibrate_tsc();
    smp::start_aps(info.rsdp);
    heap::init();
    println!(
        "cpus: {} online; allocator: {}; TSC {} MHz",
        smp::online(),
        heap::name(),
        tsc_per_us
    );
    let args = scenario::Args::parse(info.cmdline(), tsc_per_us);
    if smp::online() > 1 {
        let changes = smp::measure_overlap(5_000, (args.overlap_ms / 5) as usize, tsc_per_us);
        println!(
            "cpus: run at the same time: {} (the BSP saw the others' counters change up to {} times in 5 ms)",
            if changes >= smp::OVERLAP_THRESHOLD { "yes" } else { "no" },
            changes
        );
    }
    scenario::run(&args);
    println!("PASS");
    exit::success()
}

#[cfg(target_os = "none")]
fn fail(msg: &str) -> ! {
    println!("FAIL: {msg}");
    exit::failure()
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut w = serial::force_writer();
    // One line for the message (then where): `!!! PANIC on cpu N: MESSAGE (at FILE:LINE:COL)`.
    let _ = write!(
        w,
        "\n!!! PANIC on cpu {}: {}",
        cpu::current(),
        info.message()
    );
    match info.location() {
        Some(l) => {
            let _ = writeln!(w, " (at {}:{}:{})", l.file(), l.line(), l.column());
        }
        None => {
            let _ = writeln!(w);
        }
    }
    let rbp: u64;
    // SAFETY: reads the frame pointer register, nothing else.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack)) };
    idt::backtrace(&mut w, rbp);
    let _ = writeln!(w, "FAIL: panic");
    exit::failure()
}
