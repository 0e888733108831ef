//! Real programs under `LD_PRELOAD=libshardalloc.so` (python3, sort, git, perl, gcc,
//! g++): their output must match a run without it, also in checked mode
//! (`SHARDALLOC_SHOW_ERRORS=1`, which must report nothing). A program that is not
//! installed is skipped with a printed note.

#[path = "c/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{have, out_dir, preload, root, show};

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
