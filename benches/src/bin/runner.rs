//! The benchmark runner: every workload x allocator in a process of its own, repeated;
//! median time and peak RSS; Markdown tables and SVG charts of ratios to shardalloc.
//!
//! ```text
//! runner [--quick] [--reps N] [--timeout SECS] [--alloc a,b,..] [--workload x,y,..]
//!        [--out DIR] [--callgrind]
//! ```
//! The `bench-<alloc>` binaries are looked up next to this executable; allocators whose
//! binary is missing are left out (the shardalloc one exists only when it was built with
//! `--features shardalloc`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardbench::WORKLOADS;

/// Allocators in report order; the first present one is the reference of the ratios.
const ALLOCATORS: &[&str] = &[
    "shardalloc",
    "mimalloc-v3",
    "mimalloc-v2",
    "shardalloc-thp",
    "rusty_alloc",
    "jemalloc",
    "snmalloc",
    "system",
    "baby-mimalloc",
    "talc",
    "rlsf",
    "buddy",
    "linked-list",
];

struct Opts {
    quick: bool,
    reps: usize,
    timeout: Duration,
    allocs: Option<Vec<String>>,
    workloads: Option<Vec<String>>,
    out: PathBuf,
    /// `--out` was given (else the directory depends on whether the run is complete).
    out_given: bool,
    callgrind: bool,
    /// MiB of huge OS pages made resident and given back before every run (0: none); see
    /// [`warm_huge_pages`].
    warm_mib: usize,
}

