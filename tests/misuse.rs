//! The misuse suite: each program of `tests/c/misuse/` commits one misuse (double,
//! unaligned, interior, foreign, uninitialised frees; use after free; reads and writes of
//! `malloc(0)`; overflows; sized frees with the wrong size; `malloc_usable_size` of bad
//! pointers; mimalloc's own `test-wrong.c`), and runs under `LD_PRELOAD` of
//!
//! - the default `libshardalloc.so` (its cheap checks),
//! - the same in checked mode (`SHARDALLOC_SHOW_ERRORS=1`),
//! - the secure build (`--features override,secure`), which aborts after a report,
//! - the secure build with `SHARDALLOC_ABORT_ON_ERROR=0` (report, ignore, run on).
//!
//! [`CASES`] states for each program and build whether a report is required. Whatever the
//! build, no program may die of SIGSEGV/SIGBUS inside shardalloc (the one listed
//! exception is the default build's free of a pointer into the metadata, see its row); a
//! fault of the program's *own* access to a freed, unmapped block is the intended outcome
//! and is told apart by the programs' fault handler (`misuse.h`: exit 77, "PROGRAM-FAULT").
//! Reports are seen through `mi_register_error` (the programs print "MISUSE-REPORTED"),
//! and, in the secure build, the abort message, which names the address.
//!
//! Missing tools (gcc, timeout) fail the test unless `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1`.

#[path = "c/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use harness::{cargo, need, out_dir, root, show, spawn_output};

/// What a build must do with a program's misuse.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    /// Reported (secure build: then aborted).
    Report,
    /// No report required (the build does not look for this misuse); it must not crash.
    Any,
    /// The build cannot tell (see the row's note), and the program may crash in it.
    MayCrash,
    /// The program's own access must fault (a guard page), and nothing else happen.
    Fault,
}
use Want::*;

struct Case {
    name: &'static str,
    default: Want,
    checked: Want,
    secure: Want,
    /// Why a build does not report it (for the rows with `Any` or `MayCrash`).
    note: &'static str,
}

const fn case(name: &'static str, default: Want, checked: Want, secure: Want) -> Case {
    Case {
        name,
        default,
        checked,
        secure,
        note: "",
    }
}

