//! Hosted programs (unix and Windows): a thread-local heap per thread, the `mmap` or
//! `VirtualAlloc` source, thread exit through a `pthread_key` destructor (unix) or a
//! fiber-local-storage callback (Windows), `ShardAlloc` as `#[global_allocator]`, and
//! first-class [`Heap`]s.

use crate::sync::{AtomicUsize, Ordering};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::collect::{heap_collect, Collect};
use crate::domain::Domain;
use crate::first_class;
use crate::global::process_source::ProcessSource;
use crate::heap::{empty_heap, heap_check, OwnedHeap, RawHeap, SharedHeap};
use crate::segment::NO_OWNER;
use crate::shared;
use crate::stats::Stats;
use crate::thread::{self, ThreadData};

/// What differs between unix and Windows: the page source, the clock, and the per-thread
/// key whose destructor runs when a thread exits.
#[cfg(unix)]
mod sys {
    use core::ffi::c_void;

    pub(super) type Source = crate::source::Mmap;
    pub(super) static SOURCE: Source = crate::source::Mmap;

    pub(super) fn clock_ms() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    unsafe extern "C" fn key_destructor(td: *mut c_void) {
        // SAFETY: the key's value is the thread data set by `thread_init` on this thread,
        // which is exiting (the system calls destructors only with non-null values).
        unsafe { super::thread_done_cb(td) };
    }

    /// A new key whose destructor runs `thread_done_cb` at thread exit.
    pub(super) fn key_create() -> Option<usize> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: valid out-pointer and an `extern "C"` destructor.
        (unsafe { libc::pthread_key_create(&mut key, Some(key_destructor)) } == 0)
            .then_some(key as usize)
    }

    /// Sets the calling thread's value of `key`.
    ///
    /// # Safety
    /// `key` came from `key_create`.
    pub(super) unsafe fn key_set(key: usize, value: *mut c_void) {
        // SAFETY: the key exists (caller). glibc keeps the first 32 keys' values inline in
        // the thread descriptor, so this does not allocate for an early key.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) };
    }

    /// fork() in a multi-threaded program: the child must not inherit a domain lock held
    /// by a thread that does not exist there. (The C library registers these at load time
    /// instead. Here glibc's own malloc serves pthread_atfork's bookkeeping, so this does
    /// not re-enter us.)
    pub(super) fn register_fork_handlers() {
        #[cfg(not(feature = "override"))]
        // SAFETY: plain `extern "C"` handlers.
        unsafe {
            libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child))
        };
    }

    #[cfg(not(feature = "override"))]
    extern "C" fn fork_prepare() {
        super::DOMAIN.fork_prepare();
    }
    #[cfg(not(feature = "override"))]
    extern "C" fn fork_parent() {
        // SAFETY: registered with `pthread_atfork` after `fork_prepare`: the forking
        // thread ran `fork_prepare` just before `fork()`.
        unsafe { super::DOMAIN.fork_parent() };
    }
    #[cfg(not(feature = "override"))]
    extern "C" fn fork_child() {
        // SAFETY: as for `fork_parent`, in the child, whose only thread forked.
        unsafe { super::DOMAIN.fork_child() };
    }
}

#[cfg(windows)]
mod sys {
    use core::ffi::c_void;
    use windows_sys::Win32::System::Threading::{FlsAlloc, FlsSetValue, FLS_OUT_OF_INDEXES};

    pub(super) type Source = crate::source::VirtualAlloc;
    pub(super) static SOURCE: Source = crate::source::VirtualAlloc;

