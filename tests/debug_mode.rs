//! Debug mode (feature `debug-mode`), from the normal test run: builds what it tests with
//! the feature on, in directories of its own (`target/capi-debug`, `target/debug-mode`):
//! - `libshardalloc.so` built with `--features override,debug-mode`, against which
//!   mimalloc's own `test/test-api-fill.c` (v3.4.3, vendored in `tests/c/mimalloc-v3.4.3`,
//!   with a stand-in for the constants it takes from mimalloc's internal `types.h`) must
//!   pass, its debug-fill checks included; and `tests/c/debug_mode_misuse.c`, whose 1-byte
//!   overflows, double and interior frees must be reported with the pointer (and the
//!   requested size);
//! - the Rust tests of `tests/debug_mode_rust.rs`, run with the feature on.

#[path = "c/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use harness::{cargo, need, root, show, spawn_output};

/// `libshardalloc.so` with debug mode, built once per test process.
fn debug_lib_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target/capi-debug");
        let status = Command::new(cargo())
            .args(["rustc", "--release", "--features", "override,debug-mode"])
            .args(["--lib", "--crate-type", "cdylib", "--target-dir"])
            .arg(&target)
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the debug-mode libshardalloc.so failed"
        );
        let dir = target.join("release");
        assert!(dir.join("libshardalloc.so").exists());
        dir
    })
}

/// Compiles `tests/c/<src>` against the debug-mode library, with `include` extra include
/// directories first.
fn build_c(src: &str, include: &[PathBuf]) -> PathBuf {
    let lib = debug_lib_dir();
    let bin = root().join("target/capi-debug/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join(PathBuf::from(src).file_stem().unwrap());
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-g", "-fno-builtin", "-Wall"]);
    for dir in include {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c").join(src))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lshardalloc")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-Wl,--disable-new-dtags")
        .arg("-lpthread");
    let out = spawn_output(&mut cmd);
    assert!(
        out.status.success(),
        "compiling {src} failed:\n{}",
        show(&out)
    );
    exe
}

#[test]
fn mimalloc_test_api_fill() {
    if !need("gcc") {
        return;
    }
    let dir = root().join("tests/c/mimalloc-v3.4.3");
    let exe = build_c("mimalloc-v3.4.3/test-api-fill.c", &[dir]);
    let out = spawn_output(&mut Command::new(&exe));
    let text = show(&out);
    assert!(out.status.success(), "test-api-fill failed:\n{text}");
    // every case ran, the debug-fill ones included (MI_DEBUG >= 2 in the stand-in header)
    for case in [
        "zeroinit-recalloc_aligned-large",
        "uninit-malloc-small",
        "uninit-realloc_aligned-large",
        "fill-freed-small",
        "fill-freed-large",
    ] {
        assert!(
            text.contains(&format!("test: {case}...")),
            "case {case} did not run:\n{text}"
        );
    }
    assert!(
        text.contains("succeeded: 32") && text.contains("failed   : 0"),
        "{text}"
    );
}

#[test]
fn c_misuse_is_reported_with_address_and_size() {
    if !need("gcc") {
        return;
    }
    let exe = build_c("debug_mode_misuse.c", &[]);
    let out = spawn_output(&mut Command::new(&exe));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "debug_mode_misuse failed:\n{}",
        show(&out)
    );
    assert!(stdout.contains("done 0"), "{stdout}");
    let mut checked = 0;
    for line in stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let want = match w.as_slice() {
            ["overflow", addr, size] => {
                format!(
                    "buffer overflow in heap block {addr} of size {size}: write after {size} bytes"
                )
            }
            ["double", addr] => format!("double free of {addr}"),
            ["interior", addr] => format!("invalid free of {addr} (inside a block"),
            _ => continue,
        };
        assert!(
            stderr.contains(&want),
            "no report \"{want}\" on stderr:\n{stderr}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "{stdout}");
}

#[test]
fn rust_debug_mode_tests() {
    let out = spawn_output(
        Command::new(cargo())
            .args([
                "test",
                "--features",
                "debug-mode",
                "--test",
                "debug_mode_rust",
                "--target-dir",
            ])
            .arg(root().join("target/debug-mode"))
            .current_dir(root()),
    );
    let text = show(&out);
    assert!(out.status.success(), "debug_mode_rust failed:\n{text}");
    assert!(text.contains("test result: ok. 8 passed"), "{text}");
}
