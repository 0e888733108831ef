//! The segment-region cache: regions of segments that emptied, kept so that the next
//! segment reuses them without a call to the source and without faulting fresh memory in,
//! as mimalloc keeps freed segments in its arenas.
//!
//! A cached region goes through two stages (as an arena's free memory in mimalloc):
//! - **resident**: as the segment left it, for a short while (ten purge delays); a new
//!   segment that takes it touches memory that is already there;
//! - **purged**: then its memory is purged (all but the OS page that holds its
//!   bookkeeping) and the region stays mapped a while longer (a hundred purge delays),
//!   so that threads that come and go still reuse its address space without mapping calls;
//!   then it goes back to the source.
//!
//! The resident stage is also bounded by size: [`Os`] purges its oldest regions at once
//! when it holds more than a fraction of the memory in use, so that the cache never keeps
//! much more resident than the program holds (the segments that a crowd of exiting threads
//! emptied are purged, but stay mapped for the threads that come next).
//!
//! There is no bound on the number of regions: time bounds them, so that what is cached
//! follows what the program recently held (a program whose threads all exit at once and
//! are replaced finds all their segments here). The bookkeeping of a region lives in the
//! region itself (a [`Node`] at its start), so the cache costs no memory of its own.
//!
//! Only sources without reserve use it (their memory is always committed and writable, so
//! a cached region can hold its node and serve any new segment). This module is the data
//! structure alone; [`Os`] decides what goes in, purges, and gives what comes out back to
//! the source, always outside the cache's lock.
//!
//! [`Os`]: crate::os::Os

use crate::list::{Linked, Links, List};
use crate::sync::{AtomicI64, AtomicUsize, Ordering};
use core::mem::size_of;
use core::ptr;

/// A cached region, as handed in and out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cached {
    pub ptr: *mut u8,
    pub size: usize,
    /// Bytes of it counted in the `committed` statistic.
    pub committed: usize,
    /// Domain time at which it moves on to the next stage.
    pub expire: u64,
    /// Domain time at which it came into the cache.
    pub since: u64,
    /// Its memory (but the OS page of its node, see `node_of`) was purged.
    pub purged: bool,
    /// The region was last advised for large OS pages (it held a huge block).
    pub large: bool,
}

/// The bookkeeping of a cached region, written at its start, or at its end for a region
/// of a huge block (see [`node_of`]).
///
/// Invariant: the node's own address is `node_of(&cached)`, and the node is in the cache's
/// list of its stage (`resident` or `purged`, as `cached.purged` says).
pub(crate) struct Node {
    links: Links<Node>,
    cached: Cached,
}

/// Where the node of a cached region lies: at its start, or for a region larger than a
/// segment last advised for large OS pages (one that held a huge block) in its last bytes
/// (inside its last OS page: a node is far smaller than one, and the region's end is page
/// aligned). A purged region keeps the OS page of its node (`Os::cache_purge`), and the
/// kernel then keeps that 2 MiB's page table: its other 511 pages fault in 4 KiB at a time
/// when the region is reused. At the start, that is the first 2 MiB of every huge block
/// that reuses a purged region (large-realloc: ~5,500 of its page faults); at the end,
/// where a huge block's region ends (on a large OS page, see `segment_alloc::huge_grain`),
/// only a block that fills its region touches it. A region of one segment advised for
/// large OS pages (`Domain::set_large_os_pages`) keeps its node at the start, in the
/// segment header's page: written at its end, the node made the segment's untouched last
/// 2 MiB resident as a huge page (cache-scratch: 20 MiB for 5 segments of a few pages).
#[inline]
pub(crate) fn node_at_end(c: &Cached) -> bool {
    c.large && c.size > crate::size_class::SEGMENT_SIZE
}

/// The node's address (see [`node_at_end`]).
pub(crate) fn node_of(c: &Cached) -> *mut Node {
    if node_at_end(c) {
        let end = c.ptr as usize + c.size - size_of::<Node>();
        (end & !(core::mem::align_of::<Node>() - 1)) as *mut Node
    } else {
        c.ptr as *mut Node
    }
}

/// The kind of the cache's lists (a node is in one of them at a time).
struct Stage;