    pub(super) fn clock_ms() -> u64 {
        // SAFETY: no preconditions; milliseconds since boot, monotonic.
        unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() }
    }

    unsafe extern "system" fn fls_callback(td: *const c_void) {
        // SAFETY: the slot's value is the thread data set by `thread_init` on this thread
        // (fiber), which is exiting; null values are skipped by `thread_done_cb`.
        unsafe { super::thread_done_cb(td as *mut c_void) };
    }

    /// A fiber-local-storage slot whose callback runs `thread_done_cb` when the thread
    /// exits (as mimalloc does: FLS callbacks run at thread exit, before DLL detach, for
    /// threads of every kind, not only those made by Rust's std).
    pub(super) fn key_create() -> Option<usize> {
        // SAFETY: registers an `extern "system"` callback of the documented signature.
        let index = unsafe { FlsAlloc(Some(fls_callback)) };
        (index != FLS_OUT_OF_INDEXES).then_some(index as usize)
    }

    /// Sets the calling thread's value of `key`.
    ///
    /// # Safety
    /// `key` came from `key_create`.
    pub(super) unsafe fn key_set(key: usize, value: *mut c_void) {
        // SAFETY: the slot exists (caller); FlsSetValue does not allocate through us.
        unsafe { FlsSetValue(key as u32, value) };
    }

    /// Windows has no fork.
    pub(super) fn register_fork_handlers() {}
}

/// Runs `thread_done` for thread data `td` given by the thread-exit key (null: none).
///
/// # Safety
/// `td` is null or the calling thread's data, and the thread is exiting.
unsafe fn thread_done_cb(td: *mut core::ffi::c_void) {
    if td.is_null() {
        return;
    }
    // SAFETY: the key's value is the thread data set by `thread_init` on this thread,
    // which is exiting (caller).
    unsafe { thread_done_td(td as *mut ThreadData) };
}

/// The process's domain: all thread heaps of the hosted allocator share it.
pub static DOMAIN: Domain = Domain::with_clock(&PROCESS_SOURCE, Some(sys::clock_ms));

/// The page source of [`DOMAIN`]: the OS, after the arenas the program shares with
/// `malloc` (C's non-exclusive arenas).
pub(crate) static PROCESS_SOURCE: ProcessSource<sys::Source> = ProcessSource::new(&sys::SOURCE);

/// A new, empty domain over the OS source: a sub-process's.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) const fn os_domain() -> Domain {
    Domain::with_clock(&sys::SOURCE, Some(sys::clock_ms))
}

/// The process's main heap: every thread's backing heap is its part (C's `mi_heap_main()`
/// and the heap `mi_heap_get_backing()` returns).
pub(crate) static MAIN_HEAP: SharedHeap = SharedHeap::new(true);

/// The calling thread's default heap (the empty heap before its first allocation).
#[inline(always)]
pub(crate) fn default_heap() -> *mut RawHeap {
    super::tls::get()
}

/// The calling thread's owner token (`NO_OWNER` before its first allocation).
#[inline(always)]
fn owner() -> usize {
    super::tls::owner()
}

/// The thread-exit key (pthread key or FLS index) whose destructor runs `thread_done`;
/// `usize::MAX` until made.
static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static KEY_ONCE: spin::Once<()> = spin::Once::new();

/// # Safety
/// `td` is the calling thread's data, and the thread uses its heaps no more.
unsafe fn thread_done_td(td: *mut ThreadData) {
    // SAFETY: `td` is this thread's live data (caller): its backing heap is initialised.
    let backing = unsafe { OwnedHeap::new(ptr::addr_of_mut!((*td).heap)) };
    // parts of shared heaps: released (dead heaps) or out of their heaps' lists (live ones)
    let parts = shared::parts_thread_exit(backing);
    super::tls::set(empty_heap());
    // SAFETY: `td` is this thread's data (caller), so its context is ours; its heaps are
    // collected, their pages abandoned, and they become inert.
    unsafe { thread::thread_done(ptr::addr_of_mut!((*td).tld)) };
    // SAFETY: the parts came from `parts_thread_exit` of this thread, which is done.
    unsafe { shared::parts_free(parts, NO_OWNER) };
    // SAFETY: `td` came from `thread_data_alloc` of its context's domain (the process's
    // or a sub-process's), and its thread is done with it (the slot now holds the empty
    // heap, and the caller uses its heaps no more).
    unsafe { thread::thread_data_free((*td).tld.domain(), td) };
}

