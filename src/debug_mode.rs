//! Debug mode (cargo feature `debug-mode`), as mimalloc's debug build (`MI_DEBUG >= 2`
//! with `MI_PADDING`):
//!
//! - fresh blocks are filled with [`UNINIT`] (0xD0, mimalloc's `MI_DEBUG_UNINIT`) unless
//!   zeroed memory was asked for, and freed blocks with [`FREED`] (0xDF, `MI_DEBUG_FREED`;
//!   the first word then holds the free-list link). Huge blocks (a segment of their own) are
//!   not filled, as in mimalloc, so that their memory is not all touched;
//! - every block ends in a padding of [`PADDING_SIZE`] bytes (mimalloc's `mi_padding_t`): a
//!   canary derived from the block's address, and the distance `delta` from the requested
//!   end of the block to the padding. Up to 16 bytes between the requested end and the
//!   padding are filled with [`PADDING_FILL`] (0xDE, `MI_DEBUG_PADDING`). `free` checks both:
//!   a heap overflow is reported with the pointer and the requested size;
//! - `usable_size` is the requested size (as mimalloc's debug build reports it);
//! - `free` reports what it can tell is wrong, and then ignores the free: a pointer that is
//!   not in a page in use of ours, a pointer inside a block (in a page without aligned
//!   blocks), a block that is free already (its contents are still the freed fill and its
//!   canary is gone);
//! - the core's invariant checks (`debug_assert!`, the page, segment and heap checks) run
//!   in this build even when it is optimised without debug assertions (see `lib.rs`).
//!
//! With the feature off none of this is compiled: the allocation and free paths carry
//! `#[cfg(feature = "debug-mode")]` hooks into this module, and the size lookups add
//! [`PADDING_SIZE`], which is 0 then.
//!
//! Reports go through [`report`] to the core's one error hook: the handler of
//! [`crate::secure::set_error_handler`] gets every report of debug mode too (as an
//! [`crate::secure::ErrorKind`], with the requested size), counted in
//! [`crate::secure::error_count`] and followed by an abort in abort mode
//! ([`crate::secure::set_abort_on_error`]). [`set_report_hook`] installs a hook of debug
//! mode's own, with the report's detail ([`Report`]), which then takes the handler's place
//! for these reports (the C library's mimalloc-style messages use it). Without either,
//! hosted builds write the detailed line to stderr.

use core::fmt::{self, Write};
use core::ptr;

use crate::page::{Page, FLAG_HAS_ALIGNED};
use crate::segment::{checked_page, ptr_segment, NotInBlocks, SegmentKind};
use crate::size_class::PADDING_SIZE;
use crate::sync::{AtomicUsize, Ordering};

/// Fill of a fresh (not zeroed) block: mimalloc's `MI_DEBUG_UNINIT`.
pub const UNINIT: u8 = 0xD0;
/// Fill of a freed block (after its first word): mimalloc's `MI_DEBUG_FREED`.
pub const FREED: u8 = 0xDF;
/// Fill of the bytes between the requested end of a block and its padding (at most
/// [`PADDING_CHECKED`] of them): mimalloc's `MI_DEBUG_PADDING`.
pub const PADDING_FILL: u8 = 0xDE;
/// How many bytes after the requested end are filled with [`PADDING_FILL`] and checked
/// (mimalloc's: `MI_MAX_ALIGN_SIZE`).
pub const PADDING_CHECKED: usize = 16;

const _: () = assert!(
    PADDING_SIZE == 8,
    "debug mode's padding is a u32 canary and a u32 delta"
);

/// What a report is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReportKind {
    /// A write past the requested end of a block, found at its free (the padding's canary
    /// or fill bytes were overwritten).
    BufferOverflow,
    /// A block freed twice: it still holds the freed fill and has no padding.
    DoubleFree,
    /// `free` of a pointer that is not a block of ours (not in a page in use of ours).
    InvalidFree,
    /// `free` of a pointer inside a block, not at its start.
    InteriorFree,
}

