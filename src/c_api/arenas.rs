//! mimalloc's arenas: memory reserved from the OS (`mi_reserve_os_memory*`, in huge OS
//! pages with `mi_reserve_huge_os_pages_*`) or handed over by the program
//! (`mi_manage_os_memory*`, `mi_manage_memory`), and heaps that allocate only inside one
//! (`mi_heap_new_in_arena`).
//!
//! An arena is a page source ([`RegionSource`] over its memory) with its own [`Domain`]:
//! segments of a heap in the arena come only from the arena's memory, and when it is full,
//! allocation fails (NULL, `ENOMEM`) instead of going to the OS. Its segments are in the
//! process's segment map, so `mi_free`, `mi_usable_size` and friends work on its blocks
//! from any thread.
//!
//! A heap in an arena (a `SharedHeap` whose `arena` is the arena's domain) may be used by
//! any thread, as any heap: each thread that allocates from it gets its own part, a heap
//! in thread data of the arena's domain (`shared::arena_part_new`), so its segments
//! come from the arena only. Its blocks may be freed by any thread; any thread may delete
//! or destroy it. `mi_heap_destroy` gives all its memory back to the arena (other threads'
//! parts as they next look up a heap, collect or exit); `mi_heap_delete` leaves the live
//! blocks valid in the arena (their segments are kept by the arena's domain until they are
//! freed). A thread that exits leaves its part's live blocks valid in the arena.
//!
//! An arena that is not exclusive also serves `malloc` and the default heaps: the
//! process's domain takes segments from such arenas before asking the OS
//! (`global::process_source`), as mimalloc does. Arenas are never given back (as in
//! mimalloc).

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::domain::Domain;
use crate::global::hosted;
use crate::heap::{OwnedHeap, SharedHeap};
use crate::shared;
use crate::size_class::SEGMENT_SIZE;
use crate::source::RegionSource;

/// Most arenas in a process.
const MAX_ARENAS: usize = 16;

/// What one arena slot knows of its memory.
struct ArenaInfo {
    /// 0 free, 1 being set up, 2 live.
    state: AtomicU8,
    start: AtomicUsize,
    size: AtomicUsize,
    exclusive: AtomicBool,
    huge_pages: AtomicUsize,
}

const FREE: u8 = 0;
const SETUP: u8 = 1;
const LIVE: u8 = 2;

static INFO: [ArenaInfo; MAX_ARENAS] = [const {
    ArenaInfo {
        state: AtomicU8::new(FREE),
        start: AtomicUsize::new(0),
        size: AtomicUsize::new(0),
        exclusive: AtomicBool::new(false),
        huge_pages: AtomicUsize::new(0),
    }
}; MAX_ARENAS];

static SOURCES: [RegionSource; MAX_ARENAS] = [const { RegionSource::empty() }; MAX_ARENAS];

macro_rules! domains {
    ($($i:literal)*) => { [$(Domain::new(&SOURCES[$i]),)*] };
}
static DOMAINS: [Domain; MAX_ARENAS] = domains!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

/// The arena slot of an arena id (a pointer to its `ArenaInfo`), if it is a live arena.
fn arena_index(id: *mut c_void) -> Option<usize> {
    let base = INFO.as_ptr() as usize;
    let a = id as usize;
    let sz = core::mem::size_of::<ArenaInfo>();
    if a < base || a >= base + MAX_ARENAS * sz || (a - base) % sz != 0 {
        return None;
    }
    let i = (a - base) / sz;
    (INFO[i].state.load(Ordering::Acquire) == LIVE).then_some(i)
}

fn arena_id(i: usize) -> *mut c_void {
    &INFO[i] as *const ArenaInfo as *mut c_void
}

/// Number of live arenas.
pub(crate) fn count() -> usize {
    INFO.iter()
        .filter(|a| a.state.load(Ordering::Acquire) == LIVE)
        .count()
}

