#!/usr/bin/env bash
# Realtime benchmark: for each backend column (sqlite, postgres), starts `substrate serve`
# (release build) and measures end-to-end latency from the gateway's 202 to delivery on an SSE
# stream at a fixed offered load, and how many concurrent SSE clients the process holds with
# its memory per client. Prints a JSON array (build output goes to stderr).
#   RATE=1000 SECS=10 CLIENTS=5000 BACKENDS="sqlite postgres" bench/realtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-1000}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-5000}"
BACKENDS="${BACKENDS:-sqlite postgres}"
# Every SSE client is a socket on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
scripts/services.sh >&2
cargo build --release --bin substrate --example realtime_bench >&2
sep=""
echo "["
for b in $BACKENDS; do
  printf '%s' "$sep"
  target/release/examples/realtime_bench --bin target/release/substrate --backend "$b" \
    --rate "$RATE" --secs "$SECS" --clients "$CLIENTS" \
    --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
  sep=","
done
echo "]"
