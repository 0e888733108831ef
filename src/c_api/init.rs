//! Load and exit: an ELF constructor (unix) or `DllMain` (Windows) reads the options and
//! registers the `fork` handlers (unix); an ELF destructor or `DllMain` prints statistics
//! when `show_stats` is on.
//!
//! `malloc` works before the constructor runs (other libraries' constructors may allocate
//! first): nothing here is needed for allocation, only for options.
//!
//! `fork()`: the prepare handler takes the domain's locks (abandoned segments, cache of
//! thread data), so that the child cannot inherit a lock held by a thread that does not
//! exist there; parent and child release them. Registered at load time, our prepare
//! handler runs after those of libraries loaded later (handlers run in reverse order of
//! registration), so their allocations in prepare handlers do not wait for our locks.
//! A `dlopen`ed library pins itself (`RTLD_NODELETE`; on Windows `GetModuleHandleEx` with
//! `PIN`): `dlclose`/`FreeLibrary` must not unmap code that exiting threads (their
//! thread-key destructor or fiber-local-storage callback) and later frees still run.
//! The thread-key `Once` of the hosted binding is completed here too (by initialising the
//! loading thread), so that no `fork` can catch it half-done.

#[cfg(unix)]
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
#[cfg(unix)]
use core::sync::atomic::{AtomicI32, AtomicU64};

use super::options;
use crate::global::hosted;
#[cfg(unix)]
use crate::global::hosted::DOMAIN;

static INITIALISED: AtomicBool = AtomicBool::new(false);
static DONE: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn fork_prepare() {
    DOMAIN.fork_prepare();
}

#[cfg(unix)]
extern "C" fn fork_parent() {
    // SAFETY: registered with `pthread_atfork` after `fork_prepare`: the forking thread
    // ran `fork_prepare` just before `fork()`.
    unsafe { DOMAIN.fork_parent() };
}

#[cfg(unix)]
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
    crate::secure::set_error_handler(Some(options::report_error));
    options::init_from_env();
    #[cfg(feature = "debug-mode")]
    super::debug_report::install();
    #[cfg(unix)]
    {
        if options::enabled(options::SHOW_STATS) {
            save_stderr();
        }
        // SAFETY: registering plain `extern "C"` handlers; pthread_atfork does not call
        // malloc in glibc.
        unsafe { ::libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    }
    reserve_at_start();
    let _ = hosted::heap_initialized();
    pin_library();
}

/// `reserve_os_memory` (`MIMALLOC_RESERVE_OS_MEMORY`): an arena reserved at start, which
/// `malloc` draws from before asking the OS (as mimalloc: committed, large OS pages
/// allowed, not exclusive). Its size is rounded up to the smallest arena.
fn reserve_at_start() {
    let kib = options::get(options::RESERVE_OS_MEMORY);
    if kib <= 0 {
        return;
    }
    let size = (kib as usize)
        .saturating_mul(1024)
        .max(super::arenas::mi_arena_min_size());
    // SAFETY: a null arena-id pointer is allowed.
    let err = unsafe { super::arenas::mi_reserve_os_memory(size, true, true) };
    if err != 0 {
        options::warning(format_args!(
            "could not reserve {size} bytes at start (option 'reserve_os_memory'): error {err}"
        ));
    }
}

/// Makes a `dlopen`ed library stay loaded after `dlclose`: threads that allocated keep a
/// thread-key destructor pointing into our code (and blocks of ours may still be freed),
/// so unmapping the library would crash them. (A no-op when preloaded or linked.)
#[cfg(unix)]
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

/// With `show_stats`: a close-on-exec copy of stderr taken at load time, and the device
/// and inode it refers to. Programs may close stderr before the statistics are printed at
/// exit (GNU coreutils do, in an `atexit` handler); the statistics then go to this copy.
#[cfg(unix)]
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
#[cfg(unix)]
static SAVED_DEV: AtomicU64 = AtomicU64::new(0);
#[cfg(unix)]
static SAVED_INO: AtomicU64 = AtomicU64::new(0);

