#!/usr/bin/env bash
# Clients that leave in bursts: each round, C clients POST CreateBook through
# each build for two seconds and then all close at once, abandoning their
# calls in flight, while four steady clients GET beside them. Counts the
# upstream connections each build lost (the upstream's rapid-reset defence
# closing them: see docs/decisions/0014-clients-that-leave.md) and what the
# steady clients saw.
#
#   benches/departures.sh old/protogate target/release/protogate
#   BURSTS=10 C=256 ROUNDS=3 benches/departures.sh A B
#
# Needs the harness set up (benches/compare.sh does it once) and wrk.
# Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
BENCH_DIR="${BENCH_DIR:-$HOME/gwbench}"
ROUNDS="${ROUNDS:-3}"; BURSTS="${BURSTS:-10}"; C="${C:-256}"
BASE=http://127.0.0.1:8090
[ "$#" -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
[ -f "$BENCH_DIR/gen/protogate.toml" ] || { echo "run benches/compare.sh once first" >&2; exit 2; }
WORK=$(mktemp -d)
UP_PID=""; GW_PID=""
trap 'kill $UP_PID $GW_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
# compare.sh's configuration with the access log off.
sed 's/^access_log = .*/access_log = false/' "$BENCH_DIR/gen/protogate.toml" > "$BENCH_DIR/gen/departures.toml"

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    "$BENCH_DIR/upstream/target/release/bench-upstream" --grpc 127.0.0.1:50051 --http 127.0.0.1:50052 \
      >/dev/null 2>&1 & UP_PID=$!
    # Every redial is logged: warnings once per 30 s, the rest at debug level.
    (cd "$BENCH_DIR/gen" && RUST_LOG=warn,protogate::upstream::connection=debug \
      exec "$bin" serve --config departures.toml 2>"$WORK/gateway.log") & GW_PID=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "$BASE/v1/shelves/1/books/2" && break; sleep 0.1; done
    wrk -t1 -c4 -d$((BURSTS * 3 + 2))s "$BASE/v1/shelves/1/books/2" >"$WORK/steady.txt" 2>&1 & STEADY=$!
    for _ in $(seq "$BURSTS"); do
      (cd "$BENCH_DIR/gen" && wrk -t2 -c"$C" -d2s -s post.lua "$BASE/v1/shelves/1/books" >/dev/null 2>&1)
      sleep 1
    done
    wait "$STEADY"
    dropped=$(grep -c 'upstream connection dropped' "$WORK/gateway.log" || true)
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
    kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=""
    non_2xx=$(awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$WORK/steady.txt")
    socket_errors=$(awk '/Socket errors/ {sub(/^ *Socket errors: */, ""); print}' "$WORK/steady.txt")
    printf 'round %d  %-40s upstream connections dropped %3d   steady GETs: %s req/s, non-2xx %d%s\n' \
      "$round" "$bin" "$dropped" "$(awk '/Requests\/sec/ {print $2}' "$WORK/steady.txt")" "$non_2xx" \
      "${socket_errors:+, socket errors: $socket_errors}"
  done
done
