//! Statistics: what was allocated, freed, committed, purged, with peaks.
//!
//! Counters are updated on slow paths only (page and segment events), never on the
//! malloc/free fast path, so they stay on in release builds at no measurable cost.
//! Block-level counts (`allocated`) are synchronised per page whenever the owning heap
//! takes the page up on its generic path (collect, retire, queue walks, thread exit; not
//! the short refills of a page from its own frees or fresh blocks), so they can lag the
//! truth by the blocks handed out from pages since their last such event; and
//! each thread adds its changes to the shared counters in batches of 256 KiB (at once on
//! collection, thread exit, and when the thread itself reads the statistics).

use crate::sync::{AtomicI64, Ordering::Relaxed};
use core::fmt;

/// One counter with its peak and its running total of increases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCount {
    /// Current value.
    pub current: i64,
    /// Highest value seen.
    pub peak: i64,
    /// Sum of all increases (e.g. total bytes ever allocated).
    pub total: i64,
    /// Sum of all decreases (e.g. total bytes ever freed).
    pub freed: i64,
}

/// A snapshot of an allocator's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in blocks handed out (block sizes, not requested sizes).
    pub allocated: StatCount,
    /// Bytes of huge blocks (part of `allocated`).
    pub huge: StatCount,
    /// Bytes of segments reserved from the page source.
    pub reserved: StatCount,
    /// Bytes committed (usable memory backed by the source).
    pub committed: StatCount,
    /// Segments live.
    pub segments: StatCount,
    /// Pages in use by heaps.
    pub pages: StatCount,
    /// Bytes purged (decommitted or reset) back to the source.
    pub purged: i64,
    /// Segments abandoned by exiting threads (a count).
    pub abandoned: i64,
    /// Abandoned segments reclaimed by other threads (a count).
    pub reclaimed: i64,
    /// Thread (or CPU) heaps initialised, and currently alive.
    pub threads: StatCount,
    /// Allocations that failed for lack of memory.
    pub out_of_memory: i64,
}

/// The counters, kept in a [`Domain`](crate::Domain) and updated with relaxed atomics.
pub(crate) struct AtomicStatCount {
    current: AtomicI64,
    peak: AtomicI64,
    total: AtomicI64,
    freed: AtomicI64,
}

impl AtomicStatCount {
    pub(crate) const fn new() -> Self {
        AtomicStatCount {
            current: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            total: AtomicI64::new(0),
            freed: AtomicI64::new(0),
        }
    }

