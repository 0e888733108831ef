//! The Windows page source: `VirtualAlloc`.
//!
//! Windows separates reserving address space (`MEM_RESERVE`) from backing it with memory
//! (`MEM_COMMIT`), and charges committed memory against the system commit limit whether
//! or not it is touched. So this source reports `has_reserve`: the core reserves a
//! segment whole and commits only the parts it uses, and a purge is a real
//! `MEM_DECOMMIT` that must be committed again before use.
//!
//! Address space is handed out in units of the allocation granularity (64 KiB), and a
//! reservation can only be released whole. A segment must be aligned to its own size
//! (4 MiB), which `VirtualAlloc` cannot ask for; `alloc` tries, in order:
//! 1. an aligned hint in an area of the address space that nothing else uses in practice
//!    (as mimalloc does): `VirtualAlloc` at a fixed address either gives exactly that range
//!    or fails, and never picks another place;
//! 2. `VirtualAlloc2` with an alignment requirement (`MEM_ADDRESS_REQUIREMENTS`), looked up
//!    at run time in `kernelbase.dll` so that Windows versions without it (before 10 1803)
//!    still work;
//! 3. an over-sized reservation of `size + align` of which the aligned middle is used and
//!    the rest stays reserved (address space only, never committed) until the region is
//!    freed. `free` releases the whole reservation through `VirtualQuery`'s allocation
//!    base, so it works for regions from every path.

use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::Memory::{
    MemExtendedParameterAddressRequirements, VirtualAlloc as SysVirtualAlloc, VirtualFree,
    VirtualProtect, VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_ADDRESS_REQUIREMENTS, MEM_COMMIT,
    MEM_DECOMMIT, MEM_EXTENDED_PARAMETER, MEM_EXTENDED_PARAMETER_0, MEM_EXTENDED_PARAMETER_1,
    MEM_RELEASE, MEM_RESERVE, MEM_RESET, PAGE_NOACCESS, PAGE_PROTECTION_FLAGS, PAGE_READWRITE,
    VIRTUAL_ALLOCATION_TYPE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

use super::{PageSource, Region, SourceConfig};
use crate::sync::{AtomicUsize, Ordering};

/// Memory from `VirtualAlloc`: reserved whole, committed and decommitted in pages.
pub struct VirtualAlloc;

/// `GetSystemInfo`'s page size and allocation granularity, read once (0: not yet read).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static GRANULARITY: AtomicUsize = AtomicUsize::new(0);

fn system_sizes() -> (usize, usize) {
    let p = PAGE_SIZE.load(Ordering::Relaxed);
    let g = GRANULARITY.load(Ordering::Relaxed);
    if p != 0 && g != 0 {
        return (p, g);
    }
    let mut info = MaybeUninit::<SYSTEM_INFO>::zeroed();
    // SAFETY: `info` is a valid out-pointer of the right type; GetSystemInfo cannot fail.
    let info = unsafe {
        GetSystemInfo(info.as_mut_ptr());
        info.assume_init()
    };
    let p = (info.dwPageSize as usize).max(4096);
    let g = (info.dwAllocationGranularity as usize).max(p);
    PAGE_SIZE.store(p, Ordering::Relaxed);
    GRANULARITY.store(g, Ordering::Relaxed);
    (p, g)
}

/// Which of the three ways of `alloc` gave the regions so far (for tests and reports):
/// aligned hints, `VirtualAlloc2`, over-sized reservations.
static BY_HINT: AtomicUsize = AtomicUsize::new(0);
static BY_ALLOC2: AtomicUsize = AtomicUsize::new(0);
static BY_OVERSIZE: AtomicUsize = AtomicUsize::new(0);

/// How the aligned regions of this process were obtained so far:
/// `(aligned hint, VirtualAlloc2, over-sized reservation)`.
pub fn aligned_alloc_counts() -> (usize, usize, usize) {
    (
        BY_HINT.load(Ordering::Relaxed),
        BY_ALLOC2.load(Ordering::Relaxed),
        BY_OVERSIZE.load(Ordering::Relaxed),
    )
}

#[cfg(target_pointer_width = "64")]
const HINT_BASE: usize = 2 << 40; // 2 TiB
#[cfg(target_pointer_width = "64")]
const HINT_END: usize = 6 << 40; // 2 TiB .. 6 TiB
#[cfg(target_pointer_width = "64")]
static HINT: AtomicUsize = AtomicUsize::new(HINT_BASE);

/// The next aligned hint for `size` bytes, or `None` (32-bit: no empty area to use).
#[cfg(target_pointer_width = "64")]
fn aligned_hint(size: usize, align: usize) -> Option<usize> {
    if size > (1 << 30) {
        return None;
    }
    let step = size.checked_add(align - 1)? & !(align - 1);
    let mut h = HINT.fetch_add(step, Ordering::Relaxed);
    if h + step > HINT_END {
        // wrap around; a hint that is taken just fails over to the next way
        HINT.store(HINT_BASE, Ordering::Relaxed);
        h = HINT_BASE;
    }
    Some((h + align - 1) & !(align - 1))
}

#[cfg(not(target_pointer_width = "64"))]
fn aligned_hint(_size: usize, _align: usize) -> Option<usize> {
    None
}

/// `VirtualAlloc2`'s signature (kernelbase.dll, Windows 10 1803 and later).
type VirtualAlloc2Fn = unsafe extern "system" fn(
    process: *mut c_void,
    base: *const c_void,
    size: usize,
    alloc_type: VIRTUAL_ALLOCATION_TYPE,
    protect: u32,
    params: *mut MEM_EXTENDED_PARAMETER,
    count: u32,
) -> *mut c_void;

/// `VirtualAlloc2`'s address, 1 when it was looked up and is missing, 0 before the lookup.
static ALLOC2: AtomicUsize = AtomicUsize::new(0);

fn virtual_alloc2() -> Option<VirtualAlloc2Fn> {
    let mut f = ALLOC2.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: both names are NUL-terminated; kernelbase.dll is loaded in every
        // Windows process (and in Wine's), and a module handle from GetModuleHandleA needs
        // no release. A missing export gives null.
        f = unsafe {
            let module = GetModuleHandleA(c"kernelbase.dll".as_ptr() as *const u8);
            if module.is_null() {
                1
            } else {
                GetProcAddress(module, c"VirtualAlloc2".as_ptr() as *const u8)
                    .map_or(1, |p| p as usize)
            }
        };
        ALLOC2.store(f, Ordering::Release);
    }
    if f == 1 {
        None
    } else {
        // SAFETY: `f` is the address of kernelbase's `VirtualAlloc2`, whose signature is
        // `VirtualAlloc2Fn` (documented in memoryapi.h).
        Some(unsafe { core::mem::transmute::<usize, VirtualAlloc2Fn>(f) })
    }
}