/// Initialises the calling thread's heap. Returns the empty heap when out of memory.
#[cold]
#[inline(never)]
fn thread_init() -> *mut RawHeap {
    let cur = default_heap();
    // SAFETY: the default heap is live or the empty heap.
    if unsafe { (*cur).is_initialized() } {
        return cur;
    }
    thread_init_in(&DOMAIN, &MAIN_HEAP)
}

/// Initialises the calling thread's heap (it has none) in `domain`, whose main heap is
/// `main`. Returns the empty heap when out of memory.
fn thread_init_in(domain: &'static Domain, main: &'static SharedHeap) -> *mut RawHeap {
    let cur = default_heap();
    KEY_ONCE.call_once(|| {
        if let Some(key) = sys::key_create() {
            KEY.store(key, Ordering::Release);
        }
        sys::register_fork_handlers();
    });
    if !super::tls::ready() {
        return cur;
    }
    let td = thread::thread_data_alloc(domain);
    if td.is_null() {
        return cur;
    }
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: the key was made by `key_create`.
        unsafe { sys::key_set(key, td as *mut core::ffi::c_void) };
    }
    // SAFETY: `td` is fresh and initialised.
    let heap = unsafe { ptr::addr_of_mut!((*td).heap) };
    // SAFETY: as above; the backing heap is the thread's part of the main heap.
    unsafe { (*heap).shared = main };
    super::tls::set(heap);
    heap
}

/// The calling thread's part of `shared` (made on first use): one cache check on the fast
/// path; the empty heap (whose allocations fail) when out of memory or when `shared` is no
/// longer live.
///
/// # Safety
/// `shared` is a live shared heap of the hosted domain.
#[inline(always)]
pub(crate) unsafe fn part_of(shared: *const SharedHeap) -> *mut RawHeap {
    let cur = default_heap();
    // SAFETY: the default heap is live or the static empty heap (null `tld`); a live one's
    // `tld` is the calling thread's context.
    unsafe {
        let tld = (*cur).tld;
        if !tld.is_null() && (*tld).cache_shared == shared {
            return (*tld).cache_part;
        }
    }
    // SAFETY: as this function's contract.
    unsafe { part_of_slow(shared) }
}

#[cold]
#[inline(never)]
unsafe fn part_of_slow(shared: *const SharedHeap) -> *mut RawHeap {
    let h = heap_initialized();
    // SAFETY: live or the empty heap.
    if !unsafe { (*h).is_initialized() } {
        return h;
    }
    // SAFETY: an initialised heap in this thread's slot is this thread's; so is its
    // thread's backing heap.
    let backing = unsafe { OwnedHeap::new((*(*h).tld).heap_backing) };
    reap(backing);
    let part = shared::part_lookup(backing, shared);
    if part.is_null() {
        empty_heap()
    } else {
        part
    }
}

/// Releases this thread's parts of heaps that other threads deleted or destroyed (when
/// flagged), making the backing heap the default again if the default was one of them.
fn reap(backing: OwnedHeap) {
    if shared::reap_parts(backing, default_heap()) {
        super::tls::set(backing.as_ptr());
    }
}

/// The domain the calling thread allocates from: the process's [`DOMAIN`], or the
/// sub-process's it joined (`join_domain`).
pub(crate) fn thread_domain() -> &'static Domain {
    let h = default_heap();
    // SAFETY: live or the empty heap; an initialised heap's `tld` is this thread's live
    // context.
    unsafe {
        if (*h).is_initialized() {
            return (*(*h).tld).domain();
        }
    }
    &DOMAIN
}

/// The main heap of the calling thread's domain: [`MAIN_HEAP`], or the main heap of the
/// sub-process it joined.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) fn thread_main_heap() -> *const SharedHeap {
    let h = default_heap();
    // SAFETY: live or the empty heap; an initialised heap's `tld` is this thread's live
    // context, whose backing heap's `shared` is set at its initialisation.
    unsafe {
        if (*h).is_initialized() {
            return (*(*(*h).tld).heap_backing).shared;
        }
    }
    &MAIN_HEAP
}

