#!/usr/bin/env bash
# Build every benchmark binary and run the suite (see README.md).
#   benches/run.sh [--quick] [--reps N] [--timeout SECS] [--alloc a,b] [--workload x,y] [--callgrind]
# Results: benches/results/results.md, runs.csv, time.svg, memory.svg (callgrind.md with --callgrind);
# then README.md's figures from them (scripts/readme-tables.sh). Exits non-zero when
# shardalloc failed a workload or was not built.
set -euo pipefail
cd "$(dirname "$0")"

# The peers always build; the shardalloc binary only if the core compiles right now.
cargo build --release --quiet
rm -f target/release/bench-shardalloc
if cargo build --release --quiet --features shardalloc --bin bench-shardalloc 2>target/shardalloc-build.log; then
    echo "shardalloc: built" >&2
else
    echo "shardalloc: does NOT build (see benches/target/shardalloc-build.log); running the peers only" >&2
fi
status=0
target/release/runner "$@" || status=$?
# README.md's figures come from benches/results: after a complete run (every workload and
# allocator, full size, default output directory) they are rewritten from the reports.
case " $* " in
    *" --out "*) ;;
    *) ../scripts/readme-tables.sh --auto || status=1 ;;
esac
exit $status
