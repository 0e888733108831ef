//! Size classes ("bins"), as mimalloc's: up to 8 words, multiples of two words on 64-bit
//! targets (of one word on 32-bit ones and in the small geometry), then four classes per
//! power of two: internal waste is 12.5% on average over all sizes, and at worst just
//! under 25% (a request one word above a power of two) above 8 words.

/// Machine word size in bytes; every block is a multiple of it.
pub const WORD: usize = core::mem::size_of::<usize>();

/// Segments are aligned to their size, so `(p - 1) & !SEGMENT_MASK` finds the segment
/// of any block pointer `p` (blocks never start at a segment's first byte: the segment
/// header is there, so `p - 1` maps a block that starts exactly one segment size in, as a
/// segment-aligned huge block does, to its own segment). In the small geometry the
/// alignment is relative to a phase (see `segment::ptr_segment`).
///
/// Two geometries, chosen at compile time:
/// - the default: 4 MiB segments of 64 KiB (small) or 512 KiB (medium) pages, as
///   mimalloc's, for hosted programs and kernels;
/// - `small` (cargo feature `small`, which `embedded` turns on): 8 KiB segments of 512-byte
///   (small) or 4 KiB (medium) pages, for heaps of 16–256 KiB on microcontrollers.
#[cfg(not(feature = "small"))]
pub const SEGMENT_SHIFT: usize = 22;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub const SEGMENT_SHIFT: usize = 13;
/// Size (and alignment) of a segment in bytes: 4 MiB (small geometry: 8 KiB).
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Mask of the offset bits of an address within its segment (`SEGMENT_SIZE - 1`).
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;

/// log2 of [`SMALL_PAGE_SIZE`].
#[cfg(not(feature = "small"))]
pub const SMALL_PAGE_SHIFT: usize = 16;
/// log2 of [`SMALL_PAGE_SIZE`].
#[cfg(feature = "small")]
pub const SMALL_PAGE_SHIFT: usize = 9;
/// Size of a small page in bytes: 64 KiB (small geometry: 512 bytes, the slice of which
/// pages of every size are runs).
pub const SMALL_PAGE_SIZE: usize = 1 << SMALL_PAGE_SHIFT;
/// log2 of [`MEDIUM_PAGE_SIZE`].
#[cfg(not(feature = "small"))]
pub const MEDIUM_PAGE_SHIFT: usize = 19;
/// log2 of [`MEDIUM_PAGE_SIZE`].
#[cfg(feature = "small")]
pub const MEDIUM_PAGE_SHIFT: usize = 12;
/// Size of a medium page in bytes: 512 KiB (small geometry: 4 KiB).
pub const MEDIUM_PAGE_SIZE: usize = 1 << MEDIUM_PAGE_SHIFT;

/// Number of small pages in a segment of small pages: 64 (small geometry: 16 slices).
pub const SMALL_PAGES_PER_SEGMENT: usize = SEGMENT_SIZE / SMALL_PAGE_SIZE;
/// Number of medium pages in a segment of medium pages: 8 (small geometry: 2).
pub const MEDIUM_PAGES_PER_SEGMENT: usize = SEGMENT_SIZE / MEDIUM_PAGE_SIZE;

/// Largest block served from small pages: 16 KiB (small geometry: 128 bytes).
pub const SMALL_OBJ_SIZE_MAX: usize = SMALL_PAGE_SIZE / 4;
/// Largest block served from medium pages: 128 KiB (small geometry: 1 KiB).
pub const MEDIUM_OBJ_SIZE_MAX: usize = MEDIUM_PAGE_SIZE / 4;
/// Largest block served from large pages (one page per segment); above: huge segments.
/// 2 MiB (small geometry: 6 KiB, from a run of 512-byte slices).
pub const LARGE_OBJ_SIZE_MAX: usize = if cfg!(feature = "small") {
    SEGMENT_SIZE / 4 * 3
} else {
    SEGMENT_SIZE / 2
};
/// [`LARGE_OBJ_SIZE_MAX`] in words.
pub const LARGE_OBJ_WSIZE_MAX: usize = LARGE_OBJ_SIZE_MAX / WORD;

