#!/usr/bin/env bash
# The kernel allocator benchmark with deterministic instruction counts: boots the kernel
# (boot/) twice under QEMU with `-icount shift=0,sleep=off` (the TSC then counts guest
# instructions), 512 MiB and 2 CPUs on single-threaded TCG, `run=bench icount`; the two
# tables must be identical (else exit 1). Writes results.md beside this script and copies
# its README section into README.md (between the kernel-bench markers), which
# tests/readme_tables.rs checks.
#
#   targets/x86_64-qemu/bench.sh        # ~4 minutes (two boots of ~1.5 minutes)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
cargo build --release -p shardalloc-kernel --target x86_64-unknown-none >&2
out="$root/target/kernel-bench"
mkdir -p "$out"
for i in 1 2; do
    echo "== boot $i of 2: -m 512M -smp 2 -icount shift=0,sleep=off -append \"run=bench icount\"" >&2
    set +e
    NO_BUILD=1 TIMEOUT=900 bash "$here/run.sh" -m 512M -smp 2 -icount shift=0,sleep=off \
        -append "run=bench icount" 2>&1 | tr -d '\r' >"$out/boot-$i.txt"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" != 33 ] || ! grep -q '^PASS' "$out/boot-$i.txt"; then
        echo "bench boot $i failed (QEMU status $status):" >&2
        cat "$out/boot-$i.txt" >&2
        exit 1
    fi
    sed -n '/^bench: table begin/,/^bench: targets end/p' "$out/boot-$i.txt" >"$out/table-$i.txt"
done
if cmp -s "$out/table-1.txt" "$out/table-2.txt"; then
    echo "== the two boots printed identical tables" >&2
else
    echo "the two boots printed different tables:" >&2
    diff "$out/table-1.txt" "$out/table-2.txt" >&2 || true
    exit 1
fi
commit=$(git rev-parse --short HEAD)
dirty=""
git diff --quiet HEAD -- src boot Cargo.toml Cargo.lock || dirty=" + uncommitted changes"
header=$(grep '^bench: peers get' "$out/boot-1.txt" | sed 's/^bench: //')
empty=$(grep '^bench: an empty span' "$out/boot-1.txt" | sed 's/^bench: an empty span (two TSC reads) counts \([0-9]*\).*/\1/')
left_out=$(grep '^bench: left out: ' "$out/boot-1.txt" | sed 's/^bench: left out: //; s/,$//' | paste -sd ';' | sed 's/;/; /g' || true)
{
    echo "# Kernel allocator benchmark (instructions under QEMU -icount)"
    echo
    echo "Written by \`targets/x86_64-qemu/bench.sh\` on $(date -u +%Y-%m-%d) (shardalloc at $commit$dirty)."
    echo
    echo "<!-- readme:begin -->"
    echo "*From [targets/x86_64-qemu/results.md](targets/x86_64-qemu/results.md): shardalloc commit $commit$dirty, written by \`targets/x86_64-qemu/bench.sh\`; two boots printed this table to the last digit.*"
    echo
    echo "QEMU 7.2 \`-machine q35 -accel tcg,thread=single -icount shift=0,sleep=off -m 512M -smp 2\`: $header. Every allocator in the same boot, one after another, each peer over its own region committed before the bench. Instructions per allocator call for shardalloc, and peer ÷ shardalloc (above 1: shardalloc needs fewer). The first table counts the instructions inside the allocator calls: every call, for every allocator, goes through the same wrapper that reads the TSC just before and just after it, less the count of two TSC reads with nothing between ($empty); the workload's own instructions (random numbers, writing and checking the blocks) are not counted. On two CPUs a call during which the other vCPU started a call (single-threaded TCG: the vCPUs take turns, and the TSC is the machine's) is left out, and the count per call is over the calls counted${left_out:+ ($left_out)}."
    echo
    sed -n '/^bench: table begin/,/^bench: table end/p' "$out/boot-1.txt" | grep '^|'
    echo
    echo "The same runs counted from start to end of each workload (the workload's own instructions included):"
    echo
    sed -n '/^bench: whole begin/,/^bench: whole end/p' "$out/boot-1.txt" | grep '^|'
    echo
    echo "The targets of issue 14:"
    echo
    sed -n '/^bench: targets begin/,/^bench: targets end/p' "$out/boot-1.txt" | grep '^- '
    echo "<!-- readme:end -->"
} >"$here/results.md"
echo "== wrote $here/results.md" >&2
python3 - "$here/results.md" "$root/README.md" <<'PY'
import sys
res, readme_path = open(sys.argv[1]).read(), sys.argv[2]
a = res.index("<!-- readme:begin -->") + len("<!-- readme:begin -->")
section = res[a:res.index("<!-- readme:end -->")]
readme = open(readme_path).read()
begin, end = "<!-- kernel-bench:begin -->", "<!-- kernel-bench:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md has no " + begin + " / " + end + " markers")
i = readme.index(begin) + len(begin)
j = readme.index(end)
open(readme_path, "w").write(readme[:i] + section + readme[j:])
print("== README.md: kernel bench section rewritten", file=sys.stderr)
PY
cat "$here/results.md"
