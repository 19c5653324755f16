# syntax=docker/dockerfile:1
# substrate container image: one binary, every role.
#   docker build -t substrate .
#   docker run -p 8080:8080 -v substrate-data:/var/lib/substrate substrate            # embedded
#   docker run substrate serve --roles gateway                                          # one role
# Configuration: SUBSTRATE_… environment variables (see `substrate config`).

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin substrate \
 && cp target/release/substrate /usr/local/bin/substrate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/substrate --create-home substrate
COPY --from=build /usr/local/bin/substrate /usr/local/bin/substrate
COPY avro /etc/substrate/avro
COPY config /etc/substrate/config
WORKDIR /var/lib/substrate
ENV SUBSTRATE_HTTP__LISTEN=0.0.0.0:8080 \
    SUBSTRATE_SCHEMAS__DIR=/etc/substrate/avro \
    SUBSTRATE_GATEWAY__ROUTES_FILE=/etc/substrate/config/routes.yaml \
    SUBSTRATE_STORE__URL=sqlite:///var/lib/substrate/substrate.db \
    SUBSTRATE_AUTH__DEV_SECRET_FILE=/var/lib/substrate/jwt-secret \
    SUBSTRATE_OBJECTS__URL=file:///var/lib/substrate/objects \
    SUBSTRATE_TELEMETRY__LOG_FORMAT=json
USER substrate
VOLUME /var/lib/substrate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["substrate", "--config", "/etc/substrate/config/substrate.toml", "healthcheck"]
ENTRYPOINT ["substrate", "--config", "/etc/substrate/config/substrate.toml"]
CMD ["serve"]
