#!/usr/bin/env bash
# Log benchmark: runs bench/log.rs once per part, each against a fresh nisshi broker (memory
# storage) on a free port — a Kafka consumer group drains a broker once, so parts do not share
# one. Parts (PARTS, default "relay consumers"):
#   relay      relay outbox → Kafka vs a raw rdkafka producer in the same run (ratio), then the
#              notifications group alone per backend column, next to a raw multi-row INSERT of
#              the same rows into the same table;
#   consumers  the whole `consumers` role (every projection group, as `--roles consumers` runs
#              them) draining the events, next to each group alone;
#   sweep      how cost grows: relay throughput at SWEEP_PENDING backlogs, the notifications
#              group with SWEEP_ROWS rows already in its table, and single-event ingest with
#              SWEEP_ROWS relayed rows in the outbox (bench/RESULTS.md, "How cost grows").
# Prints one JSON object (build output: stderr).
#   EVENTS=50000 PARTS="consumers" bench/log.sh
#   PARTS=sweep SWEEP_PENDING="10000 100000" SWEEP_ROWS="0 1000000" bench/log.sh
# PROFILE, SKIP_SERVICES, SKIP_BUILD: see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
EVENTS="${EVENTS:-50000}"
PARTS="${PARTS:-relay consumers}"
SWEEP_PENDING="${SWEEP_PENDING:-10000 100000}"
SWEEP_ROWS="${SWEEP_ROWS:-0 1000000}"
bench_services
bench_build --example log_bench
run=$(mktemp -d)
trap 'stop_broker; rm -rf "$run"' EXIT
for part in $PARTS; do
  if command -v nisshi >/dev/null; then
    start_broker "$run/$part"
    broker="$BROKER_ADDR"
  elif [ "$part" = relay ]; then
    echo "[log] part relay skipped: nisshi is not installed (scripts/setup.sh)" >&2
    continue
  else
    # Without a broker the Kafka columns are left out (`--broker none`).
    echo "[log] nisshi is not installed: part $part without its Kafka columns" >&2
    broker=none
  fi
  "$BIN_DIR/examples/log_bench" --broker "$broker" --events "$EVENTS" --part "$part" \
    --sweep-pending "$SWEEP_PENDING" --sweep-rows "$SWEEP_ROWS" --pg "$PG_URL" >"$run/$part.json"
  stop_broker
done
python3 - "$run" $PARTS <<'PY'
import json, os, sys
out = {}
for part in sys.argv[2:]:
    f = f"{sys.argv[1]}/{part}.json"
    if os.path.exists(f):
        out.update(json.load(open(f)))
print(json.dumps(out, indent=2))
PY
