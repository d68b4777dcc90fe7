#!/usr/bin/env bash
# Two or more protogate builds against each other, in alternating rounds, on
# the shared harness's upstream and with compare.sh's configuration: GET
# GetBook (or URL=, SCRIPT= a wrk Lua script) through each build in turn,
# printing req/s, the gateway's CPU time per request, p99 and peak RSS.
# Alternating rounds put both builds under the same machine load, so the
# difference between them means more than either figure does.
#
#   benches/ab.sh old/protogate target/release/protogate
#   ROUNDS=5 DURATION=10 benches/ab.sh A B C
#   ACCESS_LOG=true benches/ab.sh A B     # with the access log's lines written
#
# Needs the harness set up (benches/compare.sh does it once) and wrk.
# Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
BENCH_DIR="${BENCH_DIR:-$HOME/gwbench}"
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-8}"; CONNS="${CONNS:-64}"
URL="${URL:-http://127.0.0.1:8090/v1/shelves/1/books/2}"
[ "$#" -ge 2 ] || { echo "usage: $0 BIN BIN [BIN...]" >&2; exit 2; }
# ACCESS_LOG=true lets the access log's lines through (compare.sh's config
# has it on), into a file as a deployment would keep them.
GW_LOG=warn
[ "${ACCESS_LOG:-false}" = true ] && GW_LOG=warn,protogate::access=info
LOG_FILE=$(mktemp)
[ -f "$BENCH_DIR/gen/protogate.toml" ] || { echo "run benches/compare.sh once first" >&2; exit 2; }

"$BENCH_DIR/upstream/target/release/bench-upstream" --grpc 127.0.0.1:50051 --http 127.0.0.1:50052 \
  >/dev/null 2>&1 & UP_PID=$!
GW_PID=""
trap 'kill $UP_PID $GW_PID 2>/dev/null || true; rm -f "$LOG_FILE"' EXIT
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    (cd "$BENCH_DIR/gen" && RUST_LOG="$GW_LOG" exec "$bin" serve --config protogate.toml 2>>"$LOG_FILE") & GW_PID=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "$URL" && break; sleep 0.1; done
    wrk -t2 -c"$CONNS" -d2s "$URL" >/dev/null   # warm-up, discarded
    before=$(cpu_ticks "$GW_PID")
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency ${SCRIPT:+-s "$SCRIPT"} "$URL")
    after=$(cpu_ticks "$GW_PID")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$GW_PID/status")
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
    awk -v r="$round" -v bin="$bin" -v a="$after" -v b="$before" -v t="$TCK" -v rss="$rss" \
      -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
      -v n="$(awk '/requests in/ {print $1}' <<<"$out")" \
      -v p99="$(awk '$1=="99%" {print $2}' <<<"$out")" \
      'BEGIN {printf "round %d  %-40s %9s req/s  %6.1f us/req  p99 %8s  RSS %5.1f MiB\n", r, bin, rps, (a-b)/t*1e6/n, p99, rss/1024}'
  done
done
