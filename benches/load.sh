#!/usr/bin/env bash
# Load test of the demo: GET and POST through the gateway (wrk, HTTP/1.1
# keep-alive) and the same GetBook made directly in gRPC to the same upstream
# (h2load), in one run. Prints throughput, p50, p99 and the gateway's CPU
# time per request (user+sys of the gateway process over the measured window,
# and the user part of it).
# With nginx installed it ends with nginx answering the cache hit's bytes from
# memory: the floor under the cache-hit row (one HTTP/1.1 answer, nothing else).
#
#   benches/load.sh                  # DURATION=10 CONNS=64 by default
#   DURATION=20 CONNS=128 benches/load.sh
#   PERF_DIR=/tmp/prof benches/load.sh   # also a perf profile of each gateway run
#   ACCESS_LOG=true benches/load.sh      # with the access log on
#
# With PERF_DIR, `perf record` (software cpu-clock event, DWARF call graphs)
# samples the gateway during each measured run into PERF_DIR/<run>.data;
# read one with `perf report -i FILE --no-children --stdio`. Sampling costs
# the gateway CPU, so the figures of such a run are not comparable.
#
# Needs wrk and h2load (Debian: wrk, nghttp2-client); installs them if missing.
# Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
GW_PORT="${GW_PORT:-18080}"
UP_PORT="${UP_PORT:-50051}"

for tool in wrk h2load; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null
    break
  fi
done
# BIN=path/to/protogate measures another build (e.g. an older commit's) instead.
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin protogate >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/protogate"
fi
WORK="$(mktemp -d)"
NGINX_PID=""
trap 'kill $GW_PID $CACHED_PID $UP_PID $NGINX_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Access logs off for the measurement (ACCESS_LOG=true turns them on): this
# measures the request path. The gateway cache is off for the main run (GET
# must reach the upstream) and on for the cache-hit run.
. benches/demo_routes.sh
demo_routes "$GW_PORT" "$UP_PORT" "${ACCESS_LOG:-false}" > "$WORK/routes.toml"
sed -e "s|^listen = \"127.0.0.1:$GW_PORT\"|listen = \"127.0.0.1:$((GW_PORT + 1))\"|" "$WORK/routes.toml" > "$WORK/cached.toml"
sed -i 's/, gateway = true//' "$WORK/routes.toml"

# The access log's lines are info events of target protogate::access: let
# them through when it is on, into a file as a deployment would keep them.
GW_LOG=warn
[ "${ACCESS_LOG:-false}" = true ] && GW_LOG=warn,protogate::access=info
RUST_LOG=warn "$BIN" demo --upstream-only --config "$WORK/routes.toml" & UP_PID=$!
sleep 0.5
RUST_LOG=$GW_LOG "$BIN" serve --config "$WORK/routes.toml" 2>"$WORK/gateway.log" & GW_PID=$!
RUST_LOG=$GW_LOG "$BIN" serve --config "$WORK/cached.toml" 2>"$WORK/cached.log" & CACHED_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW_PORT/v1/shelves/1/books/2" >/dev/null && break; sleep 0.1; done

printf '\x00\x00\x00\x00\x04\x08\x01\x10\x02' > "$WORK/getbook.grpc"
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"Designing Data-Intensive Gateways","author":"Grace B. Liskov-Knuth","isbn":"978-0-13-468599-1","genre":"GENRE_NONFICTION","pageCount":"512","tags":["api","http","grpc","json"],"publishTime":"2024-03-01T12:00:00Z","description":"Posted by wrk to measure JSON request decoding and transcoding.","rating":4.25,"inStock":true}'
LUA

cpu_ticks() { # user+sys of a process and its children (nginx's workers)
  local total=0 c
  for c in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    total=$((total + $(awk '{print $14+$15}' "/proc/$c/stat")))
  done
  echo "$total"
}
user_ticks() { # user time alone: the kernel's share of an answer over loopback
  local total=0 c  # is the same for every server, so the difference is here
  for c in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    total=$((total + $(awk '{print $14}' "/proc/$c/stat")))
  done
  echo "$total"
}
TCK=$(getconf CLK_TCK)