/// Moves the calling thread into another domain (a sub-process: mimalloc's
/// `mi_subproc_add_current_thread`), whose main heap is `main`: the thread is done in its
/// current domain, as at its exit (its segments with live blocks are abandoned there, and
/// its blocks stay valid), and allocates from `domain` from now on. False, and nothing
/// changes, when the thread is already in a domain other than the process's; false too
/// when out of memory (the thread then goes on in the process's domain).
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) fn join_domain(domain: &'static Domain, main: &'static SharedHeap) -> bool {
    let cur = thread_domain();
    if ptr::eq(cur, domain) {
        return true;
    }
    if !ptr::eq(cur, &DOMAIN) {
        return false;
    }
    thread_done();
    let h = thread_init_in(domain, main);
    // SAFETY: the calling thread's new heap, or the empty heap when out of memory.
    unsafe { (*h).is_initialized() }
}

/// The calling thread's heap, initialised.
#[inline]
pub(crate) fn heap_initialized() -> *mut RawHeap {
    let h = default_heap();
    // SAFETY: live or the empty heap.
    if unsafe { (*h).is_initialized() } {
        h
    } else {
        thread_init()
    }
}

/// Ends the calling thread's use of the allocator now (abandoning its segments to other
/// threads), as its exit would. It may allocate again afterwards.
pub fn thread_done() {
    let h = default_heap();
    // SAFETY: live or the empty heap.
    if !unsafe { (*h).is_initialized() } {
        return;
    }
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: clearing our own slot (of a key made by `key_create`) so the destructor
        // does not run twice.
        unsafe { sys::key_set(key, ptr::null_mut()) };
    }
    // SAFETY: an initialised heap's `tld` is this thread's live context, whose backing heap
    // is the first field of its thread data (the default heap may be another of its heaps,
    // after `mi_heap_set_default`).
    unsafe { thread_done_td((*(*h).tld).heap_backing as *mut ThreadData) };
}

#[cold]
#[inline(never)]
unsafe fn alloc_slow(size: usize, align: usize, zero: bool) -> *mut u8 {
    let heap = heap_initialized();
    // SAFETY: `heap` is ours (or the empty heap, which makes this return null).
    unsafe { super::heap_alloc(heap, size, align, zero) }
}

/// Allocates `size` bytes aligned to `align` (a power of two) from the calling thread's
/// heap; null when out of memory.
///
/// The inlined part is the small-size fast path alone (through `GlobalAlloc::alloc` about
/// 15 instructions, with no register saved and no frame); everything else is one tail
/// call to [`alloc_miss`].
///
/// # Safety
/// `align` is a power of two.
#[inline(always)]
pub unsafe fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    use crate::size_class::{aligned_by_size, SMALL_SIZE_MAX};
    // 16-byte alignment (hashbrown's tables, `u128`) takes the fast path too.
    let aligned = aligned_by_size(size, align);
    if aligned && size <= SMALL_SIZE_MAX {
        // SAFETY: the default heap belongs to this thread (or is the empty heap); `size` is
        // small.
        let p = unsafe { crate::alloc::malloc_small_fast(default_heap(), size, zero) };
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: `align` is a power of two (caller).
    unsafe { alloc_miss(size, align, zero) }
}

/// Everything [`alloc`] does not inline: other sizes and alignments, pages without a free
/// block, the thread's first allocation. On an initialised heap, a small size goes
/// straight to the generic path, and a larger one at an alignment that `malloc` gives by
/// size to `malloc` (its queue's first page, else tail calls): nothing is saved on the
/// way (mstress's medium sizes: 24K calls, some 15 instructions each).
///
/// # Safety
/// `align` is a power of two.
#[inline(never)]
unsafe fn alloc_miss(size: usize, align: usize, zero: bool) -> *mut u8 {
    use crate::size_class::{aligned_by_size, SMALL_SIZE_MAX};
    if aligned_by_size(size, align) {
        let heap = default_heap();
        // SAFETY: the default heap is live (or the static empty heap): readable.
        if unsafe { (*heap).is_initialized() } {
            if size <= SMALL_SIZE_MAX {
                // SAFETY: the default heap belongs to this thread; `size` is small and
                // `alloc` found its page without a free block. (Null means out of memory.)
                return unsafe { crate::alloc::malloc_small_miss(heap, size, zero) };
            }
            // SAFETY: the default heap belongs to this thread; every block of `size` is
            // aligned to `align` (as `heap_alloc` → `malloc_aligned`'s first test: word
            // alignment, or a multiple of `align <= MAX_ALIGN_SIZE`). (Null means out of
            // memory.)
            return unsafe { crate::alloc::malloc(heap, size, zero) };
        }
    }
    // SAFETY: `align` is a power of two (caller).
    unsafe { alloc_other(size, align, zero) }
}

