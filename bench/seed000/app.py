"""The seed-000 ingest pattern, as the peer of substrate's gateway in bench/gateway.rs.

A FastAPI endpoint that takes a JSON event and answers 202 only after the Kafka broker has
acknowledged it, through an idempotent acks=all aiokafka producer (one per uvicorn worker,
started once, not per request as the seed's snippet does). It is the system substrate
replaces, measured by the same load generator in the same run. It verifies no JWT and
validates no schema (the seed's endpoint does neither): it does less work per request than
substrate's gateway, which only makes the comparison harder for substrate.

Run (gateway_bench does): SEED000_BROKER=127.0.0.1:9092 SEED000_TOPIC=seed000.events \
    python3 -m uvicorn --app-dir bench/seed000 app:app --workers 2 --port 8000
"""

import json
import os
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

BROKER = os.environ.get("SEED000_BROKER", "127.0.0.1:9092")
TOPIC = os.environ.get("SEED000_TOPIC", "seed000.events")

state: dict = {}


@asynccontextmanager
async def lifespan(_app: FastAPI):
    # One producer per worker for its lifetime. Idempotent implies acks=all; both spelled out
    # as the benchmark promises.
    producer = AIOKafkaProducer(
        bootstrap_servers=BROKER, enable_idempotence=True, acks="all"
    )
    await producer.start()
    state["producer"] = producer
    try:
        yield
    finally:
        await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/api/v1/events/{route}")
async def ingest(route: str, request: Request) -> JSONResponse:
    try:
        payload = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"error": "invalid_json"}, status_code=400)
    if not isinstance(payload, dict):
        return JSONResponse({"error": "expected_object"}, status_code=400)
    # send_and_wait: the 202 means the broker acknowledged the record (acks=all).
    await state["producer"].send_and_wait(
        TOPIC, json.dumps(payload).encode("utf-8"), key=route.encode("utf-8")
    )
    return JSONResponse({"status": "accepted"}, status_code=202)
