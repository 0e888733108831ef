//! README.md's benchmark figures are the ones the benchmark runner wrote: the block between
//! `<!-- bench:begin -->` and `<!-- bench:end -->` is the README section of
//! `benches/results/results.md`, the `callgrind` block that of `callgrind.md`, the
//! `windows` block that of `windows.md` (written by `benches/wine.sh`), the `kernel-bench`
//! block that of `targets/x86_64-qemu/results.md` (written by `targets/x86_64-qemu/bench.sh`);
//! each names the shardalloc commit it measured. `scripts/readme-tables.sh` and the other
//! bench scripts copy them; this test fails when README.md was edited by hand or the
//! results changed without them. README's kernel example is the code the test kernel runs
//! (`boot/src/adopt.rs`).

use std::path::Path;

fn between(text: &str, begin: &str, end: &str, what: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let b: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == begin).collect();
    let e: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == end).collect();
    assert!(
        b.len() == 1 && e.len() == 1 && b[0] < e[0],
        "{what}: needs one line {begin:?} before one line {end:?}"
    );
    lines[b[0] + 1..e[0]].join("\n")
}

fn read(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn readme_figures_are_the_runners() {
    let readme = read("README.md");
    for (name, report) in [
        ("bench", "benches/results/results.md"),
        ("callgrind", "benches/results/callgrind.md"),
        ("windows", "benches/results/windows.md"),
        ("kernel-bench", "targets/x86_64-qemu/results.md"),
    ] {
        let section = between(
            &read(report),
            "<!-- readme:begin -->",
            "<!-- readme:end -->",
            report,
        );
        let shown = between(
            &readme,
            &format!("<!-- {name}:begin -->"),
            &format!("<!-- {name}:end -->"),
            "README.md",
        );
        assert!(
            section.contains("shardalloc commit "),
            "{report}'s README section names no commit"
        );
        assert_eq!(
            shown, section,
            "README.md's {name} figures differ from {report}: run scripts/readme-tables.sh \
             (targets/x86_64-qemu/bench.sh for kernel-bench)"
        );
    }
}

/// README's kernel set-up is `boot/src/adopt.rs`'s, which the test kernel compiles and runs.
#[test]
fn readme_kernel_example_is_the_kernels() {
    let readme = read("README.md");
    let source = read("boot/src/adopt.rs");
    let code = between(
        &source,
        "// readme:begin",
        "// readme:end",
        "boot/src/adopt.rs",
    );
    let shown = format!("```rust\n{code}\n```");
    assert!(
        readme.contains(&shown),
        "README.md does not show boot/src/adopt.rs's example (between its readme markers) word for word"
    );
}
