//! Debug mode's reports in the C library (features `override,debug-mode`): a report of
//! `crate::debug_mode` (heap overflow, double, interior or invalid free) becomes a mimalloc
//! error: a message ("shardalloc: error: buffer overflow in heap block 0x... of size 13:
//! write after 13 bytes"), always shown in this build (as mimalloc's debug build shows
//! its errors), and a call of the `mi_register_error` handler with mimalloc's codes
//! (`EFAULT` for an overflow, `EAGAIN` for a double free, `EINVAL` for an invalid free).

use crate::debug_mode::{self, Report, ReportKind};

use super::options::{enabled, error, message, SHOW_ERRORS, VERBOSE};

/// Routes debug mode's reports to the C library's error handling (at load).
pub(crate) fn install() {
    debug_mode::set_report_hook(Some(c_report));
}

fn c_report(r: &Report) {
    let err = match r.kind {
        ReportKind::BufferOverflow => ::libc::EFAULT,
        ReportKind::DoubleFree => ::libc::EAGAIN,
        ReportKind::InvalidFree | ReportKind::InteriorFree => ::libc::EINVAL,
    };
    // `error` shows the message when `show_errors` (or `verbose`) is on; debug mode shows
    // it in any case.
    if !(enabled(SHOW_ERRORS) || enabled(VERBOSE)) {
        message(format_args!("error: {r}\n"));
    }
    error(err, format_args!("{r}"));
}
