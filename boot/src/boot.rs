//! From QEMU's PVH entry to Rust: the ELF note, the 32-bit trampoline that enters long mode,
//! the boot page tables, and the 16-bit trampoline that brings application processors up.
//!
//! Memory at entry (PVH): 32-bit protected mode, paging off, flat segments, `%ebx` holds the
//! physical address of `hvm_start_info`. The trampoline identity-maps the first 4 GiB with
//! 2 MiB pages (the LAPIC's page uncached), enables PAE, long mode and NX (when the CPU has
//! it), loads a GDT with a 64-bit code segment, and calls [`kernel_main`](crate::kernel_main)
//! on the BSP stack with the start-info address as its argument.

use core::arch::global_asm;

/// Physical address the AP trampoline is copied to (below 1 MiB; SIPI vector = addr >> 12).
pub const AP_TRAMPOLINE: u64 = 0x8000;

/// Size of the BSP's stack.
pub const BSP_STACK_SIZE: usize = 256 * 1024;

// The PVH ELF note: QEMU's `-kernel` loads an ELF64 only through it. Name "Xen", type 18
// (XEN_ELFNOTE_PHYS32_ENTRY), a 4-byte physical entry address. The section is 4-aligned
// (8 makes QEMU miss the note).
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start
    .popsection
"#,
    options(att_syntax)
);

// The 32-bit entry and the switch to long mode. Page tables and the BSP stack live in .bss,
// which this code zeroes first (before anything in .bss is used).
global_asm!(
    r#"
    .pushsection .text.pvh, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov %ebx, %esi                  # hvm_start_info, kept in %esi (survives to kernel_main)

    # zero .bss
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    # PML4[0] -> PDPT, PDPT[0..4] -> the four PDs
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt
    add $0x1000, %eax
    mov %eax, boot_pdpt + 8
    add $0x1000, %eax
    mov %eax, boot_pdpt + 16
    add $0x1000, %eax
    mov %eax, boot_pdpt + 24

    # 2048 entries of 2 MiB: present | writable | huge
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
1:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    dec %ecx
    jnz 1b
    # the LAPIC's 2 MiB page (0xFEE00000 >> 21 = 2039): cache disable | write through
    orl $0x18, boot_pd + 2039 * 8

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax                  # PAE
    mov %eax, %cr4

    # EFER: LME, and NXE when CPUID says the CPU has NX
    mov $0x80000000, %eax
    cpuid
    xor %edi, %edi
    cmp $0x80000001, %eax
    jb 2f
    mov $0x80000001, %eax
    cpuid
    test $0x100000, %edx
    jz 2f
    mov $0x800, %edi
2:
    or $0x100, %edi
    mov %edi, boot_efer_bits
    mov $0xC0000080, %ecx
    rdmsr
    or %edi, %eax
    wrmsr

    mov %cr0, %eax
    or $0x80010001, %eax            # PG | WP | PE
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $3f

    .code64
3:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea boot_stack_top(%rip), %rsp
    mov %esi, %edi                  # argument: hvm_start_info (zero-extended)
    xor %ebp, %ebp
    call kernel_main
4:
    hlt
    jmp 4b

    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        # 0x08: 64-bit code
    .quad 0x00CF92000000FFFF        # 0x10: data
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    .pushsection .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4, boot_pdpt, boot_pd
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .p2align 4
boot_stack:
    .skip {stack}
boot_stack_top:
    .p2align 2
    .global boot_efer_bits
boot_efer_bits:
    .skip 4
    .popsection
"#,
    stack = const BSP_STACK_SIZE,
    options(att_syntax)
);