/// Makes an arena over `[start, start + size)`. Returns its id, or None when no slot is
/// free or the memory is too small for a segment.
///
/// # Safety
/// The range is readable and writable memory that nothing else uses, for the rest of the
/// process.
unsafe fn add_arena(
    start: *mut u8,
    size: usize,
    exclusive: bool,
    huge_pages: usize,
) -> Option<*mut c_void> {
    if start.is_null() || size < mi_arena_min_size() {
        return None;
    }
    let i = INFO.iter().position(|a| {
        a.state
            .compare_exchange(FREE, SETUP, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    let a = &INFO[i];
    a.start.store(start as usize, Ordering::Relaxed);
    a.size.store(size, Ordering::Relaxed);
    a.exclusive.store(exclusive, Ordering::Relaxed);
    a.huge_pages.store(huge_pages, Ordering::Relaxed);
    // SAFETY: the range is usable and ours for the rest of the process (this function's
    // contract), and this fresh slot's source has no memory yet, so nothing overlaps.
    unsafe { SOURCES[i].add_memory(start, size) };
    a.state.store(LIVE, Ordering::Release);
    // `malloc` draws from an arena that is not exclusive before asking the OS
    if !exclusive && !hosted::PROCESS_SOURCE.add_arena(&SOURCES[i], start as usize, size) {
        a.exclusive.store(true, Ordering::Relaxed); // (never: as many slots as arenas)
    }
    Some(arena_id(i))
}

/// Writes `id` to `out` when `out` is not null.
///
/// # Safety
/// `out` is null or writable.
unsafe fn put_id(out: *mut *mut c_void, id: *mut c_void) {
    if !out.is_null() {
        // SAFETY: non-null, so writable (this function's contract).
        unsafe { *out = id };
    }
}

// ---------------------------------------------------------------------------------------
// arenas

/// Segments are aligned to their size; an arena needs room for one segment at that
/// alignment and a page of thread data per heap.
#[no_mangle]
pub extern "C" fn mi_arena_min_alignment() -> usize {
    SEGMENT_SIZE
}

#[no_mangle]
pub extern "C" fn mi_arena_min_size() -> usize {
    2 * SEGMENT_SIZE
}

/// Reserves `size` bytes from the OS as an arena (0, or `ENOMEM`). The memory is mapped
/// read-write at once (the OS backs it as it is touched, whatever `commit` says);
/// `allow_large` is a hint shardalloc does not use.
#[no_mangle]
pub unsafe extern "C" fn mi_reserve_os_memory_ex(
    size: usize,
    _commit: bool,
    _allow_large: bool,
    exclusive: bool,
    arena_id: *mut *mut c_void,
) -> c_int {
    // SAFETY: `arena_id` is null or writable (the C caller's contract).
    unsafe { put_id(arena_id, ptr::null_mut()) };
    let size = match size.checked_add(SEGMENT_SIZE - 1) {
        Some(s) => (s & !(SEGMENT_SIZE - 1)).max(mi_arena_min_size()),
        None => return ::libc::ENOMEM,
    };
    let Some(p) = super::sys::map_aligned(size, SEGMENT_SIZE) else {
        return ::libc::ENOMEM;
    };
    // SAFETY: a fresh mapping, ours for the rest of the process.
    match unsafe { add_arena(p, size, exclusive, 0) } {
        Some(id) => {
            // SAFETY: as above.
            unsafe { put_id(arena_id, id) };
            0
        }
        // no free slot: the mapping is lost (as a failed mimalloc reservation's is not,
        // but arenas are few and this is the rare path)
        None => ::libc::ENOMEM,
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_reserve_os_memory(
    size: usize,
    commit: bool,
    allow_large: bool,
) -> c_int {
    // SAFETY: a null `arena_id` is allowed.
    unsafe { mi_reserve_os_memory_ex(size, commit, allow_large, false, ptr::null_mut()) }
}

/// Hands `[start, start + size)` to shardalloc as an arena (true on success). Memory
/// given as not committed is made read-write first (`mprotect` / `MEM_COMMIT`);
/// `is_pinned`, `is_zero` and `numa_node` are hints shardalloc does not need (an arena's
/// memory is never decommitted, and never assumed zero).
#[no_mangle]
pub unsafe extern "C" fn mi_manage_os_memory_ex(
    start: *mut c_void,
    size: usize,
    is_committed: bool,
    _is_pinned: bool,
    _is_zero: bool,
    _numa_node: c_int,
    exclusive: bool,
    arena_id: *mut *mut c_void,
) -> bool {
    // SAFETY: `arena_id` is null or writable (the C caller's contract).
    unsafe { put_id(arena_id, ptr::null_mut()) };
    if start.is_null() || size < mi_arena_min_size() {
        return false;
    }
    // SAFETY: the caller hands the range over (the C caller's contract).
    if !is_committed && !unsafe { super::sys::commit(start as *mut u8, size) } {
        return false;
    }
    // SAFETY: the range is usable memory the caller gave up for good (mimalloc's
    // contract for `mi_manage_os_memory`).
    match unsafe { add_arena(start as *mut u8, size, exclusive, 0) } {
        Some(id) => {
            // SAFETY: as above.
            unsafe { put_id(arena_id, id) };
            true
        }
        None => false,
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_manage_os_memory(
    start: *mut c_void,
    size: usize,
    is_committed: bool,
    is_pinned: bool,
    is_zero: bool,
    numa_node: c_int,
) -> bool {
    // SAFETY: the C caller's contract for `mi_manage_os_memory`; a null id is allowed.
    unsafe {
        mi_manage_os_memory_ex(
            start,
            size,
            is_committed,
            is_pinned,
            is_zero,
            numa_node,
            false,
            ptr::null_mut(),
        )
    }
}

type CommitFun = unsafe extern "C" fn(
    commit: bool,
    start: *mut c_void,
    size: usize,
    is_zero: *mut bool,
    arg: *mut c_void,
) -> bool;

/// As `mi_manage_os_memory_ex`, with the program's commit function: memory given as not
/// committed is committed through it once, in full (an arena's memory is never
/// decommitted afterwards).
#[no_mangle]
pub unsafe extern "C" fn mi_manage_memory(
    start: *mut c_void,
    size: usize,
    is_committed: bool,
    is_pinned: bool,
    is_zero: bool,
    numa_node: c_int,
    exclusive: bool,
    commit_fun: Option<CommitFun>,
    commit_fun_arg: *mut c_void,
    arena_id: *mut *mut c_void,
) -> bool {
    let mut committed = is_committed;
    if !committed && !start.is_null() && size >= mi_arena_min_size() {
        if let Some(f) = commit_fun {
            let mut zero = false;
            // SAFETY: the program's commit function, called on the range it hands over.
            committed = unsafe { f(true, start, size, &mut zero, commit_fun_arg) };
            if !committed {
                // SAFETY: `arena_id` is null or writable (the C caller's contract).
                unsafe { put_id(arena_id, ptr::null_mut()) };
                return false;
            }
        }
    }
    // SAFETY: the C caller's contract for `mi_manage_memory`.
    unsafe {
        mi_manage_os_memory_ex(
            start, size, committed, is_pinned, is_zero, numa_node, exclusive, arena_id,
        )
    }
}

/// The start and size of an arena (NULL and 0 for an unknown id).
#[no_mangle]
pub unsafe extern "C" fn mi_arena_area(id: *mut c_void, size: *mut usize) -> *mut c_void {
    let (start, len) = match arena_index(id) {
        Some(i) => (
            INFO[i].start.load(Ordering::Relaxed),
            INFO[i].size.load(Ordering::Relaxed),
        ),
        None => (0, 0),
    };
    if !size.is_null() {
        // SAFETY: non-null, so writable (the C caller's contract).
        unsafe { *size = len };
    }
    start as *mut c_void
}

#[no_mangle]
pub extern "C" fn mi_arena_contains(id: *mut c_void, p: *const c_void) -> bool {
    arena_index(id).is_some_and(|i| {
        let start = INFO[i].start.load(Ordering::Relaxed);
        let size = INFO[i].size.load(Ordering::Relaxed);
        (p as usize) >= start && (p as usize) - start < size
    })
}

// ---------------------------------------------------------------------------------------
// huge OS pages

/// Reserves `pages` huge OS pages of 1 GiB as an arena: 0, or `ENOMEM` when the OS does
/// not grant them (Linux grants them only from the pool configured in
/// `/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`; Windows needs a
/// privilege shardalloc does not ask for). `numa_node` and `timeout_msecs` are not used.
#[no_mangle]
pub unsafe extern "C" fn mi_reserve_huge_os_pages_at_ex(
    pages: usize,
    _numa_node: c_int,
    _timeout_msecs: usize,
    exclusive: bool,
    arena_id: *mut *mut c_void,
) -> c_int {
    // SAFETY: `arena_id` is null or writable (the C caller's contract).
    unsafe { put_id(arena_id, ptr::null_mut()) };
    if pages == 0 {
        return 0;
    }
    let Some(p) = super::sys::map_huge_1g(pages) else {
        super::options::warning(format_args!(
            "could not reserve {pages} huge OS pages of 1 GiB (the OS does not grant them)"
        ));
        return ::libc::ENOMEM;
    };
    // SAFETY: a fresh mapping, ours for the rest of the process.
    match unsafe { add_arena(p, pages << 30, exclusive, pages) } {
        Some(id) => {
            // SAFETY: as above.
            unsafe { put_id(arena_id, id) };
            0
        }
        None => ::libc::ENOMEM,
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_reserve_huge_os_pages_at(
    pages: usize,
    numa_node: c_int,
    timeout_msecs: usize,
) -> c_int {
    // SAFETY: a null `arena_id` is allowed.
    unsafe {
        mi_reserve_huge_os_pages_at_ex(pages, numa_node, timeout_msecs, false, ptr::null_mut())
    }
}

/// Spread over NUMA nodes in mimalloc; shardalloc does not place memory by node: one
/// reservation.
#[no_mangle]
pub unsafe extern "C" fn mi_reserve_huge_os_pages_interleave(
    pages: usize,
    _numa_nodes: usize,
    timeout_msecs: usize,
) -> c_int {
    // SAFETY: as above.
    unsafe { mi_reserve_huge_os_pages_at(pages, -1, timeout_msecs) }
}

/// Deprecated form: `pages_reserved` gets the number reserved (all or none here).
#[no_mangle]
pub unsafe extern "C" fn mi_reserve_huge_os_pages(
    pages: usize,
    max_secs: f64,
    pages_reserved: *mut usize,
) -> c_int {
    let ms = if max_secs > 0.0 {
        (max_secs * 1000.0) as usize
    } else {
        0
    };
    // SAFETY: as above.
    let err = unsafe { mi_reserve_huge_os_pages_at(pages, -1, ms) };
    if !pages_reserved.is_null() {
        // SAFETY: non-null, so writable (the C caller's contract).
        unsafe { *pages_reserved = if err == 0 { pages } else { 0 } };
    }
    err
}

// ---------------------------------------------------------------------------------------
// printing

fn print_arenas() {
    let mut n = 0;
    for (i, a) in INFO.iter().enumerate() {
        if a.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        n += 1;
        super::options::message(format_args!(
            "arena {:p}: {} KiB at {:#x}{}{}, {} KiB free\n",
            arena_id(i),
            a.size.load(Ordering::Relaxed) / 1024,
            a.start.load(Ordering::Relaxed),
            if a.exclusive.load(Ordering::Relaxed) {
                ", exclusive"
            } else {
                ""
            },
            match a.huge_pages.load(Ordering::Relaxed) {
                0 => "",
                _ => ", 1 GiB pages",
            },
            SOURCES[i].free_bytes() / 1024
        ));
    }
    super::options::message(format_args!("{n} arenas\n"));
}

#[no_mangle]
pub extern "C" fn mi_debug_show_arenas() {
    print_arenas()
}

#[no_mangle]
pub extern "C" fn mi_arenas_print() {
    print_arenas()
}

// ---------------------------------------------------------------------------------------
// heaps in an arena

/// A new heap that allocates only in arena `id`, from any thread (NULL with `ENOMEM` when
/// the id is not an arena's or out of memory).
#[no_mangle]
pub extern "C" fn mi_heap_new_in_arena(id: *mut c_void) -> *mut SharedHeap {
    let fail = || {
        super::set_errno(::libc::ENOMEM);
        ptr::null_mut()
    };
    let Some(i) = arena_index(id) else {
        return fail();
    };
    let mine = crate::global::hosted::heap_initialized();
    // SAFETY: the calling thread's heap or the static empty heap: readable.
    if !unsafe { (*mine).is_initialized() } {
        return fail();
    }
    // SAFETY: an initialised heap of this thread: its thread's backing heap is ours.
    let backing = unsafe { OwnedHeap::new((*(*mine).tld).heap_backing) };
    let domain: &'static Domain = &DOMAINS[i];
    // segments of deleted heaps whose blocks were all freed since
    domain.collect_abandoned();
    let h = shared::shared_new_in_arena(backing, domain);
    if h.is_null() {
        return fail();
    }
    h
}

/// Whether `h` is a heap in an arena.
///
/// # Safety
/// `h` is a live heap (from `mi_heap_new*`, not yet deleted).
pub(crate) unsafe fn is_arena_heap(h: *mut SharedHeap) -> bool {
    // SAFETY: live (caller); `arena` is written once, before the heap is handed out.
    !unsafe { (*h).arena }.is_null()
}

/// Frees segments of deleted arena heaps whose blocks have all been freed (`mi_collect`
/// with `force`).
pub(crate) fn collect() {
    for (i, a) in INFO.iter().enumerate() {
        if a.state.load(Ordering::Acquire) == LIVE {
            DOMAINS[i].collect_abandoned();
        }
    }
}
