//! A poisoned free list (a use-after-free write over the links of freed blocks) in a Rust
//! program on `ShardAlloc` (`examples/poisoned_free_list.rs`):
//! - secure build: an abort (SIGABRT) with a report naming the address, not a SIGSEGV;
//! - default build: reported on stderr, the poisoned list dropped, the program runs on.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

fn run_example(features: &str) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "--example",
        "poisoned_free_list",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let out = cmd.output().expect("run cargo");
    eprintln!(
        "[features '{features}'] {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn secure_build_aborts_with_a_report() {
    let out = run_example("secure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POISONED"),
        "the example did not run to the poisoning"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort, got {:?}",
        out.status
    );
    assert!(
        err.contains("shardalloc: error: corrupted free list") && err.contains(" at 0x"),
        "no report with the address"
    );
    assert!(err.contains("shardalloc: aborting after an error"));
    assert!(!err.contains("SURVIVED"));
}

#[test]
fn default_build_reports_and_runs_on() {
    let out = run_example("");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POISONED"),
        "the example did not run to the poisoning"
    );
    assert!(
        out.status.success(),
        "expected to run on, got {:?}",
        out.status
    );
    assert!(
        err.contains("shardalloc: error: corrupted free list") && err.contains(" at 0x"),
        "no report with the address"
    );
    assert!(err.contains("SURVIVED"));
}
