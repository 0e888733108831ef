//! Boots the shardalloc kernel (boot/) under QEMU and runs its scenarios across memory
//! sizes, CPU counts, both machine types QEMU offers for `-kernel` (q35 and microvm),
//! single- and multi-threaded TCG, and once with a kernel built with debug assertions.
//!
//! A boot passes only on all of these, read from the serial log:
//! - QEMU exit status 33 (the kernel's `isa-debug-exit` success) and a `PASS` line;
//! - `cpus: N online` with N the `-smp` value (the kernel also fails the run itself when
//!   an AP does not start), and `cpus: run at the same time: yes` with multi-threaded TCG
//!   (the boot CPU saw the others' counters change thousands of times in 5 ms; a boot
//!   that fails on this alone, its host too busy to run the vCPUs at once, boots again, at
//!   most three times in all), `no` with single-threaded TCG (where the vCPUs take turns);
//! - `machine: NAME` with NAME the `-machine` type: the kernel names the machine from what
//!   it finds (a PCI host bridge 8086:29c0 is q35; no PCI and hardware-reduced ACPI is
//!   microvm), so a boot of one cannot pass for the other;
//! - `debug assertions on|off` as the kernel was built, and, with them on, the heap check
//!   of every CPU after every scenario;
//! - `== NAME: ok` for every scenario the boot asked for, and the counts that show the
//!   interrupt scenarios did their work: allocator operations in timer handlers (`irq`,
//!   `xirq`), cross-CPU frees in main flows and handlers and timer interrupts that landed
//!   inside one (`xirq`, more than one CPU); allocator operations at interrupt levels 1, 2
//!   and 3 (handlers nested three deep) and frees of blocks another level allocated
//!   (`nest`); `oom` hands out at least 95% of the free memory in small blocks.
//!
//! The negative boot (an unknown scenario) must exit with status 1 *and* print the
//! kernel's panic message: QEMU's own start-up errors exit with 1 too.
//!
//! Needs `qemu-system-x86_64` and the `x86_64-unknown-none` Rust target. Environment:
//! `SHARDALLOC_QEMU_JOBS` (parallel boots, default 2), `SHARDALLOC_QEMU_TIMEOUT` (seconds
//! per boot, default 180).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::process::{require, run_with_timeout, Outcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const QEMU: &str = "qemu-system-x86_64";

/// The scenarios of `run=all`, in the kernel's order (boot/src/scenario/mod.rs).
const ALL: &[&str] = &[
    "smoke", "stress", "smp", "irq", "xirq", "nest", "oom", "bench",
];
/// The scenarios where CPUs work at the same time, for the boots with multi-threaded TCG
/// (which are slow on two host cores: `bench` is the slowest, and its numbers mean nothing
/// when the vCPUs share the host's cores).
const CROSS_CPU: &str = "stress,smp,irq,xirq,nest";

/// Least share of the free memory, in percent, the `oom` scenario must hand out in small
/// blocks (a correct allocator hands out 99%; the kernel asserts the same bound).
const OOM_MIN_PERCENT: f64 = 95.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    /// `--release`: what users build.
    Release,
    /// `--profile kernel-debug`: release with debug assertions and overflow checks, so the
    /// core's invariant checks run.
    Debug,
}

