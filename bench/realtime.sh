#!/usr/bin/env bash
# Realtime benchmark: for each backend (sqlite, postgres — both on the embedded log — and kafka:
# PostgreSQL + a nisshi broker + the relay), starts `substrate serve` and measures end-to-end
# latency from the gateway's 202 to delivery on an SSE stream at a fixed offered load, and how
# many concurrent SSE clients the process holds with its memory per client. Prints a JSON
# array (build output goes to stderr).
#   RATE=1000 SECS=10 CLIENTS=5000 BACKENDS="sqlite postgres" bench/realtime.sh
# PROFILE, SKIP_SERVICES, SKIP_BUILD: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RATE="${RATE:-1000}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-5000}"
BACKENDS="${BACKENDS:-sqlite postgres kafka}"
# Every SSE client is a socket on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_services
bench_build --bin substrate --example realtime_bench
run=$(mktemp -d)
trap 'stop_broker; rm -rf "$run"' EXIT
sep=""
echo "["
for b in $BACKENDS; do
  printf '%s' "$sep"
  log=embedded store="$b"
  if [ "$b" = kafka ]; then
    # The production column: PostgreSQL + a Kafka broker (nisshi, memory storage) + the relay.
    store=postgres
    start_broker "$run/kafka"
    log="kafka://$BROKER_ADDR"
  fi
  "$BIN_DIR/examples/realtime_bench" --bin "$BIN_DIR/substrate" --backend "$store" \
    --log "$log" --rate "$RATE" --secs "$SECS" --clients "$CLIENTS" --pg "$PG_URL"
  [ "$b" = kafka ] && stop_broker
  sep=","
done
echo "]"
