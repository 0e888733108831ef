#!/bin/sh
# Times a threaded C workload (tests/c/bench_threads.c) under glibc's malloc, jemalloc,
# C mimalloc and shardalloc, each through LD_PRELOAD, side by side in one run: the
# allocators take turns in every repetition, so load from elsewhere hits them alike.
# Prints every time, then the median per allocator and its ratio to shardalloc.
#
#   tests/c/bench_preload.sh [threads] [iterations per thread] [repetitions]
#
# Needs: gcc; jemalloc and mimalloc are used when installed
# (apt-get install -y libjemalloc2 libmimalloc2.0); shardalloc is built here.
set -eu
THREADS=${1:-4}
ITERS=${2:-2000000}
REPS=${3:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/target/capi/bench"
mkdir -p "$OUT"

cargo rustc --release --features override --lib --crate-type cdylib --target-dir "$ROOT/target/capi" \
  --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
SHARD="$ROOT/target/capi/release/libshardalloc.so"
gcc -O2 -g -fno-builtin -o "$OUT/bench_threads" "$ROOT/tests/c/bench_threads.c" -lpthread

# the preload must serve the benchmark: shardalloc's statistics at exit, under its name
SHARDALLOC_SHOW_STATS=1 LD_PRELOAD="$SHARD" "$OUT/bench_threads" 1 1000 2>&1 >/dev/null \
  | grep -q "^shardalloc statistics (process [0-9]*, bench_threads):" \
  || { echo "error: LD_PRELOAD=$SHARD does not serve bench_threads" >&2; exit 1; }

LIBDIR=/usr/lib/x86_64-linux-gnu
NAMES="glibc"
[ -e "$LIBDIR/libjemalloc.so.2" ] && NAMES="$NAMES jemalloc" || echo "note: jemalloc not installed"
[ -e "$LIBDIR/libmimalloc.so.2" ] && NAMES="$NAMES mimalloc" || echo "note: mimalloc not installed"
NAMES="$NAMES shardalloc"

lib_of() {
  case "$1" in
    glibc) echo "" ;;
    jemalloc) echo "$LIBDIR/libjemalloc.so.2" ;;
    mimalloc) echo "$LIBDIR/libmimalloc.so.2" ;;
    shardalloc) echo "$SHARD" ;;
  esac
}

echo "bench_threads: $THREADS threads x $ITERS iterations, $REPS repetitions ($(nproc) cores)"
: > "$OUT/times.txt"
r=1
while [ "$r" -le "$REPS" ]; do
  for n in $NAMES; do
    lib=$(lib_of "$n")
    t=$(env ${lib:+LD_PRELOAD=$lib} "$OUT/bench_threads" "$THREADS" "$ITERS")
    echo "$n $t" >> "$OUT/times.txt"
    printf '  rep %d %-10s %s s\n' "$r" "$n" "$t"
  done
  r=$((r + 1))
done

median() { grep "^$1 " "$OUT/times.txt" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base=$(median shardalloc)
echo "median wall time (ratio = time / shardalloc's time; > 1 means slower than shardalloc):"
for n in $NAMES; do
  m=$(median "$n")
  printf '  %-10s %7.3f s  %5.2fx\n' "$n" "$m" "$(echo "$m $base" | awk '{print $1/$2}')"
done