# Warm-up (discarded).
wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$GW_PORT/v1/shelves/1/books/2" >/dev/null

run_wrk() { # name url [script] [pid]
  local name=$1 url=$2 script=${3:-} pid=${4:-$GW_PID}
  local before after user_before user_after out
  local perf_pid=""
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" \
      -o "$PERF_DIR/$(tr ' ' _ <<<"$name").data" 2>/dev/null & perf_pid=$!
  fi
  before=$(cpu_ticks "$pid"); user_before=$(user_ticks "$pid")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency ${script:+-s "$script"} "$url")
  after=$(cpu_ticks "$pid"); user_after=$(user_ticks "$pid")
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local cpu_us user_us
  cpu_us=$(awk -v a="$before" -v b="$after" -v t="$TCK" -v n="$reqs" 'BEGIN {printf "%.1f", (b-a)/t*1e6/n}')
  user_us=$(awk -v a="$user_before" -v b="$user_after" -v t="$TCK" -v n="$reqs" 'BEGIN {printf "%.1f", (b-a)/t*1e6/n}')
  printf '%-24s %10s req/s  p50 %8s  p99 %8s  server CPU %6s us/req (user %s)\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "$user_us"
}

run_h2load() { # name
  local out rps
  out=$(h2load -c"$CONNS" -m1 -t"$THREADS" -D"$DURATION" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$WORK/getbook.grpc" --log-file="$WORK/h2.log" "http://127.0.0.1:$UP_PORT/bookstore.v1.Bookstore/GetBook")
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  # h2load's log: start time, status, duration in µs.
  read -r p50 p99 < <(awk '{print $3}' "$WORK/h2.log" | sort -n | awk '{a[NR]=$1} END {printf "%.2fms %.2fms\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
  printf '%-24s %10s req/s  p50 %8s  p99 %8s\n' "$1" "$rps" "$p50" "$p99"
}

echo "protogate load test: ${DURATION}s each, ${CONNS} connections, ${THREADS} threads"
run_h2load "direct gRPC GetBook"
run_wrk "gateway GET GetBook" "http://127.0.0.1:$GW_PORT/v1/shelves/1/books/2"
# POST needs a token: the demo protects writes.
TOKEN=$("$BIN" token --config "$WORK/routes.toml" --scope bookstore.write --ttl 1h)
sed -i "s|^wrk.headers\[\"Content-Type\"\].*|&\nwrk.headers[\"Authorization\"] = \"Bearer $TOKEN\"|" "$WORK/post.lua"
run_wrk "gateway POST CreateBook" "http://127.0.0.1:$GW_PORT/v1/shelves/1/books" "$WORK/post.lua"
curl -sf "http://127.0.0.1:$((GW_PORT + 1))/v1/shelves/1/books/2" >/dev/null
run_wrk "gateway GET cache hit" "http://127.0.0.1:$((GW_PORT + 1))/v1/shelves/1/books/2" "" "$CACHED_PID"

# The floor under the cache hit: nginx answering the same bytes from memory,
# one HTTP/1.1 answer over loopback and nothing else (if nginx is installed).
if command -v nginx >/dev/null; then
  mkdir -p "$WORK/nginx/tmp"
  hit=$(curl -sf "http://127.0.0.1:$((GW_PORT + 1))/v1/shelves/1/books/2")
  cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp;
  proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp;
  uwsgi_temp_path $WORK/nginx/tmp;
  scgi_temp_path $WORK/nginx/tmp;
  server {
    listen 127.0.0.1:$((GW_PORT + 2));
    location / { default_type application/json; return 200 '$hit'; }
  }
}
NGINX
  nginx -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' & NGINX_PID=$!
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$((GW_PORT + 2))/" && break; sleep 0.1; done
  run_wrk "nginx static (floor)" "http://127.0.0.1:$((GW_PORT + 2))/" "" "$NGINX_PID"
fi
