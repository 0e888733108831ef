#!/usr/bin/env python3
"""Classifies the page faults of one run by the history of the faulting page.

Reads `perf script -F comm,tid,time,event,addr,trace` of a run recorded by `faults.sh`
(every minor fault with its address, and the process's mmap/munmap/mremap/madvise calls)
and replays them in time order, keeping the state of every 4 KiB page:

- first touch: the page was never touched before in this run;
- after purge: touched, then given back with madvise(MADV_DONTNEED) (or MADV_FREE) and
  touched again: a purge that was undone;
- after unmap: touched, unmapped (munmap, or moved away by mremap), mapped again and
  touched again: a mapping that was undone;
- resident: the page was touched and not given back (a write after a read of the zero
  page, a copy-on-write, or a fault the replay misordered).

Events before the first one of the benchmark binary (`bench-*`: perf's child before it
exec'd, or the NOTHP wrapper) are left out. Also sums the memory calls: madvise by advice, munmap, mmap (anonymous). Prints one
Markdown table row per run (see `faults.sh`).
"""

import re
import sys
from collections import Counter

PAGE = 4096
MADV_DONTNEED, MADV_FREE = 4, 8

EVENT = re.compile(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")


def hexarg(rest, name):
    m = re.search(name + r": (0x[0-9a-f]+)", rest)
    return int(m.group(1), 16) if m else None


def pages(addr, length):
    return range(addr // PAGE, (addr + length + PAGE - 1) // PAGE)


def classify(lines):
    state = {}  # page -> "R" touched, "P" purged after a touch, "U" unmapped after a touch
    faults = Counter()
    calls = Counter()  # (kind) -> count
    volume = Counter()  # (kind) -> bytes
    pending_mmap = {}  # tid -> length
    pending_mremap = {}  # tid -> (old addr, old len, new len)
    started = False
    for line in lines:
        m = EVENT.match(line)
        if not m:
            continue
        comm, tid, _time, event, rest = m.groups()
        # (what ran before the benchmark binary was exec'd, perf's child or the NOTHP
        # wrapper, is not the run: counting starts at the first event of `bench-*`)
        started = started or comm.startswith("bench-")
        if not started:
            continue
        if event == "minor-faults":
            addr = int(rest.split()[0], 16)
            page = addr // PAGE
            kind = {None: "first", "P": "purge", "U": "unmap", "R": "resident"}[state.get(page)]
            faults[kind] += 1
            state[page] = "R"
        elif event == "syscalls:sys_enter_madvise":
            addr, length = hexarg(rest, "start"), hexarg(rest, "len_in")
            advice = hexarg(rest, "behavior")
            name = {MADV_DONTNEED: "DONTNEED", MADV_FREE: "FREE"}.get(advice, "other")
            calls["madvise " + name] += 1
            volume["madvise " + name] += length
            if advice in (MADV_DONTNEED, MADV_FREE):
                for p in pages(addr, length):
                    if state.get(p) == "R":
                        state[p] = "P"
        elif event == "syscalls:sys_enter_munmap":
            addr, length = hexarg(rest, "addr"), hexarg(rest, "len")
            calls["munmap"] += 1
            volume["munmap"] += length
            for p in pages(addr, length):
                if p in state:
                    state[p] = "U"
        elif event == "syscalls:sys_enter_mmap":
            flags = hexarg(rest, "flags") or 0
            if flags & 0x20:  # MAP_ANONYMOUS
                pending_mmap[tid] = hexarg(rest, "len")
        elif event == "syscalls:sys_exit_mmap":
            length = pending_mmap.pop(tid, None)
            if length is not None:
                calls["mmap"] += 1
                volume["mmap"] += length
        elif event == "syscalls:sys_enter_mremap":
            pending_mremap[tid] = (hexarg(rest, "addr"), hexarg(rest, "old_len"))
        elif event == "syscalls:sys_exit_mremap":
            old = pending_mremap.pop(tid, None)
            ret = rest.split()[0] if rest.split() else ""
            if old is None or not ret.startswith("0x"):
                continue
            calls["mremap"] += 1
            new = int(ret, 16)
            if new != old[0]:
                # the pages moved: their old addresses are unmapped, the new ones hold
                # what the old ones held
                moved = [state.pop(p, None) for p in pages(old[0], old[1])]
                for i, s in enumerate(moved):
                    if s is not None:
                        state[new // PAGE + i] = s
    return faults, calls, volume


def mib(n):
    return f"{n / (1 << 20):.0f}"


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else "run"
    faults, calls, volume = classify(sys.stdin)
    total = sum(faults.values())
    print(
        f"| {label} | {total} | {faults['first']} | {faults['purge']} | {faults['unmap']} "
        f"| {faults['resident']} | {calls['madvise DONTNEED']} / {mib(volume['madvise DONTNEED'])} "
        f"| {calls['madvise FREE']} / {mib(volume['madvise FREE'])} "
        f"| {calls['mmap']} / {mib(volume['mmap'])} | {calls['munmap']} / {mib(volume['munmap'])} |"
    )


if __name__ == "__main__":
    main()
