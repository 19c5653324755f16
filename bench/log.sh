#!/usr/bin/env bash
# Log benchmark: starts a nisshi broker (memory storage) on a free port, then runs
# bench/log.rs (release): relay throughput outbox → Kafka vs a raw rdkafka producer in the same
# run (ratio), and projection throughput per backend column. Prints JSON (build output: stderr).
#   EVENTS=50000 bench/log.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-50000}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
scripts/services.sh >&2
cargo build --release --example log_bench >&2
run=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$run" && exec nisshi broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://nisshi/ \
  --group-initial-rebalance-delay 0s >"$run/broker.log" 2>&1) &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$run"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
target/release/examples/log_bench --broker "127.0.0.1:$port" --events "$EVENTS" \
  --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
