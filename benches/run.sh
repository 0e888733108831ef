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
# C mimalloc v2: the `mimalloc` crate builds v2's sources with its feature `v2`, in a build
# of its own (bench-mimalloc-v3 above has v3's)
cargo build --release --quiet --features mimalloc-v2 --bin bench-mimalloc-v2
rm -f target/release/bench-shardalloc target/release/bench-shardalloc-thp
if cargo build --release --quiet --features shardalloc --bin bench-shardalloc --bin bench-shardalloc-thp \
    2>target/shardalloc-build.log; then
    echo "shardalloc: built" >&2
else
    echo "shardalloc: does NOT build (see benches/target/shardalloc-build.log); running the peers only" >&2
fi
# --callgrind also counts the C entry points under LD_PRELOAD: the loop of c/fastpath.c
# over libshardalloc.so, C mimalloc v3 and v2 (built from the sources the `mimalloc` crate
# ships, with mimalloc's release flags) and glibc. Into target/c/.
case " $* " in
    *" --callgrind "*)
        mkdir -p target/c
        rm -f target/c/*
        gcc -O2 -fno-builtin -o target/c/fastpath-c c/fastpath.c
        if cargo rustc --release --quiet --features override --lib --crate-type cdylib --manifest-path ../Cargo.toml \
            2>>target/shardalloc-build.log; then
            cp ../target/release/libshardalloc.so target/c/libshardalloc.so
        fi
        msys=$(cargo metadata --format-version 1 --filter-platform x86_64-unknown-linux-gnu 2>/dev/null |
            python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "libmimalloc-sys"))')
        for v in v3 v2; do
            src=$(dirname "$msys")/c_src/mimalloc/$v
            gcc -O3 -DNDEBUG -DMI_MALLOC_OVERRIDE -ftls-model=initial-exec -fvisibility=hidden \
                -fno-builtin-malloc -fno-plt -shared -fPIC -I"$src/include" "$src/src/static.c" \
                -o target/c/libmimalloc-$v.so -lpthread
        done
        ;;
esac
status=0
target/release/runner "$@" || status=$?
# README.md's figures come from benches/results: after a complete run (every workload and
# allocator, full size, default output directory) they are rewritten from the reports.
case " $* " in
    *" --out "*) ;;
    *) ../scripts/readme-tables.sh --auto || status=1 ;;
esac
exit $status
