//! Windows, under Wine, from `cargo test` on Linux:
//! - the hosted test suite cross-built for `x86_64-pc-windows-gnu` with `ShardAlloc` as
//!   the global allocator, run through Wine as the cargo runner (`.cargo/config.toml`,
//!   `scripts/wine-runner.sh`);
//! - `shardalloc.dll` with its import library, and C programs written for `mimalloc.h`
//!   linked against it with MinGW, run under Wine.
//!
//! Left out on Windows, with the reason: `fork` (no fork), `realloc_huge` (Windows has no
//! `mremap`: large blocks are copied; its fault counts come from `getrusage`), `c_api` and
//! `preload` (the libc names and `LD_PRELOAD`: the DLL does not replace the C runtime's
//! `malloc`), `qemu`, `firmware`, `targets` (other homes).
//!
//! Missing tools (Wine, MinGW, the rustup target) fail the tests with the command that
//! installs them (`scripts/setup.sh` installs all), unless
//! `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1`.

#[path = "c/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = "x86_64-pc-windows-gnu";

/// The hosted tests that run on Windows (each its own binary), and the Windows-only one.
const TESTS: [&str; 11] = [
    "smoke",
    "model",
    "heaps",
    "shared_heaps",
    "oom",
    "threads",
    "churn",
    "thread_pool",
    "rss",
    "purge_delay",
    "windows_source",
];

fn wine_installed() -> bool {
    Path::new("/usr/lib/wine/wine64").exists() || harness::have("wine64") || harness::have("wine")
}

/// Fails the test (or, with the opt-out, returns false) when Wine or MinGW is missing.
fn need_wine_and_mingw() -> bool {
    if !wine_installed() {
        if std::env::var(harness::ALLOW_MISSING_TOOLS).is_ok_and(|v| v == "1") {
            eprintln!("note: Wine not found: test skipped");
            return false;
        }
        panic!(
            "Wine is not installed, so the Windows tests cannot run: apt-get install wine64 \
             (`bash scripts/setup.sh` installs it), or set {}=1 to skip them explicitly",
            harness::ALLOW_MISSING_TOOLS
        );
    }
    harness::need("x86_64-w64-mingw32-gcc")
}

fn cargo(args: &[&str]) -> Output {
    harness::spawn_output(
        Command::new(harness::cargo())
            .current_dir(harness::root())
            .args(args)
            // the flags of this (Linux) build must not leak into the Windows build
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS"),
    )
}

fn hint(stderr: &str) -> &'static str {
    if stderr.contains("target may not be installed") || stderr.contains("can't find crate for") {
        "\nhint: rustup target add x86_64-pc-windows-gnu (scripts/setup.sh does it)"
    } else {
        ""
    }
}

#[test]
fn hosted_tests_pass_under_wine() {
    if !need_wine_and_mingw() {
        return;
    }
    let mut args = vec!["test", "--target", TARGET, "--lib"];
    for t in TESTS {
        args.extend(["--test", t]);
    }
    args.extend(["--", "--nocapture"]);
    let out = cargo(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hosted tests on {TARGET} under Wine:\n{stdout}\n{err}{}",
        hint(&err)
    );
    // every binary ran, as a Windows executable through the runner
    let passed = stdout.matches("test result: ok.").count();
    assert_eq!(
        passed,
        TESTS.len() + 1,
        "test binaries run under Wine:\n{stdout}\n{err}"
    );
    for t in TESTS {
        let running = format!("Running tests/{t}.rs (target/{TARGET}/");
        let line = err.lines().find(|l| l.contains(&running));
        assert!(
            line.is_some_and(|l| l.trim_end().ends_with(".exe)")),
            "tests/{t}.rs did not run as a Windows program:\n{err}"
        );
    }
    // the Windows page source served: its configuration, read from GetSystemInfo
    assert!(
        err.contains("alloc_granularity: 65536, has_reserve: true"),
        "the VirtualAlloc source's configuration was not reported:\n{err}"
    );
    for line in err.lines().filter(|l| {
        l.starts_with("aligned regions:")
            || l.starts_with("threads:")
            || l.starts_with("huge:")
            || l.starts_with("delay 0:")
    }) {
        eprintln!("{TARGET}: {line}");
    }
    eprintln!("{TARGET}: {passed} test binaries passed under Wine");
}

