#!/usr/bin/env bash
# Gateway ingest benchmark: builds `substrate` and the `gateway_bench` load generator, then
# measures single-event and batch POSTs (JWT + Avro validation, durable at 202) on SQLite and
# PostgreSQL against, in the same run, a bare axum "hello" ceiling and — when nisshi and the
# Python modules are installed — the seed-000 pattern (bench/seed000/app.py: FastAPI +
# aiokafka under 2 uvicorn workers, 202 after the broker's ack). Prints one JSON document
# (build output goes to stderr).
#   CONCURRENCY=64 SECS=5 BATCH=100 BACKENDS="sqlite postgres" bench/gateway.sh
# Before/after in one run: COMPARE="before=/path/to/old/substrate after=target/release/substrate"
# ROUNDS=3 bench/gateway.sh measures each build ROUNDS times, interleaved with the ceiling.
# SEED000=0 leaves the seed-000 peer out. PROFILE, SKIP_SERVICES, SKIP_BUILD: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CONCURRENCY="${CONCURRENCY:-64}"
SECS="${SECS:-5}"
WARMUP="${WARMUP:-1}"
BATCH="${BATCH:-100}"
BACKENDS="${BACKENDS:-sqlite postgres}"
bench_services
bench_build --bin substrate --example gateway_bench
COMPARE="${COMPARE:-substrate=$BIN_DIR/substrate}"
peer=()
run=$(mktemp -d)
trap 'stop_broker; rm -rf "$run"' EXIT
if [ "${SEED000:-1}" = 1 ]; then
  if seed000_available; then
    start_broker "$run/broker"
    peer=(--seed000 "$BROKER_ADDR")
  else
    echo "[gateway] seed-000 peer skipped: needs nisshi and python3 fastapi, uvicorn, aiokafka (scripts/setup.sh)" >&2
  fi
fi
"$BIN_DIR/examples/gateway_bench" --compare "$COMPARE" --rounds "${ROUNDS:-1}" \
  --backends "$BACKENDS" --concurrency "$CONCURRENCY" --secs "$SECS" --warmup-secs "$WARMUP" \
  --batch "$BATCH" --pg "$PG_URL" "${peer[@]}"
