#!/usr/bin/env bash
# What a first touch of fresh memory costs on this machine (issue 11: thread churn):
# 4 KiB pages faulted one by one, the same made resident by one MADV_POPULATE_WRITE, and
# 2 MiB transparent huge pages; wall time per 4 KiB and the faults taken, on 1 and 2
# threads. C mimalloc advises its arenas for huge pages, shardalloc only huge blocks (its
# peak RSS is about half of mimalloc's): this is the price of each first touch either way.
#
#   benches/fault_cost.sh [MIB per thread (default 128)]
#
# Each way runs after a warm-up of 512 MiB of huge pages (as benches/runner's runs), and
# once more without it on one thread (the cold cost; see benches/c/fault_cost.c).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mib=${1:-128}
command -v gcc >/dev/null || { echo "fault_cost.sh: gcc is missing (scripts/setup.sh installs it)" >&2; exit 1; }
out=$here/target/fault_cost
mkdir -p "$here/target"
gcc -O2 -pthread -o "$out" "$here/c/fault_cost.c"
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown); $(uname -r)"
for threads in 1 2; do
    "$out" "$mib" "$threads" 512
done
sleep 5 # (the host takes free memory back after a few seconds)
"$out" "$mib" 1 0
