#!/usr/bin/env python3
"""The benches/ workloads on Windows, under Wine: shardalloc against the Windows system heap
(Rust's `System`, i.e. HeapAlloc) and C mimalloc (the `mimalloc` crate, built with MinGW).

    benches/wine.sh [--quick] [--reps N] [--workload a,b]

wine.sh builds bench-shardalloc.exe, bench-system.exe and bench-mimalloc-v3.exe for
x86_64-pc-windows-gnu; this script runs every workload with each allocator in turn (order
rotated per repetition), takes the median time and peak resident set (`wait4` of the Wine
process, which holds the Windows program), checks that every allocator read back the same
check value, and writes benches/results/windows.md, whose README section it copies into
README.md between `<!-- windows:begin -->` and `<!-- windows:end -->` (complete runs only).

Wine's timings are not Windows': Wine maps Windows calls onto Linux ones (VirtualAlloc onto
mmap, the system heap onto Wine's own heap code). The ratios still show regressions.
"""
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXE_DIR = os.path.join(HERE, "target", "x86_64-pc-windows-gnu", "release")
RUNNER = os.path.join(ROOT, "scripts", "wine-runner.sh")
ALLOCS = ["shardalloc", "system", "mimalloc-v3"]
PEERS = ALLOCS[1:]
NAMES = {"system": "Windows heap", "mimalloc-v3": "C mimalloc v3"}
TIMEOUT = 300


def run_measured(alloc, args):
    """Runs bench-<alloc>.exe under Wine; returns (stdout, peak resident set in bytes from
    wait4 of the Wine process that holds the program)."""
    exe = os.path.join(EXE_DIR, f"bench-{alloc}.exe")
    out_path = os.path.join(HERE, "target", "wine-bench.out")
    with open(out_path, "wb") as out_f, open(out_path + ".err", "wb") as err_f:
        p = subprocess.Popen([RUNNER, exe] + args, stdout=out_f, stderr=err_f)
        deadline = time.monotonic() + TIMEOUT
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                raise SystemExit(f"bench-{alloc} {' '.join(args)}: timed out after {TIMEOUT} s")
            time.sleep(0.02)
    out = open(out_path).read()
    err = open(out_path + ".err").read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench-{alloc} {' '.join(args)} failed (exit {code}):\n{out}\n{err}")
    return out, ru.ru_maxrss * 1024


def parse(out):
    for line in out.splitlines():
        if line.startswith("workload="):
            return dict(kv.split("=", 1) for kv in line.split())
    raise SystemExit(f"no result line in:\n{out}")


def fmt_mib(b):
    return f"{b / (1 << 20):.1f} MiB"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def git(*args):
    return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True).stdout.strip()


