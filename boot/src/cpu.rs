//! Per-CPU state: the index (read through the GS base), a GDT and TSS per CPU (the TSS
//! gives the double-fault handler its own stack), and the stacks of the APs.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::GsBase;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// Most CPUs the kernel runs on (more are left parked).
pub const MAX_CPUS: usize = 8;
/// Stack of each AP.
pub const AP_STACK_SIZE: usize = 128 * 1024;
/// Stack of the double-fault handler (IST 1), per CPU.
const DF_STACK_SIZE: usize = 16 * 1024;
/// IST slot (1-based in the IDT, 0-based in the TSS) of the double-fault handler.
pub const DF_IST: u8 = 1;

/// What the GS base of a CPU points at. `index` is at offset 0: [`current`] reads `gs:[0]`;
/// `level` at offset 8 is the interrupt nesting depth (0: the CPU's main flow), which the
/// interrupt entry stub increments before the handler and decrements after it
/// (`idt::common_entry`), both with interrupts off: [`level`] reads `gs:[8]`.
#[repr(C)]
pub struct PerCpu {
    index: usize,
    level: usize,
    apic_id: AtomicU32,
}

/// Offset of `PerCpu::level` from the GS base (used by the interrupt entry stub).
pub const LEVEL_OFFSET: usize = core::mem::offset_of!(PerCpu, level);
const _: () = assert!(LEVEL_OFFSET == 8);

static PERCPU: [PerCpu; MAX_CPUS] = {
    let mut a = [const {
        PerCpu {
            index: 0,
            level: 0,
            apic_id: AtomicU32::new(u32::MAX),
        }
    }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        a[i].index = i;
        i += 1;
    }
    a
};

#[repr(C, align(16))]
struct Stacks<const N: usize>(UnsafeCell<[[u8; N]; MAX_CPUS]>);
// SAFETY: the stacks are only ever used as raw memory, each by the one CPU it belongs to.
unsafe impl<const N: usize> Sync for Stacks<N> {}

static AP_STACKS: Stacks<AP_STACK_SIZE> = Stacks(UnsafeCell::new([[0; AP_STACK_SIZE]; MAX_CPUS]));
static DF_STACKS: Stacks<DF_STACK_SIZE> = Stacks(UnsafeCell::new([[0; DF_STACK_SIZE]; MAX_CPUS]));

fn stack_top<const N: usize>(s: &Stacks<N>, cpu: usize) -> u64 {
    assert!(cpu < MAX_CPUS);
    s.0.get() as u64 + ((cpu + 1) * N) as u64
}

/// Top of the stack of CPU `cpu` (an AP).
pub fn ap_stack_top(cpu: usize) -> u64 {
    stack_top(&AP_STACKS, cpu)
}

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: [spin::Once<TaskStateSegment>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];
static GDT: [spin::Once<Tables>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];

/// Sets up the calling CPU as CPU `index` with LAPIC ID `apic_id`: GS base, GDT, TSS.
/// Called once per CPU, first thing, before anything uses [`current`].
pub fn init_this_cpu(index: usize, apic_id: u32) {
    assert!(index < MAX_CPUS);
    PERCPU[index].apic_id.store(apic_id, Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(&PERCPU[index]));
    let tss = TSS[index].call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[(DF_IST - 1) as usize] =
            VirtAddr::new(stack_top(&DF_STACKS, index));
        tss
    });
    let t = GDT[index].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables {
            gdt,
            code,
            data,
            tss,
        }
    });
    t.gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose code segment is 64-bit and whose
    // data segment is writable; the TSS descriptor describes a 'static TSS not loaded on any
    // other CPU (one per CPU index, each index used once).
    unsafe {
        CS::set_reg(t.code);
        SS::set_reg(t.data);
        DS::set_reg(t.data);
        ES::set_reg(t.data);
        load_tss(t.tss);
    }
}

/// Index of the calling CPU (0 = the BSP).
#[inline(always)]
pub fn current() -> usize {
    let idx: usize;
    // SAFETY: every CPU sets its GS base to its PerCpu (init_this_cpu) before running any
    // code that calls this; `index` is at offset 0 and never changes.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) idx, options(nostack, readonly, preserves_flags, pure));
    }
    idx
}

/// LAPIC ID of CPU `index` (u32::MAX if it is not up).
pub fn apic_id(index: usize) -> u32 {
    PERCPU[index].apic_id.load(Ordering::Relaxed)
}

/// The calling code's interrupt nesting depth on this CPU: 0 in the main flow, 1 in an
/// interrupt handler, 2 in a handler that interrupted a handler, ...
#[inline(always)]
pub fn level() -> usize {
    let level: usize;
    // SAFETY: as in `current`; `level` is at offset 8 and changes only in the interrupt
    // entry stub, which restores it before returning to the interrupted code, so the value
    // read is the caller's own depth.
    unsafe {
        core::arch::asm!("mov {}, gs:[8]", out(reg) level, options(nostack, readonly, preserves_flags));
    }
    level
}
