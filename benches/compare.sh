#!/usr/bin/env bash
# Puts protogate beside the peer gateways of ../shared/bench (structured-proxy,
# grpc-gateway, nginx, direct gRPC) in one run of that harness.
#
#   benches/compare.sh                 # ROUNDS=3 DURATION=10 (the harness's defaults)
#   ROUNDS=5 benches/compare.sh
#   ACCESS_LOG=true benches/compare.sh # the same with protogate's access log on
#   PGO=1 benches/compare.sh           # the profile-guided build of benches/pgo.sh
#   PROTOGATE_BIN=path benches/compare.sh   # a binary built beforehand
#
# After the harness's table it prints protogate's ratios to structured-proxy
# and to the nginx hop (CPU us/req and req/s), its p99 against direct gRPC and
# its peak RSS, each beside the target of issue 13 (benches/compare_ratios.py).
#
# The harness is copied to $BENCH_DIR (default ~/gwbench) because shared/ is
# read-only; its setup.sh installs the peers on first use (several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BENCH_DIR="${BENCH_DIR:-$HOME/gwbench}"
SHARED="${SHARED:-$ROOT/../shared/bench}"
if [ ! -d "$BENCH_DIR" ]; then
  cp -r "$SHARED" "$BENCH_DIR"
  chmod -R u+w "$BENCH_DIR"
fi
"$BENCH_DIR/setup.sh"
if [ -n "${PROTOGATE_BIN:-}" ]; then
  GATEWAY_BIN="$PROTOGATE_BIN"
elif [ "${PGO:-0}" = 1 ]; then
  GATEWAY_BIN=$("$ROOT/benches/pgo.sh")
else
  cargo build --release --locked --bin protogate
  GATEWAY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/protogate"
fi
cat > "$BENCH_DIR/gen/protogate.toml" <<TOML
# protogate in front of the harness's upstream (bench.v1.BookService), with
# the per-answer work a browser-facing deployment does switched on: CORS,
# cache headers with a strong ETag, and compression negotiation (on by
# default). The peers run their defaults, which do none of this.
[server]
listen = "127.0.0.1:8090"
access_log = ${ACCESS_LOG:-false}

[proto]
descriptor_set = "bench.pb"

[cors]
allow_origins = ["https://app.example.com"]

[upstreams.bench]
endpoints = ["http://127.0.0.1:50051"]

[[routes]]
service = "bench.v1.BookService"
upstream = "bench"
auth = "none"
cache = { public = true, max_age = "60s" }
TOML
cd "$BENCH_DIR"
RUN_DIR="${RUN_DIR:-$BENCH_DIR/runs/$(date +%Y%m%d-%H%M%S)}"
export RUN_DIR
GATEWAY_CMD="$GATEWAY_BIN serve --config $BENCH_DIR/gen/protogate.toml" \
GATEWAY_URL=http://127.0.0.1:8090 GATEWAY_NAME=protogate \
  ./run.sh
"$ROOT/benches/compare_ratios.py" "$RUN_DIR" protogate
