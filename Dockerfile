# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim image as a
# non-root user. protox compiles protos in pure Rust, so neither stage needs protoc.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# benches/ is copied because Cargo.toml names its [[bench]] targets.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin protogate \
 && strip target/release/protogate

FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin protogate
COPY --from=build /src/target/release/protogate /usr/local/bin/protogate
COPY proto /etc/protogate/proto
COPY routes.toml /etc/protogate/routes.toml
# The demo provider's HMAC secret (routes.toml's secret_file); replace it, or
# your routes.toml's providers, for anything but the demo.
COPY examples/demo-jwt.secret /etc/protogate/examples/demo-jwt.secret
USER 10001:10001
EXPOSE 8080
# The shipped routes.toml listens on loopback; --listen makes the gateway
# reachable from outside the container. Mount your own routes.toml over
# /etc/protogate/routes.toml (proto paths are relative to it).
ENTRYPOINT ["protogate"]
CMD ["serve", "--config", "/etc/protogate/routes.toml", "--listen", "0.0.0.0:8080", "--log-format", "json"]
