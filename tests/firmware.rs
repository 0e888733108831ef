//! shardalloc as the heap of Cortex-M firmware, under QEMU: builds
//! `targets/cortex-m` (its own cargo workspace) for each board and runs it with
//! `qemu-system-arm`; each run must exit with success (semihosting), print
//! `scenario NAME ok` for every scenario of the board and `ALL OK`, and finish before the
//! timeout (a hung firmware fails). A firmware built to corrupt a block on purpose must
//! fail (exit status 1, a `FAIL:` line).
//!
//! - lm3s6965evb: Cortex-M3 (`thumbv7m-none-eabi`), 64 KiB SRAM, a 40 KiB heap plus an
//!   8 KiB region added by the `region` scenario;
//! - microbit: Cortex-M0 (`thumbv6m-none-eabi`, no compare-and-swap), 16 KiB SRAM, a
//!   10 KiB heap.
//!
//! Needs `qemu-system-arm` and the two Rust targets (`scripts/setup.sh` installs them);
//! without them the test fails and says what to install. Environment:
//! `SHARDALLOC_FIRMWARE_TIMEOUT` (seconds per QEMU run, default 60).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::process::{require, run_with_timeout, Outcome};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-arm";

struct Board {
    machine: &'static str,
    target: &'static str,
    scenarios: &'static [&'static str],
}

const BOARDS: &[Board] = &[
    Board {
        machine: "lm3s6965evb",
        target: "thumbv7m-none-eabi",
        scenarios: &["smoke", "stress", "oom", "irq", "frag", "region"],
    },
    Board {
        machine: "microbit",
        target: "thumbv6m-none-eabi",
        // the microbit's 16 KiB hold no second region
        scenarios: &["smoke", "stress", "oom", "irq", "frag"],
    },
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
fn fw_dir() -> PathBuf {
    root().join("targets/cortex-m")
}
fn target_dir() -> PathBuf {
    fw_dir().join("target")
}

fn check_qemu() {
    require(
        QEMU,
        "this test runs the Cortex-M firmware under QEMU",
        "qemu-system-arm",
    );
}

/// The Rust targets must be installed (rustup); say how if not.
fn check_targets() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let missing: Vec<&str> = BOARDS
        .iter()
        .map(|b| b.target)
        .filter(|t| !sysroot.join("lib/rustlib").join(t).join("lib").is_dir())
        .collect();
    assert!(
        missing.is_empty(),
        "the Rust target(s) {missing:?} are not installed (sysroot {}): install with \
         `rustup target add {}` (scripts/setup.sh does it)",
        sysroot.display(),
        missing.join(" ")
    );
}

/// Builds the firmware for `boards` in one cargo run; returns the ELF of each, copied to a
/// name of its own (`variant`).
fn build(boards: &[&Board], features: &[&str], variant: &str) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tdir = target_dir();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(fw_dir())
        .args(["build", "--release", "--bin", "firmware", "--manifest-path"])
        .arg(fw_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&tdir);
    for b in boards {
        cmd.args(["--target", b.target]);
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let t0 = Instant::now();
    let out = cmd
        // this (host) build's flags must not reach the firmware's; the firmware's link
        // arguments come from its build.rs
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("running cargo to build the firmware");
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let hint = if err.contains("target may not be installed")
            || err.contains("can't find crate for `core`")
        {
            "\nhint: rustup target add thumbv7m-none-eabi thumbv6m-none-eabi"
        } else {
            ""
        };
        panic!("building the firmware (features {features:?}) failed:\n{err}{hint}");
    }
    eprintln!(
        "built the firmware (features {features:?}) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    boards
        .iter()
        .map(|b| {
            let elf = tdir.join(b.target).join("release/firmware");
            assert!(elf.exists(), "firmware not found at {}", elf.display());
            let copy = tdir.join(format!("firmware-{}-{variant}.elf", b.machine));
            std::fs::copy(&elf, &copy).expect("copying the firmware");
            copy
        })
        .collect()
}

fn run(machine: &str, elf: &Path) -> Outcome {
    let timeout = Duration::from_secs(
        std::env::var("SHARDALLOC_FIRMWARE_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-M",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args(["-semihosting-config", "enable=on,target=native"])
    .arg("-kernel")
    .arg(elf);
    run_with_timeout(cmd, timeout)
}

/// What is wrong with a run that should have passed (empty: nothing).
fn problems(board: &Board, o: &Outcome) -> Vec<String> {
    let mut p = Vec::new();
    if o.timed_out {
        p.push(format!("timed out after {:.0} s (a hang)", o.secs));
    }
    if o.status != Some(0) {
        p.push(format!("exit status {:?}, not 0", o.status));
    }
    let lines: Vec<&str> = o.log.lines().map(str::trim).collect();
    for s in board.scenarios {
        let want = format!("scenario {s} ok");
        if !lines.iter().any(|l| *l == want) {
            p.push(format!("no `{want}` line"));
        }
    }
    if !lines.iter().any(|l| *l == "ALL OK") {
        p.push("no `ALL OK` line".into());
    }
    if let Some(f) = lines.iter().find(|l| l.starts_with("FAIL")) {
        p.push(format!("a failure line: {f}"));
    }
    p
}

/// Every scenario on every board; then a firmware that corrupts one of its blocks on
/// purpose must fail: the content checks work, and a failing check reaches the host as
/// exit status 1 and a `FAIL:` line. (One test: the builds share a target directory.)
#[test]
fn firmware_under_qemu() {
    check_qemu();
    check_targets();
    let all: Vec<&Board> = BOARDS.iter().collect();
    let elfs = build(&all, &[], "test");
    // the boards in parallel
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = BOARDS
            .iter()
            .zip(&elfs)
            .map(|(b, elf)| s.spawn(move || run(b.machine, elf)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (b, o) in BOARDS.iter().zip(&outcomes) {
        let p = problems(b, o);
        eprintln!(
            "{QEMU} -M {} ({}): {} in {:.2} s",
            b.machine,
            b.target,
            if p.is_empty() { "ok" } else { "FAILED" },
            o.secs
        );
        if p.is_empty() {
            // the figures the firmware prints (heap, fills, handler count, stack)
            for l in o.log.lines().filter(|l| !l.starts_with("scenario ")) {
                eprintln!("    {l}");
            }
        } else {
            failures.push(format!(
                "=== -M {} ({}): {}; output:\n{}\n=== end of output",
                b.machine,
                b.target,
                p.join("; "),
                o.log
            ));
        }
    }

    let lm3s = &BOARDS[0];
    let bad = build(&[lm3s], &["inject-failure"], "inject-failure");
    let o = run(lm3s.machine, &bad[0]);
    eprintln!(
        "{QEMU} -M {} with a deliberate corruption: exit status {:?} in {:.2} s",
        lm3s.machine, o.status, o.secs
    );
    let caught = !o.timed_out
        && o.status == Some(1)
        && o.log
            .lines()
            .any(|l| l.starts_with("FAIL: stress") && l.contains("corrupted"))
        && !o.log.contains("ALL OK");
    if !caught {
        failures.push(format!(
            "=== a firmware that corrupts a block on purpose did not fail as it should \
             (exit status {:?}{}, expected 1 and a `FAIL: stress ... corrupted` line); output:\n{}\n=== end of output",
            o.status,
            if o.timed_out { ", timed out" } else { "" },
            o.log
        ));
    }
    assert!(
        failures.is_empty(),
        "firmware runs failed:\n{}",
        failures.join("\n")
    );
}