/// [`alloc_miss`] for other sizes and alignments, and before the thread's first allocation.
///
/// # Safety
/// `align` is a power of two.
#[inline(never)]
unsafe fn alloc_other(size: usize, align: usize, zero: bool) -> *mut u8 {
    // SAFETY: the default heap belongs to this thread.
    let p = unsafe { super::heap_alloc(default_heap(), size, align, zero) };
    if !p.is_null() {
        return p;
    }
    // SAFETY: `align` is a power of two (caller).
    unsafe { alloc_slow(size, align, zero) }
}

/// Frees a block of this allocator, from any thread.
///
/// # Safety
/// `p` is null or a live block of this allocator (hosted domain), not used afterwards.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: `p` is null or a live block of ours, given up (caller); `owner()` is the
    // calling thread's token, so the local path is taken only for its own pages.
    unsafe { crate::free::free(p, owner()) }
}

/// [`free`] of a pointer that is not null.
///
/// # Safety
/// `p` is a live block of this allocator (hosted domain), not used afterwards.
#[inline(always)]
pub(crate) unsafe fn free_nonnull(p: *mut u8) {
    // SAFETY: `p` is a live block of ours, given up (caller); `owner()` is the calling
    // thread's token, so the local path is taken only for its own pages.
    unsafe { crate::free::free_nonnull(p, owner()) }
}

/// [`free_nonnull`] of a pointer whose segment the caller found in the segment map (the
/// C `free`).
///
/// # Safety
/// `p` is a live block of this allocator (hosted domain), not used afterwards, in the
/// segment that starts at `segment`.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // the C `free`
#[inline(always)]
pub(crate) unsafe fn free_in_segment(p: *mut u8, segment: *mut crate::segment::Segment) {
    // SAFETY: as the caller guarantees; `owner()` is the calling thread's token, so the
    // local path is taken only for its own pages.
    unsafe { crate::free::free_nonnull_in(p, segment, owner()) }
}

/// Re-allocates to `new_size` bytes aligned to `align`; null on failure (`p` stays valid).
/// With `zero`, the bytes past the old size read as zero when `p` came from a zeroing
/// [`alloc`] or `realloc` (mimalloc's `mi_rezalloc` rule; the usable bytes of a block
/// allocated without zeroing hold whatever they held).
///
/// # Safety
/// `p` is null or a live block of this allocator; `align` is a power of two.
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize, zero: bool) -> *mut u8 {
    let heap = heap_initialized();
    // SAFETY: `heap` is this thread's heap (or the empty heap, whose allocations fail);
    // `p` is null or a live block and `align` a power of two (caller).
    unsafe { crate::alloc::realloc(heap, (*heap).owner, p, usize::MAX, new_size, align, zero) }
}

/// The usable size of a block of this allocator.
///
/// # Safety
/// `p` is a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: `p` is a live block of ours (caller).
    unsafe { crate::free::usable_size(p) }
}

/// The calling thread's default heap, if it is initialised.
fn owned_default() -> Option<OwnedHeap> {
    let h = default_heap();
    // SAFETY: the thread's slot holds a live heap of this thread or the static empty heap;
    // an initialised one is ours (only this thread's slot points to it).
    unsafe { (*h).is_initialized().then(|| OwnedHeap::new(h)) }
}

