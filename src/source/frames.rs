//! `frames`: a page source for x86_64 kernels, over the `x86_64` crate's paging API.
//!
//! Segments are reserved in a virtual *window* that nothing else maps (for example
//! `0xFFFF_9000_0000_0000`, a few GiB to 64 GiB long). Reserving only takes address space:
//! a bitmap of 64 KiB granules records which parts of the window are taken. `commit` maps
//! fresh frames (not zeroed: the source reports them so, and the allocator zeroes what a
//! caller asks to be zeroed); `decommit` unmaps them and gives the frames back to the
//! [`FrameDeallocator`], so freed memory really returns to the kernel. Both work a level-1
//! page table at a time ([`PageTables`]): one walk per 512 pages, consecutive entries
//! written or cleared, one TLB flush per batch of unmapped pages; where a level-1 table
//! does not exist yet (or the mapper does not reach its tables) they go through
//! [`Mapper::map_to`] and [`Mapper::unmap`] page by page.
//!
//! `remap` resizes a region without copying its contents (the kernel's `mremap`): it grows
//! in place by mapping frames behind the region when the window is free there, shrinks by
//! unmapping its tail, and otherwise moves the region's frames to a new place in the
//! window by rewriting their page-table entries. The allocator grows huge blocks with it,
//! once they outgrow the room their segment reserved ahead of them (a reserved region is
//! mapped only as far as it is committed; growing into it is a `commit`).
//!
//! Freed regions may be *kept* mapped for a while (up to a limit the kernel sets with
//! [`FrameSource::set_keep_limit`], off by default): the next `alloc` that fits one takes it
//! back as it is, so a kernel that frees and allocates big blocks again and again (a `Vec`
//! grown, dropped and grown again, a segment emptied and needed again) maps, unmaps and
//! shoots down nothing. The limit counts a kept region by its granules that were ever
//! mapped (`touched`), not by the address space it reserves. Kept regions go back (unmapped, frames returned) when the allocator
//! collects ([`PageSource::collect`]: after a few rounds, or all at once when forced), and
//! whenever mapping or reserving would fail without their frames or address space.
//!
//! Decommitted memory is kept mapped the same way, under the same limit (the kernel's
//! `MADV_FREE`): a `decommit` of whole granules only marks them *lazy* (their pages stay
//! mapped, their frames stay taken), so the allocator's purges of emptied pages cost a few
//! bitmap operations, and a `commit` of a lazy granule finds its pages mapped. Lazy
//! granules are really unmapped, their frames returned, when the allocator collects (those
//! that lived through [`KEEP_ROUNDS`] collects, at most [`LAZY_DROP`] granules per collect:
//! frames go back at a bounded cost per call, never in one long purge; all of them with a
//! forced collect or [`FrameSource::release_lazy`]), when mapping would fail without their
//! frames, when the limit has no room for more, and when their region is freed or
//! resized. Parts of a decommit that cover a granule only partly are unmapped at once; a
//! commit of part of a lazy granule takes the whole granule back (its other pages stay
//! mapped until they are decommitted again or their region is freed).
//!
//! Multi-CPU kernels must tell the source how to flush the other CPUs' TLBs
//! ([`FrameSource::set_tlb_shootdown`]): after pages are unmapped, their frames are handed
//! back only once every CPU has dropped its stale translations, or a CPU could still write
//! through an old translation into a frame that belongs to someone else. The source calls
//! the hook with its lock held and interrupts off, so the hook must not wait for anything a
//! CPU with interrupts off cannot give (an NMI-based flush works; an ordinary IPI may not).
//!
//! The source never allocates through any allocator: its state is fixed-size and lives in
//! the `FrameSource` itself (put it in a `static`; [`FrameSource::new`] is `const`).
//!
//! Invariants (under the lock):
//! - a granule's bit in `used` is set iff it belongs to a live region;
//! - every page mapped by this source lies in a granule whose bit in `touched` is set (the
//!   converse need not hold: `touched` only lets unmapping skip granules quickly);
//! - a granule whose bit in `full` is set has all its pages mapped by this source (the
//!   converse need not hold: `full` only lets mapping skip granules quickly, as when a
//!   growing region absorbs a kept one);
//! - `mapped_pages` = the number of pages of the window currently mapped by this source;
//! - a granule's bit in `lazy` is set only if it lies in a live region, was wholly
//!   decommitted since it was last committed, and holds no live data (its pages may still
//!   be mapped); `stats.lazy` = the set bits × [`GRANULE`]; every set bit lies in the
//!   granules of an entry of the `lazy_log` ring (entries may also cover clear bits);
//! - `stats.kept + stats.lazy <= keep_limit`.

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use x86_64::instructions::{interrupts, tlb};
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, MappedPageTable, PageTableFrameMapping};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags,
    PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{PageSource, Region, SourceConfig, SourceError};

/// OS page size.
const PAGE: usize = 4096;
/// Unit of the window's slot bitmap. Regions take whole granules of address space, but only
/// their reported size (page multiples) is ever mapped.
pub const GRANULE: usize = 64 * 1024;
/// Largest window a `FrameSource` can manage (the bitmaps are sized for it: 2 × 128 KiB).
pub const MAX_WINDOW: usize = 64 << 30;
const WORDS: usize = MAX_WINDOW / GRANULE / 64;
/// Frames unmapped before one TLB shootdown and hand-back (kept on the stack).
const BATCH: usize = 64;
/// A local TLB flush of more pages than this reloads CR3 instead of one `invlpg` per page
/// (Linux's `tlb_single_page_flush_ceiling` is 33); only without PCIDs, where reloading
/// CR3 keeps the address space as it is.
const FLUSH_ALL_ABOVE: usize = 32;
/// Bytes one level-1 page table maps.
const L1_SPAN: u64 = 512 * PAGE as u64;
/// Freed regions kept mapped at most (see [`FrameSource::set_keep_limit`]).
const KEEP_SLOTS: usize = 4;
/// Non-forced collects a kept region (or a lazy granule) survives before it goes back.
const KEEP_ROUNDS: u32 = 8;
/// Lazy granules unmapped at most per non-forced collect (a granule is 16 pages: about a
/// thousand instructions of unmapping each).
pub const LAZY_DROP: usize = 2;
/// Runs of lazy granules remembered in order (the oldest go back first; a decommit that
/// finds the ring full unmaps the oldest run first).
const LAZY_SLOTS: usize = 64;

/// Flushes stale translations of `[start, start + size)` on every *other* CPU, returning once
/// they are gone. See the module docs for the constraints.
pub type TlbShootdown = fn(start: VirtAddr, size: usize);

/// A [`Mapper`] whose level-1 page tables the source can reach directly: unmapping a run of
/// pages then walks the four levels once per level-1 table (512 pages) and clears
/// consecutive entries, with one TLB flush per batch of pages, instead of a walk and an
/// `invlpg` per page through [`Mapper::unmap`].
///
/// Implemented for the `x86_64` crate's [`OffsetPageTable`] and [`MappedPageTable`]; a
/// mapper of one's own implements it with an empty body (`impl PageTables for M {}`), and
/// the source then unmaps page by page through [`Mapper::unmap`].
pub trait PageTables: Mapper<Size4KiB> {
    /// The level-1 table that holds `page`'s entry, or `None` when the levels above do
    /// not map it with a table (or the mapper cannot reach its tables: the default).
    fn level_1_table(&mut self, page: Page<Size4KiB>) -> Option<&mut PageTable> {
        let _ = page;
        None
    }
}

