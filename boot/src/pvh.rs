//! The PVH boot information (`hvm_start_info`, Xen's `arch-x86/hvm/start_info.h`).
//!
//! Everything the kernel needs from it is copied into [`BootInfo`] first thing, before the
//! memory it lives in could be reused.

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Memory map entry type of usable RAM.
pub const TYPE_RAM: u32 = 1;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// An entry of the memory map as QEMU gave it (any type, any size).
#[derive(Clone, Copy, Debug, Default)]
pub struct MapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// A range of usable RAM, `[start, end)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RamRange {
    pub start: u64,
    pub end: u64,
}

const MAX_RANGES: usize = 64;
const MAX_CMDLINE: usize = 512;

/// What the kernel keeps of the boot information.
pub struct BootInfo {
    ram: [RamRange; MAX_RANGES],
    nram: usize,
    map: [MapEntry; MAX_RANGES],
    nmap: usize,
    /// Entries of the memory map (all of them, `map` keeps the first `MAX_RANGES`).
    pub map_entries: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Physical address of the ACPI RSDP (0 if none).
    pub rsdp: u64,
}

impl BootInfo {
    /// Usable RAM (type 1 entries of non-zero size), sorted by address.
    pub fn ram(&self) -> &[RamRange] {
        &self.ram[..self.nram]
    }

    /// The memory map as given (every entry, up to `MAX_RANGES`), in its order.
    pub fn map(&self) -> &[MapEntry] {
        &self.map[..self.nmap]
    }

    /// The kernel command line (`-append`).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

/// Reads and copies the start info.
///
/// # Safety
/// `paddr` is the address the PVH entry received in `%ebx`, and the memory it and its
/// cmdline and memory map occupy is identity-mapped and not yet reused.
pub unsafe fn read(paddr: u64) -> Result<BootInfo, &'static str> {
    let mut out = BootInfo {
        ram: [RamRange::default(); MAX_RANGES],
        nram: 0,
        map: [MapEntry::default(); MAX_RANGES],
        nmap: 0,
        map_entries: 0,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
        rsdp: 0,
    };
    // SAFETY: the caller guarantees `paddr` points at a live hvm_start_info.
    let si = unsafe { core::ptr::read_unaligned(paddr as *const StartInfo) };
    if si.magic != MAGIC {
        return Err("bad hvm_start_info magic");
    }
    if si.version < 1 || si.memmap_paddr == 0 {
        return Err("hvm_start_info has no memory map (version 0)");
    }
    out.rsdp = si.rsdp_paddr;
    out.map_entries = si.memmap_entries as usize;
    if si.cmdline_paddr != 0 {
        let p = si.cmdline_paddr as *const u8;
        while out.cmdline_len < MAX_CMDLINE {
            // SAFETY: the cmdline is a NUL-terminated string (caller's guarantee); we stop at
            // the NUL or at our buffer's end.
            let b = unsafe { p.add(out.cmdline_len).read() };
            if b == 0 {
                break;
            }
            out.cmdline[out.cmdline_len] = b;
            out.cmdline_len += 1;
        }
    }
    for i in 0..si.memmap_entries as usize {
        // SAFETY: the memory map has `memmap_entries` entries (caller's guarantee).
        let e =
            unsafe { core::ptr::read_unaligned((si.memmap_paddr as *const MemmapEntry).add(i)) };
        if out.nmap < MAX_RANGES {
            out.map[out.nmap] = MapEntry {
                addr: e.addr,
                size: e.size,
                kind: e.kind,
            };
            out.nmap += 1;
        }
        // Only type 1 of non-zero size is RAM (microvm's map has a zero-size type 0 entry).
        if e.kind != TYPE_RAM || e.size == 0 || out.nram == MAX_RANGES {
            continue;
        }
        out.ram[out.nram] = RamRange {
            start: e.addr,
            end: e.addr.saturating_add(e.size),
        };
        out.nram += 1;
    }
    out.ram[..out.nram].sort_unstable_by_key(|r| r.start);
    Ok(out)
}
