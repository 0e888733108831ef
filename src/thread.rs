//! Thread data: a thread's (or CPU's) heap context ([`Tld`]) and default heap, allocated
//! together from the domain, and what happens when the thread is done: its heaps are
//! collected and detached, and its segments that still hold live blocks are abandoned to
//! the domain for other threads to reclaim.

use core::ptr::{self, addr_of_mut, NonNull};

use crate::abandon::segment_abandon;
use crate::collect::{heap_collect, Collect};
use crate::domain::Domain;
use crate::heap::{OwnedHeap, RawHeap, Tld};

/// A thread's data and its default heap, allocated together from the page source.
///
/// Invariant: `tld.heap_backing == &heap`, and `heap` is in `tld`'s list of heaps.
#[repr(C)]
pub(crate) struct ThreadData {
    pub heap: RawHeap,
    pub tld: Tld,
}

/// Bytes of a thread-data block from the source (whole OS pages).
fn block_size(domain: &Domain) -> usize {
    domain.os.round_to_alloc(core::mem::size_of::<ThreadData>())
}

/// Makes a thread's data (its `Tld` and backing heap), from the domain's cache of blocks
/// or the source. Null when out of memory.
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) fn thread_data_alloc(domain: &'static Domain) -> *mut ThreadData {
    let td = match domain.thread_block_take() {
        Some(b) => b.as_ptr() as *mut ThreadData,
        None => {
            let Some(p) = domain
                .os
                .alloc_committed(core::mem::size_of::<ThreadData>())
            else {
                return ptr::null_mut();
            };
            p.as_ptr() as *mut ThreadData
        }
    };
    // SAFETY: `td` is a usable block of `size_of::<ThreadData>()` bytes, ours alone, and
    // it never moves (blocks of the source stay put).
    unsafe { thread_data_init(td, domain) };
    td
}

/// Initialises thread data in place: a context for `domain` and its backing heap.
///
/// # Safety
/// `td` points to writable memory for a `ThreadData` that no one else uses, and that never
/// moves from now on (the `Tld`'s address is the owner token of its segments).
pub(crate) unsafe fn thread_data_init(td: *mut ThreadData, domain: &'static Domain) {
    // SAFETY: as the caller guarantees; the fields are written before anything reads them.
    unsafe {
        let tld = addr_of_mut!((*td).tld);
        let heap = addr_of_mut!((*td).heap);
        ptr::write(tld, Tld::new(domain));
        RawHeap::init(heap, tld);
        (*tld).heap_backing = heap;
    }
    domain.os.stats.threads.add(1);
}

/// Returns the data of a thread that is done (after `thread_done`).
///
/// # Safety
/// `td` came from `thread_data_alloc` of `domain` and is no longer used.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer (CPUs never exit)
pub(crate) unsafe fn thread_data_free(domain: &Domain, td: *mut ThreadData) {
    domain.os.stats.threads.sub(1);
    // SAFETY: `td` is not null (it came from `thread_data_alloc`).
    let block = unsafe { NonNull::new_unchecked(td as *mut u8) };
    // SAFETY: the block is unused (caller), word-aligned and large.
    if unsafe { domain.thread_block_put(block) } {
        return;
    }
    // SAFETY: the block is a whole thread-data region from `thread_data_alloc`, unused.
    unsafe { thread_block_free(domain, block) };
}

/// Gives a thread-data block back to the source.
///
/// # Safety
/// `block` is a whole region of `domain` from `thread_data_alloc`, committed in full, and
/// no longer used.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer (CPUs never exit)
pub(crate) unsafe fn thread_block_free(domain: &Domain, block: NonNull<u8>) {
    let size = block_size(domain);
    // SAFETY: the block is a whole region of `size` bytes from `thread_data_alloc`,
    // committed in full (the `# Safety` contract).
    unsafe { domain.os.free(block, size, size) };
}

/// The thread (or CPU) is done: collects and detaches its heaps and hands its segments to
/// the domain. Its first-class heaps become inert (allocation returns null; the caller
/// still frees their structs); the thread data must not be used afterwards except to be
/// freed.
///
/// # Safety
/// `tld` is the calling thread's data.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer (CPUs never exit)
pub(crate) unsafe fn thread_done(tld: *mut Tld) {
    // SAFETY: the calling thread owns its data (caller): its heaps list is ours.
    let (heaps, backing) = unsafe { ((*tld).heaps, (*tld).heap_backing) };
    let mut heap = heaps;
    while !heap.is_null() {
        // SAFETY: the heaps of our thread's list are initialised and ours.
        let owned = unsafe { OwnedHeap::new(heap) };
        // SAFETY: as above; `next` is read before collection (which does not unlink).
        heap = unsafe { (*heap).next };
        heap_collect(owned, Collect::Abandon);
    }
    // SAFETY: the context is ours; `segments` lives in it and never moves.
    let (segments, abandoned) =
        unsafe { (addr_of_mut!((*tld).segments), &(*tld).domain().abandoned) };
    // SAFETY: the context is ours; every segment with pages in use goes to the domain
    // (its pages were detached from their heaps by the collection above), through the
    // context that `for_each` walks — the only change it allows.
    unsafe {
        crate::segment::SegmentsTld::for_each(segments, |s| {
            if (*s).used > 0 {
                segment_abandon(s, &mut *segments, abandoned);
            }
        });
        debug_assert!((*segments).is_empty(), "segments left after thread done");
    }
    let mut heap = heaps;
    while !heap.is_null() {
        // SAFETY: the heaps of our list are live structs of ours; a first-class one becomes
        // inert, the backing one dies with the thread data.
        unsafe {
            let next = (*heap).next;
            if heap != backing {
                (*heap).detach();
            }
            heap = next;
        }
    }
}

/// Gives all of `domain`'s memory back to its source: its segments (abandoned ones with
/// whatever blocks they still hold, cached ones) and its cached thread-data blocks. The
/// domain may be used again afterwards, empty.
///
/// # Safety
/// No thread allocates from the domain any more (every thread that did is done with it),
/// and no block it handed out is used again.
#[cfg(feature = "std")]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // sub-processes (C API)
pub(crate) unsafe fn discard_domain(domain: &Domain) {
    // SAFETY: as this function's contract.
    unsafe { domain.discard_all() };
    crate::segment_alloc::huge_spare_release(&domain.os, true);
    while let Some(block) = domain.thread_block_take() {
        // SAFETY: a cached thread-data block: a whole region of the thread-data size from
        // this domain's source, committed in full and unused.
        unsafe { thread_block_free(domain, block) };
    }
}
