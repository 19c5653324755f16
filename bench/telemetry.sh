#!/usr/bin/env bash
# Telemetry benchmark: builds the `telemetry_bench` example and runs it: Prometheus remote-write
# ingest (samples/s durable at the 2xx, CLIENTS concurrent senders for SECS seconds, requests of
# PER_REQUEST samples over SERIES series), the time until the telemetry group has stored them
# (end-to-end samples/s), and p50/p99 of a 24 h query_range at a 1 m step over the series
# (ROUNDS queries), on SQLite, PostgreSQL, and PostgreSQL + ClickHouse (127.0.0.1:8123) when it
# answers; baselines from the same run: a bare axum handler that only decodes the same bodies,
# and a raw multi-row insert of the same samples. Prints one JSON object (build output: stderr).
#   SECS=10 CLIENTS=8 ROUNDS=50 bench/telemetry.sh
# The query part first sends the rest of a day of 1-minute data (untimed); FILL_DAY=0 skips it.
# Smoke run (seconds, debug build): PROFILE=dev SECS=1 ROUNDS=2 FILL_DAY=0 COLUMNS=sqlite bench/telemetry.sh
# Needs PostgreSQL at SUBSTRATE_TEST_PG (scripts/services.sh starts the test services).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$PROFILE" = release ]; then
  cargo build --release --example telemetry_bench >&2
  bin="$TARGET/release/examples/telemetry_bench"
else
  cargo build --example telemetry_bench >&2
  bin="$TARGET/debug/examples/telemetry_bench"
fi
exec "$bin" --secs "${SECS:-10}" --clients "${CLIENTS:-8}" --rounds "${ROUNDS:-50}" \
  --series "${SERIES:-1000}" --per-request "${PER_REQUEST:-500}" \
  --columns "${COLUMNS:-sqlite postgres clickhouse}" --fill-day "${FILL_DAY:-1}" \
  --clickhouse "${CLICKHOUSE_URL-http://127.0.0.1:8123}" \
  --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
