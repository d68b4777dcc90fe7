#!/usr/bin/env bash
# Instructions per request of the real server: `protogate serve` under
# callgrind, answering a fixed number of HTTP/1.1 requests from h2load over
# loopback. Unlike benches/count.sh (the pipeline in process), this counts
# hyper's parsing and encoding, tokio and the listener too, with the demo's
# routes.toml as it ships ([cors] and compression on, access log off).
#
#   benches/count_server.sh                    # the gateway-cache hit
#   URL_PATH=/v1/shelves/1/books/2 CACHE=off benches/count_server.sh   # GET through the upstream
#   N=20000 BIN=old/protogate benches/count_server.sh
#   ACCESS_LOG=true benches/count_server.sh   # with the access log on (to a file)
#
# Counting starts after WARMUP requests (callgrind_control -z), so start-up
# and first-use costs are left out; the figure is the total over N requests
# divided by N, the demo upstream's work excluded (it runs in another
# process). Needs valgrind and h2load (Debian: valgrind, nghttp2-client).
# Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-20000}"
WARMUP="${WARMUP:-2000}"
URL_PATH="${URL_PATH:-/v1/shelves/1/books/2}"
GW_PORT="${GW_PORT:-18380}"
UP_PORT="${UP_PORT:-50381}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin protogate >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/protogate"
fi
WORK="$(mktemp -d)"
GW_PID="" UP_PID=""
trap 'kill $GW_PID $UP_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

. benches/demo_routes.sh
demo_routes "$GW_PORT" "$UP_PORT" "${ACCESS_LOG:-false}" > "$WORK/routes.toml"
[ "${CACHE:-on}" = off ] && sed -i 's/, gateway = true//' "$WORK/routes.toml"

RUST_LOG=warn "$BIN" demo --upstream-only --config "$WORK/routes.toml" & UP_PID=$!
# The access log's lines are info events of target protogate::access.
GW_LOG=warn
[ "${ACCESS_LOG:-false}" = true ] && GW_LOG=warn,protogate::access=info
RUST_LOG="$GW_LOG" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" \
  "$BIN" serve --config "$WORK/routes.toml" 2>"$WORK/gateway.log" & GW_PID=$!
URL="http://127.0.0.1:$GW_PORT$URL_PATH"
for _ in $(seq 300); do curl -sf "$URL" >/dev/null && break; sleep 0.2; done
curl -sf "$URL" >/dev/null || { cat "$WORK/gateway.log" >&2; exit 1; }

h2load --h1 -n "$WARMUP" -c 8 -t 1 "$URL" >/dev/null
callgrind_control -z "$GW_PID" >/dev/null 2>&1
out=$(h2load --h1 -n "$N" -c 8 -t 1 "$URL")
grep -q "succeeded, 0 failed" <<<"$out" || { echo "$out" >&2; exit 1; }
callgrind_control -d "$GW_PID" >/dev/null 2>&1
# The dump is written by the gateway's process under callgrind; wait for it.
for _ in $(seq 100); do
  dump=$(ls "$WORK"/callgrind.*.1 2>/dev/null || true)
  [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
  sleep 0.1
done
awk -v n="$N" -v path="$URL_PATH" '/^totals:/ {printf "%s: %.0f instructions per request (%d requests)\n", path, $2 / n, n}' "$dump"
