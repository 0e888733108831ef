//! What the C library asks of the operating system, for unix and for Windows: `errno`,
//! writing to stderr, aborting, the page size, finding libstdc++'s new handler, whether
//! `malloc` is ours, `realpath`, and the process figures of the statistics report.
//! Nothing here allocates.

use core::ffi::c_void;

pub(crate) use imp::*;

/// Figures of the whole process for the statistics report (0 where unknown).
#[derive(Default)]
pub(crate) struct ProcessTimes {
    pub user_ms: usize,
    pub system_ms: usize,
    pub current_rss: usize,
    pub peak_rss: usize,
    pub page_faults: usize,
}

#[cfg(unix)]
mod imp {
    use super::{c_void, ProcessTimes};

    /// The calling thread's `errno`.
    pub(crate) fn errno() -> i32 {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        unsafe { *::libc::__errno_location() }
    }

    /// Sets the calling thread's `errno`.
    pub(crate) fn set_errno(e: i32) {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        unsafe { *::libc::__errno_location() = e };
    }

    /// Writes bytes to file descriptor `fd`, retrying short writes and `EINTR`; other
    /// errors are ignored.
    pub(crate) fn write_fd(fd: i32, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: writing from a valid buffer of `bytes.len()` bytes.
            let n = unsafe { ::libc::write(fd, bytes.as_ptr() as *const c_void, bytes.len()) };
            if n <= 0 {
                if n < 0 && errno() == ::libc::EINTR {
                    continue;
                }
                return;
            }
            bytes = &bytes[n as usize..];
        }
    }

    pub(crate) fn abort() -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { ::libc::abort() }
    }

    /// The OS page size.
    pub(crate) fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { ::libc::sysconf(::libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    }

    /// The address of libstdc++'s `std::get_new_handler()`, or null.
    pub(crate) fn lookup_get_new_handler() -> *mut c_void {
        // SAFETY: a by-name symbol lookup.
        unsafe { ::libc::dlsym(::libc::RTLD_DEFAULT, c"_ZSt15get_new_handlerv".as_ptr()) }
    }

    /// Whether `malloc` in this process is ours (preloaded or linked before libc).
    pub(crate) fn is_redirected() -> bool {
        static MARKER: u8 = 0;
        // SAFETY: looks up the symbol `malloc` as the process resolves it, and which loaded
        // object holds it and which holds our `MARKER` (read-only queries, out-pointers on
        // the stack).
        unsafe {
            let m = ::libc::dlsym(::libc::RTLD_DEFAULT, c"malloc".as_ptr());
            if m.is_null() {
                return false;
            }
            let mut theirs: ::libc::Dl_info = core::mem::zeroed();
            let mut ours: ::libc::Dl_info = core::mem::zeroed();
            if ::libc::dladdr(m, &mut theirs) == 0
                || ::libc::dladdr(core::ptr::addr_of!(MARKER) as *const c_void, &mut ours) == 0
            {
                return false;
            }
            theirs.dli_fbase == ours.dli_fbase
        }
    }

    /// The longest path `realpath` writes, with its NUL.
    pub(crate) const PATH_MAX: usize = ::libc::PATH_MAX as usize + 1;

    /// The canonical absolute path of `fname` into `out` (of `PATH_MAX` bytes); null when
    /// the file does not exist or the path is too long.
    ///
    /// # Safety
    /// `fname` is a NUL-terminated string; `out` is writable for `PATH_MAX` bytes.
    pub(crate) unsafe fn realpath(fname: *const u8, out: *mut u8) -> *mut u8 {
        // SAFETY: as the contract says, which is libc's `realpath`'s.
        unsafe { ::libc::realpath(fname as *const _, out as *mut _) as *mut u8 }
    }

    extern "C" {
        static environ: *const *const core::ffi::c_char;
        /// glibc's (and musl's) basename of `argv[0]`.
        static program_invocation_short_name: *const core::ffi::c_char;
    }

    /// Calls `f(name, value)` for each `NAME=value` entry of the environment.
    pub(crate) fn for_each_env(mut f: impl FnMut(&[u8], &[u8])) {
        // SAFETY: `environ` is the process's NULL-terminated array of NUL-terminated
        // strings; we only read it (at load time, before the program could change it
        // concurrently).
        unsafe {
            let mut e = environ;
            if e.is_null() {
                return;
            }
            while !(*e).is_null() {
                let s = core::ffi::CStr::from_ptr(*e).to_bytes();
                if let Some(eq) = s.iter().position(|&c| c == b'=') {
                    f(&s[..eq], &s[eq + 1..]);
                }
                e = e.add(1);
            }
        }
    }

    /// The program's name (basename of `argv[0]`), without allocating.
    pub(crate) fn program_name() -> &'static str {
        // SAFETY: set by libc before any constructor runs, to null or a NUL-terminated
        // string that lives as long as the process.
        let name = unsafe { program_invocation_short_name };
        if name.is_null() {
            return "?";
        }
        // SAFETY: non-null, so a NUL-terminated string living as long as the process.
        unsafe { core::ffi::CStr::from_ptr(name) }
            .to_str()
            .unwrap_or("?")
    }

    pub(crate) fn pid() -> u32 {
        // SAFETY: getpid has no preconditions.
        unsafe { ::libc::getpid() as u32 }
    }

    /// Milliseconds of a monotonic clock.
    pub(crate) fn now_ms() -> u64 {
        let mut ts = ::libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { ::libc::clock_gettime(::libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    pub(crate) fn process_times() -> ProcessTimes {
        let mut t = ProcessTimes::default();
        // SAFETY: an all-zero rusage is valid; getrusage fills it.
        let mut ru: ::libc::rusage = unsafe { core::mem::zeroed() };
        // SAFETY: valid out-pointer.
        if unsafe { ::libc::getrusage(::libc::RUSAGE_SELF, &mut ru) } == 0 {
            let ms = |tv: ::libc::timeval| tv.tv_sec as usize * 1000 + tv.tv_usec as usize / 1000;
            t.user_ms = ms(ru.ru_utime);
            t.system_ms = ms(ru.ru_stime);
            t.peak_rss = ru.ru_maxrss as usize * 1024;
            t.page_faults = ru.ru_majflt as usize;
        }
        t.current_rss = current_rss().unwrap_or(t.peak_rss);
        t
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
        Some(pages * page_size())
    }

    /// Maps `size` bytes of fresh read-write memory aligned to `align` (a power of two,
    /// at least the page size), for an arena; None when the OS refuses.
    pub(crate) fn map_aligned(size: usize, align: usize) -> Option<*mut u8> {
        let total = size.checked_add(align)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // replaces nothing.
        let p = unsafe {
            ::libc::mmap(
                core::ptr::null_mut(),
                total,
                ::libc::PROT_READ | ::libc::PROT_WRITE,
                ::libc::MAP_PRIVATE | ::libc::MAP_ANONYMOUS | ::libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == ::libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let aligned = (start + align - 1) & !(align - 1);
        // SAFETY: the head and tail cut off are parts of the mapping just made, unused.
        unsafe {
            if aligned > start {
                ::libc::munmap(p, aligned - start);
            }
            let tail = start + total - (aligned + size);
            if tail > 0 {
                ::libc::munmap((aligned + size) as *mut c_void, tail);
            }
        }
        Some(aligned as *mut u8)
    }

    /// Maps `pages` huge OS pages of 1 GiB (`MAP_HUGETLB | MAP_HUGE_1GB`, Linux), read-write
    /// and populated; None when the OS does not grant them (no 1 GiB pages reserved in
    /// `/sys/kernel/mm/hugepages`, or not Linux).
    pub(crate) fn map_huge_1g(pages: usize) -> Option<*mut u8> {
        #[cfg(target_os = "linux")]
        {
            let size = pages.checked_mul(1 << 30)?;
            // SAFETY: an anonymous private mapping at an address of the kernel's choosing
            // replaces nothing.
            let p = unsafe {
                ::libc::mmap(
                    core::ptr::null_mut(),
                    size,
                    ::libc::PROT_READ | ::libc::PROT_WRITE,
                    ::libc::MAP_PRIVATE
                        | ::libc::MAP_ANONYMOUS
                        | ::libc::MAP_HUGETLB
                        | ::libc::MAP_HUGE_1GB
                        | ::libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p == ::libc::MAP_FAILED {
                return None;
            }
            Some(p as *mut u8)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pages;
            None
        }
    }

    /// Makes caller-given memory readable and writable (mimalloc's "commit" of memory
    /// handed over uncommitted); false when the OS refuses.
    ///
    /// # Safety
    /// `[start, start + size)` is memory the caller handed over, mapped, used by nothing.
    pub(crate) unsafe fn commit(start: *mut u8, size: usize) -> bool {
        // SAFETY: the range is the caller's mapping (this function's contract).
        unsafe {
            ::libc::mprotect(
                start as *mut c_void,
                size,
                ::libc::PROT_READ | ::libc::PROT_WRITE,
            ) == 0
        }
    }
}

#[cfg(windows)]
mod imp {
    use super::{c_void, ProcessTimes};
    use core::ffi::c_int;
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileAttributesA, GetFullPathNameA, WriteFile, INVALID_FILE_ATTRIBUTES,
    };
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    use windows_sys::Win32::System::ProcessStatus::{
        GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetCurrentProcessId, GetProcessTimes,
    };

    extern "C" {
        /// The C runtime's (msvcrt's or the UCRT's) per-thread `errno` slot.
        fn _errno() -> *mut c_int;
    }

    /// The calling thread's `errno` (the C runtime's).
    pub(crate) fn errno() -> i32 {
        // SAFETY: `_errno` returns the calling thread's errno slot.
        unsafe { *_errno() }
    }

    /// Sets the calling thread's `errno` (the C runtime's).
    pub(crate) fn set_errno(e: i32) {
        // SAFETY: `_errno` returns the calling thread's errno slot.
        unsafe { *_errno() = e };
    }

    /// Writes bytes to the standard error handle (the only descriptor the Windows library
    /// writes to: `fd` must be 2), retrying short writes; errors are ignored.
    pub(crate) fn write_fd(fd: i32, mut bytes: &[u8]) {
        debug_assert_eq!(fd, 2);
        // SAFETY: no preconditions; may return null or INVALID_HANDLE_VALUE, which
        // WriteFile rejects.
        let h = unsafe { GetStdHandle(STD_ERROR_HANDLE) };
        while !bytes.is_empty() {
            let chunk = bytes.len().min(u32::MAX as usize) as u32;
            let mut written = 0u32;
            // SAFETY: writes from a valid buffer of `chunk` bytes; `written` is a valid
            // out-pointer; no OVERLAPPED (synchronous write).
            let ok = unsafe {
                WriteFile(
                    h,
                    bytes.as_ptr(),
                    chunk,
                    &mut written,
                    core::ptr::null_mut(),
                )
            };
            if ok == 0 || written == 0 {
                return;
            }
            bytes = &bytes[written as usize..];
        }
    }

    pub(crate) fn abort() -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { ::libc::abort() }
    }

    /// The OS page size.
    pub(crate) fn page_size() -> usize {
        use crate::source::PageSource;
        crate::source::VirtualAlloc.config().page_size
    }

    /// The address of libstdc++'s `std::get_new_handler()` when the program uses MinGW's
    /// libstdc++ (`libstdc++-6.dll`), or null.
    pub(crate) fn lookup_get_new_handler() -> *mut c_void {
        // SAFETY: NUL-terminated names; a module handle from GetModuleHandleA needs no
        // release, and a module that is not loaded gives null.
        unsafe {
            let m = GetModuleHandleA(c"libstdc++-6.dll".as_ptr() as *const u8);
            if m.is_null() {
                return core::ptr::null_mut();
            }
            GetProcAddress(m, c"_ZSt15get_new_handlerv".as_ptr() as *const u8)
                .map_or(core::ptr::null_mut(), |f| f as *mut c_void)
        }
    }

    /// Whether `malloc` in this process is ours: never on Windows, where the library
    /// serves the `mi_*` API and the C runtime keeps its own `malloc`.
    pub(crate) fn is_redirected() -> bool {
        false
    }

    /// The longest path written, with its NUL (`MAX_PATH`).
    pub(crate) const PATH_MAX: usize = 260;

    /// The absolute path of `fname` into `out` (of `PATH_MAX` bytes); null when the file
    /// does not exist or the path is too long.
    ///
    /// # Safety
    /// `fname` is a NUL-terminated string; `out` is writable for `PATH_MAX` bytes.
    pub(crate) unsafe fn realpath(fname: *const u8, out: *mut u8) -> *mut u8 {
        // SAFETY: `fname` is a C string and `out` holds `PATH_MAX` bytes (contract); the
        // file-part out-pointer may be null.
        unsafe {
            if GetFileAttributesA(fname) == INVALID_FILE_ATTRIBUTES {
                return core::ptr::null_mut();
            }
            let n = GetFullPathNameA(fname, PATH_MAX as u32, out, core::ptr::null_mut());
            if n == 0 || n as usize >= PATH_MAX {
                return core::ptr::null_mut();
            }
        }
        out
    }

    /// The environment block at the first call: `GetEnvironmentStrings`'s copy (from the
    /// process heap, not ours), kept for the life of the process so that the values handed
    /// out stay valid. Options are read once, at load time.
    static ENV: spin::Once<usize> = spin::Once::new();

    /// Calls `f(name, value)` for each `NAME=value` entry of the environment (as it was
    /// when first read).
    pub(crate) fn for_each_env(mut f: impl FnMut(&[u8], &[u8])) {
        use windows_sys::Win32::System::Environment::GetEnvironmentStrings;
        // SAFETY: no preconditions; null when out of memory.
        let block = *ENV.call_once(|| unsafe { GetEnvironmentStrings() } as usize) as *const u8;
        if block.is_null() {
            return;
        }
        let mut p = block;
        // SAFETY: the block is a sequence of NUL-terminated `NAME=value` strings ended by
        // an empty one, kept alive for the process's life (above).
        unsafe {
            while *p != 0 {
                let s = core::ffi::CStr::from_ptr(p as *const core::ffi::c_char).to_bytes();
                // entries like `=C:=C:\` (per-drive directories) start with `=`: skipped
                if let Some(eq) = s.iter().skip(1).position(|&c| c == b'=') {
                    f(&s[..eq + 1], &s[eq + 2..]);
                }
                p = p.add(s.len() + 1);
            }
        }
    }

    /// The program's file name (without directory), read once into a static buffer.
    pub(crate) fn program_name() -> &'static str {
        use windows_sys::Win32::System::LibraryLoader::GetModuleFileNameA;
        static NAME: spin::Once<([u8; PATH_MAX], usize, usize)> = spin::Once::new();
        let (buf, start, end) = NAME.call_once(|| {
            let mut buf = [0u8; PATH_MAX];
            // SAFETY: a null module is the program's executable; `buf` holds PATH_MAX bytes.
            let n = unsafe {
                GetModuleFileNameA(core::ptr::null_mut(), buf.as_mut_ptr(), PATH_MAX as u32)
            } as usize;
            let n = n.min(PATH_MAX);
            let start = buf[..n]
                .iter()
                .rposition(|&c| c == b'\\' || c == b'/')
                .map_or(0, |i| i + 1);
            (buf, start, n)
        });
        core::str::from_utf8(&buf[*start..*end]).unwrap_or("?")
    }

    pub(crate) fn pid() -> u32 {
        // SAFETY: no preconditions.
        unsafe { GetCurrentProcessId() }
    }

    /// Milliseconds of a monotonic clock.
    pub(crate) fn now_ms() -> u64 {
        // SAFETY: no preconditions.
        unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() }
    }

    pub(crate) fn process_times() -> ProcessTimes {
        let mut t = ProcessTimes::default();
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut c, mut e, mut k, mut u) = (zero, zero, zero, zero);
        // 100-nanosecond units to milliseconds
        let ms = |f: FILETIME| ((f.dwHighDateTime as u64) << 32 | f.dwLowDateTime as u64) / 10_000;
        // SAFETY: the pseudo-handle of the current process needs no closing; four valid
        // out-pointers.
        if unsafe { GetProcessTimes(GetCurrentProcess(), &mut c, &mut e, &mut k, &mut u) } != 0 {
            t.user_ms = ms(u) as usize;
            t.system_ms = ms(k) as usize;
        }
        // SAFETY: an all-zero PROCESS_MEMORY_COUNTERS is valid; `cb` says its size.
        let mut m: PROCESS_MEMORY_COUNTERS = unsafe { core::mem::zeroed() };
        m.cb = core::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        // SAFETY: valid out-pointer of `cb` bytes.
        if unsafe { GetProcessMemoryInfo(GetCurrentProcess(), &mut m, m.cb) } != 0 {
            t.current_rss = m.WorkingSetSize;
            t.peak_rss = m.PeakWorkingSetSize;
            t.page_faults = m.PageFaultCount as usize;
        }
        t
    }

    /// Reserves and commits `size` bytes aligned to `align` for an arena; None when the OS
    /// refuses.
    pub(crate) fn map_aligned(size: usize, align: usize) -> Option<*mut u8> {
        use windows_sys::Win32::System::Memory::{
            VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
        };
        let total = size.checked_add(align)?;
        for _ in 0..8 {
            // SAFETY: reserving fresh address space at an address of the OS's choosing.
            let p = unsafe { VirtualAlloc(core::ptr::null(), total, MEM_RESERVE, PAGE_READWRITE) };
            if p.is_null() {
                return None;
            }
            let aligned = ((p as usize) + align - 1) & !(align - 1);
            // SAFETY: release the over-sized reservation, then take its aligned part (it
            // may be taken by another thread in between: then try again).
            unsafe { VirtualFree(p, 0, MEM_RELEASE) };
            // SAFETY: asking for a range just free; the OS refuses if it is taken.
            let q = unsafe {
                VirtualAlloc(
                    aligned as *const c_void,
                    size,
                    MEM_RESERVE | MEM_COMMIT,
                    PAGE_READWRITE,
                )
            };
            if !q.is_null() {
                return Some(q as *mut u8);
            }
        }
        None
    }

    /// Huge OS pages need the "lock pages in memory" privilege on Windows, which
    /// shardalloc does not ask for: never granted.
    pub(crate) fn map_huge_1g(_pages: usize) -> Option<*mut u8> {
        None
    }

    /// Commits caller-given reserved memory (`MEM_COMMIT`); false when the OS refuses.
    ///
    /// # Safety
    /// `[start, start + size)` is memory the caller handed over, reserved, used by nothing.
    pub(crate) unsafe fn commit(start: *mut u8, size: usize) -> bool {
        use windows_sys::Win32::System::Memory::{VirtualAlloc, MEM_COMMIT, PAGE_READWRITE};
        // SAFETY: the range is the caller's reservation (this function's contract).
        !unsafe { VirtualAlloc(start as *const c_void, size, MEM_COMMIT, PAGE_READWRITE) }.is_null()
    }
}
