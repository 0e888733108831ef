//! Adopting shardalloc the way a blog_os-style kernel sets up paging: all physical memory
//! mapped at an offset, an `OffsetPageTable`, and a frame allocator that walks the boot
//! memory map and never takes frames back. The code between the `readme` markers is
//! README's kernel example, word for word (`tests/readme_tables.rs` checks it); this kernel
//! runs it in the `smoke` scenario as a second allocator next to its global one (physical
//! memory is identity-mapped here: offset 0), with a memory map of frames taken from its
//! own frame allocator.

use core::alloc::{GlobalAlloc, Layout};

use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

/// A usable range of physical memory from the boot loader's memory map.
#[derive(Clone, Copy)]
pub struct MemoryRegion {
    pub start: u64,
    pub end: u64,
}

/// blog_os's frame allocator: the usable frames of the memory map, one after the other.
pub struct BootInfoFrameAllocator {
    memory_map: &'static [MemoryRegion],
    next: usize,
}

impl BootInfoFrameAllocator {
    /// # Safety
    /// The regions are unused RAM.
    pub unsafe fn init(memory_map: &'static [MemoryRegion]) -> Self {
        BootInfoFrameAllocator {
            memory_map,
            next: 0,
        }
    }

    fn usable_frames(&self) -> impl Iterator<Item = PhysFrame> {
        self.memory_map
            .iter()
            .flat_map(|r| (r.start..r.end).step_by(4096))
            .map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

// SAFETY: each frame of the (unused, `init`) regions is handed out once.
unsafe impl FrameAllocator<Size4KiB> for BootInfoFrameAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let frame = self.usable_frames().nth(self.next);
        self.next += 1;
        frame
    }
}

/// The CPU index and interrupt level, as `heap::KernelCpus` (its contract holds here).
pub struct MyCpus;

// SAFETY: as `heap::KernelCpus`.
unsafe impl shardalloc::CpuLocal for MyCpus {
    fn cpu_index(&self) -> usize {
        crate::cpu::current()
    }
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        x86_64::instructions::interrupts::without_interrupts(f)
    }
    fn interrupt_level(&self) -> usize {
        crate::cpu::level()
    }
}

// readme:begin
use shardalloc::source::frames::{FrameSource, RecycleFrames};
use shardalloc::PerCpuAlloc;
use x86_64::structures::paging::OffsetPageTable;

static SOURCE: FrameSource<OffsetPageTable<'static>, RecycleFrames<BootInfoFrameAllocator>> =
    FrameSource::new();

// 8 CPUs; 4 heaps each: task context, interrupt handler, nested handler, deeper (masked)
static ALLOC: PerCpuAlloc<MyCpus, 8, 4> = PerCpuAlloc::new(&SOURCE, MyCpus);

/// Once, after paging is set up (blog_os: `memory::init` and `BootInfoFrameAllocator::init`).
pub fn init_heap(physical_memory_offset: VirtAddr, frames: BootInfoFrameAllocator) {
    // SAFETY: all physical memory is mapped at the offset, the frames are unused RAM, and
    // nothing else maps the 1 GiB window at 0xFFFF_A000_0000_0000 (PML4 slot 320).
    unsafe {
        SOURCE.init_offset_page_table(
            physical_memory_offset,
            frames,
            VirtAddr::new(0xFFFF_A000_0000_0000),
            1 << 30,
        )
    };
}
// readme:end

/// Frames for the example's memory map.
const FRAMES: usize = 1024;

/// Runs the example once per boot (later calls return the counters of the first): a
/// memory map of `FRAMES` frames from the kernel's frame allocator (as one-frame regions),
/// `init_heap`, then blocks from `ALLOC`: small ones,
/// and a huge one grown by `realloc` (which the source remaps without copying: the block
/// keeps its address), each checked; then every frame the example's source holds unmapped
/// goes back to the kernel's frame allocator. Returns the page source's counters.
pub fn check() -> shardalloc::source::frames::FrameStats {
    static MAP: spin::Once<&'static [MemoryRegion]> = spin::Once::new();
    let mut first = false;
    MAP.call_once(|| {
        static mut REGIONS: [MemoryRegion; FRAMES] = [MemoryRegion { start: 0, end: 0 }; FRAMES];
        // SAFETY: written once, here, before anything reads it.
        let regions = unsafe { &mut *core::ptr::addr_of_mut!(REGIONS) };
        for r in regions.iter_mut() {
            let f = crate::mem::PHYS.allocate().expect("adopt: no frames");
            let a = f.start_address().as_u64();
            *r = MemoryRegion {
                start: a,
                end: a + 4096,
            };
        }
        first = true;
        &*regions
    });
    static STATS: spin::Once<shardalloc::source::frames::FrameStats> = spin::Once::new();
    if !first {
        return *STATS.wait();
    }
    // SAFETY: the regions were just taken from the kernel's frame allocator, unused.
    let frames = unsafe { BootInfoFrameAllocator::init(MAP.get().unwrap()) };
    init_heap(VirtAddr::new(0), frames);
    // SAFETY: blocks used within their layouts and freed once.
    unsafe {
        let l = Layout::from_size_align(48, 8).unwrap();
        let mut v = [core::ptr::null_mut::<u8>(); 64];
        for (i, p) in v.iter_mut().enumerate() {
            *p = ALLOC.alloc(l);
            assert!(!p.is_null(), "adopt: alloc failed");
            p.write_bytes(i as u8, 48);
        }
        for (i, &p) in v.iter().enumerate() {
            assert!(
                (0..48).all(|k| p.add(k).read() == i as u8),
                "adopt: block corrupt"
            );
            ALLOC.dealloc(p, l);
        }
        let mut size = (2 << 20) + (256 << 10);
        let mut l = Layout::from_size_align(size, 8).unwrap();
        let p = ALLOC.alloc(l);
        assert!(!p.is_null(), "adopt: huge alloc failed");
        for k in (0..size).step_by(4096) {
            p.add(k).write(k as u8 ^ 0x5A);
        }
        let mut p = p;
        let mut in_place = 0;
        for _ in 0..2 {
            let new = size + (512 << 10);
            let q = ALLOC.realloc(p, l, new);
            // a copy would need a new block while the old one lives: another address
            in_place += (q == p) as usize;
            p = q;
            assert!(!p.is_null(), "adopt: realloc to {new} failed");
            assert!(
                (0..size)
                    .step_by(4096)
                    .all(|k| p.add(k).read() == k as u8 ^ 0x5A),
                "adopt: realloc lost data"
            );
            for k in (size..new).step_by(4096) {
                p.add(k).write(k as u8 ^ 0x5A);
            }
            size = new;
            l = Layout::from_size_align(size, 8).unwrap();
        }
        ALLOC.dealloc(p, l);
        assert!(
            in_place > 0,
            "adopt: no huge block grew in place (the source's remap)"
        );
    }
    let stats = SOURCE.stats();
    // The example is done with: its empty segments go back to its source, and the frames
    // its source holds unmapped (recycled, and the memory map's unused ones) back to the
    // kernel, so that the rest of the boot has its memory.
    ALLOC.collect(true);
    SOURCE.with_frames(|f| {
        while let Some(frame) = f.allocate_frame() {
            // SAFETY: a frame of the kernel's frame allocator that nothing maps or uses
            // (recycled after unmapping and a TLB flush, or never handed out).
            unsafe { crate::phys::Frames(&crate::mem::PHYS).deallocate_frame(frame) };
        }
    });
    *STATS.call_once(|| stats)
}
