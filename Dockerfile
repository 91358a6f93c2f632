# syntax=docker/dockerfile:1
# VeloStream: `velo-sql` and `velo-sql-multi` on a slim Debian, run as a non-root user.
#   docker build -t velostream:0.1.0 .
#   docker run -p 8080:8080 -e KAFKA_BROKERS=kafka:9092 -v velo-state:/var/lib/velostream/state velostream:0.1.0
# Configuration: /etc/velostream/configs/*.yaml (override with -v or --config), state in the
# /var/lib/velostream/state volume. See docs/deploy.md.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The workspace, built with the locked dependency versions.
COPY Cargo.toml Cargo.lock ./
COPY udfs udfs
COPY connectors connectors
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin velo-sql --bin velo-sql-multi

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/velostream velo \
    && mkdir -p /var/lib/velostream/state \
    && chown -R velo /var/lib/velostream
COPY --from=build /src/target/release/velo-sql /src/target/release/velo-sql-multi /usr/local/bin/
COPY configs /etc/velostream/configs
COPY schemas /etc/velostream/schemas
ENV VELO_STATE_DIR=/var/lib/velostream/state \
    SERVER_BIND=0.0.0.0 \
    SERVER_PORT=8080
VOLUME ["/var/lib/velostream/state"]
USER velo
WORKDIR /var/lib/velostream
EXPOSE 8080 9091
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["velo-sql"]
CMD ["server", "--config", "/etc/velostream/configs/velo-default.yaml"]
