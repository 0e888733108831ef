//! Statistics for C: `mi_stats_print`, `mi_stats_print_out`, `mi_stats_reset`,
//! `mi_stats_merge`, `mi_process_info`; mimalloc v3's `mimalloc-stats.h` (`mi_stats_t`,
//! JSON) is in `stats_v3.rs`. shardalloc keeps one set of statistics for the
//! process (see `stats.rs`), so thread statistics are the process's; merging adds the
//! block counts that the calling thread has not yet added to them.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::options::{print_to, OutputFun};
use crate::global::hosted::DOMAIN;

/// The program's name (basename of `argv[0]`), without allocating.
fn program_name() -> &'static str {
    super::sys::program_name()
}

/// Prints the statistics table of the calling thread's sub-process (mimalloc v3's
/// `mi_stats_print_out`: the process's unless the thread joined another) to `out` (NULL:
/// the registered output or stderr), headed by the process id and program name (so that
/// the tables of several processes writing to one stream can be told apart).
pub(crate) fn print(out: Option<OutputFun>, arg: *mut c_void) {
    let domain = crate::global::hosted::thread_domain();
    if !core::ptr::eq(domain, &DOMAIN) {
        crate::global::hosted::stats(); // the calling thread's pending figures
    }
    let st = domain.stats();
    let pid = super::sys::pid();
    print_to(
        out,
        arg,
        format_args!(
            "shardalloc statistics (process {pid}, {}):\n",
            program_name()
        ),
    );
    if !core::ptr::eq(domain, &DOMAIN) {
        print_to(
            out,
            arg,
            format_args!("sub-process {:p}, its own figures:\n", domain),
        );
    }
    print_to(out, arg, format_args!("{st}\n"));
    print_process_info(out, arg);
}

/// The process line of the statistics (`mi_process_info_print_out`): times, page
/// faults, resident set, and shardalloc's limit.
pub(crate) fn print_process_info(out: Option<OutputFun>, arg: *mut c_void) {
    let mut info = ProcessInfo::default();
    process_info(&mut info);
    print_to(
        out,
        arg,
        format_args!(
            "{:<12} elapsed: {}.{:03} s, user: {}.{:03} s, system: {}.{:03} s, faults: {}, \
             rss: {} KiB, peak rss: {} KiB, limit: {} B\n",
            "process",
            info.elapsed_ms / 1000,
            info.elapsed_ms % 1000,
            info.user_ms / 1000,
            info.user_ms % 1000,
            info.system_ms / 1000,
            info.system_ms % 1000,
            info.page_faults,
            info.current_rss / 1024,
            info.peak_rss / 1024,
            DOMAIN.limit()
        ),
    );
}

#[no_mangle]
pub extern "C" fn mi_stats_print(_out: *mut c_void) {
    // mimalloc 2.x: `out` is ignored (kept for backward compatibility)
    print(None, core::ptr::null_mut())
}

#[no_mangle]
pub extern "C" fn mi_stats_print_out(out: Option<OutputFun>, arg: *mut c_void) {
    print(out, arg)
}

#[no_mangle]
pub extern "C" fn mi_thread_stats_print_out(out: Option<OutputFun>, arg: *mut c_void) {
    print(out, arg)
}

#[no_mangle]
pub extern "C" fn mi_stats_reset() {
    DOMAIN.reset_stats()
}

/// Adds the calling thread's pending block counts to the process's statistics (a thread
/// gathers up to 256 KiB of them before it does so by itself).
#[no_mangle]
pub extern "C" fn mi_stats_merge() {
    let _ = crate::global::hosted::stats();
}

/// Milliseconds of the monotonic clock at load time.
static START_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    super::sys::now_ms()
}

pub(crate) fn record_start() {
    let _ = START_MS.compare_exchange(0, now_ms(), Relaxed, Relaxed);
}

#[derive(Default)]
pub(crate) struct ProcessInfo {
    pub(crate) elapsed_ms: usize,
    pub(crate) user_ms: usize,
    pub(crate) system_ms: usize,
    pub(crate) current_rss: usize,
    pub(crate) peak_rss: usize,
    pub(crate) current_commit: usize,
    pub(crate) peak_commit: usize,
    pub(crate) page_faults: usize,
}

pub(crate) fn process_info(info: &mut ProcessInfo) {
    let start = START_MS.load(Relaxed);
    info.elapsed_ms = if start == 0 {
        0
    } else {
        now_ms().saturating_sub(start) as usize
    };
    let t = super::sys::process_times();
    info.user_ms = t.user_ms;
    info.system_ms = t.system_ms;
    info.peak_rss = t.peak_rss;
    info.page_faults = t.page_faults;
    info.current_rss = t.current_rss;
    let st = DOMAIN.stats();
    info.current_commit = st.committed.current.max(0) as usize;
    info.peak_commit = st.committed.peak.max(0) as usize;
}

#[no_mangle]
pub unsafe extern "C" fn mi_process_info(
    elapsed_msecs: *mut usize,
    user_msecs: *mut usize,
    system_msecs: *mut usize,
    current_rss: *mut usize,
    peak_rss: *mut usize,
    current_commit: *mut usize,
    peak_commit: *mut usize,
    page_faults: *mut usize,
) {
    let mut info = ProcessInfo::default();
    process_info(&mut info);
    for (out, v) in [
        (elapsed_msecs, info.elapsed_ms),
        (user_msecs, info.user_ms),
        (system_msecs, info.system_ms),
        (current_rss, info.current_rss),
        (peak_rss, info.peak_rss),
        (current_commit, info.current_commit),
        (peak_commit, info.peak_commit),
        (page_faults, info.page_faults),
    ] {
        if !out.is_null() {
            // SAFETY: `out` is non-null (checked above), so it points to a writable `size_t`:
            // the C caller's contract for `mi_process_info`.
            unsafe { *out = v };
        }
    }
}