const CASES: &[Case] = &[
    case("double_free_small", Report, Report, Report),
    case("double_free_then_mallocs", Report, Report, Report),
    case("double_free_zero_word", Report, Report, Report),
    Case {
        note: "default: only a block at the head of local_free is checked on the fast path",
        ..case("double_free_deep", Any, Report, Report)
    },
    case("double_free_medium", Report, Report, Report),
    case("double_free_large", Report, Report, Report),
    case("double_free_huge", Report, Report, Report),
    Case {
        note: "default: a page with aligned blocks takes the generic path, which has no check",
        ..case("double_free_aligned", Any, Report, Report)
    },
    Case {
        note: "default and checked: another thread's lists are not theirs to read",
        ..case("double_free_cross_thread", Any, Any, Report)
    },
    Case {
        note: "default and checked: found only when the owner walks the cycle",
        ..case("double_free_cross_thread_full", Any, Any, Report)
    },
    Case {
        note: "default and checked: the owner collects remote frees by their count, without \
               a walk, so a cycle may reach its own lists; its forced walks of them are \
               bounded (reported when they meet the cycle)",
        ..case("double_free_cross_thread_collect", Any, Any, Report)
    },
    Case {
        note: "default and checked: another thread's lists are not theirs to read; secure: \
               the block waits on the owner heap's delayed list, which marks it (the report \
               must come at the second free: MISUSE-PASSED)",
        ..case("double_free_cross_thread_delayed", Any, Any, Report)
    },
    Case {
        note: "as double_free_cross_thread_delayed, with 8-byte requests (secure mode's \
               blocks are at least two words, for the delayed list's mark and link)",
        ..case("double_free_cross_thread_delayed_small", Any, Any, Report)
    },
    Case {
        note: "default and checked: the owner's lists do not hold a block of the delayed \
               list; secure: its mark says it is free",
        ..case("double_free_delayed_then_owner", Any, Any, Report)
    },
    Case {
        note: "default: a word-alignment test on every free is not among its cheap checks",
        ..case("unaligned_free", Any, Report, Report)
    },
    Case {
        note: "default: telling block starts costs a division (secure: a multiply)",
        ..case("interior_free", Any, Report, Report)
    },
    Case {
        note: "default: as interior_free",
        ..case("interior_free_large", Any, Report, Report)
    },
    case("foreign_free_stack", Report, Report, Report),
    case("foreign_free_global", Report, Report, Report),
    case("foreign_free_mmap", Report, Report, Report),
    Case {
        note: "default: a pointer into a live segment's header passes the segment map, and \
               comparing it with the page start would cost two more instructions on every \
               free; the push then writes into the metadata",
        ..case("free_into_metadata", MayCrash, Report, Report)
    },
    case("uninitialised_free_stack", Report, Report, Report),
    Case {
        note: "default: frees a free block (the fresh block's old link), not at the head of \
               local_free; secure: a fresh block holds no link (zero), so free(NULL)",
        ..case("uninitialised_free_heap", Any, Report, Any)
    },
    Case {
        note: "a read cannot be reported; secure: the freed block reads as zero (checked)",
        ..case("use_after_free_read_small", Any, Any, Any)
    },
    Case {
        note: "default, checked: freed blocks are not scrubbed",
        ..case("use_after_free_write_small", Any, Any, Report)
    },
    Case {
        note: "a read cannot be reported; secure: blocks above 4 KiB are zeroed only in \
               their first 32 bytes (zeroing them whole costs too much), nor protected",
        ..case("use_after_free_read_large", Any, Any, Any)
    },
    Case {
        note: "secure: a large block's page is freed when the block is, and a fresh page's \
               blocks are not checked (nor protected: not done yet)",
        ..case("use_after_free_write_large", Any, Any, Any)
    },
    Case {
        note: "the freed huge block is unmapped: the program's own write faults",
        ..case("use_after_free_huge", Any, Any, Any)
    },
    Case {
        note: "a read cannot be reported; secure: no heap address is visible (checked)",
        ..case("malloc0_read", Any, Any, Any)
    },
    case("malloc0_write", Report, Report, Report),
    Case {
        note: "default, checked: a link changed in its low byte stays in its segment",
        ..case("overflow1_small", Any, Any, Report)
    },
    case("overflow8_small", Report, Report, Report),
    Case {
        note: "default, checked: as overflow1_small",
        ..case("overflow1_large", Any, Any, Report)
    },
    case("overflow8_large", Report, Report, Report),
    Case {
        note: "default, checked: the size of a sized free is a hint",
        ..case("sized_delete_wrong", Any, Any, Report)
    },
    Case {
        note: "default, checked: as sized_delete_wrong",
        ..case("sized_free_wrong", Any, Any, Report)
    },
    Case {
        note: "default, checked: malloc_usable_size checks only the segment map",
        ..case("usable_size_interior", Any, Any, Report)
    },
    Case {
        note: "default, checked: as usable_size_interior",
        ..case("usable_size_freed", Any, Any, Report)
    },
    Case {
        note: "default, checked: 0 for a pointer that is not ours, not reported",
        ..case("usable_size_foreign", Any, Any, Report)
    },
    Case {
        note: "default: realloc's free of a free block is not at the head of local_free",
        ..case("realloc_freed", Any, Report, Report)
    },
    case("mimalloc_test_wrong", Report, Report, Report),
    Case {
        note: "secure: a guard page ends every large and huge segment (mmap source), so the \
               write faults; default, checked: no guard, the write lands past the segment \
               (unmapped memory or another mapping, which it may corrupt)",
        ..case("overflow_guard_huge", MayCrash, MayCrash, Fault)
    },
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Build {
    Default,
    Checked,
    Secure,
    /// The secure build with `SHARDALLOC_ABORT_ON_ERROR=0`.
    SecureContinue,
}

/// Builds the secure `libshardalloc.so` once (in `target/capi-secure`).
fn secure_lib() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target").join("capi-secure");
        let status = Command::new(cargo())
            .args([
                "rustc",
                "--release",
                "--features",
                "override,secure",
                "--lib",
            ])
            .args(["--crate-type", "cdylib", "--target-dir"])
            .arg(&target)
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the secure libshardalloc.so failed"
        );
        let lib = target.join("release/libshardalloc.so");
        assert!(lib.exists());
        lib
    })
}

