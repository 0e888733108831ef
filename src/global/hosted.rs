//! Hosted programs (unix): a thread-local heap per thread, the `mmap` source, thread exit
//! through a `pthread_key` destructor, `ShardAlloc` as `#[global_allocator]`, and
//! first-class [`Heap`]s.

use crate::sync::{AtomicUsize, Ordering};
use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::collect::{heap_collect, Collect};
use crate::domain::Domain;
use crate::first_class;
use crate::heap::{empty_heap, heap_check, OwnedHeap, RawHeap};
use crate::source::Mmap;
use crate::stats::Stats;
use crate::thread::{self, ThreadData};

static MMAP: Mmap = Mmap;

fn clock_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The process's domain: all thread heaps of the hosted allocator share it.
pub static DOMAIN: Domain = Domain::with_clock(&MMAP, Some(clock_ms));

/// The calling thread's default heap (the empty heap before its first allocation).
#[inline(always)]
pub(crate) fn default_heap() -> *mut RawHeap {
    super::tls::get()
}

/// The calling thread's owner token (`NO_OWNER` before its first allocation).
#[inline(always)]
fn owner() -> usize {
    // SAFETY: the default heap is live (or the static empty heap).
    unsafe { (*default_heap()).owner }
}

/// The pthread key whose destructor runs `thread_done`; `usize::MAX` until made.
static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static KEY_ONCE: spin::Once<()> = spin::Once::new();

unsafe extern "C" fn thread_done_cb(td: *mut libc::c_void) {
    if td.is_null() {
        return;
    }
    // SAFETY: the key's value is the thread data set by `thread_init` on this thread,
    // which is exiting.
    unsafe { thread_done_td(td as *mut ThreadData) };
}

/// # Safety
/// `td` is the calling thread's data, and the thread uses its heaps no more.
unsafe fn thread_done_td(td: *mut ThreadData) {
    super::tls::set(empty_heap());
    // SAFETY: `td` is this thread's data (caller), so its context is ours; first-class
    // heaps that outlive the thread become inert (allocation returns null), not dangling.
    unsafe { thread::thread_done(ptr::addr_of_mut!((*td).tld)) };
    // SAFETY: `td` came from `thread_data_alloc(&DOMAIN)`, and its thread is done with it
    // (the slot now holds the empty heap, and the caller uses its heaps no more).
    unsafe { thread::thread_data_free(&DOMAIN, td) };
}

