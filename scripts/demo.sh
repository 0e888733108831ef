#!/usr/bin/env bash
# The demo: shardalloc as a Rust program's global allocator (a cross-thread workload on
# shardalloc and glibc side by side, then statistics), then shardalloc as the allocator
# of a small x86_64 kernel booted under QEMU: every scenario on 2 CPUs, with the kernel's
# statistics and the bench ratios against linked_list_allocator, talc and buddy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== 1. hosted: shardalloc as #[global_allocator]"
cargo run --release --example demo
echo
echo "== 2. kernel: booting the test kernel under QEMU (TCG, 2 CPUs, 128 MiB)"
set +e
bash targets/x86_64-qemu/run.sh -m 128M -smp 2 -append "run=all"
status=$?
set -e
if [ "$status" != 33 ]; then
    echo "demo: the kernel did not report success (QEMU status $status)" >&2
    exit 1
fi
echo "demo: the kernel reported success (QEMU exit status 33)"
