#!/usr/bin/env bash
# Installs what a fresh machine lacks for shardalloc's demo and tests:
# the rustup targets of rust-toolchain.toml (the kernel's, the microcontrollers', i686, Windows),
# QEMU for x86_64 and ARM, Wine and MinGW for the Windows tests; gcc (with its 32-bit runtime), g++ and binutils
# (nm, readelf, objdump) for the C library's tests; and the real programs that
# tests/preload.rs runs under LD_PRELOAD (python3, perl, git, coreutils' sort, md5sum,
# tail and timeout). A test whose tool is missing fails (see tests/c/harness.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v g++ >/dev/null || need_apt+=(g++)
for tool in nm readelf objdump; do
    command -v "$tool" >/dev/null || { need_apt+=(binutils); break; }
done
command -v python3 >/dev/null || need_apt+=(python3)
command -v perl >/dev/null || need_apt+=(perl)
command -v git >/dev/null || need_apt+=(git)
for tool in sort md5sum tail timeout; do
    command -v "$tool" >/dev/null || { need_apt+=(coreutils); break; }
done
# 32-bit hosted tests (tests/targets.rs): gcc's 32-bit runtime and libc
[ -e /usr/lib/gcc/x86_64-linux-gnu/"$(gcc -dumpversion 2>/dev/null | cut -d. -f1)"/32/libgcc.a ] \
    || need_apt+=(gcc-multilib)
# the Cortex-M firmware of tests/firmware.rs
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
# Windows (tests/windows.rs): Wine runs the cross-built tests and the DLL's C programs,
# MinGW links them
[ -x /usr/lib/wine/wine64 ] || command -v wine64 >/dev/null || need_apt+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null || need_apt+=(gcc-mingw-w64-x86-64)
command -v x86_64-w64-mingw32-g++ >/dev/null || need_apt+=(g++-mingw-w64-x86-64)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# rust-toolchain.toml names the targets; make sure rustup has them even with an older rustup
# (the kernel; the microcontroller and 32-bit targets of tests/targets.rs; Windows)
if command -v rustup >/dev/null; then
    installed=$(rustup target list --installed 2>/dev/null)
    for t in x86_64-unknown-none thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf \
             riscv32imac-unknown-none-elf i686-unknown-linux-gnu x86_64-pc-windows-gnu \
             x86_64-pc-windows-msvc; do
        grep -q "^$t\$" <<<"$installed" || rustup target add "$t"
    done
fi