/// Walks from `level_4` down to the level-1 table of `page`; `table_at` gives the address
/// at which a page-table frame can be written.
///
/// # Safety
/// `level_4` is a valid level-4 table whose lower tables `table_at` maps writable, and no
/// other reference to those tables is in use.
unsafe fn walk_to_level_1<'a>(
    level_4: &'a mut PageTable,
    page: Page<Size4KiB>,
    table_at: impl Fn(PhysFrame) -> *mut PageTable,
) -> Option<&'a mut PageTable> {
    let mut table = level_4;
    for index in [page.p4_index(), page.p3_index(), page.p2_index()] {
        let entry: &PageTableEntry = &table[index];
        // `frame()` fails on an entry that is not present or maps a huge page
        let frame = entry.frame().ok()?;
        // SAFETY: the entry is present and points to the next level's table (not a huge
        // page), which `table_at` maps writable (the caller); the caller holds the only
        // reference into this hierarchy, so the table is not aliased.
        table = unsafe { &mut *table_at(frame) };
    }
    Some(table)
}

impl PageTables for OffsetPageTable<'_> {
    fn level_1_table(&mut self, page: Page<Size4KiB>) -> Option<&mut PageTable> {
        let offset = self.phys_offset();
        // SAFETY: an `OffsetPageTable` was created over a valid hierarchy with all physical
        // memory mapped at `offset` (its `new`'s contract), and `&mut self` is the only way
        // into it.
        unsafe {
            walk_to_level_1(self.level_4_table_mut(), page, |f| {
                (offset + f.start_address().as_u64()).as_mut_ptr()
            })
        }
    }
}

impl<P: PageTableFrameMapping> PageTables for MappedPageTable<'_, P> {
    fn level_1_table(&mut self, page: Page<Size4KiB>) -> Option<&mut PageTable> {
        let map = self.page_table_frame_mapping() as *const P;
        // SAFETY: a `MappedPageTable` was created over a valid hierarchy whose tables its
        // frame mapping maps (its `new`'s contract); the mapping is a separate field from
        // the level-4 table, so reading it while the table is borrowed aliases nothing.
        unsafe {
            walk_to_level_1(self.level_4_table_mut(), page, |f| {
                (*map).frame_to_pointer(f)
            })
        }
    }
}

/// Counters of a [`FrameSource`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Pages of the window mapped now (each backed by one frame).
    pub mapped_pages: usize,
    /// Bytes of the window reserved by live regions (granule-rounded).
    pub reserved: usize,
    /// Live regions.
    pub regions: usize,
    /// Times `commit` or `alloc` failed for lack of frames (after undoing its work).
    pub commit_failures: usize,
    /// Calls that mapped pages (`commit`, `alloc` with commit, `protect(off)`).
    pub commits: usize,
    /// Calls that unmapped pages (`decommit`, `free`, `protect(on)`).
    pub decommits: usize,
    /// TLB shootdowns requested (one per batch of unmapped frames).
    pub shootdowns: usize,
    /// Bytes of freed regions kept mapped for reuse, counted by the 64 KiB granules of them
    /// that were ever mapped (their pages count in `mapped_pages`, their granules in neither
    /// `reserved` nor `regions`; the limit of `set_keep_limit` applies to this count).
    pub kept: usize,
    /// Allocations served by a kept region.
    pub kept_reused: usize,
    /// Bytes of decommitted granules still mapped ("lazy", see the module docs; their
    /// pages count in `mapped_pages`; the limit of `set_keep_limit` applies to `kept +
    /// lazy`).
    pub lazy: usize,
    /// Decommits that kept granules mapped (lazy).
    pub lazy_decommits: usize,
    /// Granules committed again while lazy (their pages still mapped: nothing to map).
    pub lazy_reused: usize,
}

/// A run of granules made lazy by one decommit, with the collect round it happened in.
#[derive(Clone, Copy)]
struct LazyRun {
    first: usize,
    n: usize,
    round: u64,
}

/// A freed region kept mapped (`size == 0`: an empty slot).
#[derive(Clone, Copy)]
struct Kept {
    start: u64,
    size: usize,
    /// Bytes counted in `stats.kept` (against the limit): its granules that were ever
    /// mapped, not the address space it holds (a huge segment reserves room ahead that it
    /// may never map).
    held: usize,
    /// Non-forced collects it has seen.
    rounds: u32,
}

impl Kept {
    const EMPTY: Kept = Kept {
        start: 0,
        size: 0,
        held: 0,
        rounds: 0,
    };
}

/// A bitmap over the window's granules.
struct Bitmap([u64; WORDS]);

