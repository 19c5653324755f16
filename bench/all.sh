#!/usr/bin/env bash
# Every benchmark in one run, one JSON summary on stdout: gateway (bare axum and the seed-000
# peer as baselines), log (relay vs the raw rdkafka producer, projections vs a raw multi-row
# INSERT, the whole consumers role), realtime (202 → SSE latency vs the POST round trip), and
# bench/telemetry.sh when it exists. Every figure sits beside its same-run baseline; the ratios
# are the headline (`headline`), each part's full output follows (`parts`).
# Knobs (each script's own knobs pass through):
#   SMOKE=1      seconds-long run with tiny sizes (figures meaningless; checks that it works)
#   BENCHES="gateway log realtime telemetry" which benchmarks to run
#   LOG_PARTS="relay consumers"              bench/log.sh's PARTS (add `sweep` for the sweep)
#   SECS / EVENTS / RATE / CLIENTS           duration and sizes (see the scripts)
#   PROFILE, SKIP_SERVICES, SKIP_BUILD       see bench/lib.sh
#   PROFILE=debug SKIP_SERVICES=1 SMOKE=1 bench/all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BENCHES="${BENCHES:-gateway log realtime telemetry}"
if [ "${SMOKE:-0}" = 1 ]; then
  export SECS="${SECS:-1}" WARMUP="${WARMUP:-0}" CONCURRENCY="${CONCURRENCY:-8}" BATCH="${BATCH:-10}"
  export EVENTS="${EVENTS:-500}" RATE="${RATE:-50}" CLIENTS="${CLIENTS:-20}"
  export SWEEP_PENDING="${SWEEP_PENDING:-500}" SWEEP_ROWS="${SWEEP_ROWS:-0 1000}"
fi
bench_services
bench_build --bin substrate --example gateway_bench --example log_bench --example realtime_bench
# The parts below share what was built and checked here.
export SKIP_SERVICES=1 SKIP_BUILD=1 PROFILE
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for part in $BENCHES; do
  script="bench/$part.sh"
  if [ ! -x "$script" ]; then
    echo "[all] $script is not there; skipped" >&2
    continue
  fi
  echo "[all] $script" >&2
  if [ "$part" = log ]; then
    PARTS="${LOG_PARTS:-relay consumers}" "$script" >"$out/$part.json"
  else
    "$script" >"$out/$part.json"
  fi
done
python3 - "$out" "$PROFILE" ${SMOKE:-0} <<'PY'
import json, os, sys

out, profile, smoke = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
parts = {}
for f in sorted(os.listdir(out)):
    with open(os.path.join(out, f)) as fh:
        parts[f[:-5]] = json.load(fh)

def ratio(a, b):
    return round(a / b, 3) if a and b else None

head = {}
g = parts.get("gateway")
if g:
    bare = g["bare_axum"]["requests_per_s_median"]
    seed = g.get("seed000", {}).get("requests_per_s_median")
    for build, rows in g["summary"].items():
        for name, r in rows.items():
            if name == "targets":
                continue
            head[f"gateway.{build}.{name}"] = {
                "events_per_s": r["events_per_s"],
                "requests_per_s": r["requests_per_s"],
                "baseline_bare_axum_requests_per_s": bare,
                "ratio_to_bare_axum": r["ratio_to_bare_axum"],
                "baseline_seed000_requests_per_s": seed if name.endswith("single") else None,
                "ratio_to_seed000": r.get("ratio_to_seed000"),
            }
lg = parts.get("log")
if lg:
    rl = lg.get("relay")
    if rl:
        for store in ("sqlite", "postgres"):
            head[f"relay.{store}"] = {
                "events_per_s": rl[f"{store}_events_per_sec"],
                "baseline_raw_rdkafka_events_per_s": rl["raw_rdkafka_events_per_sec"],
                "ratio_to_raw_rdkafka": rl[f"{store}_ratio"],
            }
    pj = lg.get("projection")
    if pj:
        for store in ("sqlite", "postgres"):
            raw = pj.get(f"raw_insert_{store}_rows_per_sec")
            rate = pj[f"embedded_{store}_events_per_sec"]
            head[f"projection.notifications.embedded_{store}"] = {
                "events_per_s": rate,
                "baseline_raw_insert_rows_per_s": raw,
                "ratio_to_raw_insert": ratio(rate, raw),
            }
        raw = pj.get("raw_insert_postgres_rows_per_sec")
        rate = pj.get("kafka_postgres_events_per_sec")
        head["projection.notifications.kafka_postgres"] = {
            "events_per_s": rate,
            "baseline_raw_insert_rows_per_s": raw,
            "ratio_to_raw_insert": ratio(rate, raw),
        }
    cs = lg.get("consumers")
    if cs:
        raws = {"embedded_sqlite": (pj or {}).get("raw_insert_sqlite_rows_per_sec"),
                "embedded_postgres": (pj or {}).get("raw_insert_postgres_rows_per_sec"),
                "kafka_postgres": (pj or {}).get("raw_insert_postgres_rows_per_sec")}
        for col, v in cs.items():
            allg = v.get("all_groups", {})
            rate = allg.get("notifications")
            raw = (v.get("raw_insert_rows_per_sec")
                   or (cs.get("embedded_postgres", {}).get("raw_insert_rows_per_sec") if col == "kafka_postgres" else None)
                   or raws.get(col))
            head[f"consumers_role.{col}.notifications_all_groups"] = {
                "events_per_s": rate,
                "role_events_per_s": allg.get("role_events_per_sec"),
                "baseline_notifications_alone_events_per_s": v.get("notifications_alone", {}).get("notifications"),
                "baseline_raw_insert_rows_per_s": raw,
                "ratio_to_raw_insert": ratio(rate, raw),
            }
    if lg.get("sweep"):
        # How cost grows: the sweep's rows as they are (each beside its raw baseline).
        head["sweep"] = lg["sweep"]
rt = parts.get("realtime")
if rt:
    for r in rt:
        lat = r["latency"]
        e2e, rtt = lat["latency_202_to_sse_ms"] or {}, lat["baseline_post_round_trip_ms"] or {}
        head[f"realtime.{r['backend']}_{r['log']}"] = {
            "offered_rate_per_s": lat["offered_rate_per_s"],
            "p99_202_to_sse_ms": e2e.get("p99"),
            "baseline_post_round_trip_p99_ms": rtt.get("p99"),
            "ratio_to_post_round_trip_p99": ratio(e2e.get("p99"), rtt.get("p99")),
            "server_kb_per_idle_client": r["fanout"]["server_kb_per_client"],
        }
tl = parts.get("telemetry")
if tl is not None:
    # bench/telemetry.sh reports its own baselines; passed through as its summary says.
    head["telemetry"] = tl.get("headline", tl.get("summary", "see parts.telemetry"))

print(json.dumps({
    "bench": "all",
    "profile": profile,
    "smoke": smoke,
    "cores": os.cpu_count(),
    "load_average_at_end": os.getloadavg(),
    "note": "ratios are against baselines measured in the same run; on a shared machine absolute rates swing, ratios less",
    "headline": head,
    "parts": parts,
}, indent=2))
PY