// The application processors' trampoline. It is copied to AP_TRAMPOLINE and started there
// by a SIPI in real mode (CS = AP_TRAMPOLINE >> 4, IP = 0), so it addresses itself as
// AP_TRAMPOLINE + (label - ap_tramp_start). It goes straight from real mode to long mode
// (PE and PG set together), with the BSP's page tables, and calls the address in
// `ap_tramp_entry` on the stack in `ap_tramp_stack`. The BSP fills those slots in the copy.
global_asm!(
    r#"
    .pushsection .rodata.ap_tramp, "a"
    .global ap_tramp_start, ap_tramp_end, ap_tramp_cr3, ap_tramp_stack, ap_tramp_entry, ap_tramp_efer
    .code16
ap_tramp_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl {base} + (ap_tramp_gdt_ptr - ap_tramp_start)
    mov %cr4, %eax
    or $0x20, %eax                  # PAE
    mov %eax, %cr4
    mov {base} + (ap_tramp_cr3 - ap_tramp_start), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or {base} + (ap_tramp_efer - ap_tramp_start), %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax            # PG | WP | PE
    mov %eax, %cr0
    ljmpl $0x08, ${base} + (ap_tramp_long - ap_tramp_start)

    .code64
ap_tramp_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov {base} + (ap_tramp_stack - ap_tramp_start), %rsp
    mov {base} + (ap_tramp_entry - ap_tramp_start), %rax
    xor %ebp, %ebp
    call *%rax
5:
    hlt
    jmp 5b

    .p2align 3
ap_tramp_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
ap_tramp_gdt_ptr:
    .word 23
    .long {base} + (ap_tramp_gdt - ap_tramp_start)
    .p2align 3
ap_tramp_cr3:
    .quad 0
ap_tramp_stack:
    .quad 0
ap_tramp_entry:
    .quad 0
ap_tramp_efer:
    .long 0
ap_tramp_end:
    .popsection
"#,
    base = const AP_TRAMPOLINE,
    options(att_syntax)
);

extern "C" {
    static boot_pml4: u8;
    static boot_pdpt: u8;
    static boot_efer_bits: u32;
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static ap_tramp_cr3: u8;
    static ap_tramp_stack: u8;
    static ap_tramp_entry: u8;
    static ap_tramp_efer: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Physical (= virtual, identity-mapped) address of the boot PML4.
pub fn pml4_addr() -> u64 {
    &raw const boot_pml4 as u64
}

/// Physical address of the boot PDPT (the identity map's first 512 GiB).
pub fn pdpt_addr() -> u64 {
    &raw const boot_pdpt as u64
}

/// The EFER bits the BSP set (LME, and NXE when the CPU has NX).
pub fn efer_bits() -> u32 {
    // SAFETY: written once by the 32-bit trampoline before any Rust code ran; never again.
    unsafe { core::ptr::read_volatile(&raw const boot_efer_bits) }
}

/// `[start, end)` of the kernel image (text, data and bss) in physical memory.
pub fn kernel_image() -> (u64, u64) {
    (
        &raw const __kernel_start as u64,
        &raw const __kernel_end as u64,
    )
}

/// Copies the AP trampoline to [`AP_TRAMPOLINE`] and fills in CR3, EFER bits and the entry.
///
/// # Safety
/// Physical memory at `AP_TRAMPOLINE` (one page) is RAM that nothing else uses, and no AP is
/// executing the trampoline.
pub unsafe fn install_ap_trampoline(entry: extern "C" fn() -> !) {
    // SAFETY (all of the block): the symbols are in the same section; the copy target is a
    // free identity-mapped page below 1 MiB (caller's guarantee); the slot offsets lie
    // inside the copied range.
    unsafe {
        let start = &raw const ap_tramp_start;
        let len = (&raw const ap_tramp_end as usize) - start as usize;
        assert!(len <= 4096, "AP trampoline larger than a page");
        let dst = AP_TRAMPOLINE as *mut u8;
        core::ptr::copy_nonoverlapping(start, dst, len);
        let slot = |sym: *const u8| dst.add(sym as usize - start as usize);
        let cr3 = x86_64::registers::control::Cr3::read()
            .0
            .start_address()
            .as_u64();
        core::ptr::write_volatile(slot(&raw const ap_tramp_cr3) as *mut u64, cr3);
        core::ptr::write_volatile(
            slot(&raw const ap_tramp_entry) as *mut u64,
            entry as usize as u64,
        );
        core::ptr::write_volatile(slot(&raw const ap_tramp_efer) as *mut u32, efer_bits());
    }
}

/// Sets the stack top the next AP starts on.
///
/// # Safety
/// The trampoline was installed; no AP is between its start and loading `%rsp`.
pub unsafe fn set_ap_stack(top: u64) {
    // SAFETY: see install_ap_trampoline: the slot lies in the copied trampoline.
    unsafe {
        let start = &raw const ap_tramp_start;
        let dst =
            (AP_TRAMPOLINE as *mut u8).add(&raw const ap_tramp_stack as usize - start as usize);
        core::ptr::write_volatile(dst as *mut u64, top);
    }
}