/// Frees empty pages of the calling thread and purges expired memory; `force` purges
/// everything unused at once and frees emptied segments of exited threads.
pub fn collect(force: bool) {
    let mode = if force {
        Collect::Force
    } else {
        Collect::Normal
    };
    if let Some(h) = owned_default() {
        // SAFETY: the token proves the thread context is ours: its backing heap is ours.
        reap(unsafe { OwnedHeap::new((*h.tld()).heap_backing) });
        // SAFETY: the token proves the thread context is ours, and with it its list of
        // heaps: each is an initialised heap of this thread.
        let mut heap = unsafe { (*h.tld()).heaps };
        while !heap.is_null() {
            // SAFETY: as above.
            let owned = unsafe { OwnedHeap::new(heap) };
            heap_collect(owned, mode);
            // SAFETY: as above; collection does not unlink heaps.
            heap = unsafe { (*heap).next };
        }
    } else if force {
        DOMAIN.collect_abandoned();
    }
}

/// Statistics of the hosted allocator (all threads; other threads' block counts may lag
/// by up to 256 KiB each, see `Stats`).
pub fn stats() -> Stats {
    if let Some(h) = owned_default() {
        // SAFETY: the token proves the thread context is live and ours.
        unsafe { (*h.tld()).flush_stats() };
    }
    DOMAIN.stats()
}

/// Checks the calling thread's heap invariants (debug builds; a no-op in release).
pub fn check() {
    if let Some(h) = owned_default() {
        heap_check(h);
    }
}

/// The global allocator for hosted Rust programs:
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();
/// ```
#[derive(Clone, Copy, Default)]
pub struct ShardAlloc;

impl ShardAlloc {
    /// The hosted allocator (all `ShardAlloc`s share the process's [`DOMAIN`]).
    pub const fn new() -> Self {
        ShardAlloc
    }

    /// Statistics of the hosted allocator.
    pub fn stats(&self) -> Stats {
        stats()
    }
}

// SAFETY: blocks are at least `layout.size()` bytes and aligned to `layout.align()`
// (`heap_alloc`); each thread allocates only from its own heap; frees from any thread are
// allowed by the core.
unsafe impl GlobalAlloc for ShardAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a Layout's alignment is a power of two.
        unsafe { alloc(layout.size(), layout.align(), false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { alloc(layout.size(), layout.align(), true) }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // SAFETY: `p` was allocated by us (GlobalAlloc contract), so it is not null.
        unsafe { free_nonnull(p) }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // (the thread's first use out of line, so that this is a tail call that saves no
        // registers: 6 instructions of every `realloc`)
        let heap = default_heap();
        // SAFETY: the thread's slot holds a live heap or the static empty heap: readable.
        if unsafe { !(*heap).is_initialized() } {
            // SAFETY: as this function's contract.
            return unsafe { realloc_first(p, layout, new_size) };
        }
        // SAFETY: `heap` is this thread's, initialised; `p` is live with `layout`.
        unsafe { super::heap_realloc(heap, (*heap).owner, p, layout, new_size) }
    }
}

/// [`ShardAlloc`]'s `realloc` on a thread whose heap is not initialised yet.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
#[cold]
#[inline(never)]
unsafe fn realloc_first(p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    let heap = heap_initialized();
    // SAFETY: `heap` is ours (or the empty heap when out of memory, whose allocations
    // fail); `p` is live with `layout` (caller).
    unsafe { super::heap_realloc(heap, (*heap).owner, p, layout, new_size) }
}

/// A first-class heap that any thread may allocate from (mimalloc v3's heaps).
///
/// Each thread that allocates from it gets its own part of it (made on first use, found
/// without a lock after that), so allocation stays as fast as from the thread's default
/// heap. Blocks from it may be freed by any thread ([`free`]). [`destroy`](Heap::destroy)
/// frees all its blocks; [`delete`](Heap::delete) (and `drop`) hands the still-live blocks
/// to the default heaps of the threads that allocated them. Either may run on any thread:
/// the calling thread's part is released at once, another thread's at that thread's next
/// use of a heap it has not used last, its next [`collect`], or its exit (only a thread
/// may touch its own pages). A thread that exits while the heap lives takes its live
/// blocks of the heap along, as `delete` would: they stay valid and leave the heap.
/// Figures of one thread's part of a [`Heap`] ([`Heap::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Pages in the part.
    pub pages: usize,
    /// Bytes of blocks the pages can hold.
    pub reserved: usize,
    /// Bytes of blocks the pages made usable so far.
    pub committed: usize,
    /// Live blocks.
    pub blocks: usize,
    /// Bytes of the live blocks (block sizes).
    pub bytes: usize,
}

