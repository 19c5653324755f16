#!/usr/bin/env bash
# Installs what substrate needs on a fresh Debian machine, skipping what is present.
#   scripts/setup.sh --build   only what building needs (cmake etc. for the bundled librdkafka)
#   scripts/setup.sh           also the test suite's real backends: ClickHouse, Chromium,
#                              promtool, the nisshi Kafka broker, the s3s-fs S3 server and the
#                              Python Confluent clients.
# Safe to run again.
set -euo pipefail
log() { printf '[setup] %s\n' "$*" >&2; }
build_only=false
[ "${1:-}" = "--build" ] && build_only=true

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need_apt+=(libcurl4-openssl-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
if ! $build_only; then
  command -v clickhouse-server >/dev/null || need_apt+=(clickhouse-server clickhouse-client)
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v promtool >/dev/null || need_apt+=(prometheus)
  command -v pg_isready >/dev/null || need_apt+=(postgresql)
  command -v curl >/dev/null || need_apt+=(curl)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  # prometheus/clickhouse packages try to start services via systemd; policy-rc.d stops that.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

$build_only && { log "build prerequisites ready"; exit 0; }

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"
pids=()
if ! command -v nisshi >/dev/null; then
  log "cargo install nisshi 0.8.1 (about 23 minutes cold)"
  cargo install nisshi --version 0.8.1 --locked --ignore-rust-version -q &
  pids+=($!)
fi
if ! command -v s3s-fs >/dev/null; then
  log "cargo install s3s-fs 0.14.1"
  cargo install s3s-fs --version 0.14.1 --features binary --locked -q &
  pids+=($!)
fi
if ! python3 -c 'import confluent_kafka.schema_registry, fastavro, requests' 2>/dev/null; then
  log "pip install confluent-kafka[avro,schemaregistry] fastavro"
  python3 -m pip install -q 'confluent-kafka[avro,schemaregistry]' fastavro requests
fi
# The telemetry tests send metrics and logs with the OpenTelemetry Python SDK.
if ! python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  log "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
  python3 -m pip install -q opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
fi
# The API contract tests (tests/it/openapi.rs): Schemathesis fuzzes every endpoint from
# /openapi.json; openapi-spec-validator and openapi-core check the document and a client.
if ! python3 -c 'import schemathesis, openapi_spec_validator, openapi_core' 2>/dev/null; then
  log "pip install schemathesis openapi-spec-validator openapi-core"
  python3 -m pip install -q 'schemathesis>=4,<5' 'openapi-core>=0.19' openapi-spec-validator
fi
# The seed-000 peer of the gateway benchmark (bench/seed000/app.py): FastAPI + aiokafka under
# uvicorn.
if ! python3 -c 'import fastapi, uvicorn, aiokafka' 2>/dev/null; then
  log "pip install fastapi uvicorn aiokafka"
  python3 -m pip install -q fastapi 'uvicorn[standard]' aiokafka
fi
for p in "${pids[@]}"; do wait "$p"; done
log "done"
