#!/usr/bin/env bash
# Shows that the strengthened checks fail on the defects they name: each demo builds a
# throwaway copy of the tree (src/ from git HEAD, tests/ and benches/ from the working
# tree) with one deliberate defect in src/, runs the test that names it, and expects it to
# FAIL; for a test that existed at HEAD it also runs HEAD's version, to show whether the
# old check caught the defect. The repository itself is never modified.
#
#   scripts/defect-demos.sh                  every demo (~5 min on 2 cores; `bench` ~1 more)
#   scripts/defect-demos.sh churn-no-reclaim oom-2x-waste ...
#   KEEP=1 scripts/defect-demos.sh ...       keep the copy (its path is printed)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/shardalloc-defects.XXXXXX)
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$tmp"' EXIT; fi
echo "copy: $tmp" >&2

# name | file | perl substitution | test target | what the defect is
demos=(
  "churn-no-reclaim|src/abandon.rs|s/(pub\(crate\) fn reclaim_one\(ctx: &mut SegmentsTld, abandoned: &Abandoned\) -> Reclaim \{)/\$1\n    if true { return Reclaim::None; }/|churn|no thread ever takes an abandoned segment over"
  "churn-no-abandon|src/abandon.rs|s/(os\.stats\.abandoned\.fetch_add\(1, Ordering::Relaxed\);)/if false { \$1 }/; s/(unsafe \{ abandoned\.push\(segment\) \};)/if false { \$1 }/|churn|an exiting thread drops its segments with live blocks (leaked, never abandoned)"
  "oom-2x-waste|src/page.rs|s/let reserved = page_size \/ block_size;/let reserved = if block_size <= 1024 { page_size \/ block_size \/ 2 } else { page_size \/ block_size };/|oom region_runs_out_then_recovers|a page of blocks up to 1 KiB holds half the blocks it could (twice the space per block)"
  "realloc-copies|src/alloc.rs|s/if new_size > LARGE_OBJ_SIZE_MAX && align <= MAX_ALIGN_SIZE && !zero \{/if false \&\& new_size > LARGE_OBJ_SIZE_MAX \&\& align <= MAX_ALIGN_SIZE \&\& !zero {/|realloc_huge|huge blocks grow by allocate + copy + free instead of mremap"
  "purge-delay-ignored|src/os.rs|s/self\.purge_delay\.store\(delay, Ordering::Relaxed\)/let _ = delay;/|purge_delay|set_purge_delay does nothing (the default 10 ms stays)"
  "purge-ignores-delay|src/segment_alloc.rs|s/if !force && os\.now\(\) < seg\.purge_expire \{/if false \&\& !force \&\& os.now() < seg.purge_expire {/|purge_delay|pending purges run at the next slow path, however long the delay"
)
bench_demo="bench|src/alloc.rs|s/ptr::copy_nonoverlapping\(p, q, keep\);/ptr::copy_nonoverlapping(p, q, keep - 1);/|-|realloc that moves a block leaves its last byte behind"

