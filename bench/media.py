#!/usr/bin/env python3
"""Benchmark of the upload saga, end to end through HTTP, on the embedded column (SQLite,
embedded log, local files with substrate-signed blob URLs). Starts `substrate serve` on a temp
folder, runs N uploads with C concurrent clients (intent -> wait for the upload URL -> PUT ->
wait until confirmed, polling GET /api/v1/media/uploads/{id}), and prints JSON: latency
percentiles per phase, throughput, and — as the baseline from the same run — the plain event
ingest latency (POST /api/v1/events/message).

    bench/media.py [--binary target/release/substrate] [--uploads 200] [--concurrency 16]
                   [--size 65536] [--store sqlite|postgres://…]
"""

import argparse
import concurrent.futures as cf
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

SECRET = "bench-secret-bench-secret-bench-secret"
ROUTES = """routes:
  message:
    topic: public.user.message.events
    allow: [user, service]
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return round(xs[k], 2)


def summary(xs):
    return {"p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99),
            "mean": round(statistics.mean(xs), 2) if xs else None, "n": len(xs)}


def main():
    ap = argparse.ArgumentParser()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--binary", default=os.path.join(repo, "target/release/substrate"))
    ap.add_argument("--uploads", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--baseline-events", type=int, default=500)
    ap.add_argument("--store", default="sqlite")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="substrate-bench-media-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(os.path.join(tmp, "routes.yaml"), "w") as f:
        f.write(ROUTES)
    store = f"sqlite://{tmp}/substrate.db" if a.store == "sqlite" else a.store
    env = dict(os.environ,
               SUBSTRATE_STORE__URL=store,
               SUBSTRATE_STORE__MIGRATE_ON_START="true",
               SUBSTRATE_HTTP__LISTEN=f"127.0.0.1:{port}",
               SUBSTRATE_HTTP__PUBLIC_URL=base,
               SUBSTRATE_SCHEMAS__DIR=os.path.join(repo, "avro"),
               SUBSTRATE_GATEWAY__ROUTES_FILE=os.path.join(tmp, "routes.yaml"),
               SUBSTRATE_GATEWAY__RATE_LIMIT__ENABLED="false",
               SUBSTRATE_AUTH__HS256_SECRET=SECRET,
               SUBSTRATE_OBJECTS__URL=f"file://{tmp}/objects",
               SUBSTRATE_MEDIA__STARTING_CREDITS=str(a.uploads + 10),
               SUBSTRATE_MEDIA__MAX_FILE_SIZE=str(max(a.size, 1)),
               SUBSTRATE_TELEMETRY__LOG_FILTER="error")
    proc = subprocess.Popen([a.binary, "serve"], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                sys.exit("substrate did not become ready")
            time.sleep(0.05)
        token = subprocess.check_output(
            [a.binary, "token", "mint", "--sub", "bench", "--email", "bench@example.com"],
            env=env, cwd=tmp).decode().strip()
        auth = {"Authorization": f"Bearer {token}"}
        body = bytes((i * 7) % 251 for i in range(a.size))

        # Baseline: one accepted event (202 after commit) at the same concurrency, same server,
        # same run — what the intent step costs without the saga behind it.
        def event(i):
            s = requests.Session()
            t0 = time.perf_counter()
            r = s.post(base + "/api/v1/events/message", headers=auth,
                       json={"message": f"b{i}", "timestamp": "2026-01-01T00:00:00Z"})
            assert r.status_code == 202, r.text
            return (time.perf_counter() - t0) * 1000

        with cf.ThreadPoolExecutor(a.concurrency) as ex:
            ingest = list(ex.map(event, range(a.baseline_events)))

        def one(i):
            s = requests.Session()
            t0 = time.perf_counter()
            r = s.post(base + "/api/v1/media/upload-intent", headers=auth,
                       json={"file_name": f"f{i}.png", "media_type": "image/png",
                             "file_size": a.size})
            assert r.status_code == 202, r.text
            t_accept = time.perf_counter()
            rid = r.json()["request_id"]
            while True:
                u = s.get(f"{base}/api/v1/media/uploads/{rid}", headers=auth)
                if u.status_code == 200 and u.json().get("upload_url"):
                    url = u.json()["upload_url"]
                    break
                time.sleep(0.005)
            t_url = time.perf_counter()
            p = s.put(url, data=body, headers={"Content-Type": "image/png"})
            assert p.status_code == 200, p.text
            t_put = time.perf_counter()
            while True:
                u = s.get(f"{base}/api/v1/media/uploads/{rid}", headers=auth).json()
                if u["state"] == "confirmed":
                    break
                assert u["state"] in ("signed", "received"), u
                time.sleep(0.005)
            t_done = time.perf_counter()
            return ((t_accept - t0) * 1000, (t_url - t_accept) * 1000,
                    (t_put - t_url) * 1000, (t_done - t_put) * 1000, (t_done - t0) * 1000)

        start = time.perf_counter()
        with cf.ThreadPoolExecutor(a.concurrency) as ex:
            res = list(ex.map(one, range(a.uploads)))
        wall = time.perf_counter() - start
        out = {
            "bench": "media_upload_saga",
            "store": "sqlite" if a.store == "sqlite" else "postgres",
            "objects": "local",
            "uploads": a.uploads,
            "concurrency": a.concurrency,
            "file_bytes": a.size,
            "uploads_per_sec": round(a.uploads / wall, 1),
            "intent_accept_ms": summary([r[0] for r in res]),
            "intent_to_upload_url_ms": summary([r[1] for r in res]),
            "put_ms": summary([r[2] for r in res]),
            "put_to_confirmed_ms": summary([r[3] for r in res]),
            "end_to_end_ms": summary([r[4] for r in res]),
            "baseline_event_ingest_ms": summary(ingest),
        }
        print(json.dumps(out, indent=2))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
