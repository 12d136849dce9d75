# Build: docker build -t whip-echo .
# Run:   docker run --rm -p 8080:8080 -p 8189:8189/udp -p 8189:8189/tcp -e WHIP_ECHO_PUBLIC_IP=<host IP> whip-echo
#
# Dependencies are compiled in a layer of their own (cargo-chef), so a change to whip-echo's
# sources rebuilds only whip-echo. .ci/run lints this file with hadolint and checks that every
# path it copies exists and that it runs what `cargo build --release --locked` builds.

FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin whip-echo
COPY . .
RUN cargo build --release --locked --bin whip-echo

FROM debian:bookworm-slim AS runtime
# A user of its own, no shell login, no home: the server needs no privilege (its ports are
# above 1024).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin whip-echo
COPY --from=builder /app/target/release/whip-echo /usr/local/bin/whip-echo
USER 10001
# HTTP (page, API, and ICE-TCP on the same port), the media UDP port and the ICE-TCP port.
EXPOSE 8080/tcp 8189/udp 8189/tcp
ENV WHIP_ECHO_LISTEN=0.0.0.0:8080 WHIP_ECHO_LOG_FORMAT=json
# `whip-echo healthcheck` asks /readyz on WHIP_ECHO_LISTEN; the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/whip-echo", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/whip-echo"]