/// One report of debug mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Report {
    /// What was found.
    pub kind: ReportKind,
    /// The pointer given to `free`.
    pub addr: usize,
    /// For [`ReportKind::BufferOverflow`]: the size that was asked for when the block was
    /// allocated (or last reallocated); the block's size otherwise (0 when unknown).
    pub size: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.addr as *const u8;
        match self.kind {
            ReportKind::BufferOverflow => write!(
                f,
                "buffer overflow in heap block {a:p} of size {}: write after {} bytes",
                self.size, self.size
            ),
            ReportKind::DoubleFree => {
                write!(f, "double free of {a:p} (block of {} bytes)", self.size)
            }
            ReportKind::InvalidFree => write!(f, "invalid free of {a:p} (not a block of ours)"),
            ReportKind::InteriorFree => write!(
                f,
                "invalid free of {a:p} (inside a block of {} bytes, not at its start)",
                self.size
            ),
        }
    }
}

/// A report hook: called for every report, from the thread that found it, inside the
/// allocator. It must not allocate through the allocator that reports (an `extern "C"`
/// callback, a write to a file descriptor, an atomic counter are fine).
pub type ReportHook = fn(&Report);

static HOOK: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook` for every later report of debug mode, in place of the core's error
/// handler (`None`: back to [`crate::secure::set_error_handler`]'s, or, when none is
/// installed, a line on stderr in hosted builds, nothing elsewhere).
pub fn set_report_hook(hook: Option<ReportHook>) {
    HOOK.store(hook.map_or(0, |h| h as usize), Ordering::Release);
}

/// How many reports debug mode has made so far (in this process).
pub fn report_count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Reports a misuse found by debug mode: counts it, then calls debug mode's report hook,
/// or the core's error handler, or writes a line to stderr (hosted builds) when there is
/// neither; then aborts in abort mode. Never allocates.
#[cold]
#[inline(never)]
pub(crate) fn report(kind: ReportKind, addr: usize, size: usize) {
    let r = Report { kind, addr, size };
    COUNT.fetch_add(1, Ordering::Relaxed);
    let core_kind = match kind {
        ReportKind::BufferOverflow => crate::secure::ErrorKind::BufferOverflow,
        ReportKind::DoubleFree => crate::secure::ErrorKind::DoubleFree,
        ReportKind::InvalidFree | ReportKind::InteriorFree => crate::secure::ErrorKind::InvalidFree,
    };
    let hook = HOOK.load(Ordering::Acquire);
    if hook == 0 && crate::secure::handler_installed() {
        // the one hook: counts, calls the handler, aborts in abort mode
        return crate::secure::report(core_kind, addr, Some(size));
    }
    crate::secure::count_error();
    if hook != 0 {
        // SAFETY: `HOOK` holds 0 or a `ReportHook` stored by `set_report_hook`.
        let hook = unsafe { core::mem::transmute::<usize, ReportHook>(hook) };
        hook(&r);
    } else {
        let mut line = Line {
            buf: [0; 200],
            len: 0,
        };
        let _ = writeln!(line, "shardalloc: error: {r}");
        line.emit();
    }
    crate::secure::abort_if_set(core_kind, addr);
}

/// A line formatted on the stack (a report must not allocate).
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Line {
    fn emit(&self) {
        #[cfg(all(feature = "std", unix))]
        // SAFETY: writes `len` initialised bytes of our buffer to stderr.
        unsafe {
            libc::write(2, self.buf.as_ptr().cast(), self.len);
        }
        #[cfg(all(feature = "std", not(unix)))]
        {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(&self.buf[..self.len]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// padding

/// The padding's canary for the block at `block`: its address, mixed, so that a padding
/// copied from elsewhere (or a fill pattern) does not pass.
#[inline]
fn canary(block: usize) -> u32 {
    let x = (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 29) as u32) ^ 0xC0DE_D0D0
}

/// The usable bytes of every block of `page` (up to its padding).
#[inline]
fn usable_block(page: &Page) -> usize {
    page.block_size - PADDING_SIZE
}

/// Whether `page` is a huge page (a segment of its own), whose block is not filled.
fn is_huge(page: &Page) -> bool {
    // SAFETY: the page is in use (callers), so its segment is live and its header readable.
    unsafe { (*ptr_segment(page.page_start())).kind == SegmentKind::Huge }
}

/// Writes the padding of `block` (of `page`) for a requested end `end` bytes from the
/// block's start, and fills up to [`PADDING_CHECKED`] bytes from there to the padding.
///
/// # Safety
/// `block` is a block of `page` that the caller may write; `end <= usable_block(page)`.
unsafe fn write_padding(page: &Page, block: *mut u8, end: usize) {
    let usable = usable_block(page);
    debug_assert!(end <= usable, "request larger than its block");
    let delta = usable - end;
    // SAFETY: `end + min(delta, 16) <= usable` and the padding's 8 bytes at `usable` are
    // the block's last ones: all inside the block, which the caller may write.
    unsafe {
        ptr::write_bytes(block.add(end), PADDING_FILL, delta.min(PADDING_CHECKED));
        let pad = block.add(usable);
        ptr::write_unaligned(pad as *mut u32, canary(block as usize));
        ptr::write_unaligned(pad.add(4) as *mut u32, delta as u32);
    }
}

/// The requested end of `block` (bytes from its start) when its padding is intact: canary,
/// a delta that fits, and the fill bytes after the requested end. `Err(end)` with the end
/// the padding claims (or the usable size when even that is unreadable) when it is not.
///
/// # Safety
/// `block` is a block of `page` (not necessarily live: the caller checks a free).
unsafe fn read_padding(page: &Page, block: *const u8) -> Result<usize, usize> {
    let usable = usable_block(page);
    // SAFETY: the padding lies in the block's last 8 bytes, inside the page's memory.
    let (c, delta) = unsafe {
        let pad = block.add(usable);
        (
            ptr::read_unaligned(pad as *const u32),
            ptr::read_unaligned(pad.add(4) as *const u32) as usize,
        )
    };
    if c != canary(block as usize) || delta > usable {
        return Err(usable);
    }
    let end = usable - delta;
    // SAFETY: `end .. end + min(delta, 16)` lies before the padding, inside the block.
    let fill = unsafe { core::slice::from_raw_parts(block.add(end), delta.min(PADDING_CHECKED)) };
    if fill.iter().any(|&b| b != PADDING_FILL) {
        return Err(end);
    }
    Ok(end)
}

// ---------------------------------------------------------------------------------------
// hooks

/// Allocation hook: `block` of `page` was just popped for a request of `size` bytes
/// (`zero`: those bytes are zero already). Fills the rest (all of it when not zeroed) with
/// [`UNINIT`] and writes the padding.
///
/// # Safety
/// `block` is a block of `page` just handed out by its owner, holding `size + PADDING_SIZE`
/// bytes.
#[inline(never)]
pub(crate) unsafe fn on_alloc(page: *mut Page, block: *mut u8, size: usize, zero: bool) {
    // SAFETY: the page of a block just popped by its owner is live (caller).
    let page = unsafe { &*page };
    if !is_huge(page) {
        let from = if zero { size } else { 0 };
        let usable = usable_block(page);
        // SAFETY: `from <= size <= usable`: inside the block, which is ours (caller).
        unsafe { ptr::write_bytes(block.add(from), UNINIT, usable - from) };
    }
    // SAFETY: as above; `size <= usable` (the block holds the request and its padding).
    unsafe { write_padding(page, block, size) };
}

/// Sets the requested size of the live block (or aligned pointer into one) `p` to `size`
/// bytes from `p`: after aligned allocation (the block was allocated larger, `p` placed
/// inside it), an in-place `realloc`, a huge block remapped to a new size.
///
/// # Safety
/// `p` is a live block of ours (or a pointer into one) that the caller owns, and
/// `p + size` lies within the block's usable bytes.
pub(crate) unsafe fn set_requested(p: *mut u8, size: usize) {
    // SAFETY: `p` is live (caller): its segment and page are.
    let page = unsafe { &*(*ptr_segment(p)).page_of(p) };
    let block = page.block_of(p) as *mut u8;
    let off = p as usize - block as usize;
    // SAFETY: the block is the caller's; `off + size` is within its usable bytes (caller).
    unsafe { write_padding(page, block, off + size) };
}

/// `usable_size` in debug mode: the requested size from `p` (the whole usable part of the
/// block when its padding is damaged; `free` reports that).
///
/// # Safety
/// `p` is a live block of `page` (or a pointer into one).
pub(crate) unsafe fn usable_size(page: &Page, p: *const u8) -> usize {
    let block = page.block_of(p as *mut u8) as *const u8;
    let off = p as usize - block as usize;
    // SAFETY: `block` is a live block of `page` (caller).
    let end = unsafe { read_padding(page, block) }.unwrap_or_else(|e| e);
    end.saturating_sub(off)
}

/// Free hook: checks the pointer and the block's padding, reports what is wrong, and fills
/// the block with [`FREED`]. Returns false when the free must not go on (the pointer is not
/// a live block: reported); true after a reported overflow too (the block is still one of
/// ours, freed as mimalloc does).
///
/// # Safety
/// `p` is any pointer a caller gave to `free` (hosted builds check it against the segment
/// map; elsewhere it must point into mapped memory); if it passes, it is given up.
#[inline(never)]
pub(crate) unsafe fn on_free(p: *mut u8) -> bool {
    let page = match checked_page(p) {
        Ok(page) => page,
        Err(NotInBlocks::PageNotInUse) => {
            // a block of a page already freed: the usual trace of a double free
            report(ReportKind::DoubleFree, p as usize, 0);
            return false;
        }
        Err(_) => {
            report(ReportKind::InvalidFree, p as usize, 0);
            return false;
        }
    };
    // SAFETY: `checked_page` found a page in use whose handed-out blocks contain `p`.
    let page = unsafe { &*page };
    let start = page.page_start() as usize;
    let offset = (p as usize - start) % page.block_size;
    if offset != 0 && page.flags & FLAG_HAS_ALIGNED == 0 {
        report(ReportKind::InteriorFree, p as usize, usable_block(page));
        return false;
    }
    let block = (p as usize - offset) as *mut u8;
    // SAFETY: `block` is a block of `page` (inside its handed-out blocks, at a multiple of
    // the block size).
    match unsafe { read_padding(page, block) } {
        Ok(_) => {}
        Err(end) => {
            // SAFETY: as above: the block's bytes after its first word are readable.
            if unsafe { looks_freed(page, block) } {
                report(ReportKind::DoubleFree, p as usize, usable_block(page));
                return false;
            }
            report(
                ReportKind::BufferOverflow,
                p as usize,
                end.saturating_sub(offset),
            );
        }
    }
    if !is_huge(page) {
        // SAFETY: the block is given up by the caller: ours to fill (its first word is
        // written with the free-list link after this).
        unsafe { ptr::write_bytes(block, FREED, page.block_size) };
    }
    true
}

/// Whether the block reads as freed: [`FREED`] from its second word to its end (where the
/// padding was).
///
/// # Safety
/// `block` is a block of `page`.
unsafe fn looks_freed(page: &Page, block: *const u8) -> bool {
    let word = core::mem::size_of::<usize>();
    if is_huge(page) || page.block_size <= word {
        return false;
    }
    // SAFETY: the block's bytes lie in the page's memory (caller).
    let rest = unsafe { core::slice::from_raw_parts(block.add(word), page.block_size - word) };
    // a word at a time (blocks are word-aligned: the ends are empty but for odd sizes)
    // SAFETY: any bytes are valid `usize`s.
    let (head, words, tail) = unsafe { rest.align_to::<usize>() };
    let freed = usize::from_ne_bytes([FREED; core::mem::size_of::<usize>()]);
    head.iter().chain(tail).all(|&b| b == FREED) && words.iter().all(|&w| w == freed)
}
