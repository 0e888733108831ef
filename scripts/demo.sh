#!/usr/bin/env bash
# The demo: shardalloc as a Rust program's global allocator (statistics and a side-by-side
# timing against the system allocator), then booted as a kernel's allocator under QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --example demo
if [ -x targets/x86_64-qemu/run.sh ]; then
    bash targets/x86_64-qemu/run.sh -m 128M -smp 2 -append "run=all"
fi
