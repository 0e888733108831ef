//! Hardening: the error hook of every build, and (feature `secure`) the free-list
//! encoding, per-page keys, randomness and the divisibility test of secure mode.
//!
//! # The error hook
//! Misuse that the allocator detects (a double free, a free of a pointer that is not a
//! block, a corrupted free list, a write after free, debug mode's overflows, ...) is
//! reported through [`report`], the one error hook of every build (debug mode's reports
//! come here too unless `debug_mode::set_report_hook` takes them):
//! the kind of error, the address, and a size when one is known. `report` counts it, calls
//! the installed handler ([`set_error_handler`]; the C library installs one that prints
//! through mimalloc's `show_errors` / `mi_register_error` machinery), and then, in abort
//! mode ([`set_abort_on_error`]; the default of the `secure` feature), aborts the process
//! on hosted builds. Without a handler, hosted builds write one line to stderr (no
//! allocation); `no_std` builds only count (a kernel or firmware installs its own handler,
//! which may halt). Nothing here panics.
//!
//! After a report that does not abort, the misused block is left alone (a double or
//! invalid free is ignored; a corrupted list is cut at the bad link, leaking its tail).
//!
//! # Secure mode (feature `secure`)
//! - Free-list links (`Block::next` in a page's `free`, `local_free` and `thread_free`)
//!   are stored encoded with per-page keys, as mimalloc's `mi_ptr_encode` (two keys), but
//!   with a multiply in place of its rotation ([`Keys`]): `(p ^ k) * m`. A decoded link must be null or the start of a block of the
//!   same page, or it is reported and not followed: an overflow that overwrites a link
//!   cannot steer allocation to an address of its choice (e.g. the allocator's metadata,
//!   which lives in the segment header, outside every page's blocks).
//! - A freed block's first word is such an encoded link, so a free whose block's first
//!   word decodes to a link into its own page is a double free (for blocks of the calling
//!   thread the page's lists are walked to confirm it).
//! - Fresh free lists are linked in a random order ([`random`]).

use crate::sync::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// What went wrong (see [`report`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A block freed twice.
    DoubleFree,
    /// A free (or `realloc`, sized delete, `usable_size`) of a pointer that is not a live
    /// block of this allocator: foreign, interior, into the allocator's metadata.
    InvalidFree,
    /// A free-list link that does not lead to a block of its page (an overflow or a
    /// write after free overwrote it).
    CorruptFreeList,
    /// A freed block was written to before it was handed out again.
    WriteAfterFree,
    /// A write past the end of a block (debug mode's canaries).
    BufferOverflow,
    /// A sized free whose size does not fit the block.
    SizeMismatch,
}

impl ErrorKind {
    /// A short description ("double free", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::DoubleFree => "double free",
            ErrorKind::InvalidFree => "invalid free (not a block of this allocator)",
            ErrorKind::CorruptFreeList => "corrupted free list (overflow or write after free)",
            ErrorKind::WriteAfterFree => "write after free",
            ErrorKind::BufferOverflow => "buffer overflow",
            ErrorKind::SizeMismatch => "size does not match the block",
        }
    }
}

/// An error handler: the kind of error, the address concerned, and a size when one is
/// known. It must not allocate from this allocator.
pub type ErrorHandler = fn(ErrorKind, usize, Option<usize>);

/// The installed handler (a `fn` pointer as `usize`; 0 = the default).
/// The handler as a pointer (null: none), so that the function pointer keeps its
/// provenance on the way through (an integer would lose it: Miri reports the call).
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Abort after a report (hosted builds).
static ABORT: AtomicBool = AtomicBool::new(cfg!(feature = "secure"));
/// Errors reported so far.
static ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Installs the error handler (`None`: the default one).
pub fn set_error_handler(handler: Option<ErrorHandler>) {
    HANDLER.store(
        handler.map_or(core::ptr::null_mut(), |f| f as *mut ()),
        Ordering::Release,
    );
}

/// Whether a report aborts the process (hosted builds; `no_std` handlers decide for
/// themselves). On by default with the `secure` feature, off otherwise.
pub fn set_abort_on_error(abort: bool) {
    ABORT.store(abort, Ordering::Relaxed);
}

/// See [`set_abort_on_error`].
pub fn abort_on_error() -> bool {
    ABORT.load(Ordering::Relaxed)
}

/// Whether a handler is installed (`set_error_handler`).
#[cfg_attr(not(feature = "debug-mode"), allow(dead_code))]
pub(crate) fn handler_installed() -> bool {
    !HANDLER.load(Ordering::Relaxed).is_null()
}

