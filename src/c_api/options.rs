//! Options, with mimalloc v3's `mi_option_t` numbering (v3.4.3), read from the
//! environment at load time (`SHARDALLOC_<NAME>`, else `MIMALLOC_<NAME>`, also under
//! mimalloc's legacy names), and the output and error handlers (`mi_register_output`,
//! `mi_register_error`).
//!
//! Options shardalloc acts on: `show_errors` (also turns on checked `free`, see
//! `check.rs`), `show_stats` (statistics at exit), `verbose`, `purge_delay` (alias
//! `reset_delay`, and mimalloc 2.0's `decommit_delay`: the domain's purge delay in ms; -1
//! never purges), `max_errors`, `max_warnings`, `reserve_os_memory` (an arena at start,
//! `init.rs`), `disallow_os_alloc` (the process's page source asks only its arenas) and
//! `allow_large_os_pages` (alias `large_os_pages`: every new segment advised for
//! transparent huge pages, `Domain::set_large_os_pages`).
//! The others are kept (`mi_option_get` returns what was set) and have no effect: [`has_effect`] says which, and `mi_options_print` shows
//! it; include/README-capi.md says why for each. Beyond mimalloc: `SHARDALLOC_LIMIT` (or
//! `MIMALLOC_LIMIT`), a cap on the memory reserved from the OS, in bytes with an optional
//! `K`/`M`/`G` suffix (`shardalloc_set_limit` in `shardalloc.h`).
//!
//! The environment is read by walking `environ` (no `getenv` copies, no allocation; on
//! Windows, the block of `GetEnvironmentStrings`).

use core::ffi::{c_char, c_int, c_long, c_void};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering::Relaxed};

use super::{write_stderr, LineBuf};
use crate::global::hosted::DOMAIN;

pub(crate) const SHOW_ERRORS: usize = 0;
pub(crate) const SHOW_STATS: usize = 1;
pub(crate) const VERBOSE: usize = 2;
pub(crate) const ALLOW_LARGE_OS_PAGES: usize = 6;
pub(crate) const RESERVE_OS_MEMORY: usize = 9;
pub(crate) const PURGE_DELAY: usize = 15;
pub(crate) const DISALLOW_OS_ALLOC: usize = 17;
pub(crate) const MAX_ERRORS: usize = 19;
pub(crate) const MAX_WARNINGS: usize = 20;
pub(crate) const ARENA_RESERVE: usize = 23;
pub(crate) const MINIMAL_PURGE_SIZE: usize = 44;
pub(crate) const ARENA_MAX_OBJECT_SIZE: usize = 45;
pub(crate) const LAST: usize = 47;

/// mimalloc v3.4.3's option names (index = `mi_option_t` value) and defaults
/// (`src/options.c`; sizes in KiB where [`size_in_kib`] says so).
const OPTIONS: [(&str, i64); LAST] = [
    ("show_errors", 0),
    ("show_stats", 0),
    ("verbose", 0),
    ("deprecated_eager_commit", 1),
    ("arena_eager_commit", 2),
    ("purge_decommits", 1),
    ("allow_large_os_pages", 0),
    ("reserve_huge_os_pages", 0),
    ("reserve_huge_os_pages_at", -1),
    ("reserve_os_memory", 0),
    ("deprecated_segment_cache", 0),
    ("deprecated_page_reset", 0),
    ("deprecated_abandoned_page_purge", 0),
    ("deprecated_segment_reset", 0),
    ("deprecated_eager_commit_delay", 1),
    ("purge_delay", crate::os::DEFAULT_PURGE_DELAY),
    ("use_numa_nodes", 0),
    ("disallow_os_alloc", 0),
    ("os_tag", 100),
    ("max_errors", 32),
    ("max_warnings", 32),
    ("deprecated_max_segment_reclaim", 10),
    ("destroy_on_exit", 0),
    ("arena_reserve", 1024 * 1024),
    ("arena_purge_mult", 1),
    ("deprecated_purge_extend_delay", 1),
    ("disallow_arena_alloc", 0),
    ("retry_on_oom", 400),
    ("visit_abandoned", 0),
    ("guarded_min", 0),
    ("guarded_max", 1 << 30),
    ("guarded_precise", 0),
    ("guarded_sample_rate", 0),
    ("guarded_sample_seed", 0),
    ("generic_collect", 10000),
    ("page_reclaim_on_free", 0),
    ("page_full_retain", 2),
    ("page_max_candidates", 4),
    ("max_vabits", 0),
    ("pagemap_commit", 0),
    ("page_commit_on_demand", 0),
    ("page_max_reclaim", -1),
    ("page_cross_thread_max_reclaim", 32),
    ("allow_thp", 1),
    ("minimal_purge_size", 0),
    ("arena_max_object_size", 2 * 1024 * 1024),
    ("arena_is_numa_local", 0),
];

