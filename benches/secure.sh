#!/usr/bin/env bash
# The cost of secure mode (cargo feature `secure`) and of the default build's checks.
#   benches/secure.sh [--reps N] [--cg-reps N] [--workload a,b] [--no-callgrind] [--no-time] [--quick]
#
# 1. Instructions (callgrind, deterministic) of every workload of benches/ at --quick size,
#    under bench-shardalloc built three ways in the same run: without the default build's
#    cheap checks (shardalloc's feature `bench-unchecked`, for this measurement only), as
#    is (the default build), and with `secure`: per-workload ratios default/unchecked (the
#    cost of the default checks) and secure/default, and their geometric means.
#    Valgrind runs one thread at a time; `--fair-sched=yes` hands the CPU round-robin, and
#    a multi-threaded workload (more than one thread in `--list`) still varies from run to
#    run (which thread frees which block, how often the slow path runs: rptest's default
#    build varied by 3 %, mstress's by 1 %, more than the checks cost), so each build of
#    those runs --cg-reps times (default 3) and its median is taken; single-threaded ones
#    give the same count every run and run once.
# 2. Wall time of the same workloads at full size (or --quick), default and secure runs
#    interleaved, N repetitions (default 3), medians: ratios and geomean. The machine is
#    shared: read this table second.
# 3. Instructions per malloc/free pair through the C entry points (c/fastpath.c under
#    LD_PRELOAD: 4 pairs an iteration, the loop's own cost subtracted): libshardalloc.so
#    default, checked (SHARDALLOC_SHOW_ERRORS=1) and secure.
# The report goes to stdout and to target/secure/report.md, headed by the commit.
set -euo pipefail
cd "$(dirname "$0")"

reps=3
cg_reps=3
workloads=""
do_cg=1
do_time=1
size=""
args="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift ;;
        --cg-reps) cg_reps=$2; shift ;;
        --workload) workloads=$2; shift ;;
        --no-callgrind) do_cg=0 ;;
        --no-time) do_time=0 ;;
        --quick) size="--quick" ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

out=target/secure
mkdir -p "$out"
# the three builds of the same bench binary; the default one last, so that
# target/release/bench-shardalloc is the default build again afterwards (benches/run.sh,
# the runner and callgrind by hand use it)
cargo build --release --quiet --features shardalloc,shardalloc/bench-unchecked --bin bench-shardalloc
cp target/release/bench-shardalloc "$out/bench-unchecked"
cargo build --release --quiet --features shardalloc,shardalloc/secure --bin bench-shardalloc
cp target/release/bench-shardalloc "$out/bench-secure"
cargo build --release --quiet --features shardalloc --bin bench-shardalloc
cp target/release/bench-shardalloc "$out/bench-default"
# the two C libraries
cargo rustc --release --quiet --features override --lib --crate-type cdylib \
    --manifest-path ../Cargo.toml --target-dir "$out/lib-default"
cargo rustc --release --quiet --features override,secure --lib --crate-type cdylib \
    --manifest-path ../Cargo.toml --target-dir "$out/lib-secure"
gcc -O2 -fno-builtin -o "$out/fastpath-c" c/fastpath.c

if [ -z "$workloads" ]; then
    workloads=$("$out/bench-default" --list | cut -f1 | paste -sd,)
fi
commit=$(git -C .. rev-parse --short HEAD)$(git -C .. diff --quiet HEAD -- src Cargo.toml || echo "+dirty")

