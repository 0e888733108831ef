#!/usr/bin/env bash
# Miri (nightly) on the core's tests over the region source: tests/region_core.rs
# (`PerCpuAlloc<SingleCpu>` on a `RegionSource`, one and two threads) and the size-class
# unit tests. Not part of `cargo test` or scripts/test.sh. Fails when Miri is missing or
# reports undefined behaviour.
#
#   bash scripts/miri.sh [extra MIRIFLAGS]
#
# Flags: -Zmiri-permissive-provenance, because the core computes segment and page
# addresses from integers (`ptr & !SEGMENT_MASK`, as mimalloc does) and the region source
# hands out integer-aligned addresses: Miri then checks those accesses against exposed
# provenance instead of warning at each cast.
#
# Not run under Miri, and why:
# - the hosted allocator (ShardAlloc, first-class Heap, the C library and every test that
#   uses them: tests/smoke.rs, model.rs, heaps.rs, threads.rs, ...): the mmap source, a
#   segment map of the whole address space, pthread keys and `%fs`-relative TLS in asm,
#   which Miri does not interpret;
# - size_class's `round_trip_and_waste_bound` (2 million sizes: hours under Miri) is
#   skipped by name;
# - the kernel and firmware scenarios (QEMU) and the embedded heap's host test, which
#   needs `--no-default-features --features embedded` (run below as a second step).
#
# tests/region_core.rs runs under Tree Borrows (-Zmiri-tree-borrows), the other two under
# Miri's default, Stacked Borrows. Why: under Stacked Borrows that test's memory grew
# without bound (1.7 GB after 10 s, past 10 GB after 80 s, past 20 GB when let run),
# while with the aliasing checks off (-Zmiri-disable-stacked-borrows) it stayed at 200 MB
# and under Tree Borrows at 0.3-3 GB: the blow-up is Stacked Borrows' borrow stacks on
# the region, whose pointers are all wildcard ones (integer addresses, exposed
# provenance), and whose tags therefore can never be popped or collected. Tree Borrows
# also checks more here, not less: it reported a write to page 0's metadata (inside the
# `Segment` struct) while `free` held a protected `&Segment` argument, which Stacked
# Borrows, lenient with wildcard pointers, had let through (fixed in src/free.rs).
# The embedded test takes about a minute and a half.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: Miri is not installed: rustup +nightly component add miri rust-src" >&2
    exit 1
fi
export MIRIFLAGS="-Zmiri-permissive-provenance ${1:-}"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
status=0
echo "== miri: tests/region_core.rs (MIRIFLAGS=$MIRIFLAGS -Zmiri-tree-borrows)"
MIRIFLAGS="$MIRIFLAGS -Zmiri-tree-borrows" \
    cargo +nightly miri test --target-dir target/miri --test region_core || status=1
echo "== miri: size_class unit tests"
cargo +nightly miri test --target-dir target/miri --lib -- --skip round_trip_and_waste_bound || status=1
echo "== miri: embedded::Heap (tests/embedded.rs, small geometry)"
cargo +nightly miri test --target-dir target/miri --no-default-features --features embedded \
    --test embedded || status=1
if [ $status -ne 0 ]; then
    echo "miri.sh: Miri reported errors (see above)" >&2
fi
exit $status