fn alloc_type(commit: bool) -> VIRTUAL_ALLOCATION_TYPE {
    if commit {
        MEM_RESERVE | MEM_COMMIT
    } else {
        MEM_RESERVE
    }
}

/// `VirtualAlloc` of a new reservation at `addr` (null: anywhere).
///
/// # Safety
/// `size > 0`. Without an existing reservation at `addr` this never touches other memory:
/// a taken address makes the call fail.
unsafe fn reserve(addr: usize, size: usize, commit: bool) -> Option<NonNull<u8>> {
    // SAFETY: a new reservation (MEM_RESERVE) never replaces an existing one: the call
    // fails when any page of the range is in use.
    let p = unsafe {
        SysVirtualAlloc(
            addr as *const c_void,
            size,
            alloc_type(commit),
            PAGE_READWRITE,
        )
    };
    NonNull::new(p as *mut u8)
}

/// What `VirtualQuery` says of the pages from `p` on (the first run of pages with the same
/// state), or `None`.
///
/// # Safety
/// No precondition beyond `p` being an address (any address may be asked).
unsafe fn query(p: *const u8) -> Option<MEMORY_BASIC_INFORMATION> {
    let mut mbi = MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
    // SAFETY: `mbi` is a valid out-pointer of the size passed.
    let n = unsafe {
        VirtualQuery(
            p as *const c_void,
            mbi.as_mut_ptr(),
            core::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    // SAFETY: VirtualQuery filled the structure when it returned non-zero.
    (n != 0).then(|| unsafe { mbi.assume_init() })
}

/// The start of the reservation holding `p`.
///
/// # Safety
/// `p` lies in a reservation of ours.
unsafe fn allocation_base(p: *const u8) -> Option<*mut c_void> {
    // SAFETY: any address may be asked.
    unsafe { query(p) }.map(|m| m.AllocationBase)
}

/// Whether every page of `[p, p + size)` is reserved but not committed (so committing it
/// gives zeroed pages).
///
/// # Safety
/// The range lies in a reservation of ours.
unsafe fn all_reserved(p: *const u8, size: usize) -> bool {
    // the first run of pages with equal state starts at `p`'s page, which is `p`
    // SAFETY: any address may be asked.
    unsafe { query(p) }.is_some_and(|m| m.State == MEM_RESERVE && m.RegionSize >= size)
}

fn region(p: NonNull<u8>, size: usize, commit: bool) -> Region {
    Region {
        ptr: p,
        size,
        committed: commit,
        zeroed: true,
    }
}

impl VirtualAlloc {
    /// Way 1: an aligned hint.
    ///
    /// # Safety
    /// As `PageSource::alloc`.
    unsafe fn alloc_hinted(size: usize, align: usize, commit: bool) -> Option<NonNull<u8>> {
        let hint = aligned_hint(size, align)?;
        // SAFETY: `size > 0`; a new reservation fails rather than replace anything.
        let p = unsafe { reserve(hint, size, commit)? };
        if p.as_ptr() as usize & (align - 1) != 0 {
            // cannot happen (the range is exactly the hint), but do not trust it
            // SAFETY: the reservation we just made.
            unsafe { VirtualFree(p.as_ptr() as *mut c_void, 0, MEM_RELEASE) };
            return None;
        }
        BY_HINT.fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    /// Way 2: `VirtualAlloc2` with an alignment requirement.
    ///
    /// # Safety
    /// As `PageSource::alloc`.
    unsafe fn alloc_aligned2(size: usize, align: usize, commit: bool) -> Option<NonNull<u8>> {
        let f = virtual_alloc2()?;
        let mut req = MEM_ADDRESS_REQUIREMENTS {
            LowestStartingAddress: ptr::null_mut(),
            HighestEndingAddress: ptr::null_mut(),
            Alignment: align,
        };
        let mut param = MEM_EXTENDED_PARAMETER {
            Anonymous1: MEM_EXTENDED_PARAMETER_0 {
                _bitfield: MemExtendedParameterAddressRequirements as u64,
            },
            Anonymous2: MEM_EXTENDED_PARAMETER_1 {
                Pointer: ptr::addr_of_mut!(req) as *mut c_void,
            },
        };
        // SAFETY: a new reservation anywhere in the current process (null handle means
        // the current process); `param` points at `req`, both live for the call.
        let p = unsafe {
            f(
                ptr::null_mut(),
                ptr::null(),
                size,
                alloc_type(commit),
                PAGE_READWRITE,
                &mut param,
                1,
            )
        };
        let p = NonNull::new(p as *mut u8)?;
        if p.as_ptr() as usize & (align - 1) != 0 {
            // a system that ignores the requirement (seen in emulators): give it back
            // SAFETY: the reservation we just made.
            unsafe { VirtualFree(p.as_ptr() as *mut c_void, 0, MEM_RELEASE) };
            return None;
        }
        BY_ALLOC2.fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    /// Way 3: reserve `size + align` and use the aligned middle; the rest stays reserved
    /// (never committed) until `free` releases the whole reservation.
    ///
    /// # Safety
    /// As `PageSource::alloc`.
    unsafe fn alloc_oversized(size: usize, align: usize, commit: bool) -> Option<NonNull<u8>> {
        let total = size.checked_add(align)?;
        // SAFETY: `total > 0`; address space only.
        let base = unsafe { reserve(0, total, false)? };
        let start = (base.as_ptr() as usize + align - 1) & !(align - 1);
        if commit {
            // SAFETY: `[start, start + size)` lies in the reservation just made.
            let p = unsafe {
                SysVirtualAlloc(start as *const c_void, size, MEM_COMMIT, PAGE_READWRITE)
            };
            if p.is_null() {
                // SAFETY: the reservation we just made.
                unsafe { VirtualFree(base.as_ptr() as *mut c_void, 0, MEM_RELEASE) };
                return None;
            }
        }
        BY_OVERSIZE.fetch_add(1, Ordering::Relaxed);
        NonNull::new(start as *mut u8)
    }

    /// Way 2 on its own, for tests (the hint normally succeeds first). `None` also when
    /// the system has no `VirtualAlloc2`.
    ///
    /// # Safety
    /// As `PageSource::alloc`.
    #[doc(hidden)]
    pub unsafe fn alloc_aligned2_region(
        &self,
        size: usize,
        align: usize,
        commit: bool,
    ) -> Option<Region> {
        // SAFETY: the caller's obligations are those of `alloc`.
        unsafe { Self::alloc_aligned2(size, align, commit) }.map(|p| region(p, size, commit))
    }

    /// Whether the system has `VirtualAlloc2` (Windows 10 1803 and later).
    #[doc(hidden)]
    pub fn has_virtual_alloc2(&self) -> bool {
        virtual_alloc2().is_some()
    }

    /// Way 3 on its own, for tests of the fallback that the other ways normally hide.
    ///
    /// # Safety
    /// As `PageSource::alloc`.
    #[doc(hidden)]
    pub unsafe fn alloc_oversized_region(
        &self,
        size: usize,
        align: usize,
        commit: bool,
    ) -> Option<Region> {
        // SAFETY: the caller's obligations are those of `alloc`.
        unsafe { Self::alloc_oversized(size, align, commit) }.map(|p| region(p, size, commit))
    }
}

// SAFETY: every region is a fresh reservation of ours (disjoint from everything else,
// zeroed), committed in full when reported so; `decommit`, `reset` and `protect` act on the
// given pages only; `free` releases exactly the reservation that holds the region, which no
// other region shares; nothing here allocates.
unsafe impl PageSource for VirtualAlloc {
    fn config(&self) -> SourceConfig {
        let (page_size, granularity) = system_sizes();
        SourceConfig {
            page_size,
            alloc_granularity: granularity,
            has_reserve: true,
            // decommit always asks for a recommit, so this is never consulted
            decommit_zeroes: false,
        }
    }

    unsafe fn alloc(&self, size: usize, align: usize, commit: bool) -> Option<Region> {
        let (_, granularity) = system_sizes();
        let p = if align <= granularity {
            // every reservation starts on the allocation granularity
            // SAFETY: `size > 0` by the caller's contract.
            unsafe { reserve(0, size, commit)? }
        } else {
            // SAFETY: `size > 0` and `align` a power of two (caller's contract).
            unsafe {
                Self::alloc_hinted(size, align, commit)
                    .or_else(|| Self::alloc_aligned2(size, align, commit))
                    .or_else(|| Self::alloc_oversized(size, align, commit))?
            }
        };
        Some(region(p, size, commit))
    }

    unsafe fn free(&self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: `ptr` starts a live region of ours (caller), which lies in one
        // reservation that holds nothing else: releasing it whole frees exactly the region
        // (and, for an over-sized one, its unused reserved ends).
        unsafe {
            if let Some(base) = allocation_base(ptr.as_ptr()) {
                VirtualFree(base, 0, MEM_RELEASE);
            }
        }
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, size: usize) -> Result<bool, super::SourceError> {
        // SAFETY: the range lies in a live region of ours (caller).
        let zero = unsafe { all_reserved(ptr.as_ptr(), size) };
        // SAFETY: as above; committing committed pages keeps their contents.
        let p = unsafe {
            SysVirtualAlloc(
                ptr.as_ptr() as *const c_void,
                size,
                MEM_COMMIT,
                PAGE_READWRITE,
            )
        };
        if p.is_null() {
            Err(super::SourceError)
        } else {
            Ok(zero)
        }
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the range lies in a live region of ours and holds no live data (caller).
        unsafe { VirtualFree(ptr.as_ptr() as *mut c_void, size, MEM_DECOMMIT) };
        true
    }

    unsafe fn reset(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the range lies in a live region of ours and holds no live data (caller);
        // MEM_RESET only lets the system drop the contents, the pages stay committed.
        unsafe {
            SysVirtualAlloc(
                ptr.as_ptr() as *const c_void,
                size,
                MEM_RESET,
                PAGE_READWRITE,
            )
        };
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, size: usize, protect: bool) -> bool {
        let prot: PAGE_PROTECTION_FLAGS = if protect {
            PAGE_NOACCESS
        } else {
            PAGE_READWRITE
        };
        let mut old: PAGE_PROTECTION_FLAGS = 0;
        // SAFETY: the range lies in a live region of ours (caller); `old` is a valid
        // out-pointer.
        unsafe { VirtualProtect(ptr.as_ptr() as *const c_void, size, prot, &mut old) != 0 }
    }
}
