#!/usr/bin/env bash
# Writes README.md's benchmark figures from the reports in benches/results:
#   <!-- bench:begin --> ... <!-- bench:end -->          <- results.md's README section
#   <!-- callgrind:begin --> ... <!-- callgrind:end -->  <- callgrind.md's README section
# (the sections between <!-- readme:begin --> and <!-- readme:end --> that the runner writes
# after a complete run: every workload, every allocator, shardalloc completing all; each
# names the shardalloc commit it measured).
#
#   scripts/readme-tables.sh           update README.md (fails if a report has no section)
#   scripts/readme-tables.sh --check   exit 1 if README.md differs from the reports
#   scripts/readme-tables.sh --auto    as the default, but a report without a section is
#                                      skipped with a note (benches/run.sh calls this)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-update}
readme=README.md
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.section"' EXIT
cp "$readme" "$tmp"

# splice NAME REPORT: replace the lines between <!-- NAME:begin --> and <!-- NAME:end -->
# of $tmp with REPORT's README section
splice() {
    local name=$1 report=$2
    if ! grep -q '^<!-- readme:begin -->$' "$report" 2>/dev/null; then
        if [[ $mode == --auto ]]; then
            echo "readme-tables: $report has no README section (not a complete run): README's $name figures left as they are" >&2
            return 0
        fi
        local cmd="benches/run.sh"
        [[ $name == callgrind ]] && cmd="benches/run.sh --callgrind"
        echo "readme-tables: $report has no README section: run $cmd (all allocators, full size)" >&2
        exit 1
    fi
    awk '/^<!-- readme:end -->$/{f=0} f{print} /^<!-- readme:begin -->$/{f=1}' "$report" >"$tmp.section"
    if [[ $(grep -c "^<!-- $name:begin -->\$" "$tmp") != 1 || $(grep -c "^<!-- $name:end -->\$" "$tmp") != 1 ]]; then
        echo "readme-tables: $readme needs one line <!-- $name:begin --> and one <!-- $name:end -->" >&2
        exit 1
    fi
    awk -v b="<!-- $name:begin -->" -v e="<!-- $name:end -->" -v f="$tmp.section" '
        $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' "$tmp" >"$tmp.new"
    mv "$tmp.new" "$tmp"
}

splice bench benches/results/results.md
splice callgrind benches/results/callgrind.md

if [[ $mode == --check ]]; then
    if ! diff -u "$readme" "$tmp"; then
        echo "readme-tables: README.md is not what benches/results says: run scripts/readme-tables.sh" >&2
        exit 1
    fi
    echo "readme-tables: README.md's figures match benches/results"
elif ! cmp -s "$readme" "$tmp"; then
    cp "$tmp" "$readme"
    echo "readme-tables: README.md updated from benches/results" >&2
else
    echo "readme-tables: README.md already matches benches/results" >&2
fi
