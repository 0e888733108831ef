#!/usr/bin/env bash
# Runs a Windows program under Wine: the cargo runner of x86_64-pc-windows-gnu
# (.cargo/config.toml), so `cargo test --target x86_64-pc-windows-gnu` runs the tests
# under Wine. Keeps its own Wine prefix in target/wine (made on first use, ~10 s) with the
# bcryptprimitives.dll that Wine 8.0 lacks (see scripts/wine/bcryptprimitives.c).
# Missing tools are an error with the command that installs them (scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wine=""
for w in /usr/lib/wine/wine64 "$(command -v wine64 || true)" "$(command -v wine || true)"; do
    if [ -n "$w" ] && [ -x "$w" ]; then wine="$w"; break; fi
done
if [ -z "$wine" ]; then
    echo "wine-runner: Wine is not installed (apt-get install wine64; scripts/setup.sh does it)" >&2
    exit 127
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    echo "wine-runner: x86_64-w64-mingw32-gcc is missing (apt-get install gcc-mingw-w64-x86-64; scripts/setup.sh does it)" >&2
    exit 127
fi
export WINEPREFIX="${SHARDALLOC_WINEPREFIX:-$root/target/wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
# no desktop integration, no Mono/Gecko installer prompts
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=;winemenubuilder.exe=d}"
mkdir -p "$(dirname "$WINEPREFIX")"
shim="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$shim" ]; then
    # one process makes the prefix; concurrent runners wait for it
    exec 9>"$WINEPREFIX.lock"
    flock 9
    if [ ! -f "$shim" ]; then
        "$wine" wineboot --init >/dev/null 2>&1 || true
        "${wine%64}server" -w 2>/dev/null || wineserver -w 2>/dev/null || true
        x86_64-w64-mingw32-gcc -O2 -shared -o "$shim.tmp" "$root/scripts/wine/bcryptprimitives.c" -ladvapi32
        mv "$shim.tmp" "$shim"
    fi
    flock -u 9
fi
# One wineserver for a whole run of tests: by default it exits 3 s after its last client,
# and a program started just then can find it going away ("wine client error:0: recvmsg:
# Connection reset by peer", once in a clean-clone CI run, between two test programs of
# tests/windows.rs). Started here persistent for 30 s after its last client; when one runs
# already this returns at once.
"${wine%64}server" -p30 >/dev/null 2>&1 || wineserver -p30 >/dev/null 2>&1 || true
exec "$wine" "$@"