/// Other names accepted in the environment: (name, option) — mimalloc's legacy names,
/// and mimalloc 2.0's `decommit_delay`.
const ALIASES: [(&str, usize); 8] = [
    ("decommit_delay", PURGE_DELAY),
    ("reset_delay", PURGE_DELAY),
    ("eager_region_commit", 4),
    ("reset_decommits", 5),
    ("large_os_pages", 6),
    ("limit_os_alloc", 17),
    ("decommit_extend_delay", 25),
    ("abandoned_reclaim_on_free", 35),
];

/// Whether option `opt` holds a size in KiB (`mi_option_get_size` multiplies it).
pub(crate) fn size_in_kib(opt: usize) -> bool {
    matches!(
        opt,
        RESERVE_OS_MEMORY | ARENA_RESERVE | MINIMAL_PURGE_SIZE | ARENA_MAX_OBJECT_SIZE
    )
}

/// Whether shardalloc acts on option `opt` (the others are stored and reported only;
/// include/README-capi.md says why for each).
pub(crate) fn has_effect(opt: usize) -> bool {
    matches!(
        opt,
        SHOW_ERRORS
            | SHOW_STATS
            | VERBOSE
            | PURGE_DELAY
            | ALLOW_LARGE_OS_PAGES
            | MAX_ERRORS
            | MAX_WARNINGS
            | RESERVE_OS_MEMORY
            | DISALLOW_OS_ALLOC
    )
}

static VALUES: [AtomicI64; LAST] = {
    let mut v = [const { AtomicI64::new(0) }; LAST];
    let mut i = 0;
    while i < LAST {
        v[i] = AtomicI64::new(OPTIONS[i].1);
        i += 1;
    }
    v
};
/// Set by the environment or `mi_option_set`: `mi_option_set_default` leaves it alone.
static EXPLICIT: [AtomicBool; LAST] = [const { AtomicBool::new(false) }; LAST];

/// Checked `free` (double and invalid frees detected and reported): on with `show_errors`.
pub(crate) static CHECK_FREE: AtomicBool = AtomicBool::new(false);

static ERRORS: AtomicUsize = AtomicUsize::new(0);
static WARNINGS: AtomicUsize = AtomicUsize::new(0);

pub(crate) type OutputFun = unsafe extern "C" fn(msg: *const c_char, arg: *mut c_void);
pub(crate) type ErrorFun = unsafe extern "C" fn(err: c_int, arg: *mut c_void);

static OUTPUT_FUN: AtomicUsize = AtomicUsize::new(0);
static OUTPUT_ARG: AtomicUsize = AtomicUsize::new(0);
static ERROR_FUN: AtomicUsize = AtomicUsize::new(0);
static ERROR_ARG: AtomicUsize = AtomicUsize::new(0);

/// The value of option `opt`; 0 for values outside mimalloc's range.
pub(crate) fn get(opt: usize) -> i64 {
    if opt == PURGE_DELAY {
        return DOMAIN.purge_delay();
    }
    VALUES.get(opt).map_or(0, |v| v.load(Relaxed))
}

pub(crate) fn enabled(opt: usize) -> bool {
    get(opt) != 0
}

