//! The C library (feature `override`, built as `libshardalloc.so`): replaces `malloc` and
//! friends (also when loaded with `LD_PRELOAD`), C++ `operator new`/`delete`, and speaks
//! mimalloc's `mi_*` API (see `include/mimalloc.h`).
//!
//! Layout, as snmalloc's `override/` over `global/libc.h`:
//! - [`semantics`]: the semantics, in one place — `errno`, overflow checks, `realloc(p, 0)`,
//!   alignment rules, checked `free`;
//! - [`exports`]: the libc/glibc/C++ symbols, each a short forward into `semantics`;
//! - [`mi`], [`heaps`]: mimalloc's API; [`v3`], [`arenas`], [`stats_v3`]: what mimalloc
//!   v3 added (the `mi_u*` functions, heap queries, theaps, arenas, `mimalloc-stats.h`);
//!   [`subproc`]: sub-processes, each a domain of its own;
//! - [`options`]: options from the environment (`SHARDALLOC_*`, `MIMALLOC_*`), output and
//!   error handlers;
//! - [`stats`]: `mi_stats_print` and friends;
//! - [`init`]: the load-time constructor (options, `pthread_atfork`) and exit-time report.
//!
//! Rules for everything here: no panic may cross `extern "C"` (the profiles abort on
//! panic, and nothing here calls code that can panic on its input); nothing here allocates
//! through the Rust allocator (that would re-enter `malloc`); output goes through
//! `write(2)` from stack buffers.

mod arenas;
mod check;
#[cfg(feature = "debug-mode")]
mod debug_report;
// the libc/glibc/C++ symbols: on Windows the C runtime keeps its own `malloc`
#[cfg(unix)]
mod exports;
mod heaps;
mod init;
mod mi;
mod new_handler;
mod options;
mod semantics;
mod stats;
mod stats_v3;
mod subproc;
mod sys;
mod v3;

use core::fmt;

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(e: i32) {
    sys::set_errno(e)
}

/// A fixed buffer that collects formatted text and hands it out in NUL-terminated pieces,
/// so that messages can be built without allocating.
pub(crate) struct LineBuf<F: FnMut(&[u8])> {
    buf: [u8; 256],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> LineBuf<F> {
    /// `sink` receives each piece, NUL-terminated (the NUL is included in the slice).
    pub(crate) fn new(sink: F) -> Self {
        LineBuf {
            buf: [0; 256],
            len: 0,
            sink,
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.len > 0 {
            self.buf[self.len] = 0;
            (self.sink)(&self.buf[..=self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> fmt::Write for LineBuf<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() - 1 {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl<F: FnMut(&[u8])> Drop for LineBuf<F> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes bytes to stderr, retrying short writes; errors are ignored.
pub(crate) fn write_stderr(bytes: &[u8]) {
    sys::write_fd(2, bytes)
}

/// Prints a message to stderr (never through the registered output handler) and aborts.
/// For situations where no C caller can be given an error (C++ `new`).
#[cold]
pub(crate) fn fatal(args: fmt::Arguments<'_>) -> ! {
    {
        let mut out = LineBuf::new(|s: &[u8]| write_stderr(&s[..s.len() - 1]));
        let _ = fmt::write(&mut out, format_args!("shardalloc: fatal: {}\n", args));
    }
    sys::abort()
}
