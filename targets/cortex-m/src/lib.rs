//! What the firmware and the bench share: the exit path (semihosting), a panic handler
//! and a HardFault handler that print `FAIL: ...` and exit with failure, a seeded PRNG.
#![no_std]

use core::fmt::Write;
use core::panic::PanicInfo;

use cortex_m_semihosting::debug;
pub use cortex_m_semihosting::{hprint, hprintln};

/// The board this build is for (from build.rs).
pub const BOARD: &str = if cfg!(board = "microbit") {
    "microbit"
} else if cfg!(board = "mps2-an385") {
    "mps2-an385"
} else {
    "lm3s6965evb"
};

/// Ends the QEMU run with success (QEMU exits 0).
pub fn exit_ok() -> ! {
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Prints `FAIL: <reason>` and ends the QEMU run with failure (QEMU exits 1).
pub fn fail(args: core::fmt::Arguments) -> ! {
    cortex_m::interrupt::disable();
    hprintln!("FAIL: {}", args);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// `check!(cond, "fmt", args...)`: on a false condition, `FAIL: ...` and exit failure.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::fail(format_args!($($arg)+));
        }
    };
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    cortex_m::interrupt::disable();
    // hprintln! cannot be nested in a failing formatter; write what we can.
    if let Ok(mut out) = cortex_m_semihosting::hio::hstdout() {
        let _ = writeln!(out, "FAIL: panic: {info}");
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[cortex_m_rt::exception]
unsafe fn HardFault(ef: &cortex_m_rt::ExceptionFrame) -> ! {
    fail(format_args!(
        "HardFault at pc={:#010x} lr={:#010x}",
        ef.pc(),
        ef.lr()
    ))
}

/// xorshift32: a small, seeded, deterministic generator.
#[derive(Clone)]
pub struct Rng(u32);

impl Rng {
    pub const fn new(seed: u32) -> Self {
        Rng(if seed == 0 { 0x9e37_79b9 } else { seed })
    }
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.next_u32() % (hi - lo + 1)
    }
}

/// Highest stack address in use (the stack grows down from the end of RAM): fills the
/// unused stack below the current frame with a pattern, so that `stack_used` can later
/// tell how deep it went.
pub mod stack {
    extern "C" {
        static _stack_start: u32;
        static mut __ebss: u32;
    }
    const PAINT: u32 = 0xdead_c0de;

    /// Paints from the end of .bss up to a margin below the current stack pointer.
    pub fn paint() {
        unsafe {
            let lo = core::ptr::addr_of_mut!(__ebss) as usize;
            let sp = cortex_m::register::msp::read() as usize;
            let mut p = (lo + 3) & !3;
            while p + 256 < sp {
                core::ptr::write_volatile(p as *mut u32, PAINT);
                p += 4;
            }
        }
    }

    /// Bytes of stack used since `paint` (deepest point), and bytes between .bss and the top.
    pub fn used() -> (usize, usize) {
        unsafe {
            let lo = (core::ptr::addr_of_mut!(__ebss) as usize + 3) & !3;
            let top = core::ptr::addr_of!(_stack_start) as usize;
            let mut p = lo;
            while p < top && core::ptr::read_volatile(p as *const u32) == PAINT {
                p += 4;
            }
            (top - p, top - lo)
        }
    }
}