/// Sizes up to this many words are served through the heap's direct page table: 128
/// (small geometry: the small-object limit, 64 words on 32-bit targets).
#[cfg(not(feature = "small"))]
pub const SMALL_WSIZE_MAX: usize = 128;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub const SMALL_WSIZE_MAX: usize = SMALL_OBJ_SIZE_MAX / WORD;
/// [`SMALL_WSIZE_MAX`] in bytes: 1 KiB on 64-bit targets.
pub const SMALL_SIZE_MAX: usize = SMALL_WSIZE_MAX * WORD;
/// Bytes added to every request for the padding after each block (feature `debug-mode`:
/// a canary and the distance to the requested end, mimalloc's `mi_padding_t`, checked at
/// free; see `debug_mode`). 0 otherwise, so that the lookups below fold it away.
pub const PADDING_SIZE: usize = if cfg!(feature = "debug-mode") { 8 } else { 0 };
/// [`PADDING_SIZE`] in words (and one more word for the request of at least one byte
/// that [`padded`] makes of 0).
pub const PADDING_WSIZE: usize = wsize_from_size(PADDING_SIZE);

/// The bytes a block needs for a request of `size`: `size` itself, or with debug mode's
/// padding after at least one byte (so that every block has a word, the free-list link,
/// before its padding), saturating (an impossible size stays impossible).
#[inline(always)]
pub const fn padded(size: usize) -> usize {
    if PADDING_SIZE == 0 {
        size
    } else {
        let size = if size == 0 { 1 } else { size };
        size.saturating_add(PADDING_SIZE)
    }
}
/// Entries of the direct table (`wsize` 0 ..= SMALL_WSIZE_MAX, and the padding's words
/// above it: a small request with its padding is looked up there, as in mimalloc's
/// `MI_PAGES_DIRECT`).
pub const PAGES_DIRECT: usize = SMALL_WSIZE_MAX + PADDING_WSIZE + 1;

/// The smallest OS page the core assumes (segment headers and page areas are whole
/// pages of at least this size): 4 KiB (small geometry: 16 bytes, for sources of plain
/// memory that have no pages: a segment header is rounded up to 16 bytes, the alignment
/// of blocks whose size is a multiple of 16, not to a page).
#[cfg(not(feature = "small"))]
pub const MIN_OS_PAGE: usize = 4096;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub const MIN_OS_PAGE: usize = 16;

/// Every block of a size that is a multiple of this is aligned to it.
pub const MAX_ALIGN_SIZE: usize = 16;

/// Whether every block of `size` bytes is aligned to `align` (a power of two): blocks are
/// word-aligned, and aligned to `MAX_ALIGN_SIZE` when their size is a multiple of it, so
/// `malloc(size)` serves such a request as it is.
#[inline(always)]
pub const fn aligned_by_size(size: usize, align: usize) -> bool {
    align <= WORD || (align <= MAX_ALIGN_SIZE && size & (align - 1) == 0 && size >= align)
}

/// Bin of huge blocks (one block per segment): after the bin of the largest large block
/// (73 in the default geometry, as mimalloc's; fewer in the small one, which keeps the
/// heap's queue table small).
#[cfg(not(feature = "small"))]
pub const BIN_HUGE: usize = 73;
/// See the default geometry's documentation.
#[cfg(feature = "small")]
pub const BIN_HUGE: usize = wsize_bin(LARGE_OBJ_WSIZE_MAX) + 1;
/// Bin (queue index) of full pages, which have no free block; after all the size bins.
pub const BIN_FULL: usize = BIN_HUGE + 1;

