#!/usr/bin/env python3
"""What watching itself costs: ingest and end-to-end throughput of `substrate serve` (SQLite,
embedded log, every role) for a baseline binary (a build without the tracing instrumentation,
e.g. the integration branch before it) and for this build with OTLP export off and on (to a
receiver that discards). Each variant runs `--rounds` times, interleaved; medians are printed
as JSON.

usage: bench/observe.py [--binary target/release/substrate] [--baseline PATH]
                        [--events 20000] [--batch 100] [--clients 4] [--rounds 3]
"""
import argparse
import http.server
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-secret-bench-secret-bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads and discards."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_sink():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def wait_http(url, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def run(binary, events, batch, clients, otlp):
    tmp = tempfile.mkdtemp(prefix="bench-observe-")
    port = free_port()
    cfg = os.path.join(tmp, "substrate.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[http]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{tmp}/s.db"
[schemas]
dir = "{REPO}/avro"
[gateway]
routes_file = "{REPO}/config/routes.yaml"
[gateway.rate_limit]
enabled = false
[auth]
hs256_secret = "{SECRET}"
[objects]
url = "file://{tmp}/objects"
[telemetry]
log_format = "json"
log_filter = "warn"
""")
        if otlp:
            f.write(f'otlp_endpoint = "{otlp}"\notlp_protocol = "http"\n')
    token = subprocess.check_output(
        [binary, "--config", cfg, "token", "mint", "--sub", "bench", "--email", "b@example.com"],
        cwd=tmp, text=True).strip()
    proc = subprocess.Popen([binary, "--config", cfg, "serve"], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        body = json.dumps([{"message": f"m{i}", "timestamp": "2026-01-01T00:00:00Z"}
                           for i in range(batch)]).encode()
        per_client = events // batch // clients

        def send():
            for _ in range(per_client):
                req = urllib.request.Request(
                    base + "/api/v1/events/message/batch", data=body, method="POST",
                    headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    assert r.status == 202, r.status
        total = per_client * clients * batch
        start = time.perf_counter()
        threads = [threading.Thread(target=send) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = time.perf_counter() - start
        db = sqlite3.connect(f"file:{tmp}/s.db?mode=ro", uri=True)
        while True:
            n = db.execute(
                "SELECT COUNT(*) FROM notifications WHERE event_type = 'user.message'").fetchone()[0]
            if n >= total:
                break
            time.sleep(0.02)
        projected = time.perf_counter() - start
        db.close()
        return {"events": total, "ingest_events_per_s": round(total / accepted),
                "end_to_end_events_per_s": round(total / projected)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "target/release/substrate"))
    ap.add_argument("--baseline")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sink, otlp = start_sink()
    variants = []
    if a.baseline:
        variants.append(("baseline", a.baseline, None))
    variants.append(("traced, export off", a.binary, None))
    variants.append(("traced, OTLP export on", a.binary, otlp))
    results = {name: [] for name, _, _ in variants}
    for _ in range(a.rounds):
        for name, binary, endpoint in variants:
            results[name].append(run(binary, a.events, a.batch, a.clients, endpoint))
    out = {"bench": "observe", "events": a.events, "batch": a.batch, "clients": a.clients,
           "rounds": a.rounds, "variants": {}}
    for name, runs in results.items():
        out["variants"][name] = {
            k: {"median": statistics.median(r[k] for r in runs), "runs": [r[k] for r in runs]}
            for k in ("ingest_events_per_s", "end_to_end_events_per_s")
        }
    sink.shutdown()
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