#[cfg(not(feature = "override"))]
extern "C" fn fork_prepare() {
    DOMAIN.fork_prepare();
}
#[cfg(not(feature = "override"))]
extern "C" fn fork_parent() {
    // SAFETY: registered with `pthread_atfork` after `fork_prepare`: the forking thread
    // ran `fork_prepare` just before `fork()`.
    unsafe { DOMAIN.fork_parent() };
}
#[cfg(not(feature = "override"))]
extern "C" fn fork_child() {
    // SAFETY: as for `fork_parent`, in the child, whose only thread forked.
    unsafe { DOMAIN.fork_child() };
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
    KEY_ONCE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: valid out-pointer and an `extern "C"` destructor.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_done_cb)) } == 0 {
            KEY.store(key as usize, Ordering::Release);
        }
        // fork() in a multi-threaded program: the child must not inherit a domain lock
        // held by a thread that does not exist there. (The C library registers these at
        // load time instead. Here glibc's own malloc serves pthread_atfork's bookkeeping,
        // so this does not re-enter us.)
        #[cfg(not(feature = "override"))]
        // SAFETY: plain `extern "C"` handlers.
        unsafe {
            libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child))
        };
    });
    let td = thread::thread_data_alloc(&DOMAIN);
    if td.is_null() {
        return cur;
    }
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: the key exists. glibc keeps the first 32 keys' values inline in the
        // thread descriptor, so this does not allocate for an early key.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, td as *const libc::c_void) };
    }
    // SAFETY: `td` is fresh and initialised.
    let heap = unsafe { ptr::addr_of_mut!((*td).heap) };
    super::tls::set(heap);
    heap
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
        // SAFETY: clearing our own slot so the destructor does not run twice.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, ptr::null()) };
    }
    // SAFETY: the backing heap is the first field of its thread data.
    unsafe { thread_done_td(h as *mut ThreadData) };
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
    use crate::size_class::{MAX_ALIGN_SIZE, SMALL_SIZE_MAX, WORD};
    // Blocks are word-aligned, and aligned to `MAX_ALIGN_SIZE` when their size is a multiple
    // of it: 16-byte alignment (hashbrown's tables, `u128`) takes the fast path too.
    let aligned =
        align <= WORD || (align <= MAX_ALIGN_SIZE && size & (align - 1) == 0 && size >= align);
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
/// block, the thread's first allocation. A small size on an initialised heap goes
/// straight to the generic path (a tail call: nothing is saved on the way).
///
/// # Safety
/// `align` is a power of two.
#[inline(never)]
unsafe fn alloc_miss(size: usize, align: usize, zero: bool) -> *mut u8 {
    use crate::size_class::{MAX_ALIGN_SIZE, SMALL_SIZE_MAX, WORD};
    let aligned =
        align <= WORD || (align <= MAX_ALIGN_SIZE && size & (align - 1) == 0 && size >= align);
    if aligned && size <= SMALL_SIZE_MAX {
        let heap = default_heap();
        // SAFETY: the default heap is live (or the static empty heap): readable.
        if unsafe { (*heap).is_initialized() } {
            // SAFETY: the default heap belongs to this thread; `size` is small and `alloc`
            // found its page without a free block. (Null means out of memory.)
            return unsafe { crate::alloc::malloc_small_miss(heap, size, zero) };
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

/// Re-allocates to `new_size` bytes aligned to `align`; null on failure (`p` stays valid).
///
/// # Safety
/// `p` is null or a live block of this allocator; `align` is a power of two.
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize, zero: bool) -> *mut u8 {
    let heap = heap_initialized();
    // SAFETY: `heap` is this thread's heap (or the empty heap, whose allocations fail);
    // `p` is null or a live block and `align` a power of two (caller).
    unsafe { crate::alloc::realloc(heap, (*heap).owner, p, new_size, align, zero) }
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
        let heap = heap_initialized();
        // SAFETY: `heap` is ours; `p` is live with `layout`.
        unsafe { super::heap_realloc(heap, (*heap).owner, p, layout, new_size) }
    }
}

/// A first-class heap, owned by the thread that made it.
///
/// Blocks from it may be freed by any thread ([`free`]). [`destroy`](Heap::destroy) frees
/// all its blocks at once; [`delete`](Heap::delete) (and `drop`) hands the still-live
/// blocks to the thread's default heap. `&Heap` implements
/// `allocator_api2::alloc::Allocator`.
pub struct Heap {
    raw: *mut RawHeap,
    /// Not `Send`/`Sync`: only the owning thread allocates from a heap.
    _owner: PhantomData<*mut ()>,
}

impl Heap {
    /// A new heap owned by the calling thread. Panics when out of memory (see
    /// [`try_new`](Heap::try_new)).
    pub fn new() -> Heap {
        Self::try_new().expect("shardalloc: out of memory making a heap")
    }

    /// A new heap owned by the calling thread, or `None` when out of memory.
    pub fn try_new() -> Option<Heap> {
        let backing = heap_initialized();
        // SAFETY: this thread's heap or the static empty heap: readable.
        if !unsafe { (*backing).is_initialized() } {
            return None;
        }
        // SAFETY: an initialised heap in this thread's slot is this thread's.
        let raw = first_class::heap_new(unsafe { OwnedHeap::new(backing) });
        if raw.is_null() {
            return None;
        }
        Some(Heap {
            raw,
            _owner: PhantomData,
        })
    }

    /// Whether the heap can allocate (false once its thread is done).
    fn live(&self) -> bool {
        // SAFETY: `raw` stays allocated until `self` is dropped.
        unsafe { (*self.raw).is_initialized() }
    }

    /// The heap as an owned heap, while its thread is not done.
    fn owned(&self) -> Option<OwnedHeap> {
        // SAFETY: a `Heap` never leaves the thread that made it (`!Send`), so a live one is
        // an initialised heap of the calling thread.
        self.live().then(|| unsafe { OwnedHeap::new(self.raw) })
    }

    /// Allocates `size` bytes aligned to `align` (a power of two); null when out of memory.
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        // SAFETY: the heap belongs to this thread (`Heap` is `!Send`).
        unsafe { super::heap_alloc(self.raw, size, align, false) }
    }

    /// As [`alloc`](Heap::alloc), zeroed.
    pub fn alloc_zeroed(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { super::heap_alloc(self.raw, size, align, true) }
    }

    /// Re-allocates a block (of any heap) into this heap when it must move.
    ///
    /// # Safety
    /// `p` is null or a live block of this allocator.
    pub unsafe fn realloc(&self, p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() || !self.live() {
            return ptr::null_mut();
        }
        // SAFETY: a live `Heap` is an initialised heap of this thread (`!Send`); `p` is null
        // or a live block (caller); `align` is a power of two (checked).
        unsafe { crate::alloc::realloc(self.raw, owner(), p, new_size, align, false) }
    }

    /// Whether `p` points into a live block of this heap.
    pub fn contains(&self, p: *const u8) -> bool {
        let mut found = false;
        self.visit_blocks(|b, size| {
            if (p as usize) >= b as usize && (p as usize) < b as usize + size {
                found = true;
                return false;
            }
            true
        });
        found
    }

    /// Calls `f(block, size)` for every live block; stops early when `f` returns false.
    /// Returns whether every block was visited.
    /// `f` must not allocate from this heap (it may use others, and the global allocator).
    pub fn visit_blocks(&self, mut f: impl FnMut(*mut u8, usize) -> bool) -> bool {
        let Some(h) = self.owned() else {
            return true;
        };
        first_class::heap_visit(h, true, |area, block| {
            block.is_null() || f(block, area.block_size)
        })
    }

    /// Frees empty pages of this heap (and, with `force`, purges at once).
    pub fn collect(&self, force: bool) {
        if let Some(h) = self.owned() {
            let mode = if force {
                Collect::Force
            } else {
                Collect::Normal
            };
            heap_collect(h, mode);
        }
    }

    /// Frees every block of the heap at once, and the heap.
    pub fn destroy(self) {
        let raw = self.raw;
        let owned = self.owned();
        core::mem::forget(self);
        if let Some(h) = owned {
            // SAFETY: a first-class heap (not a backing heap); `self` is gone, and the
            // caller gives up all its blocks by destroying it.
            unsafe { first_class::heap_destroy(h) };
        } else {
            // SAFETY: its thread is done: only the struct, a block of ours, is left.
            unsafe { free(raw as *mut u8) };
        }
    }

    /// Frees the heap; its live blocks move to the thread's default heap.
    pub fn delete(self) {
        drop(self)
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        if let Some(h) = self.owned() {
            // SAFETY: a first-class heap (not a backing heap), not used after `drop`.
            unsafe { first_class::heap_delete(h) };
        } else {
            // SAFETY: its thread is done: only the struct, a block of ours, is left.
            unsafe { free(self.raw as *mut u8) };
        }
    }
}

// SAFETY: blocks are as large and aligned as the layout asks; `deallocate` frees blocks
// of this allocator only (the caller's contract); `&Heap` never leaves its thread.
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
