//! Load and exit: an ELF constructor reads the options and registers the `fork` handlers;
//! an ELF destructor prints statistics when `show_stats` is on.
//!
//! `malloc` works before the constructor runs (other libraries' constructors may allocate
//! first): nothing here is needed for allocation, only for options.
//!
//! `fork()`: the prepare handler takes the domain's locks (abandoned segments, cache of
//! thread data), so that the child cannot inherit a lock held by a thread that does not
//! exist there; parent and child release them. Registered at load time, our prepare
//! handler runs after those of libraries loaded later (handlers run in reverse order of
//! registration), so their allocations in prepare handlers do not wait for our locks.
//! A `dlopen`ed library pins itself (`RTLD_NODELETE`): `dlclose` must not unmap code
//! that exiting threads (their thread-key destructor) and later frees still run.
//! The thread-key `Once` of the hosted binding is completed here too (by initialising the
//! loading thread), so that no `fork` can catch it half-done.

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::options;
use crate::global::hosted::{self, DOMAIN};

static INITIALISED: AtomicBool = AtomicBool::new(false);
static DONE: AtomicBool = AtomicBool::new(false);

extern "C" fn fork_prepare() {
    DOMAIN.fork_prepare();
}

extern "C" fn fork_parent() {
    // SAFETY: registered with `pthread_atfork` after `fork_prepare`: the forking thread
    // ran `fork_prepare` just before `fork()`.
    unsafe { DOMAIN.fork_parent() };
}

extern "C" fn fork_child() {
    // SAFETY: as for `fork_parent`, in the child, whose only thread forked.
    unsafe { DOMAIN.fork_child() };
}

/// Process initialisation (idempotent): options, fork handlers, the loading thread.
pub(crate) fn init() {
    if INITIALISED.swap(true, Relaxed) {
        return;
    }
    super::stats::record_start();
    options::init_from_env();
    // SAFETY: registering plain `extern "C"` handlers; pthread_atfork does not call malloc
    // in glibc.
    unsafe { ::libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    let _ = hosted::heap_initialized();
    pin_library();
}

/// Makes a `dlopen`ed library stay loaded after `dlclose`: threads that allocated keep a
/// thread-key destructor pointing into our code (and blocks of ours may still be freed),
/// so unmapping the library would crash them. (A no-op when preloaded or linked.)
fn pin_library() {
    static MARKER: u8 = 0;
    // SAFETY: dladdr fills a stack `Dl_info`; dlopen with RTLD_NOLOAD only finds the
    // already-loaded object by the name dladdr gave and marks it NODELETE.
    unsafe {
        let mut info: ::libc::Dl_info = core::mem::zeroed();
        if ::libc::dladdr(
            core::ptr::addr_of!(MARKER) as *const ::libc::c_void,
            &mut info,
        ) == 0
            || info.dli_fname.is_null()
        {
            return;
        }
        let _ = ::libc::dlopen(
            info.dli_fname,
            ::libc::RTLD_NOW | ::libc::RTLD_NOLOAD | ::libc::RTLD_NODELETE,
        );
    }
}

/// Process end: statistics if asked for (idempotent).
pub(crate) fn done() {
    if DONE.swap(true, Relaxed) {
        return;
    }
    if options::enabled(options::SHOW_STATS) {
        super::stats::print(None, core::ptr::null_mut());
    }
}

extern "C" fn on_load() {
    init();
}

extern "C" fn on_unload() {
    done();
}

/// Runs at load time (`dlopen`, `LD_PRELOAD`, or program start when linked).
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = on_load;

/// Runs at exit (or `dlclose`), after the program's `atexit` handlers.
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_unload;