/// Sets option `opt` (ignored outside mimalloc's range) and applies it.
pub(crate) fn set(opt: usize, value: i64) {
    if opt >= LAST {
        return;
    }
    VALUES[opt].store(value, Relaxed);
    EXPLICIT[opt].store(true, Relaxed);
    apply(opt);
}

/// Sets option `opt` unless it was set explicitly (environment or `set`).
pub(crate) fn set_default(opt: usize, value: i64) {
    if opt >= LAST || EXPLICIT[opt].load(Relaxed) {
        return;
    }
    VALUES[opt].store(value, Relaxed);
    apply(opt);
}

fn apply(opt: usize) {
    let v = VALUES[opt].load(Relaxed);
    match opt {
        SHOW_ERRORS => {
            CHECK_FREE.store(v != 0, Relaxed);
            // `free`'s fast path learns of checked mode through the segment map alone
            crate::segment_map::set_free_slow(v != 0);
        }
        PURGE_DELAY => DOMAIN.set_purge_delay(if v < 0 { -1 } else { v }),
        DISALLOW_OS_ALLOC => crate::global::hosted::PROCESS_SOURCE.set_os_allowed(v == 0),
        ALLOW_LARGE_OS_PAGES => DOMAIN.set_large_os_pages(v != 0),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// the environment

/// Calls `f(name, value)` for each `NAME=value` entry of the environment.
fn for_each_env(f: impl FnMut(&[u8], &[u8])) {
    super::sys::for_each_env(f)
}

/// Whether `var` is `prefix` followed by `name`, ignoring case.
fn env_name_is(var: &[u8], prefix: &[u8], name: &str) -> bool {
    var.len() == prefix.len() + name.len()
        && var[..prefix.len()].eq_ignore_ascii_case(prefix)
        && var[prefix.len()..].eq_ignore_ascii_case(name.as_bytes())
}

/// Looks up `SHARDALLOC_<name>`, else `MIMALLOC_<name>`, and calls `f` with its value.
fn with_env(name: &str, mut f: impl FnMut(&[u8])) -> bool {
    let mut ours: Option<(*const u8, usize)> = None;
    let mut theirs: Option<(*const u8, usize)> = None;
    for_each_env(|var, value| {
        if env_name_is(var, b"SHARDALLOC_", name) {
            ours = Some((value.as_ptr(), value.len()));
        } else if env_name_is(var, b"MIMALLOC_", name) {
            theirs = Some((value.as_ptr(), value.len()));
        }
    });
    match ours.or(theirs) {
        Some((p, n)) => {
            // SAFETY: the pointer and length came from a live environment string.
            f(unsafe { core::slice::from_raw_parts(p, n) });
            true
        }
        None => false,
    }
}

/// Parses an option value as mimalloc does: `1/true/yes/on`, `0/false/no/off`, or a
/// (possibly negative) number with an optional size suffix (`K`, `M`, `G`, optionally
/// followed by `B` or `iB`), which multiplies by `unit_k` per `K`.
pub(crate) fn parse_value(v: &[u8], unit_k: i64) -> Option<i64> {
    let v = trim(v);
    for t in [&b"1"[..], b"true", b"yes", b"on"] {
        if v.eq_ignore_ascii_case(t) {
            return Some(1);
        }
    }
    for f in [&b"0"[..], b"false", b"no", b"off"] {
        if v.eq_ignore_ascii_case(f) {
            return Some(0);
        }
    }
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        _ => (false, v),
    };
    let n_digits = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if n_digits == 0 {
        return None;
    }
    let mut n: i64 = 0;
    for &c in &digits[..n_digits] {
        n = n.checked_mul(10)?.checked_add((c - b'0') as i64)?;
    }
    let mut suffix = &digits[n_digits..];
    let mult: i64 = match suffix.first().map(|c| c.to_ascii_uppercase()) {
        None => 1,
        Some(b'K') => unit_k,
        Some(b'M') => unit_k.checked_mul(1024)?,
        Some(b'G') => unit_k.checked_mul(1024 * 1024)?,
        Some(_) => return None,
    };
    if mult != 1 {
        suffix = &suffix[1..];
        if suffix.eq_ignore_ascii_case(b"iB") || suffix.eq_ignore_ascii_case(b"B") {
            suffix = &[];
        }
    }
    if !suffix.is_empty() {
        return None;
    }
    let n = n.checked_mul(mult)?;
    Some(if neg { -n } else { n })
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if first.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = v {
        if last.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    v
}

/// Reads every option from the environment (called once, at load time).
pub(crate) fn init_from_env() {
    for (opt, (name, _)) in OPTIONS.iter().enumerate() {
        read_env_option(opt, name);
    }
    for (name, opt) in ALIASES {
        if !EXPLICIT[opt].load(Relaxed) {
            read_env_option(opt, name);
        }
    }
    with_env("ABORT_ON_ERROR", |v| match parse_value(v, 1) {
        Some(n) => crate::secure::set_abort_on_error(n != 0),
        None => warning(format_args!(
            "environment option ABORT_ON_ERROR has an invalid value: {}",
            Bytes(v)
        )),
    });
    with_env("LIMIT", |v| match parse_value(v, 1024) {
        Some(n) if n >= 0 => DOMAIN.set_limit(n as usize),
        _ => warning(format_args!(
            "environment option LIMIT has an invalid value: {}",
            Bytes(v)
        )),
    });
    if enabled(VERBOSE) {
        print_options(None, core::ptr::null_mut());
    }
}

/// `mi_options_print_out`: the version, then every option with its value (`KiB` for
/// sizes), marked when shardalloc does not act on it, then shardalloc's `limit`.
pub(crate) fn print_options(out: Option<OutputFun>, arg: *mut c_void) {
    let v = super::mi::shardalloc_version();
    print_to(
        out,
        arg,
        format_args!(
            "shardalloc: v{}.{}.{} (mimalloc API v3.4.3)\n",
            v / 10000,
            v / 100 % 100,
            v % 100
        ),
    );
    for (opt, (name, _)) in OPTIONS.iter().enumerate() {
        print_to(
            out,
            arg,
            format_args!(
                "shardalloc: option '{}': {}{}{}\n",
                name,
                get(opt),
                if size_in_kib(opt) { " KiB" } else { "" },
                if has_effect(opt) { "" } else { " (no effect)" }
            ),
        );
    }
    print_to(
        out,
        arg,
        format_args!("shardalloc: option 'limit': {}\n", DOMAIN.limit()),
    );
}

fn read_env_option(opt: usize, name: &str) {
    with_env(name, |v| {
        match parse_value(v, if size_in_kib(opt) { 1024 } else { 1 }) {
            // a size option holds KiB: a plain number is bytes, rounded up (as mimalloc)
            Some(n) if size_in_kib(opt) => set(opt, n.max(0).saturating_add(1023) / 1024),
            Some(n) => set(opt, n),
            None => warning(format_args!(
                "environment option {} has an invalid value: {}",
                name,
                Bytes(v)
            )),
        }
    });
}

/// Shows environment bytes as text (lossy).
struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// output

pub(crate) fn register_output(fun: Option<OutputFun>, arg: *mut c_void) {
    OUTPUT_ARG.store(arg as usize, Relaxed);
    OUTPUT_FUN.store(fun.map_or(0, |f| f as usize), Relaxed);
}

/// Whether the program registered an output handler (`mi_register_output`).
#[cfg(unix)]
pub(crate) fn output_registered() -> bool {
    OUTPUT_FUN.load(Relaxed) != 0
}

pub(crate) fn register_error(fun: Option<ErrorFun>, arg: *mut c_void) {
    ERROR_ARG.store(arg as usize, Relaxed);
    ERROR_FUN.store(fun.map_or(0, |f| f as usize), Relaxed);
}

/// Hands a NUL-terminated piece of text to `out` (with `arg`), or to the registered output
/// handler, or to stderr.
pub(crate) fn output_to(out: Option<OutputFun>, arg: *mut c_void, piece: &[u8]) {
    let (fun, arg) = match out {
        Some(f) => (f as usize, arg),
        None => (
            OUTPUT_FUN.load(Relaxed),
            OUTPUT_ARG.load(Relaxed) as *mut c_void,
        ),
    };
    if fun == 0 {
        write_stderr(&piece[..piece.len() - 1]);
    } else {
        // SAFETY: `fun` was registered (or passed) as an `mi_output_fun`; `piece` is
        // NUL-terminated.
        unsafe {
            let f: OutputFun = core::mem::transmute::<usize, OutputFun>(fun);
            f(piece.as_ptr() as *const c_char, arg);
        }
    }
}

/// Writes a formatted message to `out` (see [`output_to`]).
pub(crate) fn print_to(out: Option<OutputFun>, arg: *mut c_void, args: fmt::Arguments<'_>) {
    let mut buf = LineBuf::new(|piece: &[u8]| output_to(out, arg, piece));
    let _ = fmt::write(&mut buf, args);
}

/// A message to the registered output (or stderr), prefixed with "shardalloc: ".
pub(crate) fn message(args: fmt::Arguments<'_>) {
    print_to(
        None,
        core::ptr::null_mut(),
        format_args!("shardalloc: {}", args),
    );
}

/// A warning: shown when `show_errors` or `verbose` is on, at most `max_warnings` times.
pub(crate) fn warning(args: fmt::Arguments<'_>) {
    if !(enabled(SHOW_ERRORS) || enabled(VERBOSE)) {
        return;
    }
    let n = WARNINGS.fetch_add(1, Relaxed) as i64;
    if n < get(MAX_WARNINGS) {
        message(format_args!("warning: {}\n", args));
    }
}

/// An error: shown when `show_errors` or `verbose` is on (at most `max_errors` times), and
/// passed to the registered error handler with its errno-style code.
pub(crate) fn error(err: c_int, args: fmt::Arguments<'_>) {
    if enabled(SHOW_ERRORS) || enabled(VERBOSE) {
        let n = ERRORS.fetch_add(1, Relaxed) as i64;
        if n < get(MAX_ERRORS) {
            message(format_args!("error: {}\n", args));
        }
    }
    let fun = ERROR_FUN.load(Relaxed);
    if fun != 0 {
        // SAFETY: registered as an `mi_error_fun`.
        unsafe {
            let f: ErrorFun = core::mem::transmute::<usize, ErrorFun>(fun);
            f(err, ERROR_ARG.load(Relaxed) as *mut c_void);
        }
    }
}

/// The core's error hook in the C library (installed by `init`): the error as mimalloc
/// reports it (`show_errors`, `mi_register_error`), with mimalloc's error codes.
pub(crate) fn report_error(kind: crate::secure::ErrorKind, addr: usize, size: Option<usize>) {
    use crate::secure::ErrorKind as K;
    let (err, what) = match kind {
        K::DoubleFree => (::libc::EAGAIN, "double free of"),
        K::InvalidFree => (::libc::EINVAL, "invalid free of"),
        K::SizeMismatch => (::libc::EINVAL, "wrong size given to a sized free of"),
        K::CorruptFreeList => (::libc::EFAULT, "corrupted free list at"),
        K::WriteAfterFree => (::libc::EFAULT, "write after free to the block at"),
        K::BufferOverflow => (::libc::EFAULT, "buffer overflow in the block at"),
    };
    let show = |args: fmt::Arguments<'_>| {
        // the secure build shows every error (up to `max_errors`), as it aborts by default
        if cfg!(feature = "secure") && !(enabled(SHOW_ERRORS) || enabled(VERBOSE)) {
            let n = ERRORS.fetch_add(1, Relaxed) as i64;
            if n < get(MAX_ERRORS) {
                message(format_args!("error: {}\n", args));
            }
        }
        error(err, args);
    };
    match size {
        Some(s) => show(format_args!("{what} {addr:#x} (block size {s})")),
        None => show(format_args!("{what} {addr:#x}")),
    }
}

/// `shardalloc_set_abort_on_error(abort)`: whether a detected misuse aborts the process
/// after its report (default: on in the secure build, off otherwise; environment
/// `SHARDALLOC_ABORT_ON_ERROR`). Returns the previous setting.
#[no_mangle]
pub extern "C" fn shardalloc_set_abort_on_error(abort: bool) -> bool {
    let old = crate::secure::abort_on_error();
    crate::secure::set_abort_on_error(abort);
    old
}

// ---------------------------------------------------------------------------------------
// C API

/// `mi_option_t` arrives as a C `int`; negative values are out of range.
fn opt_index(option: c_int) -> usize {
    if option < 0 {
        usize::MAX
    } else {
        option as usize
    }
}

#[no_mangle]
pub extern "C" fn mi_option_is_enabled(option: c_int) -> bool {
    enabled(opt_index(option))
}

#[no_mangle]
pub extern "C" fn mi_option_enable(option: c_int) {
    set(opt_index(option), 1)
}

#[no_mangle]
pub extern "C" fn mi_option_disable(option: c_int) {
    set(opt_index(option), 0)
}

#[no_mangle]
pub extern "C" fn mi_option_set_enabled(option: c_int, enable: bool) {
    set(opt_index(option), enable as i64)
}

#[no_mangle]
pub extern "C" fn mi_option_set_enabled_default(option: c_int, enable: bool) {
    set_default(opt_index(option), enable as i64)
}

#[no_mangle]
pub extern "C" fn mi_option_get(option: c_int) -> c_long {
    get(opt_index(option)) as c_long
}

#[no_mangle]
pub extern "C" fn mi_option_get_clamp(option: c_int, min: c_long, max: c_long) -> c_long {
    let v = get(opt_index(option)) as c_long;
    if v < min {
        min
    } else if v > max {
        max
    } else {
        v
    }
}

// `c_long` is `i64` here but `i32` on other targets
#[allow(clippy::useless_conversion)]
#[no_mangle]
pub extern "C" fn mi_option_set(option: c_int, value: c_long) {
    set(opt_index(option), i64::from(value))
}

// `c_long` is `i64` here but `i32` on other targets
#[allow(clippy::useless_conversion)]
#[no_mangle]
pub extern "C" fn mi_option_set_default(option: c_int, value: c_long) {
    set_default(opt_index(option), i64::from(value))
}

/// The value of a size option in bytes (a KiB option times 1024, saturating); other
/// options as their value, negative ones as 0.
#[no_mangle]
pub extern "C" fn mi_option_get_size(option: c_int) -> usize {
    let opt = opt_index(option);
    let v = get(opt).max(0) as u64;
    let v = if size_in_kib(opt) {
        v.saturating_mul(1024)
    } else {
        v
    };
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[no_mangle]
pub extern "C" fn mi_options_print() {
    print_options(None, core::ptr::null_mut())
}

#[no_mangle]
pub extern "C" fn mi_options_print_out(out: Option<OutputFun>, arg: *mut c_void) {
    print_options(out, arg)
}

#[no_mangle]
pub extern "C" fn mi_register_output(out: Option<OutputFun>, arg: *mut c_void) {
    register_output(out, arg)
}

#[no_mangle]
pub extern "C" fn mi_register_error(fun: Option<ErrorFun>, arg: *mut c_void) {
    register_error(fun, arg)
}

/// `shardalloc.h`: caps the bytes reserved from the OS (0 = no cap).
#[no_mangle]
pub extern "C" fn shardalloc_set_limit(bytes: usize) {
    DOMAIN.set_limit(bytes)
}

/// `shardalloc.h`: the cap on bytes reserved from the OS (0 = none).
#[no_mangle]
pub extern "C" fn shardalloc_limit() -> usize {
    DOMAIN.limit()
}

/// `shardalloc.h`: bytes currently reserved from the OS.
#[no_mangle]
pub extern "C" fn shardalloc_reserved() -> usize {
    DOMAIN.reserved()
}
