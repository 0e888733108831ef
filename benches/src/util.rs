//! Shared helpers: a seeded RNG, a checked heap block, the fast-path loop.

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64: small, fast, seeded, the same sequence on every run.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// Roughly log-uniform in `lo..=hi`: small sizes are much more frequent.
    #[inline]
    pub fn log_range(&mut self, lo: usize, hi: usize) -> usize {
        let bits_lo = usize::BITS - lo.leading_zeros();
        let bits_hi = usize::BITS - hi.leading_zeros();
        let b = self.range(bits_lo as usize, bits_hi as usize);
        let top = (1usize << b).min(hi);
        let bottom = (1usize << (b - 1)).max(lo);
        if top <= bottom {
            bottom
        } else {
            self.range(bottom, top)
        }
    }
    #[inline]
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// Scale an operation count, at least 1.
pub fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale) as usize).max(1)
}

/// A heap block of at least 8 bytes from the global allocator. Its first word holds its
/// size and, past the first word, its last byte a tag derived from it. Both are read back
/// before the block is freed: what was read goes into the workload's check value (a
/// checksum of the memory the allocator returned, not of the sizes asked for), and a
/// value that differs from what was written is counted as a corruption, which makes the
/// process exit with status 3 after the workload (see [`corrupted`]).
pub struct Blk {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: a `Blk` owns its memory exclusively; the global allocator lets any thread free it.
unsafe impl Send for Blk {}

const ALIGN: usize = 8;

#[inline]
fn tag(size: usize) -> u8 {
    (size as u8) ^ 0x5A
}

/// Blocks whose contents read back differently from what was written (all threads).
static CORRUPTED: AtomicU64 = AtomicU64::new(0);

/// How many blocks read back wrong so far: an allocator that hands out overlapping
/// blocks, or loses contents in `realloc`, makes this non-zero.
pub fn corrupted() -> u64 {
    CORRUPTED.load(Ordering::Relaxed)
}

#[cold]
#[inline(never)]
fn corruption(what: &str, size: usize, read: usize, tag_read: u8) {
    if CORRUPTED.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("heap block corrupted ({what}): size {size}, read back size {read}, tag {tag_read:#x} (expected {:#x})", tag(size));
    }
}