fn lib(build: Build) -> PathBuf {
    match build {
        Build::Default | Build::Checked => harness::lib_dir().join("libshardalloc.so"),
        Build::Secure | Build::SecureContinue => secure_lib().to_path_buf(),
    }
}

/// Compiles `tests/c/misuse/<name>.c` (not linked against shardalloc: it runs under
/// LD_PRELOAD).
fn program(name: &str) -> PathBuf {
    // each program is compiled once per test process, under a lock (the tests run in
    // parallel and share the binaries)
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let exe = compile(name);
    built.insert(name.to_string(), exe.clone());
    exe
}

fn compile(name: &str) -> PathBuf {
    let dir = out_dir().join("bin").join("misuse");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let src = root().join("tests/c/misuse").join(format!("{name}.c"));
    let out = spawn_output(
        Command::new("gcc")
            .args(["-O1", "-g", "-fno-builtin", "-Wall", "-DUSE_STD_MALLOC"])
            // the misuses are on purpose
            .args([
                "-Wno-alloc-size-larger-than",
                "-Wno-free-nonheap-object",
                "-Wno-use-after-free",
                "-Wno-maybe-uninitialized",
                "-Wno-uninitialized",
                "-Wno-array-bounds",
                "-Wno-stringop-overflow",
                "-Wno-unused-function",
                "-Wno-unused-result",
            ])
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(["-lpthread", "-ldl"]),
    );
    assert!(
        out.status.success(),
        "compiling {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(exe: &Path, build: Build) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg(exe).env("LD_PRELOAD", lib(build));
    for var in [
        "SHARDALLOC_SHOW_ERRORS",
        "SHARDALLOC_ABORT_ON_ERROR",
        "MIMALLOC_SHOW_ERRORS",
    ] {
        cmd.env_remove(var);
    }
    match build {
        Build::Checked => {
            cmd.env("SHARDALLOC_SHOW_ERRORS", "1");
        }
        Build::SecureContinue => {
            cmd.env("SHARDALLOC_ABORT_ON_ERROR", "0");
        }
        _ => {}
    }
    spawn_output(&mut cmd)
}

/// A number printed by the program as `<key> <n>`.
fn printed(stderr: &str, key: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// Checks one run; returns a description of what is wrong, if anything.
fn judge(case: &Case, build: Build, out: &Output) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let want = match build {
        Build::Default => case.default,
        Build::Checked => case.checked,
        Build::Secure | Build::SecureContinue => case.secure,
    };
    if err.contains("MISUSE-NO-MIMALLOC-API") {
        return Err("mi_register_error not found: not running on shardalloc".into());
    }
    if err.contains("NO-NEIGHBOURS") {
        return Err("the program found no pair of neighbouring blocks".into());
    }
    let signal = out.status.signal();
    let code = out.status.code();
    let program_fault = code == Some(77) && err.contains("PROGRAM-FAULT");
    if code == Some(124) {
        return Err("hung (timeout)".into());
    }
    if matches!(build, Build::Secure | Build::SecureContinue) {
        // the guard page after the metadata (mmap source)
        if let Some(n) = printed(&err, "GUARD-METADATA") {
            if n != 1 {
                return Err("no guard page after the segment's metadata".into());
            }
        }
        if let Some(n) = printed(&err, "GUARD-TAIL") {
            if n != 1 {
                return Err("no guard page after the huge block".into());
            }
        }
    }
    if want == Fault {
        return if program_fault {
            Ok(())
        } else {
            Err(format!(
                "the program's access past the block did not fault (a guard page) ({:?})",
                out.status
            ))
        };
    }
    if matches!(signal, Some(libc::SIGSEGV) | Some(libc::SIGBUS)) && want != MayCrash {
        return Err(format!(
            "crashed inside shardalloc (signal {})",
            signal.unwrap()
        ));
    }
    let aborted = signal == Some(libc::SIGABRT);
    let abort_report =
        err.contains("shardalloc: aborting after an error (") && err.contains(" at 0x");
    let reported = err.contains("MISUSE-REPORTED") || abort_report;
    if aborted && !abort_report {
        return Err("aborted without a report".into());
    }
    if want == Report && !reported {
        return Err("misuse not reported".into());
    }
    // programs that print MISUSE-PASSED right after the misuse: the report must come at
    // the misuse itself, not later (e.g. when the allocator trips over what it did)
    if want == Report {
        if let Some(passed) = err.find("MISUSE-PASSED") {
            let first = [
                err.find("MISUSE-REPORTED"),
                err.find("shardalloc: aborting"),
            ]
            .into_iter()
            .flatten()
            .min();
            if first.is_none_or(|r| r > passed) {
                return Err("reported only after the misuse returned (MISUSE-PASSED)".into());
            }
        }
    }
    match build {
        Build::Secure if want == Report => {
            if !aborted {
                return Err("secure build: reported but did not abort".into());
            }
        }
        Build::Default | Build::Checked | Build::SecureContinue => {
            // report and run on
            if aborted {
                return Err("aborted, though abort on error is off".into());
            }
        }
        _ => {}
    }
    let finished = code == Some(0);
    if !aborted && !program_fault && !finished && want != MayCrash {
        return Err(format!("did not run to its end ({:?})", out.status));
    }
    if program_fault
        && case.name != "use_after_free_huge"
        && case.name != "use_after_free_read_large"
        && case.name != "use_after_free_write_large"
        && case.name != "overflow_guard_huge"
    {
        return Err("the program's own access faulted where it should not".into());
    }
    // what the programs measure
    if let Some(same) = printed(&err, "SAME-BLOCK") {
        if same > 1 {
            return Err(format!("the double-freed block came back {same} times"));
        }
    }
    if matches!(build, Build::Secure | Build::SecureContinue) {
        // (blocks above 4 KiB are zeroed only in their first 32 bytes, see Page::scrub)
        if let Some(n) = printed(&err, "OLD-BYTES").filter(|_| case.name.ends_with("small")) {
            if n != 0 {
                return Err(format!("{n} bytes of the freed block still readable"));
            }
        }
        if let Some(n) = printed(&err, "HEAP-ADDRESSES") {
            if n != 0 {
                return Err(format!("{n} heap addresses readable past malloc(0)"));
            }
        }
        if let Some(n) = printed(&err, "USABLE") {
            if n != 0 {
                return Err(format!("malloc_usable_size of a bad pointer gave {n}"));
            }
        }
    }
    Ok(())
}

fn suite(builds: &[Build]) {
    if !need("gcc") || !need("timeout") {
        return;
    }
    let mut failures = Vec::new();
    let mut reported = vec![0usize; builds.len()];
    for case in CASES {
        let exe = program(case.name);
        for (i, &build) in builds.iter().enumerate() {
            let out = run(&exe, build);
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("MISUSE-REPORTED") || err.contains("aborting after an error") {
                reported[i] += 1;
            }
            if let Err(why) = judge(case, build, &out) {
                failures.push(format!(
                    "{} [{build:?}]: {why} ({})\n{}",
                    case.name,
                    case.note,
                    show(&out)
                ));
            }
        }
    }
    for (i, build) in builds.iter().enumerate() {
        eprintln!(
            "misuse suite: {build:?}: {} of {} programs reported",
            reported[i],
            CASES.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every program of the directory has a row (and every row a program).
#[test]
fn every_program_has_a_row() {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/c/misuse"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "c").then(|| p.file_stem().unwrap().to_str().unwrap().to_string())
        })
        .collect();
    names.sort();
    let mut rows: Vec<String> = CASES.iter().map(|c| c.name.to_string()).collect();
    rows.sort();
    assert_eq!(names, rows);
    assert!(CASES.len() >= 30);
}

#[test]
fn default_and_checked_builds() {
    suite(&[Build::Default, Build::Checked]);
}

#[test]
fn secure_build() {
    suite(&[Build::Secure, Build::SecureContinue]);
}
