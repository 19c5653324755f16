#!/usr/bin/env bash
# Realtime benchmark: for each backend (sqlite, postgres — both on the embedded log — and kafka:
# PostgreSQL + a nisshi broker + the relay), starts `substrate serve`
# (release build) and measures end-to-end latency from the gateway's 202 to delivery on an SSE
# stream at a fixed offered load, and how many concurrent SSE clients the process holds with
# its memory per client. Prints a JSON array (build output goes to stderr).
#   RATE=1000 SECS=10 CLIENTS=5000 BACKENDS="sqlite postgres" bench/realtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-1000}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-5000}"
BACKENDS="${BACKENDS:-sqlite postgres kafka}"
# Every SSE client is a socket on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
scripts/services.sh >&2
cargo build --release --bin substrate --example realtime_bench >&2
sep=""
echo "["
for b in $BACKENDS; do
  printf '%s' "$sep"
  log=embedded store="$b"
  if [ "$b" = kafka ]; then
    # The production column: PostgreSQL + a Kafka broker (nisshi, memory storage) + the relay.
    store=postgres
    run=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    (cd "$run" && exec "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://nisshi/ \
      --group-initial-rebalance-delay 0s >"$run/broker.log" 2>&1) &
    broker=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    log="kafka://127.0.0.1:$port"
  fi
  target/release/examples/realtime_bench --bin target/release/substrate --backend "$store" \
    --log "$log" --rate "$RATE" --secs "$SECS" --clients "$CLIENTS" \
    --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
  if [ "$b" = kafka ]; then kill "$broker"; wait "$broker" 2>/dev/null || true; rm -rf "$run"; fi
  sep=","
done
echo "]"
