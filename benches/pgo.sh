#!/usr/bin/env bash
# A profile-guided release build of protogate (docs/decisions/0015-profile-guided-build.md).
#
#   benches/pgo.sh                       # prints the path of the built binary
#   CARGO_TARGET_DIR=/tmp/t benches/pgo.sh
#
# 1. builds protogate instrumented (-Cprofile-generate);
# 2. trains it: runs `protogate demo` (gateway and Bookstore in one process)
#    and drives the demo's REST/JSON surface with wrk and h2load: public
#    reads over HTTP/1.1 and h2c, conditional reads, gateway-cache hits,
#    authenticated JSON writes, CORS preflights and a not-found; the traffic
#    is the demo's, not the harness's (so compare.sh does not grade its own
#    training set);
# 3. merges the profile with llvm-profdata of rustc's LLVM major version;
# 4. builds again with -Cprofile-use: the same code, with branch weights,
#    inlining and hot/cold placement taken from the training.
#
# Needs wrk, h2load (Debian: wrk, nghttp2-client) and llvm-profdata of the
# LLVM rustc reports (`rustc -vV`; Debian: llvm-22). Set LLVM_PROFDATA to
# use another path. Everything binds 127.0.0.1 and stops by itself. Each
# phase keeps its own target directory, since the flags differ; both name
# the host as --target, so the flags reach protogate and its dependencies
# but not build scripts or proc-macros.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PGO_DIR="$TARGET/pgo"
TRAIN_SECONDS="${TRAIN_SECONDS:-6}"

llvm_major=$(rustc -vV | awk '/^LLVM version/ {split($3, v, "."); print v[1]}')
host=$(rustc -vV | awk '/^host:/ {print $2}')
# rustup's llvm-tools is rustc's own LLVM; Debian's llvm-N of the same major
# version reads the same raw profile format.
PROFDATA="${LLVM_PROFDATA:-}"
for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
                 "$(command -v "llvm-profdata-$llvm_major" || true)" \
                 "/usr/lib/llvm-$llvm_major/bin/llvm-profdata"; do
  [ -n "$PROFDATA" ] && break
  [ -x "$candidate" ] && PROFDATA="$candidate"
done
[ -x "$PROFDATA" ] || { echo "pgo.sh: needs llvm-profdata of LLVM $llvm_major (rustup component add llvm-tools, or Debian's llvm-$llvm_major), or LLVM_PROFDATA=" >&2; exit 2; }
for tool in wrk h2load curl; do
  command -v "$tool" >/dev/null || { echo "pgo.sh: needs $tool" >&2; exit 2; }
done

rm -rf "$PGO_DIR/raw"
mkdir -p "$PGO_DIR/raw"
RUSTFLAGS="-Cprofile-generate=$PGO_DIR/raw" \
  cargo build --release --locked --bin protogate --target "$host" --target-dir "$PGO_DIR/generate" >&2
TRAINEE="$PGO_DIR/generate/$host/release/protogate"

GW=http://127.0.0.1:8080
DEMO_PID=""
trap '[ -z "$DEMO_PID" ] || kill "$DEMO_PID" 2>/dev/null || true' EXIT
DEMO_LOG="$PGO_DIR/demo.log"
RUST_LOG=warn "$TRAINEE" demo >/dev/null 2>"$DEMO_LOG" & DEMO_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "$GW/v1/shelves" && break; sleep 0.1; done
curl -sf -o /dev/null "$GW/v1/shelves" || { echo "pgo.sh: the demo did not start:" >&2; cat "$DEMO_LOG" >&2; exit 1; }
TOKEN=$("$TRAINEE" token --scope bookstore.write)

LUA_DIR=$(mktemp -d)
trap '[ -z "$DEMO_PID" ] || kill "$DEMO_PID" 2>/dev/null || true; rm -rf "$LUA_DIR"' EXIT
cat > "$LUA_DIR/create.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = [[{"title":"Training Day","author":"A. Profile","genre":"GENRE_FICTION","rating":4.5,"tags":["pgo","llvm"],"publishTime":"2025-01-01T00:00:00Z"}]]
LUA
cat > "$LUA_DIR/preflight.lua" <<'LUA'
wrk.method = "OPTIONS"
wrk.headers["Origin"] = "http://localhost:3000"
wrk.headers["Access-Control-Request-Method"] = "POST"
wrk.headers["Access-Control-Request-Headers"] = "content-type, authorization"
LUA
ETAG=$(curl -sfI "$GW/v1/shelves/1" | tr -d '\r' | awk 'tolower($1) == "etag:" {print $2}')

# A phase whose answers are not what it trains (a token the demo refuses, say)
# would weight the wrong paths: each checks wrk's count of non-2xx/3xx answers.
train() {
  echo "pgo.sh: training: $*" >&2
  if ! "$@" | { ! grep -E 'Non-2xx|[1-9][0-9]* (failed|errored)' >&2; }; then
    echo "pgo.sh: training phase failed or was answered with errors: $*" >&2
    exit 1
  fi
}
train_not_found() { echo "pgo.sh: training: $*" >&2; "$@" >/dev/null; }
BROWSER=(-H "origin: http://localhost:3000" -H "accept-encoding: gzip, br")
train wrk -t2 -c64 -d"${TRAIN_SECONDS}s" "${BROWSER[@]}" "$GW/v1/shelves/1"
train wrk -t2 -c64 -d"${TRAIN_SECONDS}s" "$GW/v1/shelves/1/books?pageSize=5"
train wrk -t2 -c64 -d"${TRAIN_SECONDS}s" -s "$LUA_DIR/create.lua" "$GW/v1/shelves/1/books"
train h2load -c64 -m10 -t2 -D "$TRAIN_SECONDS" "$GW/v1/shelves/1"
train wrk -t2 -c16 -d"$((TRAIN_SECONDS / 2 + 1))s" "$GW/v1/shelves/1/books/2"
train wrk -t2 -c16 -d"$((TRAIN_SECONDS / 2 + 1))s" -H "if-none-match: $ETAG" "$GW/v1/shelves/1"
train wrk -t2 -c16 -d"$((TRAIN_SECONDS / 2 + 1))s" -s "$LUA_DIR/preflight.lua" "$GW/v1/shelves/1/books"
train_not_found wrk -t2 -c16 -d"$((TRAIN_SECONDS / 2 + 1))s" "$GW/v1/shelves/9"

# The profile is written when the process exits normally: stop it as an
# orchestrator would (SIGTERM) and wait for the drain.
kill -TERM "$DEMO_PID"
wait "$DEMO_PID" || true
DEMO_PID=""
"$PROFDATA" merge -o "$PGO_DIR/merged.profdata" "$PGO_DIR/raw"
# Cargo fingerprints RUSTFLAGS, not the file they name: a profile named by
# its content makes a new profile rebuild every crate, and an unchanged one
# reuse them.
PROFILE="$PGO_DIR/protogate-$(sha256sum "$PGO_DIR/merged.profdata" | cut -c1-16).profdata"
rm -f "$PGO_DIR"/protogate-*.profdata
mv "$PGO_DIR/merged.profdata" "$PROFILE"

RUSTFLAGS="-Cprofile-use=$PROFILE" \
  cargo build --release --locked --bin protogate --target "$host" --target-dir "$PGO_DIR/use" >&2
echo "$PGO_DIR/use/$host/release/protogate"
