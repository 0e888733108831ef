//! mimalloc v3's statistics API (`include/mimalloc-stats.h`, `MI_STAT_VERSION` 5):
//! `mi_stats_t` filled from shardalloc's figures, and the same as JSON, in mimalloc's
//! format.
//!
//! Where the figures come from:
//! - process (`mi_stats_get`, `mi_subproc_stats_get` of the main sub-process): the
//!   process's statistics (`Domain::stats`): pages, reserved, committed, purged, threads,
//!   segments, abandoned segments, allocated bytes (`malloc_normal`: all blocks up to the
//!   large size, `malloc_huge`: huge blocks), arenas. shardalloc keeps no per-size-bin
//!   counts and no per-call counters (`mmap_calls`, ...): those stay 0.
//! - heap (`mi_heap_stats_get`): counted by visiting the heap's pages now (it must be a
//!   heap of the calling thread): pages, committed page memory, live blocks and bytes per
//!   size bin (`malloc_bins`, `page_bins`), `malloc_normal`/`malloc_huge`. shardalloc keeps
//!   no history per heap, so each figure's `total` and `peak` are its current value.

use core::ffi::{c_char, c_void};
use core::fmt::{self, Write};
use core::ptr;

use super::options::{print_to, OutputFun};
use crate::heap::SharedHeap;
use crate::size_class::{bin, bin_size, BIN_HUGE, LARGE_OBJ_SIZE_MAX, MEDIUM_OBJ_SIZE_MAX};
use crate::size_class::{MEDIUM_PAGE_SIZE, SMALL_OBJ_SIZE_MAX, SMALL_PAGE_SIZE};

const STAT_VERSION: usize = 5;
/// `MI_BIN_HUGE` in `mimalloc-stats.h`: bins 0..=73.
const BINS: usize = 74;
/// `MI_CBIN_COUNT`.
const CBINS: usize = 6;

const _: () = assert!(BIN_HUGE == BINS - 1, "shardalloc's bins are mimalloc's");

/// The statistics of `MI_STAT_FIELDS()`, in order: (name, is a count (3 words) rather than
/// a counter (1 word)).
const FIELDS: [(&str, bool); 36] = [
    ("pages", true),
    ("reserved", true),
    ("committed", true),
    ("reset", false),
    ("purged", false),
    ("page_committed", true),
    ("pages_abandoned", true),
    ("threads", true),
    ("malloc_normal", true),
    ("malloc_huge", true),
    ("malloc_requested", true),
    ("mmap_calls", false),
    ("commit_calls", false),
    ("reset_calls", false),
    ("purge_calls", false),
    ("arena_count", false),
    ("malloc_normal_count", false),
    ("malloc_huge_count", false),
    ("malloc_guarded_count", false),
    ("arena_rollback_count", false),
    ("arena_purges", false),
    ("pages_extended", false),
    ("pages_retire", false),
    ("page_searches", false),
    ("page_searches_count", false),
    ("segments", true),
    ("segments_abandoned", true),
    ("segments_cache", true),
    ("_segments_reserved", true),
    ("heaps", true),
    ("theaps", true),
    ("pages_reclaim_on_alloc", false),
    ("pages_reclaim_on_free", false),
    ("pages_reabandon_full", false),
    ("pages_unabandon_busy_wait", false),
    ("heaps_delete_wait", false),
];
const NAMED: usize = FIELDS.len();

/// Words (`int64_t`) of the named fields.
const FIELD_WORDS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < NAMED {
        n += if FIELDS[i].1 { 3 } else { 1 };
        i += 1;
    }
    n
};

