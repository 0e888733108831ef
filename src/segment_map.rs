//! A map of the live segments of the process (hosted builds): one bit per possible
//! segment of the user address space, so that a pointer can be checked to belong to
//! shardalloc before its segment header is read (for `mi_is_in_heap_region`, and for the
//! detection of invalid frees).
//!
//! 2^47 bytes of user space / 4 MiB segments = 2^25 bits: 4 MiB of zero-initialised
//! static memory, of which the OS backs only the parts that are touched.

use crate::sync::{AtomicUsize, Ordering};

use crate::size_class::SEGMENT_SHIFT;

/// Bits of a user-space address: 47 on 64-bit targets (x86_64, aarch64 with 48-bit
/// virtual addresses use the lower half), 32 on 32-bit ones.
#[cfg(target_pointer_width = "64")]
const ADDRESS_BITS: usize = 47;
#[cfg(not(target_pointer_width = "64"))]
const ADDRESS_BITS: usize = usize::BITS as usize;
const BITS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
const WORD_BITS: usize = usize::BITS as usize;

static MAP: [AtomicUsize; BITS / WORD_BITS] = [const { AtomicUsize::new(0) }; BITS / WORD_BITS];

#[inline]
fn index(segment: usize) -> Option<(usize, usize)> {
    let i = segment >> SEGMENT_SHIFT;
    if i >= BITS {
        return None;
    }
    Some((i / WORD_BITS, 1usize << (i % WORD_BITS)))
}

/// Marks the segment at `segment` live (or dead).
pub(crate) fn set(segment: usize, live: bool) {
    if let Some((w, bit)) = index(segment) {
        if live {
            MAP[w].fetch_or(bit, Ordering::Release);
        } else {
            MAP[w].fetch_and(!bit, Ordering::Release);
        }
    }
}

/// Whether a live segment starts at `segment`.
#[inline]
pub(crate) fn contains(segment: usize) -> bool {
    match index(segment) {
        Some((w, bit)) => MAP[w].load(Ordering::Acquire) & bit != 0,
        None => false,
    }
}