/// Counts an error reported by another way than [`report`] (debug mode's own hook).
#[cfg_attr(not(feature = "debug-mode"), allow(dead_code))]
pub(crate) fn count_error() {
    ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// How many errors were reported so far (by every mode).
pub fn error_count() -> usize {
    ERRORS.load(Ordering::Relaxed)
}

/// Reports an error (see the module documentation). Returns only when not aborting.
#[cold]
#[inline(never)]
pub fn report(kind: ErrorKind, addr: usize, size: Option<usize>) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    let h = HANDLER.load(Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: `HANDLER` only ever holds null or an `ErrorHandler` stored by
        // `set_error_handler` (a function pointer cast to a data pointer of the same size,
        // with its provenance).
        let f = unsafe { core::mem::transmute::<*mut (), ErrorHandler>(h) };
        f(kind, addr, size);
    } else {
        #[cfg(feature = "std")]
        default_handler(kind, addr, size);
    }
    abort_if_set(kind, addr);
}

/// The end of [`report`] for callers that printed their own message (the C library's
/// checked mode): counts nothing, calls no handler, aborts in abort mode.
#[cold]
pub(crate) fn abort_if_set(kind: ErrorKind, addr: usize) {
    if abort_on_error() {
        #[cfg(feature = "std")]
        {
            write_stderr(format_args!(
                "shardalloc: aborting after an error ({} at {addr:#x})\n",
                kind.as_str()
            ));
            std::process::abort();
        }
    }
    let _ = (kind, addr);
}

/// The hosted default: one line on stderr.
#[cfg(feature = "std")]
fn default_handler(kind: ErrorKind, addr: usize, size: Option<usize>) {
    match size {
        Some(s) => write_stderr(format_args!(
            "shardalloc: error: {} at {addr:#x} (size {s})\n",
            kind.as_str()
        )),
        None => write_stderr(format_args!(
            "shardalloc: error: {} at {addr:#x}\n",
            kind.as_str()
        )),
    }
}

/// Writes a message of at most 256 bytes to stderr without allocating.
#[cfg(feature = "std")]
pub(crate) fn write_stderr(args: core::fmt::Arguments<'_>) {
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let take = s.len().min(self.b.len() - self.n);
            self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
            self.n += take;
            Ok(())
        }
    }
    let mut buf = Buf { b: [0; 256], n: 0 };
    let _ = core::fmt::write(&mut buf, args);
    use std::io::Write as _;
    // `Stderr` is unbuffered and does not allocate for a plain write.
    let _ = std::io::stderr().write_all(&buf.b[..buf.n]);
}

// ---------------------------------------------------------------------------------------
// secure mode: keys, encoding, randomness

/// The randomness state (a splitmix64 sequence over a seed).
#[cfg(feature = "secure")]
static RANDOM: AtomicUsize = AtomicUsize::new(0);

/// A random word (splitmix over a seeded counter: distinct per call, not predictable
/// without the seed). Seeded from the OS on hosted unix, else from addresses and the
/// call count (an unguessable seed then needs [`set_random_seed`]).
#[cfg(feature = "secure")]
pub(crate) fn random() -> usize {
    const GOLDEN: usize = 0x9E37_79B9_7F4A_7C15_u64 as usize;
    let mut s = RANDOM.load(Ordering::Relaxed);
    if s == 0 {
        s = os_seed() | 1;
        let _ = RANDOM.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed);
    }
    let x = RANDOM
        .fetch_add(GOLDEN, Ordering::Relaxed)
        .wrapping_add(GOLDEN) as u64;
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as usize
}

/// Seeds secure mode's randomness (kernels and firmware: from a hardware source).
#[cfg(feature = "secure")]
pub fn set_random_seed(seed: u64) {
    RANDOM.store(seed as usize | 1, Ordering::Relaxed);
}

#[cfg(feature = "secure")]
fn os_seed() -> usize {
    #[cfg(all(feature = "std", unix))]
    {
        let mut s: usize = 0;
        // SAFETY: `getrandom` writes at most the given number of bytes into `s`.
        let n = unsafe {
            ::libc::getrandom(
                &mut s as *mut usize as *mut ::libc::c_void,
                core::mem::size_of::<usize>(),
                ::libc::GRND_NONBLOCK,
            )
        };
        if n == core::mem::size_of::<usize>() as isize && s != 0 {
            return s;
        }
    }
    // addresses (ASLR) of a static, a stack slot and this function
    let local = 0u8;
    (&RANDOM as *const _ as usize).rotate_left(17)
        ^ (&local as *const u8 as usize).rotate_left(41)
        ^ (os_seed as fn() -> usize as usize)
}

/// The keys of a page's link encoding: `[xor, mul, mul⁻¹]` (`mul` odd, `mul⁻¹` its inverse
/// modulo 2^BITS).
///
/// `encode(p) = (p ^ xor) * mul`. Unlike mimalloc's rotate-and-xor, the multiply spreads
/// any change of a stored link over all the bits above it once decoded: an overflow that
/// changes even the lowest byte of a link decodes to an address far outside the page (all
/// but a 2^-40-ish chance), so it is caught, not followed. (Two keys, as mimalloc's: an
/// added third key, `(p ^ xor) * mul + add`, cost an instruction at every encode and
/// decode — three a malloc/free pair — and hid nothing the multiply does not: a stored
/// link reveals neither key without the pointer it encodes.) `decode`'s last step is the
/// `xor`, whose flags tell a null link (the end of a list) at no extra instruction.
#[cfg(feature = "secure")]
#[derive(Clone, Copy)]
pub(crate) struct Keys(pub [usize; 3]);

