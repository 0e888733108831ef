//! Boots the shardalloc kernel (boot/) under QEMU and runs its scenarios across memory
//! sizes and CPU counts. Each boot must end with QEMU exit status 33 (the kernel's
//! `isa-debug-exit` success) and a `PASS` line on the serial console; on failure the test
//! prints the whole serial log.
//!
//! Needs `qemu-system-x86_64` and the `x86_64-unknown-none` Rust target. Environment:
//! `SHARDALLOC_QEMU_JOBS` (parallel boots, default 2), `SHARDALLOC_QEMU_TIMEOUT` (seconds
//! per boot, default 180).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

struct Boot {
    machine: &'static str,
    mem: &'static str,
    smp: u32,
    append: String,
    /// The exit status the boot must end with.
    expect_status: i32,
}

struct Outcome {
    status: Option<i32>,
    timed_out: bool,
    log: String,
    secs: f64,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build_kernel() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
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
        panic!("building the kernel failed:\n{err}{hint}");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let kernel = target_dir.join("x86_64-unknown-none/release/shardalloc-kernel");
    assert!(kernel.exists(), "kernel not found at {}", kernel.display());
    kernel
}

fn check_qemu() {
    match Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => panic!(
            "{QEMU} not found or not working: these tests boot the kernel under QEMU. \
             Install it with `apt-get install -y --no-install-recommends qemu-system-x86` \
             (CI installs it)."
        ),
    }
}

fn boot(kernel: &Path, b: &Boot, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let mut child = Command::new(QEMU)
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
        ])
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
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting QEMU");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for QEMU") {
            break st;
        }
        if t0.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("waiting for QEMU");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::from_utf8_lossy(&out_reader.join().unwrap()).replace('\r', "");
    let err = err_reader.join().unwrap();
    if !err.is_empty() {
        log.push_str("\n--- QEMU stderr ---\n");
        log.push_str(&String::from_utf8_lossy(&err));
    }
    Outcome {
        status: status.code(),
        timed_out,
        log,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Runs the boots on `jobs` threads; returns the failures' reports.
fn run_all(kernel: &Path, boots: &[Boot]) -> Vec<String> {
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
                let o = boot(kernel, b, timeout);
                let passed_line = o.log.lines().any(|l| l.trim() == "PASS");
                let ok = !o.timed_out
                    && o.status == Some(b.expect_status)
                    && (b.expect_status != 33 || passed_line);
                let what = format!(
                    "-machine {} -m {} -smp {} -append \"{}\"",
                    b.machine, b.mem, b.smp, b.append
                );
                eprintln!(
                    "qemu {what}: {} in {:.1} s (exit status {:?}{})",
                    if ok { "ok" } else { "FAILED" },
                    o.secs,
                    o.status,
                    if o.timed_out { ", timed out" } else { "" }
                );
                if !ok {
                    failures.lock().unwrap().push(format!(
                        "=== {what}: exit status {:?} (expected {}){}{}; serial log:\n{}\n=== end of log",
                        o.status,
                        b.expect_status,
                        if o.timed_out { ", timed out" } else { "" },
                        if b.expect_status == 33 && !passed_line { ", no PASS line" } else { "" },
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
    let kernel = build_kernel();
    let mut boots = Vec::new();
    // Every scenario, in one boot, for each memory size and CPU count.
    let mut seed = 1;
    for mem in ["24M", "64M", "512M"] {
        for smp in [1, 2, 4] {
            boots.push(Boot {
                machine: "q35",
                mem,
                smp,
                append: format!("run=all seed={seed}"),
                expect_status: 33,
            });
            seed += 1;
        }
    }
    // Each scenario alone (they must not depend on each other's leftovers).
    for name in ["smoke", "stress", "smp", "irq", "oom", "bench"] {
        boots.push(Boot {
            machine: "q35",
            mem: "64M",
            smp: 2,
            append: format!("run={name} seed=77"),
            expect_status: 33,
        });
    }
    // A failing check must fail the run: an unknown scenario panics in the kernel.
    // The other machine type QEMU offers for -kernel (no PIT, different memory map).
    boots.push(Boot {
        machine: "microvm",
        mem: "64M",
        smp: 4,
        append: "run=all seed=11".into(),
        expect_status: 33,
    });
    boots.push(Boot {
        machine: "q35",
        mem: "24M",
        smp: 1,
        append: "run=no-such-scenario".into(),
        expect_status: 1,
    });

    let failures = run_all(&kernel, &boots);
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
