//! Real programs under `LD_PRELOAD=libshardalloc.so` (python3, sort, md5sum, tail, git,
//! perl, gcc and its passes, g++): their output must match a run without it, also in
//! checked mode (`SHARDALLOC_SHOW_ERRORS=1`, which must report nothing). Every run has
//! `SHARDALLOC_SHOW_STATS=1`: preloaded, each named program must print its statistics
//! table at exit showing pages handed out by shardalloc (proof that the loader did not
//! ignore the preload); without the preload, nothing may print one.
//!
//! A program that is not installed fails its test, unless
//! `SHARDALLOC_TEST_ALLOW_MISSING_TOOLS=1` (see `tests/c/harness.rs`).

#[path = "c/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{assert_not_served, assert_served, out_dir, preload, show, spawn_output};

// ---------------------------------------------------------------------------------------
// real programs under LD_PRELOAD: same output as without

/// Runs `sh -c script` in `dir`; returns its output and all of its stderr: the shell's,
/// then that of the `*.stderr` files the script wrote in `dir` (a pipeline sends each
/// program's stderr to a file of its own, so that their statistics do not interleave).
fn run_script(script: &str, dir: &Path, env: &[(&str, String)]) -> (Output, String) {
    let stderr_files = || {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "stderr"))
            .collect();
        files.sort();
        files
    };
    for f in stderr_files() {
        std::fs::remove_file(f).unwrap();
    }
    let out = spawn_output(
        Command::new("timeout")
            .args(["120", "sh", "-c", script])
            .current_dir(dir)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("LD_PRELOAD")
            .env("SHARDALLOC_SHOW_STATS", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
    for f in stderr_files() {
        err.push_str(&format!("\n--- {}\n", f.display()));
        err.push_str(&std::fs::read_to_string(&f).unwrap());
    }
    (out, err)
}

/// Runs `sh -c script` with and without the library preloaded (and once more in checked
/// mode); stdout and exit status must match, checked mode must report nothing, and each
/// `(program, n)` of `served` must show, in both preloaded runs, at least `n` processes of
/// that name served by shardalloc.
fn same_output(name: &str, script: &str, dir: &Path, served: &[(&str, usize)]) {
    let (plain, plain_err) = run_script(script, dir, &[]);
    assert!(
        plain.status.success(),
        "{name} fails even without shardalloc: {}\n{plain_err}",
        show(&plain)
    );
    assert_not_served(&plain_err, &format!("{name} without LD_PRELOAD"));
    let (pre, pre_err) = run_script(script, dir, &[("LD_PRELOAD", preload())]);
    assert_eq!(
        pre.status.code(),
        plain.status.code(),
        "{name}: {}\n{pre_err}",
        show(&pre)
    );
    assert!(
        pre.stdout == plain.stdout,
        "{name}: output differs under LD_PRELOAD: {}\n{pre_err}",
        show(&pre)
    );
    assert_served(&pre_err, served, &format!("{name} under LD_PRELOAD"));
    let (checked, checked_err) = run_script(
        script,
        dir,
        &[
            ("LD_PRELOAD", preload()),
            ("SHARDALLOC_SHOW_ERRORS", "1".into()),
        ],
    );
    assert!(
        checked.stdout == plain.stdout,
        "{name}: output differs in checked mode: {}\n{checked_err}",
        show(&checked)
    );
    assert!(
        !checked_err.contains("shardalloc:"),
        "{name}: errors reported: {}\n{checked_err}",
        show(&checked)
    );
    assert_served(&checked_err, served, &format!("{name} in checked mode"));
    eprintln!(
        "{name}: same output under LD_PRELOAD ({} bytes), served: {served:?}",
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
    need_tool!("python3");
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
    same_output("python3", "python3 work.py", &dir, &[("python3", 1)]);
}

#[test]
fn preload_sort() {
    need_gcc!();
    for tool in ["sort", "md5sum", "tail"] {
        need_tool!(tool);
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
    // (GNU coreutils close stderr before exit: the library prints its statistics to a
    // copy it kept)
    same_output(
        "sort",
        "sort -S 1M --parallel=2 lines.txt 2>sort1.stderr | md5sum 2>md5sum.stderr; \
         sort -n -k2 lines.txt 2>sort2.stderr | tail -3 2>tail.stderr",
        &dir,
        &[("sort", 2), ("md5sum", 1), ("tail", 1)],
    );
}

/// git's environment: no user or system configuration, fixed identity and dates.
const GIT_ENV: &str = "HOME=$PWD/.. GIT_CONFIG_NOSYSTEM=1 \
    GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.com GIT_AUTHOR_DATE=1700000000+0000 \
    GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@example.com \
    GIT_COMMITTER_DATE=1700000000+0000";

#[test]
fn preload_git() {
    need_gcc!();
    need_tool!("git");
    // a repository of its own (the checkout need not be one): 40 commits over 8 files
    let dir = work_dir("git").join("repo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    let git = |args: &str| {
        let out = spawn_output(
            Command::new("sh")
                .arg("-c")
                .arg(format!("export {GIT_ENV}; git {args}"))
                .current_dir(&dir)
                .env_remove("LD_PRELOAD"),
        );
        assert!(out.status.success(), "git {args}: {}", show(&out));
    };
    git("init -q .");
    for i in 0..40u32 {
        for f in 0..8u32 {
            if (i + f) % 3 == 0 {
                let lines: String = (0..50 + i * f)
                    .map(|l| format!("file {f} line {l} of commit {}\n", i * (l % 7)))
                    .collect();
                std::fs::write(dir.join(format!("f{f}.txt")), lines).unwrap();
            }
        }
        git(&format!("add -A && git commit -q -m 'commit {i}'"));
    }
    same_output(
        "git",
        &format!(
            "export {GIT_ENV}; git log --stat -n 20 && git cat-file -p HEAD^{{tree}} && \
             git rev-list --count HEAD && git diff HEAD~30 HEAD"
        ),
        &dir,
        &[("git", 4)],
    );
}

#[test]
fn preload_perl() {
    need_gcc!();
    need_tool!("perl");
    let dir = work_dir("perl");
    same_output(
        "perl",
        r#"perl -e 'my %h; for my $i (1..200000) { $h{"k$i"} = "v" x ($i % 50) } my $t = 0; $t += length($h{$_}) for keys %h; my @s = sort { $a cmp $b } keys %h; my $j = join(",", map { $_ * 2 } 1..100000); $j =~ s/(\d+)/<$1>/g; print "$t $s[0] $s[-1] ", length($j), "\n"'"#,
        &dir,
        &[("perl", 1)],
    );
}

#[test]
fn preload_gcc() {
    need_gcc!();
    need_tool!("md5sum");
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
    // compile (cc1, as, collect2 and ld run preloaded too), show the assembly, then run
    // the program
    same_output(
        "gcc",
        "gcc -O2 -S -o - prog.c 2>gcc-s.stderr | md5sum 2>md5sum.stderr && \
         gcc -O2 prog.c -o prog && ./prog",
        &dir,
        &[
            ("gcc", 2),
            ("cc1", 2),
            ("as", 1),
            ("collect2", 1),
            ("ld", 1),
            ("md5sum", 1),
            ("prog", 1),
        ],
    );
    need_tool!("g++");
    {
        std::fs::write(
            dir.join("prog.cpp"),
            "#include <map>\n#include <string>\n#include <iostream>\nint main(){std::map<std::string,int> m; for(int i=0;i<1000;i++) m[std::to_string(i)]=i; std::cout<<m.size()<<\"\\n\";}\n",
        )
        .unwrap();
        same_output(
            "g++",
            "g++ -O1 -S -o - prog.cpp 2>gxx-s.stderr | md5sum 2>md5sum.stderr && \
             g++ prog.cpp -o progxx && ./progxx",
            &dir,
            &[
                ("g++", 2),
                ("cc1plus", 2),
                ("as", 1),
                ("ld", 1),
                ("md5sum", 1),
                ("progxx", 1),
            ],
        );
    }
}