const _: () = assert!(SEGMENT_SIZE % SMALL_PAGE_SIZE == 0 && SEGMENT_SIZE % MEDIUM_PAGE_SIZE == 0);
const _: () = assert!(SMALL_PAGES_PER_SEGMENT <= 64, "the purge mask is a u64");
const _: () = assert!(bin(LARGE_OBJ_SIZE_MAX) < BIN_HUGE, "define more bins");
const _: () = assert!(SMALL_SIZE_MAX <= SMALL_OBJ_SIZE_MAX);
const _: () = assert!(MEDIUM_PAGE_SIZE <= SEGMENT_SIZE && SMALL_PAGE_SIZE >= MIN_OS_PAGE);

/// Bytes to words, rounding up.
#[inline(always)]
pub const fn wsize_from_size(size: usize) -> usize {
    (size + WORD - 1) / WORD
}

/// The bin of a request of `size` bytes (`size <= LARGE_OBJ_SIZE_MAX` gives a bin below
/// `BIN_HUGE`).
#[inline]
pub const fn bin(size: usize) -> usize {
    let wsize = wsize_from_size(size);
    if wsize > LARGE_OBJ_WSIZE_MAX {
        BIN_HUGE
    } else {
        wsize_bin(wsize)
    }
}

/// Whether the bins up to 8 words step by two words (16, 32, 48, 64 bytes: no 24, 40 or
/// 56), as C mimalloc's on 64-bit targets (`MI_ALIGN2W`, from `MI_MAX_ALIGN_SIZE` 16) and
/// rusty_alloc's: every block of 16 bytes or more is then 16-byte aligned, so no block of
/// a tiny class straddles two cache lines (of eight 24-byte blocks, two do), and requests
/// of 17-24 and 25-32 bytes (or 33-40 and 41-48, ...) share one page, so a program
/// touches fewer pages and reuses the blocks of both sizes. Measured with callgrind's
/// cache simulation (`--cache-sim=yes`, `bench-shardalloc W --quick`): cfrac, whose
/// numbers are vectors of 4-32 bytes, 1.49M D1 misses -> 0.92M (rusty_alloc 0.86M);
/// espresso 661K -> 594K; scale-1 1.84M -> 1.82M; fixed-heap 4.20M -> 4.17M; the same
/// instruction counts. Bins 3, 5 and 7 then hold no page (`bin` never returns them).
/// Off on 32-bit targets (where mimalloc steps by four words: not measured here) and in
/// the small geometry, whose heaps of a few KiB keep the tighter fit.
pub const ALIGN2W: bool = WORD == 8 && !cfg!(feature = "small");

/// The smallest bin in use: 1 (one-word blocks), or 2 in secure mode, whose blocks are at
/// least two words: a block that another thread frees into a full page goes onto its
/// heap's delayed list with a mark in its first word (its own address, encoded with its
/// page's keys, so that a second free of it is seen) and the list's link in its second
/// (`Page::set_delayed_next`). Requests of one word then get two-word blocks.
pub const MIN_BIN: usize = if cfg!(feature = "secure") { 2 } else { 1 };

/// The bin of a request of `wsize` words, not looking at the huge limit.
#[inline]
const fn wsize_bin(wsize: usize) -> usize {
    if wsize <= MIN_BIN {
        MIN_BIN
    } else if wsize <= 8 {
        if ALIGN2W {
            (wsize + 1) & !1
        } else {
            wsize
        }
    } else {
        let w = wsize - 1;
        let b = (usize::BITS - 1 - w.leading_zeros()) as usize; // highest set bit, >= 3
        (b << 2) + ((w >> (b - 2)) & 3) - 3
    }
}

/// The block size of `bin` (`1 <= bin < BIN_HUGE`): the largest size mapping to it.
#[inline]
pub const fn bin_size(bin: usize) -> usize {
    let wsize = if bin <= 8 {
        bin
    } else {
        let b = (bin + 3) >> 2;
        let q = (bin + 3) & 3;
        (5 + q) << (b - 2)
    };
    wsize * WORD
}