impl Bitmap {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets (or clears) bits `[from, to)`.
    fn set_range(&mut self, from: usize, to: usize, on: bool) {
        let mut i = from;
        while i < to {
            let w = i / 64;
            let lo = i % 64;
            let hi = (to - w * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            if on {
                self.0[w] |= mask;
            } else {
                self.0[w] &= !mask;
            }
            i = w * 64 + hi;
        }
    }

    /// How many bits of `[from, to)` are set.
    fn count(&self, from: usize, to: usize) -> usize {
        let mut n = 0;
        let mut i = from;
        while i < to {
            let w = i / 64;
            let lo = i % 64;
            let hi = (to - w * 64).min(64);
            let bits = self.0[w] >> lo;
            let bits = if hi - lo == 64 {
                bits
            } else {
                bits & ((1u64 << (hi - lo)) - 1)
            };
            n += bits.count_ones() as usize;
            i = w * 64 + hi;
        }
        n
    }

    /// The first set bit in `[from, to)`, if any.
    fn first_set(&self, from: usize, to: usize) -> Option<usize> {
        let mut i = from;
        while i < to {
            let w = i / 64;
            let bits = self.0[w] >> (i % 64);
            if bits != 0 {
                let j = i + bits.trailing_zeros() as usize;
                return (j < to).then_some(j);
            }
            i = (w + 1) * 64;
        }
        None
    }
}

struct Paging<M, A> {
    mapper: M,
    frames: A,
}

struct Inner<M, A> {
    paging: Option<Paging<M, A>>,
    window_start: u64,
    /// Granules in the window.
    granules: usize,
    used: Bitmap,
    touched: Bitmap,
    full: Bitmap,
    /// No free granule lies below this one.
    hint: usize,
    flags: PageTableFlags,
    /// Whether a local flush of many pages may reload CR3 (no PCIDs).
    flush_all_ok: bool,
    shootdown: Option<TlbShootdown>,
    /// Freed regions kept mapped: their granules stay set in `used`, their pages mapped.
    kept: [Kept; KEEP_SLOTS],
    /// Decommitted granules still mapped (see the module docs).
    lazy: Bitmap,
    /// Runs of lazy granules, oldest first: a ring of `lazy_len` entries from `lazy_head`.
    lazy_log: [LazyRun; LAZY_SLOTS],
    lazy_head: usize,
    lazy_len: usize,
    /// Non-forced collects so far (the age of lazy runs).
    round: u64,
    /// Most bytes kept (0: none).
    keep_limit: usize,
    stats: FrameStats,
}

/// The `frames` page source: a virtual window, mapped page by page on commit.
///
/// `M` maps pages (e.g. `OffsetPageTable<'static>`), `A` hands out and takes back physical
/// frames; both live inside the source, behind its spin lock.
pub struct FrameSource<M, A> {
    inner: spin::Mutex<Inner<M, A>>,
}

impl<M, A> FrameSource<M, A>
where
    M: PageTables + Send,
    A: FrameAllocator<Size4KiB> + FrameDeallocator<Size4KiB> + Send,
{
    /// An empty source: every `alloc` fails until [`init`](Self::init) gives it a mapper,
    /// a frame allocator and a window.
    pub const fn new() -> Self {
        FrameSource {
            inner: spin::Mutex::new(Inner {
                paging: None,
                window_start: 0,
                granules: 0,
                used: Bitmap([0; WORDS]),
                touched: Bitmap([0; WORDS]),
                full: Bitmap([0; WORDS]),
                hint: 0,
                flags: PageTableFlags::empty(),
                flush_all_ok: false,
                shootdown: None,
                kept: [Kept::EMPTY; KEEP_SLOTS],
                lazy: Bitmap([0; WORDS]),
                lazy_log: [LazyRun {
                    first: 0,
                    n: 0,
                    round: 0,
                }; LAZY_SLOTS],
                lazy_head: 0,
                lazy_len: 0,
                round: 0,
                keep_limit: 0,
                stats: FrameStats {
                    mapped_pages: 0,
                    reserved: 0,
                    regions: 0,
                    commit_failures: 0,
                    commits: 0,
                    decommits: 0,
                    shootdowns: 0,
                    kept: 0,
                    kept_reused: 0,
                    lazy: 0,
                    lazy_decommits: 0,
                    lazy_reused: 0,
                },
            }),
        }
    }

    /// Hands the source its mapper, frame allocator and window `[window_start,
    /// window_start + window_size)`. Pages are mapped present, writable, and no-execute when
    /// `EFER.NXE` is on.
    ///
    /// Panics if the window is not aligned to [`GRANULE`], is larger than [`MAX_WINDOW`], or
    /// the source was initialised before.
    ///
    /// # Safety
    /// Nothing else maps, unmaps or uses any address of the window (nor the page-table
    /// entries that cover only the window) while the source lives; `mapper` maps the
    /// page tables that the CPUs which use the source run on; the frames `frames` hands out
    /// are unused RAM.
    pub unsafe fn init(&self, mapper: M, frames: A, window_start: VirtAddr, window_size: usize) {
        let start = window_start.as_u64();
        assert!(start.is_multiple_of(GRANULE as u64) && window_size.is_multiple_of(GRANULE));
        assert!(
            window_size > 0 && window_size <= MAX_WINDOW,
            "window too large"
        );
        assert!(
            start.checked_add(window_size as u64 - 1).is_some()
                && VirtAddr::try_new(start + (window_size as u64 - 1)).is_ok(),
            "window not canonical"
        );
        let mut flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        if Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
            flags |= PageTableFlags::NO_EXECUTE;
        }
        self.with(|s| {
            assert!(s.paging.is_none(), "FrameSource initialised twice");
            s.paging = Some(Paging { mapper, frames });
            s.window_start = start;
            s.granules = window_size / GRANULE;
            s.flags = flags;
            s.flush_all_ok = !Cr4::read().contains(Cr4Flags::PCID);
        });
    }

    /// Sets the TLB shootdown of a multi-CPU kernel (see the module docs). Without one, only
    /// the calling CPU's TLB is flushed, which is right for one CPU.
    pub fn set_tlb_shootdown(&self, f: TlbShootdown) {
        self.with(|s| s.shootdown = Some(f));
    }

    /// Keeps up to `bytes` of freed regions and decommitted granules mapped for reuse (see
    /// the module docs); 0 (the default) gives every freed region and decommitted page
    /// back at once. Lowering the limit gives back what is kept now.
    pub fn set_keep_limit(&self, bytes: usize) {
        self.with(|s| {
            s.keep_limit = bytes;
            if s.stats.kept + s.stats.lazy > bytes {
                s.drop_all_kept();
            }
        });
    }

    /// Unmaps every decommitted granule still mapped (lazy) and gives its frames back now,
    /// as a forced collect does (without giving back kept regions): for a kernel that
    /// needs the frames elsewhere.
    pub fn release_lazy(&self) {
        self.with(|s| s.drop_all_lazy());
    }

    /// The counters now.
    pub fn stats(&self) -> FrameStats {
        self.with(|s| s.stats)
    }

    /// Runs `f` on the frame allocator, under the source's lock (e.g. to count free
    /// frames while nothing maps or unmaps). `None` before `init`.
    pub fn with_frames<R>(&self, f: impl FnOnce(&mut A) -> R) -> Option<R> {
        self.with(|s| s.paging.as_mut().map(|p| f(&mut p.frames)))
    }

    /// Takes the lock with interrupts off on this CPU (an interrupt handler that allocates
    /// may reach the source while this CPU holds the lock otherwise).
    fn with<R>(&self, f: impl FnOnce(&mut Inner<M, A>) -> R) -> R {
        interrupts::without_interrupts(|| f(&mut self.inner.lock()))
    }
}

/// Gives a frame allocator that cannot take frames back (like blog_os's
/// `BootInfoFrameAllocator`, which walks the boot memory map) a [`FrameDeallocator`]:
/// frames given back are kept on a list linked through the frames themselves (reached at
/// `physical_memory_offset + address`, where an `OffsetPageTable` kernel maps all physical
/// memory) and handed out again before new ones.
///
/// Invariant: `free` starts a list of `count` frames, each unused and unmapped except at
/// its offset address, whose first word holds the next one's address (`NONE` ends it).
pub struct RecycleFrames<A> {
    inner: A,
    offset: u64,
    free: u64,
    count: usize,
}

const NONE: u64 = u64::MAX;

impl<A> RecycleFrames<A> {
    /// Wraps `inner`; physical memory is mapped at `physical_memory_offset`.
    pub fn new(inner: A, physical_memory_offset: VirtAddr) -> Self {
        RecycleFrames {
            inner,
            offset: physical_memory_offset.as_u64(),
            free: NONE,
            count: 0,
        }
    }

    /// Frames given back and not handed out again.
    pub fn recycled(&self) -> usize {
        self.count
    }
}

// SAFETY: a recycled frame was handed out by this allocator (or `inner`) and given back
// unused, and leaves the list when it is handed out; other frames come from `inner`, which
// hands out each unused frame once.
unsafe impl<A: FrameAllocator<Size4KiB>> FrameAllocator<Size4KiB> for RecycleFrames<A> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.free == NONE {
            return self.inner.allocate_frame();
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(self.free));
        // SAFETY: the frame is on the list (the invariant): unused, mapped at its offset
        // address, its first word the link.
        self.free = unsafe { ((self.offset + self.free) as *const u64).read() };
        self.count -= 1;
        Some(frame)
    }
}

impl<A> FrameDeallocator<Size4KiB> for RecycleFrames<A> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let phys = frame.start_address().as_u64();
        // SAFETY: the caller gives back an unused frame of ours; all physical memory is
        // mapped writable at the offset (`new`'s premise), so its first word is ours.
        unsafe { ((self.offset + phys) as *mut u64).write(self.free) };
        self.free = phys;
        self.count += 1;
    }
}

