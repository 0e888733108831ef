//! Shared by `tests/c_api.rs` and `tests/preload.rs`: builds `libshardalloc.so` (and the
//! static library) in `target/capi`, compiles the C programs of `tests/c/`, runs them.
//!
//! Missing tools: a test that needs a program which is not installed (gcc, g++, nm,
//! readelf, objdump, python3, sort, git, perl, ...) FAILS, naming the program
//! ([`need`], [`need_tool!`]); `bash scripts/setup.sh` installs all of them. The one
//! opt-out is the environment variable `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1`
//! ([`ALLOW_MISSING_TOOLS`]), which CI never sets: with it, such a test prints a note and
//! passes without running.
//!
//! Preloaded runs prove that shardalloc served them: they run with
//! `SHARDALLOC_SHOW_STATS=1`, and each process the test names must print its statistics
//! table at exit (headed by its pid and program name) with at least one page handed out
//! ([`assert_served`]).
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

/// The explicit opt-out that lets tests whose tools are missing pass without running.
pub const ALLOW_MISSING_TOOLS: &str = "SHARDALLOC_TEST_ALLOW_MISSING_TOOLS";

/// Whether `program` is on PATH. When it is not, the test fails with the reason, unless
/// `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1`: then a note is printed and `false` returned
/// (the caller returns, skipping the test).
pub fn need(program: &str) -> bool {
    if have(program) {
        return true;
    }
    if std::env::var(ALLOW_MISSING_TOOLS).is_ok_and(|v| v == "1") {
        eprintln!("note: {program} not found: test skipped ({ALLOW_MISSING_TOOLS}=1)");
        return false;
    }
    panic!(
        "{program} not found on PATH, so this test cannot run: install it \
         (`bash scripts/setup.sh` installs every tool the tests use), or set \
         {ALLOW_MISSING_TOOLS}=1 to skip such tests explicitly"
    );
}

/// Runs `cmd`, failing the test with the reason when it cannot be spawned.
pub fn spawn_output(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    }
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the shared library once per test process.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(cargo())
            .args([
                "rustc",
                "--release",
                "--features",
                "override",
                "--lib",
                "--crate-type",
                "cdylib",
                "--target-dir",
            ])
            .arg(out_dir())
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building libshardalloc.so failed");
        let dir = out_dir().join("release");
        assert!(dir.join("libshardalloc.so").exists());
        dir
    })
    .as_path()
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
    let stem = Path::new(src).file_stem().unwrap().to_str().unwrap();
    build_named(src, stem, link, extra)
}

/// As [`build`], the program named `stem` (a second build of one source with other flags
/// needs a name of its own).
pub fn build_named(src: &str, stem: &str, link: Link, extra: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let lib = lib_dir();
    let key = format!("{src}-{stem}-{}", link as u8);
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // building under the lock: compiles are quick, and each binary is built once
    let mut map = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let bin_dir = out_dir().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
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
    let out = spawn_output(&mut cmd);
    assert!(
        out.status.success(),
        "compiling {src} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    map.insert(key, exe.clone());
    exe
}

pub fn preload() -> String {
    lib_dir().join("libshardalloc.so").display().to_string()
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
    let out = spawn_output(
        Command::new("timeout")
            .arg(secs.to_string())
            .arg(exe)
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .envs(env.iter().copied()),
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        exe.display(),
        show(&out)
    );
    out
}

// ---------------------------------------------------------------------------------------
// proof that a preloaded run was served by shardalloc

/// The start of the statistics table that a process prints at exit with
/// `SHARDALLOC_SHOW_STATS=1`: `shardalloc statistics (process <pid>, <program>):`.
pub const STATS_HEADER: &str = "shardalloc statistics (process ";

/// One statistics table found in a process's stderr.
#[derive(Debug)]
pub struct Banner {
    pub pid: u32,
    pub program: String,
    /// Pages handed out to the process's heaps (the `total` column of `pages`).
    pub pages_total: i64,
}

/// The statistics tables in `text` (the stderr of one or more processes; each line of a
/// table is one `write`, so tables of processes that exit at once may interleave by
/// lines, and a row is taken from the first such line after its header).
pub fn banners(text: &str) -> Vec<Banner> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find(STATS_HEADER) else {
            continue;
        };
        let rest = &line[at + STATS_HEADER.len()..];
        let Some((pid, rest)) = rest.split_once(", ") else {
            continue;
        };
        let Some(program) = rest.strip_suffix("):") else {
            continue;
        };
        let pages_total = lines[i + 1..]
            .iter()
            .take(12)
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("pages")).then(|| f.nth(1).and_then(|t| t.parse().ok()))?
            })
            .unwrap_or(-1);
        found.push(Banner {
            pid: pid.parse().unwrap_or(0),
            program: program.to_string(),
            pages_total,
        });
    }
    found
}

/// Asserts that `stderr` (of one run, possibly gathered from several files) holds, for
/// each `(program, n)` of `served`, at least `n` statistics tables of processes of that
/// name which were handed pages by shardalloc.
pub fn assert_served(stderr: &str, served: &[(&str, usize)], context: &str) {
    let all = banners(stderr);
    for &(program, n) in served {
        let got = all
            .iter()
            .filter(|b| b.program == program && b.pages_total > 0)
            .count();
        assert!(
            got >= n,
            "{context}: expected {n} statistics table(s) of `{program}` with pages handed out \
             by shardalloc (SHARDALLOC_SHOW_STATS=1), found {got}; tables found: {:?}\n\
             --- stderr\n{stderr}",
            all.iter()
                .map(|b| format!("{} {} pages {}", b.program, b.pid, b.pages_total))
                .collect::<Vec<_>>()
        );
    }
}

/// Asserts that no process printed a statistics table (a run without the library).
pub fn assert_not_served(stderr: &str, context: &str) {
    assert!(
        banners(stderr).is_empty() && !stderr.contains("shardalloc:"),
        "{context}: shardalloc output in a run without LD_PRELOAD:\n{stderr}"
    );
}

/// Fails the test (or, with the opt-out, returns from it) when `$program` is missing.
#[macro_export]
macro_rules! need_tool {
    ($program:expr) => {
        if !harness::need($program) {
            return;
        }
    };
}

/// `need_tool!("gcc")`: every test of the C library compiles C.
#[macro_export]
macro_rules! need_gcc {
    () => {
        $crate::need_tool!("gcc")
    };
}
