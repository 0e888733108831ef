//! `Domain::set_large_os_pages` (C: `MIMALLOC_ALLOW_LARGE_OS_PAGES`): segments made while
//! it is on are advised for transparent huge pages, the others are not, and a cached
//! region taken for a segment made after it is turned off has its advice taken back.
//! Checked on the mapping itself: the `VmFlags` line of `/proc/self/smaps` shows `hg` for
//! a range advised `MADV_HUGEPAGE` and `nh` for `MADV_NOHUGEPAGE`, whether or not the
//! kernel then finds huge pages to map (that part, `AnonHugePages`, is only printed).
#![cfg(target_os = "linux")]

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// The `VmFlags` and `AnonHugePages` lines of the mapping that holds `p`.
fn mapping_of(p: *const u8) -> (Vec<String>, String) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let a = p as usize;
    let mut inside = false;
    let mut huge = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo <= a && a < hi;
                continue;
            }
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
    let (flags, hold_on, on) = block_in_new_thread();
    assert!(
        flags.iter().any(|f| f == "hg"),
        "a segment made with large OS pages on lacks MADV_HUGEPAGE: {flags:?}"
    );

    // off again: a segment made now is not (the other thread is alive, so its segment is
    // not taken over)
    d.set_large_os_pages(false);
    let (flags, hold_off, off) = block_in_new_thread();
    assert!(
        !flags.iter().any(|f| f == "hg"),
        "a segment made with large OS pages off is advised for them: {flags:?}"
    );
    for (hold, h) in [(hold_on, on), (hold_off, off)] {
        hold.send(()).unwrap();
        h.join().unwrap();
    }
    drop(b);
}
