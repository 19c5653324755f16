#!/usr/bin/env bash
# Gateway ingest benchmark: builds release `substrate` and the `gateway_bench` load generator,
# then measures single-event and batch POSTs (JWT + Avro validation, durable at 202) on SQLite
# and PostgreSQL against a bare axum "hello" ceiling in the same run. Prints one JSON document
# (build output goes to stderr).
#   CONCURRENCY=64 SECS=5 BATCH=100 BACKENDS="sqlite postgres" bench/gateway.sh
# Before/after in one run: COMPARE="before=/path/to/old/substrate after=target/release/substrate"
# ROUNDS=3 bench/gateway.sh measures each build ROUNDS times, interleaved with the ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY="${CONCURRENCY:-64}"
SECS="${SECS:-5}"
WARMUP="${WARMUP:-1}"
BATCH="${BATCH:-100}"
BACKENDS="${BACKENDS:-sqlite postgres}"
TARGET="${CARGO_TARGET_DIR:-target}"
scripts/services.sh >&2
cargo build --release --bin substrate --example gateway_bench >&2
COMPARE="${COMPARE:-substrate=$TARGET/release/substrate}"
"$TARGET/release/examples/gateway_bench" --compare "$COMPARE" --rounds "${ROUNDS:-1}" \
  --backends "$BACKENDS" --concurrency "$CONCURRENCY" --secs "$SECS" --warmup-secs "$WARMUP" \
  --batch "$BATCH" --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
