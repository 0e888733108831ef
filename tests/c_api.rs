//! The C library: builds `libshardalloc.so` (`cargo rustc --release --features override --lib --crate-type cdylib`,
//! in its own target directory `target/capi` so as not to wait for the outer cargo's
//! lock), builds the C programs of `tests/c/` against `include/` with `gcc`, and runs
//! them: every entry point's edge cases, threads with churn and cross-thread frees, fork
//! while allocating, dlopen, C++ new/delete, mimalloc users. (Real programs under
//! `LD_PRELOAD`: `tests/preload.rs`.)
//!
//! A missing tool (gcc, g++, nm, readelf, objdump) fails the test that needs it, unless
//! `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1` (see `tests/c/harness.rs`). Preloaded runs
//! prove that shardalloc served them (`harness::assert_served`).

#[path = "c/harness.rs"]
mod harness;

use std::process::Command;

use harness::{
    assert_served, build, build_named, lib_dir, preload, root, run_ok, show, spawn_output, Link,
};

// ---------------------------------------------------------------------------------------
// the library itself

#[test]
fn library_exports_and_tls() {
    need_gcc!();
    need_tool!("nm");
    need_tool!("readelf");
    let so = lib_dir().join("libshardalloc.so");
    let nm = spawn_output(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    assert!(nm.status.success(), "nm failed: {}", show(&nm));
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
    // every function declared in the shipped headers (mimalloc v3.4.3's mimalloc.h and
    // mimalloc-stats.h, and shardalloc.h) is exported
    let mut declared = Vec::new();
    for header in ["mimalloc.h", "mimalloc-stats.h", "shardalloc.h"] {
        let text = std::fs::read_to_string(root().join("include").join(header)).unwrap();
        let names = declared_functions(&text);
        assert!(!names.is_empty(), "no declarations found in {header}");
        for name in names {
            assert!(
                defined.contains(name.as_str()),
                "{name} declared in {header} but not exported"
            );
            declared.push(name);
        }
    }
    // (the parser found them all: mimalloc v3.4.3's two headers declare 190 functions, one
    // of them, mi_stats_print_out, in both; the 5 mimalloc 2.x functions kept at the end
    // of mimalloc.h; shardalloc.h's 4)
    assert_eq!(declared.len(), 190 + 1 + 5 + 4, "{declared:?}");
    for f in [
        "mi_umalloc",
        "mi_ufree",
        "mi_heap_of",
        "mi_stats_get_json",
        "mi_subproc_new",
        "mi_theap_malloc",
        "mi_manage_os_memory_ex",
        "mi_option_get_size",
        "mi_process_done",
    ] {
        assert!(
            declared.iter().any(|d| d == f),
            "{f} not found by the header parser"
        );
    }
    // the thread-local heap slot is initial-exec TLS: the library says STATIC_TLS, and
    // its TLS block is small enough for glibc's static TLS surplus (dlopen)
    let re = spawn_output(Command::new("readelf").arg("-lW").arg("-d").arg(&so));
    assert!(re.status.success(), "readelf failed: {}", show(&re));
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

/// The names of the functions a C header declares: each declaration line (`mi_decl_export`
/// for mimalloc's headers, a return type at the start of the line for shardalloc.h) with
/// comments removed; the name is the identifier before the first `(`.
fn declared_functions(text: &str) -> Vec<String> {
    // drop /* ... */ comments, then // comments line by line
    let mut plain = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        plain.push_str(&rest[..i]);
        rest = rest[i + 2..].split_once("*/").map_or("", |(_, r)| r);
    }
    plain.push_str(rest);
    let mut names = Vec::new();
    for line in plain.lines() {
        let line = line.split("//").next().unwrap();
        let t = line.trim_start();
        let decl = (t.contains("mi_decl_export") && !t.starts_with("#"))
            || ["int shardalloc_", "void shardalloc_", "size_t shardalloc_"]
                .iter()
                .any(|p| t.starts_with(p));
        if !decl {
            continue;
        }
        let Some(paren) = t.find('(') else { continue };
        let name = t[..paren]
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap();
        if name.starts_with("mi_") || name.starts_with("shardalloc_") {
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn malloc_fast_path_reads_tls_directly() {
    need_gcc!();
    need_tool!("objdump");
    // the malloc fast path must not call __tls_get_addr (general-dynamic TLS)
    let so = lib_dir().join("libshardalloc.so");
    let out = spawn_output(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(&so),
    );
    assert!(out.status.success(), "objdump failed: {}", show(&out));
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
    // alone in its process: it reads `allocated` to the KiB
    let out = run_ok(&exe, &["stats-merge"], &[], 60);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0 failed checks"),
        "{}",
        show(&out)
    );
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
    assert!(err.contains("option 'purge_delay': 0"), "{}", show(&out));
    // show_stats: statistics at exit
    assert!(
        err.contains("shardalloc statistics") && err.contains("allocated"),
        "{}",
        show(&out)
    );
    assert_served(&err, &[("test_api", 1)], "MIMALLOC_SHOW_STATS=1");
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
    // and preloaded into a program not linked with it, in checked mode (the program checks
    // that every block is shardalloc's, and prints its statistics at exit)
    let exe = build("test_stress.c", Link::None, &[]);
    let out = run_ok(
        &exe,
        &["4", "4"],
        &[
            ("LD_PRELOAD", &preload()),
            ("SHARDALLOC_SHOW_ERRORS", "1"),
            ("SHARDALLOC_SHOW_STATS", "1"),
        ],
        120,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_stress: ok"),
        "{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("shardalloc: error"), "{}", show(&out));
    assert_served(&err, &[("test_stress-nolink", 1)], "preloaded test_stress");
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
    need_tool!("g++");
    let exe = build("test_cxx.cpp", Link::Shared, &[]);
    run_ok(&exe, &[], &[], 60);
    let exe = build("test_cxx.cpp", Link::None, &[]);
    let out = run_ok(
        &exe,
        &[],
        &[("LD_PRELOAD", &preload()), ("SHARDALLOC_SHOW_STATS", "1")],
        60,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test_cxx: ok"),
        "{}",
        show(&out)
    );
    assert_served(
        &String::from_utf8_lossy(&out.stderr),
        &[("test_cxx-nolink", 1)],
        "preloaded test_cxx",
    );
}

#[test]
fn mimalloc_users_compile_unchanged() {
    need_gcc!();
    // programs written for mimalloc: its header, its macros, its types, -lshardalloc
    let exe = build("mimalloc_user.c", Link::Shared, &[]);
    let out = run_ok(&exe, &[], &[], 30);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 1 1\n");
    need_tool!("g++");
    // C++: mimalloc.h's STL allocators
    let exe = build("mimalloc_user.cpp", Link::Shared, &[]);
    let out = run_ok(&exe, &[], &[], 30);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "100000 1000 1000 1\n");
}

/// mimalloc's `mi_*` API with mimalloc's semantics and no libc allocation names: the same
/// program runs on Windows against shardalloc.dll (tests/windows.rs).
#[test]
fn mi_api_program() {
    need_gcc!();
    let exe = build("test_mi.c", Link::Shared, &["-lpthread"]);
    let out = run_ok(&exe, &[], &[("MIMALLOC_SHOW_STATS", "1")], 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checks passed"), "{}", show(&out));
    assert_served(
        &String::from_utf8_lossy(&out.stderr),
        &[("test_mi", 1)],
        "test_mi",
    );
}

/// mimalloc v3's additions (tests/c/test_v3.c), each with mimalloc's semantics: the `mi_u*`
/// functions, heap queries, theaps, options (v3 numbering, sizes, printing), `mi_stats_t`
/// and JSON, sub-processes, arenas over caller memory and OS reservations (allocation
/// stays inside, exhaustion gives NULL, destroy gives the memory back), huge OS pages.
#[test]
fn v3_api_cases() {
    need_gcc!();
    let exe = build("test_v3.c", Link::Shared, &["-lpthread"]);
    let out = run_ok(&exe, &[], &[], 120);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("13 cases, 0 failed checks"), "{}", show(&out));
    // an arena reserved at start and nothing from the OS: malloc lives in the arena
    let out = run_ok(
        &exe,
        &["arena-only"],
        &[
            ("MIMALLOC_RESERVE_OS_MEMORY", "32MiB"),
            ("MIMALLOC_DISALLOW_OS_ALLOC", "1"),
        ],
        60,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 cases, 0 failed checks"),
        "{}",
        show(&out)
    );
    // options from the environment: sizes in KiB, legacy names
    let out = run_ok(
        &exe,
        &["env-options"],
        &[
            ("MIMALLOC_RESERVE_OS_MEMORY", "4MiB"),
            ("MIMALLOC_ARENA_RESERVE", "3000"),
            ("MIMALLOC_RESET_DELAY", "77"),
        ],
        60,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 cases, 0 failed checks"),
        "{}",
        show(&out)
    );
    // large OS pages for every segment, by mimalloc's legacy name
    let out = run_ok(
        &exe,
        &["large-os-pages"],
        &[("MIMALLOC_LARGE_OS_PAGES", "1")],
        60,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 cases, 0 failed checks"),
        "{}",
        show(&out)
    );
    // without it, the same case fails (the advice is not there by accident)
    let out = spawn_output(
        Command::new("timeout")
            .arg("60")
            .arg(&exe)
            .arg("large-os-pages")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("MIMALLOC_LARGE_OS_PAGES")
            .env_remove("MIMALLOC_ALLOW_LARGE_OS_PAGES"),
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mapping_has_flag(p, \"hg\") == 1"),
        "{}",
        show(&out)
    );
}

/// mimalloc v3.4.3's other headers, unchanged: `mimalloc-override.h` in C, and
/// `mimalloc-new-delete.h` with the STL allocators in C++ (C++17 and C++11).
#[test]
fn mimalloc_v3_headers() {
    need_gcc!();
    let exe = build("test_override_h.c", Link::Shared, &[]);
    let out = run_ok(&exe, &[], &[], 30);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "override.h: ok\n",
        "{}",
        show(&out)
    );
    need_tool!("g++");
    let exe = build("test_v3_cxx.cpp", Link::Shared, &[]);
    let out = run_ok(&exe, &[], &[], 30);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "v3 c++: ok\n",
        "{}",
        show(&out)
    );
    // C++11: the same header without the C++17 parts
    let exe11 = harness::out_dir().join("bin").join("test_v3_cxx-cxx11");
    let status = Command::new("g++")
        .args(["-std=c++11", "-O1", "-Wall", "-I"])
        .arg(root().join("include"))
        .arg(root().join("tests/c/test_v3_cxx.cpp"))
        .arg("-o")
        .arg(&exe11)
        .arg(format!("-L{}", lib_dir().display()))
        .arg("-lshardalloc")
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .status()
        .expect("g++");
    assert!(status.success(), "g++ -std=c++11 failed");
    let out = run_ok(&exe11, &[], &[], 30);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "v3 c++: ok\n",
        "{}",
        show(&out)
    );
}