#[cfg(feature = "secure")]
impl Keys {
    pub(crate) const ZERO: Keys = Keys([0, 1, 1]);

    pub(crate) fn random() -> Keys {
        let mul = random() | 1;
        // (the `xor` key with its top bit set: a live block's first word of 0, common,
        // decodes to it, never into a page of the lower half; and a null link is never
        // stored as 0)
        Keys([random() | 1 << (usize::BITS - 1), mul, inverse(mul)])
    }

    #[inline(always)]
    pub(crate) fn encode(self, p: usize) -> usize {
        (p ^ self.0[0]).wrapping_mul(self.0[1])
    }

    #[inline(always)]
    pub(crate) fn decode(self, x: usize) -> usize {
        x.wrapping_mul(self.0[2]) ^ self.0[0]
    }
}

/// The inverse of odd `a` modulo 2^BITS (Newton's iteration: each step doubles the
/// correct low bits, starting from 3 correct ones as `a * a ≡ 1 mod 8`).
#[cfg(feature = "secure")]
fn inverse(a: usize) -> usize {
    let mut inv = a;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2usize.wrapping_sub(a.wrapping_mul(inv)));
    }
    debug_assert_eq!(a.wrapping_mul(inv), 1);
    inv
}

/// A divisibility test by a fixed divisor without division (Granlund–Montgomery): for
/// `d = 2^shift * odd`, `n % d == 0` iff `rotr(n * inv(odd), shift) <= limit`, where
/// `inv(odd)` is the inverse of `odd` modulo 2^BITS and `limit = (2^BITS - 1) / d`.
#[cfg(feature = "secure")]
#[derive(Clone, Copy)]
pub(crate) struct Divisor {
    inv: usize,
    shift: u32,
    limit: usize,
}

#[cfg(feature = "secure")]
impl Divisor {
    pub(crate) const ONE: Divisor = Divisor {
        inv: 1,
        shift: 0,
        limit: usize::MAX,
    };

    pub(crate) fn new(d: usize) -> Divisor {
        debug_assert!(d > 0);
        let shift = d.trailing_zeros();
        let odd = d >> shift;
        Divisor {
            inv: inverse(odd),
            shift,
            limit: usize::MAX / d,
        }
    }

    /// `n % d == 0`.
    #[inline(always)]
    pub(crate) fn divides(self, n: usize) -> bool {
        self.quotient(n) <= self.limit
    }

    /// `n / d` when `d` divides `n`, else a number above `limit` (`(2^BITS - 1) / d`): so
    /// for any `k <= limit`, `quotient(n) < k` iff `n` is one of `0, d, .., (k - 1) * d`
    /// (one compare tests both that `n` is a multiple of `d` and that it is below `k * d`).
    #[inline(always)]
    pub(crate) fn quotient(self, n: usize) -> usize {
        n.wrapping_mul(self.inv).rotate_right(self.shift)
    }
}

#[cfg(all(test, feature = "secure"))]
mod tests {
    use super::*;

    #[test]
    fn divisor_agrees_with_modulo() {
        for d in [1usize, 8, 16, 24, 48, 80, 112, 640, 1 << 20, 3 * 1024 + 8] {
            let div = Divisor::new(d);
            for n in (0..20 * d).step_by(1.max(d / 7)) {
                assert_eq!(div.divides(n), n % d == 0, "d={d} n={n}");
            }
        }
    }

    #[test]
    fn quotient_below_k_iff_a_multiple_below_k_times_d() {
        for d in [1usize, 8, 16, 24, 48, 80, 112, 640, 1 << 20, 3 * 1024 + 8] {
            let div = Divisor::new(d);
            let k = 37;
            for n in (0..60 * d)
                .step_by(1.max(d / 7))
                .chain([usize::MAX - 7, 0usize.wrapping_sub(d)])
            {
                assert_eq!(div.quotient(n) < k, n % d == 0 && n < k * d, "d={d} n={n}");
            }
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = Keys::random();
        for p in [0usize, 8, 0x7fff_1234_5670, usize::MAX - 7] {
            assert_eq!(k.decode(k.encode(p)), p);
        }
        assert_ne!(k.encode(0), 0);
    }

    #[test]
    fn any_byte_changed_in_a_link_decodes_far_away() {
        // a link to a block in a 64 KiB page: every one-byte change of the stored word
        // decodes to something outside that page
        for _ in 0..64 {
            let k = Keys::random();
            let page = 0x7f00_0001_0000usize;
            let p = page + 48 * 37;
            let x = k.encode(p);
            for byte in 0..core::mem::size_of::<usize>() {
                for v in 0..=255usize {
                    let y = (x & !(0xff << (8 * byte))) | (v << (8 * byte));
                    if y == x {
                        continue;
                    }
                    let d = k.decode(y);
                    assert!(
                        d.wrapping_sub(page) >= 1 << 16,
                        "byte {byte} = {v:#x} decodes into the page"
                    );
                }
            }
        }
    }
}