# instructions of a command under callgrind (the "Collected" total, all threads)
ir() {
    valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# the median of N runs of `ir` (N odd); the runs go to stderr
ir_median() { # n cmd...
    local n=$1 i v all=()
    shift
    for i in $(seq "$n"); do
        v=$(ir "$@")
        all+=("$v")
    done
    [ "$n" -gt 1 ] && echo "  $(basename "$1") $2: ${all[*]}" >&2
    printf '%s\n' "${all[@]}" | sort -n | sed -n "$(((n + 1) / 2))p"
}
threads_of() { # workload -> its thread count (from --list)
    "$out/bench-default" --list | awk -F'\t' -v w="$1" '$1 == w { print $2 }'
}

report="$out/report.md"
{
    echo "# Cost of secure mode, at $commit ($(date -u +%Y-%m-%d))"
    echo
    echo "Command: \`benches/secure.sh${args:+ $args}\`. Ratios are secure / default (above 1: secure costs more), and default / unchecked (the default build against itself without its cheap checks)."
    echo
} >"$report"

if [ $do_cg = 1 ]; then
    {
        echo "## Instructions per workload (callgrind --fair-sched=yes, --quick size; multi-threaded workloads: median of $cg_reps runs)"
        echo
        echo "| workload | unchecked | default | secure | default/unchecked | secure/default |"
        echo "|---|---:|---:|---:|---:|---:|"
    } >>"$report"
    logsum=0
    logsum_u=0
    n=0
    for w in ${workloads//,/ }; do
        k=1
        [ "$(threads_of "$w")" -gt 1 ] && k=$cg_reps
        u=$(ir_median "$k" "$out/bench-unchecked" "$w" --quick)
        d=$(ir_median "$k" "$out/bench-default" "$w" --quick)
        s=$(ir_median "$k" "$out/bench-secure" "$w" --quick)
        r=$(python3 -c "print(f'{$s/$d:.4f}')")
        ru=$(python3 -c "print(f'{$d/$u:.4f}')")
        echo "| $w | $u | $d | $s | $ru | $r |" >>"$report"
        echo "callgrind $w: unchecked $u default $d secure $s default/unchecked $ru secure/default $r" >&2
        logsum=$(python3 -c "import math; print($logsum + math.log($r))")
        logsum_u=$(python3 -c "import math; print($logsum_u + math.log($ru))")
        n=$((n + 1))
    done
    gm=$(python3 -c "import math; print(f'{math.exp($logsum / $n):.4f}')")
    gmu=$(python3 -c "import math; print(f'{math.exp($logsum_u / $n):.4f}')")
    echo "| **geomean** | | | | **$gmu** | **$gm** |" >>"$report"
    echo >>"$report"
fi

if [ $do_time = 1 ]; then
    {
        echo "## Wall time per workload (median of $reps, default and secure interleaved${size:+, --quick})"
        echo
        echo "| workload | default ms | secure ms | secure/default |"
        echo "|---|---:|---:|---:|"
    } >>"$report"
    logsum=0
    n=0
    for w in ${workloads//,/ }; do
        dts=()
        sts=()
        for _ in $(seq "$reps"); do
            dts+=("$("$out/bench-default" "$w" $size | sed -n 's/.*time_ns=\([0-9]*\).*/\1/p')")
            sts+=("$("$out/bench-secure" "$w" $size | sed -n 's/.*time_ns=\([0-9]*\).*/\1/p')")
        done
        line=$(python3 - "${dts[*]}" "${sts[*]}" <<'EOF'
import statistics, sys
d = statistics.median(int(x) for x in sys.argv[1].split())
s = statistics.median(int(x) for x in sys.argv[2].split())
print(f"{d/1e6:.1f} {s/1e6:.1f} {s/d:.4f}")
EOF
)
        read -r dm sm r <<<"$line"
        echo "| $w | $dm | $sm | $r |" >>"$report"
        echo "time $w: default $dm ms secure $sm ms ratio $r" >&2
        logsum=$(python3 -c "import math; print($logsum + math.log($r))")
        n=$((n + 1))
    done
    gm=$(python3 -c "import math; print(f'{math.exp($logsum / $n):.4f}')")
    echo "| **geomean** | | | **$gm** |" >>"$report"
    echo >>"$report"
fi

# instructions per malloc/free pair through the C entry points
N1=200000
N2=400000
per_pair() { # env... -> instructions per pair (loop cost subtracted)
    local a b base1 base2
    a=$(env "$@" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/fastpath-c" $N1 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    b=$(env "$@" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/fastpath-c" $N2 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    base1=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/fastpath-c" $N1 baseline 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    base2=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/fastpath-c" $N2 baseline 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    python3 -c "print(f'{(($b - $a) - ($base2 - $base1)) / (4 * ($N2 - $N1)):.2f}')"
}
{
    echo "## Instructions per malloc/free pair through the C entry points (callgrind, c/fastpath.c)"
    echo
    echo "| build | instructions per pair | / default |"
    echo "|---|---:|---:|"
} >>"$report"
def=$(per_pair LD_PRELOAD="$PWD/$out/lib-default/release/libshardalloc.so")
chk=$(per_pair LD_PRELOAD="$PWD/$out/lib-default/release/libshardalloc.so" SHARDALLOC_SHOW_ERRORS=1)
sec=$(per_pair LD_PRELOAD="$PWD/$out/lib-secure/release/libshardalloc.so")
for row in "default $def" "checked $chk" "secure $sec"; do
    read -r name v <<<"$row"
    echo "| $name | $v | $(python3 -c "print(f'{$v/$def:.3f}')") |" >>"$report"
done
cat "$report"
