#!/usr/bin/env bash
# Builds the firmware for a board and runs it under QEMU (what tests/firmware.rs does for
# each board, by hand):
#   targets/cortex-m/run.sh lm3s6965evb            # Cortex-M3, 64 KiB SRAM
#   targets/cortex-m/run.sh microbit               # Cortex-M0, 16 KiB SRAM
#   targets/cortex-m/run.sh microbit --no-default-features   # the same on LlffHeap
# Exit status: QEMU's (0 when the firmware printed ALL OK and exited with success).
set -euo pipefail
cd "$(dirname "$0")"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR
board=${1:-lm3s6965evb}
shift || true
case $board in
    lm3s6965evb) target=thumbv7m-none-eabi ;;
    microbit) target=thumbv6m-none-eabi ;;
    *) echo "usage: $0 lm3s6965evb|microbit [cargo build options]" >&2; exit 2 ;;
esac
cargo build --release --target $target --bin firmware --target-dir target/run "$@"
exec timeout "${TIMEOUT:-60}" qemu-system-arm -M "$board" -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel target/run/$target/release/firmware
