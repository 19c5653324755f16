#!/usr/bin/env python3
"""An independent Kafka client: reads a topic the substrate relay wrote with Python
confluent-kafka, decodes each value with its AvroDeserializer against substrate's built-in
schema registry, and prints one JSON line per record (key, value, headers)."""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "independent-python-client",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    seen = set()
    deadline = time.time() + args.timeout
    try:
        while len(seen) < args.count:
            if time.time() > deadline:
                print(f"only {len(seen)} of {args.count} records", file=sys.stderr)
                return 1
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
            if headers.get("ce_id") in seen:
                continue
            seen.add(headers.get("ce_id"))
            value = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            print(
                json.dumps(
                    {
                        "key": msg.key().decode() if msg.key() else None,
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "headers": headers,
                        "value": value,
                    },
                    default=str,
                ),
                flush=True,
            )
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