/// mimalloc v3.4.3's own stress test (`tests/c/mimalloc_test_stress_v3.c`), with rolling
/// heaps that all threads allocate from (`MI_USE_HEAPS`): heaps shared by threads, blocks
/// passed between threads, heaps deleted while other threads' blocks of them live.
#[test]
fn mimalloc_v3_stress_test_with_shared_heaps() {
    need_gcc!();
    let exe = build(
        "mimalloc_test_stress_v3.c",
        Link::Shared,
        &["-DMI_USE_HEAPS=4", "-DNDEBUG", "-Wno-unused"],
    );
    // 8 threads, scale 50, 20 iterations (mimalloc's defaults are 32, 50, 50)
    let out = run_ok(&exe, &["8", "50", "20"], &[], 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // the test prints the allocator's statistics (`mi_stats_print`): ours, with pages
    // handed out
    assert_served(
        &format!("{stdout}\n{stderr}"),
        &[("mimalloc_test_stress_v3", 1)],
        "test-stress",
    );
}

/// mimalloc v3.4.3's own stress test in its sub-process mode (`TEST_STRESS_SUBPROCS`):
/// each of 3 threads makes its own sub-process (a domain of its own), joins it, and runs
/// the stress test there with its own threads; blocks pass between the sub-processes
/// through the test's shared transfer table; each sub-process is destroyed at the end.
#[test]
fn mimalloc_v3_stress_test_with_subprocesses() {
    need_gcc!();
    let exe = build_named(
        "mimalloc_test_stress_v3.c",
        "mimalloc_test_stress_v3_subprocs",
        Link::Shared,
        &[
            "-DTEST_STRESS_SUBPROCS=1",
            "-DNSUBPROCS=3",
            "-DNDEBUG",
            "-Wno-unused",
        ],
    );
    // 4 threads per sub-process, scale 25, 10 iterations
    let out = run_ok(
        &exe,
        &["4", "25", "10"],
        &[("SHARDALLOC_SHOW_ERRORS", "1")],
        300,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("(for 3 subprocesses)"),
        "the sub-process mode did not run:\n{}",
        show(&out)
    );
    // each sub-process's stress run prints its own statistics (`mi_stats_print` in a
    // thread of a sub-process), with pages handed out from its own domain
    let all = format!("{stdout}\n{stderr}");
    assert_served(
        &all,
        &[("mimalloc_test_stress_v3_subprocs", 3)],
        "test-stress (sub-processes)",
    );
    let subprocs: std::collections::HashSet<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("sub-process "))
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(
        subprocs.len(),
        3,
        "expected the statistics of 3 distinct sub-processes:\n{}",
        show(&out)
    );
    assert!(!all.contains("error:"), "{}", show(&out));
}
