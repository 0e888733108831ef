#!/usr/bin/env bash
# Where shardalloc's instructions go in the kernel bench, function by function:
#   targets/x86_64-qemu/profile.sh WORD [ROWS]
# boots `run=bench icount only=WORD` (the workloads whose names contain WORD) with a QEMU
# TCG plugin (profile/tbcount.c, built here with gcc) that counts the instructions of
# every translation block executed between the bench's markers `bench_profile_on` and
# `bench_profile_off`, which bracket shardalloc's counted runs (the workload's own code and
# the `Counted` wrapper show up too, under their own names). Deterministic, as the bench.
# Environment: NO_BUILD=1 to skip the kernel build; OUT (default target/qemu-profile).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
word="${1:?usage: profile.sh WORD [ROWS]}"
out="${OUT:-$root/target/qemu-profile}"
kernel="$root/target/x86_64-unknown-none/release/shardalloc-kernel"
mkdir -p "$out"
gcc -O2 -shared -fPIC -o "$out/tbcount.so" "$root/targets/x86_64-qemu/profile/tbcount.c"
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --release -p shardalloc-kernel --target x86_64-unknown-none >&2)
fi
on=$(nm "$kernel" | awk '$3 == "bench_profile_on" {print $1}')
off=$(nm "$kernel" | awk '$3 == "bench_profile_off" {print $1}')
[[ -n "$on" && -n "$off" ]] || { echo "profile.sh: no bench_profile_on/off in $kernel" >&2; exit 1; }
profile="$out/$word.txt"
rm -f "$profile"
status=0
NO_BUILD=1 TIMEOUT=600 bash "$root/targets/x86_64-qemu/run.sh" -m 512M -smp 2 \
    -icount shift=0,sleep=off -plugin "$out/tbcount.so,on=$on,off=$off,out=$profile" \
    -append "run=bench icount only=$word" >"$out/$word.log" 2>&1 || status=$?
[[ $status == 33 ]] || { echo "profile.sh: the boot failed ($status), see $out/$word.log" >&2; exit 1; }
grep -E '^\| [a-zA-Z]' "$out/$word.log" | sed -n 1,2p
[[ -s "$profile" ]] || { echo "profile.sh: the plugin wrote no profile" >&2; exit 1; }
python3 "$root/targets/x86_64-qemu/profile/by_function.py" "$kernel" "$profile" "${2:-40}"
