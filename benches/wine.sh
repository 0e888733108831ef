#!/usr/bin/env bash
# The benches/ workloads on Windows, under Wine: shardalloc against the Windows heap and
# C mimalloc (see wine.py). Writes benches/results/windows.md and, after a complete run,
# README.md's Windows table.
#   benches/wine.sh [--quick] [--reps N] [--workload a,b]
set -euo pipefail
cd "$(dirname "$0")"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
cargo build --release --quiet --target x86_64-pc-windows-gnu --features shardalloc \
    --bin bench-shardalloc --bin bench-system --bin bench-mimalloc-v3
exec python3 wine.py "$@"