impl<A> FrameSource<OffsetPageTable<'static>, RecycleFrames<A>>
where
    A: FrameAllocator<Size4KiB> + Send,
{
    /// The set-up of a kernel that maps all physical memory at `physical_memory_offset`
    /// (as blog_os does): the source maps its window in the active page tables (CR3)
    /// through an `OffsetPageTable`, with frames from `frames`, which need not take frames
    /// back ([`RecycleFrames`] keeps them). See [`init`](Self::init) for the window.
    ///
    /// # Safety
    /// All physical memory is mapped writable at `physical_memory_offset`; nothing else
    /// maps, unmaps or uses any address of the window (nor page-table entries that cover
    /// only the window); the page tables of CR3 are those of every CPU that uses the
    /// source; the frames `frames` hands out are unused RAM.
    pub unsafe fn init_offset_page_table(
        &self,
        physical_memory_offset: VirtAddr,
        frames: A,
        window_start: VirtAddr,
        window_size: usize,
    ) {
        let (level_4, _) = Cr3::read();
        let table = (physical_memory_offset + level_4.start_address().as_u64()).as_mut_ptr();
        // SAFETY: the active level-4 table, mapped at the offset (caller), changed from now
        // on for the window only, by this source (caller).
        let mapper = unsafe {
            OffsetPageTable::new(&mut *(table as *mut PageTable), physical_memory_offset)
        };
        let frames = RecycleFrames::new(frames, physical_memory_offset);
        // SAFETY: forwarded from the caller.
        unsafe { self.init(mapper, frames, window_start, window_size) }
    }
}

impl<M, A> Default for FrameSource<M, A>
where
    M: PageTables + Send,
    A: FrameAllocator<Size4KiB> + FrameDeallocator<Size4KiB> + Send,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<M, A> Inner<M, A>
