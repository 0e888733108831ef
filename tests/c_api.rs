//! The C library: builds `libshardalloc.so` (`cargo build --release --features override`,
//! in its own target directory `target/capi` so as not to wait for the outer cargo's
//! lock), builds the C programs of `tests/c/` against `include/` with `gcc`, and runs
//! them: every entry point's edge cases, threads with churn and cross-thread frees, fork
//! while allocating, dlopen, C++ new/delete, and real programs under `LD_PRELOAD`
//! whose output must match a run without it.
//!
//! Skips (with a printed note) only when `gcc` is missing, or, for single programs of the
//! `LD_PRELOAD` comparison, when that program is not installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir() -> PathBuf {
    root().join("target").join("capi")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the shared library once per test process; `None` when gcc is missing.
fn lib_dir() -> Option<&'static Path> {
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
fn static_lib() -> PathBuf {
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
enum Link {
    /// `-lshardalloc` (malloc is ours through symbol order)
    Shared,
    /// not linked (LD_PRELOAD or dlopen)
    None,
    /// `libshardalloc.a`
    Static,
}

/// Compiles `tests/c/<src>` once per (source, link) into `target/capi/bin/`.
fn build(src: &str, link: Link, extra: &[&str]) -> PathBuf {
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

fn preload() -> String {
    lib_dir()
        .unwrap()
        .join("libshardalloc.so")
        .display()
        .to_string()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `exe args` with `env`, under `timeout` (seconds), asserting success.
fn run_ok(exe: &Path, args: &[&str], env: &[(&str, &str)], secs: u32) -> Output {
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

macro_rules! need_gcc {
    () => {
        if lib_dir().is_none() {
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------
// the library itself

#[test]
fn library_exports_and_tls() {
    need_gcc!();
    let so = lib_dir().unwrap().join("libshardalloc.so");
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output();
    let Ok(nm) = nm else {
        eprintln!("note: nm not found: export check skipped");
        return;
    };
    let syms = String::from_utf8_lossy(&nm.stdout);
    let defined: std::collections::HashSet<&str> = syms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for s in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "cfree",
        "__libc_malloc",
        "__libc_free",
        "__libc_calloc",
        "__libc_realloc",
        "__libc_memalign",
        "_Znwm",
        "_Znam",
        "_ZnwmRKSt9nothrow_t",
        "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t",
        "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv",
        "_ZdaPv",
        "_ZdlPvm",
        "_ZdaPvm",
        "_ZdlPvSt11align_val_t",
        "_ZdaPvSt11align_val_t",
        "_ZdlPvmSt11align_val_t",
        "_ZdaPvmSt11align_val_t",
        "_ZdlPvRKSt9nothrow_t",
        "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t",
        "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    ] {
        assert!(defined.contains(s), "{s} not exported");
    }
    // every function declared in mimalloc.h and shardalloc.h is exported
    for header in ["mimalloc.h", "shardalloc.h"] {
        let text = std::fs::read_to_string(root().join("include").join(header)).unwrap();
        for line in text.lines().filter(|l| {
            l.contains("mi_decl_export")
                || l.starts_with("size_t shardalloc_")
                || l.starts_with("void shardalloc_")
                || l.starts_with("int shardalloc_")
        }) {
            let Some(paren) = line.find('(') else {
                continue;
            };
            let name = line[..paren]
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap();
            if name.starts_with("mi_") || name.starts_with("shardalloc_") {
                assert!(
                    defined.contains(name),
                    "{name} declared in {header} but not exported"
                );
            }
        }
    }
    // the thread-local heap slot is initial-exec TLS: the library says STATIC_TLS, and
    // its TLS block is small enough for glibc's static TLS surplus (dlopen)
    let Ok(re) = Command::new("readelf")
        .arg("-lW")
        .arg("-d")
        .arg(&so)
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&re.stdout);
    assert!(text.contains("STATIC_TLS"), "no STATIC_TLS flag:\n{text}");
    let tls = text
        .lines()
        .find(|l| l.trim_start().starts_with("TLS"))
        .expect("TLS segment");
    let memsz = usize::from_str_radix(
        tls.split_whitespace()
            .nth(5)
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(
        memsz <= 512,
        "TLS block of {memsz} bytes is too big for dlopen"
    );
}

#[test]
fn malloc_fast_path_reads_tls_directly() {
    need_gcc!();
    // the malloc fast path must not call __tls_get_addr (general-dynamic TLS)
    let so = lib_dir().unwrap().join("libshardalloc.so");
    let Ok(out) = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&so)
        .output()
    else {
        eprintln!("note: objdump not found: check skipped");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("<__libc_malloc>:\n")
        .or_else(|| text.find("<malloc>:\n"))
        .expect("malloc");
    let body: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        body.contains("%fs:"),
        "malloc does not read %fs directly:\n{body}"
    );
    assert!(
        !body.contains("__tls_get_addr"),
        "malloc calls __tls_get_addr:\n{body}"
    );
}

// ---------------------------------------------------------------------------------------
// C programs

#[test]
fn api_cases() {
    need_gcc!();
    let exe = build("test_api.c", Link::Shared, &[]);
    let out = run_ok(&exe, &[], &[], 120);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0 failed checks"), "{}", show(&out));
}

#[test]
fn api_cases_static_library() {
    need_gcc!();
    let exe = build("test_api.c", Link::Static, &[]);
    // the constructor (options from the environment) runs in a static link too
    run_ok(&exe, &["env-limit"], &[("SHARDALLOC_LIMIT", "64M")], 60);
    let out = run_ok(&exe, &[], &[], 120);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0 failed checks"),
        "{}",
        show(&out)
    );
}

#[test]
fn checked_free_reports_double_and_invalid_frees() {
    need_gcc!();
    let exe = build("test_api.c", Link::Shared, &[]);
    let out = run_ok(
        &exe,
        &["checked-free"],
        &[("SHARDALLOC_SHOW_ERRORS", "1")],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shardalloc: error: double free of 0x"),
        "{}",
        show(&out)
    );
    assert!(
        err.contains("shardalloc: error: invalid free of 0x"),
        "{}",
        show(&out)
    );
    // mimalloc's name for the option works too
    run_ok(
        &exe,
        &["checked-free"],
        &[("MIMALLOC_SHOW_ERRORS", "1")],
        60,
    );
}

#[test]
fn options_from_the_environment() {
    need_gcc!();
    let exe = build("test_api.c", Link::Shared, &[]);
    run_ok(&exe, &["env-limit"], &[("SHARDALLOC_LIMIT", "64M")], 60);
    run_ok(&exe, &["env-limit"], &[("MIMALLOC_LIMIT", "65536K")], 60);
    let out = run_ok(
        &exe,
        &["env-mimalloc-names"],
        &[
            ("MIMALLOC_PURGE_DELAY", "0"),
            ("MIMALLOC_SHOW_STATS", "1"),
            ("MIMALLOC_VERBOSE", "yes"),
        ],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("option 'decommit_delay': 0"), "{}", show(&out));
    // show_stats: statistics at exit
    assert!(
        err.contains("shardalloc statistics") && err.contains("allocated"),
        "{}",
        show(&out)
    );
    run_ok(
        &exe,
        &["env-precedence"],
        &[
            ("SHARDALLOC_PURGE_DELAY", "-1"),
            ("MIMALLOC_PURGE_DELAY", "0"),
        ],
        60,
    );
}

#[test]
fn throwing_new_aborts_with_a_message() {
    need_gcc!();
    let exe = build("test_api.c", Link::Shared, &[]);
    let out = Command::new(&exe)
        .arg("new-fails")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shardalloc: fatal: operator new") && !err.contains("not reached"),
        "{}",
        show(&out)
    );
}

#[test]
fn threads_churn_and_cross_thread_frees() {
    need_gcc!();
    let exe = build("test_stress.c", Link::Shared, &[]);
    let out = run_ok(&exe, &["8", "6"], &[], 120);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_stress: ok"),
        "{}",
        show(&out)
    );
    // and preloaded into a program not linked with it, in checked mode
    let exe = build("test_stress.c", Link::None, &[]);
    let out = run_ok(
        &exe,
        &["4", "4"],
        &[("LD_PRELOAD", &preload()), ("SHARDALLOC_SHOW_ERRORS", "1")],
        120,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_stress: ok"),
        "{}",
        show(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("shardalloc: error"),
        "{}",
        show(&out)
    );
}

#[test]
fn fork_while_other_threads_allocate() {
    need_gcc!();
    let exe = build("test_fork.c", Link::Shared, &[]);
    // a deadlocked child shows up as the timeout killing the run
    let out = run_ok(&exe, &["100"], &[], 90);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_fork: 100 forks, ok"),
        "{}",
        show(&out)
    );
}

#[test]
fn dlopen_works() {
    need_gcc!();
    let exe = build("test_dlopen.c", Link::None, &[]);
    let so = preload();
    let out = run_ok(&exe, &[&so], &[], 60);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_dlopen: ok"),
        "{}",
        show(&out)
    );
}

#[test]
fn cxx_new_and_delete() {
    need_gcc!();
    if !have("g++") {
        eprintln!("note: g++ not found: C++ test skipped");
        return;
    }
    let exe = build("test_cxx.cpp", Link::Shared, &[]);
    run_ok(&exe, &[], &[], 60);
    let exe = build("test_cxx.cpp", Link::None, &[]);
    let out = run_ok(&exe, &[], &[("LD_PRELOAD", &preload())], 60);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_cxx: ok"),
        "{}",
        show(&out)
    );
}