/// `shardalloc.dll` and `libshardalloc.dll.a`, built once per test process.
fn dll_dir() -> PathBuf {
    let out = cargo(&[
        "rustc",
        "--release",
        "--features",
        "override",
        "--lib",
        "--crate-type",
        "cdylib",
        "--target",
        TARGET,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "building shardalloc.dll failed:\n{err}{}",
        hint(&err)
    );
    let dir = harness::root().join("target").join(TARGET).join("release");
    for f in ["shardalloc.dll", "libshardalloc.dll.a"] {
        assert!(dir.join(f).exists(), "{f} was not built");
    }
    dir
}

/// Compiles `tests/c/<src>` with MinGW against the import library, into a directory that
/// also holds the DLL (where Windows looks for it first).
fn build_exe(src: &str, compiler: &str, extra: &[&str]) -> PathBuf {
    let lib = dll_dir();
    let bin = harness::root().join("target").join("wine-c");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(lib.join("shardalloc.dll"), bin.join("shardalloc.dll")).unwrap();
    let exe = bin.join(Path::new(src).with_extension("exe").file_name().unwrap());
    let out = harness::spawn_output(
        Command::new(compiler)
            .arg("-O2")
            .arg("-Wall")
            .arg("-Werror")
            .arg("-I")
            .arg(harness::root().join("include"))
            .arg(harness::root().join("tests/c").join(src))
            .arg("-o")
            .arg(&exe)
            .args(extra)
            .arg("-L")
            .arg(&lib)
            .arg("-lshardalloc"),
    );
    assert!(
        out.status.success(),
        "compiling {src}: {}",
        harness::show(&out)
    );
    // the program imports the DLL (not a static copy, not the C runtime's malloc)
    let dump = harness::spawn_output(
        Command::new("x86_64-w64-mingw32-objdump")
            .arg("-p")
            .arg(&exe),
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("DLL Name: shardalloc.dll"),
        "{src}: the program does not import shardalloc.dll"
    );
    exe
}

fn run_under_wine(exe: &Path, env: &[(&str, &str)]) -> Output {
    let out = harness::spawn_output(
        Command::new("timeout")
            .arg("300")
            .arg(harness::root().join("scripts/wine-runner.sh"))
            .arg(exe)
            .current_dir(exe.parent().unwrap())
            .envs(env.iter().copied()),
    );
    assert!(
        out.status.success(),
        "{} under Wine: {}",
        exe.display(),
        harness::show(&out)
    );
    out
}

/// mimalloc's API through the DLL: allocation, errors, alignment, strings, heaps,
/// options, statistics, threads (tests/c/test_mi.c); the statistics table printed at
/// unload (`MIMALLOC_SHOW_STATS=1`) proves the DLL served it.
#[test]
fn mimalloc_h_program_runs_on_the_dll() {
    if !need_wine_and_mingw() {
        return;
    }
    let exe = build_exe("test_mi.c", "x86_64-w64-mingw32-gcc", &[]);
    let out = run_under_wine(&exe, &[("MIMALLOC_SHOW_STATS", "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("checks passed"),
        "test_mi did not report: {}",
        harness::show(&out)
    );
    harness::assert_served(&stderr, &[("test_mi.exe", 1)], "test_mi.exe under Wine");
    eprintln!("{}", stdout.trim());
}

/// Programs written for mimalloc (its header, macros, types, and C++ STL allocators)
/// compile unchanged with MinGW and run on the DLL.
#[test]
fn mimalloc_users_compile_unchanged_for_windows() {
    if !need_wine_and_mingw() || !harness::need("x86_64-w64-mingw32-g++") {
        return;
    }
    let exe = build_exe("mimalloc_user.c", "x86_64-w64-mingw32-gcc", &[]);
    let out = run_under_wine(&exe, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 1 1");
    let exe = build_exe(
        "mimalloc_user.cpp",
        "x86_64-w64-mingw32-g++",
        &["-static-libgcc", "-static-libstdc++"],
    );
    let out = run_under_wine(&exe, &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "100000 1000 1000 1"
    );
}

/// The MSVC target differs only in the toolchain: the library (with the C API) type-checks
/// for it. (Linking needs MSVC's linker and libraries, which this machine does not have, so
/// it is neither linked nor run here.)
#[test]
fn msvc_target_type_checks() {
    let out = cargo(&[
        "check",
        "--lib",
        "--features",
        "override",
        "--target",
        "x86_64-pc-windows-msvc",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let hint = if err.contains("target may not be installed") || err.contains("can't find crate") {
        "\nhint: rustup target add x86_64-pc-windows-msvc (scripts/setup.sh does it)"
    } else {
        ""
    };
    assert!(
        out.status.success(),
        "cargo check for x86_64-pc-windows-msvc:\n{err}{hint}"
    );
    assert!(
        !err.contains("warning:"),
        "warnings for x86_64-pc-windows-msvc:\n{err}"
    );
}
