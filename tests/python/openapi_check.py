"""Checks substrate's OpenAPI document from outside (tests/it/openapi.rs drives it).

validate BASE
    GET BASE/openapi.json and validate it with openapi-spec-validator (OpenAPI 3.1).
client BASE SENDER_TOKEN RECIPIENT_TOKEN
    A client driven only by the document: it finds the operations by operationId
    (`post_message_event`, `list_notifications`), builds each request from the documented method
    and path, checks request and response against the document with openapi-core, posts a
    direct message as the sender, and reads it back from the recipient's notifications.
Prints one JSON line with what it did; exits non-zero on any failure.
"""

import json
import sys
import time
import uuid

import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse


def document(base):
    r = requests.get(base + "/openapi.json", timeout=30)
    r.raise_for_status()
    return r.json()


def validate(base):
    from openapi_spec_validator import validate as check

    doc = document(base)
    check(doc)
    ops = sum(1 for item in doc["paths"].values() for m in item if m in ("get", "put", "post", "delete", "head", "patch"))
    print(json.dumps({"valid": True, "openapi": doc["openapi"], "paths": len(doc["paths"]), "operations": ops}))


class Client:
    """Calls operations by operationId, validating both directions with openapi-core."""

    def __init__(self, base, doc):
        self.base = base
        self.api = OpenAPI.from_dict(doc)
        self.ops = {}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if isinstance(op, dict) and "operationId" in op:
                    self.ops[op["operationId"]] = (method.upper(), path)

    def call(self, op_id, token, body=None, query=None):
        method, path = self.ops[op_id]
        req = requests.Request(
            method,
            self.base + path,
            json=body,
            params=query or {},
            headers={"Authorization": "Bearer " + token},
        ).prepare()
        self.api.validate_request(RequestsOpenAPIRequest(req))
        resp = requests.Session().send(req, timeout=30)
        self.api.validate_response(RequestsOpenAPIRequest(req), RequestsOpenAPIResponse(resp))
        return resp


def client(base, sender, recipient):
    c = Client(base, document(base))
    text = "hello from a generated client " + uuid.uuid4().hex
    event = {
        "message": text,
        "email": "sender@example.com",
        "timestamp": "2026-01-01T00:00:00Z",
        "visibility": "direct",
        "recipient_id": "bob",
    }
    posted = c.call("post_message_event", sender, body=event)
    assert posted.status_code == 202, (posted.status_code, posted.text)
    event_id = posted.json()["event_id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        page = c.call("list_notifications", recipient)
        assert page.status_code == 200, (page.status_code, page.text)
        found = [n for n in page.json()["notifications"] if n["event_id"] == event_id]
        if found:
            assert found[0]["payload"]["message"] == text, found[0]
            print(json.dumps({"posted": event_id, "read_back": found[0]["id"], "operations": len(c.ops)}))
            return
        time.sleep(0.2)
    raise SystemExit("the posted message never reached the recipient's notifications")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"validate": validate, "client": client}[cmd](*args)