#[test]
fn mimalloc_users_compile_unchanged() {
    need_gcc!();
    // a program written for mimalloc: its header, its macros, its types, -lshardalloc
    let dir = out_dir().join("mimalloc-user");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("user.c");
    std::fs::write(
        &src,
        r#"#include <mimalloc.h>
#include <stdio.h>
#include <string.h>
typedef struct { int x; double y; } point_t;
int main(void) {
  point_t* p = mi_malloc_tp(point_t);
  point_t* ps = mi_calloc_tp(point_t, 10);
  ps = mi_reallocn_tp(ps, point_t, 20);
  mi_heap_t* h = mi_heap_new();
  point_t* q = mi_heap_malloc_tp(h, point_t);
  mi_option_t opt = mi_option_show_errors;
  mi_option_set_enabled(opt, false);
  mi_heap_area_t area; memset(&area, 0, sizeof area);
  printf("%d %d %d\n", p != NULL && ps != NULL && q != NULL, MI_SMALL_SIZE_MAX == 1024, mi_option_decommit_delay == 15);
  mi_free(p); mi_free(ps); mi_heap_destroy(h);
  return 0;
}
"#,
    )
    .unwrap();
    let lib = lib_dir().unwrap();
    let exe = dir.join("user");
    let out = Command::new("gcc")
        .arg("-Wall")
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lshardalloc")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-Wl,--disable-new-dtags")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = run_ok(&exe, &[], &[], 30);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 1 1\n");
}

