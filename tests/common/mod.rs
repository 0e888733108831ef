//! Shared helpers of the tests: a seeded generator and the seed to print, checkable
//! blocks, the resident set; running QEMU under a time limit (`process`).
#![allow(dead_code)]

pub mod process;

/// splitmix64: small, fast, and good enough to drive stress tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A size with a realistic distribution: mostly small, sometimes large.
    pub fn size(&mut self) -> usize {
        match self.below(100) {
            0..=69 => 1 + self.below(256) as usize,
            70..=89 => 1 + self.below(4096) as usize,
            90..=97 => 1 + self.below(256 * 1024) as usize,
            _ => 1 + self.below(8 << 20) as usize,
        }
    }
}

/// The seed: `SEED` from the environment, else from the clock. Printed so that a
/// failure can be replayed with `SEED=<n> cargo test ...`.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed = {s} (replay with SEED={s})");
    s
}

/// A byte pattern for block `id` at offset `i`.
#[inline]
pub fn pattern(id: u64, i: usize) -> u8 {
    (id as usize).wrapping_mul(31).wrapping_add(i) as u8
}

pub fn fill(p: *mut u8, size: usize, id: u64) {
    for i in 0..size {
        // SAFETY: the caller passes a block of at least `size` bytes.
        unsafe { *p.add(i) = pattern(id, i) };
    }
}

pub fn verify(p: *const u8, size: usize, id: u64) -> bool {
    (0..size).all(|i| unsafe { *p.add(i) } == pattern(id, i))
}

/// A block owned by a test and sent between threads: checked and freed by whoever ends
/// up with it.
pub struct Blk(pub *mut u8, pub usize, pub u64);
// SAFETY: a block is plain memory owned by whoever holds the `Blk`.
unsafe impl Send for Blk {}

impl Blk {
    /// Mostly small blocks, one in ten up to 200 KB, filled with the pattern of `id`.
    pub fn new(rng: &mut Rng, id: u64) -> Blk {
        let size = match rng.below(10) {
            0 => 1 + rng.below(200_000) as usize,
            _ => 1 + rng.below(512) as usize,
        };
        let p = unsafe { shardalloc::alloc(size, 8, false) };
        assert!(!p.is_null());
        fill(p, size, id);
        Blk(p, size, id)
    }

    pub fn check_and_free(self, seed: u64) {
        assert!(
            verify(self.0, self.1, self.2),
            "block {} corrupted (seed {seed})",
            self.2
        );
        unsafe { shardalloc::free(self.0) };
    }
}

/// Switches transparent huge pages off for this process (`PR_SET_THP_DISABLE`), so that a
/// page fault is one 4 KiB page and a fault count measures 4 KiB pages touched.
#[cfg(target_os = "linux")]
pub fn thp_off() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only sets a flag of
    // this process.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    assert_eq!(r, 0, "prctl(PR_SET_THP_DISABLE) failed");
}

/// Minor page faults of the calling thread so far (`getrusage(RUSAGE_THREAD)`).
#[cfg(target_os = "linux")]
pub fn minor_faults() -> i64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    ru.ru_minflt as i64
}

/// The resident set of the process, in bytes (from `/proc/self/statm`).
#[cfg(unix)]
pub fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The resident set of the process, in bytes: the working set from
/// `GetProcessMemoryInfo` (under Wine, the resident set of the Linux process it runs in).
#[cfg(windows)]
pub fn rss() -> usize {
    use windows_sys::Win32::System::ProcessStatus::{
        GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    let mut c: PROCESS_MEMORY_COUNTERS = unsafe { std::mem::zeroed() };
    c.cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
    let ok = unsafe { GetProcessMemoryInfo(GetCurrentProcess(), &mut c, c.cb) };
    assert!(ok != 0, "GetProcessMemoryInfo failed");
    c.WorkingSetSize
}

/// Frees every block of `blocks` (addresses of blocks of the hosted allocator) but the
/// first of each segment, so that their pages empty while every segment stays alive.
/// Returns the survivors.
pub fn free_all_but_one_per_segment(blocks: &[usize]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for &b in blocks {
        if seen.insert(b >> shardalloc::size_class::SEGMENT_SHIFT) {
            kept.push(b); // first block of each segment stays
        } else {
            unsafe { shardalloc::free(b as *mut u8) };
        }
    }
    kept
}

/// Writes `v` into one byte of every 4 KiB page of `p[..n]` (to fault the pages in).
pub fn touch_pages(p: *mut u8, n: usize, v: u8) {
    for off in (0..n).step_by(4096) {
        // SAFETY: `off < n`, inside the caller's block of `n` bytes.
        unsafe { p.add(off).write(v) };
    }
}