impl HeapStats {
    /// The figures as a JSON object (`format!("{}", st.json())`).
    pub fn json(&self) -> impl core::fmt::Display + '_ {
        struct Json<'a>(&'a HeapStats);
        impl core::fmt::Display for Json<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let s = self.0;
                write!(
                    f,
                    "{{\"pages\": {}, \"reserved\": {}, \"committed\": {}, \"blocks\": {}, \"bytes\": {}}}",
                    s.pages, s.reserved, s.committed, s.blocks, s.bytes
                )
            }
        }
        Json(self)
    }
}

/// `&Heap` implements `allocator_api2::alloc::Allocator`.
pub struct Heap {
    shared: NonNull<SharedHeap>,
}

// SAFETY: every thread allocates from its own part of the heap (`part_of`), parts are
// linked under the heap's lock, and delete/destroy (which take `self`) release the other
// threads' parts through their owners.
unsafe impl Send for Heap {}
// SAFETY: as above: `&Heap` methods only touch the calling thread's part, or read the
// heap's state and part list atomically / under its lock.
unsafe impl Sync for Heap {}

impl Heap {
    /// A new heap. Panics when out of memory (see [`try_new`](Heap::try_new)).
    pub fn new() -> Heap {
        Self::try_new().expect("shardalloc: out of memory making a heap")
    }

    /// A new heap, or `None` when out of memory.
    pub fn try_new() -> Option<Heap> {
        let backing = heap_initialized();
        // SAFETY: this thread's heap or the static empty heap: readable.
        if !unsafe { (*backing).is_initialized() } {
            return None;
        }
        // SAFETY: an initialised heap in this thread's slot is this thread's.
        let shared = shared::shared_new(unsafe { OwnedHeap::new(backing) });
        NonNull::new(shared).map(|shared| Heap { shared })
    }

    /// The calling thread's part (made on first use; the empty heap when out of memory).
    #[inline(always)]
    fn part(&self) -> *mut RawHeap {
        // SAFETY: the handle keeps the heap live (delete and destroy take `self`).
        unsafe { part_of(self.shared.as_ptr()) }
    }

    /// The calling thread's part, if it has one.
    fn owned_part(&self) -> Option<OwnedHeap> {
        let h = owned_default()?;
        // SAFETY: the token proves the thread context is ours: so is its backing heap.
        let backing = unsafe { OwnedHeap::new((*h.tld()).heap_backing) };
        shared::part_peek(backing, self.shared.as_ptr())
    }

