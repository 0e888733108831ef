//! The page source: where segments come from.
//!
//! This is the only seam between the allocator core and the platform. The core asks a
//! [`PageSource`] for large aligned regions (segments), and tells it which parts it uses
//! ([`commit`](PageSource::commit)) and which it no longer needs
//! ([`decommit`](PageSource::decommit), [`reset`](PageSource::reset)). The methods are
//! specified by what they mean, not by which system call implements them.
//!
//! Backends:
//! - [`Mmap`] (unix, feature `std`): anonymous `mmap`, purge with `madvise`.
//! - `VirtualAlloc` (Windows, feature `std`): reserve, then commit and decommit in pages.
//! - [`RegionSource`]: a fixed slice of memory, for MMU-less targets and tests.
//! - `frames` (x86_64 kernels, feature `frames`): a virtual window mapped page by page.

use core::ptr::NonNull;

mod region;
pub use region::RegionSource;

#[cfg(all(feature = "std", unix))]
mod mmap;
#[cfg(all(feature = "std", unix))]
pub use mmap::Mmap;

#[cfg(all(feature = "std", windows))]
mod virtual_alloc;
#[cfg(all(feature = "std", windows))]
pub use virtual_alloc::{aligned_alloc_counts, VirtualAlloc};

#[cfg(all(feature = "frames", target_arch = "x86_64"))]
pub mod frames;

/// What a page source can do. Capabilities are flags, not platform names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Granularity of `commit`, `decommit`, `reset` and `protect` (4 KiB on x86_64).
    /// A power of two.
    pub page_size: usize,
    /// Granularity of `alloc` sizes (64 KiB on Windows, the page size elsewhere).
    pub alloc_granularity: usize,
    /// `alloc(.., commit = false)` can reserve address space without backing it, and
    /// `commit` makes parts of it usable. When false the core always asks for committed
    /// memory and never calls `commit`.
    pub has_reserve: bool,
    /// After `decommit` returns `false` (no recommit needed), the range reads as zero.
    /// (True for `madvise(MADV_DONTNEED)` on private anonymous Linux mappings.)
    pub decommit_zeroes: bool,
}

/// A region handed out by [`PageSource::alloc`].
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// Start of the region, aligned as requested.
    pub ptr: NonNull<u8>,
    /// Size in bytes, at least as requested, a multiple of `alloc_granularity`.
    /// This exact `(ptr, size)` pair is what `free` takes back.
    pub size: usize,
    /// The whole region is usable now (no `commit` needed before touching it).
    pub committed: bool,
    /// The committed parts of the region read as zero.
    pub zeroed: bool,
}

/// Error from a page source operation that could not be done (usually: out of memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceError;

/// Where segments come from.
///
/// # Safety
///
/// Implementors must guarantee:
/// - `alloc` returns memory that nothing else uses (not other regions of this source, not
///   the caller's stack or statics) until the same `(ptr, size)` is passed to `free`;
///   aligned to at least the requested `align`; at least `size` bytes long.
/// - A region reported `committed` is readable and writable in full; one reported `zeroed`
///   reads as zero in all of its committed parts.
/// - After `commit(range)` returns `Ok(_)`, the range is readable and writable; `Ok(true)`
///   means it reads as zero.
/// - `decommit` and `reset` never make memory outside the given range unusable.
/// - The source never allocates through the allocator that it serves (no `Vec`, no
///   `Box`, no `format!` that allocates), since the allocator may call it while it holds
///   its own internal state half-updated.
/// - All methods may be called from any thread or CPU at the same time (`Sync`).
///
/// Callers (the allocator core) guarantee:
/// - `size` arguments are non-zero multiples of `config().page_size` (of
///   `alloc_granularity` for `alloc`), `align` is a power of two that is at least the
///   page size, and range pointers are page aligned.
/// - `free` receives exactly a `(ptr, size)` returned by `alloc`, once.
/// - `commit`, `decommit`, `reset` and `protect` receive ranges inside one live region.
/// - After `decommit` returns `true`, the caller does not touch the range until a
///   successful `commit`.
pub unsafe trait PageSource: Sync {
    /// What this source can do. Must return the same value every time.
    fn config(&self) -> SourceConfig;

