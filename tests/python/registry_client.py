#!/usr/bin/env python3
# An independent client check of substrate's wire format: Confluent's own Python client
# (SchemaRegistryClient + AvroDeserializer) reads substrate's registry API and decodes payloads
# taken from the outbox. Run by tests/it/python.rs; usable by hand too.
"""
Usage: registry_client.py --registry http://127.0.0.1:8080 [--rows rows.json | -]

Input (a file, or stdin): a JSON array of outbox rows
    [{"topic": "...", "schema_id": 3, "payload_hex": "00000003...",   # or "payload_b64"
      "expected": {...}}, ...]                                         # expected is optional
`expected` is the record as JSON: timestamps as epoch milliseconds, enums as their symbol,
bytes as hex.

Output: one JSON document on stdout (subjects, latest versions, schemas by id, the decoded
records, the compatibility answers, and every mismatch under "errors"). The exit status is 0
when everything matched, 1 on any mismatch, 2 on bad input, 3 if the Confluent client is missing.
"""

import argparse
import base64
import copy
import datetime
import decimal
import json
import sys
import uuid

try:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError as e:  # pragma: no cover - the Rust test turns this into a failure
    print(
        f"registry_client.py: the Confluent Python client is not installed ({e}); "
        "run scripts/setup.sh (pip install 'confluent-kafka[avro,schemaregistry]' fastavro)",
        file=sys.stderr,
    )
    sys.exit(3)


def plain(v):
    """A decoded Avro value as plain JSON (the form `expected` is written in)."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, datetime.date):
        return (v - datetime.date(1970, 1, 1)).days
    if isinstance(v, datetime.time):
        return (v.hour * 3600 + v.minute * 60 + v.second) * 1000 + v.microsecond // 1000
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def payload_of(row):
    if "payload_hex" in row:
        return bytes.fromhex(row["payload_hex"])
    if "payload_b64" in row:
        return base64.b64decode(row["payload_b64"])
    raise ValueError("a row needs payload_hex or payload_b64")


def canonical(schema_str):
    return json.dumps(json.loads(schema_str), sort_keys=True, separators=(",", ":"))


def with_field(schema_str, field):
    s = json.loads(schema_str)
    s = copy.deepcopy(s)
    s["fields"].append(field)
    return Schema(json.dumps(s), "AVRO")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", required=True, help="base URL of the registry API")
    ap.add_argument("--rows", default="-", help="JSON file of outbox rows, or - for stdin")
    a = ap.parse_args()
    try:
        text = sys.stdin.read() if a.rows == "-" else open(a.rows, encoding="utf-8").read()
        rows = json.loads(text)
        if not isinstance(rows, list) or not rows:
            raise ValueError("expected a non-empty JSON array of rows")
    except (OSError, ValueError) as e:
        print(f"registry_client.py: bad input: {e}", file=sys.stderr)
        return 2

    client = SchemaRegistryClient({"url": a.registry.rstrip("/")})
    deserializer = AvroDeserializer(client)
    errors = []
    out = {"subjects": [], "latest": {}, "schemas_by_id": {}, "records": [], "compatibility": None}

    subjects = client.get_subjects()
    out["subjects"] = subjects

    for i, row in enumerate(rows):
        topic = row["topic"]
        subject = f"{topic}-value"
        payload = payload_of(row)
        if len(payload) < 5 or payload[0] != 0:
            errors.append(f"row {i}: not Confluent-framed (magic byte {payload[:1].hex()})")
            continue
        framed_id = int.from_bytes(payload[1:5], "big")
        if "schema_id" in row and row["schema_id"] != framed_id:
            errors.append(f"row {i}: outbox schema_id {row['schema_id']} != framed id {framed_id}")
        if subject not in subjects:
            errors.append(f"row {i}: subject {subject} missing from get_subjects()")

        if subject not in out["latest"]:
            latest = client.get_latest_version(subject)
            out["latest"][subject] = {
                "version": latest.version,
                "schema_id": latest.schema_id,
                "subject": latest.subject,
            }
            latest_str = latest.schema.schema_str
        else:
            latest_str = client.get_latest_version(subject).schema.schema_str
        latest_id = out["latest"][subject]["schema_id"]
        if latest_id != framed_id:
            errors.append(f"row {i}: framed id {framed_id} != latest id {latest_id} of {subject}")

        by_id = client.get_schema(framed_id)
        same = canonical(by_id.schema_str) == canonical(latest_str)
        out["schemas_by_id"][str(framed_id)] = {
            "schema_type": by_id.schema_type,
            "same_as_latest": same,
        }
        if not same:
            errors.append(f"row {i}: get_schema({framed_id}) differs from the latest version of {subject}")

        decoded = plain(deserializer(payload, SerializationContext(topic, MessageField.VALUE)))
        rec = {"topic": topic, "schema_id": framed_id, "decoded": decoded}
        if "expected" in row and row["expected"] is not None:
            rec["match"] = decoded == row["expected"]
            if not rec["match"]:
                for k in sorted(set(decoded) | set(row["expected"])):
                    if decoded.get(k) != row["expected"].get(k):
                        errors.append(
                            f"row {i}: field {k}: decoded {decoded.get(k)!r} != expected {row['expected'].get(k)!r}"
                        )
        out["records"].append(rec)

    # Compatibility through the client, against the first row's subject under its level:
    # adding an optional field with a default is compatible, a required field is not.
    subject = f"{rows[0]['topic']}-value"
    base = client.get_latest_version(subject).schema.schema_str
    compatible = client.test_compatibility(
        subject, with_field(base, {"name": "py_note", "type": ["null", "string"], "default": None})
    )
    breaking = client.test_compatibility(subject, with_field(base, {"name": "py_note", "type": "string"}))
    out["compatibility"] = {"subject": subject, "compatible_change": compatible, "breaking_change": breaking}
    if compatible is not True:
        errors.append(f"compatible change to {subject} answered {compatible!r}, expected True")
    if breaking is not False:
        errors.append(f"breaking change to {subject} answered {breaking!r}, expected False")

    out["errors"] = errors
    out["ok"] = not errors
    print(json.dumps(out, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
