//! Leaving QEMU through `isa-debug-exit` (iobase 0xf4): success is QEMU exit status 33,
//! failure 1. (A triple fault under `-no-reboot` exits 0, so 0 never means success.)

use qemu_exit::QEMUExit;

const EXIT: qemu_exit::X86 = qemu_exit::X86::new(0xf4, 33);

/// Ends the run: QEMU exits with status 33.
pub fn success() -> ! {
    EXIT.exit_success()
}

/// Ends the run: QEMU exits with status 1.
pub fn failure() -> ! {
    EXIT.exit_failure()
}
