# Build: docker build -t whip-echo .
# Run:   docker run --rm -p 8080:8080 -p 8189:8189/udp -p 8189:8189/tcp -e WHIP_ECHO_PUBLIC_IP=<host IP> whip-echo
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin whip-echo

FROM debian:bookworm-slim
COPY --from=build /src/target/release/whip-echo /usr/local/bin/whip-echo
EXPOSE 8080/tcp 8189/udp 8189/tcp
USER nobody
ENTRYPOINT ["/usr/local/bin/whip-echo"]