impl Kernel {
    fn profile(self) -> &'static str {
        match self {
            Kernel::Release => "release",
            Kernel::Debug => "kernel-debug",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tcg {
    /// `-accel tcg,thread=single`: one host thread runs every vCPU in turn.
    Single,
    /// `-accel tcg,thread=multi`: one host thread per vCPU; they really overlap.
    Multi,
}

enum Expect {
    /// Exit status 33, `PASS`, and the checks of [`check_pass`].
    Pass,
    /// Exit status 1 and the kernel's panic report with this message.
    Panic(&'static str),
}

struct Boot {
    kernel: Kernel,
    /// `-machine` argument; the machine type is what comes before the first comma.
    machine: &'static str,
    tcg: Tcg,
    mem: &'static str,
    smp: u32,
    append: String,
    expect: Expect,
}

impl Boot {
    fn new(machine: &'static str, mem: &'static str, smp: u32, append: &str) -> Boot {
        Boot {
            kernel: Kernel::Release,
            machine,
            tcg: Tcg::Single,
            mem,
            smp,
            append: append.into(),
            expect: Expect::Pass,
        }
    }

    /// Multi-threaded TCG; the kernel looks up to 2 s for its CPUs running at the same
    /// time (on a busy host two vCPU threads do not run at once all the time).
    fn multi(mut self) -> Boot {
        self.tcg = Tcg::Multi;
        self.append.push_str(" overlap=2000");
        self
    }

    fn debug(mut self) -> Boot {
        self.kernel = Kernel::Debug;
        self
    }

    fn accel(&self) -> &'static str {
        match self.tcg {
            Tcg::Single => "tcg,thread=single",
            Tcg::Multi => "tcg,thread=multi",
        }
    }

    fn label(&self) -> String {
        format!(
            "{} kernel: -machine {} -accel {} -m {} -smp {} -append \"{}\"",
            self.kernel.profile(),
            self.machine,
            self.accel(),
            self.mem,
            self.smp,
            self.append
        )
    }

    /// The scenarios the command line asks for.
    fn scenarios(&self) -> Vec<&str> {
        let run = self
            .append
            .split_whitespace()
            .find_map(|w| w.strip_prefix("run="))
            .unwrap_or("smoke");
        if run == "all" {
            ALL.to_vec()
        } else {
            run.split(',').filter(|s| !s.is_empty()).collect()
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build_kernel(kernel: Kernel) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--profile",
            kernel.profile(),
            "-p",
            "shardalloc-kernel",
            "--target",
            "x86_64-unknown-none",
        ])
        // The kernel's codegen flags come from .cargo/config.toml's target section, which
        // RUSTFLAGS from the environment would replace.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .expect("running cargo to build the kernel");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("target may not be installed")
            || err.contains("can't find crate for `core`")
        {
            "\nhint: rustup target add x86_64-unknown-none"
        } else {
            ""
        };
        panic!(
            "building the {} kernel failed:\n{err}{hint}",
            kernel.profile()
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let path = target_dir
        .join("x86_64-unknown-none")
        .join(kernel.profile())
        .join("shardalloc-kernel");
    assert!(path.exists(), "kernel not found at {}", path.display());
    path
}

fn check_qemu() {
    require(
        QEMU,
        "these tests boot the kernel under QEMU",
        "qemu-system-x86",
    );
}

fn boot(kernel: &Path, b: &Boot, timeout: Duration) -> Outcome {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-machine", b.machine, "-accel", b.accel(), "-cpu", "max"])
        .arg("-kernel")
        .arg(kernel)
        .args([
            "-serial",
            "stdio",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args([
            "-m",
            b.mem,
            "-smp",
            &b.smp.to_string(),
            "-append",
            &b.append,
        ]);
    run_with_timeout(cmd, timeout)
}

/// The first line of `log` that starts with `prefix`.
fn line<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines().find(|l| l.starts_with(prefix))
}

/// The first line of `log` that starts with `prefix` and contains `phrase` (a scenario's
/// summary line, among its other lines).
fn summary<'a>(log: &'a str, prefix: &str, phrase: &str) -> Option<&'a str> {
    log.lines()
        .find(|l| l.starts_with(prefix) && l.contains(phrase))
}

/// The number just before `phrase` in `line` ("... 1738 allocator ops in handlers": the
/// number before "allocator ops in handlers" is 1738); punctuation around it is ignored.
fn number_before(line: &str, phrase: &str) -> Option<u64> {
    let at = line.find(phrase)?;
    let word = line[..at].split_whitespace().last()?;
    word.trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// What is wrong with a boot that had to pass (empty: nothing).
fn check_pass(b: &Boot, o: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    let log = &o.log;
    if o.status != Some(33) {
        bad.push(format!(
            "exit status {:?}, expected 33 (the kernel's success)",
            o.status
        ));
    }
    if !log.lines().any(|l| l.trim() == "PASS") {
        bad.push("no PASS line".into());
    }
    // A failed check in the kernel panics; a fault prints its report: that line says it
    // all (the missing lines that follow from it would only repeat it).
    if let Some(l) = log
        .lines()
        .find(|l| l.starts_with("!!! PANIC") || l.starts_with("!!! FAULT"))
    {
        bad.push(format!("the kernel failed: {l}"));
        return bad;
    }

    // All the CPUs asked for came online.
    match line(log, "cpus: ").and_then(|l| number_before(l, "online")) {
        Some(n) if n == u64::from(b.smp) => {}
        Some(n) => bad.push(format!(
            "the kernel reports {n} CPUs online, -smp is {}",
            b.smp
        )),
        None => bad.push("no \"cpus: N online\" line".into()),
    }

    // The vCPUs overlap with multi-threaded TCG, and take turns with single-threaded.
    if b.smp > 1 {
        let want = match b.tcg {
            Tcg::Multi => "yes",
            Tcg::Single => "no",
        };
        match line(log, "cpus: run at the same time: ") {
            Some(l) if l["cpus: run at the same time: ".len()..].starts_with(want) => {}
            Some(l) => bad.push(format!(
                "the boot is meant for {}-threaded TCG, but the kernel says: {l}",
                match b.tcg {
                    Tcg::Multi => "multi",
                    Tcg::Single => "single",
                }
            )),
            None => bad.push("no \"cpus: run at the same time\" line".into()),
        }
    }

    // The machine is the one the label claims.
    let want = b.machine.split(',').next().unwrap();
    match line(log, "machine: ") {
        Some(l) => {
            let got = l["machine: ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            if got != want {
                bad.push(format!(
                    "the kernel found machine type {got:?}, the boot claims {want:?}: {l}"
                ));
            }
        }
        None => bad.push("no \"machine: NAME\" line".into()),
    }

    // The kernel is the one built.
    let debug = b.kernel == Kernel::Debug;
    let want = format!("debug assertions {}", if debug { "on" } else { "off" });
    if !line(log, "shardalloc-kernel: ").is_some_and(|l| l.ends_with(&want)) {
        bad.push(format!(
            "the kernel does not say \"{want}\" (built with the {} profile)",
            b.kernel.profile()
        ));
    }

    // Every scenario asked for ran to its end (and, with debug assertions, every CPU's
    // heap passed the core's check after it).
    for name in b.scenarios() {
        match line(log, &format!("== {name}: ok ")) {
            None => bad.push(format!("no \"== {name}: ok\" line")),
            Some(l) if debug && !l.ends_with("heap check of every cpu: ok") => {
                bad.push(format!("no heap check after {name}: {l}"))
            }
            Some(_) => {}
        }
        match name {
            "smoke" => {
                if line(
                    log,
                    "smoke: a buffer doubling from 8 KiB to 4 MiB moved once",
                )
                .is_none()
                {
                    bad.push("smoke: no line of the in-place growth check".into());
                }
            }
            "irq" => match summary(log, "irq: ", "timer interrupts on")
                .and_then(|l| number_before(l, "allocator ops in handlers"))
            {
                Some(n) if n > 0 => {}
                Some(_) => bad.push("irq: no allocator operations in timer handlers".into()),
                None => bad.push("irq: no \"N allocator ops in handlers\" count".into()),
            },
            "xirq" => {
                let Some(l) = summary(log, "xirq: ", "timer interrupts handled") else {
                    bad.push("xirq: no summary line".into());
                    continue;
                };
                let mut need = vec![(
                    "allocator ops in handlers",
                    "allocator operations in timer handlers",
                )];
                if b.smp > 1 {
                    need.extend([
                        ("cross-CPU frees)", "cross-CPU frees in timer handlers"),
                        (
                            "cross-CPU frees in main flows",
                            "cross-CPU frees in main flows",
                        ),
                        (
                            "interrupts inside a cross-CPU free",
                            "timer interrupts inside a cross-CPU free",
                        ),
                    ]);
                }
                for (phrase, what) in need {
                    match number_before(l, phrase) {
                        Some(n) if n > 0 => {}
                        Some(_) => bad.push(format!("xirq: no {what}: {l}")),
                        None => bad.push(format!("xirq: no count of {what}: {l}")),
                    }
                }
            }
            "nest" => {
                let Some(l) = summary(log, "nest: ", "allocator ops at level 0") else {
                    bad.push("nest: no summary line".into());
                    continue;
                };
                for level in 0..4 {
                    let phrase = format!("level {level}: ");
                    let n = l.find(&phrase).and_then(|at| {
                        l[at + phrase.len()..]
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .and_then(|w| w.parse::<u64>().ok())
                    });
                    match n {
                        Some(n) if n > 0 => {}
                        _ => bad.push(format!(
                            "nest: no allocator operations at level {level}: {l}"
                        )),
                    }
                }
                match number_before(l, "frees of another level's blocks") {
                    Some(n) if n > 0 => {}
                    _ => bad.push(format!("nest: no frees of another level's blocks: {l}")),
                }
                if !l.ends_with("deepest level 3") {
                    bad.push(format!("nest: the interrupts did not nest three deep: {l}"));
                }
            }
            "oom" => {
                let small: Vec<&str> = log
                    .lines()
                    .filter(|l| l.starts_with("oom small: "))
                    .collect();
                if small.is_empty() {
                    bad.push("oom: no \"oom small:\" line".into());
                }
                for l in small {
                    let pct = l
                        .split_whitespace()
                        .find_map(|w| w.strip_suffix('%'))
                        .and_then(|p| p.parse::<f64>().ok());
                    match pct {
                        Some(p) if p >= OOM_MIN_PERCENT => {}
                        Some(p) => bad.push(format!(
                            "oom: only {p}% of the free memory handed out before out of memory (at least {OOM_MIN_PERCENT}% expected): {l}"
                        )),
                        None => bad.push(format!("oom: no percentage in: {l}")),
                    }
                }
            }
            _ => {}
        }
    }
    bad
}

/// What is wrong with a boot that had to fail with the kernel's panic `message`.
fn check_panic(o: &Outcome, message: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if o.status != Some(1) {
        bad.push(format!(
            "exit status {:?}, expected 1 (the kernel's failure)",
            o.status
        ));
    }
    if !o
        .log
        .lines()
        .any(|l| l.starts_with("!!! PANIC on cpu ") && l.contains(message))
    {
        bad.push(format!("no kernel panic with {message:?}"));
    }
    if !o.log.lines().any(|l| l.trim() == "FAIL: panic") {
        bad.push("no \"FAIL: panic\" line".into());
    }
    bad
}

/// Runs the boots on `jobs` threads; returns the failures' reports.
fn run_all(kernels: &[(Kernel, PathBuf)], boots: &[Boot]) -> Vec<String> {
    let jobs: usize = std::env::var("SHARDALLOC_QEMU_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let timeout = Duration::from_secs(
        std::env::var("SHARDALLOC_QEMU_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(b) = boots.get(i) else { break };
                let kernel = &kernels.iter().find(|(k, _)| *k == b.kernel).unwrap().1;
                let mut o = boot(kernel, b, timeout);
                let mut bad = match b.expect {
                    Expect::Pass => check_pass(b, &o),
                    Expect::Panic(message) => check_panic(&o, message),
                };
                // A multi-threaded boot whose only fault is that its vCPUs did not overlap
                // (the host had no second core free for those 5 ms: other work on the
                // machine) boots again, at most twice: the overlap must still be seen, in
                // one of the three boots, and every other check holds in each.
                let mut tries = 1;
                while tries < 3
                    && matches!(b.expect, Expect::Pass)
                    && b.tcg == Tcg::Multi
                    && bad.len() == 1
                    && bad[0].contains("but the kernel says: cpus: run at the same time: no")
                {
                    eprintln!(
                        "qemu {}: the vCPUs did not overlap (a loaded host?): booting again",
                        b.label()
                    );
                    tries += 1;
                    o = boot(kernel, b, timeout);
                    bad = check_pass(b, &o);
                }
                if o.timed_out {
                    bad.insert(0, format!("timed out after {} s", timeout.as_secs()));
                }
                let what = b.label();
                eprintln!(
                    "qemu {what}: {} in {:.1} s (exit status {:?})",
                    if bad.is_empty() { "ok" } else { "FAILED" },
                    o.secs,
                    o.status,
                );
                if !bad.is_empty() {
                    failures.lock().unwrap().push(format!(
                        "=== {what}:\n  - {}\nserial log:\n{}\n=== end of log",
                        bad.join("\n  - "),
                        o.log
                    ));
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn qemu_scenarios() {
    check_qemu();
    let kernels: Vec<(Kernel, PathBuf)> = [Kernel::Release, Kernel::Debug]
        .into_iter()
        .map(|k| (k, build_kernel(k)))
        .collect();
    // The longest boots first, so that two jobs finish close together.
    let mut boots = vec![
        // Multi-threaded TCG: the vCPUs run at the same time on the host's cores.
        Boot::new("q35", "64M", 4, &format!("run={CROSS_CPU} seed=21")).multi(),
        Boot::new("q35", "64M", 2, &format!("run={CROSS_CPU} seed=22")).multi(),
        // The core's invariant checks: every scenario once with debug assertions, and the
        // cross-CPU ones again with vCPUs that overlap.
        Boot::new("q35", "64M", 4, "run=all seed=31").debug(),
        Boot::new("q35", "24M", 2, "run=stress,smp,irq,xirq,nest,oom seed=32")
            .debug()
            .multi(),
        // The other machine type QEMU offers for -kernel: no PCI, hardware-reduced ACPI,
        // a memory map with a zero-size type-0 entry.
        Boot::new("microvm", "64M", 4, "run=all seed=11"),
        Boot::new("microvm", "24M", 2, &format!("run={CROSS_CPU} seed=12")).multi(),
    ];
    // Every scenario, in one boot, for each memory size and CPU count.
    let mut seed = 1;
    for mem in ["512M", "64M", "24M"] {
        for smp in [4, 2, 1] {
            boots.push(Boot::new("q35", mem, smp, &format!("run=all seed={seed}")));
            seed += 1;
        }
    }
    // Each scenario alone (they must not depend on each other's leftovers).
    for name in ALL {
        boots.push(Boot::new("q35", "64M", 2, &format!("run={name} seed=77")));
    }
    // A failing check must fail the run: an unknown scenario panics in the kernel.
    boots.push(Boot {
        expect: Expect::Panic("unknown scenario \"no-such-scenario\""),
        ..Boot::new("q35", "24M", 1, "run=no-such-scenario")
    });

    let failures = run_all(&kernels, &boots);
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        panic!(
            "{} of {} QEMU boots failed (logs above)",
            failures.len(),
            boots.len()
        );
    }
}
