#!/usr/bin/env bash
# Installs what a fresh machine lacks for shardalloc's demo and tests:
# the x86_64-unknown-none target (rust-toolchain.toml) and QEMU, gcc for the C tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v g++ >/dev/null || need_apt+=(g++)
# 32-bit hosted tests (tests/targets.rs): gcc's 32-bit runtime and libc
[ -e /usr/lib/gcc/x86_64-linux-gnu/"$(gcc -dumpversion 2>/dev/null | cut -d. -f1)"/32/libgcc.a ] \
    || need_apt+=(gcc-multilib)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# rust-toolchain.toml names the targets; make sure rustup has them even with an older rustup
# (the kernel; the microcontroller and 32-bit targets of tests/targets.rs)
if command -v rustup >/dev/null; then
    installed=$(rustup target list --installed 2>/dev/null)
    for t in x86_64-unknown-none thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf \
             riscv32imac-unknown-none-elf i686-unknown-linux-gnu; do
        grep -q "^$t\$" <<<"$installed" || rustup target add "$t"
    done
fi