where
    M: PageTables,
    A: FrameAllocator<Size4KiB> + FrameDeallocator<Size4KiB>,
{
    /// Finds `n` free granules starting at a multiple of `align` (in granules) and takes
    /// them. Returns the first granule.
    fn reserve(&mut self, n: usize, align: usize) -> Option<usize> {
        let mut i = self.hint.next_multiple_of(align);
        while i.checked_add(n)? <= self.granules {
            match self.used.first_set(i, i + n) {
                None => {
                    self.used.set_range(i, i + n, true);
                    if i == self.hint {
                        self.hint = self.used.first_clear_from(i + n, self.granules);
                    }
                    return Some(i);
                }
                Some(j) => i = (j + 1).next_multiple_of(align),
            }
        }
        None
    }

    fn release(&mut self, first: usize, n: usize) {
        self.used.set_range(first, first + n, false);
        self.hint = self.hint.min(first);
    }

    /// [`reserve`](Self::reserve), giving kept regions back first when the window has no
    /// room otherwise.
    fn reserve_or_drop_kept(&mut self, n: usize, align: usize) -> Option<usize> {
        self.reserve(n, align).or_else(|| {
            self.drop_all_kept()
                .then(|| self.reserve(n, align))
                .flatten()
        })
    }

    /// Keeps the freed region `[start, start + size)` (granules still taken, pages still
    /// mapped) if the limit allows, giving the oldest kept regions back to make room.
    fn keep(&mut self, start: u64, size: usize) -> bool {
        // what it holds mapped at most: the granules ever mapped (address space reserved
        // and never used costs no frame)
        let first = self.granule_of(start);
        let held = (self.touched.count(first, first + size.div_ceil(GRANULE)) * GRANULE).min(size);
        if held > self.keep_limit {
            return false;
        }
        loop {
            let free_slot = self.kept.iter().position(|k| k.size == 0);
            let room = self.stats.kept + self.stats.lazy + held <= self.keep_limit;
            if let Some(i) = free_slot.filter(|_| room) {
                self.kept[i] = Kept {
                    start,
                    size,
                    held,
                    rounds: 0,
                };
                self.stats.kept += held;
                return true;
            }
            // the oldest goes back
            let Some(i) = (0..KEEP_SLOTS)
                .filter(|&i| self.kept[i].size > 0)
                .max_by_key(|&i| self.kept[i].rounds)
            else {
                return false;
            };
            self.drop_kept(i);
        }
    }

    /// A kept region for a request of `size` bytes aligned to `align`: the smallest that
    /// holds `size`, taken out of the kept slots (its granules stay taken, now by the
    /// caller). One more than twice as large is split: the caller gets its first granules
    /// (as many as `size` needs, all of them: no mapped page lies outside a region or a
    /// kept one), the rest stays kept, where a growing region absorbs it
    /// ([`absorb_kept`](Self::absorb_kept)).
    fn take_kept(&mut self, size: usize, align: usize) -> Option<(u64, usize)> {
        let i = (0..KEEP_SLOTS)
            .filter(|&i| {
                let k = self.kept[i];
                k.size >= size && k.start.is_multiple_of(align as u64)
            })
            .min_by_key(|&i| self.kept[i].size)?;
        let k = self.kept[i];
        self.stats.kept_reused += 1;
        let head = size.next_multiple_of(GRANULE);
        if k.size / 2 > size && k.size > head {
            self.kept[i].start += head as u64;
            self.kept[i].size -= head;
            // (the head is counted as held first: a region is mapped from its start)
            self.kept[i].held = k.held.saturating_sub(head);
            self.stats.kept -= k.held - self.kept[i].held;
            return Some((k.start, head));
        }
        self.kept[i] = Kept::EMPTY;
        self.stats.kept -= k.held;
        Some((k.start, k.size))
    }

    /// Lets a region that ends in granule `from` grow to granule `to` over a kept region
    /// that starts at `from`: when the kept region (and free granules behind it) cover
    /// `[from, to)`, it leaves the kept slots and its granules up to `to` are cleared for
    /// [`grow_in_place`](Self::grow_in_place) (its pages stay mapped: the growth maps
    /// nothing there); a part beyond `to` stays kept. Returns whether it absorbed one.
    fn absorb_kept(&mut self, from: usize, to: usize) -> bool {
        let at = self.window_start + (from * GRANULE) as u64;
        let found = (0..KEEP_SLOTS).find(|&i| self.kept[i].size > 0 && self.kept[i].start == at);
        let Some(i) = found else {
            return false;
        };
        let k = self.kept[i];
        let kend = from + k.size.div_ceil(GRANULE);
        if kend < to && (kend > self.granules || self.used.first_set(kend, to).is_some()) {
            return false;
        }
        if kend > to {
            let taken = (to - from) * GRANULE;
            self.kept[i].start += taken as u64;
            self.kept[i].size -= taken;
            self.kept[i].held = k.held.saturating_sub(taken);
            self.stats.kept -= k.held - self.kept[i].held;
            self.release(from, to - from);
        } else {
            self.kept[i] = Kept::EMPTY;
            self.stats.kept -= k.held;
            self.release(from, kend - from);
        }
        self.stats.kept_reused += 1;
        true
    }

    /// Gives kept region `i` back: unmaps it, returns its frames and its granules.
    fn drop_kept(&mut self, i: usize) {
        let k = self.kept[i];
        self.kept[i] = Kept::EMPTY;
        self.stats.kept -= k.held;
        self.unmap_range(k.start, k.size);
        self.release(self.granule_of(k.start), k.size.div_ceil(GRANULE));
    }

    /// Gives every kept region and lazy granule back; whether there was any.
    fn drop_all_kept(&mut self) -> bool {
        let mut any = self.drop_all_lazy();
        for i in 0..KEEP_SLOTS {
            if self.kept[i].size > 0 {
                self.drop_kept(i);
                any = true;
            }
        }
        any
    }

    /// Granules `[from, to)` that `[start, start + size)` covers whole (`from >= to`: none).
    fn whole_granules(&self, start: u64, size: usize) -> (usize, usize) {
        let off = start - self.window_start;
        (
            off.div_ceil(GRANULE as u64) as usize,
            ((off + size as u64) / GRANULE as u64) as usize,
        )
    }

    /// Clears the lazy bits of granules `[from, to)`: their mapped pages are their region's
    /// again. Returns how many were lazy.
    fn forget_lazy(&mut self, from: usize, to: usize) -> usize {
        if self.stats.lazy == 0 || from >= to {
            return 0;
        }
        let n = self.lazy.count(from, to);
        if n > 0 {
            self.lazy.set_range(from, to, false);
            self.stats.lazy -= n * GRANULE;
        }
        n
    }

    /// Before `[start, start + size)` is committed (`unmap_partial == false`) or unmapped:
    /// the lazy granules it covers whole are no longer lazy (their pages stay mapped); one
    /// it covers partly is no longer lazy either when committing (its other pages stay
    /// mapped, the region's, until decommitted again or freed: the allocator commits a
    /// page's memory a few KiB at a time, and unmapping the rest would undo what the next
    /// commit maps again), and is unmapped whole when unmapping (a lazy granule holds no
    /// live data). Returns how many granules stopped being lazy without being unmapped.
    fn claim_lazy(&mut self, start: u64, size: usize, unmap_partial: bool) -> usize {
        if self.stats.lazy == 0 {
            return 0;
        }
        let first = self.granule_of(start);
        let last = self.granule_of(start + size as u64 - 1);
        if self.lazy.first_set(first, last + 1).is_none() {
            return 0;
        }
        let (from, to) = self.whole_granules(start, size);
        let mut kept = 0;
        for g in [first, last] {
            if (g < from || g >= to) && self.lazy.get(g) {
                self.forget_lazy(g, g + 1);
                if unmap_partial {
                    self.unmap_range(self.window_start + (g * GRANULE) as u64, GRANULE);
                } else {
                    kept += 1;
                }
            }
        }
        kept + self.forget_lazy(from, to)
    }

    /// Decommits `[start, start + size)`: the granules it covers whole and that have pages
    /// mapped become lazy (stay mapped) if the limit has room for them, the rest is
    /// unmapped now.
    fn decommit_lazy(&mut self, start: u64, size: usize) {
        let (from, to) = self.whole_granules(start, size);
        let room = from < to && {
            let more = self.touched.count(from, to) - self.lazy.count(from, to);
            self.stats.kept + self.stats.lazy + more * GRANULE <= self.keep_limit
        };
        if !room {
            self.unmap_range(start, size);
            return;
        }
        let (a, b) = (
            self.window_start + (from * GRANULE) as u64,
            self.window_start + (to * GRANULE) as u64,
        );
        if start < a {
            self.unmap_range(start, (a - start) as usize);
        }
        let end = start + size as u64;
        if b < end {
            self.unmap_range(b, (end - b) as usize);
        }
        // lazy: the touched granules of the run (untouched ones have nothing mapped)
        let mut added = 0;
        for w in from / 64..to.div_ceil(64) {
            let lo = (w * 64).max(from) - w * 64;
            let hi = (to - w * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let new = self.touched.0[w] & mask & !self.lazy.0[w];
            self.lazy.0[w] |= new;
            added += new.count_ones() as usize;
        }
        if added == 0 {
            return;
        }
        self.stats.lazy += added * GRANULE;
        self.stats.lazy_decommits += 1;
        if self.lazy_len == LAZY_SLOTS {
            self.drop_oldest_lazy(usize::MAX);
        }
        let i = (self.lazy_head + self.lazy_len) % LAZY_SLOTS;
        self.lazy_log[i] = LazyRun {
            first: from,
            n: to - from,
            round: self.round,
        };
        self.lazy_len += 1;
    }

    /// Unmaps up to `max` lazy granules of the oldest run of the ring (giving their frames
    /// back); the run leaves the ring once none of its granules is lazy. Returns how many
    /// it unmapped.
    fn drop_oldest_lazy(&mut self, max: usize) -> usize {
        let r = self.lazy_log[self.lazy_head];
        let end = r.first + r.n;
        let (mut g, mut done) = (r.first, 0);
        while done < max {
            let Some(a) = self.lazy.first_set(g, end) else {
                g = end;
                break;
            };
            let b = self
                .lazy
                .first_clear_from(a, end)
                .min(a.saturating_add(max - done));
            self.forget_lazy(a, b);
            self.unmap_range(self.window_start + (a * GRANULE) as u64, (b - a) * GRANULE);
            done += b - a;
            g = b;
        }
        if g >= end {
            self.lazy_head = (self.lazy_head + 1) % LAZY_SLOTS;
            self.lazy_len -= 1;
        } else {
            self.lazy_log[self.lazy_head].first = g;
            self.lazy_log[self.lazy_head].n = end - g;
        }
        done
    }

    /// Unmaps every lazy granule and gives its frame back; whether there was any.
    fn drop_all_lazy(&mut self) -> bool {
        let any = self.stats.lazy > 0;
        while self.lazy_len > 0 {
            self.drop_oldest_lazy(usize::MAX);
        }
        debug_assert_eq!(self.stats.lazy, 0, "a lazy granule outside the ring");
        any
    }

    /// A collect: the lazy runs that lived through `KEEP_ROUNDS` collects go back, at most
    /// [`LAZY_DROP`] granules (all with `force`).
    fn collect_lazy(&mut self, force: bool) {
        if force {
            self.drop_all_lazy();
            return;
        }
        self.round += 1;
        let mut budget = LAZY_DROP;
        while budget > 0
            && self.lazy_len > 0
            && self.lazy_log[self.lazy_head].round + KEEP_ROUNDS as u64 <= self.round
        {
            budget -= self.drop_oldest_lazy(budget);
        }
    }

    /// [`map_range`](Self::map_range), giving kept regions back and trying once more when
    /// frames run out.
    fn map_range_or_drop_kept(&mut self, start: u64, size: usize) -> Result<(), SourceError> {
        self.map_range(start, size).or_else(|e| {
            if self.drop_all_kept() {
                self.map_range(start, size)
            } else {
                Err(e)
            }
        })
    }

    fn granule_of(&self, addr: u64) -> usize {
        ((addr - self.window_start) / GRANULE as u64) as usize
    }

    /// Whether `[addr, addr + size)` lies inside the window.
    fn in_window(&self, addr: u64, size: usize) -> bool {
        let end = self.window_start + (self.granules * GRANULE) as u64;
        addr >= self.window_start && addr.checked_add(size as u64).is_some_and(|e| e <= end)
    }

    /// Maps every unmapped page of `[start, start + size)` to a fresh frame (not zeroed).
    /// On failure, unmaps the pages it mapped and gives their frames back: the range is as
    /// before.
    ///
    /// While the range is being mapped, each fresh page holds in its first word the address
    /// of the previous fresh page (0 ends the chain): that is how the undo finds the pages
    /// this call mapped without any other memory.
    fn map_range(&mut self, start: u64, size: usize) -> Result<(), SourceError> {
        let flags = self.flags;
        let Some(p) = self.paging.as_mut() else {
            return Err(SourceError);
        };
        self.stats.commits += 1;
        // every granule the range touches mapped whole already (a huge block growing over
        // a kept region, a page committed again): nothing to map, nothing to mark (a
        // granule mapped whole is touched, and stays full)
        let (g0, g1) = (
            ((start - self.window_start) / GRANULE as u64) as usize,
            ((start + size as u64 - 1 - self.window_start) / GRANULE as u64) as usize + 1,
        );
        if self.full.first_clear_from(g0, g1) == g1 {
            return Ok(());
        }
        let mut chain: u64 = 0;
        let mut failed = false;
        let end = start + (size / PAGE * PAGE) as u64;
        let mut addr = start;
        // the level-1 table of the 2 MiB at `table_base` (walked once per table), if the
        // mapper reaches it; `u64::MAX`: none walked yet
        let mut table_base = u64::MAX;
        let mut table: Option<*mut PageTable> = None;
        while addr < end {
            let g = ((addr - self.window_start) as usize) / GRANULE;
            if self.full.get(g) {
                // every page of the granule is mapped: on to the next one that is not (a
                // word of the bitmap at a time: a huge block growing over mapped memory
                // steps over 64 granules, 4 MiB, per word)
                let end_g = (end - self.window_start).div_ceil(GRANULE as u64) as usize;
                let next = self.full.first_clear_from(g + 1, end_g);
                addr = self.window_start + (next * GRANULE) as u64;
                continue;
            }
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(addr));
            addr += PAGE as u64;
            let addr = addr - PAGE as u64;
            if addr & !(L1_SPAN - 1) != table_base {
                table_base = addr & !(L1_SPAN - 1);
                table = p.mapper.level_1_table(page).map(|t| t as *mut PageTable);
            }
            if let Some(t) = table {
                // SAFETY: the table was reached through the mapper for this 2 MiB, and the
                // source never frees page tables (nor does `map_to`, the only other call
                // on the mapper meanwhile, which only adds tables where none are): it
                // stays valid, and only this source (under its lock) writes its entries
                // for the window.
                let entry = unsafe { &mut (&mut *t)[((addr >> 12) & 511) as usize] };
                if entry.flags().contains(PageTableFlags::PRESENT) {
                    continue;
                }
                let Some(frame) = p.frames.allocate_frame() else {
                    failed = true;
                    break;
                };
                // A not-present entry made present needs no TLB flush (no CPU caches
                // translations from not-present entries).
                entry.set_frame(frame, flags);
                // SAFETY: the page was just mapped writable to a frame nobody else uses.
                unsafe { (addr as *mut u64).write(chain) };
                chain = addr;
                self.stats.mapped_pages += 1;
                continue;
            }
            // (no page of a granule never touched is mapped: no page-table walk to ask)
            if self.touched.get(g) && p.mapper.translate_page(page).is_ok() {
                continue;
            }
            let Some(frame) = p.frames.allocate_frame() else {
                failed = true;
                break;
            };
            // the next page walks again: this one may have added its level-1 table
            table_base = u64::MAX;
            // SAFETY: the page lies in the window, which only this source maps (init's
            // contract), and is unmapped (checked above); the frame is unused RAM fresh from
            // the frame allocator, so mapping it aliases nothing.
            match unsafe { p.mapper.map_to(page, frame, flags, &mut p.frames) } {
                Ok(flush) => flush.flush(),
                Err(e) => {
                    // SAFETY: the frame was never mapped; it goes back unused.
                    unsafe { p.frames.deallocate_frame(frame) };
                    if let MapToError::PageAlreadyMapped(_) = e {
                        continue;
                    }
                    failed = true;
                    break;
                }
            }
            // SAFETY: the page was just mapped writable to a frame nobody else uses.
            unsafe { (addr as *mut u64).write(chain) };
            chain = addr;
            self.stats.mapped_pages += 1;
        }
        let (first, last) = (
            self.granule_of(start),
            self.granule_of(start + size as u64 - 1),
        );
        self.touched.set_range(first, last + 1, true);
        if failed {
            self.stats.commit_failures += 1;
            self.unmap_chain(chain, start, size);
            return Err(SourceError);
        }
        // the granules the range covers whole are all mapped now
        let (whole_first, whole_end) = (
            (start - self.window_start).div_ceil(GRANULE as u64) as usize,
            ((end - self.window_start) / GRANULE as u64) as usize,
        );
        if whole_first < whole_end {
            self.full.set_range(whole_first, whole_end, true);
        }
        Ok(())
    }

    /// Undo of a failed `map_range`: unmaps the pages on the chain and frees their frames.
    fn unmap_chain(&mut self, mut chain: u64, start: u64, size: usize) {
        let mut batch = FrameBatch::new();
        while chain != 0 {
            // SAFETY: the chain links pages this call mapped, still mapped; read the link
            // before the page goes away.
            let next = unsafe { (chain as *const u64).read() };
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(chain));
            self.unmap_page(page, &mut batch, start, size);
            chain = next;
        }
        self.finish_batch(&mut batch, start, size);
    }

    /// Unmaps `page` if it is mapped, queueing its frame in `batch`.
    fn unmap_page(
        &mut self,
        page: Page<Size4KiB>,
        batch: &mut FrameBatch,
        start: u64,
        size: usize,
    ) {
        let Some(p) = self.paging.as_mut() else {
            return;
        };
        if let Ok((frame, flush)) = p.mapper.unmap(page) {
            // (flushed with the batch, before its frames go back)
            flush.ignore();
            self.stats.mapped_pages -= 1;
            if batch.push(frame, page.start_address().as_u64()) {
                self.finish_batch(batch, start, size);
            }
        }
    }

    /// Flushes this CPU's and the other CPUs' TLBs of the batch's pages, then gives the
    /// batch's frames back.
    fn finish_batch(&mut self, batch: &mut FrameBatch, start: u64, size: usize) {
        if batch.len == 0 {
            return;
        }
        if self.flush_all_ok && batch.len > FLUSH_ALL_ABOVE {
            tlb::flush_all();
        } else {
            for i in 0..batch.len {
                tlb::flush(VirtAddr::new(batch.get(i).1));
            }
        }
        if let Some(shootdown) = self.shootdown {
            self.stats.shootdowns += 1;
            shootdown(VirtAddr::new(start), size);
        }
        let Some(p) = self.paging.as_mut() else {
            return;
        };
        for i in 0..batch.len {
            let frame = batch.get(i).0;
            // SAFETY: the frame was unmapped from its only mapping and every CPU has flushed
            // its TLB since (this CPU above, the others by the shootdown): nothing refers
            // to it.
            unsafe { p.frames.deallocate_frame(frame) };
        }
        batch.len = 0;
    }

    /// Unmaps the mapped pages of `[from, to)` (page-aligned, inside `[start, start +
    /// size)`), queueing their frames in `batch` (handed back when it fills up): one
    /// page-table walk per level-1 table, whose entries it clears in a row.
    fn unmap_pages(&mut self, from: u64, to: u64, batch: &mut FrameBatch, start: u64, size: usize) {
        let mut a = from;
        while a < to {
            let table_end = to.min((a & !(L1_SPAN - 1)) + L1_SPAN);
            let Some(p) = self.paging.as_mut() else {
                return;
            };
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(a));
            let Some(table) = p.mapper.level_1_table(page) else {
                // no table to reach directly: page by page through the mapper
                while a < table_end {
                    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(a));
                    self.unmap_page(page, batch, start, size);
                    a += PAGE as u64;
                }
                continue;
            };
            while a < table_end {
                let entry = &mut table[((a >> 12) & 511) as usize];
                a += PAGE as u64;
                if !entry.flags().contains(PageTableFlags::PRESENT) {
                    continue;
                }
                let frame = PhysFrame::containing_address(entry.addr());
                entry.set_unused();
                self.stats.mapped_pages -= 1;
                if batch.push(frame, a - PAGE as u64) {
                    break; // (the table is borrowed from the mapper: hand back below)
                }
            }
            if batch.len == BATCH {
                self.finish_batch(batch, start, size);
            }
        }
    }

    /// Unmaps every mapped page of `[start, start + size)` and gives the frames back.
    fn unmap_range(&mut self, start: u64, size: usize) {
        self.claim_lazy(start, size, true);
        self.stats.decommits += 1;
        let mut batch = FrameBatch::new();
        let end = start + size as u64;
        let mut g = self.granule_of(start);
        let last = self.granule_of(end - 1);
        self.full.set_range(g, last + 1, false);
        while g <= last {
            // a run of touched granules at a time (untouched ones map nothing)
            let Some(first) = self.touched.first_set(g, last + 1) else {
                break;
            };
            let run_end = self.touched.first_clear_from(first, last + 1);
            let g_start = self.window_start + (first * GRANULE) as u64;
            let g_end = self.window_start + (run_end * GRANULE) as u64;
            let (from, to) = (g_start.max(start), g_end.min(end));
            self.unmap_pages(from, to, &mut batch, start, size);
            // granules covered whole are untouched now
            let whole_first = first + usize::from(from > g_start);
            let whole_end = run_end - usize::from(to < g_end);
            if whole_first < whole_end {
                self.touched.set_range(whole_first, whole_end, false);
            }
            g = run_end;
        }
        self.finish_batch(&mut batch, start, size);
    }
}

