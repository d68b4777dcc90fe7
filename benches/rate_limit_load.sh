#!/usr/bin/env bash
# Load test of rate limits, in one run: the demo's GET GetBook through three
# gateways on the same upstream — no limit, a limit counted in the gateway
# (local GCRA), and the same limit counted in Redis (one Lua script per
# request) — each measured alone with wrk. The limit is far above what wrk
# offers, so nothing is refused and every request pays the full check.
# Prints throughput, p50, p99 and the gateway's CPU time per request (user+sys
# of the gateway process over the measured window; Redis's own CPU apart).
#
#   benches/rate_limit_load.sh                  # DURATION=10 CONNS=64 by default
#
# Needs wrk and redis-server (Debian: wrk, redis-server); installs them if
# missing. Redis listens on a unix socket in a temp dir; everything else binds
# 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
GW_PORT="${GW_PORT:-18180}"
UP_PORT="${UP_PORT:-50151}"

if ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk redis-server >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin protogate >&2
  BIN=target/release/protogate
fi
WORK="$(mktemp -d)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

redis-server --port 0 --unixsocket "$WORK/redis.sock" --save "" --appendonly no >"$WORK/redis.log" & PIDS+=($!)
for _ in $(seq 50); do grep -qi "ready to accept connections" "$WORK/redis.log" && break; sleep 0.1; done

LIMIT='rate_limits = [{ name = "bench", key = "ip", rate = 1000000, per = "1s" }]'
. benches/demo_routes.sh
config() { # port, extra top-level lines, GetBook lines
  demo_routes "$1" "$UP_PORT" |
    sed -e "s|^\[server\]|$2\n[server]|" \
        -e 's/, gateway = true//' \
        -e "s|^\[routes.methods.GetBook\]|&\n$3|"
}
config "$GW_PORT" "" "" > "$WORK/none.toml"
config "$((GW_PORT + 1))" "" "$LIMIT" > "$WORK/local.toml"
config "$((GW_PORT + 2))" "[rate_limits]\nredis = \"redis+unix://$WORK/redis.sock\"\n" "$LIMIT" > "$WORK/redis.toml"

RUST_LOG=warn "$BIN" demo --upstream-only --config "$WORK/none.toml" & PIDS+=($!)
declare -A GW
for name in none local redis; do
  RUST_LOG=warn "$BIN" serve --config "$WORK/$name.toml" & PIDS+=($!)
  GW[$name]=$!
done
URL() { echo "http://127.0.0.1:$((GW_PORT + $1))/v1/shelves/1/books/2"; }
for i in 0 1 2; do
  for _ in $(seq 50); do curl -sf "$(URL $i)" >/dev/null && break; sleep 0.1; done
done
curl -sf -D - -o /dev/null "$(URL 2)" | grep -i '^ratelimit' >&2

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
run_wrk() { # name url pid
  local before after out rps p50 p99 reqs non2xx cpu_us
  wrk -t"$THREADS" -c"$CONNS" -d2s "$2" >/dev/null   # warm-up, discarded
  before=$(cpu_ticks "$3")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$2")
  after=$(cpu_ticks "$3")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  cpu_us=$(awk -v a="$before" -v b="$after" -v t="$TCK" -v n="$reqs" 'BEGIN {printf "%.1f", (b-a)/t*1e6/n}')
  printf '%-26s %10s req/s  p50 %8s  p99 %8s  gateway CPU %6s us/req  non-2xx %s\n' \
    "$1" "$rps" "$p50" "$p99" "$cpu_us" "${non2xx:-0}"
}

echo "protogate rate-limit load test: ${DURATION}s each, ${CONNS} connections, ${THREADS} threads"
run_wrk "GET GetBook, no limit" "$(URL 0)" "${GW[none]}"
run_wrk "GET GetBook, local limit" "$(URL 1)" "${GW[local]}"
run_wrk "GET GetBook, Redis limit" "$(URL 2)" "${GW[redis]}"
