//! Physical memory and the page source: the frame allocator over the PVH memory map, the
//! identity map beyond 4 GiB when there is RAM there, and the `frames` page source whose
//! window the allocator's segments live in.

use x86_64::structures::paging::{OffsetPageTable, PageTable};
use x86_64::VirtAddr;

use crate::phys::{Frames, PhysFrames};
use crate::{boot, pvh, smp};
use shardalloc::source::frames::FrameSource;

/// Where the allocator's segments live: a 64 GiB window in the upper half, which nothing
/// else maps (the identity map covers the first PML4 slot only).
pub const WINDOW_START: u64 = 0xFFFF_9000_0000_0000;
pub const WINDOW_SIZE: usize = shardalloc::source::frames::MAX_WINDOW;

const GIB: u64 = 1 << 30;

/// All usable RAM above the kernel image.
pub static PHYS: PhysFrames = PhysFrames::new();

/// The page source every allocator in this kernel gets its memory from.
pub static SOURCE: FrameSource<OffsetPageTable<'static>, Frames> = FrameSource::new();

/// Sets up the frame allocator and the page source from the boot memory map.
pub fn init(info: &pvh::BootInfo) {
    let (kstart, kend) = boot::kernel_image();
    let top = info.ram().iter().map(|r| r.end).max().unwrap_or(0);
    // The identity map: 4 GiB from the trampoline, more (up to the PDPT's 512 GiB) below.
    let limit = top.div_ceil(GIB).clamp(4, 512) * GIB;
    PHYS.set_limit(limit);
    for r in info.ram() {
        PHYS.add_range(r.start.max(kend), r.end);
    }
    if limit > 4 * GIB {
        extend_identity_map(limit);
    }
    let pml4 = boot::pml4_addr() as *mut PageTable;
    // SAFETY: the boot PML4 is the live top-level table of every CPU, identity-mapped, and
    // from now on changed only through this mapper (inside SOURCE) for the window, which
    // nothing else maps; physical memory is identity-mapped (offset 0) up to `limit`, and
    // PHYS hands out only frames below `limit` that nothing uses.
    unsafe {
        let mapper = OffsetPageTable::new(&mut *pml4, VirtAddr::new(0));
        SOURCE.init(
            mapper,
            Frames(&PHYS),
            VirtAddr::new(WINDOW_START),
            WINDOW_SIZE,
        );
    }
    SOURCE.set_tlb_shootdown(smp::tlb_shootdown);
    // Freed regions (a grown `Vec`'s, an emptied segment's) stay mapped for reuse, up to a
    // sixteenth of RAM, until the allocator collects a few times.
    SOURCE.set_keep_limit(PHYS.total_frames() * 4096 / 16);
    println!(
        "memory: kernel {:#x}..{:#x}, {} MiB usable in {} ranges, {} frames free",
        kstart,
        kend,
        (PHYS.total_frames() * 4096) >> 20,
        info.ram().len(),
        PHYS.free_frames()
    );
}

/// Identity-maps `[4 GiB, limit)` with 2 MiB pages, with page directories from PHYS.
fn extend_identity_map(limit: u64) {
    let pdpt = boot::pdpt_addr() as *mut u64;
    let nx = if boot::efer_bits() & 0x800 != 0 {
        1u64 << 63
    } else {
        0
    };
    for gib in 4..limit / GIB {
        let frame = PHYS.allocate().expect("no frame for the identity map");
        let pd = frame.start_address().as_u64();
        assert!(pd < 4 * GIB, "identity page directory above 4 GiB");
        for j in 0..512u64 {
            // SAFETY: `pd` is a fresh frame below 4 GiB, identity-mapped, owned by us.
            unsafe {
                (pd as *mut u64)
                    .add(j as usize)
                    .write((gib * GIB + j * (2 << 20)) | 0x83 | nx)
            };
        }
        // SAFETY: PDPT entries 4..512 are unused (the trampoline fills 0..4); APs are not up,
        // and a new entry needs no TLB flush.
        unsafe { pdpt.add(gib as usize).write(pd | 0x3) };
    }
}
