#!/usr/bin/env python3
"""Sums a tbcount.c profile by function: the instructions of every translation block go
to the function (symbol of the kernel ELF, from `nm`) that holds the block's first
instruction. Usage: by_function.py KERNEL_ELF PROFILE [ROWS]"""
import bisect
import re
import subprocess
import sys

elf, profile = sys.argv[1], sys.argv[2]
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 40
syms = []
nm = subprocess.run(["nm", "-C", "--defined-only", elf], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        syms.append((int(parts[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", parts[2])))
syms.sort()
starts = [a for a, _ in syms]
total = {}
for line in open(profile):
    vaddr, n, execs = line.split()
    vaddr, insns = int(vaddr, 16), int(n) * int(execs)
    i = bisect.bisect_right(starts, vaddr) - 1
    name = syms[i][1] if i >= 0 else "?"
    total[name] = total.get(name, 0) + insns
grand = sum(total.values()) or 1
print(f"{'instructions':>14} {'share':>6}  function ({grand} instructions in all)")
for name, count in sorted(total.items(), key=lambda x: -x[1])[:rows]:
    print(f"{count:>14} {100 * count / grand:5.1f}%  {name[:140]}")
