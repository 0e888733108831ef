//! The core builds for 32-bit and no-compare-and-swap targets, and the hosted tests pass on
//! a 32-bit host (`i686-unknown-linux-gnu`). Each runs cargo for that target; a target
//! that is not installed fails the test with the command that installs it
//! (`scripts/setup.sh` installs them all).

use std::path::Path;
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .current_dir(root())
        .args(args)
        // the flags of this (x86_64) build must not leak into other targets' builds
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .expect("running cargo")
}

fn hint(target: &str, stderr: &str) -> String {
    if stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `core`")
    {
        format!("\nhint: rustup target add {target} (scripts/setup.sh does it)")
    } else {
        String::new()
    }
}

/// `cargo build --lib` of the `no_std` core for `target`, with `features`.
fn build_core(target: &str, features: &str) -> Output {
    let mut args = vec![
        "build",
        "--lib",
        "--no-default-features",
        "--target",
        target,
    ];
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    cargo(&args)
}

#[test]
fn core_builds_for_32bit_microcontroller_and_kernel_targets_without_warnings() {
    // Cortex-M3, Cortex-M4F, RISC-V 32: compare-and-swap, no 64-bit atomics
    // Cortex-M0: no compare-and-swap at all, atomics through critical sections (no flag
    // needed: Cargo.toml turns them on for such targets)
    for (target, features) in [
        ("thumbv7m-none-eabi", ""),
        ("thumbv7em-none-eabihf", ""),
        ("riscv32imac-unknown-none-elf", ""),
        ("thumbv6m-none-eabi", ""),
        // a kernel's build (the frames source): no warning either (issue 14)
        ("x86_64-unknown-none", "frames"),
        ("thumbv7em-none-eabihf", "embedded"),
    ] {
        let out = build_core(target, features);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the core does not build for {target} (features: {features:?}):\n{err}{}",
            hint(target, &err)
        );
        assert!(
            !err.contains("warning"),
            "the build for {target} (features: {features:?}) warns:\n{err}"
        );
        eprintln!("built for {target} {features}");
    }
}

/// `embedded::Heap` (the small geometry) on the host, 64-bit and 32-bit.
#[test]
fn embedded_heap_on_the_host() {
    for target in ["x86_64-unknown-linux-gnu", "i686-unknown-linux-gnu"] {
        let out = cargo(&[
            "test",
            "--target",
            target,
            "--no-default-features",
            "--features",
            "embedded",
            "--test",
            "embedded",
            "--",
            "--nocapture",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "embedded heap tests on {target}:\n{stdout}\n{err}{}",
            hint(target, &err)
        );
        assert!(
            stdout.contains("test embedded_heap_in_16k ... ok"),
            "the embedded heap test did not run on {target}:\n{stdout}"
        );
        for line in err
            .lines()
            .filter(|l| l.starts_with("metadata") || l.contains("blocks"))
        {
            eprintln!("{target}: {line}");
        }
    }
}

#[test]
fn hosted_tests_pass_on_i686() {
    let target = "i686-unknown-linux-gnu";
    let tests = [
        "smoke",
        "model",
        "heaps",
        "shared_heaps",
        "oom",
        "threads",
        "churn",
        "rss",
        "fork",
    ];
    let mut args = vec!["test", "--target", target, "--lib"];
    for t in &tests {
        args.extend(["--test", t]);
    }
    let out = cargo(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut hint = hint(target, &err);
    if err.contains("cannot find -lgcc") || err.contains("crt1.o") || err.contains("gnu/stubs-32.h")
    {
        hint.push_str("\nhint: apt-get install gcc-multilib (scripts/setup.sh does it)");
    }
    assert!(
        out.status.success(),
        "hosted tests on {target}:\n{stdout}\n{err}{hint}"
    );
    // every test binary really ran (the library's unit tests and each named one)
    let passed = stdout.matches("test result: ok.").count();
    assert_eq!(
        passed,
        tests.len() + 1,
        "test binaries run on {target}:\n{stdout}"
    );
    eprintln!("{target}: {passed} test binaries passed");
}