/// The check-value contribution of a block from what was read back from it.
#[inline]
fn digest(word: usize, tail: u8) -> u64 {
    let mut z = (word as u64 ^ ((tail as u64) << 56)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn oom(layout: Layout) -> ! {
    std::alloc::handle_alloc_error(layout)
}

impl Blk {
    #[inline]
    pub fn new(size: usize) -> Blk {
        let size = size.max(8);
        let layout = Layout::from_size_align(size, ALIGN).unwrap();
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(black_box(p)) else {
            oom(layout)
        };
        // SAFETY: the block is `size >= 8` bytes, 8-aligned, and ours.
        unsafe {
            (ptr.as_ptr() as *mut usize).write(size);
            if size > 8 {
                ptr.as_ptr().add(size - 1).write(tag(size));
            }
        }
        Blk { ptr, size }
    }

    /// The block's address (its first word holds the size, checked on free).
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Reads the size word and the tag back; returns their digest (counted as a
    /// corruption when they are not what was written).
    #[inline]
    pub fn check(&self) -> u64 {
        // SAFETY: the block is live and `size >= 8` bytes, written in `new`/`resize`.
        let (s, t) = unsafe {
            (
                (self.ptr.as_ptr() as *const usize).read_volatile(),
                if self.size > 8 {
                    self.ptr.as_ptr().add(self.size - 1).read_volatile()
                } else {
                    tag(8)
                },
            )
        };
        if s != self.size || t != tag(self.size) {
            corruption("read before free", self.size, s, t);
        }
        digest(s, t)
    }

    /// Write `n` bytes of the block (touching it like a user would).
    #[inline]
    pub fn fill(&mut self, byte: u8, n: usize) {
        let n = n.min(self.size - 1);
        if n > 8 {
            // SAFETY: bytes 8..n lie inside the block.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(8), byte, n - 8) };
        }
    }

    /// Grow or shrink with `realloc`, keeping the contents.
    pub fn resize(&mut self, new_size: usize) {
        self.check();
        let new_size = new_size.max(8);
        let layout = Layout::from_size_align(self.size, ALIGN).unwrap();
        // SAFETY: ptr was allocated with `layout`; new_size is non-zero and small.
        let p = unsafe { realloc(self.ptr.as_ptr(), layout, new_size) };
        let Some(ptr) = NonNull::new(black_box(p)) else {
            oom(Layout::from_size_align(new_size, ALIGN).unwrap())
        };
        // SAFETY: the block is now `new_size >= 8` bytes and ours; realloc kept its first
        // word and, when it grew, the old tag at `old size - 1`. What it lost stays in the
        // new size word (wrong by the same amount, or by 2^40 for a lost tag), so that the
        // block reads back wrong when it is freed and the check value changes.
        unsafe {
            let kept = (ptr.as_ptr() as *const usize).read_volatile();
            let old_tag = if new_size >= self.size && self.size > 8 {
                ptr.as_ptr().add(self.size - 1).read_volatile()
            } else {
                tag(self.size)
            };
            if kept != self.size || old_tag != tag(self.size) {
                corruption("read after realloc", self.size, kept, old_tag);
            }
            let lost_tag = if old_tag != tag(self.size) { 1 << 40 } else { 0 };
            let word = kept
                .wrapping_sub(self.size)
                .wrapping_add(new_size)
                .wrapping_add(lost_tag);
            (ptr.as_ptr() as *mut usize).write(word);
            if new_size > 8 {
                ptr.as_ptr().add(new_size - 1).write(tag(new_size));
            }
        }
        self.ptr = ptr;
        self.size = new_size;
    }

    /// Check and free; returns the digest of what was read back (see [`Blk::check`]).
    #[inline]
    pub fn free(self) -> u64 {
        let d = self.check();
        let layout = Layout::from_size_align(self.size, ALIGN).unwrap();
        // SAFETY: allocated with this layout, freed once (self is forgotten below).
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
        std::mem::forget(self);
        d
    }
}

impl Drop for Blk {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.size, ALIGN).unwrap();
        // SAFETY: allocated with this layout and still live (`free` forgets self).
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// Totals kept by one thread: bytes allocated and freed (the workload's own
/// bookkeeping), and the checksum of what was read back from the freed blocks.
#[derive(Default, Clone, Copy, Debug)]
pub struct Tally {
    pub alloced: u64,
    pub freed: u64,
    pub sum: u64,
}

impl Tally {
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Blk {
        let b = Blk::new(size);
        self.alloced += b.size() as u64;
        b
    }
    #[inline]
    pub fn free(&mut self, b: Blk) {
        self.freed += b.size() as u64;
        self.sum = self.sum.wrapping_add(b.free());
    }
    pub fn free_all(&mut self, v: impl IntoIterator<Item = Blk>) {
        for b in v {
            self.free(b);
        }
    }
    pub fn add(&mut self, o: Tally) {
        self.alloced += o.alloced;
        self.freed += o.freed;
        self.sum = self.sum.wrapping_add(o.sum);
    }
    /// Every byte allocated was freed; the check value of a workload: the checksum of
    /// the blocks' contents read back before each free (order-independent, so the same
    /// under every correct allocator when the workload's operations do not depend on
    /// thread timing), plus the bytes allocated.
    pub fn finish(self, what: &str) -> u64 {
        if self.alloced != self.freed {
            eprintln!(
                "{what}: allocated {} bytes but freed {}",
                self.alloced, self.freed
            );
            std::process::exit(3);
        }
        self.sum.wrapping_add(self.alloced)
    }
}

/// The small-size fast path: `n` pairs of alloc(16..64) + free, for callgrind.
#[inline(never)]
pub fn fastpath(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let size = 16 + ((i & 3) as usize) * 16;
        // SAFETY: size is 16..=64, align 8: a valid non-zero layout.
        let layout = unsafe { Layout::from_size_align_unchecked(size, 8) };
        // SAFETY: non-zero layout; freed right after with the same layout.
        unsafe {
            let p = black_box(alloc(layout));
            if p.is_null() {
                oom(layout);
            }
            p.write(i as u8);
            acc = acc.wrapping_add(p.read() as u64);
            dealloc(black_box(p), layout);
        }
    }
    acc
}

/// The loop of [`fastpath`] over an allocator's own malloc/free (e.g. `mi_malloc`/`mi_free`),
/// without Rust's `GlobalAlloc` shims.
#[inline(always)]
pub fn fastpath_with(n: u64, malloc: impl Fn(usize) -> *mut u8, free: impl Fn(*mut u8)) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let size = 16 + ((i & 3) as usize) * 16;
        let p = black_box(malloc(size));
        if p.is_null() {
            oom(Layout::from_size_align(size, 8).unwrap());
        }
        // SAFETY: p is a fresh block of at least 16 bytes.
        unsafe {
            p.write(i as u8);
            acc = acc.wrapping_add(p.read() as u64);
        }
        free(black_box(p));
    }
    acc
}

/// The same loop as [`fastpath`] on a stack buffer: the loop's own cost.
#[inline(never)]
pub fn fastpath_baseline(n: u64) -> u64 {
    let mut acc = 0u64;
    let mut buf = [0u8; 64];
    for i in 0..n {
        let size = 16 + ((i & 3) as usize) * 16;
        let p = black_box(buf.as_mut_ptr());
        black_box(size);
        // SAFETY: p points at the 64-byte buffer.
        unsafe {
            p.write(i as u8);
            acc = acc.wrapping_add(p.read() as u64);
        }
        black_box(p);
    }
    acc
}
