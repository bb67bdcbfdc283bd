"""Messages no kombu client would publish to an event or control exchange, listed once for the
tests and the ``hostile-broadcast`` fault scenario (``bench/faults.py``)."""

from __future__ import annotations

import base64
import json
from typing import Any

DEEP = "[" * 5000 + "]" * 5000


def envelope(**changes: Any) -> str:
    """kombu's envelope of an event, with ``changes`` to its top level."""
    event = b'{"type": "worker-heartbeat", "hostname": "hostile"}'
    found: dict[str, Any] = {
        "body": base64.b64encode(event).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {"hostname": "hostile"},
        "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                       "delivery_tag": "d5a0c7e4-0d6e-4c1d-9d87-2d0b3b0e5c11",
                       "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"}}}
    found.update(changes)
    return json.dumps(found)


def with_properties(**changes: Any) -> str:
    """kombu's envelope of an event, with ``changes`` to its properties (None: left out)."""
    found = json.loads(envelope())
    found["properties"].update(changes)
    found["properties"] = {k: v for k, v in found["properties"].items() if v is not None}
    return json.dumps(found)


#: Published text that is no kombu envelope. Each one ended kombu's receive loop on Redis and
#: the embedded broker (a RecursionError, TypeError, AttributeError, KeyError or binascii.Error
#: past kombu's ``except (TypeError, ValueError)``).
NOT_ENVELOPES = {
    "nested-5000-deep": DEEP,
    "header-nested-3000-deep": envelope(headers="HEADERS").replace(
        '"HEADERS"', '{"x": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}"),
    "not-an-object": "[1, 2]",
    "body-not-a-string": envelope(body=5),
    "headers-not-an-object": envelope(headers=[1, 2]),
    "body-not-base64": envelope(body="a"),
    "no-properties": json.dumps({"body": "e30="}),
    "unknown-body-encoding": with_properties(body_encoding="rot13"),
    "no-delivery-tag": with_properties(delivery_tag=None),
}

#: Envelopes whose body no receiver can decode: every broker hands these to the consumer.
UNDECODABLE_BODIES = {
    "body-nested-5000-deep": (DEEP, "application/json"),
    "unknown-content-type": ("x", "application/x-nobody-knows"),
}