// ---------------------------------------------------------------------------------------
// real programs under LD_PRELOAD: same output as without

/// Runs `sh -c script` with and without the library preloaded (and once more in checked
/// mode); stdout and exit status must match, and checked mode must report nothing.
fn same_output(name: &str, script: &str, dir: &Path) {
    let run = |env: &[(&str, String)]| {
        Command::new("timeout")
            .args(["120", "sh", "-c", script])
            .current_dir(dir)
            .env_remove("LD_LIBRARY_PATH")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run sh")
    };
    let plain = run(&[]);
    assert!(
        plain.status.success(),
        "{name} fails even without shardalloc: {}",
        show(&plain)
    );
    let pre = run(&[("LD_PRELOAD", preload())]);
    assert_eq!(
        pre.status.code(),
        plain.status.code(),
        "{name}: {}",
        show(&pre)
    );
    assert!(
        pre.stdout == plain.stdout,
        "{name}: output differs under LD_PRELOAD: {}",
        show(&pre)
    );
    let checked = run(&[
        ("LD_PRELOAD", preload()),
        ("SHARDALLOC_SHOW_ERRORS", "1".into()),
    ]);
    assert!(
        checked.stdout == plain.stdout,
        "{name}: output differs in checked mode: {}",
        show(&checked)
    );
    assert!(
        !String::from_utf8_lossy(&checked.stderr).contains("shardalloc:"),
        "{name}: errors reported: {}",
        show(&checked)
    );
    eprintln!(
        "{name}: same output under LD_PRELOAD ({} bytes)",
        plain.stdout.len()
    );
}