impl<M, A> Inner<M, A>
where
    M: PageTables,
    A: FrameAllocator<Size4KiB> + FrameDeallocator<Size4KiB>,
{
    /// Takes granules `[first + old_n, first + new_n)` if they are all free (the region
    /// `[first, first + old_n)` grows in place).
    fn grow_in_place(&mut self, first: usize, old_n: usize, new_n: usize) -> bool {
        let (from, to) = (first + old_n, first + new_n);
        if to > self.granules || (from < to && self.used.first_set(from, to).is_some()) {
            return false;
        }
        self.used.set_range(from, to, true);
        if (from..to).contains(&self.hint) {
            self.hint = self.used.first_clear_from(to, self.granules);
        }
        true
    }

    /// Moves the mapped pages of `[from, from + size)` to the same offsets from `to`
    /// (whose pages are unmapped), keeping their frames: the contents move without a copy.
    /// On failure (no frame for a page table), moves back what it moved and returns false.
    fn move_pages(&mut self, from: u64, to: u64, size: usize) -> bool {
        // pages leave the old place (and the new one if the move goes back)
        for at in [from, to].into_iter().filter(|_| size > 0) {
            let g = self.granule_of(at);
            self.full
                .set_range(g, self.granule_of(at + size as u64 - 1) + 1, false);
        }
        let flags = self.flags;
        let Some(p) = self.paging.as_mut() else {
            return false;
        };
        let page_at = |a: u64| Page::<Size4KiB>::containing_address(VirtAddr::new(a));
        let mut moved = 0;
        let mut ok = true;
        while moved < size {
            let off = moved as u64;
            if let Ok((frame, flush)) = p.mapper.unmap(page_at(from + off)) {
                flush.flush();
                // SAFETY: the target page lies in the window, which only this source maps,
                // in granules reserved for this move and unmapped; the frame was just
                // unmapped from its only mapping, so it stays mapped once, with its data.
                match unsafe {
                    p.mapper
                        .map_to(page_at(to + off), frame, flags, &mut p.frames)
                } {
                    Ok(f) => f.flush(),
                    Err(_) => {
                        // SAFETY: the page it came from was mapped by this source a moment
                        // ago: its page tables exist, so this needs no frame and succeeds.
                        if let Ok(f) = unsafe {
                            p.mapper
                                .map_to(page_at(from + off), frame, flags, &mut p.frames)
                        } {
                            f.flush();
                        }
                        ok = false;
                        break;
                    }
                }
            }
            moved += PAGE;
        }
        if ok {
            return true;
        }
        // move back the pages moved so far
        let mut back = 0;
        while back < moved {
            let off = back as u64;
            if let Ok((frame, flush)) = p.mapper.unmap(page_at(to + off)) {
                flush.flush();
                // SAFETY: as above: the old page's tables exist, and the frame goes back
                // to where it was.
                if let Ok(f) = unsafe {
                    p.mapper
                        .map_to(page_at(from + off), frame, flags, &mut p.frames)
                } {
                    f.flush();
                }
            }
            back += PAGE;
        }
        false
    }
}

