//! Statistics for C: `mi_stats_print`, `mi_stats_print_out`, `mi_stats_reset`,
//! `mi_stats_merge`, `mi_process_info`. shardalloc keeps one set of statistics for the
//! process (see `stats.rs`), so thread statistics are the process's; merging adds the
//! block counts that the calling thread has not yet added to them.

use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::options::{print_to, OutputFun};
use crate::global::hosted::DOMAIN;

extern "C" {
    /// glibc's (and musl's) basename of `argv[0]`.
    static program_invocation_short_name: *const c_char;
}

/// The program's name (basename of `argv[0]`), without allocating.
fn program_name() -> &'static str {
    // SAFETY: set by libc before any constructor runs, to null or a NUL-terminated string
    // that lives as long as the process.
    let name = unsafe { program_invocation_short_name };
    if name.is_null() {
        return "?";
    }
    // SAFETY: non-null, so a NUL-terminated string living as long as the process.
    unsafe { core::ffi::CStr::from_ptr(name) }
        .to_str()
        .unwrap_or("?")
}

/// Prints the statistics table to `out` (NULL: the registered output or stderr), headed
/// by the process id and program name (so that the tables of several processes writing
/// to one stream can be told apart).
pub(crate) fn print(out: Option<OutputFun>, arg: *mut c_void) {
    let st = DOMAIN.stats();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { ::libc::getpid() };
    print_to(
        out,
        arg,
        format_args!(
            "shardalloc statistics (process {pid}, {}):\n{}\n",
            program_name(),
            st
        ),
    );
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
    let mut ts = ::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { ::libc::clock_gettime(::libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub(crate) fn record_start() {
    let _ = START_MS.compare_exchange(0, now_ms(), Relaxed, Relaxed);
}

#[derive(Default)]
struct ProcessInfo {
    elapsed_ms: usize,
    user_ms: usize,
    system_ms: usize,
    current_rss: usize,
    peak_rss: usize,
    current_commit: usize,
    peak_commit: usize,
    page_faults: usize,
}

fn process_info(info: &mut ProcessInfo) {
    let start = START_MS.load(Relaxed);
    info.elapsed_ms = if start == 0 {
        0
    } else {
        now_ms().saturating_sub(start) as usize
    };
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: ::libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { ::libc::getrusage(::libc::RUSAGE_SELF, &mut ru) } == 0 {
        let ms = |tv: ::libc::timeval| tv.tv_sec as usize * 1000 + tv.tv_usec as usize / 1000;
        info.user_ms = ms(ru.ru_utime);
        info.system_ms = ms(ru.ru_stime);
        info.peak_rss = ru.ru_maxrss as usize * 1024;
        info.page_faults = ru.ru_majflt as usize;
    }
    info.current_rss = current_rss().unwrap_or(info.peak_rss);
    let st = DOMAIN.stats();
    info.current_commit = st.committed.current.max(0) as usize;
    info.peak_commit = st.committed.peak.max(0) as usize;
}

/// Resident bytes, from `/proc/self/statm` (second field, in pages), read into a stack
/// buffer.
fn current_rss() -> Option<usize> {
    let mut buf = [0u8; 128];
    // SAFETY: open/read/close with a NUL-terminated path and a stack buffer.
    let n = unsafe {
        let fd = ::libc::open(
            c"/proc/self/statm".as_ptr(),
            ::libc::O_RDONLY | ::libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = ::libc::read(fd, buf.as_mut_ptr() as *mut c_void, buf.len());
        ::libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    let text = &buf[..n as usize];
    let field = text.split(|&c| c == b' ').nth(1)?;
    let mut pages = 0usize;
    for &c in field {
        if !c.is_ascii_digit() {
            break;
        }
        pages = pages * 10 + (c - b'0') as usize;
    }
    Some(pages * super::semantics::os_page_size())
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