/// Block size to hand out for a request of `size` bytes (`size <= LARGE_OBJ_SIZE_MAX`).
#[inline]
pub const fn good_size(size: usize) -> usize {
    bin_size(bin(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to 8 words: whole words, or pairs of words above `MIN_BIN` (`ALIGN2W`).
    fn tiny_words(size: usize) -> usize {
        let words = wsize_from_size(size).max(MIN_BIN);
        if ALIGN2W && words > MIN_BIN {
            (words + 1) & !1
        } else {
            words
        }
    }

    #[test]
    fn tiny_sizes_are_exact_words() {
        for size in 1..=8 * WORD {
            assert_eq!(good_size(size), tiny_words(size) * WORD, "size {size}");
        }
        assert_eq!(bin(0), MIN_BIN);
        if ALIGN2W {
            // every block of a request above one word is 16-byte aligned: its size is a
            // multiple of 16
            assert_eq!(good_size(17), 32);
            // (under Miri, scripts/miri.sh, up to 4 KiB)
            for size in WORD + 1..=if cfg!(miri) { 1 << 12 } else { 1 << 16 } {
                assert_eq!(good_size(size) % 16, 0, "size {size}");
            }
        }
    }

    #[test]
    fn round_trip_and_waste_bound() {
        let mut prev_bin = 0;
        let (mut waste_sum, mut count) = (0.0, 0.0);
        for size in 1..=LARGE_OBJ_SIZE_MAX {
            let b = bin(size);
            assert!(b >= prev_bin, "bins are monotone");
            assert!((MIN_BIN..BIN_HUGE).contains(&b));
            let bs = bin_size(b);
            assert!(bs >= size, "size {size} bin {b} block {bs}");
            // the block of the bin maps back to the same bin
            assert_eq!(bin(bs), b, "round trip at size {size}");
            // internal waste beyond the request rounded to words: below 25% for any size
            // (four classes per power of two: a request just above a class boundary
            // 2^b (1 + k/4) wastes 1/(4 + k))
            // (secure mode's one-word requests get two-word blocks: `MIN_BIN`; up to 8
            // words, `ALIGN2W` rounds to two words first)
            let wbytes = if size <= 8 * WORD {
                tiny_words(size) * WORD
            } else {
                wsize_from_size(size) * WORD
            };
            assert!((bs - wbytes) * 4 < wbytes, "waste at {size}: block {bs}");
            waste_sum += (bs - wbytes) as f64 / wbytes as f64;
            count += 1.0;
            // the previous bin's block is too small (the previous bin in use: `ALIGN2W`
            // skips the odd tiny ones)
            if b > MIN_BIN {
                assert!(bin_size(b - 1) < size || (ALIGN2W && b <= 8 && b & 1 == 0));
                assert!(bin_size(prev_bin) < size || prev_bin == b);
            }
            prev_bin = b;
        }
        assert_eq!(bin(LARGE_OBJ_SIZE_MAX + 1), BIN_HUGE);
        // and at most 12.5% on average over all sizes
        let mean = waste_sum / count;
        assert!(mean <= 0.125, "mean waste {mean}");
    }

    #[test]
    fn sixteen_multiples_get_sixteen_multiple_blocks() {
        // (under Miri, scripts/miri.sh, every 16-multiple up to 4 KiB and one in 61 above:
        // each size is interpreted)
        let sizes = (16..=LARGE_OBJ_SIZE_MAX)
            .step_by(16)
            .enumerate()
            .filter(|&(i, size)| !cfg!(miri) || size <= 4096 || i % 61 == 0)
            .map(|(_, size)| size);
        for size in sizes {
            assert_eq!(good_size(size) % 16, 0, "size {size}");
        }
    }

    #[test]
    fn known_bins() {
        // a few values of mimalloc's table (in words: 80, 128, 160 bytes on 64-bit targets)
        assert_eq!(bin_size(9), 10 * WORD);
        assert_eq!(bin_size(12), 16 * WORD);
        assert_eq!(bin_size(13), 20 * WORD);
        #[cfg(not(feature = "small"))]
        assert_eq!(bin(SMALL_SIZE_MAX), bin(128 * WORD));
        assert_eq!(bin_size(bin(LARGE_OBJ_SIZE_MAX)), LARGE_OBJ_SIZE_MAX);
    }
}