/// Word offset of the field called `name`.
const fn field(name: &str) -> usize {
    let mut off = 0;
    let mut i = 0;
    while i < NAMED {
        if str_eq(FIELDS[i].0, name) {
            return off;
        }
        off += if FIELDS[i].1 { 3 } else { 1 };
        i += 1;
    }
    panic!("no such statistic")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// mimalloc's `mi_stats_t` (version 5). A count is `{ total, peak, current }`, a counter
/// `{ total }`, all `int64_t`.
#[repr(C)]
pub struct MiStats {
    size: usize,
    version: usize,
    fields: [i64; FIELD_WORDS],
    stat_reserved: [i64; 4 * 3],
    stat_counter_reserved: [i64; 4],
    malloc_bins: [i64; BINS * 3],
    page_bins: [i64; BINS * 3],
    chunk_bins: [i64; CBINS * 3],
}

/// `sizeof(mi_stats_t)` in C (gcc, x86_64): 4368, `malloc_bins` at 672 (checked from C by
/// `tests/c/test_v3.c`, which gets `false` from `mi_stats_get` on a mismatch).
const _: () = assert!(FIELD_WORDS == 66);
const _: () =
    assert!(core::mem::size_of::<MiStats>() == 16 + 8 * (66 + 16 + 2 * BINS * 3 + CBINS * 3));

/// One count: `{ total, peak, current }`.
#[derive(Clone, Copy, Default)]
struct Count {
    total: i64,
    peak: i64,
    current: i64,
}

impl Count {
    /// A figure known only now (total and peak are its current value).
    fn now(v: i64) -> Count {
        Count {
            total: v,
            peak: v,
            current: v,
        }
    }
}

impl MiStats {
    fn zeroed() -> MiStats {
        MiStats {
            size: core::mem::size_of::<MiStats>(),
            version: STAT_VERSION,
            fields: [0; FIELD_WORDS],
            stat_reserved: [0; 12],
            stat_counter_reserved: [0; 4],
            malloc_bins: [0; BINS * 3],
            page_bins: [0; BINS * 3],
            chunk_bins: [0; CBINS * 3],
        }
    }

    fn set_count(&mut self, off: usize, c: Count) {
        self.fields[off] = c.total;
        self.fields[off + 1] = c.peak;
        self.fields[off + 2] = c.current;
    }

    fn count(&self, off: usize) -> Count {
        Count {
            total: self.fields[off],
            peak: self.fields[off + 1],
            current: self.fields[off + 2],
        }
    }

    fn add_bin(bins: &mut [i64], b: usize, n: i64) {
        bins[b * 3] += n;
        bins[b * 3 + 1] += n;
        bins[b * 3 + 2] += n;
    }
}

fn count_of(s: crate::stats::StatCount) -> Count {
    Count {
        total: s.total,
        peak: s.peak,
        current: s.current,
    }
}

/// The process's figures.
fn process_stats() -> MiStats {
    domain_stats(crate::global::hosted::stats())
}

/// A domain's statistics (the process's, or a sub-process's) in mimalloc's layout.
fn domain_stats(st: crate::stats::Stats) -> MiStats {
    let mut m = MiStats::zeroed();
    m.set_count(field("pages"), count_of(st.pages));
    m.set_count(field("reserved"), count_of(st.reserved));
    m.set_count(field("committed"), count_of(st.committed));
    m.fields[field("purged")] = st.purged;
    m.set_count(field("threads"), count_of(st.threads));
    m.set_count(field("segments"), count_of(st.segments));
    let abandoned = field("segments_abandoned");
    m.fields[abandoned] = st.abandoned;
    m.fields[abandoned + 1] = st.abandoned;
    m.set_count(field("malloc_huge"), count_of(st.huge));
    // all blocks up to the large size; shardalloc keeps one peak, of all blocks
    m.set_count(
        field("malloc_normal"),
        Count {
            total: st.allocated.total - st.huge.total,
            peak: st.allocated.peak,
            current: st.allocated.current - st.huge.current,
        },
    );
    m.fields[field("arena_count")] = super::arenas::count() as i64;
    m
}

/// Adds one visited page of a heap to `m` (`mi_heap_visit_blocks` with areas only).
unsafe extern "C" fn add_area(
    _heap: *const c_void,
    area: *const super::heaps::HeapArea,
    _block: *mut c_void,
    _block_size: usize,
    arg: *mut c_void,
) -> bool {
    // SAFETY: `arg` is the `MiStats` of `heap_stats`, alive during the visit; `area` is
    // the visit's live area.
    let (m, a) = unsafe { (&mut *(arg as *mut MiStats), &*area) };
    let pages = field("pages");
    let c = m.count(pages);
    m.set_count(pages, Count::now(c.current + 1));
    let pc = field("page_committed");
    let c = m.count(pc);
    m.set_count(pc, Count::now(c.current + a.committed as i64));
    let bytes = (a.used * a.block_size) as i64;
    let which = if a.block_size > LARGE_OBJ_SIZE_MAX {
        "malloc_huge"
    } else {
        "malloc_normal"
    };
    let f = field(which);
    let c = m.count(f);
    m.set_count(f, Count::now(c.current + bytes));
    let b = bin(a.block_size);
    MiStats::add_bin(&mut m.malloc_bins, b, a.used as i64);
    MiStats::add_bin(&mut m.page_bins, b, 1);
    true
}

/// The figures of heap `h` (NULL: the main heap) by a visit of its pages; `None` when it
/// is not a live heap of the calling thread.
///
/// # Safety
/// `h` is null or a heap not yet deleted.
unsafe fn heap_stats(h: *mut SharedHeap) -> Option<MiStats> {
    let h = if h.is_null() {
        super::v3::mi_heap_main()
    } else {
        h
    };
    // (the figures are those of the calling thread's part: see `mi_heap_visit_blocks`)
    let mut m = MiStats::zeroed();
    // SAFETY: `h` is a live heap of the calling thread; `add_area` only writes to `m`.
    let ok = unsafe {
        super::heaps::mi_heap_visit_blocks(
            h as *const c_void,
            false,
            Some(add_area),
            &mut m as *mut MiStats as *mut c_void,
        )
    };
    ok.then_some(m)
}

/// Copies `from` into the caller's `mi_stats_t` if its header says it is version 5 of
/// our size (mimalloc's `mi_stats_copy`).
///
/// # Safety
/// `to` is null or points to a writable `mi_stats_t` whose `size` field is readable.
unsafe fn copy_out(to: *mut MiStats, from: &MiStats) -> bool {
    if to.is_null() {
        return false;
    }
    // SAFETY: non-null: the caller's `mi_stats_t`, whose header is readable.
    let (size, version) = unsafe { ((*to).size, (*to).version) };
    if size != core::mem::size_of::<MiStats>() || version != STAT_VERSION {
        return false;
    }
    // SAFETY: the caller's struct is a whole `mi_stats_t` (its size says so).
    unsafe { ptr::copy_nonoverlapping(from, to, 1) };
    true
}

// ---------------------------------------------------------------------------------------
// JSON

/// Writes the JSON form of `m` (mimalloc's `mi_stats_get_json_from` layout).
fn write_json(w: &mut impl Write, m: &MiStats) -> fmt::Result {
    let mut info = super::stats::ProcessInfo::default();
    super::stats::process_info(&mut info);
    w.write_str("{\n")?;
    writeln!(w, "  \"stat_version\": {},", STAT_VERSION)?;
    writeln!(w, "  \"mimalloc_version\": {},", 30403)?;
    w.write_str("  \"process\": {\n")?;
    for (name, v, last) in [
        ("elapsed_msecs", info.elapsed_ms, false),
        ("user_msecs", info.user_ms, false),
        ("system_msecs", info.system_ms, false),
        ("page_faults", info.page_faults, false),
        ("rss_current", info.current_rss, false),
        ("rss_peak", info.peak_rss, false),
        ("commit_current", info.current_commit, false),
        ("commit_peak", info.peak_commit, true),
    ] {
        writeln!(w, "    \"{name}\": {v}{}", if last { "" } else { "," })?;
    }
    w.write_str("  },\n")?;
    let mut off = 0;
    for &(name, is_count) in &FIELDS[..NAMED] {
        if is_count {
            let c = m.count(off);
            writeln!(
                w,
                "  \"{name}\": {{ \"total\": {}, \"peak\": {}, \"current\": {} }},",
                c.total, c.peak, c.current
            )?;
            off += 3;
        } else {
            writeln!(w, "  \"{name}\": {},", m.fields[off])?;
            off += 1;
        }
    }
    for (title, bins) in [("malloc_bins", &m.malloc_bins), ("page_bins", &m.page_bins)] {
        writeln!(w, "  \"{title}\": [")?;
        for b in 0..BINS {
            let size = mi_stats_get_bin_size(b);
            let page = if size <= SMALL_OBJ_SIZE_MAX {
                SMALL_PAGE_SIZE
            } else if size <= MEDIUM_OBJ_SIZE_MAX {
                MEDIUM_PAGE_SIZE
            } else {
                0
            };
            writeln!(
                w,
                "    {{ \"total\": {}, \"peak\": {}, \"current\": {}, \"block_size\": {size}, \"page_size\": {page} }}{}",
                bins[b * 3],
                bins[b * 3 + 1],
                bins[b * 3 + 2],
                if b + 1 < BINS { "," } else { "" }
            )?;
        }
        w.write_str("  ],\n")?;
    }
    w.write_str("  \"chunk_bins\": [\n")?;
    for (i, name) in ["S", "X", "M", "L", "H", " "].iter().enumerate() {
        writeln!(
            w,
            "    {{ \"total\": {}, \"peak\": {}, \"current\": {}, \"bin\": \"{name}\" }}{}",
            m.chunk_bins[i * 3],
            m.chunk_bins[i * 3 + 1],
            m.chunk_bins[i * 3 + 2],
            if i + 1 < CBINS { "," } else { "" }
        )?;
    }
    w.write_str("  ]\n}\n")
}

/// Counts bytes.
struct Counter(usize);

impl Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Writes into a fixed buffer; fails when it is full.
struct Fixed<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Fixed<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// mimalloc's JSON output convention: into `buf` (NUL-terminated; NULL when it does not
/// fit) when `buf` is given, else into a new block of the default heap (free it with
/// `mi_free`; NULL when out of memory).
///
/// # Safety
/// `buf` is null or writable for `buf_size` bytes.
unsafe fn json_out(m: &MiStats, buf_size: usize, buf: *mut c_char) -> *mut c_char {
    let (out, cap, owned) = if !buf.is_null() && buf_size > 0 {
        (buf as *mut u8, buf_size, false)
    } else {
        let mut n = Counter(0);
        let _ = write_json(&mut n, m);
        // The second pass reads the process's figures again (elapsed time, CPU times, page
        // faults, RSS): each of those 8 numbers may have grown meanwhile, by at most the
        // 20 digits of a u64. Without that room the second pass ran out of buffer now and
        // then (elapsed_msecs 999 -> 1000) and the JSON came back null (the c_api test's
        // stats case failed under load).
        let cap = n.0 + 8 * 20 + 1;
        // SAFETY: `None` is the default heap, the only precondition.
        let p = unsafe { super::semantics::malloc(None, cap) };
        if p.is_null() {
            return ptr::null_mut();
        }
        (p, cap, true)
    };
    // SAFETY: `out` is writable for `cap` bytes: the caller's buffer (this function's
    // contract) or the block just allocated.
    let slice = unsafe { core::slice::from_raw_parts_mut(out, cap) };
    slice.fill(0);
    // one byte is kept for the NUL
    let mut w = Fixed {
        buf: &mut slice[..cap - 1],
        len: 0,
    };
    if write_json(&mut w, m).is_err() {
        if owned {
            // SAFETY: the block allocated above, not handed out.
            unsafe { super::semantics::free(out) };
        }
        return ptr::null_mut();
    }
    out as *mut c_char
}

// ---------------------------------------------------------------------------------------
// C API

#[no_mangle]
pub unsafe extern "C" fn mi_stats_get(stats: *mut MiStats) -> bool {
    // SAFETY: `stats` is null or a caller's `mi_stats_t` (the C caller's contract).
    unsafe { copy_out(stats, &process_stats()) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_stats_get_json(buf_size: usize, buf: *mut c_char) -> *mut c_char {
    // SAFETY: `buf` is null or writable for `buf_size` bytes (the C caller's contract).
    unsafe { json_out(&process_stats(), buf_size, buf) }
}

/// JSON of statistics the caller got from `mi_*stats_get` (NULL unless version 5 of our
/// size).
#[no_mangle]
pub unsafe extern "C" fn mi_stats_as_json(
    stats: *mut MiStats,
    buf_size: usize,
    buf: *mut c_char,
) -> *mut c_char {
    if stats.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: non-null: a caller's `mi_stats_t`, whose header is readable.
    let m = unsafe { &*stats };
    if m.size != core::mem::size_of::<MiStats>() || m.version != STAT_VERSION {
        return ptr::null_mut();
    }
    // SAFETY: `buf` is null or writable for `buf_size` bytes (the C caller's contract).
    unsafe { json_out(m, buf_size, buf) }
}

/// The block size of size bin `bin` (0 for bins past the huge bin; the huge bin has no
/// fixed size and gives the largest non-huge size, as mimalloc's).
#[no_mangle]
pub extern "C" fn mi_stats_get_bin_size(b: usize) -> usize {
    match b {
        0 => 0,
        _ if b < BIN_HUGE => bin_size(b),
        _ if b == BIN_HUGE => LARGE_OBJ_SIZE_MAX + 1,
        _ => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_stats_get(h: *mut SharedHeap, stats: *mut MiStats) -> bool {
    // SAFETY: `h` is null or a heap not yet deleted; `stats` null or a caller's
    // `mi_stats_t` (the C caller's contract).
    unsafe { heap_stats(h).is_some_and(|m| copy_out(stats, &m)) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_heap_stats_get_json(
    h: *mut SharedHeap,
    buf_size: usize,
    buf: *mut c_char,
) -> *mut c_char {
    // SAFETY: `h` is null or a heap not yet deleted; `buf` null or writable for
    // `buf_size` bytes (the C caller's contract).
    unsafe {
        match heap_stats(h) {
            Some(m) => json_out(&m, buf_size, buf),
            None => ptr::null_mut(),
        }
    }
}

/// Prints the heap's figures (as JSON, line by line) to `out`.
#[no_mangle]
pub unsafe extern "C" fn mi_heap_stats_print_out(
    h: *mut SharedHeap,
    out: Option<OutputFun>,
    arg: *mut c_void,
) {
    // SAFETY: `h` is null or a heap not yet deleted (the C caller's contract).
    if let Some(m) = unsafe { heap_stats(h) } {
        print_json(&m, out, arg);
    }
}

fn print_json(m: &MiStats, out: Option<OutputFun>, arg: *mut c_void) {
    struct Fwd<'a>(&'a MiStats);
    impl fmt::Display for Fwd<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_json(f, self.0)
        }
    }
    print_to(out, arg, format_args!("{}", Fwd(m)));
}

/// shardalloc keeps no statistics per heap to merge: its process figures already hold
/// every heap's.
#[no_mangle]
pub extern "C" fn mi_heap_stats_merge_to_subproc(_h: *mut SharedHeap) {
    crate::global::hosted::stats();
}

// sub-processes (see `subproc.rs`): each a domain of its own

#[no_mangle]
pub unsafe extern "C" fn mi_subproc_stats_get(
    id: super::v3::SubprocId,
    stats: *mut MiStats,
) -> bool {
    let Some(st) = super::subproc::stats_of(id) else {
        return false;
    };
    // SAFETY: `stats` is null or a caller's `mi_stats_t` (the C caller's contract).
    unsafe { copy_out(stats, &domain_stats(st)) }
}

/// A sub-process's own statistics: the same as `mi_subproc_stats_get` (shardalloc merges
/// no heap statistics into a sub-process's).
#[no_mangle]
pub unsafe extern "C" fn mi_subproc_stats_get_exclusive(
    id: super::v3::SubprocId,
    stats: *mut MiStats,
) -> bool {
    // SAFETY: as `mi_subproc_stats_get`.
    unsafe { mi_subproc_stats_get(id, stats) }
}

#[no_mangle]
pub unsafe extern "C" fn mi_subproc_stats_get_json(
    id: super::v3::SubprocId,
    buf_size: usize,
    buf: *mut c_char,
) -> *mut c_char {
    let Some(st) = super::subproc::stats_of(id) else {
        return ptr::null_mut();
    };
    // SAFETY: `buf` is null or writable for `buf_size` bytes (the C caller's contract).
    unsafe { json_out(&domain_stats(st), buf_size, buf) }
}

#[no_mangle]
pub extern "C" fn mi_subproc_stats_print_out(
    id: super::v3::SubprocId,
    out: Option<OutputFun>,
    arg: *mut c_void,
) {
    if id.is_main() {
        super::stats::print(out, arg)
    } else if let Some(st) = super::subproc::stats_of(id) {
        print_json(&domain_stats(st), out, arg);
    }
}

/// The sub-process's statistics, then those of each heap (shardalloc: the calling
/// thread's heaps, when it is in that sub-process).
#[no_mangle]
pub extern "C" fn mi_subproc_heap_stats_print_out(
    id: super::v3::SubprocId,
    out: Option<OutputFun>,
    arg: *mut c_void,
) {
    mi_subproc_stats_print_out(id, out, arg);
    if !super::subproc::is_current(id) {
        return;
    }
    super::v3::for_each_thread_heap(|h| {
        // SAFETY: `h` is a live heap of the calling thread.
        if let Some(m) = unsafe { heap_stats(h) } {
            print_to(out, arg, format_args!("heap {h:p}:\n"));
            print_json(&m, out, arg);
        }
        true
    });
}