    #[inline]
    pub(crate) fn add(&self, amount: i64) {
        if amount == 0 {
            return;
        }
        let now = self.current.fetch_add(amount, Relaxed) + amount;
        if amount > 0 {
            self.total.fetch_add(amount, Relaxed);
            // (the peak only grows: one that holds `now` already needs no read-modify-write,
            // which costs a compare-exchange loop)
            if now > self.peak.load(Relaxed) {
                self.peak.fetch_max(now, Relaxed);
            }
        } else {
            self.freed.fetch_sub(amount, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn sub(&self, amount: i64) {
        self.add(-amount)
    }

    fn get(&self) -> StatCount {
        StatCount {
            current: self.current.load(Relaxed),
            peak: self.peak.load(Relaxed),
            total: self.total.load(Relaxed),
            freed: self.freed.load(Relaxed),
        }
    }

    fn reset(&self) {
        let cur = self.current.load(Relaxed);
        self.peak.store(cur, Relaxed);
        self.total.store(0, Relaxed);
        self.freed.store(0, Relaxed);
    }
}

pub(crate) struct AtomicStats {
    pub allocated: AtomicStatCount,
    pub huge: AtomicStatCount,
    pub reserved: AtomicStatCount,
    pub committed: AtomicStatCount,
    pub segments: AtomicStatCount,
    pub pages: AtomicStatCount,
    pub threads: AtomicStatCount,
    pub purged: AtomicI64,
    pub abandoned: AtomicI64,
    pub reclaimed: AtomicI64,
    pub out_of_memory: AtomicI64,
}

impl AtomicStats {
    pub(crate) const fn new() -> Self {
        AtomicStats {
            allocated: AtomicStatCount::new(),
            huge: AtomicStatCount::new(),
            reserved: AtomicStatCount::new(),
            committed: AtomicStatCount::new(),
            segments: AtomicStatCount::new(),
            pages: AtomicStatCount::new(),
            threads: AtomicStatCount::new(),
            purged: AtomicI64::new(0),
            abandoned: AtomicI64::new(0),
            reclaimed: AtomicI64::new(0),
            out_of_memory: AtomicI64::new(0),
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            allocated: self.allocated.get(),
            huge: self.huge.get(),
            reserved: self.reserved.get(),
            committed: self.committed.get(),
            segments: self.segments.get(),
            pages: self.pages.get(),
            threads: self.threads.get(),
            purged: self.purged.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
            reclaimed: self.reclaimed.load(Relaxed),
            out_of_memory: self.out_of_memory.load(Relaxed),
        }
    }

    /// Resets peaks to the current values and totals to zero.
    pub(crate) fn reset(&self) {
        for c in [
            &self.allocated,
            &self.huge,
            &self.reserved,
            &self.committed,
            &self.segments,
            &self.pages,
            &self.threads,
        ] {
            c.reset();
        }
        self.purged.store(0, Relaxed);
        self.abandoned.store(0, Relaxed);
        self.reclaimed.store(0, Relaxed);
        self.out_of_memory.store(0, Relaxed);
    }
}

/// Writes a byte amount with a binary unit.
struct Bytes(i64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let a = v.unsigned_abs();
        if a >= 1 << 30 {
            write!(f, "{:.1} GiB", v as f64 / (1u64 << 30) as f64)
        } else if a >= 1 << 20 {
            write!(f, "{:.1} MiB", v as f64 / (1u64 << 20) as f64)
        } else if a >= 1 << 10 {
            write!(f, "{:.1} KiB", v as f64 / 1024.0)
        } else {
            write!(f, "{} B", v)
        }
    }
}

impl StatCount {
    fn write_json(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"current\": {}, \"peak\": {}, \"total\": {}, \"freed\": {}}}",
            self.current, self.peak, self.total, self.freed
        )
    }
}

impl Stats {
    /// The statistics as a JSON object (`format!("{}", stats.json())`): each counter as
    /// `{"current", "peak", "total", "freed"}`, each event count as a number. Writes
    /// through `fmt`, without allocating.
    pub fn json(&self) -> impl fmt::Display + '_ {
        struct Json<'a>(&'a Stats);
        impl fmt::Display for Json<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let s = self.0;
                f.write_str("{")?;
                for (i, (name, c)) in [
                    ("allocated", &s.allocated),
                    ("huge", &s.huge),
                    ("reserved", &s.reserved),
                    ("committed", &s.committed),
                    ("segments", &s.segments),
                    ("pages", &s.pages),
                    ("threads", &s.threads),
                ]
                .into_iter()
                .enumerate()
                {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{name}\": ")?;
                    c.write_json(f)?;
                }
                write!(
                    f,
                    ", \"purged\": {}, \"abandoned\": {}, \"reclaimed\": {}, \"out_of_memory\": {}}}",
                    s.purged, s.abandoned, s.reclaimed, s.out_of_memory
                )
            }
        }
        Json(self)
    }
}

impl fmt::Display for Stats {
    /// A table like `mi_stats_print`'s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            "", "peak", "total", "freed", "current"
        )?;
        let bytes_rows: [(&str, &StatCount); 4] = [
            ("allocated", &self.allocated),
            ("huge", &self.huge),
            ("reserved", &self.reserved),
            ("committed", &self.committed),
        ];
        for (name, c) in bytes_rows {
            writeln!(
                f,
                "{:<12} {:>12} {:>12} {:>12} {:>12}",
                name,
                Bytes(c.peak).to_padded(),
                Bytes(c.total).to_padded(),
                Bytes(c.freed).to_padded(),
                Bytes(c.current).to_padded()
            )?;
        }
        let count_rows: [(&str, &StatCount); 3] = [
            ("segments", &self.segments),
            ("pages", &self.pages),
            ("threads", &self.threads),
        ];
        for (name, c) in count_rows {
            writeln!(
                f,
                "{:<12} {:>12} {:>12} {:>12} {:>12}",
                name, c.peak, c.total, c.freed, c.current
            )?;
        }
        writeln!(f, "{:<12} {:>12}", "purged", Bytes(self.purged).to_padded())?;
        writeln!(
            f,
            "{:<12} {:>12} (reclaimed {})",
            "abandoned", self.abandoned, self.reclaimed
        )?;
        write!(f, "{:<12} {:>12}", "out of mem", self.out_of_memory)
    }
}

/// Formats into a small stack buffer so that padding works (no allocation).
struct Padded {
    buf: [u8; 24],
    len: usize,
}

impl Bytes {
    fn to_padded(&self) -> Padded {
        let mut p = Padded {
            buf: [0; 24],
            len: 0,
        };
        let _ = fmt::write(&mut p, format_args!("{}", self));
        p
    }
}

impl fmt::Write for Padded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for Padded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY-free: only whole `&str` pieces are copied in, truncation aside; fall back
        // to a lossy view if truncation split a character.
        let s = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?");
        f.pad(s)
    }
}