impl Bitmap {
    /// The first clear bit at or after `from` (or `limit` if none before it).
    fn first_clear_from(&self, from: usize, limit: usize) -> usize {
        let mut i = from;
        while i < limit {
            let w = i / 64;
            let bits = !self.0[w] >> (i % 64);
            if bits != 0 {
                return (i + bits.trailing_zeros() as usize).min(limit);
            }
            i = (w + 1) * 64;
        }
        limit
    }
}

/// Frames unmapped but not yet given back (waiting for the TLB shootdown).
///
/// Invariant: `entries[..len]` are initialised. The rest is left uninitialised: zeroing
/// the array on every `unmap_range` would cost more than unmapping a few pages.
struct FrameBatch {
    /// A frame and the page it was mapped at (to flush).
    entries: [MaybeUninit<(PhysFrame<Size4KiB>, u64)>; BATCH],
    len: usize,
}

impl FrameBatch {
    fn new() -> Self {
        FrameBatch {
            entries: [const { MaybeUninit::uninit() }; BATCH],
            len: 0,
        }
    }

    /// Adds a frame unmapped from the page at `page`; true when the batch is full.
    #[inline]
    fn push(&mut self, f: PhysFrame<Size4KiB>, page: u64) -> bool {
        self.entries[self.len].write((f, page));
        self.len += 1;
        self.len == BATCH
    }

    /// Entry `i` (below `len`).
    #[inline]
    fn get(&self, i: usize) -> (PhysFrame<Size4KiB>, u64) {
        assert!(i < self.len);
        // SAFETY: entries below `len` were written by `push` (the invariant).
        unsafe { self.entries[i].assume_init() }
    }
}