    /// Allocates a region of at least `size` bytes aligned to `align`. With
    /// `commit == false` and `config().has_reserve`, the source may only reserve the
    /// address space (and report `committed: false`). Returns `None` when out of memory.
    ///
    /// # Safety
    /// See the trait's caller obligations.
    unsafe fn alloc(&self, size: usize, align: usize, commit: bool) -> Option<Region>;

    /// Gives back a whole region returned by `alloc`.
    ///
    /// # Safety
    /// `ptr` and `size` are exactly those of a live region; nothing uses it afterwards.
    unsafe fn free(&self, ptr: NonNull<u8>, size: usize);

    /// Makes the range usable. `Ok(true)` if it now reads as zero. The default (for sources
    /// without reserve) does nothing: the memory is always usable.
    ///
    /// # Safety
    /// The range lies inside one live region.
    unsafe fn commit(&self, ptr: NonNull<u8>, size: usize) -> Result<bool, SourceError> {
        let _ = (ptr, size);
        Ok(false)
    }

    /// Gives the physical memory behind the range back. Returns `true` ("needs recommit")
    /// if the range must be `commit`ted before it is touched again. The default does
    /// nothing and returns `false`.
    ///
    /// # Safety
    /// The range lies inside one live region, and holds no live data.
    unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        let _ = (ptr, size);
        false
    }

    /// Tells the source the contents of the range are no longer needed, while it stays
    /// usable (`MADV_FREE`). The default does nothing.
    ///
    /// # Safety
    /// The range lies inside one live region, and holds no live data.
    unsafe fn reset(&self, ptr: NonNull<u8>, size: usize) {
        let _ = (ptr, size);
    }

    /// Resizes a whole region to `new_size` bytes aligned to `align`, keeping the first
    /// `min(old_size, new_size)` bytes of content, moving it if need be (`mremap`). The
    /// result is committed. `None` when the source cannot (the default), and then the old
    /// region is untouched.
    ///
    /// # Safety
    /// `ptr`/`old_size` are exactly a live region of committed memory; on success it is
    /// replaced by the returned region (the old one must not be used or freed).
    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
    ) -> Option<Region> {
        let _ = (ptr, old_size, new_size, align);
        None
    }

    /// Tells the source whether the range will hold large blocks, touched in big pieces:
    /// then it may back it with large OS pages (transparent huge pages), which makes far
    /// fewer page faults. The default does nothing.
    ///
    /// # Safety
    /// The range lies inside one live region.
    unsafe fn advise_large_pages(&self, ptr: NonNull<u8>, size: usize, large: bool) {
        let _ = (ptr, size, large);
    }

    /// Whether [`remap`](Self::remap) grows a region without copying, cheaply enough that a
    /// block growing beyond the medium sizes should get a huge segment of its own, so that
    /// every further growth is a remap (a kernel's frame mapper, where mapping pages behind
    /// a region costs less than copying them). The default: no.
    fn grows_by_remap(&self) -> bool {
        false
    }

    /// Whether the live region at `ptr` may be split, at multiples of the OS page, into
    /// regions of their own, and joined with a live region that starts where it ends and
    /// for which this holds too: every piece and every joined region is then a live region
    /// for all the other methods (freed, purged, advised, remapped on its own), as an
    /// anonymous mapping is (`munmap` and `madvise` act on page ranges, whatever calls
    /// mapped them). The allocator relies on this for soundness (it frees the pieces on
    /// their own), so a source says `true` only where it holds. `remap` of a joined region
    /// may fail (return `None`). The default: no.
    fn splits_regions(&self, ptr: NonNull<u8>) -> bool {
        let _ = ptr;
        false
    }

    /// Gives back memory the source keeps for reuse on its own (freed regions it keeps
    /// mapped, say): what it has kept a while, or all of it with `force`. The allocator
    /// calls it when it collects (every few slow paths, and when asked to give back
    /// everything). The default keeps nothing and does nothing.
    fn collect(&self, force: bool) {
        let _ = force;
    }

    /// Makes the range inaccessible (`protect == true`, a guard page) or accessible again.
    /// Returns `false` if the source cannot protect memory (the default).
    ///
    /// # Safety
    /// The range lies inside one live region, and holds no live data when protecting.
    unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, protect: bool) -> bool {
        let _ = (ptr, size, protect);
        false
    }
}
