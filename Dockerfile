# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim image as a
# non-root user. protox compiles protos in pure Rust, so neither stage needs protoc.
#
#   docker build -t protogate .
#   docker run -p 8080:8080 protogate                     # the demo: gateway + Bookstore
#   docker run -p 8080:8080 -p 9901:9901 -v "$PWD/conf:/config:ro" protogate \
#       protogate --log-format json serve --config /config/routes.toml --listen 0.0.0.0:8080

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a stub crate with the real
# manifest and lock file compiles every dependency, and only changes to
# Cargo.toml or Cargo.lock rebuild it.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > build.rs \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in hot_path pipeline auth balancing metrics stream rate_limit; do echo 'fn main() {}' > "benches/$bench.rs"; done \
 && cargo build --release --locked --bin protogate \
 && rm -rf build.rs src benches
COPY build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
# The stub's artefacts are older than the real sources, so cargo rebuilds
# protogate itself (and only it).
RUN touch build.rs src/lib.rs src/main.rs \
 && cargo build --release --locked --bin protogate \
 && strip target/release/protogate

FROM debian:bookworm-slim AS runtime
# ca-certificates: jwks_url providers and https:// upstreams verify against
# the system roots. curl: the HEALTHCHECK probe. Debian's security updates
# change exact versions under a pin, so the packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 protogate \
 && useradd --system --uid 10001 --gid protogate --no-create-home --shell /usr/sbin/nologin protogate
COPY --from=build /src/target/release/protogate /usr/local/bin/protogate
WORKDIR /etc/protogate
COPY proto ./proto
# The demo's configuration, made to listen on every interface inside the
# container (gateway :8080, admin :9901 for probes) and to take the demo
# provider's HMAC secret from the environment: no secret is in the image.
COPY routes.toml ./routes.toml
RUN sed -i \
      -e 's|^listen = "127.0.0.1:8080"|listen = "0.0.0.0:8080"|' \
      -e 's|^listen = "127.0.0.1:9901"|listen = "0.0.0.0:9901"|' \
      -e 's|^secret_file = "examples/demo-jwt.secret"|secret_env = "PROTOGATE_DEMO_SECRET"|' \
      routes.toml \
 && grep -q '^secret_env = "PROTOGATE_DEMO_SECRET"' routes.toml \
 && grep -q '^listen = "0.0.0.0:9901"' routes.toml
USER 10001:10001
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9901/readyz"]
# The demo (gateway and Bookstore in one process). Without
# PROTOGATE_DEMO_SECRET a random secret is made for this run; to mint tokens
# for the demo's writes, pass the same -e PROTOGATE_DEMO_SECRET=... to
# `docker run` and to `docker exec <container> protogate token --scope bookstore.write`.
# Production: give the command, e.g. `protogate serve --config /config/routes.toml`.
CMD ["sh", "-c", "PROTOGATE_DEMO_SECRET=\"${PROTOGATE_DEMO_SECRET:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \\n')}\" exec protogate --log-format json demo --config /etc/protogate/routes.toml"]
