#!/usr/bin/env bash
# Load-independent per-request figures: instructions (callgrind) and heap
# allocations (valgrind's memcheck totals) per request, for each scenario
# of examples/per_request.rs. Each figure is the difference between a run
# of N2 and one of N1 requests, divided by N2 - N1, so start-up cancels.
#
#   benches/count.sh                       # every scenario
#   SCENARIOS="get_hot get" benches/count.sh
#   N1=100 N2=600 benches/count.sh
#
# Needs valgrind (Debian: valgrind). The counts do not depend on what else
# the machine runs, so they compare builds on a busy box.
set -euo pipefail
cd "$(dirname "$0")/.."
N1="${N1:-100}"
N2="${N2:-1100}"
SCENARIOS="${SCENARIOS:-get_hot create_hot get create cache_hit}"
TARGET="${CARGO_TARGET_DIR:-target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --example per_request >&2
  BIN="$TARGET/release/examples/per_request"
fi

instructions() { # scenario count
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 \
    | awk '/Collected :/ {print $4}'
}
allocations() { # scenario count
  valgrind --tool=memcheck --leak-check=no "$BIN" "$1" "$2" 2>&1 \
    | awk '/total heap usage:/ {gsub(",", "", $5); print $5}'
}

printf '%-11s %14s %14s\n' scenario "instr/request" "allocs/request"
for scenario in $SCENARIOS; do
  i1=$(instructions "$scenario" "$N1"); i2=$(instructions "$scenario" "$N2")
  a1=$(allocations "$scenario" "$N1"); a2=$(allocations "$scenario" "$N2")
  awk -v s="$scenario" -v i1="$i1" -v i2="$i2" -v a1="$a1" -v a2="$a2" -v n=$((N2 - N1)) \
    'BEGIN {printf "%-11s %14.0f %14.1f\n", s, (i2 - i1) / n, (a2 - a1) / n}'
done
