#!/usr/bin/env bash
# Log benchmark: runs bench/log.rs (release) once per part, each against a fresh nisshi broker
# (memory storage) on a free port — a Kafka consumer group drains a broker once, so parts do
# not share one. Parts (PARTS, default both):
#   relay      relay outbox → Kafka vs a raw rdkafka producer in the same run (ratio), then the
#              notifications group alone per backend column;
#   consumers  the whole `consumers` role (every projection group, as `--roles consumers` runs
#              them) draining the events, next to each group alone.
# Prints one JSON object (build output: stderr).
#   EVENTS=50000 PARTS="consumers" bench/log.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-50000}"
PARTS="${PARTS:-relay consumers}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
scripts/services.sh >&2
cargo build --release --example log_bench >&2
run=$(mktemp -d)
broker=""
trap '[ -n "$broker" ] && kill $broker 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
for part in $PARTS; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$run/$part"
  (cd "$run/$part" && exec nisshi broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://nisshi/ \
    --group-initial-rebalance-delay 0s >"$run/$part/broker.log" 2>&1) &
  broker=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  target/release/examples/log_bench --broker "127.0.0.1:$port" --events "$EVENTS" --part "$part" \
    --pg "${SUBSTRATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}" >"$run/$part.json"
  kill $broker 2>/dev/null; wait $broker 2>/dev/null || true
  broker=""
done
python3 - "$run" $PARTS <<'PY'
import json, sys
out = {}
for part in sys.argv[2:]:
    out.update(json.load(open(f"{sys.argv[1]}/{part}.json")))
print(json.dumps(out, indent=2))
PY