// SAFETY: `links` returns the node's one `links` field, the only kind of list a node is in.
unsafe impl Linked<Stage> for Node {
    unsafe fn links(node: *mut Self) -> *mut Links<Self> {
        // SAFETY: `node` is live (the caller's contract); no reference is made.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

/// What the caller must do with a region that `take_due` handed out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Due {
    /// Purge its memory (but its node's OS page), then `put` it back as purged.
    Purge,
    /// Give it back to the source.
    Free,
}

/// Invariants: `resident` and `purged` hold the cached regions of each stage, newest
/// first; `bytes[0]`/`bytes[1]` are the sums of their sizes, `count` their number;
/// `trimmable` is the sum of the sizes of the resident ones of at most [`TRIM_SIZE_MAX`]
/// bytes.
struct Lists {
    resident: List<Node, Stage>,
    purged: List<Node, Stage>,
    bytes: [usize; 2],
    count: usize,
    trimmable: usize,
}

/// The largest cached region that the bound on the resident stage purges early (see
/// `Os::cache_trim`): a segment's, as the segments that exiting threads emptied are. A
/// larger one held a huge block, and stays resident for its time (ten to a hundred purge
/// delays), as mimalloc's arenas keep a freed block's memory that long: a program that
/// frees a buffer that large tends to make another soon. (large-realloc: trimmed one purge
/// delay after they came, the regions of its 4-34 MiB buffers were faulted in again by the
/// next buffers; its run took 205-275 MiB of fresh pages from the kernel with them
/// trimmed, 185-220 without, at the same peak RSS.)
pub(crate) const TRIM_SIZE_MAX: usize = crate::size_class::SEGMENT_SIZE;

/// Whether a cached region of `size` bytes counts in `Lists::trimmable` when resident.
fn trimmable(size: usize) -> bool {
    size <= TRIM_SIZE_MAX
}

// SAFETY: the cached regions are owned by the cache alone and only touched under its lock.
unsafe impl Send for Lists {}

impl Lists {
    fn list(&mut self, purged: bool) -> &mut List<Node, Stage> {
        if purged {
            &mut self.purged
        } else {
            &mut self.resident
        }
    }

    /// Takes `node` out of its list.
    ///
    /// # Safety
    /// `node` is a member of the cache.
    unsafe fn remove(&mut self, node: *mut Node) -> Cached {
        // SAFETY: members are live nodes at the start of cached regions, touched only
        // under the cache's lock (held: `&mut self`).
        let c = unsafe { (*node).cached };
        // SAFETY: `node` is a member of the list of its stage (the `Node` invariant).
        unsafe { self.list(c.purged).remove(node) };
        self.bytes[c.purged as usize] -= c.size;
        if !c.purged && trimmable(c.size) {
            self.trimmable -= c.size;
        }
        self.count -= 1;
        c
    }

    /// The smallest region of `min..=max` bytes in the list of one stage (the largest with
    /// `largest`), the newest of equal ones; with `large`, only one whose `large` flag is
    /// that.
    fn best_fit(
        &self,
        purged: bool,
        min: usize,
        max: usize,
        largest: bool,
        large: Option<bool>,
    ) -> *mut Node {
        let first = if purged {
            self.purged.first
        } else {
            self.resident.first
        };
        let mut best: *mut Node = ptr::null_mut();
        let mut best_size = 0;
        let mut n = first;
        while !n.is_null() {
            // SAFETY: `n` is a member of the list (walked from its first), live.
            let (size, flag, next) = unsafe {
                (
                    (*n).cached.size,
                    (*n).cached.large,
                    List::<Node, Stage>::next(n),
                )
            };
            let better = best.is_null() || (size > best_size) == largest;
            let kind = large.is_none_or(|l| l == flag);
            if size >= min && size <= max && better && size != best_size && kind {
                best = n;
                best_size = size;
                if size == if largest { max } else { min } {
                    break; // nothing fits better
                }
            }
            n = next;
        }
        best
    }
}

/// See the module documentation.
pub(crate) struct RegionCache {
    inner: spin::Mutex<Lists>,
    /// `inner.count`, readable without the lock (the common case is an empty cache).
    len: AtomicUsize,
    /// `inner.bytes[0]` and `inner.bytes[0] + inner.bytes[1]`, readable without the lock.
    resident_bytes: AtomicUsize,
    total_bytes: AtomicUsize,
    /// `inner.trimmable`, readable without the lock.
    trimmable_bytes: AtomicUsize,
    /// No region is due before this domain time (`i64::MAX` when empty); read without the
    /// lock, so that a collection with nothing due does not take it.
    next_due: AtomicI64,
}

impl RegionCache {
    pub(crate) const fn new() -> Self {
        RegionCache {
            inner: spin::Mutex::new(Lists {
                resident: List::new(),
                purged: List::new(),
                bytes: [0, 0],
                count: 0,
                trimmable: 0,
            }),
            len: AtomicUsize::new(0),
            resident_bytes: AtomicUsize::new(0),
            total_bytes: AtomicUsize::new(0),
            trimmable_bytes: AtomicUsize::new(0),
            next_due: AtomicI64::new(i64::MAX),
        }
    }

