#!/usr/bin/env bash
# Where the page faults of a workload come from, per allocator (issue 11: thread churn).
#
#   benches/faults.sh WORKLOAD [ALLOC ...]     (default: shardalloc mimalloc-v2 mimalloc-v3)
#   REPS=3 benches/faults.sh stress32 shardalloc
#   NOTHP=1 benches/faults.sh stress32 ...      (transparent huge pages off for the run)
#
# Records every minor page fault of one run of benches/target/release/bench-ALLOC with its
# address, together with the run's mmap/munmap/mremap/madvise calls (`perf record`: software
# events and syscall tracepoints, which work in a VM without hardware counters), and replays
# them (benches/faults.py): each fault is a first touch of a page, a touch after the page was
# purged (madvise DONTNEED/FREE), or a touch after it was unmapped and mapped again. Prints a
# Markdown table, a row per run. Recording every fault slows the run about twofold, so
# purges that run on a timer (a purge delay) fire more often than in a plain run: compare
# allocators with each other here, not with the fault counts of benches/run.sh.
#
# With NOTHP=1 the run starts with prctl(PR_SET_THP_DISABLE): C mimalloc's few faults come
# from transparent huge pages on its arenas (one fault maps 2 MiB), and this shows what it
# faults in 4 KiB pages, as shardalloc does outside huge blocks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { sed -n 2,6p "$0" >&2; exit 2; }
workload=$1
shift
allocs=("$@")
[ ${#allocs[@]} -gt 0 ] || allocs=(shardalloc mimalloc-v2 mimalloc-v3)
reps=${REPS:-1}
command -v perf >/dev/null || { echo "faults.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "faults.sh: python3 is missing" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

events=(-e minor-faults -c 1
    -e syscalls:sys_enter_madvise -e syscalls:sys_enter_munmap
    -e syscalls:sys_enter_mmap -e syscalls:sys_exit_mmap
    -e syscalls:sys_enter_mremap -e syscalls:sys_exit_mremap)
run_prefix=()
if [ "${NOTHP:-0}" = 1 ]; then
    cat >"$tmp/nothp.py" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(41, 1, 0, 0, 0) != 0:  # PR_SET_THP_DISABLE
    sys.exit("prctl(PR_SET_THP_DISABLE) failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
EOF
    run_prefix=(python3 "$tmp/nothp.py")
fi

echo "Page faults of \`$workload\` (\`benches/faults.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)$([ "${NOTHP:-0}" = 1 ] && echo ', transparent huge pages off')):"
echo
echo "| run | faults | first touch | after purge | after unmap | other | madvise DONTNEED calls / MiB | madvise FREE calls / MiB | mmap calls / MiB | munmap calls / MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for alloc in "${allocs[@]}"; do
    bin=$here/target/release/bench-$alloc
    [ -x "$bin" ] || { echo "faults.sh: $bin is missing (build it: see benches/README.md)" >&2; exit 1; }
    for rep in $(seq "$reps"); do
        if ! perf record -q -d "${events[@]}" -o "$tmp/perf.data" -- \
            "${run_prefix[@]}" "$bin" "$workload" >"$tmp/out" 2>"$tmp/err"; then
            echo "faults.sh: the run of $alloc failed:" >&2
            cat "$tmp/err" >&2
            exit 1
        fi
        perf script -i "$tmp/perf.data" -F comm,tid,time,event,addr,trace 2>/dev/null |
            python3 "$here/faults.py" "$alloc #$rep"
    done
done
