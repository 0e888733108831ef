//! The scenarios the command line can name. Each checks what it does with `assert!`: a
//! failed check panics, and the panic handler fails the run with the message.

use crate::apic;

mod bench;
mod check;
mod irq;
mod nest;
mod oom;
mod smoke;
mod smp;
mod stress;
mod timer;
mod xirq;

/// What the command line asked for.
pub struct Args<'a> {
    pub run: &'a str,
    pub seed: u64,
    pub tsc_per_us: u64,
    /// `verbose`: print more detail.
    pub verbose: bool,
    /// `icount`: QEMU runs with `-icount`, so the TSC counts instructions (for labels).
    pub icount: bool,
    /// `overlap=MS`: how long to look for CPUs that run at the same time at boot, at most
    /// (default 20 ms; the search ends as soon as they do).
    pub overlap_ms: u64,
    /// `only=WORD,WORD`: `bench` runs only the workloads whose name contains one of the
    /// words (for looking at a few workloads; the table then covers those only).
    pub only: Option<&'a str>,
}

impl<'a> Args<'a> {
    /// Parses `run=a,b seed=N verbose overlap=MS only=WORD` (other words are ignored; the default is `run=smoke`).
    pub fn parse(cmdline: &'a str, tsc_per_us: u64) -> Args<'a> {
        let mut a = Args {
            run: "smoke",
            seed: 1,
            tsc_per_us,
            verbose: false,
            icount: false,
            overlap_ms: 20,
            only: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix("run=") {
                a.run = v;
            } else if word == "verbose" {
                a.verbose = true;
            } else if let Some(v) = word.strip_prefix("only=") {
                a.only = Some(v);
            } else if word == "icount" {
                a.icount = true;
            } else if let Some(v) = word.strip_prefix("overlap=") {
                a.overlap_ms = v.parse().unwrap_or_else(|_| panic!("bad overlap {v:?}"));
            } else if let Some(v) = word.strip_prefix("seed=") {
                a.seed = v.parse().unwrap_or_else(|_| panic!("bad seed {v:?}"));
            }
        }
        a
    }
}

type Scenario = fn(&Args);

const ALL: &[(&str, Scenario)] = &[
    ("smoke", smoke::run),
    ("stress", stress::run),
    ("smp", smp::run),
    ("irq", irq::run),
    ("xirq", xirq::run),
    ("nest", nest::run),
    ("oom", oom::run),
    ("bench", bench::run),
];

/// Runs the scenarios named in `args.run`, in order.
pub fn run(args: &Args) {
    let names = if args.run == "all" {
        None
    } else {
        Some(args.run)
    };
    let mut list: [Option<(&str, Scenario)>; 16] = [None; 16];
    let mut n = 0;
    match names {
        None => {
            for &s in ALL {
                list[n] = Some(s);
                n += 1;
            }
        }
        Some(names) => {
            for name in names.split(',').filter(|s| !s.is_empty()) {
                let Some(&s) = ALL.iter().find(|(n, _)| *n == name) else {
                    panic!("unknown scenario {name:?}");
                };
                assert!(n < list.len(), "too many scenarios");
                list[n] = Some(s);
                n += 1;
            }
        }
    }
    for (name, f) in list[..n].iter().flatten() {
        println!("== {name} (seed {})", args.seed);
        let t0 = apic::rdtsc();
        f(args);
        // The core's invariant checks of every CPU's heap (with debug assertions; a no-op
        // in release builds).
        crate::smp::run_on_all(|_| crate::heap::ALLOC.check());
        let ms = (apic::rdtsc() - t0) / args.tsc_per_us / 1000;
        println!(
            "== {name}: ok ({ms} ms){}",
            if cfg!(debug_assertions) {
                "; heap check of every cpu: ok"
            } else {
                ""
            }
        );
    }
}
