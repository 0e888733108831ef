#!/usr/bin/env bash
# Installs what a fresh machine lacks for shardalloc's demo and tests:
# the x86_64-unknown-none target (rust-toolchain.toml) and QEMU; gcc, g++ and binutils
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
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# rust-toolchain.toml names the target; make sure rustup has it even with an older rustup
if command -v rustup >/dev/null; then
    rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-none$' \
        || rustup target add x86_64-unknown-none
fi
