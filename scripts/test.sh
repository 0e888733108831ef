#!/usr/bin/env bash
# Every test of shardalloc: set-up, then `cargo test` (hosted tests, C library tests,
# and the kernel scenarios booted under QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --all-targets "$@"
