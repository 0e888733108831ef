//! Blocks with checkable contents: every byte is a function of the block's tag and offset,
//! so a block that was overwritten, moved wrongly by realloc, or handed out twice is caught.

use core::alloc::Layout;

/// The byte at `offset` of a block tagged `tag`.
#[inline]
pub fn byte(tag: u64, offset: usize) -> u8 {
    (tag as u8) ^ (offset as u8).wrapping_mul(31) ^ ((offset >> 8) as u8)
}

/// Offsets that get written and checked: all of a small block; for larger ones the first
/// and last 256 bytes and one byte in every 512 (so every page is touched).
fn for_each_offset(size: usize, mut f: impl FnMut(usize)) {
    if size <= 2048 {
        (0..size).for_each(f);
        return;
    }
    (0..256).for_each(&mut f);
    (256..size - 256).step_by(512).for_each(&mut f);
    (size - 256..size).for_each(f);
}

/// Fills `[p, p + size)` with the pattern of `tag`.
///
/// # Safety
/// `p` is valid for writes of `size` bytes.
pub unsafe fn fill(p: *mut u8, size: usize, tag: u64) {
    // SAFETY: every offset is < size (caller's guarantee covers them).
    for_each_offset(size, |o| unsafe { p.add(o).write(byte(tag, o)) });
}

/// Checks the first `size` bytes against the pattern of `tag`; panics with details if not.
///
/// # Safety
/// `p` is valid for reads of `size` bytes, written by `fill` with at least `size` bytes.
pub unsafe fn verify(p: *const u8, size: usize, tag: u64, what: &str) {
    for_each_offset(size, |o| {
        // SAFETY: o < size.
        let got = unsafe { p.add(o).read() };
        assert!(
            got == byte(tag, o),
            "{what}: block {p:p} (size {size}, tag {tag:#x}) corrupt at offset {o}: {got:#04x} != {:#04x}",
            byte(tag, o)
        );
    });
}

/// A live block with its layout and tag.
#[derive(Clone, Copy)]
pub struct Block {
    pub ptr: *mut u8,
    pub layout: Layout,
    pub tag: u64,
}