def main():
    argv = sys.argv[1:]
    quick = "--quick" in argv
    reps = 3
    only = None
    i = 0
    while i < len(argv):
        if argv[i] == "--reps":
            reps = int(argv[i + 1])
            i += 1
        elif argv[i] == "--workload":
            only = argv[i + 1].split(",")
            i += 1
        elif argv[i] != "--quick":
            raise SystemExit(f"unknown argument {argv[i]}")
        i += 1

    listing, _ = run_measured("system", ["--list"])
    base_rss = {}
    for a in ALLOCS:
        base_rss[a] = run_measured(a, ["--list"])[1]
    workloads = []
    for line in listing.splitlines():
        name, threads, about = line.split("\t", 2)
        if only is None or name in only:
            workloads.append((name, int(threads), about))

    times = {}
    rss = {}
    checks = {}
    for (w, _, _) in workloads:
        for r in range(reps):
            order = ALLOCS[r % len(ALLOCS):] + ALLOCS[:r % len(ALLOCS)]
            for a in order:
                args = [w] + (["--quick"] if quick else [])
                out, peak = run_measured(a, args)
                res = parse(out)
                if res.get("corrupted") != "0":
                    raise SystemExit(f"{a} {w}: corrupted blocks: {out}")
                times.setdefault((w, a), []).append(int(res["time_ns"]) / 1e9)
                rss.setdefault((w, a), []).append(peak)
                checks.setdefault(w, {}).setdefault(a, set()).add(res["check"])
                print(f"{w:14} {a:11} {int(res['time_ns']) / 1e9:8.3f} s  {fmt_mib(peak):>10}",
                      file=sys.stderr)

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml")
    if dirty:
        commit += " (with uncommitted changes)"
    wine = subprocess.run(["/usr/lib/wine/wine64", "--version"], capture_output=True, text=True).stdout.strip() \
        if os.path.exists("/usr/lib/wine/wine64") else "wine"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    med_t = {k: statistics.median(v) for k, v in times.items()}
    med_m = {k: statistics.median(v) for k, v in rss.items()}
    lines = []
    lines.append("<!-- readme:begin -->")
    lines.append(
        f"*From [benches/results/windows.md](benches/results/windows.md): shardalloc commit "
        f"{commit}, {when}, {wine} on Linux, x86_64-pc-windows-gnu, {reps} repetitions (median)"
        f"{', quick sizes' if quick else ''}, 2 cores; written by `benches/wine.sh`.*")
    lines.append("")
    lines.append("Time and peak memory, ratio peer / shardalloc (above 1: shardalloc is faster or "
                 "uses less). Wine's timings are not Windows': Wine maps VirtualAlloc onto mmap and "
                 "has its own heap code, so treat these as a regression check, not as Windows figures.")
    lines.append("")
    lines.append("| workload | shardalloc time | " + " | ".join(f"{NAMES[p]} time" for p in PEERS)
                 + " | shardalloc peak RSS | " + " | ".join(f"{NAMES[p]} memory" for p in PEERS) + " |")
    lines.append("|---" * (3 + 2 * len(PEERS)) + "|")
    ratios_t = {p: [] for p in PEERS}
    ratios_m = {p: [] for p in PEERS}
    for (w, _, _) in workloads:
        st = med_t[(w, "shardalloc")]
        sm = med_m[(w, "shardalloc")]
        row = [w, f"{st:.3f} s"]
        for p in PEERS:
            r = med_t[(w, p)] / st
            ratios_t[p].append(r)
            row.append(f"{r:.2f}")
        row.append(fmt_mib(sm))
        for p in PEERS:
            r = med_m[(w, p)] / sm
            ratios_m[p].append(r)
            row.append(f"{r:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    row = [f"**geometric mean ({len(workloads)} workloads)**", ""]
    row += [f"**{geomean(ratios_t[p]):.2f}**" for p in PEERS]
    row += [""]
    row += [f"**{geomean(ratios_m[p]):.2f}**" for p in PEERS]
    lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Peak RSS includes Wine's own memory: a process that allocates nothing (`--list`) "
                 f"peaks at {fmt_mib(base_rss['shardalloc'])} with shardalloc, "
                 f"{fmt_mib(base_rss['system'])} with the Windows heap and "
                 f"{fmt_mib(base_rss['mimalloc-v3'])} with C mimalloc v3.")
    lines.append("<!-- readme:end -->")

    # check values: the same for every allocator except where thread timing decides which
    # operations run (mstress); reported, as the Linux runner's report does
    diverged = [w for w, per in checks.items() if len({c for s in per.values() for c in s}) > 1]
    report = ["# shardbench under Wine", "",
              "Every workload of `benches/` (see benches/README.md), built for "
              "x86_64-pc-windows-gnu and run under Wine by `benches/wine.sh`.", ""]
    report += lines
    report += ["", "## Raw medians", "", "| workload | allocator | time (s) | peak RSS |", "|---|---|---:|---:|"]
    for (w, _, _) in workloads:
        for a in ALLOCS:
            report.append(f"| {w} | {a} | {med_t[(w, a)]:.3f} | {fmt_mib(med_m[(w, a)])} |")
    report += ["", "Check values differed between allocators on: "
               + (", ".join(diverged) if diverged else "none") + " (expected only where thread "
               "timing decides which operations run, as in mstress)."]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "windows.md")
    with open(path, "w") as f:
        f.write("\n".join(report) + "\n")
    print(f"wrote {path}", file=sys.stderr)

    complete = only is None and not quick
    if complete:
        readme_path = os.path.join(ROOT, "README.md")
        readme = open(readme_path).read().split("\n")
        try:
            b = readme.index("<!-- windows:begin -->")
            e = readme.index("<!-- windows:end -->")
        except ValueError:
            raise SystemExit("README.md has no <!-- windows:begin --> / <!-- windows:end --> lines")
        section = lines[1:-1]
        readme = readme[:b + 1] + section + readme[e:]
        open(readme_path, "w").write("\n".join(readme))
        print("README.md: Windows table updated", file=sys.stderr)
    print("\n".join(lines[1:-1]))


if __name__ == "__main__":
    main()
