#!/usr/bin/env bash
# Builds the shardalloc kernel and boots it under QEMU (TCG). Arguments go to QEMU, e.g.
#   targets/x86_64-qemu/run.sh -m 64M -smp 2 -append "run=all seed=7"
# Defaults: -m 64M -smp 1 -append "run=smoke". Exit status: QEMU's (33 = the kernel
# reported success; 1 = it reported failure; 0 = triple fault; 124 = timeout).
# Environment: TIMEOUT (seconds, default 120), MACHINE (q35 or microvm, both work; default q35),
# ACCEL (default tcg,thread=single; tcg,thread=multi runs the vCPUs at the same time),
# PROFILE (release, default, or kernel-debug: debug assertions and overflow checks on),
# NO_BUILD=1 to skip the build, KERNEL to boot another ELF.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
profile="${PROFILE:-release}"
kernel="${KERNEL:-$root/target/x86_64-unknown-none/$profile/shardalloc-kernel}"
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --profile "$profile" -p shardalloc-kernel --target x86_64-unknown-none >&2)
fi
command -v qemu-system-x86_64 >/dev/null || {
    echo "qemu-system-x86_64 not found: apt-get install -y --no-install-recommends qemu-system-x86" >&2
    exit 127
}

args=("$@")
have() { local a; for a in "${args[@]}"; do [[ "$a" == "$1" ]] && return 0; done; return 1; }
extra=()
have -m || extra+=(-m 64M)
have -smp || extra+=(-smp 1)
have -append || extra+=(-append "run=smoke")

set +e
timeout --foreground -k 5 "${TIMEOUT:-120}" qemu-system-x86_64 \
    -machine "${MACHINE:-q35}" \
    -accel "${ACCEL:-tcg,thread=single}" \
    -cpu max \
    -kernel "$kernel" \
    -serial stdio \
    -display none \
    -monitor none \
    -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    "${extra[@]}" "${args[@]}"
status=$?
set -e
case $status in
    33) ;;
    124) echo "run.sh: QEMU timed out after ${TIMEOUT:-120}s" >&2 ;;
    0) echo "run.sh: QEMU exited 0 (triple fault?)" >&2 ;;
    *) echo "run.sh: QEMU exit status $status" >&2 ;;
esac
exit $status