/// The device and inode that `fd` refers to; `None` when `fd` is not open.
#[cfg(unix)]
fn file_id(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is valid; fstat fills it.
    let mut st: ::libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { ::libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev as u64, st.st_ino as u64))
}

#[cfg(unix)]
fn save_stderr() {
    // SAFETY: duplicating a file descriptor; no memory is involved.
    let fd = unsafe { ::libc::fcntl(2, ::libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return;
    }
    match file_id(fd) {
        Some((dev, ino)) => {
            SAVED_DEV.store(dev, Relaxed);
            SAVED_INO.store(ino, Relaxed);
            SAVED_STDERR.store(fd, Relaxed);
        }
        // SAFETY: closing the descriptor we just made.
        None => unsafe {
            ::libc::close(fd);
        },
    }
}

/// The saved copy of stderr when stderr itself is closed and the copy still refers to
/// the file it was taken from (the program may have closed it and reused its number).
#[cfg(unix)]
fn closed_stderr_copy() -> Option<c_int> {
    // SAFETY: querying descriptor flags; no memory is involved.
    if unsafe { ::libc::fcntl(2, ::libc::F_GETFD) } != -1 || options::output_registered() {
        return None;
    }
    let fd = SAVED_STDERR.load(Relaxed);
    let id = (SAVED_DEV.load(Relaxed), SAVED_INO.load(Relaxed));
    (fd >= 0 && file_id(fd) == Some(id)).then_some(fd)
}

/// An `mi_output_fun` writing to the file descriptor in `arg`.
#[cfg(unix)]
unsafe extern "C" fn write_to_fd(msg: *const c_char, arg: *mut c_void) {
    let fd = arg as usize as c_int;
    // SAFETY: `msg` is a NUL-terminated piece from `print_to`.
    let bytes = unsafe { core::ffi::CStr::from_ptr(msg) }.to_bytes();
    super::sys::write_fd(fd, bytes);
}

/// Process end: statistics if asked for (idempotent).
pub(crate) fn done() {
    if DONE.swap(true, Relaxed) {
        return;
    }
    if options::enabled(options::SHOW_STATS) {
        #[cfg(unix)]
        if let Some(fd) = closed_stderr_copy() {
            super::stats::print(Some(write_to_fd), fd as usize as *mut c_void);
            return;
        }
        super::stats::print(None, core::ptr::null_mut());
    }
}

#[cfg(unix)]
extern "C" fn on_load() {
    init();
}

#[cfg(unix)]
extern "C" fn on_unload() {
    done();
}

/// Runs at load time (`dlopen`, `LD_PRELOAD`, or program start when linked).
#[cfg(unix)]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = on_load;

/// Runs at exit (or `dlclose`), after the program's `atexit` handlers.
#[cfg(unix)]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_unload;

/// Keeps `shardalloc.dll` loaded until the process ends (see the module's comment).
#[cfg(windows)]
fn pin_library() {
    use windows_sys::Win32::System::LibraryLoader::{
        GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, GET_MODULE_HANDLE_EX_FLAG_PIN,
    };
    static MARKER: u8 = 0;
    let mut module = core::ptr::null_mut();
    // SAFETY: with FROM_ADDRESS the "name" is an address inside this DLL; `module` is a
    // valid out-pointer; PIN only keeps the module loaded.
    unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
            core::ptr::addr_of!(MARKER) as *const u16,
            &mut module,
        )
    };
}

/// The DLL's entry point: options at load, statistics at unload (process exit or
/// `FreeLibrary`, which the pin turns into process exit). Thread attach and detach need
/// nothing: threads initialise on their first allocation and give their heaps back through
/// the fiber-local-storage callback.
#[cfg(windows)]
#[no_mangle]
pub extern "system" fn DllMain(
    _module: *mut core::ffi::c_void,
    reason: u32,
    _reserved: *mut core::ffi::c_void,
) -> i32 {
    use windows_sys::Win32::System::SystemServices::{DLL_PROCESS_ATTACH, DLL_PROCESS_DETACH};
    match reason {
        DLL_PROCESS_ATTACH => init(),
        DLL_PROCESS_DETACH => done(),
        _ => {}
    }
    1
}
