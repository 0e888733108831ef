#!/usr/bin/env bash
# Fuzzes shardalloc with cargo fuzz (libFuzzer, nightly): each target of fuzz/ for a fixed
# time, then a summary line per target (runs, coverage, crashes). Not part of `cargo test`
# or scripts/test.sh.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [FEATURES]
#
# SECONDS_PER_TARGET: default 60. FEATURES: the shardalloc build fuzzed, a feature of the
# fuzz crate (default `debug-mode`; `secure` fuzzes the secure build: `ops` with its checks
# aborting on any report, `misuse` without the overflow case, which only debug mode sees).
# Seeds come from fuzz/corpus/<target> (kept in the repository, small); what a run finds
# goes to target/fuzz-corpus/<target> (not committed). `FUZZ_MINIMIZE=1` then shrinks the
# union back into fuzz/corpus/<target> (`cargo fuzz cmin`). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script fail (artifacts of earlier runs, kept there,
# are not counted again).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
features=${2:-debug-mode}
targets=(ops misuse)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
# cargo-fuzz (the `cargo fuzz` subcommand) is installed here when missing, from crates.io
# with its lock file (a few minutes' build); without the network this fails with the reason.
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    if ! cargo install cargo-fuzz --locked || ! cargo +nightly fuzz --version; then
        echo "fuzz.sh: cargo-fuzz is missing and could not be installed" \
            "(cargo install cargo-fuzz --locked)" >&2
        exit 1
    fi
fi

cd fuzz
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
cargo +nightly fuzz build --features "$features"
status=0
summary=()
for t in "${targets[@]}"; do
    work=../target/fuzz-corpus/$t
    mkdir -p "$work" "corpus/$t"
    log=../target/fuzz-$t-${features//,/+}.log # (one per build: the runs of both builds kept)
    echo "== fuzz $t for ${secs}s (features: $features)"
    # (artifacts of earlier runs stay where they are and do not count for this one)
    stamp=$(mktemp)
    set +e
    # -detect_leaks=0: shardalloc's memory comes from mmap, which LeakSanitizer does not
    # see; what it saw was the harness's and glibc's: at 9351b1b, after 11,739 runs of `ops`
    # (secure), a 32-byte node of `__cxa_thread_atexit_impl` (a thread-local destructor of a
    # scoped thread, which `thread::scope` has joined before the thread ran its destructors
    # and freed it); the input passes alone (fuzz/regressions/secure/ops-leak-tls-dtor).
    cargo +nightly fuzz run --features "$features" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=1024 -print_final_stats=1 -timeout=60 -detect_leaks=0 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || echo 'cov: ?')
    crashes=$(find "artifacts/$t" -type f -newer "$stamp" 2>/dev/null | wc -l)
    rm -f "$stamp"
    line="$t: $runs runs in ${secs}s, $cov, exit $rc, crash artifacts: $crashes"
    summary+=("$line")
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        tail -n 40 "$log"
    fi
    if [ "${FUZZ_MINIMIZE:-0}" = 1 ]; then
        cp -n "$work"/* "corpus/$t"/ 2>/dev/null || true
        cargo +nightly fuzz cmin --features "$features" "$t" "corpus/$t" >/dev/null 2>&1
    fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