fn parse_opts() -> Opts {
    let here = bench_dir();
    let mut o = Opts {
        quick: false,
        reps: 0,
        timeout: Duration::ZERO,
        allocs: None,
        workloads: None,
        out: here.join("results"),
        out_given: false,
        callgrind: false,
        warm_mib: 512,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let list = |s: &str| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    while i < args.len() {
        let val = |i: usize| -> &str {
            args.get(i + 1).map(|s| s.as_str()).unwrap_or_else(|| {
                eprintln!("{} needs a value", args[i]);
                std::process::exit(2)
            })
        };
        match args[i].as_str() {
            "--quick" => o.quick = true,
            "--callgrind" => o.callgrind = true,
            "--reps" => {
                o.reps = val(i).parse().expect("--reps N");
                i += 1;
            }
            "--timeout" => {
                o.timeout = Duration::from_secs_f64(val(i).parse().expect("--timeout SECS"));
                i += 1;
            }
            "--alloc" => {
                o.allocs = Some(list(val(i)));
                i += 1;
            }
            "--workload" => {
                o.workloads = Some(list(val(i)));
                i += 1;
            }
            "--warm" => {
                o.warm_mib = val(i).parse().expect("--warm MIB");
                i += 1;
            }
            "--out" => {
                o.out = PathBuf::from(val(i));
                o.out_given = true;
                i += 1;
            }
            "-h" | "--help" => {
                println!(
                    "usage: runner [--quick] [--reps N] [--timeout SECS] [--alloc a,b] [--workload x,y] [--out DIR] [--warm MIB] [--callgrind]\n\
                     allocators: {}\nworkloads: {}",
                    ALLOCATORS.join(", "),
                    WORKLOADS.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
                );
                std::process::exit(0);
            }
            a => {
                eprintln!("unknown argument {a:?} (try --help)");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if o.reps == 0 {
        o.reps = if o.quick { 1 } else { 3 };
    }
    if o.timeout.is_zero() {
        o.timeout = Duration::from_secs(if o.quick { 4 } else { 6 });
    }
    o
}

/// benches/ (the runner lives in benches/target/release).
fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut d = exe.parent().unwrap().to_path_buf();
    for _ in 0..4 {
        if d.join("Cargo.toml").exists() && d.join("src/bin/runner.rs").exists() {
            return d;
        }
        if !d.pop() {
            break;
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

// ------------------------------------------------------------------ running one process

#[derive(Clone, Debug)]
enum Outcome {
    Ok { time_ns: u64, check: u64 },
    Failed(String),
    Timeout,
    Skipped,
}

#[derive(Clone, Debug)]
struct Run {
    outcome: Outcome,
    /// Wall time of the whole process (start-up included), seen by the runner.
    wall_ns: u64,
    /// User + system CPU time of the process, and each of the two.
    cpu_ns: u64,
    user_ns: u64,
    sys_ns: u64,
    maxrss_kb: u64,
    /// Minor page faults of the process (`ru_minflt`): with `sys_ns`, what thread churn and
    /// purging cost in the kernel.
    minflt: u64,
}

type Measured = (
    Option<i32>,
    Option<i32>,
    String,
    String,
    Duration,
    libc::rusage,
    bool,
);

fn spawn_measured(bin: &Path, args: &[&str], timeout: Duration) -> Measured {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: pid is our own un-reaped child; status and ru are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("wait4: {e}");
        }
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: pid is our child and not yet reaped, so it names that process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = start.elapsed();
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    // The child was reaped by wait4 above; dropping `child` does not wait again.
    drop(child);
    let exited = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    (exited, signal, out, err, wall, ru, timed_out)
}

/// Makes `mib` MiB of transparent huge pages resident and gives them back, just before a
/// run, so that every run finds the machine's free huge pages in the same state.
///
/// Why: this machine is a VM whose free memory the host takes back after a few seconds
/// (free page reporting, which reports free blocks of 2 MiB and more). A 2 MiB page that
/// was reported costs several milliseconds to fault in again (a process touching 512 MiB
/// of huge pages after 4 s of quiet: 1.0-1.5 s), a 4 KiB one barely more than usual. So
/// the first run after a pause or after a run that used little memory, if it uses huge
/// pages (C mimalloc advises its arenas for them, shardalloc its huge blocks), took
/// several times its usual time: large-realloc after 4 s of quiet, mimalloc v2 0.53 s
/// (0.45 s system) against 0.09 s run again at once, shardalloc 0.21 s against 0.08 s;
/// after this warm-up 0.08-0.11 s and 0.07-0.09 s. With allocators run in a fixed order,
/// the same allocator paid it in every repetition.
/// The pages are touched one per 4 KiB (so small pages are warmed too where huge ones are
/// refused) and unmapped at once, which returns them to the kernel's free lists. This runs
/// in a child process of its own (the runner started again with `--warm-child MIB`): a
/// child inherits its parent's peak resident set in `ru_maxrss` (Linux keeps the forked
/// copy's high-water mark across `exec`), so the runner's own must stay small.
fn warm_huge_pages(mib: usize) {
    if mib == 0 {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    match Command::new(exe)
        .args(["--warm-child", &mib.to_string()])
        .stdin(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => eprintln!("note: the huge-page warm-up failed ({other:?}); the run goes on"),
    }
}

/// The body of [`warm_huge_pages`], in its own process.
fn warm_child(mib: usize) {
    const HUGE: usize = 2 << 20;
    let size = mib << 20;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it, and it is
    // unmapped whole below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size + HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return; // only a warm-up: the run goes on without it
    }
    let start = (p as usize + HUGE - 1) & !(HUGE - 1);
    // SAFETY: `[start, start + size)` lies inside the mapping (it has `HUGE` bytes of slack
    // for the alignment); advice and one-byte writes to our own fresh memory.
    unsafe {
        libc::madvise(start as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        for off in (0..size).step_by(4096) {
            std::ptr::write_volatile((start + off) as *mut u8, 1);
        }
        libc::munmap(p, size + HUGE);
    }
}

fn run_one(bin: &Path, workload: &str, quick: bool, timeout: Duration) -> Run {
    let mut args = vec![workload];
    if quick {
        args.push("--quick");
    }
    let (exited, signal, out, err, wall, ru, timed_out) = spawn_measured(bin, &args, timeout);
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    let (user_ns, sys_ns) = (tv(ru.ru_utime), tv(ru.ru_stime));
    let outcome = if timed_out {
        Outcome::Timeout
    } else if exited != Some(0) {
        let why = match (exited, signal) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "failed".into(),
        };
        let first_err = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let first_err: String = first_err.chars().take(120).collect();
        Outcome::Failed(if first_err.is_empty() {
            why
        } else {
            format!("{why}: {first_err}")
        })
    } else {
        let field = |k: &str| -> Option<u64> {
            out.split_whitespace()
                .find_map(|t| t.strip_prefix(k))
                .and_then(|v| v.parse().ok())
        };
        match (field("time_ns="), field("check=")) {
            (Some(time_ns), Some(check)) => Outcome::Ok { time_ns, check },
            _ => Outcome::Failed(format!("unparsable output {:?}", out.trim())),
        }
    };
    Run {
        outcome,
        wall_ns: wall.as_nanos() as u64,
        cpu_ns: user_ns + sys_ns,
        user_ns,
        sys_ns,
        maxrss_kb: ru.ru_maxrss as u64,
        minflt: ru.ru_minflt as u64,
    }
}

// ------------------------------------------------------------------ summary

#[derive(Clone, Debug)]
enum Cell {
    Ok {
        time_ms: f64,
        rss_mib: f64,
        cpu_ms: f64,
        faults: f64,
    },
    Failed(String),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(runs: &[Run], expected_check: Option<u64>) -> Cell {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    let mut faults = Vec::new();
    for r in runs {
        match &r.outcome {
            Outcome::Ok { time_ns, check } => {
                if let Some(c) = expected_check {
                    if *check != c {
                        return Cell::Failed(format!("wrong check {check} (others: {c})"));
                    }
                }
                times.push(*time_ns as f64 / 1e6);
                rss.push(r.maxrss_kb as f64 / 1024.0);
                cpu.push(r.cpu_ns as f64 / 1e6);
                faults.push(r.minflt as f64);
            }
            Outcome::Failed(why) => return Cell::Failed(why.clone()),
            Outcome::Timeout => return Cell::Failed("timeout".into()),
            Outcome::Skipped => {}
        }
    }
    if times.is_empty() {
        return Cell::Failed("no run".into());
    }
    Cell::Ok {
        time_ms: median(times),
        rss_mib: median(rss),
        cpu_ms: median(cpu),
        faults: median(faults),
    }
}

fn geomean(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
    }
}

fn cmd_output(cmd: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// The shardalloc commit measured, and whether src/ had uncommitted changes.
fn commit_desc() -> String {
    let root = bench_dir().join("..");
    format!(
        "{}{}",
        cmd_output("git", &["rev-parse", "--short", "HEAD"], Some(&root)),
        if cmd_output("git", &["status", "--porcelain", "--", "src"], Some(&root)).is_empty() {
            ""
        } else {
            " (with uncommitted changes in src/)"
        }
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

// ------------------------------------------------------------------ main benchmark

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--warm-child" {
        warm_child(args[2].parse().expect("--warm-child MIB"));
        return;
    }
    let o = parse_opts();
    let bins = bin_dir();
    let allocs: Vec<&str> = ALLOCATORS
        .iter()
        .copied()
        .filter(|a| o.allocs.as_ref().is_none_or(|l| l.iter().any(|x| x == a)))
        .filter(|a| {
            let ok = bins.join(format!("bench-{a}")).exists();
            if !ok {
                eprintln!("note: no {}/bench-{a}: {a} left out", bins.display());
            }
            ok
        })
        .collect();
    if allocs.is_empty() {
        eprintln!("no benchmark binaries found in {}", bins.display());
        std::process::exit(1);
    }
    // shardalloc asked for (by default it is) but not built: the run goes on with the
    // peers, and ends with a failure status
    let shardalloc_missing = o
        .allocs
        .as_ref()
        .is_none_or(|l| l.iter().any(|x| x == "shardalloc"))
        && allocs[0] != "shardalloc";
    // a run whose figures may go into README.md: every workload and allocator, full size
    let complete = !o.quick
        && o.workloads.is_none()
        && allocs.len() == ALLOCATORS.len()
        && o.reps >= 3;
    // benches/results holds complete runs only (README.md is written from it); a partial
    // run goes to benches/target/results-partial unless --out says otherwise
    let mut o = o;
    let complete_here = if o.callgrind {
        allocs.len() == ALLOCATORS.len()
    } else {
        complete
    };
    if !o.out_given && !complete_here {
        o.out = bench_dir().join("target/results-partial");
        eprintln!(
            "a partial run (quick, or not every workload/allocator): reports go to {}",
            o.out.display()
        );
    }
    let o = o;
    std::fs::create_dir_all(&o.out).expect("create output directory");
    if o.callgrind {
        let ok = callgrind(&o, &allocs, allocs.len() == ALLOCATORS.len());
        if shardalloc_missing || !ok {
            eprintln!("runner: FAILED: shardalloc {}", if shardalloc_missing { "was not built" } else { "failed under callgrind" });
            std::process::exit(1);
        }
        return;
    }
    let workloads: Vec<&shardbench::Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            o.workloads
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == w.name))
        })
        .collect();
    let reference = allocs[0];
    eprintln!(
        "{} workloads x {} allocators x {} reps ({}), timeout {:?}; ratios to {reference}",
        workloads.len(),
        allocs.len(),
        o.reps,
        if o.quick { "quick" } else { "full" },
        o.timeout
    );

    let load_before = loadavg();
    let t_start = Instant::now();
    let mut runs: BTreeMap<(usize, usize), Vec<Run>> = BTreeMap::new();
    let mut csv =
        String::from("rep,workload,allocator,status,time_ns,wall_ns,cpu_ns,maxrss_kb,check,user_ns,sys_ns,minflt\n");
    for rep in 0..o.reps {
        for (wi, w) in workloads.iter().enumerate() {
            // the order of the allocators turns by one from workload to workload and from
            // repetition to repetition, so that no allocator always runs first (after
            // another workload) or right after the same peer
            for k in 0..allocs.len() {
                let ai = (k + wi + rep) % allocs.len();
                let a = &allocs[ai];
                let prev = runs.entry((wi, ai)).or_default();
                // After a timeout or failure, later repetitions of that pair are skipped.
                let give_up = prev
                    .iter()
                    .any(|r| matches!(r.outcome, Outcome::Timeout | Outcome::Failed(_)));
                let r = if give_up {
                    Run {
                        outcome: Outcome::Skipped,
                        wall_ns: 0,
                        cpu_ns: 0,
                        user_ns: 0,
                        sys_ns: 0,
                        maxrss_kb: 0,
                        minflt: 0,
                    }
                } else {
                    warm_huge_pages(o.warm_mib);
                    run_one(&bins.join(format!("bench-{a}")), w.name, o.quick, o.timeout)
                };
                let (status, tns, check) = match &r.outcome {
                    Outcome::Ok { time_ns, check } => {
                        ("ok".to_string(), time_ns.to_string(), check.to_string())
                    }
                    Outcome::Failed(why) => (
                        format!("failed: {}", why.replace(',', ";")),
                        String::new(),
                        String::new(),
                    ),
                    Outcome::Timeout => ("timeout".into(), String::new(), String::new()),
                    Outcome::Skipped => ("skipped".into(), String::new(), String::new()),
                };
                if !matches!(r.outcome, Outcome::Skipped) {
                    eprintln!(
                        "[{:>4.0}s] rep {} {:<14} {:<14} {}",
                        t_start.elapsed().as_secs_f64(),
                        rep + 1,
                        w.name,
                        a,
                        match &r.outcome {
                            Outcome::Ok { time_ns, .. } => format!(
                                "{:>9.1} ms {:>8.1} MiB  user {:.2} s sys {:.2} s {:>7} faults",
                                *time_ns as f64 / 1e6,
                                r.maxrss_kb as f64 / 1024.0,
                                r.user_ns as f64 / 1e9,
                                r.sys_ns as f64 / 1e9,
                                r.minflt
                            ),
                            _ => status.clone(),
                        }
                    );
                }
                writeln!(
                    csv,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    rep + 1,
                    w.name,
                    a,
                    status,
                    tns,
                    r.wall_ns,
                    r.cpu_ns,
                    r.maxrss_kb,
                    check,
                    r.user_ns,
                    r.sys_ns,
                    r.minflt
                )
                .unwrap();
                prev.push(r);
            }
        }
    }
    let elapsed = t_start.elapsed();

    // The check value all allocators agree on (deterministic workloads only).
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for (wi, w) in workloads.iter().enumerate() {
        let expected = if w.deterministic {
            let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
            for ai in 0..allocs.len() {
                for r in &runs[&(wi, ai)] {
                    if let Outcome::Ok { check, .. } = r.outcome {
                        *counts.entry(check).or_default() += 1;
                    }
                }
            }
            counts.into_iter().max_by_key(|&(_, n)| n).map(|(c, _)| c)
        } else {
            None
        };
        for ai in 0..allocs.len() {
            cells.insert((wi, ai), summarize(&runs[&(wi, ai)], expected));
        }
    }

    std::fs::write(o.out.join("runs.csv"), &csv).expect("write runs.csv");
    let load = (load_before, loadavg());
    // shardalloc's own failures: never silently left out
    let failures: Vec<(&str, String)> = if allocs[0] == "shardalloc" {
        workloads
            .iter()
            .enumerate()
            .filter_map(|(wi, w)| match &cells[&(wi, 0)] {
                Cell::Failed(why) => Some((w.name, why.clone())),
                Cell::Ok { .. } => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let md = report(
        &o,
        &workloads,
        &allocs,
        &cells,
        elapsed,
        load,
        &failures,
        shardalloc_missing,
        complete,
    );
    std::fs::write(o.out.join("results.md"), &md).expect("write results.md");
    for (measure, file) in [(Measure::Time, "time.svg"), (Measure::Memory, "memory.svg")] {
        if let Err(e) = chart(
            &o.out.join(file),
            measure,
            &workloads,
            &allocs,
            &cells,
            o.quick,
        ) {
            eprintln!("chart {file}: {e}");
        }
    }
    println!("{md}");
    eprintln!(
        "wrote {}/results.md, runs.csv, time.svg, memory.svg in {:.0} s",
        o.out.display(),
        elapsed.as_secs_f64()
    );
    if shardalloc_missing {
        eprintln!("runner: FAILED: shardalloc was not built; the figures are the peers' only");
        std::process::exit(1);
    }
    if !failures.is_empty() {
        for (w, why) in &failures {
            eprintln!("runner: FAILED: shardalloc on {w}: {why}");
        }
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Measure {
    Time,
    Memory,
    /// User + system CPU time of the process.
    Cpu,
    /// Minor page faults of the process.
    Faults,
}

fn value(c: &Cell, m: Measure) -> Option<f64> {
    match c {
        Cell::Ok {
            time_ms,
            rss_mib,
            cpu_ms,
            faults,
        } => Some(match m {
            Measure::Time => *time_ms,
            Measure::Memory => *rss_mib,
            Measure::Cpu => *cpu_ms,
            Measure::Faults => *faults,
        }),
        Cell::Failed(_) => None,
    }
}

/// The geometric means of one measure's ratios, each over one set of workloads named in
/// its label: the workloads every allocator completed (all allocators), and all
/// workloads (only the allocators that completed every one).
fn geomean_rows(
    m: Measure,
    workloads: &[&shardbench::Workload],
    allocs: &[&str],
    cells: &BTreeMap<(usize, usize), Cell>,
) -> Vec<(String, Vec<Option<f64>>)> {
    let ratio = |wi: usize, ai: usize| -> Option<f64> {
        match (value(&cells[&(wi, ai)], m), value(&cells[&(wi, 0)], m)) {
            (Some(v), Some(r)) if r > 0.0 => Some(v / r),
            _ => None,
        }
    };
    let common: Vec<usize> = (0..workloads.len())
        .filter(|&wi| (0..allocs.len()).all(|ai| ratio(wi, ai).is_some()))
        .collect();
    let mut rows = Vec::new();
    if common.len() < workloads.len() {
        let names: Vec<&str> = common.iter().map(|&wi| workloads[wi].name).collect();
        let label = format!(
            "geometric mean over the {} workload{} every allocator completed ({})",
            common.len(),
            if common.len() == 1 { "" } else { "s" },
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        );
        let vals = (0..allocs.len())
            .map(|ai| geomean(&common.iter().map(|&wi| ratio(wi, ai).unwrap()).collect::<Vec<_>>()))
            .collect();
        rows.push((label, vals));
    }
    let all: Vec<Option<f64>> = (0..allocs.len())
        .map(|ai| {
            let r: Option<Vec<f64>> = (0..workloads.len()).map(|wi| ratio(wi, ai)).collect();
            r.and_then(|r| geomean(&r))
        })
        .collect();
    rows.push((
        if common.len() < workloads.len() {
            format!(
                "geometric mean over all {} workloads (allocators that completed all)",
                workloads.len()
            )
        } else {
            format!("geometric mean over all {} workloads", workloads.len())
        },
        all,
    ));
    rows
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    workloads: &[&shardbench::Workload],
    allocs: &[&str],
    cells: &BTreeMap<(usize, usize), Cell>,
    elapsed: Duration,
    load: (String, String),
    failures: &[(&str, String)],
    shardalloc_missing: bool,
    complete: bool,
) -> String {
    let reference = allocs[0];
    let mut md = String::new();
    let date = cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], None);
    let commit = commit_desc();
    writeln!(md, "# shardalloc benchmark results\n").unwrap();
    if shardalloc_missing {
        writeln!(
            md,
            "**FAILED: shardalloc was not built** (see `benches/target/shardalloc-build.log`); \
             the figures are the peers' only, ratios to {reference}. The runner exited with status 1.\n"
        )
        .unwrap();
    }
    if !failures.is_empty() {
        writeln!(
            md,
            "**FAILED: shardalloc failed {} workload(s)**: {}. Those workloads have no ratios and \
             are left out of every geometric mean; the runner exited with status 1.\n",
            failures.len(),
            failures
                .iter()
                .map(|(w, why)| format!("{w} ({})", why.replace('|', "/")))
                .collect::<Vec<_>>()
                .join("; ")
        )
        .unwrap();
    }
    writeln!(
        md,
        "- date: {} ; host: {} ({} cores), {}",
        date,
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cmd_output("rustc", &["--version"], None),
    )
    .unwrap();
    writeln!(md, "- shardalloc commit: {commit}").unwrap();
    writeln!(
        md,
        "- mode: {}; {} repetition(s) per cell, median shown; timeout {:.0} s per run; whole run {:.0} s",
        if o.quick { "quick (1/4 of the work)" } else { "full" },
        o.reps,
        o.timeout.as_secs_f64(),
        elapsed.as_secs_f64()
    )
    .unwrap();
    writeln!(
        md,
        "- load average (1/5/15 min) before: {}, after: {} (other work on the machine makes the figures noisy)",
        load.0, load.1
    )
    .unwrap();
    if reference != "shardalloc" {
        writeln!(
            md,
            "- **shardalloc was not built**: ratios are to {reference}"
        )
        .unwrap();
    }
    writeln!(
        md,
        "- the allocators' order turns by one from workload to workload and repetition to \
         repetition; before every run the runner made {} MiB of huge OS pages resident and \
         gave them back (`--warm`; benches/README.md says why)",
        o.warm_mib
    )
    .unwrap();
    writeln!(
        md,
        "- every figure is from a real run; `runs.csv` has each run. Ratios are to {reference} \
         (below 1 = less than {reference}); a failed cell says why. Each geometric mean is over \
         the set of workloads its row names, the same for every allocator in the row.\n"
    )
    .unwrap();

    for (m, title, unit) in [
        (
            Measure::Time,
            "Time",
            "workload time in ms (in-process wall clock, median)",
        ),
        (
            Measure::Memory,
            "Peak memory",
            "peak RSS in MiB (`wait4` maxrss, median)",
        ),
        (
            Measure::Cpu,
            "CPU time",
            "user + system CPU time of the process in ms (`wait4`, median; on 2 cores a \
             multi-threaded workload's CPU time is less disturbed by other work than its wall \
             time; `runs.csv` has user and system time apart)",
        ),
        (
            Measure::Faults,
            "Page faults",
            "minor page faults of the process (`wait4` minflt, median): first touches of fresh \
             memory and touches of purged memory; with huge OS pages one fault maps 2 MiB",
        ),
    ] {
        writeln!(
            md,
            "## {title}\n\n{unit}; in parentheses the ratio to {reference}, lower is better.\n"
        )
        .unwrap();
        write!(md, "| workload |").unwrap();
        for a in allocs {
            write!(md, " {a} |").unwrap();
        }
        write!(md, "\n|---|").unwrap();
        for _ in allocs {
            write!(md, "---:|").unwrap();
        }
        writeln!(md).unwrap();
        for (wi, w) in workloads.iter().enumerate() {
            write!(md, "| {} |", w.name).unwrap();
            let refv = value(&cells[&(wi, 0)], m);
            for ai in 0..allocs.len() {
                let c = &cells[&(wi, ai)];
                match (value(c, m), refv) {
                    (Some(v), Some(r)) => {
                        let ratio = v / r;
                        if ai == 0 {
                            write!(md, " {} |", fmt_num(v)).unwrap();
                        } else {
                            write!(md, " {} ({:.2}) |", fmt_num(v), ratio).unwrap();
                        }
                    }
                    (Some(v), None) => write!(md, " {} |", fmt_num(v)).unwrap(),
                    (None, _) => {
                        let Cell::Failed(why) = c else { unreachable!() };
                        let why = why.replace('|', "/");
                        if ai == 0 && reference == "shardalloc" {
                            write!(md, " **FAILED: {why}** |").unwrap();
                        } else {
                            write!(md, " **{why}** |").unwrap();
                        }
                    }
                }
            }
            writeln!(md).unwrap();
        }
        for (label, vals) in geomean_rows(m, workloads, allocs, cells) {
            write!(md, "| **{label}** |").unwrap();
            for v in vals {
                match v {
                    Some(g) => write!(md, " **{g:.2}** |").unwrap(),
                    None => write!(md, " – |").unwrap(),
                }
            }
            writeln!(md).unwrap();
        }
        writeln!(md).unwrap();
    }
    writeln!(md, "## Workloads\n").unwrap();
    for w in workloads {
        writeln!(
            md,
            "- **{}** ({} thread{}): {}",
            w.name,
            w.threads,
            if w.threads == 1 { "" } else { "s" },
            w.about
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nCharts: `time.svg` and `memory.svg` (ratio to {reference} per workload, log scale)."
    )
    .unwrap();
    if complete && reference == "shardalloc" && failures.is_empty() {
        md.push_str(&readme_section(workloads, allocs, cells, &commit, &date, o));
    } else {
        writeln!(
            md,
            "\n(No README section: README.md's tables come only from a full run of every workload \
             under every allocator in which shardalloc completed everything.)"
        )
        .unwrap();
    }
    md
}

/// The part of the report that `scripts/readme-tables.sh` copies into README.md: ratios of
/// time and peak memory, the geometric means, and the workloads where shardalloc holds
/// more memory than most peers.
fn readme_section(
    workloads: &[&shardbench::Workload],
    allocs: &[&str],
    cells: &BTreeMap<(usize, usize), Cell>,
    commit: &str,
    date: &str,
    o: &Opts,
) -> String {
    let mut md = String::new();
    writeln!(md, "\n## For README.md\n\n<!-- readme:begin -->").unwrap();
    writeln!(
        md,
        "*From [benches/results/results.md](benches/results/results.md): shardalloc commit {commit}, \
         {date}, {} repetitions (median), {} cores, copied into README.md by `scripts/readme-tables.sh`.*\n",
        o.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
    .unwrap();
    for (m, what) in [
        (Measure::Time, "Time, ratio peer / shardalloc (above 1: shardalloc is faster)"),
        (
            Measure::Memory,
            "Peak memory (RSS), ratio peer / shardalloc (above 1: shardalloc uses less)",
        ),
    ] {
        writeln!(md, "{what}:\n").unwrap();
        write!(md, "| workload |").unwrap();
        for a in &allocs[1..] {
            write!(md, " {a} |").unwrap();
        }
        write!(md, "\n|---|").unwrap();
        for _ in &allocs[1..] {
            write!(md, "---:|").unwrap();
        }
        writeln!(md).unwrap();
        for (wi, w) in workloads.iter().enumerate() {
            write!(md, "| {} |", w.name).unwrap();
            let r = value(&cells[&(wi, 0)], m).unwrap();
            for ai in 1..allocs.len() {
                match (&cells[&(wi, ai)], value(&cells[&(wi, ai)], m)) {
                    (_, Some(v)) => write!(md, " {:.2} |", v / r).unwrap(),
                    (Cell::Failed(why), None) => {
                        let short = if why == "timeout" {
                            "timeout".to_string()
                        } else {
                            why.split(':').next().unwrap_or("failed").to_string()
                        };
                        write!(md, " {short} |").unwrap()
                    }
                    _ => write!(md, " – |").unwrap(),
                }
            }
            writeln!(md).unwrap();
        }
        for (label, vals) in geomean_rows(m, workloads, allocs, cells) {
            write!(md, "| **{label}** |").unwrap();
            for v in &vals[1..] {
                match v {
                    Some(g) => write!(md, " **{g:.2}** |").unwrap(),
                    None => write!(md, " – |").unwrap(),
                }
            }
            writeln!(md).unwrap();
        }
        writeln!(md).unwrap();
    }
    // where shardalloc's peak memory is above most peers'
    let mut more = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        let own = value(&cells[&(wi, 0)], Measure::Memory).unwrap();
        let peers: Vec<(usize, f64)> = (1..allocs.len())
            .filter_map(|ai| value(&cells[&(wi, ai)], Measure::Memory).map(|v| (ai, v)))
            .collect();
        let less = peers.iter().filter(|(_, v)| *v < own).count();
        if !peers.is_empty() && less * 2 > peers.len() {
            let (ai, v) = peers
                .iter()
                .copied()
                .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap())
                .unwrap();
            more.push(format!(
                "{} ({} MiB; {} of {} peers less, least {} {} MiB)",
                w.name,
                fmt_num(own),
                less,
                peers.len(),
                allocs[ai],
                fmt_num(v)
            ));
        }
    }
    writeln!(
        md,
        "Workloads where shardalloc's peak memory is above that of most peers: {}.",
        if more.is_empty() { "none".to_string() } else { more.join("; ") }
    )
    .unwrap();
    writeln!(md, "<!-- readme:end -->").unwrap();
    md
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ------------------------------------------------------------------ charts

fn register_font() -> Result<(), String> {
    use std::sync::OnceLock;
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = vec![
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
            "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
            "/usr/share/fonts/dejavu/DejaVuSans.ttf".into(),
        ];
        let fc = cmd_output(
            "fc-match",
            &["-f", "%{file}", "sans-serif:fontformat=TrueType"],
            None,
        );
        if fc != "?" {
            candidates.push(fc.into());
        }
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found (install fonts-dejavu-core)".into())
    })
    .clone()
}

const PALETTE: &[(u8, u8, u8)] = &[
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn chart(
    path: &Path,
    m: Measure,
    workloads: &[&shardbench::Workload],
    allocs: &[&str],
    cells: &BTreeMap<(usize, usize), Cell>,
    quick: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    register_font()?;
    let reference = allocs[0];
    let others: Vec<usize> = (1..allocs.len()).collect();
    // ratio[wi][k] for allocator others[k]
    let mut lo = 1.0f64;
    let mut hi = 1.0f64;
    let mut ratio: Vec<Vec<Option<f64>>> = Vec::new();
    for wi in 0..workloads.len() {
        let refv = value(&cells[&(wi, 0)], m);
        let row: Vec<Option<f64>> = others
            .iter()
            .map(|&ai| match (value(&cells[&(wi, ai)], m), refv) {
                (Some(v), Some(r)) if r > 0.0 && v > 0.0 => Some(v / r),
                _ => None,
            })
            .collect();
        for r in row.iter().flatten() {
            lo = lo.min(*r);
            hi = hi.max(*r);
        }
        ratio.push(row);
    }
    let lo = (lo / 1.5).max(1e-3);
    // Head room above the tallest bar for the legend.
    let hi = (hi * 4.0).min(1e4);

    let n = workloads.len();
    let width = (220 + n * 95).max(900) as u32;
    let root = SVGBackend::new(path, (width, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} relative to {reference} (lower is better; x = failed){}",
        if m == Measure::Time {
            "Time"
        } else {
            "Peak RSS"
        },
        if quick { " — quick run" } else { "" }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .x_labels(0)
        .y_labels(0)
        .y_label_formatter(&|_| String::new())
        .y_desc(format!("ratio to {reference} (log scale)"))
        .label_style(("sans-serif", 14))
        .draw()?;
    // Our own ticks at 1-2-5 steps: plotters' log axis labels nothing inside one decade.
    let tick_style =
        ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ));
    let mut ticks = Vec::new();
    let mut decade = 1e-3;
    while decade <= 1e4 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    for &v in &ticks {
        chart.draw_series(LineSeries::new(
            [(0.0, v), (n as f64, v)],
            RGBColor(220, 220, 220).stroke_width(1),
        ))?;
        let (px, py) = chart.backend_coord(&(0.0, v));
        let label = if v >= 1.0 {
            format!("{v}x")
        } else {
            format!("{}x", format!("{v:.3}").trim_end_matches('0'))
        };
        root.draw(&Text::new(label, (px - 6, py), tick_style.clone()))?;
    }
    // The reference line.
    chart.draw_series(LineSeries::new(
        [(0.0, 1.0), (n as f64, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    let k = others.len().max(1);
    let bw = 0.8 / k as f64;
    for (j, &ai) in others.iter().enumerate() {
        let (r, g, b) = PALETTE[j % PALETTE.len()];
        let color = RGBColor(r, g, b);
        let bars: Vec<Rectangle<(f64, f64)>> = (0..n)
            .filter_map(|wi| {
                ratio[wi][j].map(|v| {
                    let x0 = wi as f64 + 0.1 + j as f64 * bw;
                    Rectangle::new(
                        [(x0, 1.0f64.min(v)), (x0 + bw * 0.9, 1.0f64.max(v))],
                        color.filled(),
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(allocs[ai])
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        // Failed runs: a small "x" on the reference line.
        let fails: Vec<Text<(f64, f64), String>> = (0..n)
            .filter(|&wi| ratio[wi][j].is_none())
            .map(|wi| {
                let x0 = wi as f64 + 0.1 + j as f64 * bw;
                Text::new(
                    "x".to_string(),
                    (x0, 1.0),
                    ("sans-serif", 12).into_font().color(&color),
                )
            })
            .collect();
        chart.draw_series(fails)?;
    }
    // Workload names under their groups (drawn on the root area in pixels).
    let label_style =
        ("sans-serif", 14)
            .into_font()
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
    for (wi, w) in workloads.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(wi as f64 + 0.5, lo));
        root.draw(&Text::new(
            w.name.to_string(),
            (px, py + 8),
            label_style.clone(),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

// ------------------------------------------------------------------ callgrind

/// Instructions per malloc+free pair of the small-size fast path, by callgrind:
/// (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up and exit.
/// Returns whether the reference allocator's figures were measured. With `complete`
/// (every allocator present), callgrind.md gets the section README.md copies.
fn callgrind(o: &Opts, allocs: &[&str], complete: bool) -> bool {
    const N1: u64 = 200_000;
    const N2: u64 = 1_200_000;
    if cmd_output("valgrind", &["--version"], None) == "?" {
        eprintln!("valgrind not found (apt-get install valgrind)");
        std::process::exit(1);
    }
    let bins = bin_dir();
    let count = |bin: &Path, mode: &str, n: u64| -> Result<u64, String> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(bin)
            .args([mode, &n.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // The program's own message, not valgrind's (lines starting "==pid==").
            let msg = err
                .lines()
                .find(|l| !l.starts_with("==") && !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!("{}: {msg}", out.status));
        }
        err.lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no 'Collected' line".to_string())
    };
    let per_pair = |bin: &Path, mode: &str| -> Result<f64, String> {
        let a = count(bin, mode, N1)?;
        let b = count(bin, mode, N2)?;
        Ok((b as f64 - a as f64) / (N2 - N1) as f64)
    };
    let t0 = Instant::now();
    let baseline = per_pair(
        &bins.join(format!("bench-{}", allocs[0])),
        "fastpath-baseline",
    );
    eprintln!("loop baseline: {baseline:?} instructions per iteration");
    let mut rows = Vec::new();
    for a in allocs {
        let bin = bins.join(format!("bench-{a}"));
        let r = per_pair(&bin, "fastpath");
        // Only some binaries have a direct malloc/free loop (exit 4 otherwise).
        let has_direct = Command::new(&bin)
            .args(["fastpath-direct", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let d = has_direct.then(|| per_pair(&bin, "fastpath-direct"));
        eprintln!("{a:<14} GlobalAlloc {r:?}; direct {d:?}");
        rows.push((a, r, d));
    }
    // The C entry points: c/fastpath.c (4 malloc+free pairs an iteration) under
    // LD_PRELOAD of each library that run.sh built into target/c.
    let cdir = bins.parent().map_or_else(|| PathBuf::from("target/c"), |p| p.join("c"));
    let cprog = cdir.join("fastpath-c");
    let count_c = |so: Option<&Path>, n: u64, baseline: bool| -> Result<u64, String> {
        let mut cmd = Command::new("valgrind");
        cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&cprog)
            .arg(n.to_string());
        if baseline {
            cmd.arg("baseline");
        }
        if let Some(so) = so {
            if !so.exists() {
                return Err(format!("{} was not built", so.display()));
            }
            cmd.env("LD_PRELOAD", so);
        }
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("{}", out.status));
        }
        err.lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no 'Collected' line".to_string())
    };
    let per_iter_c = |so: Option<&Path>, baseline: bool| -> Result<f64, String> {
        let a = count_c(so, N1, baseline)?;
        let b = count_c(so, N2, baseline)?;
        Ok((b as f64 - a as f64) / (N2 - N1) as f64)
    };
    let c_libs: [(&str, Option<PathBuf>); 4] = [
        ("shardalloc", Some(cdir.join("libshardalloc.so"))),
        ("mimalloc-v3", Some(cdir.join("libmimalloc-v3.so"))),
        ("mimalloc-v2", Some(cdir.join("libmimalloc-v2.so"))),
        ("system", None),
    ];
    let (c_base, c_rows): (Result<f64, String>, Vec<(&str, Result<f64, String>)>) =
        if cprog.exists() {
            let b = per_iter_c(None, true);
            eprintln!("C loop baseline: {b:?} instructions per iteration");
            let rows = c_libs
                .iter()
                .map(|(name, so)| {
                    let r = per_iter_c(so.as_deref(), false);
                    eprintln!("{name:<14} C malloc/free {r:?}");
                    (*name, r)
                })
                .collect();
            (b, rows)
        } else {
            (Err(format!("{} was not built (run.sh --callgrind builds it)", cprog.display())), Vec::new())
        };
    let c_ok = c_base.is_ok() && c_rows.first().is_some_and(|r| r.1.is_ok());
    let c_table = |md: &mut String| {
        let Ok(b) = c_base else { return };
        let refv = c_rows.first().and_then(|r| r.1.as_ref().ok().copied());
        writeln!(
            md,
            "| library (`LD_PRELOAD`) | per iteration | per malloc+free pair | ratio to shardalloc |\n|---|---:|---:|---:|"
        )
        .unwrap();
        for (name, r) in &c_rows {
            let label = match *name {
                "shardalloc" => "shardalloc (`libshardalloc.so`)",
                "mimalloc-v3" => "mimalloc v3 (C)",
                "mimalloc-v2" => "mimalloc v2 (C)",
                "system" => "glibc",
                other => other,
            };
            match r {
                Ok(v) => writeln!(
                    md,
                    "| {label} | {:.1} | {:.1} | {} |",
                    v - b,
                    (v - b) / 4.0,
                    refv.map_or("?".into(), |rv| format!("{:.2}", (v - b) / (rv - b)))
                )
                .unwrap(),
                Err(e) => writeln!(md, "| {label} | **failed: {}** | | |", e.replace('|', "/")).unwrap(),
            }
        }
    };
    let mut md = String::new();
    writeln!(
        md,
        "# Small-size fast path: instructions per malloc+free pair (callgrind)\n"
    )
    .unwrap();
    writeln!(
        md,
        "- date: {}; shardalloc commit {}; {}",
        cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], None),
        commit_desc(),
        cmd_output("valgrind", &["--version"], None)
    )
    .unwrap();
    writeln!(
        md,
        "- loop: allocate 16 + 16*(i%4) bytes, write and read one byte, free; \
         figure = (Ir(N={N2}) - Ir(N={N1})) / {}, so start-up and exit cancel out.",
        N2 - N1
    )
    .unwrap();
    writeln!(
        md,
        "- *GlobalAlloc*: through Rust's `#[global_allocator]` (`std::alloc::alloc`/`dealloc` with \
         align 8), the same path for every allocator. *direct*: the allocator's own entry points \
         (`mi_malloc`/`mi_free`, glibc `malloc`/`free`, `shardalloc::alloc(size, 8, false)`/`shardalloc::free`)."
    )
    .unwrap();
    let base = baseline.as_ref().ok().copied();
    match &baseline {
        Ok(b) => writeln!(md, "- the loop without any allocator costs {b:.1} instructions per iteration; the *minus loop* columns subtract it.\n").unwrap(),
        Err(e) => writeln!(md, "- loop baseline failed: {e}\n").unwrap(),
    }
    writeln!(
        md,
        "| allocator | GlobalAlloc | minus loop | ratio to {r} | direct | minus loop |\n|---|---:|---:|---:|---:|---:|",
        r = allocs[0]
    )
    .unwrap();
    let refv = rows[0].1.as_ref().ok().copied();
    let minus = |v: f64| base.map_or("?".into(), |b| format!("{:.1}", v - b));
    for (a, r, d) in &rows {
        let (gv, gm, gr) = match r {
            Ok(v) => (
                format!("{v:.1}"),
                minus(*v),
                refv.map_or("?".into(), |rv| format!("{:.2}", v / rv)),
            ),
            Err(e) => (
                format!("**failed: {}**", e.replace('|', "/")),
                String::new(),
                String::new(),
            ),
        };
        let (dv, dm) = match d {
            Some(Ok(v)) => (format!("{v:.1}"), minus(*v)),
            Some(Err(e)) => (
                format!("**failed: {}**", e.replace('|', "/")),
                String::new(),
            ),
            None => ("–".into(), String::new()),
        };
        writeln!(md, "| {a} | {gv} | {gm} | {gr} | {dv} | {dm} |").unwrap();
    }
    writeln!(
        md,
        "\n## Through the C entry points\n\n- loop (`benches/c/fastpath.c`, built with `-fno-builtin`): each \
         iteration mallocs 32, 200, 1000 and a random 8..520 bytes, writes and reads a byte of \
         each, frees them; run under `LD_PRELOAD` of each library (C mimalloc built from the \
         sources the `mimalloc` crate ships, with mimalloc's release flags and \
         `-ftls-model=initial-exec`); the loop over a static buffer is subtracted."
    )
    .unwrap();
    match &c_base {
        Ok(b) => writeln!(md, "- the loop without any allocator costs {b:.1} instructions per iteration.\n").unwrap(),
        Err(e) => writeln!(md, "- not measured: {e}\n").unwrap(),
    }
    c_table(&mut md);
    let ref_ok = rows[0].1.is_ok() && !matches!(rows[0].2, Some(Err(_))) && c_ok;
    if complete && ref_ok && allocs[0] == "shardalloc" {
        writeln!(md, "\n## For README.md\n\n<!-- readme:begin -->").unwrap();
        writeln!(
            md,
            "*From [benches/results/callgrind.md](benches/results/callgrind.md): shardalloc commit {}, {}, \
             copied into README.md by `scripts/readme-tables.sh`.* Instructions per malloc+free pair of 16..64 bytes, \
             the benchmark loop subtracted ({:.1} instructions):\n",
            commit_desc(),
            cmd_output("date", &["-u", "+%Y-%m-%d"], None),
            base.unwrap_or(f64::NAN)
        )
        .unwrap();
        writeln!(
            md,
            "| allocator | through `#[global_allocator]` | through its own malloc/free |\n|---|---:|---:|"
        )
        .unwrap();
        for (a, r, d) in &rows {
            let g = match r {
                Ok(v) => minus(*v),
                Err(_) => "failed under valgrind".into(),
            };
            let dv = match d {
                Some(Ok(v)) => minus(*v),
                Some(Err(_)) => "failed".into(),
                None => "–".into(),
            };
            let name = match *a {
                &"shardalloc" => "shardalloc (`shardalloc::alloc`/`free`)",
                &"mimalloc-v3" => "mimalloc v3 (C, `mi_malloc`/`mi_free`)",
                &"mimalloc-v2" => "mimalloc v2 (C, `mi_malloc`/`mi_free`)",
                &"system" => "glibc (`malloc`/`free`)",
                other => other,
            };
            writeln!(md, "| {name} | {g} | {dv} |").unwrap();
        }
        writeln!(
            md,
            "\nThrough the C entry points (`malloc`/`free` of each library under `LD_PRELOAD`), \
             instructions per iteration of 4 malloc+free pairs (32, 200, 1000 and 8..520 bytes), \
             the loop subtracted ({:.1} instructions):\n",
            c_base.as_ref().copied().unwrap_or(f64::NAN)
        )
        .unwrap();
        c_table(&mut md);
        writeln!(md, "<!-- readme:end -->").unwrap();
    } else {
        writeln!(
            md,
            "\n(No README section: README.md's figures come only from a run over every allocator in \
             which shardalloc was measured.)"
        )
        .unwrap();
    }
    std::fs::write(o.out.join("callgrind.md"), &md).expect("write callgrind.md");
    println!("{md}");
    eprintln!(
        "wrote {}/callgrind.md in {:.0} s",
        o.out.display(),
        t0.elapsed().as_secs_f64()
    );
    ref_ok
}
