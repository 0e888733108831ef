//! Shared by `tests/c_api.rs` and `tests/preload.rs`: builds `libshardalloc.so` (and the
//! static library) in `target/capi`, compiles the C programs of `tests/c/`, runs them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn out_dir() -> PathBuf {
    root().join("target").join("capi")
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the shared library once per test process; `None` when gcc is missing.
pub fn lib_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !have("gcc") {
            eprintln!("note: gcc not found: C API tests skipped");
            return None;
        }
        let status = Command::new(cargo())
            .args([
                "build",
                "--release",
                "--features",
                "override",
                "--lib",
                "--target-dir",
            ])
            .arg(out_dir())
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building libshardalloc.so failed");
        let dir = out_dir().join("release");
        assert!(dir.join("libshardalloc.so").exists());
        Some(dir)
    })
    .as_deref()
}

/// Builds the static library once (`cargo rustc --crate-type staticlib`).
pub fn static_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let status = Command::new(cargo())
            .args([
                "rustc",
                "--release",
                "--features",
                "override",
                "--lib",
                "--crate-type",
                "staticlib",
                "--target-dir",
            ])
            .arg(out_dir().join("static"))
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building libshardalloc.a failed");
        let lib = out_dir().join("static/release/libshardalloc.a");
        assert!(lib.exists());
        lib
    })
    .clone()
}

#[derive(Clone, Copy, PartialEq)]
pub enum Link {
    /// `-lshardalloc` (malloc is ours through symbol order)
    Shared,
    /// not linked (LD_PRELOAD or dlopen)
    None,
    /// `libshardalloc.a`
    Static,
}

/// Compiles `tests/c/<src>` once per (source, link) into `target/capi/bin/`.
pub fn build(src: &str, link: Link, extra: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let lib = lib_dir().expect("gcc present");
    let key = format!("{src}-{}", link as u8);
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // building under the lock: compiles are quick, and each binary is built once
    let mut map = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let bin_dir = out_dir().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let stem = Path::new(src).file_stem().unwrap().to_str().unwrap();
    let suffix = match link {
        Link::Shared => "",
        Link::None => "-nolink",
        Link::Static => "-static",
    };
    let exe = bin_dir.join(format!("{stem}{suffix}"));
    let cxx = src.ends_with(".cpp");
    let mut cmd = Command::new(if cxx { "g++" } else { "gcc" });
    cmd.args([
        "-O1",
        "-g",
        "-fno-builtin",
        "-Wall",
        "-Wno-alloc-size-larger-than",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg(root().join("tests/c").join(src))
    .arg("-o")
    .arg(&exe);
    if cxx {
        cmd.arg("-std=c++17");
    }
    match link {
        Link::Shared => {
            cmd.arg(format!("-L{}", lib.display()))
                .arg("-lshardalloc")
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                // RPATH, not RUNPATH: `cargo test` puts target/debug (holding a
                // libshardalloc.so built without `override`) in LD_LIBRARY_PATH
                .arg("-Wl,--disable-new-dtags");
        }
        Link::Static => {
            cmd.arg(static_lib());
        }
        Link::None => {}
    }
    cmd.args(["-lpthread", "-ldl", "-lm"]).args(extra);
    let out = cmd.output().expect("run gcc");
    assert!(
        out.status.success(),
        "compiling {src} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    map.insert(key, exe.clone());
    exe
}

pub fn preload() -> String {
    lib_dir()
        .unwrap()
        .join("libshardalloc.so")
        .display()
        .to_string()
}

pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `exe args` with `env`, under `timeout` (seconds), asserting success.
pub fn run_ok(exe: &Path, args: &[&str], env: &[(&str, &str)], secs: u32) -> Output {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(exe)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("run test program");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        exe.display(),
        show(&out)
    );
    out
}

/// Returns from the test (after the note printed by `lib_dir`) when gcc is missing.
#[macro_export]
macro_rules! need_gcc {
    () => {
        if harness::lib_dir().is_none() {
            return;
        }
    };
}