// SAFETY:
// - `alloc` takes granules that no live region holds (the `used` bitmap, under the lock) in
//   a window that only this source maps (init's contract), so regions never overlap each
//   other or anything else; the start is a multiple of `align` because the window start is
//   aligned to `align` (checked) and the granule index is a multiple of `align / GRANULE`.
// - committed ranges are mapped writable to fresh frames (`map_range`); nothing is reported
//   zeroed.
// - `remap` keeps the region's frames (and so its contents) in order at the old or a new
//   place of the window, maps fresh frames behind them, and gives the old place back only
//   after every CPU flushed its translations of it.
// - `decommit` and `free` unmap only pages inside the given range, or pages of granules
//   the allocator decommitted whole before (lazy ones), which hold no live data (and any
//   call may unmap those); a lazy granule stays mapped to its own frames, so nothing else
//   can reach them until it is unmapped, and `commit` of it hands them back as they are
//   (reported not zeroed, as every commit is).
// - no method allocates: all state is in `self`, and frames come from the frame allocator.
// - all methods take the lock, so any CPU may call them at any time.
unsafe impl<M, A> PageSource for FrameSource<M, A>
where
    M: PageTables + Send,
    A: FrameAllocator<Size4KiB> + FrameDeallocator<Size4KiB> + Send,
{
    fn config(&self) -> SourceConfig {
        SourceConfig {
            page_size: PAGE,
            alloc_granularity: PAGE,
            has_reserve: true,
            decommit_zeroes: false,
        }
    }

    unsafe fn alloc(&self, size: usize, align: usize, commit: bool) -> Option<Region> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let size = size.checked_next_multiple_of(PAGE)?;
        let n = size.div_ceil(GRANULE);
        let align_granules = (align / GRANULE).max(1);
        self.with(|s| {
            s.paging.as_ref()?;
            if s.window_start % align as u64 != 0 {
                return None; // alignment beyond the window's own
            }
            // a kept region as it is: its pages are mapped but where the allocator had
            // decommitted some before freeing it, which `map_range` fills in
            let (start, size) = match s.take_kept(size, align.max(GRANULE)) {
                Some((start, ksize)) => {
                    if commit && s.map_range_or_drop_kept(start, ksize).is_err() {
                        s.unmap_range(start, ksize);
                        s.release(s.granule_of(start), ksize.div_ceil(GRANULE));
                        return None;
                    }
                    (start, ksize)
                }
                None => {
                    let first = s.reserve_or_drop_kept(n, align_granules)?;
                    let start = s.window_start + (first * GRANULE) as u64;
                    if commit && s.map_range_or_drop_kept(start, size).is_err() {
                        s.release(first, n);
                        return None;
                    }
                    (start, size)
                }
            };
            s.stats.reserved += size.div_ceil(GRANULE) * GRANULE;
            s.stats.regions += 1;
            Some(Region {
                // SAFETY: the window lies in canonical, non-null address space (init).
                ptr: unsafe { NonNull::new_unchecked(start as *mut u8) },
                size,
                committed: commit,
                // only address space when not committed: `commit` reports what it maps
                zeroed: false,
            })
        })
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize) {
        let start = ptr.as_ptr() as u64;
        self.with(|s| {
            assert!(
                s.in_window(start, size),
                "FrameSource::free: region not in the window"
            );
            let n = size.div_ceil(GRANULE);
            s.stats.reserved -= n * GRANULE;
            s.stats.regions -= 1;
            // (its lazy granules' pages are kept with it or unmapped with it)
            let first = s.granule_of(start);
            s.forget_lazy(first, first + n);
            if !s.keep(start, size) {
                s.unmap_range(start, size);
                s.release(s.granule_of(start), n);
            }
        });
    }

    fn grows_by_remap(&self) -> bool {
        true
    }

    fn collect(&self, force: bool) {
        self.with(|s| {
            s.collect_lazy(force);
            for i in 0..KEEP_SLOTS {
                if s.kept[i].size == 0 {
                    continue;
                }
                s.kept[i].rounds += 1;
                if force || s.kept[i].rounds > KEEP_ROUNDS {
                    s.drop_kept(i);
                }
            }
        });
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, size: usize) -> Result<bool, SourceError> {
        let start = ptr.as_ptr() as u64;
        self.with(|s| {
            if !s.in_window(start, size) {
                return Err(SourceError);
            }
            // lazy granules are still mapped: nothing to map there
            s.stats.lazy_reused += s.claim_lazy(start, size, false);
            s.map_range_or_drop_kept(start, size).map(|()| false)
        })
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        let start = ptr.as_ptr() as u64;
        self.with(|s| {
            if s.in_window(start, size) {
                s.decommit_lazy(start, size);
            }
        });
        true
    }

    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
    ) -> Option<Region> {
        let start = ptr.as_ptr() as u64;
        let new_size = new_size.checked_next_multiple_of(PAGE)?;
        if new_size == 0 || !align.is_power_of_two() {
            return None;
        }
        self.with(|s| {
            s.paging.as_ref()?;
            if !s.in_window(start, old_size) || s.window_start % align as u64 != 0 {
                return None;
            }
            let first = s.granule_of(start);
            let (old_n, new_n) = (old_size.div_ceil(GRANULE), new_size.div_ceil(GRANULE));
            // (lazy granules' pages stay mapped, the region's again, and move with it)
            s.forget_lazy(first, first + old_n);
            let region = |at: u64| Region {
                // SAFETY: the window lies in canonical, non-null address space (init).
                ptr: unsafe { NonNull::new_unchecked(at as *mut u8) },
                size: new_size,
                committed: true,
                zeroed: false,
            };
            if new_size <= old_size {
                // shrink in place: unmap the tail, give back its whole granules
                if new_size < old_size {
                    s.unmap_range(start + new_size as u64, old_size - new_size);
                }
                s.release(first + new_n, old_n - new_n);
                s.stats.reserved -= (old_n - new_n) * GRANULE;
                return Some(region(start));
            }
            // over a kept region behind it, the region takes whole granules (all mapped)
            let aligned = start % align as u64 == 0;
            let new_size = if aligned && s.absorb_kept(first + old_n, first + new_n) {
                new_n * GRANULE
            } else {
                new_size
            };
            let region = |at: u64| Region {
                size: new_size,
                ..region(at)
            };
            if aligned && s.grow_in_place(first, old_n, new_n) {
                // the granules behind are ours now: map the new part
                if s.map_range_or_drop_kept(start + old_size as u64, new_size - old_size)
                    .is_err()
                {
                    // pages of an absorbed kept region are mapped there
                    s.unmap_range(start + old_size as u64, new_size - old_size);
                    s.release(first + old_n, new_n - old_n);
                    return None;
                }
                s.stats.reserved += (new_n - old_n) * GRANULE;
                return Some(region(start));
            }
            // move: a new place, fresh frames for the new part first (so that a failure
            // leaves the region as it was), then the old frames, page by page
            let nfirst = s.reserve_or_drop_kept(new_n, (align / GRANULE).max(1))?;
            let nstart = s.window_start + (nfirst * GRANULE) as u64;
            if s.map_range_or_drop_kept(nstart + old_size as u64, new_size - old_size)
                .is_err()
            {
                s.release(nfirst, new_n);
                return None;
            }
            if !s.move_pages(start, nstart, old_size) {
                s.unmap_range(nstart + old_size as u64, new_size - old_size);
                s.release(nfirst, new_n);
                return None;
            }
            s.touched.set_range(nfirst, nfirst + new_n, true);
            // no CPU may keep a translation of the old place once it can be reserved again
            if let Some(shootdown) = s.shootdown {
                s.stats.shootdowns += 1;
                shootdown(VirtAddr::new(start), old_size);
            }
            s.release(first, old_n);
            s.stats.reserved += (new_n - old_n) * GRANULE;
            Some(region(nstart))
        })
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, protect: bool) -> bool {
        let start = ptr.as_ptr() as u64;
        self.with(|s| {
            if !s.in_window(start, size) {
                return false;
            }
            if protect {
                s.unmap_range(start, size);
                true
            } else {
                s.claim_lazy(start, size, false);
                s.map_range(start, size).is_ok()
            }
        })
    }
}
