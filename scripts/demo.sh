#!/usr/bin/env bash
# The demo: shardalloc as a Rust program's global allocator (a cross-thread workload on
# shardalloc and glibc side by side, then statistics), then shardalloc as the allocator
# of a small x86_64 kernel booted under QEMU: every scenario on 2 CPUs, with the kernel's
# statistics, then the kernel bench counted in instructions (-icount) against talc (with
# interrupts off and plain), linked_list_allocator and buddy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== 1. hosted: shardalloc as #[global_allocator]"
cargo run --release --example demo
echo
echo "== 2. kernel: booting the test kernel under QEMU (TCG, 2 CPUs, 128 MiB)"
set +e
bash targets/x86_64-qemu/run.sh -m 128M -smp 2 -append "run=smoke,stress,smp,irq,xirq,nest,oom"
status=$?
set -e
if [ "$status" != 33 ]; then
    echo "demo: the kernel did not report success (QEMU status $status)" >&2
    exit 1
fi
echo "demo: the kernel reported success (QEMU exit status 33)"
echo
echo "== 3. kernel bench: instructions counted by QEMU (-icount shift=0,sleep=off, 512 MiB, 2 CPUs; ~1.5 minutes)"
set +e
NO_BUILD=1 TIMEOUT=900 bash targets/x86_64-qemu/run.sh -m 512M -smp 2 -icount shift=0,sleep=off \
    -append "run=bench icount" | sed -n '/^bench: peers/p; /^bench: table begin/,/^bench: targets end/p' | grep -v '^bench: \(table\|whole\|targets\) '
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 33 ]; then
    echo "demo: the kernel bench did not report success (QEMU status $status)" >&2
    exit 1
fi
