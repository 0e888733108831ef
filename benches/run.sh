#!/usr/bin/env bash
# Build every benchmark binary and run the suite (see README.md).
#   benches/run.sh [--quick] [--reps N] [--timeout SECS] [--alloc a,b] [--workload x,y] [--callgrind]
# Results: benches/results/results.md, runs.csv, time.svg, memory.svg (callgrind.md with --callgrind).
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
exec target/release/runner "$@"
