//! COM1 (port 0x3f8), 115200 8N1, and the `println!` the kernel prints with.
//!
//! Printing never allocates: it formats straight into the UART. A spin lock keeps lines
//! from different CPUs apart; it is taken with interrupts off, so an interrupt handler on
//! the same CPU can never find it held. Fault and panic reports use [`force_writer`], which
//! does not take the lock (the faulting code may hold it).

use core::fmt::{self, Write};
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// A writer to COM1. Zero-sized: the state is the UART itself.
pub struct Com1;

impl Com1 {
    fn write_byte(&mut self, byte: u8) {
        let mut lsr: Port<u8> = Port::new(COM1 + 5);
        let mut thr: Port<u8> = Port::new(COM1);
        // SAFETY: COM1's registers are I/O ports that only this module touches; reading the
        // line status and writing the transmit register have no other side effects.
        unsafe {
            while lsr.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            thr.write(byte);
        }
    }
}

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Programs the UART: 115200 baud, 8N1, FIFOs on, its interrupts off.
pub fn init() {
    let regs: [(u16, u8); 7] = [
        (1, 0x00), // no UART interrupts
        (3, 0x80), // DLAB on
        (0, 0x01), // divisor 1 = 115200 baud
        (1, 0x00),
        (3, 0x03), // 8 bits, no parity, one stop bit, DLAB off
        (2, 0xC7), // FIFOs on, cleared, 14-byte threshold
        (4, 0x03), // DTR | RTS
    ];
    for (off, val) in regs {
        // SAFETY: the standard 16550 initialisation sequence on COM1's own ports.
        unsafe { Port::<u8>::new(COM1 + off).write(val) };
    }
}

/// Prints under the lock, with interrupts off on this CPU while it is held.
pub fn print(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _guard = LOCK.lock();
        let _ = Com1.write_fmt(args);
    });
}

/// A writer that ignores the lock, for fault and panic reports.
pub fn force_writer() -> Com1 {
    Com1
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::serial::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($arg)*))) };
}