want=("$@")
selected() {
    [[ ${#want[@]} == 0 ]] && return 0
    local w
    for w in "${want[@]}"; do [[ $w == "$1" ]] && return 0; done
    return 1
}

mkdir -p "$tmp/tree"
git -C "$repo" archive HEAD | tar -x -C "$tmp/tree"
rm -rf "$tmp/tree/tests" "$tmp/tree/benches"
cp -r "$repo/tests" "$tmp/tree/tests"
tar -C "$repo" --exclude=benches/target -cf - benches | tar -C "$tmp/tree" -xf -
for t in churn oom; do
    git -C "$repo" show "HEAD:tests/$t.rs" >"$tmp/tree/tests/head_$t.rs"
done
cp -r "$tmp/tree/src" "$tmp/src.orig"
export CARGO_TARGET_DIR="$tmp/target"

failures=0
# run_test TARGET [FILTER]: prints the first panic message; returns 0 when the test
# passed, 1 when it failed, 2 when it did not build
run_test() {
    local out="$tmp/out.txt" status=0
    (cd "$tmp/tree" && cargo test --quiet --test "$@" >"$out" 2>&1) || status=$?
    if grep -q "could not compile" "$out"; then
        echo "      BUILD FAILED:"
        grep -m3 -A3 "^error" "$out" | sed 's/^/      /'
        return 2
    fi
    if [[ $status != 0 ]]; then
        grep -A1 -m1 "panicked at" "$out" | tail -1 | cut -c1-220 | sed 's/^/      /'
        grep -q "panicked at" "$out" || tail -5 "$out" | sed 's/^/      /'
        return 1
    fi
    return 0
}

apply() { # file, perl expression
    rm -rf "$tmp/tree/src" && cp -r "$tmp/src.orig" "$tmp/tree/src"
    perl -0pi -e "$2" "$tmp/tree/$1"
    if diff -q "$tmp/src.orig/${1#src/}" "$tmp/tree/$1" >/dev/null; then
        echo "  the defect did not apply to $1 (src/ changed?)" >&2
        return 1
    fi
}

for d in "${demos[@]}"; do
    IFS='|' read -r name file expr target what <<<"$d"
    selected "$name" || continue
    echo "== $name: $what ($file)"
    if ! apply "$file" "$expr"; then failures=$((failures + 1)); continue; fi
    echo "   cargo test --test $target"
    status=0
    # shellcheck disable=SC2086 # "test [filter]"
    run_test $target || status=$?
    case $status in
        0) echo "   PASSED: the test does not catch this defect"; failures=$((failures + 1)) ;;
        1) echo "   failed, as it must" ;;
        *) failures=$((failures + 1)) ;;
    esac
    if [[ -f $tmp/tree/tests/head_${target%% *}.rs ]]; then
        echo "   HEAD's tests/$target on the same defect:"
        status=0
        # shellcheck disable=SC2086
        run_test head_$target || status=$?
        case $status in
            0) echo "      passed (the old check missed it)" ;;
            1) echo "      failed too" ;;
            *) ;;
        esac
    fi
done

IFS='|' read -r name file expr target what <<<"$bench_demo"
if selected bench; then
    echo "== bench: $what ($file), through the benchmark runner"
    apply "$file" "$expr"
    # the peers' builds (jemalloc, snmalloc: minutes) come from benches/target when there
    if [[ -d $repo/benches/target/release ]]; then
        mkdir -p "$tmp/bench-target"
        cp -a "$repo/benches/target/release" "$tmp/bench-target/"
    fi
    (
        cd "$tmp/tree/benches"
        export CARGO_TARGET_DIR="$tmp/bench-target"
        cargo build --release --quiet
        cargo build --release --quiet --features shardalloc --bin bench-shardalloc
        for a in system shardalloc; do
            echo "   bench-$a sh8bench --quick:"
            "$CARGO_TARGET_DIR/release/bench-$a" sh8bench --quick 2>&1 | sed 's/^/      /' || echo "      (exit $?)"
        done
        echo "   runner --alloc shardalloc,system,jemalloc --workload sh8bench,larson --quick:"
        status=0
        "$CARGO_TARGET_DIR/release/runner" --alloc shardalloc,system,jemalloc --workload sh8bench,larson \
            --quick --out "$tmp/bench-results" >"$tmp/runner.out" 2>&1 || status=$?
        grep -E "FAILED|^\| sh8bench|geometric mean" "$tmp/runner.out" | head -8 | cut -c1-240 | sed 's/^/      /'
        echo "      runner exit status: $status"
        [[ $status != 0 ]]
    ) || { echo "   the runner did NOT fail"; failures=$((failures + 1)); }
fi

if [[ $failures != 0 ]]; then
    echo "$failures demo(s) went wrong"
    exit 1
fi
echo "every defect was caught"
