//! The interrupt descriptor table, with naked-function entry stubs (`extern "x86-interrupt"`
//! is nightly-only).
//!
//! Each stub pushes a dummy error code (when the CPU pushes none) and its vector, then jumps
//! to [`common_entry`], which saves the general registers as a [`TrapFrame`] and calls
//! [`dispatch`]. Faults print what happened (vector, error code, RIP, CR2, a backtrace) to
//! COM1 and fail the run; the double fault runs on its own stack (IST 1).

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::instructions::segmentation::{Segment, CS};
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use crate::{apic, cpu, exit, serial, smp};

/// LAPIC timer interrupt.
pub const VEC_TIMER: u8 = 0x30;
/// IPI that wakes a halted AP to look for work.
pub const VEC_WAKE: u8 = 0x40;
/// Software interrupts (self-IPIs) with their own hooks, for the bench and the nested
/// interrupt scenario: the LAPIC delivers 0x60 while a handler of 0x50 runs with interrupts
/// on, and 0x50 while one of 0x30 (the timer) does (higher priority class).
pub const VEC_SOFT: u8 = 0x50;
pub const VEC_SOFT_HIGH: u8 = 0x60;
/// LAPIC spurious interrupt.
pub const VEC_SPURIOUS: u8 = 0xFF;

/// The registers of the interrupted code, as `common_entry` leaves them on the stack.
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Saves the scratch and callee-saved registers, raises the CPU's interrupt level
/// (`cpu::level`, read by the allocator to pick the heap of this level), calls
/// `dispatch(&mut TrapFrame)`, lowers the level, restores the registers and returns from the
/// interrupt. The level changes while interrupts are off (every gate is an interrupt gate,
/// and a handler that enables interrupts disables them again before it returns), so a
/// nested interrupt always returns the level to what the code it interrupted saw. Stack alignment: the CPU aligns RSP to 16 before
/// pushing its 5-word frame; with the error code, vector and 15 registers (22 words in all)
/// RSP is 16-aligned again at the `call`.
#[unsafe(naked)]
unsafe extern "C" fn common_entry() {
    core::arch::naked_asm!(
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "inc qword ptr gs:[8]",
        "call {dispatch}",
        "dec qword ptr gs:[8]",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym dispatch,
    );
}

macro_rules! stub {
    ($name:ident, $vector:expr) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                "push 0",
                "push {v}",
                "jmp {common}",
                v = const $vector,
                common = sym common_entry,
            );
        }
    };
    ($name:ident, $vector:expr, error_code) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                "push {v}",
                "jmp {common}",
                v = const $vector,
                common = sym common_entry,
            );
        }
    };
}

