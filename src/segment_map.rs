//! A map of the live segments of the process (hosted builds): one byte per possible
//! segment of the user address space, so that a pointer can be checked to belong to
//! shardalloc before its segment header is read (for `mi_is_in_heap_region`, and for the
//! detection of invalid frees).
//!
//! 2^47 bytes of user space / 4 MiB segments = 2^25 bytes: 32 MiB of zero-initialised
//! static memory (address space only), of which the OS backs only the parts that are
//! touched: one 4 KiB page of the map covers 16 GiB of address space. A byte rather than
//! a bit per segment: the C `free` tests it with one compare, where a bit needed a word
//! index, a bit index and a bit test (four instructions more on its fast path).
//!
//! The C `free` also routes every pointer to its slow path while checked mode is on, with
//! no instruction of its own for that: [`free_contains`] compares the index against
//! [`FREE_LIMIT`] (a load folded into the compare) instead of the constant bound, and
//! checked mode sets that limit to 0.

use crate::sync::{AtomicU8, AtomicUsize, Ordering};

use crate::size_class::SEGMENT_SHIFT;

/// Bits of a user-space address: 47 on 64-bit targets (x86_64, aarch64 with 48-bit
/// virtual addresses use the lower half), 32 on 32-bit ones.
#[cfg(target_pointer_width = "64")]
const ADDRESS_BITS: usize = 47;
#[cfg(not(target_pointer_width = "64"))]
const ADDRESS_BITS: usize = usize::BITS as usize;
/// Entries of the map: possible segments of the user address space.
const ENTRIES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

/// Invariant: `MAP[i] != 0` iff a live segment starts at `i << SEGMENT_SHIFT`.
static MAP: [AtomicU8; ENTRIES] = [const { AtomicU8::new(0) }; ENTRIES];

/// The bound [`free_contains`] checks the map index against: `ENTRIES`, or 0 while the C
/// `free` must take its slow path for every pointer (checked mode).
/// Invariant: `FREE_LIMIT` is `ENTRIES` or 0.
#[cfg_attr(not(feature = "override"), allow(dead_code))]
static FREE_LIMIT: AtomicUsize = AtomicUsize::new(ENTRIES);

/// Marks the segment at `segment` live (or dead).
pub(crate) fn set(segment: usize, live: bool) {
    let i = segment >> SEGMENT_SHIFT;
    if i < ENTRIES {
        MAP[i].store(live as u8, Ordering::Release);
    }
}

/// Whether a live segment starts at `segment`.
#[inline]
pub(crate) fn contains(segment: usize) -> bool {
    let i = segment >> SEGMENT_SHIFT;
    i < ENTRIES && MAP[i].load(Ordering::Acquire) != 0
}

/// The C `free`'s lookup, of a block pointer `p` (not of its segment's address): whether a
/// live segment starts at `p`'s `SEGMENT_SIZE`-aligned chunk; false for every pointer while
/// [`set_free_slow`] is on. `p` itself is looked up, not `p - 1` as `segment::ptr_segment`
/// takes it, which saves an instruction: null's chunk (at 0) holds no segment, and a block
/// that starts exactly at a chunk boundary (a huge block aligned to more than a segment)
/// lies in a chunk that no segment starts at (its segment's first chunk holds the
/// header), so both get false and their `free` takes the slow path, which looks again
/// with `p - 1`. When the answer is true, `p` lies in the first chunk of that segment,
/// after its header: the segment starts at `p & !SEGMENT_MASK`. About 6 instructions
/// (shift, compare with the limit in memory, branch, byte compare, branch).
#[inline(always)]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // the C `free`
pub(crate) fn free_contains(p: usize) -> bool {
    let i = p >> SEGMENT_SHIFT;
    // SAFETY: the index is read only when `i < FREE_LIMIT`, and `FREE_LIMIT <= ENTRIES`
    // (its invariant: it is only ever set to `ENTRIES` or 0), so `i` is in bounds.
    i < FREE_LIMIT.load(Ordering::Relaxed)
        && unsafe { MAP.get_unchecked(i) }.load(Ordering::Acquire) != 0
}

/// Sends (`on`) or stops sending every pointer of the C `free` to its slow path.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // checked mode of the C `free`
pub(crate) fn set_free_slow(on: bool) {
    FREE_LIMIT.store(if on { 0 } else { ENTRIES }, Ordering::Relaxed);
}
