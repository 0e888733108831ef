//! `Domain::set_large_os_pages` (C: `MIMALLOC_ALLOW_LARGE_OS_PAGES`): segments made while
//! it is on are advised for transparent huge pages and the others are not; and a segment
//! with them that empties goes to the region cache without making its untouched second
//! half resident (the cache's node had gone in the region's last page, which faulted in a
//! 2 MiB page there). Checked on the mapping itself: the `VmFlags` line of
//! `/proc/self/smaps` shows `hg` for a range advised `MADV_HUGEPAGE`, whether or not the
//! kernel then finds huge pages to map (that part, `AnonHugePages`, is only printed), and
//! `mincore` says which pages are resident.
#![cfg(target_os = "linux")]

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// The address range of a mapping's first line in `/proc/self/maps` or `smaps`
/// (`lo-hi perms ...`); None for smaps' other lines.
fn range_of(line: &str) -> Option<(usize, usize)> {
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

/// The `VmFlags` and `AnonHugePages` lines of the mapping that holds `p`.
fn mapping_of(p: *const u8) -> (Vec<String>, String) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let a = p as usize;
    let mut inside = false;
    let mut huge = String::new();
    for line in smaps.lines() {
        if let Some((lo, hi)) = range_of(line) {
            inside = lo <= a && a < hi;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with("AnonHugePages:") {
            huge = line.to_string();
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            return (flags.split_whitespace().map(String::from).collect(), huge);
        }
    }
    panic!("no mapping holds {p:p} in /proc/self/smaps");
}

/// Flags of the mapping of a 1000-byte block from a thread of its own (a fresh heap: the
/// block lies in a segment made now, as no other thread's segment is abandoned meanwhile:
/// `hold` keeps that thread alive until the caller sends on it).
fn block_in_new_thread() -> (
    Vec<String>,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let (hold, wait) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let mut v = vec![7u8; 1000];
        v[999] = 9;
        let (flags, huge) = mapping_of(v.as_ptr());
        println!("block {:p}: VmFlags {flags:?}, {huge}", v.as_ptr());
        tx.send(flags).unwrap();
        wait.recv().unwrap();
        assert_eq!(v[999], 9);
    });
    (rx.recv().unwrap(), hold, h)
}

#[test]
fn segments_made_while_on_are_advised_for_huge_pages() {
    let d = &shardalloc::DOMAIN;
    assert!(!d.large_os_pages(), "off by default");

    // off: this thread's segment has no huge-page advice
    let b = Box::new([1u8; 1000]);
    let (flags, _) = mapping_of(b.as_ptr());
    assert!(
        !flags.iter().any(|f| f == "hg"),
        "advised while off: {flags:?}"
    );

    // on: a segment made now is advised
    d.set_large_os_pages(true);
    assert!(d.large_os_pages());
    let (flags_on, hold_on, on) = block_in_new_thread();
    assert!(
        flags_on.iter().any(|f| f == "hg"),
        "a segment made with large OS pages on lacks MADV_HUGEPAGE: {flags_on:?}"
    );

    // off again: a segment made now is not (the other thread is alive, so its segment is
    // not taken over)
    d.set_large_os_pages(false);
    let (flags_off, hold_off, off) = block_in_new_thread();
    assert!(
        !flags_off.iter().any(|f| f == "hg"),
        "a segment made with large OS pages off is advised for them: {flags_off:?}"
    );
    for (hold, h) in [(hold_on, on), (hold_off, off)] {
        hold.send(()).unwrap();
        h.join().unwrap();
    }
    // (the flags were allocated by those threads: freed, their segments hold no block)
    drop((flags_on, flags_off));

    // a segment with large OS pages that empties goes to the region cache without making
    // its untouched second 2 MiB resident: the cache's node of such a region lies in its
    // first page, which the segment header already holds (written at the region's end,
    // the node faulted in a huge page there)
    // (the cache given back first, so that the segment is made fresh, with the option on)
    d.collect_abandoned();
    d.set_large_os_pages(true);
    let (lo, hi, before) = std::thread::spawn(|| {
        let v = vec![3u8; 1000];
        let (lo, hi) = mapping_bounds(v.as_ptr() as usize);
        let before = resident_pages(lo + (hi - lo) / 2, hi);
        drop(v);
        shardalloc::thread_done(); // the emptied segment goes to the cache now
        (lo, hi, before)
    })
    .join()
    .unwrap();
    d.set_large_os_pages(false);
    assert_eq!(hi - lo, 4 << 20, "the block's mapping is not one segment");
    let after = resident_pages(lo + (hi - lo) / 2, hi);
    println!("segment {lo:#x}: second half resident pages {before} -> {after}");
    assert_eq!(
        after, 0,
        "the emptied large-page segment's untouched second half became resident"
    );
    drop(b);
}

/// The bounds of the mapping that holds `addr` (a segment is a mapping of its own).
fn mapping_bounds(addr: usize) -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    for line in maps.lines() {
        let (lo, hi) = range_of(line).expect("a /proc/self/maps line starts with its range");
        if lo <= addr && addr < hi {
            return (lo, hi);
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// How many OS pages of `[lo, hi)` are resident (`mincore`).
fn resident_pages(lo: usize, hi: usize) -> usize {
    let n = (hi - lo) / 4096;
    let mut vec = vec![0u8; n];
    // SAFETY: `[lo, hi)` is mapped (part of a live mapping found in /proc/self/maps and
    // still held: a cached region stays mapped), page aligned; `vec` has a byte per page.
    let r = unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore({lo:#x}) failed");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}
