#!/usr/bin/env bash
# Realtime benchmark: for each backend (sqlite, postgres — both on the embedded log — and kafka:
# PostgreSQL + a nisshi broker + the relay), starts `substrate serve` and measures end-to-end
# latency from the gateway's 202 to delivery on an SSE stream at a fixed offered load, and how
# many concurrent SSE clients the process holds with its memory per client. Prints a JSON
# array (build output goes to stderr).
#   RATE=1000 SECS=10 CLIENTS=5000 BACKENDS="sqlite postgres" bench/realtime.sh
# BASE_BIN=path/to/substrate: a before/after run in one go: for each backend, runs that
# binary (e.g. built from main) and then this build's, interleaved; each result is wrapped as
# {"binary": "base"|"this", "result": ...}. ROUNDS=n repeats the interleaved pair n times.
# Clients: each is one file descriptor in both processes, so CLIENTS stays below the hard
# `ulimit -n` (the script raises the soft limit to it).
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
# One measurement of server binary $2 on backend $1, printed as JSON.
one() {
  local b="$1" bin="$2" log=embedded store="$1"
  if [ "$b" = kafka ]; then
    # The production column: PostgreSQL + a Kafka broker (nisshi, memory storage) + the relay.
    store=postgres
    start_broker "$run/kafka-$RANDOM"
    log="kafka://$BROKER_ADDR"
  fi
  "$BIN_DIR/examples/realtime_bench" --bin "$bin" --backend "$store" \
    --log "$log" --rate "$RATE" --secs "$SECS" --clients "$CLIENTS" --pg "$PG_URL"
  if [ "$b" = kafka ]; then stop_broker; fi
}
for b in $BACKENDS; do
  if [ -z "${BASE_BIN:-}" ]; then
    printf '%s' "$sep"
    one "$b" "$BIN_DIR/substrate"
    sep=","
    continue
  fi
  for _ in $(seq 1 "${ROUNDS:-1}"); do
    for which in base this; do
      bin="$BIN_DIR/substrate"
      [ "$which" = base ] && bin="$BASE_BIN"
      printf '%s{"binary": "%s", "result": ' "$sep" "$which"
      one "$b" "$bin"
      printf '}'
      sep=","
    done
  done
done
echo "]"