fn work_dir(name: &str) -> PathBuf {
    let d = out_dir().join("programs").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn preload_python() {
    need_gcc!();
    if !have("python3") {
        eprintln!("note: python3 not installed: skipped");
        return;
    }
    let dir = work_dir("python");
    std::fs::write(
        dir.join("work.py"),
        r#"import json, threading, collections, re, hashlib
d = {str(i): [i] * (i % 17) for i in range(200000)}
s = json.dumps(d)
back = json.loads(s)
words = collections.Counter(re.findall(r"\d+", s[:2000000]))
out = []
def work(k):
    h = hashlib.sha256()
    for i in range(20000):
        h.update(("%d-%d" % (k, i)).encode() * (i % 5))
    out.append((k, h.hexdigest()))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(s), len(back), words.most_common(3), sorted(out))
"#,
    )
    .unwrap();
    same_output("python3", "python3 work.py", &dir);
}

#[test]
fn preload_sort() {
    need_gcc!();
    if !have("sort") {
        eprintln!("note: sort not installed: skipped");
        return;
    }
    let dir = work_dir("sort");
    let mut text = String::new();
    let mut x: u64 = 88172645463325252;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:x} {}\n", x, x % 1000));
    }
    std::fs::write(dir.join("lines.txt"), text).unwrap();
    same_output(
        "sort",
        "sort -S 1M --parallel=2 lines.txt | md5sum; sort -n -k2 lines.txt | tail -3",
        &dir,
    );
}

#[test]
fn preload_git() {
    need_gcc!();
    if !have("git") {
        eprintln!("note: git not installed: skipped");
        return;
    }
    let r = root();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&r)
        .output();
    let Ok(head) = head else { return };
    if !head.status.success() {
        eprintln!("note: not a git checkout: git test skipped");
        return;
    }
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    same_output(
        "git",
        &format!("git log --stat -n 20 {head} && git cat-file -p {head}^{{tree}} && git rev-list --count {head}"),
        &r,
    );
}

#[test]
fn preload_perl() {
    need_gcc!();
    if !have("perl") {
        eprintln!("note: perl not installed: skipped");
        return;
    }
    let dir = work_dir("perl");
    same_output(
        "perl",
        r#"perl -e 'my %h; for my $i (1..200000) { $h{"k$i"} = "v" x ($i % 50) } my $t = 0; $t += length($h{$_}) for keys %h; my @s = sort { $a cmp $b } keys %h; my $j = join(",", map { $_ * 2 } 1..100000); $j =~ s/(\d+)/<$1>/g; print "$t $s[0] $s[-1] ", length($j), "\n"'"#,
        &dir,
    );
}

#[test]
fn preload_gcc() {
    need_gcc!();
    let dir = work_dir("gcc");
    std::fs::write(
        dir.join("prog.c"),
        r#"#include <stdio.h>
#include <stdlib.h>
struct node { int v; struct node* next; };
static int cmp(const void* a, const void* b) { return *(const int*)a - *(const int*)b; }
int main(void) {
  struct node* h = NULL;
  for (int i = 0; i < 1000; i++) { struct node* n = malloc(sizeof *n); n->v = i * 7 % 1000; n->next = h; h = n; }
  int a[1000]; int k = 0;
  for (struct node* n = h; n; n = n->next) a[k++] = n->v;
  qsort(a, 1000, sizeof a[0], cmp);
  printf("%d %d\n", a[0], a[999]);
  return 0;
}
"#,
    )
    .unwrap();
    // compile (cc1 and as run preloaded too), show the assembly, then run the program
    same_output(
        "gcc",
        "gcc -O2 -S -o - prog.c | md5sum && gcc -O2 prog.c -o prog && ./prog",
        &dir,
    );
    if have("g++") {
        std::fs::write(
            dir.join("prog.cpp"),
            "#include <map>\n#include <string>\n#include <iostream>\nint main(){std::map<std::string,int> m; for(int i=0;i<1000;i++) m[std::to_string(i)]=i; std::cout<<m.size()<<\"\\n\";}\n",
        )
        .unwrap();
        same_output(
            "g++",
            "g++ -O1 -S -o - prog.cpp | md5sum && g++ prog.cpp -o progxx && ./progxx",
            &dir,
        );
    }
}