    /// Bytes of the cached regions in the resident stage and in all (read without the
    /// lock, so possibly a moment out of date).
    pub(crate) fn bytes(&self) -> (usize, usize) {
        (
            self.resident_bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }

    /// Bytes of the resident regions of at most [`TRIM_SIZE_MAX`] bytes (read without the
    /// lock).
    pub(crate) fn trimmable_bytes(&self) -> usize {
        self.trimmable_bytes.load(Ordering::Relaxed)
    }

    /// Takes the oldest region of the resident stage of at most [`TRIM_SIZE_MAX`] bytes if
    /// it came into the cache at `before` or earlier.
    pub(crate) fn take_oldest_resident(&self, before: u64) -> Option<Cached> {
        if self.is_empty() {
            return None;
        }
        let mut c = self.inner.lock();
        let mut n = c.resident.last;
        // (oldest first: from the last member back; newer ones came later, so the walk ends
        // at the first one that came after `before`)
        // SAFETY: a non-null `n` is a member, live: the last, or a member's `prev`.
        while !n.is_null() && unsafe { (*n).cached.since } <= before {
            // SAFETY: as just said.
            if trimmable(unsafe { (*n).cached.size }) {
                // SAFETY: `n` is a member of the resident list.
                let e = unsafe { c.remove(n) };
                self.publish(&c);
                return Some(e);
            }
            // SAFETY: `n` is a member, live; its links are read through the pointer.
            n = unsafe { (*<Node as Linked<Stage>>::links(n)).prev };
        }
        None
    }

    /// Updates the lock-free mirrors of `c`'s counts.
    fn publish(&self, c: &Lists) {
        self.len.store(c.count, Ordering::Relaxed);
        self.resident_bytes.store(c.bytes[0], Ordering::Relaxed);
        self.total_bytes
            .store(c.bytes[0] + c.bytes[1], Ordering::Relaxed);
        self.trimmable_bytes.store(c.trimmable, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Takes the smallest cached region of `min..=max` bytes (the largest with `largest`), a
    /// resident one if one fits (one last advised for large OS pages as `large` says
    /// first); else, with `purged`, a purged one advised as `large` says, else (only for
    /// `large == false`) any purged one.
    ///
    /// A purged region faults its memory in again, and how depends on its past: where it
    /// was touched with small OS pages the kernel keeps its page tables, so that it faults
    /// in 4 KiB at a time even once advised for large ones (512 faults per 2 MiB where a
    /// fresh mapping takes one). So a huge block (`large`) takes no purged region that held
    /// small pages, and other segments take purged regions of huge blocks last.
    pub(crate) fn take(
        &self,
        min: usize,
        max: usize,
        largest: bool,
        large: bool,
        purged: bool,
    ) -> Option<Cached> {
        if self.is_empty() {
            return None;
        }
        let mut c = self.inner.lock();
        let mut n = c.best_fit(false, min, max, largest, Some(large));
        if n.is_null() {
            n = c.best_fit(false, min, max, largest, None);
        }
        if n.is_null() && purged {
            n = c.best_fit(true, min, max, largest, Some(large));
        }
        if n.is_null() && purged && !large {
            n = c.best_fit(true, min, max, largest, None);
        }
        if n.is_null() {
            return None;
        }
        // SAFETY: `n` was found in one of the lists.
        let e = unsafe { c.remove(n) };
        self.publish(&c);
        Some(e)
    }

    /// Whether a region of at least `min` bytes is in the resident stage (a look without
    /// taking it: another thread may take it first).
    pub(crate) fn has_resident(&self, min: usize) -> bool {
        if self.is_empty() || self.resident_bytes.load(Ordering::Relaxed) < min {
            return false;
        }
        let c = self.inner.lock();
        !c.best_fit(false, min, usize::MAX, true, None).is_null()
    }

    /// Takes the cached region that starts at `ptr`, if one does.
    pub(crate) fn take_at(&self, ptr: *mut u8) -> Option<Cached> {
        if self.is_empty() {
            return None;
        }
        let mut c = self.inner.lock();
        for first in [c.resident.first, c.purged.first] {
            let mut n = first;
            while !n.is_null() {
                // SAFETY: `n` is a member of the list (walked from its first), live.
                let (start, next) = unsafe { ((*n).cached.ptr, List::<Node, Stage>::next(n)) };
                if start == ptr {
                    // SAFETY: `n` was found in one of the lists.
                    let e = unsafe { c.remove(n) };
                    self.publish(&c);
                    return Some(e);
                }
                n = next;
            }
        }
        None
    }

    /// Keeps `entry` (in the stage `entry.purged` says, until `entry.expire`).
    ///
    /// # Safety
    /// `entry` is a region of ours (from the source, unused, not in the cache), committed
    /// and writable where its node goes ([`node_of`]: its first `size_of::<Node>()` bytes,
    /// or with [`node_at_end`] its last ones), at least a node's size; it starts aligned for a
    /// `Node` and its size is a multiple of a `Node`'s alignment; the cache owns it from
    /// now on.
    pub(crate) unsafe fn put(&self, entry: Cached) {
        debug_assert!(entry.size >= size_of::<Node>());
        let node = node_of(&entry);
        // SAFETY: the region is ours and writable at its start (the `# Safety` contract):
        // the node is written before the region becomes reachable through the lists.
        unsafe {
            ptr::write(
                node,
                Node {
                    links: Links::new(),
                    cached: entry,
                },
            )
        };
        let mut c = self.inner.lock();
        // SAFETY: the node was just written and is in no list.
        unsafe { c.list(entry.purged).push_front(node) };
        c.bytes[entry.purged as usize] += entry.size;
        if !entry.purged && trimmable(entry.size) {
            c.trimmable += entry.size;
        }
        c.count += 1;
        self.publish(&c);
        self.next_due
            .fetch_min(entry.expire.min(i64::MAX as u64) as i64, Ordering::Relaxed);
    }

    /// Takes one region that is due at `now` (every region with `force`), with what to do
    /// with it: purge a resident one, free a purged one (free any with `force`).
    pub(crate) fn take_due(&self, now: u64, force: bool) -> Option<(Cached, Due)> {
        if self.is_empty() || (!force && (now.min(i64::MAX as u64) as i64) < self.next_due()) {
            return None;
        }
        let mut c = self.inner.lock();
        // the oldest of each stage is its last; regions of one stage mostly expire in the
        // order they came (the delay rarely changes), so the last one is the first due
        let mut due = None;
        for purged in [true, false] {
            let last = c.list(purged).last;
            // SAFETY: a non-null `last` is a member, live.
            if !last.is_null() && (force || unsafe { (*last).cached.expire } <= now) {
                due = Some(last);
                break;
            }
        }
        let Some(n) = due else {
            // nothing due: remember when the next is
            let next = [c.resident.last, c.purged.last]
                .iter()
                .filter(|n| !n.is_null())
                // SAFETY: non-null list ends are members, live.
                .map(|&n| unsafe { (*n).cached.expire }.min(i64::MAX as u64) as i64)
                .min()
                .unwrap_or(i64::MAX);
            self.next_due.store(next, Ordering::Relaxed);
            return None;
        };
        // SAFETY: `n` is a list's last member.
        let e = unsafe { c.remove(n) };
        self.publish(&c);
        let what = if force || e.purged {
            Due::Free
        } else {
            Due::Purge
        };
        Some((e, what))
    }

    fn next_due(&self) -> i64 {
        self.next_due.load(Ordering::Relaxed)
    }

    /// Before `fork()`: takes the lock (released by `fork_release`).
    pub(crate) fn fork_lock(&self) {
        core::mem::forget(self.inner.lock());
    }

    /// After `fork()`: releases the lock taken by `fork_lock`.
    ///
    /// # Safety
    /// `fork_lock` was called on this thread (in this process or its parent).
    pub(crate) unsafe fn fork_release(&self) {
        // SAFETY: `fork_lock` holds the lock with its guard forgotten.
        unsafe { self.inner.force_unlock() };
    }
}