stub!(isr0, 0);
stub!(isr1, 1);
stub!(isr2, 2);
stub!(isr3, 3);
stub!(isr4, 4);
stub!(isr5, 5);
stub!(isr6, 6);
stub!(isr7, 7);
stub!(isr8, 8, error_code);
stub!(isr10, 10, error_code);
stub!(isr11, 11, error_code);
stub!(isr12, 12, error_code);
stub!(isr13, 13, error_code);
stub!(isr14, 14, error_code);
stub!(isr16, 16);
stub!(isr17, 17, error_code);
stub!(isr18, 18);
stub!(isr19, 19);
stub!(isr_timer, VEC_TIMER);
stub!(isr_wake, VEC_WAKE);
stub!(isr_soft, VEC_SOFT);
stub!(isr_soft_high, VEC_SOFT_HIGH);
stub!(isr_spurious, VEC_SPURIOUS);
stub!(isr_other, 0x100);

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attrs: u8,
    offset_mid: u16,
    offset_high: u32,
    zero: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attrs: 0,
        offset_mid: 0,
        offset_high: 0,
        zero: 0,
    };

    /// A present DPL-0 interrupt gate (interrupts off in the handler).
    fn new(handler: unsafe extern "C" fn(), selector: u16, ist: u8) -> Gate {
        let a = handler as usize as u64;
        Gate {
            offset_low: a as u16,
            selector,
            ist,
            attrs: 0x8E,
            offset_mid: (a >> 16) as u16,
            offset_high: (a >> 32) as u32,
            zero: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: written only by `init` on the BSP before any other CPU runs or loads it;
// read-only (by the CPUs) afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

/// Fills the IDT. Called once, on the BSP, before `load`.
pub fn init() {
    let cs = CS::get_reg().0;
    // SAFETY: no CPU has loaded the IDT yet (see `Idt`), so nothing reads it meanwhile.
    let idt = unsafe { &mut *IDT.0.get() };
    let other: unsafe extern "C" fn() = isr_other;
    for g in idt.iter_mut() {
        *g = Gate::new(other, cs, 0);
    }
    let set: [(usize, unsafe extern "C" fn()); 23] = [
        (0, isr0),
        (1, isr1),
        (2, isr2),
        (3, isr3),
        (4, isr4),
        (5, isr5),
        (6, isr6),
        (7, isr7),
        (8, isr8),
        (10, isr10),
        (11, isr11),
        (12, isr12),
        (13, isr13),
        (14, isr14),
        (16, isr16),
        (17, isr17),
        (18, isr18),
        (19, isr19),
        (VEC_TIMER as usize, isr_timer),
        (VEC_WAKE as usize, isr_wake),
        (VEC_SOFT as usize, isr_soft),
        (VEC_SOFT_HIGH as usize, isr_soft_high),
        (VEC_SPURIOUS as usize, isr_spurious),
    ];
    for (v, h) in set {
        idt[v] = Gate::new(h, cs, if v == 8 { cpu::DF_IST } else { 0 });
    }
}

/// Loads the IDT on the calling CPU.
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the IDT is 'static, filled by `init`, and its gates point at the stubs above.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// The handler the LAPIC timer interrupt calls (a `fn()`, stored as usize; 0 = none).
static TIMER_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Sets what the timer interrupt runs (on whichever CPU it fires).
pub fn set_timer_hook(f: Option<fn()>) {
    TIMER_HOOK.store(f.map_or(0, |f| f as usize), Ordering::SeqCst);
}

/// The handlers of the software interrupts `VEC_SOFT` and `VEC_SOFT_HIGH` (0 = none).
static SOFT_HOOK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Sets what the software interrupt `vector` (`VEC_SOFT` or `VEC_SOFT_HIGH`) runs.
pub fn set_soft_hook(vector: u8, f: Option<fn()>) {
    let i = if vector == VEC_SOFT_HIGH { 1 } else { 0 };
    assert!(vector == VEC_SOFT || vector == VEC_SOFT_HIGH);
    SOFT_HOOK[i].store(f.map_or(0, |f| f as usize), Ordering::SeqCst);
}

fn run_hook(hook: &AtomicUsize) {
    let hook = hook.load(Ordering::SeqCst);
    if hook != 0 {
        // SAFETY: the hooks only ever hold 0 or a `fn()` (set_timer_hook, set_soft_hook).
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        f();
    }
}

extern "C" fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        2 => smp::on_nmi(),
        v if v == VEC_TIMER as u64 => {
            let hook = TIMER_HOOK.load(Ordering::SeqCst);
            if hook != 0 {
                // SAFETY: TIMER_HOOK only ever holds 0 or a `fn()` (set_timer_hook).
                let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
                f();
            }
            apic::eoi();
        }
        v if v == VEC_WAKE as u64 => apic::eoi(),
        v if v == VEC_SOFT as u64 => {
            run_hook(&SOFT_HOOK[0]);
            apic::eoi();
        }
        v if v == VEC_SOFT_HIGH as u64 => {
            run_hook(&SOFT_HOOK[1]);
            apic::eoi();
        }
        v if v == VEC_SPURIOUS as u64 => {}
        _ => fault(frame),
    }
}

fn name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "unexpected interrupt",
    }
}

fn fault(f: &TrapFrame) -> ! {
    let mut w = serial::force_writer();
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let _ = writeln!(
        w,
        "\n!!! FAULT on cpu {}: {} (vector {}), error code {:#x}\n    RIP {:#018x}  CR2 {:#018x}  RSP {:#018x}  RFLAGS {:#x}",
        cpu::current(),
        name(f.vector),
        f.vector,
        f.error,
        f.rip,
        cr2,
        f.rsp,
        f.rflags
    );
    if f.vector == 14 {
        let e = f.error;
        let _ = writeln!(
            w,
            "    page fault: {} {} {}{}",
            if e & 1 != 0 {
                "protection violation"
            } else {
                "page not present"
            },
            if e & 2 != 0 { "on write" } else { "on read" },
            if e & 16 != 0 {
                "(instruction fetch)"
            } else {
                ""
            },
            if e & 8 != 0 {
                " (reserved bit set)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        w,
        "    RAX {:#x} RBX {:#x} RCX {:#x} RDX {:#x} RSI {:#x} RDI {:#x} RBP {:#x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
    );
    backtrace(&mut w, f.rbp);
    let _ = writeln!(w, "FAIL: fault");
    exit::failure()
}

/// Prints return addresses along the frame-pointer chain (the kernel is built with frame
/// pointers), stopping at anything that does not look like a stack frame of ours.
pub fn backtrace(w: &mut serial::Com1, mut rbp: u64) {
    let _ = write!(w, "    backtrace:");
    for _ in 0..24 {
        if !rbp.is_multiple_of(8) || !(0x10_0000..0x1_0000_0000).contains(&rbp) {
            break;
        }
        // SAFETY: rbp is 8-aligned and inside the identity-mapped low 4 GiB (checked above),
        // so reading two words there cannot fault; a garbage chain only prints garbage.
        let (next, ret) = unsafe {
            (
                (rbp as *const u64).read(),
                (rbp as *const u64).add(1).read(),
            )
        };
        let _ = write!(w, " {:#x}", ret);
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    let _ = writeln!(w);
}