    /// Allocates `size` bytes aligned to `align` (a power of two); null when out of memory.
    #[inline]
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        // SAFETY: the calling thread's part (or the empty heap); `align` is a power of two.
        unsafe { super::heap_alloc(self.part(), size, align, false) }
    }

    /// As [`alloc`](Heap::alloc), zeroed.
    pub fn alloc_zeroed(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { super::heap_alloc(self.part(), size, align, true) }
    }

    /// Re-allocates a block (of any heap) into this heap when it must move.
    ///
    /// # Safety
    /// `p` is null or a live block of this allocator.
    pub unsafe fn realloc(&self, p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        let part = self.part();
        // SAFETY: the calling thread's part (or the empty heap, whose allocations fail);
        // `p` is null or a live block (caller); `align` is a power of two (checked).
        unsafe { crate::alloc::realloc(part, (*part).owner, p, usize::MAX, new_size, align, false) }
    }

    /// Whether `p` points into a page of this heap: into a block allocated from it, by any
    /// thread (that block may since have been freed). Any pointer may be asked.
    pub fn contains(&self, p: *const u8) -> bool {
        match crate::segment::checked_page(p) {
            // SAFETY: the page is in use (checked); the handle keeps the heap live.
            Ok(page) => unsafe { shared::shared_has_part(self.shared.as_ptr(), (*page).heap()) },
            Err(_) => false,
        }
    }

    /// Calls `f(block, size)` for every live block that the calling thread allocated from
    /// this heap (other threads' parts are theirs to walk); stops early when `f` returns
    /// false. Returns whether every block was visited.
    /// `f` must not allocate from this heap (it may use others, and the global allocator).
    pub fn visit_blocks(&self, mut f: impl FnMut(*mut u8, usize) -> bool) -> bool {
        let Some(h) = self.owned_part() else {
            return true;
        };
        first_class::heap_visit(h, true, |area, block| {
            block.is_null() || f(block, area.block_size)
        })
    }

    /// Figures of the calling thread's part of this heap, counted now by visiting its pages
    /// (other threads' parts are theirs to walk); zero when the thread has no part.
    pub fn stats(&self) -> HeapStats {
        let mut st = HeapStats::default();
        if let Some(h) = self.owned_part() {
            first_class::heap_visit(h, false, |area, _| {
                st.pages += 1;
                st.reserved += area.reserved;
                st.committed += area.committed;
                st.blocks += area.used;
                st.bytes += area.used * area.block_size;
                true
            });
        }
        st
    }

    /// Frees the empty pages of the calling thread's part of this heap (and, with
    /// `force`, purges at once).
    pub fn collect(&self, force: bool) {
        if let Some(h) = self.owned_part() {
            let mode = if force {
                Collect::Force
            } else {
                Collect::Normal
            };
            heap_collect(h, mode);
        }
    }

    /// Frees every block of the heap, and the heap.
    pub fn destroy(self) {
        self.release(true);
    }

    /// Frees the heap; its live blocks move to the default heaps of the threads that
    /// allocated them.
    pub fn delete(self) {
        drop(self)
    }

    fn release(self, destroy: bool) {
        let shared = self.shared.as_ptr();
        core::mem::forget(self);
        let backing = heap_initialized();
        // SAFETY: this thread's heap or the static empty heap: readable.
        if !unsafe { (*backing).is_initialized() } {
            // out of memory for this thread's data: it cannot have a part; the heap is
            // left to the other threads (it leaks its struct)
            return;
        }
        // SAFETY: an initialised heap in this thread's slot is this thread's, and so is
        // its backing heap; the handle is given up here (taken by value) and no thread can
        // still allocate from it (`&Heap` borrows end before `self` moves); for destroy,
        // the blocks go with it.
        unsafe {
            let backing = OwnedHeap::new((*(*backing).tld).heap_backing);
            if shared::shared_release(backing, shared, destroy, default_heap()) {
                super::tls::set(backing.as_ptr());
            }
        }
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let shared = self.shared;
        // the handle moves into `release`, which forgets it (no second drop)
        Heap { shared }.release(false);
    }
}

// SAFETY: blocks are as large and aligned as the layout asks; `deallocate` frees blocks
// of this allocator only (the caller's contract); each thread allocates from its own part.
unsafe impl allocator_api2::alloc::Allocator for &Heap {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let p = Heap::alloc(self, layout.size(), layout.align());
        let p = NonNull::new(p).ok_or(allocator_api2::alloc::AllocError)?;
        // SAFETY: `p` is a live block of at least `layout.size()` bytes.
        let size = unsafe { usable_size(p.as_ptr()) }.max(layout.size());
        Ok(NonNull::slice_from_raw_parts(p, size))
    }

    fn allocate_zeroed(
        &self,
        layout: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let p = Heap::alloc_zeroed(self, layout.size(), layout.align());
        let p = NonNull::new(p).ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, p: NonNull<u8>, _layout: Layout) {
        // SAFETY: `p` was allocated by this allocator (the caller's contract).
        unsafe { free(p.as_ptr()) }
    }
}

/// Whether `p` points into memory of a live segment of this allocator (any pointer may
/// be asked).
pub fn is_in_heap_region(p: *const u8) -> bool {
    crate::segment::checked_segment(p).is_some()
}
